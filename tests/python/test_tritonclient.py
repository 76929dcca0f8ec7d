#!/usr/bin/env python3
"""`modeldock serve` checked with a client nobody here wrote: tritonclient[http].

Plain script (no pytest): every check runs, each failure is printed with what
was expected and what came back, and the exit status is 1 when any failed.

    .ci/venv-client/bin/python tests/python/test_tritonclient.py \
        --url 127.0.0.1:PORT --modeldock target/debug/modeldock \
        --images tests/fixtures/images/astronaut.png tests/fixtures/images/camera.png \
        [--bad FILE]

--images: two good images with faces, sent as binary tensors and as JSON
tensors, and compared with `modeldock infer --json` on the same files run
in-process (MODELDOCK_HOST pointed at an unused port) and through the server.
--bad: a file that is not an image (default: a few bytes of text).

JSON tensors carry each image file base64-encoded (the server's contract;
tritonclient itself can put a BYTES element in JSON only as a UTF-8 string,
so raw PNG/JPEG bytes could not go there anyway).
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time

try:
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException
except ImportError as e:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import tritonclient/numpy ({e}): run `bash .ci/deps` "
          "(it creates .ci/venv-client)", file=sys.stderr)
    sys.exit(2)

MODEL = "face-detector"
LANDMARKS = "face-landmarks"
OUTPUTS = ["DETECTIONS", "BOXES", "SCORES", "CLASS_IDS", "COUNTS"]
SCORE_TOL = 1e-5
BOX_TOL = 1e-3


from checks import CheckFailed, check, run_checks  # noqa: E402


# ---------------------------------------------------------------- helpers

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def image_input(blobs, binary):
    """IMAGE BYTES [N] from a list of encoded image files (bytes): raw in the
    binary tensor extension, base64 in a JSON tensor."""
    arr = np.empty(len(blobs), dtype=np.object_)
    for i, b in enumerate(blobs):
        arr[i] = b if binary else base64.b64encode(b)
    inp = httpclient.InferInput("IMAGE", [len(blobs)], "BYTES")
    inp.set_data_from_numpy(arr, binary_data=binary)
    return inp


def requested(binary):
    return [httpclient.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]


def decode_detections(result, n):
    arr = result.as_numpy("DETECTIONS")
    check(arr is not None, "DETECTIONS missing from the response")
    check(arr.shape == (n,), f"DETECTIONS shape {arr.shape}, expected ({n},)")
    out = []
    for i, el in enumerate(arr):
        if isinstance(el, bytes):
            el = el.decode("utf-8")
        try:
            out.append(json.loads(el))
        except ValueError as e:
            raise CheckFailed(f"DETECTIONS[{i}] is not JSON ({e}): {el[:200]!r}")
    return out


def check_output_specs(result, n, binary):
    """Each output's JSON entry: datatype, shape, binary_data_size or data."""
    d = None
    counts = result.as_numpy("COUNTS")
    check(counts is not None, "COUNTS missing from the response")
    if counts.size:
        d = int(counts.max())
    else:
        d = 0
    want = {
        "DETECTIONS": ("BYTES", [n]),
        "BOXES": ("FP32", [n, d, 4]),
        "SCORES": ("FP32", [n, d]),
        "CLASS_IDS": ("INT32", [n, d]),
        "COUNTS": ("INT32", [n]),
    }
    for name, (dtype, shape) in want.items():
        o = result.get_output(name)
        check(o is not None, f"output {name} missing; response: {brief(result.get_response())}")
        check(o.get("datatype") == dtype, f"{name} datatype {o.get('datatype')!r}, expected {dtype}")
        check(list(o.get("shape", [])) == shape,
              f"{name} shape {o.get('shape')}, expected {shape} (D = largest COUNTS value)")
        params = o.get("parameters") or {}
        if binary:
            check("binary_data_size" in params,
                  f"{name} was asked for binary_data=true but has no parameters.binary_data_size: {brief(o)}")
            check("data" not in o, f"{name} is binary but also has 'data'")
        else:
            check("binary_data_size" not in params,
                  f"{name} was asked for binary_data=false but has binary_data_size: {brief(o)}")
            check("data" in o, f"{name} was asked for binary_data=false but has no 'data': {brief(o)}")


def brief(obj, limit=400):
    s = json.dumps(obj, default=str)
    return s if len(s) <= limit else s[:limit] + "..."


