#!/usr/bin/env python3
"""Imported ONNX graphs: modeldock's forward against ONNX Runtime's, in one run.

For each Ultralytics export in tests/fixtures/onnx (YOLO11n, YOLOv8n,
YOLOv8n-seg, YOLOv8n-pose and RT-DETR-l at 320; weights zeroed in the
repository), the graph is filled from a seed by
tests/python/onnx_fixtures.py, imported with `modeldock import onnx`, and
timed:

- modeldock: `modeldock bench --model ID --json`, `forward_loop_p50_ms`
  (the network alone on the model's own input, warm, this process's pool);
- ONNX Runtime: `InferenceSession` with 2 intra-op threads, ORT_ENABLE_ALL,
  median of `--runs` calls after 3 warm-ups, on the same filled file.

A ratio below 1 means modeldock is faster (issue target: <= 0.9). Needs a
Python with onnx, onnxruntime and numpy (`.ci/venv-triton` has them) and a
release build (`cargo build --release`). Measure on a quiet machine: a build
in the background makes every figure up to 3x worse.

    .ci/venv-triton/bin/python bench/onnx_vs_onnxruntime.py [--runs 30] [--json-out FILE]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["yolo11n", "yolov8n", "yolov8n-seg", "yolov8n-pose", "rtdetr-l"]


def ort_forward_ms(path, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    x = np.random.default_rng(0).random(i.shape, dtype=np.float32)
    for _ in range(3):
        s.run(None, {i.name: x})
    t = []
    for _ in range(runs):
        a = time.perf_counter()
        s.run(None, {i.name: x})
        t.append((time.perf_counter() - a) * 1e3)
    return statistics.median(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--modeldock", default=os.path.join(ROOT, "target/release/modeldock"))
    ap.add_argument("--json-out")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = os.path.join(tmp, "models")
        for name in MODELS:
            filled = os.path.join(tmp, name)
            src = os.path.join(ROOT, f"tests/fixtures/onnx/{name}-320.onnx")
            dense = []
            if not os.path.exists(src):
                src, dense = src + ".gz", ["--dense"]
            subprocess.run(
                [sys.executable, os.path.join(ROOT, "tests/python/onnx_fixtures.py"), "fill",
                 src, filled, "--seed", "0"] + dense,
                check=True, capture_output=True)
            onnx_path = os.path.join(filled, "model.onnx")
            mid = f"{name}-bench"
            subprocess.run([args.modeldock, "import", "onnx", onnx_path, "--out",
                            os.path.join(models_dir, name), "--id", mid], check=True, capture_output=True)
            env = dict(os.environ, MODELDOCK_HOST="127.0.0.1:9")
            out = subprocess.run([args.modeldock, "bench", "--models-dir", models_dir, "--model", mid,
                                  "--runs", str(max(args.runs, 3)), "--json"],
                                 check=True, capture_output=True, text=True, env=env).stdout
            md = json.loads(out)["forward_loop_p50_ms"]
            peer = ort_forward_ms(onnx_path, args.runs)
            rows.append({"model": name, "input": 320, "modeldock_ms": md, "onnxruntime_ms": peer,
                         "ratio": md / peer})
    print(f"{'model':10} {'modeldock':>11} {'ORT':>9} {'ratio':>7}  (target <= 0.9)")
    for r in rows:
        print(f"{r['model']:10} {r['modeldock_ms']:9.2f}ms {r['onnxruntime_ms']:7.2f}ms {r['ratio']:7.2f}")
    line = json.dumps({"onnx_forward": rows})
    print(line)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
