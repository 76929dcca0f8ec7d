#!/usr/bin/env python3
"""Seldon MLServer (PyPI `mlserver`) serving face-api's tiny face detector
network in onnxruntime, loopback only, for the remote-backend tests.

    .ci/venv-mlserver/bin/python tests/python/mlserver_serve.py --repo DIR \
        --http-port P --grpc-port Q --metrics-port R [--load tiny_face raw_identity] \
        [--threads 1] [--dynamic-batch] [--verbose]

Models written into DIR (rewritten on every start; each a folder with a
model-settings.json, the runtimes are the classes below):
  tiny_face     input "input" FP32 [1,3,416,416] -> output "output" FP32 [1,25,13,13]
                (tests/python/face_onnx.py's graph; --dynamic-batch: first dim -1)
  raw_identity  "INPUT0" FP32 [-1] -> "OUTPUT0" FP32 [-1], the same values

Only the --load models start loaded (default: none); the rest are listed by
POST /v2/repository/index and loaded/unloaded with
POST /v2/repository/models/NAME/load|unload.

The server runs in this process (parallel_workers=0: no worker processes),
in the foreground; HTTP, gRPC and metrics all bind 127.0.0.1. Kafka and
tracing stay off (their defaults).
"""

import argparse
import asyncio
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from mlserver import MLModel  # noqa: E402
from mlserver.codecs import NumpyCodec  # noqa: E402
from mlserver.errors import InferenceError  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput  # noqa: E402


def _input(payload, name):
    """The named input as an array (MLServer maps InferenceError to a 400
    with {"error": msg}; any other exception is a bare text/plain 500)."""
    for inp in payload.inputs:
        if inp.name == name:
            if inp.datatype != "FP32":
                raise InferenceError(f"input '{name}': expected FP32, got {inp.datatype}")
            try:
                return NumpyCodec.decode_input(inp)
            except Exception as e:  # wrong element count for the shape, ...
                raise InferenceError(f"input '{name}': {e}")
    raise InferenceError(f"missing input '{name}'")


class TinyFaceRuntime(MLModel):
    """tiny_face: the ONNX graph next to model-settings.json, in onnxruntime."""

    async def load(self) -> bool:
        import face_onnx

        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        # parameters.uri: unset when loaded at start from model-settings.json,
        # the model's folder when loaded through the repository API.
        uri = (self.settings.parameters.uri if self.settings.parameters else None) \
            or os.path.dirname(self.settings._source or "")
        path = os.path.join(uri, "model.onnx") if os.path.isdir(uri) else uri
        self._sess = face_onnx.session(path, threads=int(extra.get("threads", 1)))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = np.ascontiguousarray(_input(payload, "input"), dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, 416, 416):
            raise InferenceError(f"input 'input': expected shape [1,3,416,416], got {list(x.shape)}")
        y = self._sess.run(["output"], {"input": x})[0]
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("output", y)],
        )


class IdentityRuntime(MLModel):
    """raw_identity: OUTPUT0 = INPUT0, same shape (NumpyCodec.encode_output
    would report a 1-D array as [N, 1])."""

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = np.asarray(_input(payload, "INPUT0"), dtype=np.float32).reshape(-1)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[ResponseOutput(name="OUTPUT0", shape=[int(x.size)], datatype="FP32", data=x.tolist())],
        )


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def write_repo(repo, threads, dynamic_batch):
    import face_onnx

    batch = -1 if dynamic_batch else 1
    os.makedirs(os.path.join(repo, "tiny_face"), exist_ok=True)
    face_onnx.write_onnx(os.path.join(repo, "tiny_face", "model.onnx"), dynamic_batch=dynamic_batch)
    write_json(os.path.join(repo, "tiny_face", "model-settings.json"), {
        "name": "tiny_face",
        "implementation": "mlserver_serve.TinyFaceRuntime",
        "platform": "onnxruntime",
        "versions": ["1"],
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [batch, 3, 416, 416]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [batch, 25, 13, 13]}],
        "parameters": {"version": "1", "extra": {"threads": threads}},
    })
    write_json(os.path.join(repo, "raw_identity", "model-settings.json"), {
        "name": "raw_identity",
        "implementation": "mlserver_serve.IdentityRuntime",
        "versions": ["1"],
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
        "parameters": {"version": "1"},
    })


def check_ports(ports):
    """Exit 98 (EADDRINUSE) when a port can't be bound on 127.0.0.1 (tritonserver
    2.51 logs "failed to start HTTP service ... already in use" and then hangs
    instead of exiting; MLServer exits 3 with a traceback)."""
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


async def serve(a, repo):
    from mlserver import MLServer
    from mlserver.settings import ModelSettings, Settings

    settings = Settings(
        debug=a.verbose,
        host="127.0.0.1",
        http_port=a.http_port,
        grpc_port=a.grpc_port,
        metrics_port=a.metrics_port,
        parallel_workers=0,
        model_repository_root=repo,
        load_models_at_startup=False,
        metrics_dir=os.path.join(repo, ".metrics"),
        kafka_enabled=False,
        tracing_server=None,
    )
    models = []
    for name in a.load:
        path = os.path.join(repo, name, "model-settings.json")
        if not os.path.isfile(path):
            sys.exit(f"mlserver_serve: no model '{name}' in {repo}")
        models.append(ModelSettings.parse_file(path))
    server = MLServer(settings)
    await server.start(models)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True, help="model repository directory (created/overwritten)")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--load", nargs="*", action="extend", default=[], metavar="MODEL",
                    help="models loaded at start (default: none)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (tiny_face)")
    ap.add_argument("--dynamic-batch", action="store_true", help="tiny_face shapes [-1,...] instead of [1,...]")
    ap.add_argument("--verbose", action="store_true", help="MLServer debug logging")
    a = ap.parse_args()
    check_ports([a.http_port, a.grpc_port, a.metrics_port])
    repo = os.path.abspath(a.repo)
    write_repo(repo, a.threads, a.dynamic_batch)
    # Run the server from the repo dir: MLServer puts "." on sys.path and
    # may write files (.metrics) relative to it.
    os.chdir(repo)
    asyncio.run(serve(a, repo))


if __name__ == "__main__":
    main()