def check_numeric(result, dets, what):
    """BOXES/SCORES/CLASS_IDS/COUNTS agree with the DETECTIONS elements."""
    n = len(dets)
    counts = result.as_numpy("COUNTS")
    boxes = result.as_numpy("BOXES")
    scores = result.as_numpy("SCORES")
    ids = result.as_numpy("CLASS_IDS")
    for name, a in [("COUNTS", counts), ("BOXES", boxes), ("SCORES", scores), ("CLASS_IDS", ids)]:
        check(a is not None, f"{what}: {name} missing")
    check(counts.dtype == np.int32, f"{what}: COUNTS dtype {counts.dtype}")
    check(boxes.dtype == np.float32, f"{what}: BOXES dtype {boxes.dtype}")
    check(scores.dtype == np.float32, f"{what}: SCORES dtype {scores.dtype}")
    check(ids.dtype == np.int32, f"{what}: CLASS_IDS dtype {ids.dtype}")
    lens = [len(e.get("detections", [])) if "error" not in e else 0 for e in dets]
    check(counts.shape == (n,) and list(counts) == lens,
          f"{what}: COUNTS {counts.tolist()} but DETECTIONS lengths {lens}")
    d = max(lens) if lens else 0
    check(boxes.shape == (n, d, 4), f"{what}: BOXES shape {boxes.shape}, expected {(n, d, 4)}")
    check(scores.shape == (n, d), f"{what}: SCORES shape {scores.shape}, expected {(n, d)}")
    check(ids.shape == (n, d), f"{what}: CLASS_IDS shape {ids.shape}, expected {(n, d)}")
    label_ids = {}
    for i, e in enumerate(dets):
        for j, det in enumerate(e.get("detections", []) if "error" not in e else []):
            check(np.allclose(boxes[i, j], det["bbox"], atol=BOX_TOL, rtol=0),
                  f"{what}: BOXES[{i},{j}] {boxes[i, j].tolist()} vs DETECTIONS bbox {det['bbox']}")
            check(abs(float(scores[i, j]) - det["score"]) <= SCORE_TOL,
                  f"{what}: SCORES[{i},{j}] {scores[i, j]} vs DETECTIONS score {det['score']}")
            cid = int(ids[i, j])
            check(cid >= 0, f"{what}: CLASS_IDS[{i},{j}] = {cid} < 0")
            prev = label_ids.setdefault(det["label"], cid)
            check(prev == cid, f"{what}: label {det['label']!r} has class ids {prev} and {cid}")
        pad = slice(lens[i], d)
        check(not boxes[i, pad].any() and not scores[i, pad].any() and not ids[i, pad].any(),
              f"{what}: image {i} has {lens[i]} detections but its padding rows are not zero")
    check(len(set(label_ids.values())) == len(label_ids),
          f"{what}: different labels share a class id: {label_ids}")


def same_detections(got, ref, what):
    """One DETECTIONS element against the CLI's object (timings, cached, image excluded)."""
    check("error" not in got, f"{what}: server answered an error: {got.get('error')}")
    check("error" not in ref, f"{what}: the CLI answered an error: {ref.get('error')}")
    for key in ["image", "model", "image_size", "detections", "timings_ms", "cached"]:
        check(key in got, f"{what}: key {key!r} missing from {brief(got)}")
    check(list(got["image_size"]) == list(ref["image_size"]),
          f"{what}: image_size {got['image_size']} vs CLI {ref['image_size']}")
    check(got["model"] == ref["model"], f"{what}: model {got['model']!r} vs CLI {ref['model']!r}")
    g, r = got["detections"], ref["detections"]
    check(len(g) == len(r), f"{what}: {len(g)} detections vs CLI {len(r)}:\n  server {brief(g)}\n  cli    {brief(r)}")
    for j, (a, b) in enumerate(zip(g, r)):
        check(a["label"] == b["label"], f"{what}: detection {j} label {a['label']!r} vs CLI {b['label']!r}")
        check(abs(a["score"] - b["score"]) <= SCORE_TOL,
              f"{what}: detection {j} score {a['score']} vs CLI {b['score']}")
        check(len(a["bbox"]) == 4 and np.allclose(a["bbox"], b["bbox"], atol=BOX_TOL, rtol=0),
              f"{what}: detection {j} bbox {a['bbox']} vs CLI {b['bbox']}")
        ka, kb = a.get("keypoints", []), b.get("keypoints", [])
        check(len(ka) == len(kb), f"{what}: detection {j} has {len(ka)} keypoints vs CLI {len(kb)}")
        if ka:
            check(np.allclose(np.array(ka)[:, :2], np.array(kb)[:, :2], atol=BOX_TOL, rtol=0),
                  f"{what}: detection {j} keypoints differ from the CLI's")
            check(np.allclose(np.array(ka)[:, 2:], np.array(kb)[:, 2:], atol=SCORE_TOL, rtol=0),
                  f"{what}: detection {j} keypoint scores differ from the CLI's")


