#!/usr/bin/env python3
"""One engine, several clients: does a batch job freeze an interactive one?

Starts `modeldock serve` on a free loopback port and drives it with NVIDIA's
own client (PyPI `tritonclient[http]`, binary tensors), in three phases of
--seconds each, all in one run:

  alone        one interactive client: single-image `face-detector` requests
               (a 512x512 PNG), back to back
  bulk alone   two bulk clients: `mtcnn` requests of four 1920x1280 images each
  together     the interactive client and the two bulk clients at once
  paced        the interactive client at 20 requests/s (a person clicking,
               a camera), alone and beside the two bulk clients
  live         `modeldock live --server URL --model face-landmarks` on the
               synthetic 30 fps source (640x480, --frames frames), alone and
               while the two bulk clients run

Every request carries a different `conf`, so the result cache never answers.
It prints the interactive p50/p99 alone and together, the bulk images/s alone
and together, and the two ratios the scheduler is held to:

  interactive p99 together / alone   (target <= 3)
  bulk images/s together / alone     (target >= 0.7)
  live inference fps beside bulk     (target >= 25)

Run (build first: cargo build --release; .ci/deps makes .ci/venv-client):

    .ci/venv-client/bin/python bench/contention.py [--modeldock target/release/modeldock] \\
        [--seconds 15] [--frames 300] [--lanes N] [--json-out FILE]

Run it on an otherwise idle machine; the load average is printed.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import tritonclient.http as httpclient

from bench_common import encode_png, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def png(width, height, seed):
    """A PNG of smooth noise (no PIL here): large enough to cost what a photo costs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(small, 16, axis=0), 16, axis=1)[:height, :width]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(height))

    return encode_png(raw, width, height)


