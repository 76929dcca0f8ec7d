#!/usr/bin/env python3
"""modeldock against PyTorch, ONNX Runtime, Ultralytics and facenet-pytorch:
the same networks, same weights, same images, same machine, one run.

Install (a venv outside the repository; every package from PyPI):

    python3 -m venv ../bench-venv
    ../bench-venv/bin/pip install torch torchvision ultralytics onnx onnxruntime onnxscript tqdm
    ../bench-venv/bin/pip install --no-deps facenet-pytorch

  PyPI's Linux torch wheel is the CUDA build: it pulls ~3 GB of nvidia-*
  wheels (the venv is ~6 GB) that stay unused on CPU. `pip install --no-deps
  torch` does not avoid them: `import torch` then fails (libcublasLt not
  found). facenet-pytorch pins an old torch, hence `--no-deps` (it needs only
  torch, torchvision, numpy, Pillow and tqdm, all already there).

Run (build modeldock first: cargo build --release):

    ../bench-venv/bin/python bench/pytorch_vs_modeldock.py \\
        [--modeldock PATH] [--threads 2] [--runs 20] [--rounds 3] \\
        [--image JPEG] [--mtcnn-image IMG ...] [--rows face,yolo,e2e,mtcnn,load,decode] \\
        [--json-out FILE]

Threads: --threads N (default 2) sets OMP_NUM_THREADS / MKL_NUM_THREADS and
torch.set_num_threads(N) for PyTorch, Ultralytics and facenet-pytorch,
intra_op_num_threads=N (inter_op 1) for ONNX Runtime and RAYON_NUM_THREADS=N
for modeldock. (Ultralytics' predictor setup calls
torch.set_num_threads(min(8, cpus - 1)), i.e. 1 on a 2-core machine; the
script sets N again after it and stops if a round ends with another count.)
Every figure is a p50 of --runs timed runs after warm-up; the sides are
measured in alternating rounds (--rounds) and each side's best round counts,
so a noisy moment hurts neither side alone. Run it on an otherwise idle
machine: with another process busy on the cores, PyTorch's OpenMP threads
collapse (tiny face detector, 2 threads next to a cargo build: ~560 ms
instead of ~40 ms with 1 thread), so the PyTorch, Ultralytics and
facenet-pytorch figures mean nothing then. The load average is printed and
kept in the JSON, with a warning when it is above 0.5 at the start.

Rows (each prints modeldock's figure, the peers' figures, every round's
figure in brackets, and the ratios; a ratio below 1 means modeldock is faster):

  face    tiny face detector @416, warm forward, batch 1, float32. PyTorch: the
          network rebuilt from the face-api sources (conv0 3x3 valid + leaky,
          five depthwise-separable convs with TF-'same' max pools, conv8 1x1)
          with modeldock's converted weights (models/face-detector).
  yolo    YOLOv8n @640, warm forward. PyTorch: Ultralytics' own
          `YOLO('yolov8n.yaml')` model with the fixture weights
          tests/fixtures/yolov8n-random/weights.safetensors loaded into it
          (Conv+BN fused, eval mode). modeldock: the same file, through a
          temporary models folder (model `yolov8n-fixture`).
          Both rows: ONNX Runtime runs the same PyTorch network exported with
          torch.onnx.export (opset 17; CPUExecutionProvider, ORT_ENABLE_ALL).
          PyTorch and ORT get the fixture input tensors; modeldock's figure is
          `bench --json`'s forward_loop_p50_ms (the network back to back on
          one preprocessed input, as the peers are timed here).
          Ratios: modeldock / PyTorch, modeldock / ORT, modeldock / best peer.
  e2e     YOLOv8n end to end per request on one JPEG (--image, default
          Ultralytics' packaged bus.jpg): decode + letterbox + forward + NMS.
          Ultralytics: `YOLO.predict(path, conf=0.25, iou=0.7, max_det=300)`
          wall time per call, fixture weights. modeldock:
          `bench --json`'s e2e_p50_ms (requests from the file's bytes, decode
          included, result cache bypassed). Ratio modeldock / Ultralytics (target <= 0.6), with
          Ultralytics' letterbox forced square (rect=False: 640x640 on both
          sides, the same work); the ratio against Ultralytics' default
          rectangular letterbox (rect=True: e.g. 640x480 for bus.jpg, less
          work than modeldock's square 640x640) is printed beside it.
          With the random fixture weights thousands of boxes pass conf 0.25,
          so NMS is far heavier than with trained weights (both sides get
          the same candidates); Ultralytics' own pre/inference/post split is
          printed to show it.
  mtcnn   MTCNN (facenet-pytorch 2.6.0 weights, defaults: min face 20,
          thresholds 0.6/0.7/0.7, factor 0.709) end to end per request on
          each --mtcnn-image (default tests/fixtures/images/astronaut.png and
          Ultralytics' zidane.jpg). facenet-pytorch: PIL decode +
          `MTCNN(keep_all=True).detect(img, landmarks=True)`; modeldock:
          `bench --model mtcnn --json`'s e2e_p50_ms. Ratio modeldock /
          facenet-pytorch per image and over all images (sum of p50s;
          target <= 0.5).

  load    modeldock's model loads against the raw read of the same file, in
          the same `bench --json` run (no peer program: the floor is one copy
          of the bytes). The 64 MiB toy model (`bench` without --model):
          cold_load_ms / raw_read_ms with the page cache warm (target <= 1.2),
          cold_load_cold_cache_ms / raw_read_cold_cache_ms with the file's
          pages dropped first (posix_fadvise DONTNEED; target <= 1.2), and
          cold_load_ms / raw_read_fresh_memory_ms: the raw read into memory
          handed back to the OS first, as a load after an unload finds it
          (the plain raw read reuses a buffer the allocator kept). YOLOv8n
          (fixture weights, 12 MB): cold_load_ms / raw_read_ms (its load is
          weight packing and BN folding, then a warm-up request). Ratios are
          taken within one bench run; the best round counts.
  decode  Decode + pre-processing of a 1920x1398 JPEG (the script writes it:
          tests/fixtures/human-models/images/sample2.png resized with PIL,
          JPEG quality 75, 4:2:0) against the tiny face detector's forward.
          modeldock: `bench --model face-detector --image` e2e phases decode
          + preprocess (warm requests from the bytes) over the same run's
          forward_loop_p50_ms (target <= 0.8; best rounds), and the first request of a
          fresh process (`infer --json`). Peer, for the floor: PIL with
          libjpeg-turbo decoding at the same reduced scale (`draft`, DCT
          scaling), letterboxing to 416 (bilinear) and normalising to a
          float32 CHW array with numpy; printed as PIL's decode alone and
          decode + pre-processing, each over modeldock's face forward.

Checks printed before the timings: the PyTorch and ORT outputs against the
fixture outputs, and the number of detections each side finds.

The last line is a JSON object with every figure and ratio (also written to
--json-out FILE), for pasting into a note. Temporary files (ONNX exports, the
models folder) go to a temporary directory outside the repository.
"""
import argparse
import atexit
import copy
import io
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("face", "yolo", "e2e", "mtcnn", "load", "decode")