def same_results(a, b, what):
    """Two lists of DETECTIONS elements from the server (same inputs, other transport)."""
    check(len(a) == len(b), f"{what}: {len(a)} vs {len(b)} elements")
    for i, (x, y) in enumerate(zip(a, b)):
        if "error" in x or "error" in y:
            check("error" in x and "error" in y, f"{what}[{i}]: only one of them is an error")
        else:
            same_detections(x, y, f"{what}[{i}]")


def run_cli(modeldock, model, paths, host, extra=()):
    env = dict(os.environ)
    env["MODELDOCK_HOST"] = host
    cmd = [modeldock, "infer", "--model", model, "--json", *extra, *paths]
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    lines = [l for l in out.splitlines() if l.strip()]
    try:
        objs = [json.loads(l) for l in lines]
    except ValueError as e:
        raise CheckFailed(f"`{' '.join(cmd)}` (MODELDOCK_HOST={host}) printed non-JSON ({e}):\n{out}\n{err}")
    check(p.returncode == 0 and len(objs) == len(paths),
          f"`{' '.join(cmd)}` (MODELDOCK_HOST={host}) exited {p.returncode} with {len(objs)} lines "
          f"for {len(paths)} images:\nstdout: {out}\nstderr: {err}")
    return objs


# ---------------------------------------------------------------- checks

class Ctx:
    pass


def t_health(c):
    check(c.client.is_server_live() is True, "is_server_live() is not True (GET /v2/health/live must answer 200)")
    check(c.client.is_server_ready() is True, "is_server_ready() is not True (GET /v2/health/ready must answer 200)")


def t_server_metadata(c):
    md = c.client.get_server_metadata()
    check(isinstance(md, dict), f"GET /v2 did not give a JSON object: {brief(md)}")
    ext = md.get("extensions")
    check(isinstance(ext, list) and ext, f"server metadata has no 'extensions' list: {brief(md)}")
    check("binary_tensor_data" in ext, f"extensions {ext} do not list 'binary_tensor_data'")
    for key in ["name", "version"]:
        check(isinstance(md.get(key), str), f"server metadata has no string {key!r}: {brief(md)}")


def t_repository_index(c):
    idx = c.client.get_model_repository_index()
    check(isinstance(idx, list), f"POST /v2/repository/index did not give a JSON array: {brief(idx)}")
    names = [m.get("name") for m in idx if isinstance(m, dict)]
    check(len(names) == len(idx), f"index entries must be objects with 'name': {brief(idx)}")
    for m in [MODEL, LANDMARKS]:
        check(m in names, f"repository index does not list {m}: {names}")


def wait_ready(c, model, want, secs=10.0):
    end = time.time() + secs
    while True:
        got = c.client.is_model_ready(model)
        if got == want or time.time() > end:
            return got
        time.sleep(0.1)


def t_load_unload(c):
    check(c.client.is_model_ready(MODEL) is False,
          f"is_model_ready({MODEL}) is True before load_model (a fresh server must not have loaded it)")
    c.client.load_model(MODEL)
    check(c.client.is_model_ready(MODEL) is True, f"is_model_ready({MODEL}) is False right after load_model returned")
    c.client.unload_model(MODEL)
    check(wait_ready(c, MODEL, False) is False, f"is_model_ready({MODEL}) still True 10 s after unload_model")
    c.client.load_model(MODEL)
    check(c.client.is_model_ready(MODEL) is True, f"is_model_ready({MODEL}) is False after the second load_model")


def expect_server_error(fn, what):
    try:
        fn()
    except InferenceServerException as e:
        msg = e.message() or ""
        check("exception occurred in the client while decoding" not in msg,
              f"{what}: the error body is not JSON {{\"error\": \"...\"}}: {msg}")
        check(msg.strip() != "", f"{what}: empty error message")
        return e
    raise CheckFailed(f"{what}: no error raised")


