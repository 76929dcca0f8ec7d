#!/usr/bin/env python3
"""A real NVIDIA Triton Inference Server (CPU only, loopback only) for the
remote-backend tests: writes a model repository, then execs `tritonserver`
from PyPI nvidia-pytriton (0.7.x ships tritonserver 2.51 with the Python
backend; no onnxruntime backend, so the ONNX model runs in onnxruntime inside
the Python backend's stub process).

    .ci/venv-triton/bin/python tests/python/triton_serve.py --repo DIR \
        --http-port P --grpc-port Q --metrics-port R [--load tiny_face raw_identity] \
        [--threads 1] [--dynamic-batch] [--verbose] [-- EXTRA_TRITON_ARGS...]

Run it with the interpreter of .ci/venv-triton (the Python backend's stub
embeds this interpreter's version of libpython and imports numpy and
onnxruntime from this venv).

Models written into DIR (rewritten on every start):
  tiny_face     input "input" FP32 [1,3,416,416] -> output "output" FP32 [1,25,13,13]
                (face-api's tiny face detector network, tests/python/face_onnx.py;
                --dynamic-batch makes the first dim -1)
  raw_identity  "INPUT0" FP32 [-1] -> "OUTPUT0" FP32 [-1], the same values

--model-control-mode=explicit: only the --load models start loaded; the rest
are listed by POST /v2/repository/index and loaded/unloaded with
POST /v2/repository/models/NAME/load|unload. Every listener (HTTP, gRPC,
metrics) is bound to 127.0.0.1.

The process execs tritonserver (same pid), so killing it or its process group
stops the server; the Python backend's stub processes are its children and
exit when it dies. Shared-memory regions left in /dev/shm by a killed server
(named after its pid) are removed on the next start.
"""

import argparse
import glob
import importlib.util
import json
import os
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
SHM_PREFIX = "modeldock_tpb_"

TINY_FACE_CONFIG = """\
name: "tiny_face"
backend: "python"
max_batch_size: 0
input [
  {{ name: "input", data_type: TYPE_FP32, dims: [ {batch}, 3, 416, 416 ] }}
]
output [
  {{ name: "output", data_type: TYPE_FP32, dims: [ {batch}, 25, 13, 13 ] }}
]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
parameters: {{ key: "threads", value: {{ string_value: "{threads}" }} }}
"""

TINY_FACE_MODEL = '''\
"""tiny_face: tests/python/face_onnx.py's ONNX graph in onnxruntime (CPU)."""
import json
import os

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        threads = int(cfg.get("parameters", {}).get("threads", {}).get("string_value", "1"))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "input").as_numpy()
            y = self.sess.run(["output"], {"input": x})[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("output", y)]))
        return responses
'''

RAW_IDENTITY_CONFIG = """\
name: "raw_identity"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

RAW_IDENTITY_MODEL = '''\
"""raw_identity: OUTPUT0 = INPUT0 (FP32 [-1])."""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests
        ]
'''


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_repo(repo, threads, dynamic_batch):
    sys.path.insert(0, HERE)
    import face_onnx

    os.makedirs(os.path.join(repo, "tiny_face", "1"), exist_ok=True)
    face_onnx.write_onnx(os.path.join(repo, "tiny_face", "1", "model.onnx"), dynamic_batch=dynamic_batch)
    write(os.path.join(repo, "tiny_face", "1", "model.py"), TINY_FACE_MODEL)
    write(os.path.join(repo, "tiny_face", "config.pbtxt"),
          TINY_FACE_CONFIG.format(batch=-1 if dynamic_batch else 1, threads=threads))
    write(os.path.join(repo, "raw_identity", "1", "model.py"), RAW_IDENTITY_MODEL)
    write(os.path.join(repo, "raw_identity", "config.pbtxt"), RAW_IDENTITY_CONFIG)


def pytriton_dirs():
    """(tritonserver dir, nvidia_pytriton.libs dir) of the installed wheel,
    found without importing pytriton (its __init__ needs deps we skip)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("triton_serve: nvidia-pytriton is not installed in this interpreter "
                 "(run with .ci/venv-triton/bin/python; `bash .ci/deps` creates it)")
    pkg = list(spec.submodule_search_locations)[0]
    return os.path.join(pkg, "tritonserver"), os.path.join(os.path.dirname(pkg), "nvidia_pytriton.libs")


