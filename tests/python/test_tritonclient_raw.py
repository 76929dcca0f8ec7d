#!/usr/bin/env python3
"""A raw-tensor model (`import onnx --family raw`) of `modeldock serve`,
driven with tritonclient[http] as a plain ONNX server.

Plain script (no pytest): every check runs, each failure is printed with what
was expected and what came back, and the exit status is 1 when any failed.

    .ci/venv-client/bin/python tests/python/test_tritonclient_raw.py \
        --url 127.0.0.1:PORT --model MODEL --case DIR [--tol 1e-4]

--case: a folder with input.safetensors (each graph input by name) and
expected.safetensors (each graph output by name, ONNX Runtime's).
"""

import argparse
import json
import struct
import sys

try:
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException
except ImportError as e:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import tritonclient/numpy ({e}): run `bash .ci/deps` "
          "(it creates .ci/venv-client)", file=sys.stderr)
    sys.exit(2)


from checks import CheckFailed, check, run_checks  # noqa: E402


def read_safetensors(path):
    """{name: float32 array} of a safetensors file (F32 tensors only)."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    head = json.loads(blob[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        check(v["dtype"] == "F32", f"{path}: {k} is {v['dtype']}, expected F32")
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(blob[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"])
    return out


def inputs_of(c, binary, only=None):
    ins = []
    for name, x in c.inputs.items():
        if only is not None and name not in only:
            continue
        i = httpclient.InferInput(name, list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=binary)
        ins.append(i)
    return ins


def expect_refusal(c, ins, outs, words, what):
    try:
        c.client.infer(c.model, ins, outputs=outs)
    except InferenceServerException as e:
        msg = e.message() or ""
        check(all(w in msg for w in words), f"{what}: the error does not name {words}: {msg!r}")
        check("\n" not in msg.strip(), f"{what}: the error is not one line: {msg!r}")
        return
    raise CheckFailed(f"{what}: the server answered")


def t_metadata_lists_the_graph_tensors(c):
    meta = c.client.get_model_metadata(c.model)
    ins = {i["name"]: i for i in meta.get("inputs", [])}
    outs = {o["name"]: o for o in meta.get("outputs", [])}
    check(set(ins) == set(c.inputs), f"metadata inputs {sorted(ins)}, the graph takes {sorted(c.inputs)}")
    check(set(outs) == set(c.expected), f"metadata outputs {sorted(outs)}, the graph gives {sorted(c.expected)}")
    for name, x in c.inputs.items():
        check(ins[name]["datatype"] == "FP32", f"input {name}: datatype {ins[name]['datatype']}")
        check(ins[name]["shape"] == list(x.shape), f"input {name}: shape {ins[name]['shape']}, fixture {list(x.shape)}")
    c.meta = meta


def compare(c, r, names, how):
    for name in names:
        got = r.as_numpy(name)
        check(got is not None, f"{how}: output {name} missing")
        want = c.expected[name]
        check(got.shape == want.shape, f"{how}: output {name} shape {got.shape}, expected {want.shape}")
        diff = float(np.max(np.abs(got - want))) if want.size else 0.0
        check(diff <= c.tol, f"{how}: output {name} off by {diff:.3e} (tolerance {c.tol})")


def t_binary_outputs_match_onnxruntime(c):
    outs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in c.expected]
    r = c.client.infer(c.model, inputs_of(c, True), outputs=outs)
    for n in c.expected:
        o = r.get_output(n)
        check("binary_data_size" in ((o or {}).get("parameters") or {}), f"{n} asked binary, got {str(o)[:200]}")
    compare(c, r, c.expected, "binary")


def t_json_outputs_match_onnxruntime(c):
    outs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in c.expected]
    r = c.client.infer(c.model, inputs_of(c, False), outputs=outs)
    for n in c.expected:
        o = r.get_output(n)
        check(o is not None and "data" in o, f"{n} asked as JSON, got {str(o)[:200]}")
    compare(c, r, c.expected, "JSON")


def t_one_output_asked_for_is_the_only_one_back(c):
    name = sorted(c.expected)[-1]
    r = c.client.infer(c.model, inputs_of(c, True), outputs=[httpclient.InferRequestedOutput(name)])
    got = [o["name"] for o in r.get_response().get("outputs", [])]
    check(got == [name], f"asked for {name}, got {got}")
    compare(c, r, [name], "one output")


def t_bad_requests_get_one_line_naming_the_tensor(c):
    names = list(c.inputs)
    if len(names) > 1:
        expect_refusal(c, inputs_of(c, True, only=names[1:]), None, [names[0], "missing"], "a missing input")
    x = c.inputs[names[0]]
    wrong = httpclient.InferInput(names[0], [int(np.prod(x.shape))], "FP32")
    wrong.set_data_from_numpy(x.reshape(-1), binary_data=True)
    rest = [i for i in inputs_of(c, True) if i.name() != names[0]]
    expect_refusal(c, [wrong] + rest, None, [names[0], "shape"], "a wrong shape")
    stray = httpclient.InferInput("not_an_input", [1], "FP32")
    stray.set_data_from_numpy(np.zeros(1, np.float32), binary_data=True)
    expect_refusal(c, inputs_of(c, True) + [stray], None, ["not_an_input"], "an unknown input")
    expect_refusal(c, inputs_of(c, True), [httpclient.InferRequestedOutput("nope")], ["nope"], "an unknown output")
    # The model still answers after the refusals.
    r = c.client.infer(c.model, inputs_of(c, True))
    compare(c, r, c.expected, "after the refusals")


CHECKS = [
    t_metadata_lists_the_graph_tensors,
    t_binary_outputs_match_onnxruntime,
    t_json_outputs_match_onnxruntime,
    t_one_output_asked_for_is_the_only_one_back,
    t_bad_requests_get_one_line_naming_the_tensor,
]
NEEDS = {}


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="HOST:PORT of `modeldock serve` (no scheme)")
    ap.add_argument("--model", required=True, help="a raw-tensor model")
    ap.add_argument("--case", required=True, help="folder with input.safetensors and expected.safetensors")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    c = Ctx()
    c.model = args.model
    c.tol = args.tol
    c.inputs = read_safetensors(f"{args.case}/input.safetensors")
    c.expected = read_safetensors(f"{args.case}/expected.safetensors")
    c.client = httpclient.InferenceServerClient(args.url, connection_timeout=30.0, network_timeout=300.0)
    return run_checks(c, CHECKS, NEEDS, "tritonclient raw tensors")


if __name__ == "__main__":
    sys.exit(main())
