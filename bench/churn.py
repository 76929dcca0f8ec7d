#!/usr/bin/env python3
"""Does memory come back after an unload, under churn too?

Starts `modeldock serve --budget BUDGET` on a free loopback port, reads its
idle RSS, then runs --clients threads for --seconds, each doing random
requests against the HTTP API on --models:

  infer    POST /v2/models/{m}/infer, 1 to 3 PNG images of assorted sizes
           (JSON body, base64), a `conf` drawn from a small set so some
           requests hit the result cache and most do not
  load     POST /api/load {"model"}        (422 when it cannot fit: expected)
  unload   POST /api/unload {"model"}
  pin      POST /api/pin {"model", "pinned": true or false}

A sampler thread reads the server's RSS (/proc/PID/status VmRSS) every
100 ms for the peak. Then it unpins every model, sends
`POST /api/unload {"all": true}`, waits until `/api/ps` lists nothing (at
most 30 s), waits --settle seconds and reads the RSS again.

It prints one JSON line: idle, peak and after (MiB), the limit
(idle + --slack MiB), the answers by HTTP status and `ok`; it exits 1 when
an answer was not 200, 422 or 503, or when after > idle + slack.

Run (python3 standard library only; build first: cargo build --release):

    python3 bench/churn.py [--modeldock target/release/modeldock] [--seconds 60] \\
        [--clients 8] [--budget 40MiB] [--slack 32] [--json-out FILE]
"""

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from bench_common import encode_png, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = "face-detector,face-landmarks,mtcnn,selfie,pose,objects"
SIZES = [(160, 120), (640, 480), (1280, 720), (1920, 1080)]
EXPECTED = {200, 422, 503}