def ensure_stub(server_dir):
    """The Python backend runs `<backends>/python/triton_python_backend_stub`;
    the wheel keeps one per Python version elsewhere. Symlink the one of this
    interpreter (a symlink keeps the stub's $ORIGIN-relative RPATH right)."""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    src = os.path.join(server_dir, "python_backend_stubs", ver, "triton_python_backend_stub")
    if not os.path.exists(src):
        sys.exit(f"triton_serve: no Python backend stub for Python {ver} in {server_dir}")
    dst = os.path.join(server_dir, "backends", "python", "triton_python_backend_stub")
    if os.path.realpath(dst) != os.path.realpath(src):
        tmp = f"{dst}.tmp{os.getpid()}"
        os.symlink(src, tmp)
        os.replace(tmp, dst)


def remove_stale_shm():
    """Shared-memory regions of Python backends whose server is gone."""
    for path in glob.glob(f"/dev/shm/{SHM_PREFIX}*"):
        try:
            pid = int(os.path.basename(path)[len(SHM_PREFIX):].split("_", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            try:
                os.unlink(path)
            except OSError:
                pass
        except PermissionError:
            pass


def check_ports(ports):
    """Exit 98 (EADDRINUSE) when a port can't be bound on 127.0.0.1: tritonserver
    2.51 logs "failed to start HTTP service ... already in use" and then hangs
    instead of exiting, so catch the common case before exec."""
    import errno
    import socket
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            print(f"{os.path.basename(sys.argv[0])}: port {port} on 127.0.0.1: {e}", file=sys.stderr)
            sys.exit(98 if e.errno == errno.EADDRINUSE else 1)
        finally:
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True, help="model repository directory (created/overwritten)")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--load", nargs="*", action="extend", default=[], metavar="MODEL",
                    help="models loaded at start (default: none)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (tiny_face)")
    ap.add_argument("--dynamic-batch", action="store_true", help="tiny_face dims [-1,...] instead of [1,...]")
    ap.add_argument("--verbose", action="store_true", help="tritonserver --log-verbose=1")
    ap.add_argument("extra", nargs="*", help="after --: more tritonserver arguments")
    a = ap.parse_args()

    check_ports([a.http_port, a.grpc_port, a.metrics_port])
    repo = os.path.abspath(a.repo)
    write_repo(repo, a.threads, a.dynamic_batch)
    server_dir, libs_dir = pytriton_dirs()
    ensure_stub(server_dir)
    remove_stale_shm()

    env = dict(os.environ)
    # The stub loads libpython<ver>.so.1.0: make it this interpreter's (pyenv
    # and friends), not a system one of the same minor version.
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", libs_dir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(d for d in libdirs if d)
    # The stub's embedded interpreter finds its prefix (so the venv's
    # site-packages) through the `python3` on PATH, as pytriton arranges.
    env["PATH"] = os.path.join(sys.prefix, "bin") + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONHOME", None)
    env.setdefault("OMP_NUM_THREADS", str(a.threads))

    exe = os.path.join(server_dir, "bin", "tritonserver")
    args = [
        exe,
        f"--model-repository={repo}",
        "--model-control-mode=explicit",
        *[f"--load-model={m}" for m in a.load],
        f"--backend-directory={os.path.join(server_dir, 'backends')}",
        f"--cache-directory={os.path.join(server_dir, 'caches')}",
        f"--backend-config=python,shm-region-prefix-name={SHM_PREFIX}{os.getpid()}_",
        "--http-address=127.0.0.1", f"--http-port={a.http_port}",
        "--grpc-address=127.0.0.1", f"--grpc-port={a.grpc_port}",
        "--metrics-address=127.0.0.1", f"--metrics-port={a.metrics_port}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--strict-readiness=true",
        "--exit-on-error=false",
        f"--log-verbose={1 if a.verbose else 0}",
        *a.extra,
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(exe, args, env)


if __name__ == "__main__":
    main()