def parser():
    ap = argparse.ArgumentParser(
        description="modeldock against PyTorch, ONNX Runtime, Ultralytics and facenet-pytorch "
        "(what is measured: the module docstring, or bench/README.md)")
    ap.add_argument("--modeldock", default=None, help="the modeldock binary [target/release/modeldock]")
    ap.add_argument("--threads", type=int, default=2, help="threads for every side [2]")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per figure [20]")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; each side's best counts [3]")
    ap.add_argument("--image", default=None, help="JPEG for the YOLOv8n end-to-end row [ultralytics' bus.jpg]")
    ap.add_argument("--mtcnn-image", action="append", default=None,
                    help="image for the MTCNN row (repeatable) [astronaut.png, ultralytics' zidane.jpg]")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to run [{','.join(ROWS)}]")
    ap.add_argument("--json-out", default=None, help="also write the final JSON object to this file")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary folder (ONNX files, models dir)")
    return ap


# Thread counts must be in the environment before torch (and ultralytics,
# which sets OMP_NUM_THREADS=1 when it is unset) are imported.
if __name__ == "__main__":
    _threads = str(parser().parse_known_args()[0].threads)
    for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[_v] = _threads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "F32", k
        t = torch.frombuffer(bytearray(data[8 + n + a : 8 + n + b]), dtype=torch.float32)
        out[k] = t.reshape(v["shape"])
    return out