def png(width, height, rng):
    """A PNG of smooth noise (16x16 blocks): it compresses like a photo, not like random bytes."""
    rows = []
    for _ in range(height // 16 + 1):
        blocks = bytes(rng.getrandbits(8) for _ in range((width // 16 + 1) * 3))
        row = b"".join(blocks[i * 3:i * 3 + 3] * 16 for i in range(width // 16 + 1))[:width * 3]
        rows.extend([b"\x00" + row] * 16)
    raw = b"".join(rows[:height])

    return encode_png(raw, width, height)


def status_mib(pid, field):
    """A /proc/PID/status figure (VmRSS, RssAnon, RssFile) in MiB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def rss_mib(pid):
    return status_mib(pid, "VmRSS")


def call(url, path, body=None, timeout=120):
    """(status, parsed JSON or None) of one request; a connection error is status 0."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read(), e.code
    except OSError:
        return 0, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


def start_server(exe, port, budget, extra):
    env = dict(os.environ)
    for k in ("MODELDOCK_HOST", "MODELDOCK_PRELOAD"):
        env.pop(k, None)
    p = subprocess.Popen([exe, "serve", "--port", str(port), "--budget", budget, *extra], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if call(url, "/v2/health/ready", timeout=1)[0] == 200:
            return p, url
        if p.poll() is not None:
            sys.exit(f"churn: modeldock serve exited with {p.returncode}")
        time.sleep(0.1)
    p.kill()
    sys.exit("churn: the server did not become ready within 60 s")


class Client(threading.Thread):
    """Random infer / load / unload / pin requests until `stop` is set."""

    def __init__(self, url, models, images, stop, seed):
        super().__init__(daemon=True)
        self.url, self.models, self.images, self.stop = url, models, images, stop
        self.rng = random.Random(seed)
        self.statuses = {}

    def one(self):
        m = self.rng.choice(self.models)
        r = self.rng.random()
        if r < 0.6:
            n = self.rng.randint(1, 3)
            data = [self.rng.choice(self.images) for _ in range(n)]
            body = {"inputs": [{"name": "IMAGE", "shape": [n], "datatype": "BYTES", "data": data}],
                    "parameters": {"conf": self.rng.choice([0.3, 0.4, 0.5, 0.6]) + self.rng.randrange(50) * 1e-4}}
            return call(self.url, f"/v2/models/{m}/infer", body)[0]
        if r < 0.75:
            return call(self.url, "/api/load", {"model": m})[0]
        if r < 0.9:
            return call(self.url, "/api/unload", {"model": m})[0]
        return call(self.url, "/api/pin", {"model": m, "pinned": self.rng.random() < 0.5})[0]

    def run(self):
        while not self.stop.is_set():
            s = self.one()
            self.statuses[s] = self.statuses.get(s, 0) + 1


class Sampler(threading.Thread):
    def __init__(self, pid, stop):
        super().__init__(daemon=True)
        self.pid, self.stop, self.peak = pid, stop, 0.0

    def run(self):
        while not self.stop.wait(0.1):
            v = rss_mib(self.pid)
            if v is not None:
                self.peak = max(self.peak, v)


def unload_everything(url, models):
    """Unpins every model, unloads all, and waits (at most 30 s) until /api/ps lists nothing."""
    for m in models:
        call(url, "/api/pin", {"model": m, "pinned": False})
    end = time.monotonic() + 30
    while time.monotonic() < end:
        call(url, "/api/unload", {"all": True})
        status, ps = call(url, "/api/ps")
        if status == 200 and ps is not None and not ps.get("models"):
            return True
        time.sleep(0.2)
    return False


def churn(url, pid, args):
    rng = random.Random(args.seed)
    models = args.models.split(",")
    images = [base64.b64encode(png(w, h, rng)).decode() for (w, h) in SIZES]
    stop, sampler_stop = threading.Event(), threading.Event()
    sampler = Sampler(pid, sampler_stop)
    sampler.start()
    clients = [Client(url, models, images, stop, args.seed * 100 + i) for i in range(args.clients)]
    for c in clients:
        c.start()
    time.sleep(args.seconds)
    stop.set()
    for c in clients:
        c.join(timeout=300)
    gone = unload_everything(url, models)
    time.sleep(args.settle)
    after = rss_mib(pid)
    split = {k: status_mib(pid, k) for k in ("RssAnon", "RssFile")}
    sampler_stop.set()
    sampler.join(timeout=5)
    statuses = {}
    for c in clients:
        for s, n in c.statuses.items():
            statuses[s] = statuses.get(s, 0) + n
    return {"peak": max(sampler.peak, after or 0.0), "after": after, "split": split, "statuses": statuses,
            "all_unloaded": gone}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modeldock", default=os.path.join(ROOT, "target", "release", "modeldock"))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--budget", default="40MiB")
    ap.add_argument("--models", default=MODELS, help="comma-separated model ids")
    ap.add_argument("--slack", type=float, default=32.0, help="MiB allowed above idle after the unload")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait after the unload")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--serve-arg", action="append", default=[], help="an extra `serve` argument (repeatable)")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if not 0 < args.seconds <= 3600 or not 1 <= args.clients <= 64:
        sys.exit("churn: --seconds must be in (0, 3600] and --clients in [1, 64]")
    proc, url = start_server(args.modeldock, free_port(), args.budget, args.serve_arg)
    try:
        time.sleep(1.0)
        idle = rss_mib(proc.pid)
        idle_split = {k: status_mib(proc.pid, k) for k in ("RssAnon", "RssFile")}
        r = churn(url, proc.pid, args)
    finally:
        proc.kill()
        proc.wait()
    bad = {s: n for s, n in r["statuses"].items() if s not in EXPECTED}
    limit = idle + args.slack
    ok = not bad and r["all_unloaded"] and r["after"] is not None and r["after"] <= limit
    out = {"seconds": args.seconds, "clients": args.clients, "budget": args.budget,
           "idle_mib": round(idle, 1), "peak_mib": round(r["peak"], 1),
           "after_mib": round(r["after"], 1) if r["after"] is not None else None,
           "limit_mib": round(limit, 1),
           "idle_anon_file_mib": [round(v or 0.0, 1) for v in idle_split.values()],
           "after_anon_file_mib": [round(v or 0.0, 1) for v in r["split"].values()], "answers": {str(k): v for k, v in sorted(r["statuses"].items())},
           "all_unloaded": r["all_unloaded"], "ok": ok}
    line = json.dumps(out)
    print(line)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