def t_unknown_model(c):
    check(c.client.is_model_ready("no-such-model") is False, "is_model_ready(no-such-model) is True")
    expect_server_error(lambda: c.client.load_model("no-such-model"), "load_model(no-such-model)")
    expect_server_error(
        lambda: c.client.infer("no-such-model", [image_input([c.good[0]], True)]), "infer(no-such-model)")


def t_model_metadata(c):
    md = c.client.get_model_metadata(MODEL)
    check(md.get("name") == MODEL, f"model metadata name {md.get('name')!r}: {brief(md)}")
    ins = {i.get("name"): i for i in md.get("inputs", [])}
    check("IMAGE" in ins and ins["IMAGE"].get("datatype") == "BYTES",
          f"model metadata inputs lack IMAGE BYTES: {brief(md.get('inputs'))}")
    outs = {o.get("name"): o.get("datatype") for o in md.get("outputs", [])}
    want = {"DETECTIONS": "BYTES", "BOXES": "FP32", "SCORES": "FP32", "CLASS_IDS": "INT32", "COUNTS": "INT32"}
    for k, v in want.items():
        check(outs.get(k) == v, f"model metadata outputs: {k} should be {v}, got {outs}")


def t_infer_binary_and_json_outputs(c):
    n = len(c.good)
    rb = c.client.infer(MODEL, [image_input(c.good, True)], outputs=requested(True))
    check_output_specs(rb, n, binary=True)
    db = decode_detections(rb, n)
    check_numeric(rb, db, "binary outputs")
    rj = c.client.infer(MODEL, [image_input(c.good, True)], outputs=requested(False))
    check_output_specs(rj, n, binary=False)
    dj = decode_detections(rj, n)
    check_numeric(rj, dj, "JSON outputs")
    same_results(db, dj, "binary vs JSON outputs")
    for name in ["BOXES", "SCORES", "CLASS_IDS", "COUNTS"]:
        check(np.array_equal(rb.as_numpy(name), rj.as_numpy(name)), f"{name}: binary and JSON outputs differ")
    # No outputs named: tritonclient asks for all of them in binary (binary_data_output).
    ra = c.client.infer(MODEL, [image_input(c.good, True)])
    for name in OUTPUTS:
        check(ra.as_numpy(name) is not None, f"infer without 'outputs' did not return {name}")
    same_results(decode_detections(ra, n), db, "all outputs (none named) vs named")
    c.binary_result = (rb, db)


def t_matches_cli(c):
    rb, db = c.binary_result
    ref = run_cli(c.modeldock, MODEL, c.good_paths, c.no_server)
    check(sum(len(r["detections"]) for r in ref) > 0,
          f"the CLI finds no faces in {c.good_paths}: the comparison would prove little")
    for i, (got, want) in enumerate(zip(db, ref)):
        same_detections(got, want, f"server vs in-process CLI, {os.path.basename(c.good_paths[i])}")
    # The same objects through the server (MODELDOCK_HOST = this server).
    via = run_cli(c.modeldock, MODEL, c.good_paths, c.args.url)
    for i, (got, want) in enumerate(zip(via, ref)):
        same_detections(got, want, f"CLI via server vs in-process, {os.path.basename(c.good_paths[i])}")


def t_params(c):
    params = {"conf": 0.3, "iou": 0.4}
    r = c.client.infer(MODEL, [image_input(c.good, True)], outputs=requested(True), parameters=params)
    got = decode_detections(r, len(c.good))
    check_numeric(r, got, "conf/iou request")
    ref = run_cli(c.modeldock, MODEL, c.good_paths, c.no_server, ["--conf", "0.3", "--iou", "0.4"])
    for i, (g, w) in enumerate(zip(got, ref)):
        same_detections(g, w, f"conf=0.3 iou=0.4 vs CLI, {os.path.basename(c.good_paths[i])}")
    r = c.client.infer(MODEL, [image_input(c.good, True)], outputs=requested(True), parameters={"conf": 1.0})
    strict = decode_detections(r, len(c.good))
    base = c.binary_result[1]
    for i, (s, b) in enumerate(zip(strict, base)):
        check(len(s["detections"]) <= len(b["detections"]),
              f"conf=1.0 gave more detections than the default for image {i}")


