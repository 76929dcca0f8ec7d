#!/usr/bin/env python3
"""ONNX import fixtures: reference outputs from onnxruntime for modeldock's ONNX executor.

Needs onnx, onnxruntime and numpy only (the `.ci/venv-triton` venv); safetensors files
are written by the small writer below.

    onnx_fixtures.py zero SRC.onnx OUT.onnx
        Overwrite every float Conv/ConvTranspose weight (input 1) and bias (input 2)
        initializer with zeros (same dims/dtype, all-zero raw_data), reached directly
        or through Identity nodes, except DFL convs (weight [1, 16, 1, 1]), which
        keep their arange(16) weight. Everything else, metadata_props included, is
        kept as it is. This is how tests/fixtures/onnx/*-320.onnx were made from the
        Ultralytics exports (see tests/fixtures/onnx/README.md).

    onnx_fixtures.py fill SRC.onnx OUT_DIR [--seed N]
        Refill those same initializers (selected by graph structure, whatever they
        hold) from np.random.default_rng(seed), initializers in graph order:
            weight ~ U(-b, b), b = sqrt(6 / fan_in), fan_in = dims[1] * kh * kw
                     (He-uniform; PyTorch's own 1/sqrt(fan_in) makes the
                     signal vanish over ~100 BN-less layers)
            bias   ~ U(-0.1, 0.1)
        then draws the graph input from the same generator, U(0, 1) float32 of its
        declared (static) shape. A fixed gain is a knife edge over ~60-90 BN-less
        convs (vanishes at sqrt(6/fan_in), saturates the class scores at
        sqrt(7..8/fan_in)), so each conv weight is then multiplied, in graph order,
        by the power of two that brings the std of its W*x on that input closest
        to 1 (LSUV-style, exact in float32; --no-calibrate skips it). Writes
            OUT_DIR/model.onnx              the filled graph
            OUT_DIR/input.safetensors       {graph input name: tensor}
            OUT_DIR/expected.safetensors    {graph output name: onnxruntime output}
        and prints per-output shape and min/max/mean/std (and, for detect/segment
        heads, the class-score statistics). Deterministic for a given seed.

    onnx_fixtures.py ops OUT_DIR [--only NAME,...]
        Small single-op / few-op models (opset 17) with graph input `x` (other
        operands are initializers or Constant nodes; `three_inputs` has two more
        graph inputs), seeded inputs:
            OUT_DIR/<case>/model.onnx, input.safetensors, expected.safetensors

Reference outputs come from onnxruntime's CPUExecutionProvider, one intra-op
thread, graph optimisations disabled (the ops as written, not fused kernels).
"""

import argparse
import gzip
import ast
import json
import os
import struct
import sys
import time
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what torch.onnx writes at opset 17
DFL_WEIGHT_DIMS = [1, 16, 1, 1]

# --------------------------------------------------------------------------------------
# safetensors


_ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}
_ST_NP = {"F32": "<f4", "I64": "<i8"}


