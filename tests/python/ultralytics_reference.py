#!/usr/bin/env python3
"""Ultralytics' own `predict` on the filled ONNX fixtures: the reference
detections tests/onnx_ultralytics.rs compares modeldock's with.

Needs a Python with `ultralytics` (8.4.190), `onnxruntime` and `opencv-python`
(torch comes with ultralytics: ~6 GB, which is why CI does not run this; the
JSON files it writes are committed). The filled model comes from
`onnx_fixtures.py fill` run by ONNX_PYTHON (the `.ci/venv-triton` Python, the
one the tests use), so the weights are the ones the test fills.

    ultralytics_reference.py --onnx-python .ci/venv-triton/bin/python OUT_DIR

For each case: the export filled from its seed, then
`YOLO(model.onnx, task=...)` (or `RTDETR(...)`) `.predict(image, imgsz=320,
conf=CONF)` on each image: the whole astronaut.png (square, no padding) and
its top 300 rows (padded above and below). Written as
OUT_DIR/<export>-seed<N>.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
IMAGE = os.path.join(ROOT, "tests/fixtures/images/astronaut.png")
# (export, seed, task, conf)
# (YOLOv8n and YOLOv8n-seg filled from a seed saturate their class scores on
# a photo: thousands of ties at 1.0, so no reference order to compare.)
CASES = [
    ("yolo11n", 3, "detect", 0.68),
    ("yolov8n-pose", 3, "pose", 0.6),
    ("rtdetr-l", 8, "rtdetr", 0.1),
]
CROPS = [None, [0, 0, 512, 300]]  # x, y, w, h


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx-python", required=True)
    ap.add_argument("out_dir")
    args = ap.parse_args()
    import ultralytics
    from ultralytics import RTDETR, YOLO

    full = cv2.imread(IMAGE)
    for name, seed, task, conf in CASES:
        src = os.path.join(ROOT, f"tests/fixtures/onnx/{name}-320.onnx")
        dense = []
        if not os.path.exists(src):
            src += ".gz"
            dense = ["--dense"]
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([args.onnx_python, os.path.join(HERE, "onnx_fixtures.py"), "fill", src, d,
                            "--seed", str(seed)] + dense, check=True, stdout=subprocess.DEVNULL)
            path = os.path.join(d, "model.onnx")
            model = RTDETR(path) if task == "rtdetr" else YOLO(path, task=task)
            images = []
            for crop in CROPS:
                img = full if crop is None else full[crop[1]:crop[1] + crop[3], crop[0]:crop[0] + crop[2]]
                r = model.predict(img, imgsz=320, conf=conf, verbose=False)[0]
                dets = []
                for i in range(len(r.boxes)):
                    det = {
                        "xyxy": [float(v) for v in r.boxes.xyxy[i].tolist()],
                        "score": float(r.boxes.conf[i]),
                        "class": int(r.boxes.cls[i]),
                    }
                    if r.keypoints is not None:
                        det["keypoints"] = [[float(v) for v in k] for k in r.keypoints.data[i].tolist()]
                    dets.append(det)
                images.append({"crop": crop, "detections": dets})
                print(f"{name} seed {seed} crop {crop}: {len(dets)} detections", file=sys.stderr)
        out = {
            "export": name, "seed": seed, "task": task, "conf": conf, "imgsz": 320,
            "image": "astronaut.png", "ultralytics": ultralytics.__version__,
            "opencv": cv2.__version__, "images": images,
        }
        with open(os.path.join(args.out_dir, f"{name}-seed{seed}.json"), "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
