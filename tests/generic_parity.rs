//! The generic path (candle's own ops, what a GPU runs: `--kernels generic`)
//! equals the fast path (this CPU's tiled and fused kernels) for every model,
//! on the fixture images: the raw network output, and the detections after
//! post-processing. One test in its own binary, because the kernel choice is
//! one switch for the process.

mod common;

use std::sync::Arc;

use candle_core::{Device, Tensor};
use common::fixture;
use modeldock::catalog::registry::{Registry, WeightsResolved};
use modeldock::kernels::Kernels;
use modeldock::models::Model;
use modeldock::vision::{Detection, InferParams};

/// Each built-in model and the fixture images it is checked on.
const MATRIX: &[(&str, &[&str])] = &[
    ("face-detector", &["images/astronaut.png", "images/camera.png"]),
    ("face-landmarks", &["images/astronaut.png"]),
    ("face-landmarks-tiny", &["images/astronaut.png"]),
    ("mtcnn", &["images/astronaut.png"]),
    ("objects", &["human-models/images/sample2.png", "images/astronaut.png"]),
    ("pose", &["human-models/images/sample2.png"]),
    (
        "hands",
        &["human-models/images/sample2.png", "human-models/images/chelsea.png"],
    ),
    ("selfie", &["human-models/images/sample2.png"]),
];

fn image(rel: &str) -> image::RgbImage {
    let b = std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    modeldock::vision::decode::decode_bytes(rel, &b, &Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn built_in(reg: &Registry, id: &str) -> Box<dyn Model> {
    let e = reg.get(id).unwrap_or_else(|| panic!("{id} is built in"));
    let WeightsResolved::Local(src) = &e.weights else {
        panic!("{id}: local weights expected")
    };
    modeldock::models::build(&e.manifest, src, e.predicted_bytes, &Device::Cpu, Arc::new(|_, _| {}))
        .unwrap_or_else(|err| panic!("{id}: {err}"))
}

/// Largest |a - b| over the largest |a| (at least 1): a relative error.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let flat = |t: &Tensor| -> Vec<f32> {
        t.flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (a, b) = (flat(a), flat(b));
    let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// What `m` gives for `img` on the path in force: its raw output (when it
/// has one network input) and its detections.
fn run(m: &dyn Model, img: &image::RgbImage) -> (Option<Tensor>, Vec<Detection>) {
    let raw = m
        .preprocess_raw(img)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|x| m.forward_raw(&x).unwrap_or_else(|e| panic!("{e}")));
    let (dets, _) = m.infer(img, &InferParams::default()).unwrap_or_else(|e| panic!("{e}"));
    (raw, dets)
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter).max(1e-6)
}

/// How close two detections must be to match.
struct Tolerance {
    score: f32,
    iou: f32,
    px: f32,
    /// Detections closer than this to the threshold may be on either side.
    margin: f32,
}

/// Every detection of `a` clear of the threshold (by 0.02) has one in `b`
/// with the same label, a box of IoU ≥ 0.9, a score within 0.01 and
/// keypoints within 2 px; problems are returned as lines.
fn unmatched(a: &[Detection], b: &[Detection], floor: f32, what: &str) -> Vec<String> {
    let tol = Tolerance {
        score: 0.01,
        iou: 0.9,
        px: 2.0,
        margin: 0.02,
    };
    unmatched_within(a, b, floor, &tol, what)
}

fn unmatched_within(a: &[Detection], b: &[Detection], floor: f32, tol: &Tolerance, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for d in a.iter().filter(|d| d.score >= floor + tol.margin) {
        let found = b.iter().find(|e| {
            e.label == d.label
                && iou(&d.bbox, &e.bbox) >= tol.iou
                && (d.score - e.score).abs() <= tol.score
                && d.keypoints.len() == e.keypoints.len()
                && d.keypoints
                    .iter()
                    .zip(&e.keypoints)
                    .all(|(p, q)| (p[0] - q[0]).abs() <= tol.px && (p[1] - q[1]).abs() <= tol.px)
        });
        if found.is_none() {
            out.push(format!("{what}: {} {:.3} {:?} has no match", d.label, d.score, d.bbox));
        }
    }
    out
}