def write_safetensors(path, tensors):
    """tensors: dict name -> np.ndarray (float32 or int64), written in dict order."""
    header = {}
    blobs = []
    off = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype not in _ST_DTYPES:
            raise ValueError(f"{name}: dtype {arr.dtype} not supported (float32/int64)")
        dt = _ST_DTYPES[arr.dtype]
        data = np.ascontiguousarray(arr).astype(_ST_NP[dt], copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": [int(d) for d in arr.shape], "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(buf[base + a : base + b], dtype=_ST_NP[h["dtype"]]).reshape(h["shape"])
    return out


# --------------------------------------------------------------------------------------
# onnxruntime


def run_ort(model_bytes, feeds, threads=1, opt=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = opt
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feeds)
    return dict(zip(names, outs))


# --------------------------------------------------------------------------------------
# zero / fill


def identity_resolver(g):
    """A function from a value name to the value it is an Identity (chain) of."""
    ident = {nd.output[0]: nd.input[0] for nd in g.node if nd.op_type == "Identity"}

    def resolve(name):
        seen = 0
        while name in ident and seen < 64:
            name = ident[name]
            seen += 1
        return name
    return resolve


def conv_param_initializers(model):
    """Names (graph order) of float initializers used as Conv/ConvTranspose weight or
    bias, directly or through Identity chains, minus DFL weights [1,16,1,1].
    Returns (names, roles) with roles[name] = 'weight' | 'bias'."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    resolve = identity_resolver(g)

    roles = {}
    for nd in g.node:
        if nd.op_type not in ("Conv", "ConvTranspose"):
            continue
        for k, role in ((1, "weight"), (2, "bias")):
            if len(nd.input) > k and nd.input[k]:
                src = resolve(nd.input[k])
                if src in inits:
                    prev = roles.setdefault(src, role)
                    if prev != role:
                        raise SystemExit(f"initializer {src} is both a weight and a bias")
    # every consumer (through Identity) must be a conv parameter slot, else leave it alone
    ok_outputs = set()
    for nd in g.node:
        if nd.op_type in ("Conv", "ConvTranspose"):
            ok_outputs.update(nd.input[1:3])
    for nd in g.node:
        for k, i in enumerate(nd.input):
            src = resolve(i)
            if src in roles:
                if nd.op_type == "Identity":
                    continue
                if nd.op_type in ("Conv", "ConvTranspose") and k in (1, 2):
                    continue
                print(f"note: {src} also feeds {nd.op_type} input {k}; left as is", file=sys.stderr)
                roles.pop(src)
    names = []
    for i in g.initializer:
        if i.name not in roles:
            continue
        if i.data_type != TensorProto.FLOAT:
            continue
        if roles[i.name] == "weight" and list(i.dims) == DFL_WEIGHT_DIMS:
            continue  # DFL: fixed arange(16) projection, kept as exported
        names.append(i.name)
    return names, roles


DENSE_MIN = 1024


def dense_initializers(m, exclude):
    """Float initializers of at least DENSE_MIN elements that are not conv parameters
    (`exclude`), in graph order, each with the fan-in of the MatMul/Gemm weight it
    is (reached through Identity nodes), else None."""
    g = m.graph
    resolve = identity_resolver(g)

    fan = {}
    for nd in g.node:
        if nd.op_type in ("MatMul", "Gemm") and len(nd.input) > 1:
            src = resolve(nd.input[1])
            trans_b = any(a.name == "transB" and a.i for a in nd.attribute)
            fan[src] = (nd.op_type, trans_b)
    out = []
    for i in g.initializer:
        if i.name in exclude or i.data_type != TensorProto.FLOAT or int(np.prod(i.dims)) < DENSE_MIN:
            continue
        f = None
        if i.name in fan and len(i.dims) >= 2:
            op, trans_b = fan[i.name]
            f = int(i.dims[1]) if (op == "Gemm" and trans_b) else int(i.dims[-2])
        out.append((i.name, f))
    return out


def load_model(path):
    """An ONNX model from a file, gzip-compressed when its name ends in .gz."""
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return onnx.load_from_string(f.read())
    return onnx.load(path)


def _set_raw(init, arr):
    init.ClearField("float_data")
    init.raw_data = np.ascontiguousarray(arr, dtype="<f4").tobytes()


def cmd_zero(args):
    m = load_model(args.src)
    names, roles = conv_param_initializers(m)
    by_name = {i.name: i for i in m.graph.initializer}
    nw = nb = 0
    for n in names:
        init = by_name[n]
        _set_raw(init, np.zeros(list(init.dims), np.float32))
        if roles[n] == "weight":
            nw += 1
        else:
            nb += 1
    dense = dense_initializers(m, set(names)) if args.dense else []
    for n, _ in dense:
        _set_raw(by_name[n], np.zeros(list(by_name[n].dims), np.float32))
    if args.out.endswith(".gz"):
        with gzip.open(args.out, "wb", compresslevel=9) as f:
            f.write(m.SerializeToString())
    else:
        onnx.save(m, args.out)
    print(f"zeroed {nw} weight, {nb} bias and {len(dense)} dense initializers -> {args.out}")


def _static_shape(vi):
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            raise SystemExit(f"input {vi.name}: dynamic dim {d.dim_param!r}; fill needs a static shape")
        dims.append(d.dim_value)
    return dims


def _stats(a):
    a = a.astype(np.float64)
    return f"min {a.min():.6g} max {a.max():.6g} mean {a.mean():.6g} std {a.std():.6g}"


def _calibrate(model, names, vals, input_name, x):
    """LSUV-style: walk the Conv/ConvTranspose nodes in graph (topological) order and
    multiply each one's weight by the power of two 2^round(-log2(std)) that brings the
    std of its output minus its bias (i.e. W*x) on the seeded input closest to 1.
    Powers of two scale the float32 RNG values exactly. Biases are not scaled (they
    are shared between convs through Identity nodes in the torch exports)."""
    w = onnx.ModelProto()
    w.CopyFrom(model)
    keep = [i for i in w.graph.initializer if i.name not in vals]
    del w.graph.initializer[:]
    w.graph.initializer.extend(keep)
    for n in names:
        w.graph.input.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, list(vals[n].shape)))
    ident = {nd.output[0]: nd.input[0] for nd in w.graph.node if nd.op_type == "Identity"}

    def resolve(n):
        while n in ident:
            n = ident[n]
        return n

    convs = [nd for nd in w.graph.node
             if nd.op_type in ("Conv", "ConvTranspose") and resolve(nd.input[1]) in vals]
    outs = {o.name for o in w.graph.output}
    for nd in convs:
        if nd.output[0] not in outs:
            w.graph.output.append(helper.make_tensor_value_info(nd.output[0], TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(w.SerializeToString(), so, providers=["CPUExecutionProvider"])
    scales = []
    for nd in convs:
        (o,) = sess.run([nd.output[0]], {input_name: x, **vals})
        o = o.astype(np.float64)
        if len(nd.input) > 2 and nd.input[2]:
            b = vals.get(resolve(nd.input[2]))
            if b is not None:
                o = o - b.reshape([1, -1] + [1] * (o.ndim - 2))
        sd = float(o.std())
        k = int(round(-np.log2(sd))) if sd > 0 else 0
        vals[resolve(nd.input[1])] *= np.float32(2.0 ** k)
        scales.append(k)
    return scales


def cmd_fill(args):
    t0 = time.perf_counter()
    m = load_model(args.src)
    names, roles = conv_param_initializers(m)
    by_name = {i.name: i for i in m.graph.initializer}
    rng = np.random.default_rng(args.seed)
    vals = {}
    for n in names:  # graph order
        dims = list(by_name[n].dims)
        if roles[n] == "weight":
            fan_in = int(np.prod(dims[1:]))
            b = np.sqrt(6.0 / fan_in)
            vals[n] = rng.uniform(-b, b, size=dims).astype(np.float32)
        else:
            vals[n] = rng.uniform(-0.1, 0.1, size=dims).astype(np.float32)
    dense = {}
    for n, fan_in in (dense_initializers(m, set(names)) if args.dense else []):
        dims = list(by_name[n].dims)
        b = np.sqrt(3.0 / fan_in) if fan_in else 0.1
        dense[n] = rng.uniform(-b, b, size=dims).astype(np.float32)

    init_names = set(by_name)
    inputs = [vi for vi in m.graph.input if vi.name not in init_names]
    if len(inputs) != 1:
        raise SystemExit(f"expected one graph input, found {[vi.name for vi in inputs]}")
    vi = inputs[0]
    if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise SystemExit(f"input {vi.name} is not float32")
    x = rng.random(_static_shape(vi), dtype=np.float64).astype(np.float32)

    scales = _calibrate(m, names, vals, vi.name, x) if not args.no_calibrate else []
    for n in names:
        _set_raw(by_name[n], vals[n])
    for n, v in dense.items():
        _set_raw(by_name[n], v)

    os.makedirs(args.out_dir, exist_ok=True)
    model_bytes = m.SerializeToString()
    with open(os.path.join(args.out_dir, "model.onnx"), "wb") as f:
        f.write(model_bytes)
    outs = run_ort(model_bytes, {vi.name: x})
    write_safetensors(os.path.join(args.out_dir, "input.safetensors"), {vi.name: x})
    write_safetensors(os.path.join(args.out_dir, "expected.safetensors"),
                      {k: np.asarray(v, dtype=np.float32) for k, v in outs.items()})

    meta = {p.key: p.value for p in m.metadata_props}
    print(f"filled {len(names)} initializers (seed {args.seed}); input {vi.name} {list(x.shape)}")
    if scales:
        print(f"calibrated {len(scales)} conv weights by 2^k, k in [{min(scales)}, {max(scales)}]")
    for k, v in outs.items():
        print(f"{k} {list(v.shape)} {_stats(v)}")
    task = meta.get("task")
    if task in ("detect", "segment") and "names" in meta:
        nc = len(ast.literal_eval(meta["names"]))  # "{0: 'person', 1: 'bicycle', ...}"
        o0 = outs.get("output0", next(iter(outs.values())))
        cls = o0[0, 4 : 4 + nc]
        box = o0[0, :4]
        print(f"  boxes  (rows 0:4)       {_stats(box)}")
        print(f"  scores (rows 4:{4 + nc})     {_stats(cls)}  "
              f"frac>0.5 {np.mean(cls > 0.5):.3f} frac<0.01 {np.mean(cls < 0.01):.3f} frac>0.99 {np.mean(cls > 0.99):.3f}")
        print(f"  max score per anchor    {_stats(cls.max(axis=0))}")
        if o0.shape[1] > 4 + nc:
            print(f"  mask coefs (rows {4 + nc}:) {_stats(o0[0, 4 + nc:])}")
    print(f"fill took {time.perf_counter() - t0:.2f}s")


# --------------------------------------------------------------------------------------
# single-op cases

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _const_node(out, arr):
    return helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.asarray(arr), out + "_value"))


class Case:
    def __init__(self, name, x_shape):
        self.name = name
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.x = self.rng.standard_normal(x_shape).astype(np.float32)
        self.extra = {}
        self.nodes = []
        self.inits = []
        self.outputs = []

    def randn(self, *shape):
        return self.rng.standard_normal(shape).astype(np.float32)

    def unif(self, lo, hi, *shape):
        return self.rng.uniform(lo, hi, size=shape).astype(np.float32)

    def input(self, name, *shape):
        """A further graph input, drawn from the case's generator."""
        self.extra[name] = self.randn(*shape)
        return name

    def feeds(self):
        return {"x": self.x, **self.extra}

    def init(self, name, arr):
        self.inits.append(_init(name, arr))
        return name

    def node(self, op, ins, outs, **attrs):
        self.nodes.append(helper.make_node(op, ins, outs, name=f"{op}_{len(self.nodes)}", **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, name, arr):
        self.nodes.append(_const_node(name, arr))
        return name

    def out(self, *names):
        self.outputs.extend(names)

    def build(self):
        g = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(k, F, list(v.shape)) for k, v in self.feeds().items()],
            [helper.make_tensor_value_info(o, F, None) for o in self.outputs],
            initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modeldock onnx_fixtures.py")
        m.ir_version = IR_VERSION
        return m


def build_cases():
    cases = []

    def case(name, x_shape):
        c = Case(name, x_shape)
        cases.append(c)
        return c

    c = case("conv_pads_stride", [1, 3, 16, 16])
    c.out(c.node("Conv", ["x", c.init("w", c.randn(4, 3, 3, 3) * 0.3), c.init("b", c.randn(4))], ["y"],
                 kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], group=1))

    # TF-SAME style: extra pad at the end only, stride 2
    c = case("conv_asym_pads", [1, 3, 10, 10])
    c.out(c.node("Conv", ["x", c.init("w", c.randn(4, 3, 3, 3) * 0.3)], ["y"],
                 kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]))

    c = case("conv_depthwise", [1, 8, 10, 10])
    c.out(c.node("Conv", ["x", c.init("w", c.randn(8, 1, 3, 3) * 0.3), c.init("b", c.randn(8))], ["y"],
                 kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], group=8, dilations=[1, 1]))

    c = case("conv_1x1", [1, 16, 8, 8])
    c.out(c.node("Conv", ["x", c.init("w", c.randn(8, 16, 1, 1) * 0.25), c.init("b", c.randn(8))], ["y"],
                 kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], group=1, dilations=[1, 1]))

    # the YOLO export pattern: conv biases are Identity copies of one shared initializer
    c = case("conv_bias_via_identity", [1, 4, 6, 6])
    c.init("b_shared", c.randn(4))
    c.node("Identity", ["b_shared"], ["b1"])
    c.node("Identity", ["b_shared"], ["b2"])
    y1 = c.node("Conv", ["x", c.init("w1", c.randn(4, 4, 3, 3) * 0.3), "b1"], ["y1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    c.out(c.node("Conv", [y1, c.init("w2", c.randn(4, 4, 1, 1) * 0.5), "b2"], ["y"], kernel_shape=[1, 1]))

    c = case("maxpool_same", [1, 4, 12, 12])
    c.out(c.node("MaxPool", ["x"], ["y"], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2],
                 dilations=[1, 1], ceil_mode=0))

    # odd input: floor((11 - 2) / 2) + 1 = 5, last row/column dropped
    c = case("maxpool_k2s2", [1, 4, 11, 11])
    c.out(c.node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]))

    c = case("add_broadcast", [1, 4, 5, 6])
    c.out(c.node("Add", ["x", c.init("a", c.randn(4, 1, 1))], ["y"]))

    c = case("sub_div_mul_chain", [1, 4, 5, 6])
    s = c.node("Sub", ["x", c.init("a", np.float32(0.25))], ["s"])  # scalar
    d = c.node("Div", [s, c.init("b", c.unif(0.5, 2.0, 6))], ["d"])  # last axis
    m = c.node("Mul", [d, c.init("m", c.randn(1, 4, 1, 1))], ["m_out"])
    c.out(c.node("Sub", [c.init("k", c.randn(5, 1)), m], ["y"]))  # init on the left

    c = case("sigmoid_mul", [1, 4, 8, 8])
    c.out(c.node("Mul", ["x", c.node("Sigmoid", ["x"], ["sg"])], ["y"]))

    c = case("softmax_axis1", [1, 4, 16, 8])
    c.out(c.node("Softmax", ["x"], ["y"], axis=1))

    c = case("softmax_last", [1, 4, 16, 8])
    c.out(c.node("Softmax", ["x"], ["y"], axis=-1))

    c = case("concat_axis1", [1, 2, 4, 4])
    c.out(c.node("Concat", [c.init("a", c.randn(1, 3, 4, 4)), "x", c.init("b", c.randn(1, 1, 4, 4))], ["y"], axis=1))

    c = case("concat_neg_axis", [1, 2, 4, 4])
    c.out(c.node("Concat", ["x", c.init("a", c.randn(1, 3, 4, 4))], ["y"], axis=-3))

    c = case("split_equal", [1, 4, 3, 3])
    c.node("Split", ["x", c.init("split", np.array([2, 2], np.int64))], ["y0", "y1"], axis=1)
    c.out("y0", "y1")

    c = case("split_uneven", [1, 4, 3, 3])
    c.node("Split", ["x", c.init("split", np.array([1, 3], np.int64))], ["y0", "y1"], axis=1)
    c.out("y0", "y1")

    c = case("transpose_perm", [1, 3, 4, 5])
    c.out(c.node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1]))

    c = case("reshape_minus1", [1, 8, 4, 3])
    c.out(c.node("Reshape", ["x", c.init("shape", np.array([1, -1, 4], np.int64))], ["y"], allowzero=0))

    c = case("reshape_zero", [1, 8, 4, 3])  # 0 copies the input dim: [1, 8, 12]
    c.out(c.node("Reshape", ["x", c.init("shape", np.array([0, 0, 12], np.int64))], ["y"], allowzero=0))

    # exactly the Ultralytics (torch nn.Upsample(scale_factor=2), opset 17) Resize
    c = case("resize_nearest_x2", [1, 4, 5, 6])
    c.out(c.node("Resize", ["x", "", c.const("scales", np.array([1, 1, 2, 2], np.float32))], ["y"],
                 coordinate_transformation_mode="asymmetric", cubic_coeff_a=-0.75, mode="nearest",
                 nearest_mode="floor"))

    c = case("resize_linear_half_pixel", [1, 4, 5, 6])
    c.out(c.node("Resize", ["x", "", c.const("scales", np.array([1, 1, 2, 2], np.float32))], ["y"],
                 coordinate_transformation_mode="half_pixel", mode="linear"))

    # negative axes and starts/ends; INT64_MAX end as torch writes for `x[..., a:]`
    c = case("slice_neg_axes", [1, 4, 6, 8])
    c.out(c.node("Slice", ["x", c.init("starts", np.array([1, -6], np.int64)),
                           c.init("ends", np.array([-1, np.iinfo(np.int64).max], np.int64)),
                           c.init("axes", np.array([-2, -1], np.int64))], ["y"]))

    c = case("slice_steps", [1, 4, 6, 8])
    c.out(c.node("Slice", ["x", c.init("starts", np.array([0, 1], np.int64)), c.init("ends", np.array([6, 8], np.int64)),
                           c.init("axes", np.array([2, 3], np.int64)), c.init("steps", np.array([2, 2], np.int64))], ["y"]))

    # x.view(x.shape[0], 4, -1): Shape -> Gather(0, scalar) -> Unsqueeze -> Concat -> Reshape
    c = case("shape_gather_reshape", [1, 4, 6, 8])
    sh = c.node("Shape", ["x"], ["sh"])
    n = c.node("Gather", [sh, c.const("i0", np.array(0, np.int64))], ["n"], axis=0)
    n1 = c.node("Unsqueeze", [n, c.const("ax0", np.array([0], np.int64))], ["n1"])
    tgt = c.node("Concat", [n1, c.const("rest", np.array([4, -1], np.int64))], ["tgt"], axis=0)
    c.out(c.node("Reshape", ["x", tgt], ["y"]))

    # the Ultralytics dist2bbox chunk(2, dim=1): Shape -> Gather([1]) -> Add 1 -> Div 2 (int64)
    # -> Mul -> Slice with computed starts/ends; then float Sub/Add/Div/Concat
    c = case("shape_arith_slice", [1, 4, 10])
    sh = c.node("Shape", ["x"], ["sh"])
    d1 = c.node("Gather", [sh, c.const("i1", np.array([1], np.int64))], ["d1"], axis=0)
    a = c.node("Add", [d1, c.const("one", np.array([1], np.int64))], ["a"])
    h = c.node("Div", [a, c.const("two", np.array([2], np.int64))], ["h"])
    e0 = c.node("Mul", [h, c.const("m1", np.array([1], np.int64))], ["e0"])
    e1 = c.node("Mul", [h, c.const("m2", np.array([2], np.int64))], ["e1"])
    axis1 = c.const("axis1", np.array([1], np.int64))
    lt = c.node("Slice", ["x", c.const("zero", np.array([0], np.int64)), e0, axis1], ["lt"])
    rb = c.node("Slice", ["x", e0, e1, axis1], ["rb"])
    anchors = c.const("anchors", c.unif(0, 10, 1, 2, 10))
    x1y1 = c.node("Sub", [anchors, lt], ["x1y1"])
    x2y2 = c.node("Add", [anchors, rb], ["x2y2"])
    cxy = c.node("Div", [c.node("Add", [x1y1, x2y2], ["s"]), c.const("ftwo", np.array(2.0, np.float32))], ["cxy"])
    wh = c.node("Sub", [x2y2, x1y1], ["wh"])
    c.out(c.node("Concat", [cxy, wh], ["y"], axis=1))

    c = case("gather_axis1", [1, 5, 4])
    c.out(c.node("Gather", ["x", c.init("idx", np.array([3, 0], np.int64))], ["y"], axis=1))

    c = case("gather_scalar", [1, 5, 4])  # scalar index: axis 1 removed -> [1, 4]
    c.out(c.node("Gather", ["x", c.init("idx", np.array(2, np.int64))], ["y"], axis=1))

    c = case("matmul_batched", [1, 2, 4, 8])
    c.out(c.node("MatMul", ["x", c.init("w", c.randn(1, 2, 8, 3))], ["y"]))

    c = case("matmul_self", [1, 2, 4, 8])
    xt = c.node("Transpose", ["x"], ["xt"], perm=[0, 1, 3, 2])
    c.out(c.node("MatMul", ["x", xt], ["y"]))

    # opset 13+: axes are an input. [1,4,5] -> Unsqueeze(-2) [1,4,1,5] -> Squeeze(0) [4,1,5]
    c = case("unsqueeze_squeeze", [1, 4, 5])
    u = c.node("Unsqueeze", ["x", c.init("uaxes", np.array([-2], np.int64))], ["u"])
    c.out(c.node("Squeeze", [u, c.const("saxes", np.array([0], np.int64))], ["y"]))

    # YOLOv8-seg Proto upsample: ConvTranspose k2 s2 p0, bias
    c = case("conv_transpose_k2s2", [1, 8, 6, 6])
    c.out(c.node("ConvTranspose", ["x", c.init("w", c.randn(8, 4, 2, 2) * 0.3), c.init("b", c.randn(4))], ["y"],
                 kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], dilations=[1, 1], group=1))

    c = case("identity", [1, 3, 4, 5])
    c.out(c.node("Identity", ["x"], ["y"]))

    c = case("constant_node", [1, 4, 5, 6])
    c.out(c.node("Add", ["x", c.const("k", c.randn(4, 1, 1))], ["y"]))

    # --- the ops of transformer / DETR-style graphs (RT-DETR) ---
    c = case("layer_norm", [2, 5, 8])
    c.out(c.node("LayerNormalization", ["x", c.init("g", c.randn(8)), c.init("b", c.randn(8))], ["y"],
                 axis=-1, epsilon=1e-5))

    c = case("gemm_trans_b", [3, 5])
    c.out(c.node("Gemm", ["x", c.init("w", c.randn(4, 5)), c.init("c", c.randn(4))], ["y"],
                 alpha=0.5, beta=2.0, transB=1))

    for name, mode, pad, ac in [("grid_sample_bilinear_zeros", "bilinear", "zeros", 0),
                                ("grid_sample_bilinear_border_ac", "bilinear", "border", 1),
                                ("grid_sample_nearest_zeros_ac", "nearest", "zeros", 1)]:
        c = case(name, [1, 2, 5, 6])
        grid = c.unif(-1.2, 1.2, 1, 3, 4, 2)
        c.out(c.node("GridSample", ["x", c.init("grid", grid)], ["y"], mode=mode, padding_mode=pad,
                     align_corners=ac))

    c = case("topk_and_gather_elements", [2, 7])
    vals, idx = c.node("TopK", ["x", c.init("k", np.array([3], np.int64))], ["v", "i"], axis=-1, largest=1)
    g = c.node("GatherElements", ["x", idx], ["g"], axis=1)
    small, _ = c.node("TopK", ["x", c.init("k2", np.array([2], np.int64))], ["s", "si"], axis=1, largest=0)
    c.out(vals, c.node("Cast", [idx], ["i_f"], to=TensorProto.FLOAT), g, small)

    c = case("where_and_logic", [3, 4])
    neg = c.node("Less", ["x", c.init("zero", np.array(0.0, np.float32))], ["neg"])
    big = c.node("Greater", ["x", c.init("one", np.array(0.5, np.float32))], ["big"])
    either = c.node("Or", [neg, big], ["either"])
    odd = c.node("Xor", [either, c.node("Not", [big], ["nb"])], ["odd"])
    both = c.node("And", [odd, neg], ["both"])
    c.out(c.node("Where", [both, c.node("Mul", ["x", c.init("tenth", np.array(0.1, np.float32))], ["m"]), "x"],
                 ["y"]))
    c.out(c.node("Cast", [odd], ["odd_f"], to=TensorProto.FLOAT))

    c = case("shape_range_expand_tile", [2, 5])
    n = c.node("Gather", [c.node("Shape", ["x"], ["sh"]), c.init("one_i", np.array(1, np.int64))], ["n"])
    r = c.node("Range", [c.init("start", np.array(0, np.int64)), n, c.init("step", np.array(1, np.int64))], ["r"])
    rf = c.node("Cast", [r], ["rf"], to=TensorProto.FLOAT)
    e = c.node("Expand", [rf, c.init("to", np.array([2, 1], np.int64))], ["e"])
    t = c.node("Tile", [e, c.init("reps", np.array([1, 2], np.int64))], ["t"])
    fr = c.node("Range", [c.init("fs", np.array(0.5, np.float32)), c.init("fl", np.array(2.0, np.float32)),
                         c.init("fd", np.array(0.25, np.float32))], ["fr"])
    c.out(c.node("Add", ["x", e], ["y"]), t, fr)

    c = case("constant_of_shape", [2, 3, 4])
    filled_v = c.node("ConstantOfShape", [c.node("Shape", ["x"], ["s"])], ["k"],
                      value=numpy_helper.from_array(np.array([2.5], np.float32), "v"))
    c.out(c.node("Mul", ["x", filled_v], ["y"]))

    c = case("reductions", [2, 3, 4])
    c.out(c.node("ReduceSum", ["x", c.init("ax", np.array([1], np.int64))], ["sum"], keepdims=1))
    c.out(c.node("ReduceMean", ["x"], ["mean"], axes=[-1], keepdims=0))
    c.out(c.node("ReduceMax", ["x"], ["max"], axes=[0, 2], keepdims=1))
    c.out(c.node("ReduceMin", ["x"], ["min"], keepdims=0))

    c = case("unary_math", [3, 5])
    a1 = c.node("Add", [c.node("Abs", ["x"], ["ab"]), c.init("one", np.array(1.0, np.float32))], ["a1"])
    c.out(c.node("Log", [a1], ["log"]), c.node("Sin", ["x"], ["sin"]), c.node("Cos", ["x"], ["cos"]),
          c.node("Erf", ["x"], ["erf"]), c.node("Reciprocal", [a1], ["rec"]), c.node("Neg", ["x"], ["neg"]),
          c.node("Floor", ["x"], ["floor"]), c.node("Ceil", ["x"], ["ceil"]),
          c.node("Pow", [a1, c.init("p", np.array(1.5, np.float32))], ["pow"]),
          c.node("Mod", ["x", c.init("d", np.array(0.7, np.float32))], ["fmod"], fmod=1))

    c = case("pad_constant", [1, 2, 3, 4])
    c.out(c.node("Pad", ["x", c.init("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)),
                         c.init("v", np.array(0.5, np.float32))], ["y"], mode="constant"))

    c = case("maxpool_ceil_mode", [1, 2, 8, 8])
    c.out(c.node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))

    c = case("clip_range", [2, 6])
    c.out(c.node("Clip", ["x", c.init("lo", np.array(-0.5, np.float32)), c.init("hi", np.array(0.7, np.float32))],
                 ["y"]))

    # three graph inputs (a raw-tensor model's request), two outputs
    c = case("three_inputs", [1, 4, 6, 6])
    s = c.node("Add", ["x", c.input("a", 1, 4, 1, 1)], ["s"])
    c.out(s, c.node("MatMul", [s, c.input("b", 6, 5)], ["y"]))

    return cases


