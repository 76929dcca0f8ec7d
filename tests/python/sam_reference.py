"""Segment Anything references from Meta's PyTorch code, for tests/sam.rs.

Run by hand in a venv with PyPI `torch`, `segment-anything` 1.0,
`mobilesam-mirror` 1.0.0, `timm`, `safetensors`, `numpy` and `pillow`:

    cargo run --release --example sam_random_weights -- vit_t 7 DIR
    python tests/python/sam_reference.py vit_t DIR/sam-vit_t-seed7.safetensors \
        tests/fixtures/sam/shapes-1024.png tests/fixtures/sam/vit_t-seed7.json

The weights are modeldock's random initialisation from a seed
(`models::sam_random`): no trained weights are involved. They are loaded
into `sam_model_registry[variant](checkpoint=None)` (Meta's
`segment_anything` for ViT-B/L/H, `mobile_sam` for `vit_t`) with every
parameter the model runs (TinyViT's unused classifier head excepted); buffers the checkpoint lacks keep their values.
Then `SamPredictor` runs the image and each prompt of CASES, with
`multimask_output` for a lone point (keeping the best predicted IoU), as
modeldock does. Written per case: the predicted IoUs, the best index, the
best mask's 256² low-resolution logits sampled every 4th row and column, and
its full-resolution mask (`logits > 0`) as a 1-bit PNG (base64). Also the
image embedding's per-channel mean and deviation.

With no image at the given path, a 1024×1024 image of flat shapes on a
gradient is drawn there first (it compresses to a few kB).
"""

import base64
import io
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

CASES = [
    {"name": "one_point", "points": [[300, 320, 1]], "box": None},
    {"name": "two_points", "points": [[300, 320, 1], [700, 640, 0]], "box": None},
    {"name": "box", "points": [], "box": [180, 200, 460, 470]},
    {"name": "box_and_point", "points": [[620, 700, 1]], "box": [520, 560, 900, 880]},
]


def draw_image(path):
    w = h = 1024
    x = np.linspace(0, 1, w, dtype=np.float32)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    bg = np.stack([60 + 120 * x + 0 * y, 90 + 100 * y + 0 * x, 160 - 80 * x * y], axis=-1)
    img = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([200, 220, 440, 450], fill=(230, 40, 40))
    d.rectangle([560, 600, 880, 860], fill=(30, 200, 70))
    d.polygon([(700, 120), (940, 420), (520, 400)], fill=(250, 220, 30))
    d.ellipse([80, 700, 300, 960], fill=(20, 20, 30))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, optimize=True)


def build(variant):
    if variant == "vit_t":
        from mobile_sam import sam_model_registry
    else:
        from segment_anything import sam_model_registry
    return sam_model_registry[variant](checkpoint=None)


def png_b64(mask):
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def main():
    variant, weights, image_path, out = sys.argv[1:5]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    sam = build(variant)
    state = load_file(weights)
    params = dict(sam.named_parameters())
    # TinyViT keeps an ImageNet classifier head SAM never runs.
    unused = ("image_encoder.norm_head.", "image_encoder.head.")
    missing = [k for k in params if k not in state and not k.startswith(unused)]
    if missing:
        sys.exit(f"{weights}: lacks parameters {missing[:5]}")
    extra = [k for k in state if k not in sam.state_dict()]
    if extra:
        sys.exit(f"{weights}: names the model lacks {extra[:5]}")
    sam.load_state_dict(state, strict=False)
    # After loading: TinyViT's attention caches its biases (`ab`) in eval().
    sam.eval()
    if not os.path.exists(image_path):
        draw_image(image_path)
    image = np.array(Image.open(image_path).convert("RGB"))
    if variant == "vit_t":
        from mobile_sam import SamPredictor
    else:
        from segment_anything import SamPredictor
    predictor = SamPredictor(sam)
    with torch.no_grad():
        predictor.set_image(image)
        emb = predictor.get_image_embedding()[0]
        cases = []
        for c in CASES:
            pts = np.array([p[:2] for p in c["points"]], dtype=np.float32) if c["points"] else None
            labels = np.array([p[2] for p in c["points"]], dtype=np.int64) if c["points"] else None
            box = np.array(c["box"], dtype=np.float32) if c["box"] else None
            multi = len(c["points"]) == 1 and box is None
            masks, scores, low = predictor.predict(
                point_coords=pts, point_labels=labels, box=box, multimask_output=multi, return_logits=True
            )
            best = int(np.argmax(scores))
            cases.append(
                {
                    **c,
                    "multimask": multi,
                    "iou": [float(s) for s in scores],
                    "best": best,
                    "logits_every_4th": [float(f"{v:.6g}") for v in low[best][::4, ::4].reshape(-1)],
                    "mask_png": png_b64(masks[best] > 0),
                    "mask_pixels": int((masks[best] > 0).sum()),
                }
            )
    doc = {
        "made_by": "tests/python/sam_reference.py",
        "variant": variant,
        "seed_file": os.path.basename(weights),
        "image": os.path.basename(image_path),
        "torch": torch.__version__,
        "embedding_mean": [float(f"{v:.7g}") for v in emb.mean(dim=(1, 2))],
        "embedding_std": [float(f"{v:.7g}") for v in emb.std(dim=(1, 2))],
        "cases": cases,
    }
    with open(out, "w") as f:
        json.dump(doc, f)
    print(f"wrote {out}: " + ", ".join(f"{c['name']} iou {max(c['iou']):.4f} px {c['mask_pixels']}" for c in cases))


if __name__ == "__main__":
    main()
