#!/usr/bin/env python3
"""face-api's tiny face detector network as an ONNX graph (onnx helper API + numpy).

The same network as `src/models/tiny_face_detector.rs` (`forward_all`), built
from the same safetensors weights, for the remote-backend tests (Triton's and
MLServer's `tiny_face` model runs it in onnxruntime):

    conv0  3x3 VALID + bias, LeakyRelu(0.1)   -> MaxPool 2x2/2, TF SAME
    conv1..conv5: depthwise 3x3 SAME (group=C, no bias), pointwise 1x1 + bias,
           LeakyRelu(0.1)                     -> MaxPool 2x2/2 TF SAME (conv1..4)
                                                 MaxPool 2x2/1, pad 1 after (conv5)
    conv8  1x1 + bias, no activation

TF SAME pads the odd pixel after (bottom/right); ONNX MaxPool pads never win
a max, like the `-inf`/edge padding of the Rust kernels.

input  "input"  FP32 [batch, 3, 416, 416]  (batch is dynamic unless --static-batch)
output "output" FP32 [batch, 25, 13, 13]

    python face_onnx.py --out tiny_face.onnx \
        [--weights models/face-detector/tiny_face_detector_model.safetensors] \
        [--check tests/fixtures/tiny_face_detector/astronaut.safetensors]

--check runs the graph in onnxruntime on the fixture's "input" and prints the
max abs difference to its "output" (exit 1 when above --tol, default 1e-4).
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_WEIGHTS = os.path.join(ROOT, "models", "face-detector", "tiny_face_detector_model.safetensors")
DEFAULT_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny_face_detector", "astronaut.safetensors")
INPUT_SIZE = 416
CHANS = [16, 32, 64, 128, 256, 512]
LEAKY = 0.1

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1"}


def read_safetensors(path):
    """{name: np.ndarray} from a safetensors file, parsed by hand: an 8-byte
    little-endian header length, the JSON header, then the raw data
    (little-endian) at each tensor's data_offsets."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dt = np.dtype(_DTYPES[info["dtype"]])
        arr = np.frombuffer(blob, dtype=dt, count=(end - begin) // dt.itemsize, offset=base + begin)
        out[name] = arr.reshape(info["shape"]).astype(dt.newbyteorder("="))
    return out


def _same_pad(n, k, stride):
    """TF SAME padding on an n-long axis: (before, after), odd pixel after."""
    out = -(-n // stride)
    total = max((out - 1) * stride + k - n, 0)
    return total // 2, total - total // 2


def build_model(weights, dynamic_batch=True, opset=13):
    """The network as an onnx.ModelProto."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def conv(x, out, w, b, k, pads, group=1):
        ins = [x, init(f"{out}.w", w)] + ([init(f"{out}.b", b)] if b is not None else [])
        nodes.append(helper.make_node(
            "Conv", ins, [out], name=out, kernel_shape=[k, k], strides=[1, 1],
            pads=list(pads), group=group, dilations=[1, 1]))
        return out

    def leaky(x, out):
        nodes.append(helper.make_node("LeakyRelu", [x], [out], name=out, alpha=LEAKY))
        return out

    def pool(x, out, size, stride):
        (t, b_), (l, r) = _same_pad(size, 2, stride), _same_pad(size, 2, stride)
        nodes.append(helper.make_node(
            "MaxPool", [x], [out], name=out, kernel_shape=[2, 2], strides=[stride, stride],
            pads=[t, l, b_, r]))
        return out, -(-size // stride)

    size = INPUT_SIZE
    h = conv("input", "conv0", weights["conv0.weight"], weights["conv0.bias"], 3, [0, 0, 0, 0])
    h = leaky(h, "conv0.act")
    size -= 2  # VALID 3x3
    h, size = pool(h, "pool0", size, 2)
    for i in range(1, 6):
        p = f"conv{i}"
        (t, b_), (l, r) = _same_pad(size, 3, 1), _same_pad(size, 3, 1)
        h = conv(h, f"{p}.dw", weights[f"{p}.depthwise"], None, 3, [t, l, b_, r], group=CHANS[i - 1])
        h = conv(h, f"{p}.pw", weights[f"{p}.pointwise"], weights[f"{p}.bias"], 1, [0, 0, 0, 0])
        h = leaky(h, f"{p}.act")
        h, size = pool(h, f"pool{i}", size, 1 if i == 5 else 2)
    conv(h, "output", weights["conv8.weight"], weights["conv8.bias"], 1, [0, 0, 0, 0])

    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "tiny_face_detector",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 25, size, size])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="modeldock tests/python/face_onnx.py")
    model.ir_version = 7  # opset 13 needs IR >= 7; old enough for any onnxruntime
    import onnx
    onnx.checker.check_model(model)
    return model


def write_onnx(out_path, weights_path=DEFAULT_WEIGHTS, dynamic_batch=True):
    import onnx
    model = build_model(read_safetensors(weights_path), dynamic_batch=dynamic_batch)
    tmp = out_path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, out_path)
    return out_path


def session(onnx_path, threads=1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_path, sess_options=so, providers=["CPUExecutionProvider"])


def check(onnx_path, fixture=DEFAULT_FIXTURE, threads=1):
    """Max abs difference between onnxruntime's output and the fixture's."""
    t = read_safetensors(fixture)
    got = session(onnx_path, threads).run(["output"], {"input": t["input"]})[0]
    want = t["output"]
    if got.shape != want.shape:
        raise SystemExit(f"shape {got.shape} != fixture {want.shape}")
    return float(np.max(np.abs(got - want)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="ONNX file to write")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--static-batch", action="store_true", help="batch dim fixed at 1")
    ap.add_argument("--check", nargs="?", const=DEFAULT_FIXTURE, metavar="FIXTURE",
                    help="compare with a fixture's input/output in onnxruntime")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    write_onnx(a.out, a.weights, dynamic_batch=not a.static_batch)
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes)")
    if a.check:
        d = check(a.out, a.check)
        print(f"max abs diff vs {os.path.basename(a.check)}: {d:.3g} (tol {a.tol:g})")
        if not d <= a.tol:
            sys.exit(1)


if __name__ == "__main__":
    main()
