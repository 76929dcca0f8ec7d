#!/usr/bin/env python3
"""Output MASKS of `modeldock serve` read with tritonclient[http].

Plain script (no pytest): every check runs, each failure is printed with what
was expected and what came back, and the exit status is 1 when any failed.

    .ci/venv-client/bin/python tests/python/test_tritonclient_masks.py \
        --url 127.0.0.1:PORT --model MODEL --images A.png B.png

--model: a model whose task is `segment` (its metadata lists MASKS).
--images: PNG files on which the model finds something (each image's masks
must not be all zeros).

MASKS is UINT8 [N, M, H, W]: N images, M the most masks one image has, H×W
the largest image; each image's masks sit at the top left of their planes,
in the order of `masks` in its DETECTIONS element, and the rest is zeros.
"""

import argparse
import json
import struct
import sys

try:
    import numpy as np
    import tritonclient.http as httpclient
except ImportError as e:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import tritonclient/numpy ({e}): run `bash .ci/deps` "
          "(it creates .ci/venv-client)", file=sys.stderr)
    sys.exit(2)


from checks import CheckFailed, check, run_checks  # noqa: E402


def png_size(blob):
    """(width, height) from a PNG's IHDR chunk."""
    check(blob[:8] == b"\x89PNG\r\n\x1a\n", "--images must be PNG files")
    return struct.unpack(">II", blob[16:24])


def image_input(blobs):
    arr = np.empty(len(blobs), dtype=np.object_)
    for i, b in enumerate(blobs):
        arr[i] = b
    inp = httpclient.InferInput("IMAGE", [len(blobs)], "BYTES")
    inp.set_data_from_numpy(arr, binary_data=True)
    return inp


def infer(c, binary):
    outs = [httpclient.InferRequestedOutput("DETECTIONS", binary_data=False),
            httpclient.InferRequestedOutput("MASKS", binary_data=binary)]
    return c.client.infer(c.model, [image_input(c.images)], outputs=outs)


def t_metadata_lists_masks(c):
    meta = c.client.get_model_metadata(c.model)
    outs = {o["name"]: o for o in meta.get("outputs", [])}
    check("MASKS" in outs, f"metadata of {c.model} lists no MASKS: {list(outs)}")
    check(outs["MASKS"]["datatype"] == "UINT8", f"MASKS datatype {outs['MASKS']['datatype']}")
    check(len(outs["MASKS"]["shape"]) == 4, f"MASKS shape {outs['MASKS']['shape']} is not [N, M, H, W]")


def t_binary_masks(c):
    r = infer(c, True)
    o = r.get_output("MASKS")
    check(o is not None, "MASKS missing from the response")
    check("binary_data_size" in (o.get("parameters") or {}), f"MASKS asked binary, got {o}")
    m = r.as_numpy("MASKS")
    check(m.dtype == np.uint8, f"MASKS dtype {m.dtype}, expected uint8")
    dets = [json.loads(d) for d in r.as_numpy("DETECTIONS")]
    counts = [len(d.get("masks", [])) for d in dets]
    sizes = [png_size(b) for b in c.images]
    want = (len(c.images), max(counts), max(h for _, h in sizes), max(w for w, _ in sizes))
    check(m.shape == want, f"MASKS shape {m.shape}, expected {want} (N, M, H, W)")
    for i, ((w, h), d) in enumerate(zip(sizes, dets)):
        check(d.get("image_size") == [w, h], f"image {i}: image_size {d.get('image_size')}, file is {w}x{h}")
        for j in range(counts[i]):
            plane = m[i, j]
            check(plane[:h, :w].max() > 0, f"image {i} mask {j} ({dets[i]['masks'][j]['label']}) is all zeros")
            check(not plane[h:, :].any() and not plane[:, w:].any(),
                  f"image {i} mask {j}: non-zero values outside its {w}x{h} image")
        for j in range(counts[i], m.shape[1]):
            check(not m[i, j].any(), f"image {i} has {counts[i]} masks, plane {j} is not zeros")
    c.binary = m


def t_json_masks_equal_binary(c):
    r = infer(c, False)
    o = r.get_output("MASKS")
    check(o is not None and "data" in o, f"MASKS asked as JSON, got {str(o)[:200]}")
    m = r.as_numpy("MASKS")
    check(m.shape == c.binary.shape, f"JSON MASKS shape {m.shape}, binary {c.binary.shape}")
    check(np.array_equal(m.astype(np.uint8), c.binary), "JSON and binary MASKS differ")


CHECKS = [t_metadata_lists_masks, t_binary_masks, t_json_masks_equal_binary]
NEEDS = {t_json_masks_equal_binary: "binary"}


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="HOST:PORT of `modeldock serve` (no scheme)")
    ap.add_argument("--model", required=True, help="a model whose task is segment")
    ap.add_argument("--images", nargs="+", required=True, help="PNG files on which the model finds something")
    args = ap.parse_args()
    c = Ctx()
    c.model = args.model
    c.images = [open(p, "rb").read() for p in args.images]
    c.client = httpclient.InferenceServerClient(args.url, connection_timeout=30.0, network_timeout=300.0)
    return run_checks(c, CHECKS, NEEDS, "tritonclient masks")


if __name__ == "__main__":
    sys.exit(main())