def start_server(exe, port, lanes):
    env = dict(os.environ)
    env.pop("MODELDOCK_HOST", None)
    extra = ["--lanes", str(lanes)] if lanes else []
    p = subprocess.Popen([exe, "serve", "--port", str(port), *extra], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return p, url
        except OSError:
            time.sleep(0.1)
    p.kill()
    sys.exit("contention: the server did not become ready")


def load(url, model):
    req = urllib.request.Request(f"{url}/api/load", data=json.dumps({"model": model}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()


CLIENTS = itertools.count()


class Client(threading.Thread):
    """Sends `images` to `model` back to back until `stop` is set.

    Every request of every client in the run carries its own `conf`: each
    client walks a range of its own (0.01 wide, steps of 1e-6), so no request
    repeats an earlier phase's and the result cache never answers."""

    def __init__(self, host, model, images, stop, seed, rate=None):
        super().__init__(daemon=True)
        self.rate = rate
        self.client = httpclient.InferenceServerClient(host, connection_timeout=600, network_timeout=600)
        self.model, self.images, self.stop = model, images, stop
        self.latencies, self.done_images, self.errors = [], 0, 0
        self.base = 0.2 + 0.01 * next(CLIENTS)
        self.sent = 0
        if self.base > 0.9:
            sys.exit("contention: more clients than distinct conf ranges")

    def run(self):
        data = np.array(self.images, dtype=np.object_)
        next_at = time.perf_counter()
        while not self.stop.is_set():
            if self.rate:
                # Paced: one request each 1/rate s, as a person or a camera sends them.
                next_at += 1.0 / self.rate
                time.sleep(max(0.0, next_at - time.perf_counter()))
            inp = httpclient.InferInput("IMAGE", [len(self.images)], "BYTES")
            inp.set_data_from_numpy(data, binary_data=True)
            self.conf = self.base + 1e-6 * (self.sent % 9000)
            self.sent += 1
            t0 = time.perf_counter()
            try:
                self.client.infer(self.model, [inp], parameters={"conf": self.conf},
                                  outputs=[httpclient.InferRequestedOutput("COUNTS", binary_data=True)])
            except Exception:  # noqa: BLE001 - counted, the run goes on
                self.errors += 1
                continue
            self.latencies.append((time.perf_counter() - t0) * 1e3)
            self.done_images += len(self.images)


def phase(host, seconds, interactive, bulk, face_png, photos, rate=None):
    stop = threading.Event()
    clients = []
    if interactive:
        clients.append(Client(host, "face-detector", [face_png], stop, 1, rate))
    for i in range(bulk):
        clients.append(Client(host, "mtcnn", photos, stop, 10 + i))
    t0 = time.perf_counter()
    for c in clients:
        c.start()
    time.sleep(seconds)
    stop.set()
    for c in clients:
        c.join(timeout=600)
    elapsed = time.perf_counter() - t0
    inter = clients[0] if interactive else None
    bulk_images = sum(c.done_images for c in clients[1 if interactive else 0:])
    out = {"seconds": round(elapsed, 2), "errors": sum(c.errors for c in clients)}
    if inter is not None and inter.latencies:
        lat = np.array(inter.latencies)
        out.update(interactive_requests=len(lat), interactive_p50_ms=round(float(np.percentile(lat, 50)), 2),
                   interactive_p99_ms=round(float(np.percentile(lat, 99)), 2))
    if bulk:
        out["bulk_images_per_s"] = round(bulk_images / elapsed, 2)
    return out


def live(exe, url, frames, bulk, photos, conf):
    """`modeldock live` against the server, with `bulk` bulk clients running beside it.
    The synthetic source renders the same frames in every run: `conf` differs
    per phase so the result cache never answers a frame."""
    stop = threading.Event()
    clients = [Client(url.removeprefix("http://"), "mtcnn", photos, stop, 20 + i) for i in range(bulk)]
    for c in clients:
        c.start()
    env = dict(os.environ)
    env.pop("MODELDOCK_HOST", None)
    try:
        out = subprocess.run([exe, "live", "--server", url, "--source", "synthetic", "--model", "face-landmarks",
                              "--frames", str(frames), "--conf", str(conf), "--json"], env=env, capture_output=True, text=True,
                             timeout=600)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=600)
    if out.returncode != 0:
        sys.exit(f"contention: modeldock live failed: {out.stderr.strip()}")
    s = json.loads(out.stdout.strip().splitlines()[-1])
    return {"inference_fps": round(s["inference_fps"], 1), "camera_fps": round(s["camera_fps"], 1),
            "frames_inferred": s["frames_inferred"], "e2e_p95_ms": round(s["e2e_latency_p95_ms"], 1),
            "bulk_images": sum(c.done_images for c in clients)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modeldock", default=os.path.join(ROOT, "target", "release", "modeldock"))
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--frames", type=int, default=300, help="frames of each live phase")
    ap.add_argument("--lanes", type=int, help="the server's --lanes (default: its own)")
    ap.add_argument("--no-live", action="store_true",
                    help="skip the live phases (a modeldock whose live cannot use a server)")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    with open(os.path.join(ROOT, "tests", "fixtures", "images", "astronaut.png"), "rb") as f:
        face_png = f.read()
    photos = [png(1920, 1280, s) for s in range(4)]
    port = free_port()
    server, url = start_server(a.modeldock, port, a.lanes)
    host = f"127.0.0.1:{port}"
    try:
        for m in ("face-detector", "mtcnn"):
            load(url, m)
        phase(host, 2.0, True, 2, face_png, photos)  # warm-up, not reported
        alone = phase(host, a.seconds, True, 0, face_png, photos)
        bulk_alone = phase(host, a.seconds, False, 2, face_png, photos)
        together = phase(host, a.seconds, True, 2, face_png, photos)
        paced_alone = phase(host, a.seconds, True, 0, face_png, photos, rate=20)
        paced = phase(host, a.seconds, True, 2, face_png, photos, rate=20)
        live_alone = live_bulk = None
        if not a.no_live:
            live_alone = live(a.modeldock, url, a.frames, 0, photos, 0.51)
            live_bulk = live(a.modeldock, url, a.frames, 2, photos, 0.52)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    p99_ratio = together["interactive_p99_ms"] / alone["interactive_p99_ms"]
    bulk_ratio = together["bulk_images_per_s"] / bulk_alone["bulk_images_per_s"]
    result = {
        "lanes": a.lanes, "alone": alone, "bulk_alone": bulk_alone, "together": together,
        "paced_alone": paced_alone, "paced_together": paced,
        "paced_interactive_p99_ratio": round(paced["interactive_p99_ms"] / paced_alone["interactive_p99_ms"], 2),
        "paced_bulk_throughput_ratio": round(paced["bulk_images_per_s"] / bulk_alone["bulk_images_per_s"], 2),
        "live_alone": live_alone, "live_with_bulk": live_bulk,
        "interactive_p99_ratio": round(p99_ratio, 2), "bulk_throughput_ratio": round(bulk_ratio, 2),
        "targets": {"interactive_p99_ratio_max": 3.0, "bulk_throughput_ratio_min": 0.7, "live_fps_min": 25},
    }
    print(f"interactive alone:    p50 {alone['interactive_p50_ms']} ms, p99 {alone['interactive_p99_ms']} ms "
          f"({alone['interactive_requests']} requests)")
    print(f"interactive together: p50 {together['interactive_p50_ms']} ms, p99 {together['interactive_p99_ms']} ms "
          f"({together['interactive_requests']} requests)")
    print(f"bulk alone:    {bulk_alone['bulk_images_per_s']} images/s")
    print(f"bulk together: {together['bulk_images_per_s']} images/s")
    print(f"interactive p99 together/alone: {p99_ratio:.2f} (target <= 3)")
    print(f"bulk images/s together/alone:   {bulk_ratio:.2f} (target >= 0.7)")
    print(f"paced interactive (20/s): alone p99 {paced_alone['interactive_p99_ms']} ms, with bulk p99 "
          f"{paced['interactive_p99_ms']} ms ({result['paced_interactive_p99_ratio']}x); bulk beside it "
          f"{paced['bulk_images_per_s']} images/s ({result['paced_bulk_throughput_ratio']}x alone)")
    if live_alone is None:
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(result, f, indent=2)
        return
    print(f"live face-landmarks alone:     {live_alone['inference_fps']} fps (e2e p95 {live_alone['e2e_p95_ms']} ms)")
    print(f"live face-landmarks with bulk: {live_bulk['inference_fps']} fps (e2e p95 {live_bulk['e2e_p95_ms']} ms, "
          f"{live_bulk['bulk_images']} bulk images beside it) (target >= 25)")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