#[test]
fn the_generic_path_equals_the_fast_path_for_every_model() {
    let probe = Tensor::zeros((1, 1), candle_core::DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let reg = Registry::discover(&[]);
    let mut problems = Vec::new();
    let mut checked = 0;
    for (id, images) in MATRIX {
        let m = built_in(&reg, id);
        let floor = reg.get(id).and_then(|e| e.manifest.conf).unwrap_or(0.3);
        for rel in *images {
            let img = image(rel);
            Kernels::Fast.apply();
            assert!(
                modeldock::kernels::host::is_cpu_f32(&probe),
                "the fast kernels are in force"
            );
            let (raw_fast, dets_fast) = run(m.as_ref(), &img);
            Kernels::Generic.apply();
            assert!(
                !modeldock::kernels::host::is_cpu_f32(&probe),
                "the generic path is in force"
            );
            let (raw_generic, dets_generic) = run(m.as_ref(), &img);
            Kernels::Fast.apply();
            let what = format!("{id} on {rel}");
            if let (Some(a), Some(b)) = (&raw_fast, &raw_generic) {
                let d = rel_diff(a, b);
                println!("{what}: raw output relative difference {d:.2e}");
                if d > 1e-3 {
                    problems.push(format!("{what}: raw outputs differ by {d:.2e} (relative)"));
                }
            }
            println!(
                "{what}: {} detections fast, {} generic",
                dets_fast.len(),
                dets_generic.len()
            );
            problems.extend(unmatched(
                &dets_fast,
                &dets_generic,
                floor,
                &format!("{what} (fast → generic)"),
            ));
            problems.extend(unmatched(
                &dets_generic,
                &dets_fast,
                floor,
                &format!("{what} (generic → fast)"),
            ));
            checked += 1;
        }
    }
    // YOLOv8 on its Ultralytics fixture (random weights: no detections worth
    // comparing, so the raw head output, at the fixture's own tolerances).
    let input: Tensor = candle_core::safetensors::load(fixture("yolov8n-random/input.safetensors"), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove("input")
        .unwrap_or_else(|| panic!("no input tensor"));
    let w = fixture("yolov8n-random/weights.safetensors");
    let yolo = |k: Kernels| {
        k.apply();
        modeldock::cli::verify_cmd::raw_forward("yolov8", "n", "detect", &w, &input).unwrap_or_else(|e| panic!("{e}"))
    };
    let (fast, generic) = (yolo(Kernels::Fast), yolo(Kernels::Generic));
    Kernels::Fast.apply();
    let d = rel_diff(&fast, &generic);
    println!("yolov8n: raw output relative difference {d:.2e}");
    if d > 1e-4 {
        problems.push(format!("yolov8n: raw outputs differ by {d:.2e} (relative)"));
    }
    problems.extend(onnx_graphs_match());
    assert_eq!(checked, MATRIX.iter().map(|(_, i)| i.len()).sum::<usize>());
    problems.extend(half_precision_matches(&reg));
    problems.extend(selfie_half_mask(&reg));
    #[cfg(feature = "sam")]
    problems.extend(mobile_sam_matches());
    assert!(
        problems.is_empty(),
        "the generic path differs:\n{}",
        problems.join("\n")
    );
}

/// The models whose network is a graph (run in f16 on a GPU).
/// `selfie` runs in f16 on a GPU too; its map is checked on the mask
/// instead ([`selfie_half_mask`]): along a person's edges the f16 map is up
/// to 0.07 from the f32 one (sample2), beyond the raw bound below.
const HALF: &[&str] = &["objects", "pose", "hands"];

/// The graph models loaded under `Kernels::GenericHalf` (f16 on the CPU, as
/// a GPU runs them) give the fast f32 path's detections within f16's
/// tolerance: score within 0.02, box IoU ≥ 0.85, keypoints within 3 px.
fn half_precision_matches(reg: &Registry) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, images) in MATRIX.iter().filter(|(id, _)| HALF.contains(id)) {
        Kernels::Fast.apply();
        let fast = built_in(reg, id);
        Kernels::GenericHalf.apply();
        let half = built_in(reg, id);
        let floor = reg.get(id).and_then(|e| e.manifest.conf).unwrap_or(0.3);
        for rel in *images {
            let img = image(rel);
            Kernels::Fast.apply();
            let (raw_f32, dets_f32) = run(fast.as_ref(), &img);
            Kernels::GenericHalf.apply();
            let (raw_f16, dets_f16) = run(half.as_ref(), &img);
            Kernels::Fast.apply();
            let what = format!("{id} on {rel} in f16");
            if let (Some(a), Some(b)) = (&raw_f32, &raw_f16) {
                let d = rel_diff(a, b);
                println!("{what}: raw output relative difference {d:.2e}");
                if d > 2e-2 {
                    problems.push(format!("{what}: raw outputs differ by {d:.2e} (relative)"));
                }
            }
            println!("{what}: {} detections f32, {} f16", dets_f32.len(), dets_f16.len());
            let tol = Tolerance {
                score: 0.02,
                iou: 0.85,
                px: 3.0,
                margin: 0.05,
            };
            problems.extend(unmatched_within(
                &dets_f32,
                &dets_f16,
                floor,
                &tol,
                &format!("{what} (f32 → f16)"),
            ));
            problems.extend(unmatched_within(
                &dets_f16,
                &dets_f32,
                floor,
                &tol,
                &format!("{what} (f16 → f32)"),
            ));
        }
    }
    problems
}