def t_json_input(c):
    n = len(c.good)
    rj = c.client.infer(MODEL, [image_input(c.good, False)], outputs=requested(True))
    dj = decode_detections(rj, n)
    check_numeric(rj, dj, "JSON (base64) input")
    same_results(dj, c.binary_result[1], "JSON vs binary input")
    rjj = c.client.infer(MODEL, [image_input(c.good, False)], outputs=requested(False))
    djj = decode_detections(rjj, n)
    check_numeric(rjj, djj, "JSON input, JSON outputs")
    same_results(djj, c.binary_result[1], "JSON input + outputs vs binary")
    for name in ["BOXES", "SCORES", "CLASS_IDS", "COUNTS"]:
        check(np.array_equal(rj.as_numpy(name), rjj.as_numpy(name)), f"{name}: JSON-input results differ by output mode")


def t_bad_in_batch(c):
    blobs = [c.good[0], c.bad, c.good[1]]
    for binary_out in (True, False):
        r = c.client.infer(MODEL, [image_input(blobs, True)], outputs=requested(binary_out))
        what = f"batch good+bad+good ({'binary' if binary_out else 'JSON'} outputs)"
        dets = decode_detections(r, 3)
        e = dets[1]
        check(isinstance(e.get("error"), str) and e["error"].strip(),
              f"{what}: element 1 (not an image) has no 'error' string: {brief(e)}")
        check("image" in e, f"{what}: error element has no 'image' key: {brief(e)}")
        for i in (0, 2):
            check("error" not in dets[i], f"{what}: good element {i} failed: {dets[i].get('error')}")
        same_detections(dets[0], c.binary_result[1][0], f"{what}, element 0 vs alone")
        same_detections(dets[2], c.binary_result[1][1], f"{what}, element 2 vs alone")
        check_numeric(r, dets, what)


def t_landmarks(c):
    c.client.load_model(LANDMARKS)
    check(c.client.is_model_ready(LANDMARKS) is True, f"{LANDMARKS} not ready after load_model")
    r = c.client.infer(LANDMARKS, [image_input(c.good[:1], True)], outputs=requested(True))
    got = decode_detections(r, 1)
    check_numeric(r, got, LANDMARKS)
    ref = run_cli(c.modeldock, LANDMARKS, c.good_paths[:1], c.no_server)
    same_detections(got[0], ref[0], f"{LANDMARKS} vs CLI")
    check(any(d.get("keypoints") for d in got[0]["detections"]), f"{LANDMARKS}: no keypoints")
    c.client.unload_model(LANDMARKS)
    check(wait_ready(c, LANDMARKS, False) is False, f"{LANDMARKS} still ready after unload_model")


def t_stats(c):
    st = c.client.get_inference_statistics(MODEL)
    check(isinstance(st, dict), f"GET /v2/models/{MODEL}/stats did not give a JSON object: {brief(st)}")
    ms = st.get("model_stats")
    check(isinstance(ms, list) and any(m.get("name") == MODEL for m in ms),
          f"stats have no model_stats entry named {MODEL}: {brief(st)}")


CHECKS = [
    t_health,
    t_server_metadata,
    t_repository_index,
    t_load_unload,
    t_unknown_model,
    t_model_metadata,
    t_infer_binary_and_json_outputs,
    t_matches_cli,
    t_params,
    t_json_input,
    t_bad_in_batch,
    t_landmarks,
    t_stats,
]
NEEDS = {t: "binary_result" for t in [t_matches_cli, t_params, t_json_input, t_bad_in_batch]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="HOST:PORT of `modeldock serve` (no scheme)")
    ap.add_argument("--modeldock", required=True, help="path of the modeldock binary (for `infer --json`)")
    ap.add_argument("--images", nargs="+", required=True, help="two good images with faces")
    ap.add_argument("--bad", help="a file that is not an image")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if len(args.images) < 2:
        ap.error("--images needs at least two files")

    c = Ctx()
    c.args = args
    c.modeldock = args.modeldock
    c.good_paths = args.images[:2]
    c.good = [open(p, "rb").read() for p in c.good_paths]
    c.bad = open(args.bad, "rb").read() if args.bad else b"these are my notes, not a picture\n"
    c.no_server = f"127.0.0.1:{free_port()}"
    c.client = httpclient.InferenceServerClient(
        args.url, verbose=args.verbose, connection_timeout=30.0, network_timeout=300.0)

    return run_checks(c, CHECKS, NEEDS, "tritonclient")


if __name__ == "__main__":
    sys.exit(main())
