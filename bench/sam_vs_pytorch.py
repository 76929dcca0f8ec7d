"""Segment Anything: modeldock against Meta's PyTorch code, in one run.

    python bench/sam_vs_pytorch.py [--variant vit_t|vit_b|vit_l|vit_h] [--runs 5]
        [--modeldock target/release/modeldock]

Needs a venv with PyPI `torch`, `segment-anything` (ViT-B/L/H) and
`mobilesam-mirror` + `timm` (vit_t). Both sides run random weights on 2
threads (timings do not depend on the values):

- image encoder: `sam.image_encoder(x)` on a preprocessed 1×3×1024×1024
  input against `modeldock bench --random-weights`' `forward_loop_p50_ms`
  (the encoder alone on the same input size);
- one click: `SamPredictor.predict(point, multimask_output=True)` on an
  image already set against `prompt_p50_ms` (a point prompt on an image
  already encoded: prompt encoder, mask decoder, the best mask upsampled).

Prints one JSON object with both sides' medians and the ratios (modeldock
over PyTorch; the issue's targets: encoder <= 0.8x, a click <= 30 ms).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

MODEL_OF = {"vit_t": "mobile-sam", "vit_b": "sam-vit-b"}


def median_ms(f, runs, warm=2):
    for _ in range(warm):
        f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def pytorch(variant, runs):
    torch.set_num_threads(2)
    if variant == "vit_t":
        from mobile_sam import SamPredictor, sam_model_registry
    else:
        from segment_anything import SamPredictor, sam_model_registry
    sam = sam_model_registry[variant](checkpoint=None).eval()
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        encoder = median_ms(lambda: sam.image_encoder(x), runs)
        predictor = SamPredictor(sam)
        rng = np.random.default_rng(0)
        predictor.set_image(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
        pt = np.array([[512.0, 512.0]], dtype=np.float32)
        click = median_ms(lambda: predictor.predict(pt, np.array([1]), multimask_output=True), runs * 4)
    return encoder, click


def modeldock(binary, variant, runs):
    model = MODEL_OF.get(variant)
    env = dict(os.environ)
    extra = []
    if model is None:
        # ViT-L/H: a manifest of our own, random weights.
        d = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"modeldock-sam-bench-{os.getpid()}")
        os.makedirs(os.path.join(d, "sam"), exist_ok=True)
        with open(os.path.join(d, "sam", "model.toml"), "w") as f:
            f.write(
                f'id = "sam-{variant}"\nname = "SAM {variant}"\ntask = "segment"\narch = "sam"\n'
                f'variant = "{variant}"\nweights = "none.safetensors"\ninput_size = 1024\nlicence = "bench"\n'
            )
        model = f"sam-{variant}"
        extra = ["--models-dir", d]
    out = subprocess.run(
        [binary, "bench", "--model", model, "--random-weights", "--runs", str(runs), "--json", *extra],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        sys.exit(f"modeldock bench failed: {out.stderr.strip()}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["forward_loop_p50_ms"], r["prompt_p50_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="vit_t")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--modeldock", default="target/release/modeldock")
    a = ap.parse_args()
    enc_md, click_md = modeldock(a.modeldock, a.variant, a.runs)
    enc_pt, click_pt = pytorch(a.variant, a.runs)
    print(
        json.dumps(
            {
                "variant": a.variant,
                "torch": torch.__version__,
                "encoder_ms": {"modeldock": enc_md, "pytorch": enc_pt, "ratio": enc_md / enc_pt},
                "click_ms": {"modeldock": click_md, "pytorch": click_pt, "ratio": click_md / click_pt},
            }
        )
    )


if __name__ == "__main__":
    main()