class TinyFaceDetector(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        w = self.w
        leaky = lambda t: F.leaky_relu(t, 0.1)
        x = leaky(F.conv2d(x, w["conv0.weight"], w["conv0.bias"]))
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        for i in range(1, 6):
            c = x.shape[1]
            x = F.conv2d(F.pad(x, (1, 1, 1, 1)), w[f"conv{i}.depthwise"], groups=c)
            x = leaky(F.conv2d(x, w[f"conv{i}.pointwise"], w[f"conv{i}.bias"]))
            if i < 5:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            else:
                x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 1)
        return F.conv2d(x, w["conv8.weight"], w["conv8.bias"])


class FirstOutput(torch.nn.Module):
    """Ultralytics' eval-mode Detect returns (y, x): keep y, (1, 84, 8400)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)[0]


def p50_of(fn, runs, warmup=3):
    """p50 (ms) of fn() over `runs` timed calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def torch_p50(net, x, runs):
    with torch.inference_mode():
        return p50_of(lambda: net(x), runs)


def export_onnx(net, x, path):
    """torch.onnx.export at opset 17 (TorchScript exporter); the dynamo exporter
    (opset 18, its lowest) only if that one is gone. Returns (opset, exporter)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (x,), path, opset_version=17, input_names=["input"],
                              output_names=["output"], dynamo=False)
            return 17, "torchscript"
        except Exception as e:  # noqa: BLE001
            print(f"  torch.onnx.export(dynamo=False) failed ({e}); trying the dynamo exporter", file=sys.stderr)
            torch.onnx.export(net, (x,), path, opset_version=18, input_names=["input"],
                              output_names=["output"], dynamo=True)
            return 18, "dynamo"


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


class Modeldock:
    def __init__(self, binary, threads, models_dir):
        self.binary = binary
        # `infer` would use a running modeldock server: point it at a free port
        # so it always runs in this process, with --models-dir.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.env = dict(os.environ, RAYON_NUM_THREADS=str(threads), MODELDOCK_HOST=f"127.0.0.1:{port}")
        self.models_dir = models_dir

    def run(self, *args):
        cmd = [self.binary, *args]
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=3600)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
        return out.stdout

    def bench(self, model, runs, image=None, http=False):
        args = ["bench", "--json", "--runs", str(runs), "--models-dir", self.models_dir]
        if model:
            args += ["--model", model]
        if image:
            args += ["--image", image]
        if http:
            args.append("--http")
        return json.loads(self.run(*args))

    def detections(self, model, image):
        j = json.loads(self.run("infer", "--json", "--models-dir", self.models_dir, "--model", model, image))
        return len(j.get("detections", [])), j.get("timings_ms", {})


def forward_loop(j):
    """bench's back-to-back forward p50; forward_p50_ms (inside requests) if missing."""
    return j.get("forward_loop_p50_ms") or j["forward_p50_ms"]


def best(v):
    return min(v) if v else None


def ratio(a, b):
    return a / b if a and b else None


def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def every(v):
    return "[" + " ".join(f"{x:.1f}" for x in v) + "]"


def every2(v):
    return "[" + " ".join(f"{x:.2f}" for x in v) + "]"