def cmd_ops(args):
    cases = build_cases()
    if args.only:
        want = set(args.only.split(","))
        cases = [c for c in cases if c.name in want]
    for c in cases:
        m = c.build()
        outs = run_ort(m.SerializeToString(), c.feeds())
        # declare the output shapes onnxruntime produced; the strict checker then
        # verifies them against ONNX shape inference
        del m.graph.output[:]
        for k, v in outs.items():
            m.graph.output.append(helper.make_tensor_value_info(
                k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
        onnx.checker.check_model(m, full_check=True)
        d = os.path.join(args.out_dir, c.name)
        os.makedirs(d, exist_ok=True)
        mb = m.SerializeToString()
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(mb)
        again = run_ort(mb, c.feeds())
        assert all(np.array_equal(again[k], outs[k]) for k in outs), c.name
        write_safetensors(os.path.join(d, "input.safetensors"), c.feeds())
        write_safetensors(os.path.join(d, "expected.safetensors"), outs)
        print(f"{c.name}: x {list(c.x.shape)} -> " + ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in outs.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("zero", help="zero the conv weights/biases of an export")
    p.add_argument("src")
    p.add_argument("out", help="the zeroed model (gzip-compressed when it ends in .gz)")
    p.add_argument("--dense", action="store_true",
                   help=f"also zero every other float initializer of >= {DENSE_MIN} elements")
    p.set_defaults(fn=cmd_zero)
    p = sub.add_parser("fill", help="seeded conv weights + input + onnxruntime outputs")
    p.add_argument("src")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-calibrate", action="store_true", help="skip the power-of-two weight rescale")
    p.add_argument("--dense", action="store_true",
                   help="also refill every other float initializer of >= 1024 elements: MatMul/Gemm "
                        "weights U(-b, b), b = sqrt(3 / fan_in), the rest U(-0.1, 0.1)")
    p.set_defaults(fn=cmd_fill)
    p = sub.add_parser("ops", help="single-op cases")
    p.add_argument("out_dir")
    p.add_argument("--only", default="", help="comma-separated case names")
    p.set_defaults(fn=cmd_ops)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
