#!/usr/bin/env python3
"""modeldock's hands (and selfie segmentation, when the catalogue has a
`selfie` model) against MediaPipe 0.10.14 on the same 640x480 frames, one run.

Install (Python 3.11: the mediapipe 0.10.14 wheels are cp311 only; the 1.x
wheels have no solution models):

    python3.11 -m venv ../mp-venv
    ../mp-venv/bin/pip install mediapipe==0.10.14

Run (build modeldock first: cargo build --release):

    ../mp-venv/bin/python bench/mediapipe_hands.py [--modeldock PATH]
        [--frames 60] [--fps 4] [--image PNG] [--json-out FILE]

The frames: --image (default tests/fixtures/human-models/images/sample2.png,
three hands) cropped to 4:3 and resized to 640x480, the crop window panning
right a few pixels per frame (a steady camera pan), --frames of them, written
as PNGs to a temporary folder.

Rows (per-frame times, p50 over the frames after the first; a ratio below 1
means modeldock is faster):

  hands single   The single-image pipeline on every frame: palm detector on
                 the whole frame, then the landmark network per palm.
                 modeldock: `live --source DIR --model hands --no-track --json`
                 (`inference_p50_ms`: each frame's request through the engine,
                 as the Viewer's). MediaPipe: `mp.solutions.hands.Hands(
                 static_image_mode=True, model_complexity=1, max_num_hands=4)`,
                 `process(frame)` wall time.
  hands tracked  Tracking between frames: each frame's landmarks give the
                 next frame's crops; the palm detector runs only when needed.
                 modeldock: the same `live` run with tracking (the default;
                 its `tracking` block counts palm detections). MediaPipe:
                 `static_image_mode=False` on the frames in order.
  selfie         Only when `modeldock models --json` lists a model `selfie`:
                 modeldock `live --model selfie --no-track` against
                 `mp.solutions.selfie_segmentation.SelfieSegmentation(
                 model_selection=0)` on the same frames.

modeldock runs in its own process (MODELDOCK_HOST points at a port nothing
listens on, so `live` never sends the frames to a server that may be
running) with RAYON_NUM_THREADS=--threads; the frames are paced at --fps, slow
enough that every frame is inferred (none dropped), so the tracked sequence is
the same on both sides. MediaPipe runs with XNNPACK on the CPU, as the wheel
ships it. Run on an idle machine.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_frames(image, n, out_dir):
    from PIL import Image

    img = Image.open(image).convert("RGB")
    w, h = img.size
    # The widest 4:3 window, a little narrower so it can pan.
    ch = min(h, int(w * 3 / 4 * 0.9))
    cw = int(ch * 4 / 3)
    step = max(1, (w - cw) // max(1, n))
    step = min(step, 12)
    top = (h - ch) // 2
    frames = []
    for i in range(n):
        left = min(w - cw, i * step)
        f = img.crop((left, top, left + cw, top + ch)).resize((640, 480), Image.BILINEAR)
        p = out_dir / f"frame{i:04d}.png"
        f.save(p)
        frames.append(f)
    return frames


def p50(xs):
    return statistics.median(xs) if xs else float("nan")


def modeldock_live(binary, model, frames_dir, n, fps, track, env):
    cmd = [
        str(binary), "live", "--source", str(frames_dir), "--model", model,
        "--frames", str(n), "--fps", str(fps), "--json",
    ]
    if not track:
        cmd.append("--no-track")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        sys.exit(f"modeldock live failed ({out.returncode}): {out.stderr.strip()}")
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def modeldock_models(binary, env):
    out = subprocess.run([str(binary), "models", "--json"], capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        return []
    try:
        v = json.loads(out.stdout)
    except json.JSONDecodeError:
        return []
    items = v if isinstance(v, list) else v.get("models", [])
    return [m.get("id") for m in items if isinstance(m, dict)]


def mediapipe_hands(frames, static):
    import mediapipe as mp
    import numpy as np

    times, counts = [], []
    with mp.solutions.hands.Hands(
        static_image_mode=static, model_complexity=1, max_num_hands=4,
        min_detection_confidence=0.5, min_tracking_confidence=0.5,
    ) as hands:
        for f in frames:
            a = np.asarray(f)
            t0 = time.perf_counter()
            r = hands.process(a)
            times.append((time.perf_counter() - t0) * 1000.0)
            counts.append(len(r.multi_hand_landmarks or []))
    return times, counts


def mediapipe_selfie(frames):
    import mediapipe as mp
    import numpy as np

    times = []
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        for f in frames:
            a = np.asarray(f)
            t0 = time.perf_counter()
            seg.process(a)
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modeldock", default=None, help="the modeldock binary [target/release/modeldock]")
    ap.add_argument("--image", default=str(ROOT / "tests/fixtures/human-models/images/sample2.png"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--fps", type=float, default=4.0, help="pace of modeldock's frames (slow enough to drop none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    binary = Path(args.modeldock) if args.modeldock else None
    if binary is None:
        for cand in (ROOT / "target/release/modeldock", Path(os.environ.get("CARGO_TARGET_DIR", "")) / "release/modeldock"):
            if cand.is_file():
                binary = cand
                break
    if binary is None or not binary.is_file():
        sys.exit("no modeldock binary: cargo build --release, or pass --modeldock PATH")

    env = dict(os.environ)
    env["MODELDOCK_HOST"] = f"127.0.0.1:{free_port()}"
    env["RAYON_NUM_THREADS"] = str(args.threads)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}: figures are unreliable on a busy machine", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="mp-hands-"))
    try:
        frames = make_frames(args.image, args.frames, tmp)
        rows = {}
        md_single = modeldock_live(binary, "hands", tmp, args.frames, args.fps, False, env)
        md_track = modeldock_live(binary, "hands", tmp, args.frames, args.fps, True, env)
        mp_single, mp_single_n = mediapipe_hands(frames, True)
        mp_track, mp_track_n = mediapipe_hands(frames, False)
        rows["hands_single"] = {
            "modeldock_ms": md_single["inference_p50_ms"],
            "mediapipe_ms": p50(mp_single[1:]),
            "modeldock_frames": md_single.get("frames_inferred"),
            "mediapipe_hands_per_frame": p50(mp_single_n),
        }
        rows["hands_tracked"] = {
            "modeldock_ms": md_track["inference_p50_ms"],
            "mediapipe_ms": p50(mp_track[1:]),
            "modeldock_frames": md_track.get("frames_inferred"),
            "modeldock_tracking": md_track.get("tracking"),
            "mediapipe_hands_per_frame": p50(mp_track_n),
        }
        if "selfie" in modeldock_models(binary, env):
            md_selfie = modeldock_live(binary, "selfie", tmp, args.frames, max(args.fps, 10.0), False, env)
            mp_s = mediapipe_selfie(frames)
            rows["selfie"] = {"modeldock_ms": md_selfie["inference_p50_ms"], "mediapipe_ms": p50(mp_s[1:])}
        else:
            print("selfie: no modeldock model 'selfie' in `modeldock models`; row skipped", file=sys.stderr)
        for r in rows.values():
            r["ratio"] = r["modeldock_ms"] / r["mediapipe_ms"] if r["mediapipe_ms"] else None
        print(f"{'row':<15} {'modeldock ms':>13} {'MediaPipe ms':>13} {'md / MP':>8}")
        for name, r in rows.items():
            print(f"{name:<15} {r['modeldock_ms']:>13.1f} {r['mediapipe_ms']:>13.1f} {r['ratio']:>8.2f}")
        t = rows["hands_tracked"].get("modeldock_tracking")
        if t:
            print(f"modeldock tracking: palm detector on {t['palm_detections']} of {t['frames']} frames")
        print(
            f"tracking speed-up: modeldock {rows['hands_single']['modeldock_ms'] / rows['hands_tracked']['modeldock_ms']:.2f}x, "
            f"MediaPipe {rows['hands_single']['mediapipe_ms'] / rows['hands_tracked']['mediapipe_ms']:.2f}x"
        )
        result = {"rows": rows, "frames": args.frames, "image": args.image, "threads": args.threads, "load_avg": load}
        line = json.dumps(result)
        print(line)
        if args.json_out:
            Path(args.json_out).write_text(line + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
