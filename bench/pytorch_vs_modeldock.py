#!/usr/bin/env python3
"""PyTorch and modeldock on the same networks, same machine, one run.

    python3 -m venv venv && venv/bin/pip install torch ultralytics
    venv/bin/python bench/pytorch_vs_modeldock.py [--modeldock PATH] [--threads N] [--runs N]

Networks (warm forward p50, batch 1, float32, CPU):
  * face-api tiny face detector at 416x416, built in PyTorch from the face-api
    sources (conv0 3x3 valid + leaky, five depthwise-separable convs with
    TF-'same' max pools, conv8 1x1), with modeldock's converted weights
    (models/face-detector/*.safetensors);
  * YOLOv8n at 640x640, ultralytics' own model built offline from
    yolov8n.yaml (random init, Conv+BN fused, eval mode).
modeldock's figures come from `modeldock bench --json`: forward_loop_p50_ms
(the network back to back on one input tensor, timed as PyTorch is timed
here); forward_p50_ms (the forward inside engine requests, with decoding and
post-processing between runs) is printed too.
Both sides are measured in alternating rounds (--rounds, default 3); each
side's best round counts. Prints both figures and modeldock / PyTorch for
each network, with every round's figure.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "F32", k
        t = torch.frombuffer(bytearray(data[8 + n + a : 8 + n + b]), dtype=torch.float32)
        out[k] = t.reshape(v["shape"])
    return out


class TinyFaceDetector(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        w = self.w
        leaky = lambda t: F.leaky_relu(t, 0.1)
        x = leaky(F.conv2d(x, w["conv0.weight"], w["conv0.bias"]))
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        for i in range(1, 6):
            c = x.shape[1]
            x = F.conv2d(F.pad(x, (1, 1, 1, 1)), w[f"conv{i}.depthwise"], groups=c)
            x = leaky(F.conv2d(x, w[f"conv{i}.pointwise"], w[f"conv{i}.bias"]))
            if i < 5:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            else:
                x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 1)
        return F.conv2d(x, w["conv8.weight"], w["conv8.bias"])


def p50(fn, x, runs, warmup=3):
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            fn(x)
            ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def modeldock(binary, args):
    """(back-to-back forward p50 -- timed like PyTorch here --, forward p50 inside engine requests)."""
    out = subprocess.run([binary, "bench", "--json", *args], capture_output=True, text=True, check=True)
    j = json.loads(out.stdout)
    return j.get("forward_loop_p50_ms") or j["forward_p50_ms"], j["forward_p50_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--modeldock", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    binary = a.modeldock
    if binary is None:
        for cand in ("target/release/modeldock", "target/debug/modeldock"):
            if os.path.exists(os.path.join(ROOT, cand)):
                binary = os.path.join(ROOT, cand)
                break
    if binary is None:
        sys.exit("build modeldock first (cargo build --release) or pass --modeldock PATH")
    torch.set_num_threads(a.threads)

    w = load_safetensors(os.path.join(ROOT, "models/face-detector/tiny_face_detector_model.safetensors"))
    face = TinyFaceDetector(w)

    from ultralytics import YOLO

    yolo = YOLO("yolov8n.yaml").model.fuse().eval()

    # The machine may be shared: measure both sides in alternating rounds
    # and keep each side's best round (its p50), so a noisy moment hurts
    # neither side alone.
    rounds = {k: [] for k in ("face_pt", "face_md", "yolo_pt", "yolo_md")}
    in_engine = {"face": [], "yolo": []}
    for _ in range(a.rounds):
        rounds["face_pt"].append(p50(face, torch.rand(1, 3, 416, 416), a.runs))
        md, engine = modeldock(binary, ["--model", "face-detector", "--runs", str(a.runs)])
        rounds["face_md"].append(md)
        in_engine["face"].append(engine)
        rounds["yolo_pt"].append(p50(yolo, torch.rand(1, 3, 640, 640), a.runs))
        md, engine = modeldock(binary, ["--model", "yolov8n", "--random-weights", "--runs", str(a.runs)])
        rounds["yolo_md"].append(md)
        in_engine["yolo"].append(engine)

    print(f"threads: {a.threads}, torch {torch.__version__}, modeldock {binary}")
    print(f"warm forward p50 (ms), best of {a.rounds} alternating rounds of {a.runs} runs; every round in brackets")
    print(f"{'network':<28} {'PyTorch ms':>10} {'modeldock ms':>13} {'ratio':>7}")
    for name, key in (("tiny face detector @416", "face"), ("YOLOv8n @640", "yolo")):
        pt, md = min(rounds[key + "_pt"]), min(rounds[key + "_md"])
        every = lambda k: " ".join(f"{v:.1f}" for v in rounds[k])
        print(f"{name:<28} {pt:>10.1f} {md:>13.1f} {md / pt:>7.2f}   [{every(key + '_pt')}] [{every(key + '_md')}]")
    print("modeldock's figure is `bench`'s forward_loop_p50_ms (the network back to back on one input,")
    print("as PyTorch is timed here); inside engine requests (forward_p50_ms), best round:",
          ", ".join(f"{k} {min(v):.1f} ms" for k, v in in_engine.items()))


if __name__ == "__main__":
    main()