def main():
    a = parser().parse_args()
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        sys.exit(f"unknown rows {bad}; choose from {ROWS}")
    binary = a.modeldock
    if binary is None:
        for cand in ("target/release/modeldock", "target/debug/modeldock"):
            if os.path.exists(os.path.join(ROOT, cand)):
                binary = os.path.join(ROOT, cand)
                break
    if binary is None:
        sys.exit("build modeldock first (cargo build --release) or pass --modeldock PATH")
    binary = os.path.abspath(binary)
    torch.set_num_threads(a.threads)

    import onnxruntime
    import ultralytics
    from ultralytics import YOLO

    torch.set_num_threads(a.threads)  # ultralytics may touch the env on import; torch keeps this
    assets = ultralytics.ASSETS
    jpeg = os.path.abspath(a.image or str(assets / "bus.jpg"))
    mtcnn_images = [os.path.abspath(p) for p in (a.mtcnn_image or [
        os.path.join(ROOT, "tests/fixtures/images/astronaut.png"), str(assets / "zidane.jpg")])]
    for p in [jpeg, *mtcnn_images]:
        if not os.path.isfile(p):
            sys.exit(f"no such image: {p}")

    work = tempfile.mkdtemp(prefix="modeldock-vs-peers-")
    if a.keep_work:
        atexit.register(lambda: print(f"kept {work}", file=sys.stderr))
    else:
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    fx = lambda rel: os.path.join(ROOT, "tests/fixtures", rel)
    # A models folder whose yolov8n has the fixture weights (a copy: modeldock
    # refuses weights that resolve outside the model folder).
    ydir = os.path.join(work, "models", "yolov8n-fixture")
    os.makedirs(ydir)
    shutil.copy(fx("yolov8n-random/weights.safetensors"), os.path.join(ydir, "weights.safetensors"))
    with open(os.path.join(ydir, "model.toml"), "w") as f:
        f.write('id = "yolov8n-fixture"\nname = "YOLOv8n, random fixture weights"\ntask = "detect"\n'
                'arch = "yolov8"\nvariant = "n"\nweights = "weights.safetensors"\ninput_size = 640\n'
                'dtype = "f32"\nconf = 0.25\niou = 0.7\nlicence = "random numbers (test fixture)"\n')
    md = Modeldock(binary, a.threads, os.path.join(work, "models"))

    versions = {
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "ultralytics": ultralytics.__version__, "python": platform.python_version(),
    }
    checks = {}
    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        print(f"WARNING: load average {load_start[0]:.2f} at the start: the machine is busy, the figures "
              "(PyTorch's above all) are not worth keeping", file=sys.stderr, flush=True)
    print(f"modeldock {binary}; threads {a.threads}; runs {a.runs}; rounds {a.rounds}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)

    # ---- networks, exports, sanity checks (untimed) ----
    if "face" in rows:
        face = TinyFaceDetector(load_safetensors(os.path.join(ROOT, "models/face-detector/tiny_face_detector_model.safetensors")))
        ff = load_safetensors(fx("tiny_face_detector/astronaut.safetensors"))
        face_x, face_ref = ff["input"], ff["output"]
        opset, exporter = export_onnx(face, face_x, os.path.join(work, "face.onnx"))
        face_ort = ort_session(os.path.join(work, "face.onnx"), a.threads)
        face_xn = face_x.numpy()
        with torch.inference_mode():
            checks["face_pytorch_max_abs_diff"] = float((face(face_x) - face_ref).abs().max())
        checks["face_ort_max_abs_diff"] = float(abs(face_ort(face_xn) - face_ref.numpy()).max())
        checks["onnx"] = f"opset {opset} ({exporter} exporter)"
    if {"yolo", "e2e"} & set(rows):
        yolo = YOLO("yolov8n.yaml")
        sd = load_safetensors(fx("yolov8n-random/weights.safetensors"))
        res = yolo.model.load_state_dict(sd, strict=False)
        missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or res.unexpected_keys:
            sys.exit(f"fixture weights do not fit yolov8n.yaml: missing {missing[:5]}, unexpected {res.unexpected_keys[:5]}")
        yolo.model.eval()
    if "yolo" in rows:
        ynet = copy.deepcopy(yolo.model).fuse().eval()
        yf = load_safetensors(fx("yolov8n-random/input.safetensors"))
        yolo_x, yolo_ref = yf["input"], load_safetensors(fx("yolov8n-random/output.safetensors"))["output"]
        # Export before any inference-mode run (the Detect head caches its anchors).
        opset, exporter = export_onnx(FirstOutput(copy.deepcopy(ynet)), yolo_x, os.path.join(work, "yolov8n.onnx"))
        yolo_ort = ort_session(os.path.join(work, "yolov8n.onnx"), a.threads)
        yolo_xn = yolo_x.numpy()
        with torch.no_grad():
            d = (ynet(yolo_x)[0] - yolo_ref).abs()
        checks["yolo_pytorch_max_abs_diff_box_px"] = float(d[:, :4].max())
        checks["yolo_pytorch_max_abs_diff_score"] = float(d[:, 4:].max())
        d = abs(yolo_ort(yolo_xn) - yolo_ref.numpy())
        checks["yolo_ort_max_abs_diff_box_px"] = float(d[:, :4].max())
        checks["yolo_ort_max_abs_diff_score"] = float(d[:, 4:].max())
        checks["onnx"] = f"opset {opset} ({exporter} exporter)"
    ul_speed = {"preprocess": [], "inference": [], "postprocess": []}

    def predict(rect, speed=None):
        r = yolo.predict(source=jpeg, imgsz=640, conf=0.25, iou=0.7, max_det=300, device="cpu",
                         rect=rect, save=False, verbose=False)
        if speed is not None:
            for k in speed:
                speed[k].append(r[0].speed[k])
        return r

    if "e2e" in rows:
        checks["e2e_detections_ultralytics_square"] = len(predict(False)[0].boxes)
        checks["e2e_detections_ultralytics_rect"] = len(predict(True)[0].boxes)
        # Ultralytics' predictor setup (select_device) calls
        # torch.set_num_threads(min(8, cpus - 1)): 1 thread on a 2-core
        # machine. Give it --threads like every other side.
        checks["ultralytics_default_torch_threads"] = torch.get_num_threads()
        torch.set_num_threads(a.threads)
        n, t = md.detections("yolov8n-fixture", jpeg)
        checks["e2e_detections_modeldock"] = n
        checks["e2e_modeldock_one_request_ms"] = {k: round(v, 2) for k, v in t.items()}
    if "mtcnn" in rows:
        from facenet_pytorch import MTCNN
        from PIL import Image

        mtcnn = MTCNN(keep_all=True, device="cpu")

        def facenet(path):
            return mtcnn.detect(Image.open(path).convert("RGB"), landmarks=True)

        for p in mtcnn_images:
            boxes = facenet(p)[0]
            checks[f"mtcnn_faces_facenet[{os.path.basename(p)}]"] = 0 if boxes is None else len(boxes)
            checks[f"mtcnn_faces_modeldock[{os.path.basename(p)}]"] = md.detections("mtcnn", p)[0]
    if "decode" in rows:
        from PIL import Image, features
        import numpy as np

        big_jpeg = os.path.join(work, "sample2-1920x1398.jpg")
        src = Image.open(fx("human-models/images/sample2.png")).convert("RGB")
        src.resize((1920, 1398), Image.BILINEAR).save(big_jpeg, quality=75)
        with open(big_jpeg, "rb") as f:
            big_bytes = f.read()
        checks["decode_pil_libjpeg_turbo"] = features.check_feature("libjpeg_turbo")
        first = md.detections("face-detector", big_jpeg)
        checks["decode_faces_modeldock"] = first[0]
        checks["decode_modeldock_first_request_ms"] = {k: round(v, 2) for k, v in first[1].items()}

        def pil_decode():
            im = Image.open(io.BytesIO(big_bytes))
            # The scale modeldock decodes at: the smallest DCT scale whose
            # longer side stays >= twice the input (832).
            im.draft("RGB", (832, 832 * im.size[1] // im.size[0]))
            im.load()
            return im

        def pil_decode_pre():
            im = pil_decode()
            s_ = 416 / max(im.size)
            w_, h_ = round(im.size[0] * s_), round(im.size[1] * s_)
            canvas = np.zeros((416, 416, 3), np.float32)
            y0, x0 = (416 - h_) // 2, (416 - w_) // 2
            canvas[y0:y0 + h_, x0:x0 + w_] = np.asarray(im.resize((w_, h_), Image.BILINEAR), np.float32)
            return np.ascontiguousarray(canvas.transpose(2, 0, 1)) / 255.0

        checks["decode_pil_size"] = list(pil_decode().size)
    print("checks: " + json.dumps(checks), flush=True)

    # ---- alternating rounds ----
    R = {}
    add = lambda k, v: R.setdefault(k, []).append(v)
    for rnd in range(a.rounds):
        t0 = time.time()
        if "face" in rows:
            add("face_pytorch", torch_p50(face, face_x, a.runs))
            add("face_ort", p50_of(lambda: face_ort(face_xn), a.runs))
            j = md.bench("face-detector", a.runs, image=fx("images/astronaut.png"))
            add("face_modeldock", forward_loop(j))
        if "yolo" in rows:
            add("yolo_pytorch", torch_p50(ynet, yolo_x, a.runs))
            add("yolo_ort", p50_of(lambda: yolo_ort(yolo_xn), a.runs))
            j = md.bench("yolov8n-fixture", a.runs, image=jpeg)
            add("yolo_modeldock", forward_loop(j))
            add("yolo_modeldock_warm_decoded", j["warm_p50_ms"])
            add("yolo_modeldock_forward_in_request", j["forward_p50_ms"])
        if "e2e" in rows:
            add("e2e_ultralytics", p50_of(lambda: predict(False, ul_speed), a.runs))
            add("e2e_ultralytics_rect", p50_of(lambda: predict(True), a.runs))
            add("e2e_modeldock", md.bench("yolov8n-fixture", a.runs, image=jpeg)["e2e_p50_ms"])
        if "mtcnn" in rows:
            for i, p in enumerate(mtcnn_images):
                add(f"mtcnn_facenet_{i}", p50_of(lambda: facenet(p), a.runs, warmup=2))
                add(f"mtcnn_modeldock_{i}", md.bench("mtcnn", a.runs, image=p)["e2e_p50_ms"])
        if "load" in rows:
            j = md.bench(None, 5)
            add("load_toy_warm", j["cold_load_ms"])
            add("load_toy_raw", j["raw_read_ms"])
            add("load_toy_ratio_warm", j["load_ratio_warm"])
            if j.get("raw_read_fresh_memory_ms"):
                add("load_toy_raw_fresh", j["raw_read_fresh_memory_ms"])
                add("load_toy_ratio_warm_fresh", j["load_ratio_warm_fresh_memory"])
            if j.get("load_ratio_cold") is not None:
                add("load_toy_cold", j["cold_load_cold_cache_ms"])
                add("load_toy_raw_cold", j["raw_read_cold_cache_ms"])
                add("load_toy_ratio_cold", j["load_ratio_cold"])
            j = md.bench("yolov8n-fixture", 5, image=jpeg)
            add("load_yolo", j["cold_load_ms"])
            add("load_yolo_raw", j["raw_read_ms"])
            add("load_yolo_ratio", j["load_ratio_warm"])
        if "decode" in rows:
            add("decode_pil", p50_of(pil_decode, a.runs))
            add("decode_pil_pre", p50_of(pil_decode_pre, a.runs))
            j = md.bench("face-detector", a.runs, image=big_jpeg)
            ph = j["e2e_phases_p50_ms"]
            add("decode_modeldock", ph["decode"])
            add("decode_modeldock_pre", ph["decode"] + ph["preprocess"])
            add("decode_face_forward", forward_loop(j))
        if torch.get_num_threads() != a.threads:
            sys.exit(f"torch threads changed to {torch.get_num_threads()} during round {rnd + 1}")
        print(f"round {rnd + 1}/{a.rounds} done in {time.time() - t0:.0f} s", flush=True)

    # ---- report ----
    B = {k: best(v) for k, v in R.items()}
    summary = []  # (row, modeldock ms, peer, peer ms, ratio, target)
    print()
    if "face" in rows or "yolo" in rows:
        print(f"warm forward p50 (ms), batch 1, float32; best of {a.rounds} alternating rounds of {a.runs} runs; every round in brackets")
        print(f"{'network':<24} {'modeldock':>9} {'PyTorch':>9} {'ORT':>9} {'md/PT':>7} {'md/ORT':>7} {'md/best':>8}")
        for key, name in (("face", "tiny face detector @416"), ("yolo", "YOLOv8n @640")):
            if key not in rows:
                continue
            m, pt, ort_ = B[key + "_modeldock"], B[key + "_pytorch"], B[key + "_ort"]
            bp = min(pt, ort_)
            print(f"{name:<24} {m:>9.1f} {pt:>9.1f} {ort_:>9.1f} {m / pt:>7.2f} {m / ort_:>7.2f} {m / bp:>8.2f}"
                  f"   md {every(R[key + '_modeldock'])} PT {every(R[key + '_pytorch'])} ORT {every(R[key + '_ort'])}")
            summary += [(f"{name} forward", m, "PyTorch", pt, m / pt, None),
                        (f"{name} forward", m, "ONNX Runtime", ort_, m / ort_, None),
                        (f"{name} forward", m, "best peer", bp, m / bp, None)]
        print("modeldock: `bench`'s forward_loop_p50_ms (the network back to back on one preprocessed input).")
        if "yolo" in rows:
            print(f"YOLOv8n inside modeldock requests: forward {fmt(B['yolo_modeldock_forward_in_request'])} ms, "
                  f"whole request on a decoded frame (warm_p50_ms) {fmt(B['yolo_modeldock_warm_decoded'])} ms")
        print()
    if "e2e" in rows:
        m, ul, ulr = B["e2e_modeldock"], B["e2e_ultralytics"], B["e2e_ultralytics_rect"]
        sp = {k: sorted(v)[len(v) // 2] for k, v in ul_speed.items() if v}
        print(f"YOLOv8n end to end per request (decode + letterbox + forward + NMS) on {jpeg}, fixture weights")
        print(f"  modeldock (bench e2e_p50_ms)                     {m:>8.1f} ms  {every(R['e2e_modeldock'])}")
        print(f"  Ultralytics predict, square 640x640 (rect=False) {ul:>8.1f} ms  {every(R['e2e_ultralytics'])}"
              f"   ratio {m / ul:.2f} (target <= 0.6)")
        print(f"  Ultralytics predict, default rect letterbox      {ulr:>8.1f} ms  {every(R['e2e_ultralytics_rect'])}"
              f"   ratio {m / ulr:.2f}")
        print("  Ultralytics' own split (square, p50 over all rounds, excludes imread): "
              + ", ".join(f"{k} {v:.1f} ms" for k, v in sp.items()))
        summary += [("YOLOv8n end to end", m, "Ultralytics (square)", ul, m / ul, 0.6),
                    ("YOLOv8n end to end", m, "Ultralytics (rect)", ulr, m / ulr, None)]
        print()
    if "mtcnn" in rows:
        print("MTCNN end to end per request (decode + detect with landmarks)")
        tm = tf = 0.0
        for i, p in enumerate(mtcnn_images):
            m, f_ = B[f"mtcnn_modeldock_{i}"], B[f"mtcnn_facenet_{i}"]
            tm, tf = tm + m, tf + f_
            print(f"  {os.path.basename(p):<20} modeldock {m:>8.1f} ms {every(R[f'mtcnn_modeldock_{i}'])}  "
                  f"facenet-pytorch {f_:>8.1f} ms {every(R[f'mtcnn_facenet_{i}'])}  ratio {m / f_:.2f}")
            summary.append((f"MTCNN {os.path.basename(p)}", m, "facenet-pytorch", f_, m / f_, None))
        print(f"  all images (sum of p50s)  modeldock {tm:.1f} ms, facenet-pytorch {tf:.1f} ms, ratio {tm / tf:.2f} (target <= 0.5)")
        summary.append(("MTCNN all images", tm, "facenet-pytorch", tf, tm / tf, 0.5))
        print()

    if "load" in rows:
        print("Loads against the raw read of the same file (one bench run each; ratio within the run, best round)")
        tr = lambda k: f"{best(R[k]):.2f} {every2(R[k])}"
        print(f"  64 MiB toy, page cache warm: load {fmt(best(R['load_toy_warm']))} ms, raw read "
              f"{fmt(best(R['load_toy_raw']))} ms, ratio {tr('load_toy_ratio_warm')} (target <= 1.2)")
        summary.append(("64 MiB load, cache warm", best(R["load_toy_warm"]), "raw read (reused memory)",
                        best(R["load_toy_raw"]), best(R["load_toy_ratio_warm"]), 1.2))
        if "load_toy_raw_fresh" in R:
            print(f"    raw read into fresh memory {fmt(best(R['load_toy_raw_fresh']))} ms, "
                  f"ratio {tr('load_toy_ratio_warm_fresh')}")
            summary.append(("64 MiB load, cache warm", best(R["load_toy_warm"]), "raw read (fresh memory)",
                            best(R["load_toy_raw_fresh"]), best(R["load_toy_ratio_warm_fresh"]), None))
        if "load_toy_ratio_cold" in R:
            print(f"  64 MiB toy, page cache cold: load {fmt(best(R['load_toy_cold']))} ms, raw read "
                  f"{fmt(best(R['load_toy_raw_cold']))} ms, ratio {tr('load_toy_ratio_cold')} (target <= 1.2)")
            summary.append(("64 MiB load, cache cold", best(R["load_toy_cold"]), "raw read (cold cache)",
                            best(R["load_toy_raw_cold"]), best(R["load_toy_ratio_cold"]), 1.2))
        print(f"  YOLOv8n (12 MB), page cache warm: load {fmt(best(R['load_yolo']))} ms, raw read "
              f"{fmt(best(R['load_yolo_raw']), 2)} ms, ratio {tr('load_yolo_ratio')}")
        summary.append(("YOLOv8n load, cache warm", best(R["load_yolo"]), "raw read (reused memory)",
                        best(R["load_yolo_raw"]), best(R["load_yolo_ratio"]), None))
        print()
    if "decode" in rows:
        fw = best(R["decode_face_forward"])
        print(f"Decode + pre-processing of a 1920x1398 JPEG against the face detector's forward ({fmt(fw, 2)} ms "
              f"{every2(R['decode_face_forward'])}, bench forward_loop_p50_ms; ratios of the best rounds)")
        print(f"  modeldock decode {fmt(best(R['decode_modeldock']), 2)} ms, + preprocess "
              f"{fmt(best(R['decode_modeldock_pre']), 2)} ms {every2(R['decode_modeldock_pre'])}, "
              f"ratio to the forward {best(R['decode_modeldock_pre']) / fw:.2f} (target <= 0.8)")
        fr = checks.get("decode_modeldock_first_request_ms", {})
        if fr:
            print(f"  first request of a fresh process: decode {fr.get('decode')} ms, preprocess "
                  f"{fr.get('preprocess')} ms, forward {fr.get('forward')} ms")
        print(f"  PIL (libjpeg-turbo {checks.get('decode_pil_libjpeg_turbo')}) decode at the same scale "
              f"{fmt(best(R['decode_pil']), 2)} ms {every2(R['decode_pil'])} = {best(R['decode_pil']) / fw:.2f} x "
              f"modeldock's forward; + letterbox + normalise {fmt(best(R['decode_pil_pre']), 2)} ms = "
              f"{best(R['decode_pil_pre']) / fw:.2f} x")
        summary += [("1920x1398 JPEG decode+pre", best(R["decode_modeldock_pre"]), "face forward (md)", fw,
                     best(R["decode_modeldock_pre"]) / fw, 0.8),
                    ("1920x1398 JPEG decode+pre", best(R["decode_modeldock_pre"]), "PIL/libjpeg-turbo",
                     best(R["decode_pil_pre"]), best(R["decode_modeldock_pre"]) / best(R["decode_pil_pre"]), None),
                    ("PIL/libjpeg-turbo decode+pre", best(R["decode_pil_pre"]), "face forward (md)", fw,
                     best(R["decode_pil_pre"]) / fw, None)]
        print()
    load_end = os.getloadavg()
    print(f"summary (threads {a.threads}, best of {a.rounds} rounds x {a.runs} runs; ratio = modeldock / peer; "
          f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end)")
    print(f"{'row':<36} {'modeldock ms':>12} {'peer':<22} {'peer ms':>9} {'ratio':>6} {'target':>7}")
    for row, m, peer, pm, r, target in summary:
        tgt = "" if target is None else f"<={target}" + (" ok" if r <= target else " no")
        print(f"{row:<36} {m:>12.1f} {peer:<22} {pm:>9.1f} {r:>6.2f} {tgt:>7}")

    out = {
        "bench": "pytorch_vs_modeldock", "threads": a.threads, "runs": a.runs, "rounds": a.rounds,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in load_end]},
        "modeldock": binary, "versions": versions, "image": jpeg, "mtcnn_images": mtcnn_images,
        "checks": checks,
        "best_ms": {k: round(v, 3) for k, v in B.items()},
        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in R.items()},
        "ultralytics_split_ms": {k: round(sorted(v)[len(v) // 2], 3) for k, v in ul_speed.items() if v},
        "ratios": [{"row": row, "peer": peer, "modeldock_ms": round(m, 3), "peer_ms": round(pm, 3),
                    "ratio": round(r, 4), "target": target} for row, m, peer, pm, r, target in summary],
    }
    line = json.dumps(out, separators=(",", ":"))
    print(line)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