/// `selfie` in f16 (as a GPU runs it) against f32, on its mask: the map's
/// mean difference and the share of cells that change side of 0.5 (measured
/// on sample2: 5.1e-4 and 5.5e-4; the bounds leave about 4× and 9× room).
fn selfie_half_mask(reg: &Registry) -> Vec<String> {
    let img = image("human-models/images/sample2.png");
    let mask = |k: Kernels| {
        k.apply();
        let m = built_in(reg, "selfie");
        let (_, masks, _) = m
            .infer_with_masks(&img, &InferParams::default())
            .unwrap_or_else(|e| panic!("{e}"));
        Kernels::Fast.apply();
        masks
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("selfie made no mask"))
    };
    let (a, b) = (mask(Kernels::Fast), mask(Kernels::GenericHalf));
    let n = a.data.len().max(1) as f64;
    let mean = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / n
        / 255.0;
    let flips = a
        .data
        .iter()
        .zip(&b.data)
        .filter(|(x, y)| (**x >= 128) != (**y >= 128))
        .count() as f64
        / n;
    println!("selfie on sample2 in f16: mask mean |diff| {mean:.2e}, cells across 0.5 {flips:.2e}");
    let mut problems = Vec::new();
    if mean > 2e-3 || flips > 5e-3 {
        problems.push(format!(
            "selfie in f16: mask mean |diff| {mean:.2e}, cells across 0.5 {flips:.2e}"
        ));
    }
    problems
}

/// Imported ONNX exports (YOLO11n with its attention, YOLOv8n-seg with its
/// transposed conv and two outputs), filled from a seed by
/// tests/python/onnx_fixtures.py (ONNX Runtime's venv, `.ci/venv-triton`):
/// every output of the graph built under each kernel choice.
fn onnx_graphs_match() -> Vec<String> {
    let python = match std::env::var_os("MODELDOCK_TEST_ONNX_PYTHON") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv-triton/bin/python"),
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/onnx_fixtures.py");
    let mut problems = Vec::new();
    for name in ["yolo11n", "yolov8n-seg"] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg("fill")
            .arg(fixture(&format!("onnx/{name}-320.onnx")))
            .arg(dir.path())
            .args(["--seed", "11"])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (run `bash .ci/deps`)", python.display()));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let model = modeldock::import::onnx::read(&dir.path().join("model.onnx")).unwrap_or_else(|e| panic!("{e}"));
        let input = candle_core::safetensors::load(dir.path().join("input.safetensors"), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{e}"))
            .remove("images")
            .unwrap_or_else(|| panic!("no input 'images'"));
        let run = |k: Kernels| {
            k.apply();
            let g = model.build().unwrap_or_else(|e| panic!("{name}: {e}"));
            g.run(&input).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let (fast, generic) = (run(Kernels::Fast), run(Kernels::Generic));
        Kernels::Fast.apply();
        assert_eq!(fast.len(), generic.len());
        for ((n, a), (_, b)) in fast.iter().zip(&generic) {
            let d = rel_diff(a, b);
            println!("{name} {n}: raw output relative difference {d:.2e}");
            if d > 1e-4 {
                problems.push(format!("{name} {n}: raw outputs differ by {d:.2e} (relative)"));
            }
        }
    }
    problems
}

/// MobileSAM (random weights, seed 7) on the SAM fixture: the image
/// embedding (our TinyViT: channel-first blocks and the attention kernel on
/// the fast path, candle's ops on tokens on the generic one) and one
/// prompt's low-resolution logits.
#[cfg(feature = "sam")]
fn mobile_sam_matches() -> Vec<String> {
    use modeldock::models::sam::{Sam, Variant};
    use modeldock::vision::prompt::{Prompt, PromptPoint};
    let tensors = modeldock::models::sam_random::sam_weights(Variant::VitT, 7).unwrap_or_else(|e| panic!("{e}"));
    let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &Device::Cpu);
    let sam = Sam::build(vb, Variant::VitT, "object".into()).unwrap_or_else(|e| panic!("{e}"));
    let img = image("sam/shapes-1024.png");
    let prompt = Prompt::new(
        &[PromptPoint {
            x: 300.0,
            y: 320.0,
            positive: true,
        }],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run = |k: Kernels| {
        k.apply();
        let x = sam.preprocess(&img).unwrap_or_else(|e| panic!("{e}")).0;
        let e = sam.forward_raw(&x).unwrap_or_else(|e| panic!("{e}"));
        let emb = modeldock::models::sam::Embedding {
            tensor: e.clone(),
            resized: (1024, 1024),
        };
        let (logits, _) = sam.decode(&emb, &prompt, (1.0, 1.0)).unwrap_or_else(|e| panic!("{e}"));
        (e, Tensor::new(logits, &Device::Cpu).unwrap_or_else(|e| panic!("{e}")))
    };
    let (fast, generic) = (run(Kernels::Fast), run(Kernels::Generic));
    Kernels::Fast.apply();
    let mut problems = Vec::new();
    for (what, a, b) in [("embedding", &fast.0, &generic.0), ("logits", &fast.1, &generic.1)] {
        let d = rel_diff(a, b);
        println!("mobile-sam {what}: relative difference {d:.2e}");
        if d > 1e-4 {
            problems.push(format!(
                "mobile-sam {what}: fast and generic differ by {d:.2e} (relative)"
            ));
        }
    }
    problems
}
