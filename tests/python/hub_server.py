#!/usr/bin/env python3
"""A stand-in for the Hugging Face Hub's file endpoint, for tests (stdlib only).

Serves ROOT/<org>/<name>/<file> at /<org>/<name>/resolve/<revision>/<file>,
the way the Hub answers hf-hub and huggingface_hub:

* GET and HEAD; `Range: bytes=A-` / `bytes=A-B` gives 206 with Content-Range
  `bytes A-B/SIZE` (hf-hub reads the size from it after `Range: bytes=0-0`).
* `X-Repo-Commit: <40 hex>` (one fixed commit per repo; the revision must be
  `main` or that commit), `ETag`, and for LFS-like files (.safetensors, .bin,
  .pt, .onnx) `X-Linked-Etag` / `X-Linked-Size` with the sha256. Small files'
  ETag is their git blob sha1.
* LFS files are answered with a 302 to /__cdn/<org>/<name>/<file> (carrying
  `X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size`), which serves the bytes
  with ranges, as the Hub redirects to its CDN.
* A missing repo, file or revision is a 404 with `X-Error-Code`.

Test controls:
  --cut FILE:N[:TIMES]  the first TIMES (default 1) body transfers of FILE
                        that would pass byte offset N stop there: the
                        connection is closed mid-body.
  --bad-sha FILE        advertise a wrong sha256 (and etag) for FILE.
  GET /__requests       JSON list of the requests served so far (method,
                        path, range, auth), this one excluded.

Binds 127.0.0.1 only; prints `PORT <n>` on stdout once listening; exits by
itself after --max-seconds (default 300).
"""

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".gguf")


class State:
    def __init__(self, root, cuts, bad):
        self.root = os.path.realpath(root)
        self.cuts = cuts  # file -> [offset, times left]
        self.bad = set(bad)
        self.lock = threading.Lock()
        self.requests = []

    def log(self, entry):
        with self.lock:
            self.requests.append(entry)

    def take_cut(self, file, start, end):
        """The offset to stop at, once per allowed cut, when [start, end] passes it."""
        with self.lock:
            c = self.cuts.get(file)
            if c and c[1] > 0 and start < c[0] <= end:
                c[1] -= 1
                return c[0]
        return None


def commit_of(repo):
    return hashlib.sha1(("commit:" + repo).encode()).hexdigest()


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-stand-in/1"
    state = None  # set in main

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_HEAD(self):
        self.serve(body=False)

    def do_GET(self):
        if self.path == "/__requests":
            with self.state.lock:
                data = json.dumps(self.state.requests).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.serve(body=True)

    def fail(self, code, error_code, message, commit=None):
        data = message.encode()
        self.send_response(code)
        self.send_header("X-Error-Code", error_code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def serve(self, body):
        st = self.state
        rng = self.headers.get("Range")
        st.log(
            {
                "method": self.command,
                "path": self.path,
                "range": rng,
                "auth": self.headers.get("Authorization"),
            }
        )
        parts = unquote(self.path.split("?", 1)[0]).lstrip("/").split("/")
        if ".." in parts:
            return self.fail(404, "RepoNotFound", "Repository not found")
        cdn = parts[0] == "__cdn"
        if cdn:
            # /__cdn/org/name/file...: where LFS files are redirected to.
            parts = parts[1:3] + ["resolve", "main"] + parts[3:]
        # org/name/resolve/rev/file...
        if len(parts) < 5 or parts[2] != "resolve":
            return self.fail(404, "RepoNotFound", "not a resolve URL")
        repo = parts[0] + "/" + parts[1]
        rev = parts[3]
        file = "/".join(parts[4:])
        repo_dir = os.path.join(st.root, parts[0], parts[1])
        if not os.path.isdir(repo_dir):
            return self.fail(404, "RepoNotFound", "Repository not found")
        commit = commit_of(repo)
        if rev not in ("main", commit):
            return self.fail(404, "RevisionNotFound", "Invalid rev id: " + rev)
        path = os.path.realpath(os.path.join(repo_dir, file))
        if not path.startswith(st.root + os.sep) or not os.path.isfile(path):
            return self.fail(404, "EntryNotFound", "Entry not found", commit)
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        lfs = file.endswith(LFS_SUFFIXES)
        tampered = data + b"tampered" if file in st.bad else data
        etag = hashlib.sha256(tampered).hexdigest() if lfs else git_sha1(tampered)
        if lfs and not cdn:
            # The Hub answers LFS files with a redirect to its CDN, carrying
            # the commit and the LFS sha256 itself.
            self.send_response(302)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("X-Linked-Etag", '"%s"' % etag)
            self.send_header("X-Linked-Size", str(size))
            self.send_header("ETag", '"%s"' % etag)
            host = self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_address[1]
            self.send_header("Location", "http://%s/__cdn/%s/%s" % (host, repo, file))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = 0, size - 1
        status = 200
        if rng:
            try:
                unit, spec = rng.split("=", 1)
                a, b = spec.split("-", 1)
                start = int(a)
                end = min(int(b), size - 1) if b else size - 1
                if unit.strip() != "bytes" or start >= size or start > end:
                    raise ValueError
            except ValueError:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        if not cdn:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", '"%s"' % etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if not body:
            return
        cut = st.take_cut(file, start, end) if end - start > 0 else None
        if cut is None:
            self.wfile.write(data[start : end + 1])
            return
        self.wfile.write(data[start:cut])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client hanging up (as after a cut) is not worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cut", action="append", default=[], metavar="FILE:N[:TIMES]")
    ap.add_argument("--bad-sha", action="append", default=[], metavar="FILE")
    ap.add_argument("--max-seconds", type=float, default=300.0)
    a = ap.parse_args()
    cuts = {}
    for c in a.cut:
        f, n, *t = c.rsplit(":", 2) if c.count(":") >= 2 else c.rsplit(":", 1)
        cuts[f] = [int(n), int(t[0]) if t else 1]
    Handler.state = State(a.root, cuts, a.bad_sha)
    srv = Server(("127.0.0.1", a.port), Handler)
    print("PORT %d" % srv.server_address[1], flush=True)
    deadline = time.monotonic() + a.max_seconds
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        # The test that started us is gone: stop.
        if os.getppid() == 1:
            break
    srv.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
