//! The TF.js graph models (objects = NanoDet, pose = MoveNet): raw-network
//! parity through `modeldock verify`, decoded parity through `modeldock
//! infer`, and the graph importer's dequantisation, against the reference
//! fixtures in `tests/fixtures/human-models/` (tfjs 4.22 cpu outputs; upstream
//! NanoDet's own decoding).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn modeldock() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modeldock"));
    c.env_remove("MODELDOCK_MODELS")
        .env("MODELDOCK_HOST", common::no_server())
        .env("XDG_CONFIG_HOME", std::env::temp_dir().join("modeldock-no-config"));
    c
}

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn hm(rel: &str) -> PathBuf {
    common::fixture(&format!("human-models/{rel}"))
}

fn json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `modeldock verify` on a fixture holding the input and the outputs; returns (exit code, stdout).
fn verify(arch: &str, weights: &Path, fixture: &Path, tol: &str) -> (i32, String) {
    let out = modeldock()
        .args(["verify", "--arch", arch, "--tol", tol, "--weights"])
        .arg(weights)
        .arg("--input")
        .arg(fixture)
        .arg("--expected")
        .arg(fixture)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// One `infer --json` line per image.
fn infer(model: &str, extra: &[&str], images: &[PathBuf]) -> Vec<Value> {
    let out = modeldock()
        .args(["infer", "--local", "--json", "--model", model])
        .args(extra)
        .args(images)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "infer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn iou(a: &[f64], b: &[f64]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f64]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter).max(1e-9)
}

fn bbox(d: &Value) -> Vec<f64> {
    d["bbox"]
        .as_array()
        .map(|a| a.iter().map(f).collect())
        .unwrap_or_default()
}

#[test]
fn nanodet_raw_outputs_match_tfjs() {
    let w = root("models/objects/nanodet.safetensors");
    let (code, out) = verify("nanodet", &w, &hm("nanodet-upstream/chelsea.safetensors"), "1e-3");
    assert_eq!(code, 0, "{out}");
    // All six outputs were compared.
    assert_eq!(out.matches("PASS").count(), 6, "{out}");
}

#[test]
fn movenet_raw_output_matches_tfjs() {
    let w = root("models/pose/movenet-lightning.safetensors");
    let (code, out) = verify("movenet", &w, &hm("movenet-lightning/astronaut.safetensors"), "1e-3");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Identity [1, 1, 17, 3]"), "{out}");
}

#[test]
fn verify_fails_when_an_output_differs() {
    // The fixture with one output value moved by 0.01: verify must exit 1.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let src = hm("movenet-lightning/astronaut.safetensors");
    let mut t = candle_core::safetensors::load(&src, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let id = t.remove("Identity").unwrap_or_else(|| panic!("no Identity"));
    let bumped = (id + 0.01).unwrap_or_else(|e| panic!("{e}"));
    t.insert("Identity".into(), bumped);
    let p = dir.path().join("bumped.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap_or_else(|e| panic!("{e}"));
    let (code, out) = verify(
        "movenet",
        &root("models/pose/movenet-lightning.safetensors"),
        &p,
        "1e-3",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL"), "{out}");
}

#[test]
fn objects_match_upstream_nanodet_detection_for_detection() {
    // --conf 0.05 is upstream's candidate threshold: the whole list (≤ 100), in order.
    let stems = ["chelsea", "astronaut", "motorcycle_left"];
    let images: Vec<PathBuf> = stems.iter().map(|s| hm(&format!("images/{s}.png"))).collect();
    let got = infer("objects", &["--conf", "0.05"], &images);
    assert_eq!(got.len(), stems.len());
    for (stem, line) in stems.iter().zip(&got) {
        let exp = json(&hm(&format!("nanodet-upstream/{stem}.json")));
        let exp = exp["detections"].as_array().cloned().unwrap_or_default();
        let dets = line["detections"].as_array().cloned().unwrap_or_default();
        assert!(!exp.is_empty());
        assert_eq!(dets.len(), exp.len(), "{stem}: detection count");
        for (i, (d, e)) in dets.iter().zip(&exp).enumerate() {
            assert_eq!(d["label"], e["label"], "{stem} #{i}");
            assert_eq!(d["class_id"], e["class_id"], "{stem} #{i}");
            assert!(
                (f(&d["score"]) - f(&e["score"])).abs() <= 1e-3,
                "{stem} #{i}: {d} vs {e}"
            );
            let (a, b) = (bbox(d), bbox(e));
            assert!(iou(&a, &b) >= 0.95, "{stem} #{i}: {a:?} vs {b:?}");
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(worst <= 0.5, "{stem} #{i}: boxes differ by {worst} px");
        }
    }
}

#[test]
fn objects_default_threshold_gives_the_shown_labels() {
    // Without --conf: the manifest's default, upstream's display threshold (0.35).
    let stems = ["chelsea", "motorcycle_left"];
    let images: Vec<PathBuf> = stems.iter().map(|s| hm(&format!("images/{s}.png"))).collect();
    let out = modeldock()
        .args(["infer", "--local", "--json", "--model", "objects"])
        .args(&images)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 2);
    for (stem, line) in stems.iter().zip(&lines) {
        let exp = json(&hm(&format!("nanodet-upstream/{stem}.json")));
        let dets = exp["detections"].as_array().cloned().unwrap_or_default();
        let shown: Vec<&Value> = exp["shown_indices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| dets.get(i.as_u64().unwrap_or(0) as usize))
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<&Value> = shown.iter().map(|d| &d["label"]).collect();
        let got: Vec<&Value> = line["detections"]
            .as_array()
            .map(|a| a.iter().map(|d| &d["label"]).collect())
            .unwrap_or_default();
        assert!(!want.is_empty());
        assert_eq!(got, want, "{stem}");
    }
}

#[test]
fn pose_keypoints_match_movenet() {
    let stems = ["astronaut", "chelsea"];
    let images: Vec<PathBuf> = stems.iter().map(|s| hm(&format!("images/{s}.png"))).collect();
    let got = infer("pose", &[], &images);
    for (stem, line) in stems.iter().zip(&got) {
        let exp = json(&hm(&format!("movenet-lightning/{stem}.json")));
        let exp = exp["keypoints"].as_array().cloned().unwrap_or_default();
        let dets = line["detections"].as_array().cloned().unwrap_or_default();
        assert_eq!(dets.len(), 1, "{stem}: one person");
        assert_eq!(dets[0]["label"], "person");
        let kps = dets[0]["keypoints"].as_array().cloned().unwrap_or_default();
        assert_eq!(kps.len(), 17);
        assert_eq!(exp.len(), 17);
        for (i, (k, e)) in kps.iter().zip(&exp).enumerate() {
            for j in 0..2 {
                let d = (f(&k[j]) - f(&e[j])).abs();
                assert!(d <= 0.5, "{stem} keypoint {i}: {k} vs {e}");
            }
            assert!(
                (f(&k[2]) - f(&e[2])).abs() <= 1e-3,
                "{stem} keypoint {i} score: {k} vs {e}"
            );
        }
    }
}

/// A small tfjs graph model written by hand: y = conv1x1(x, W) + b with W
/// stored as float16, b as uint8-quantised and a uint16-quantised constant.
fn write_tiny_graph(dir: &Path, w16: &[u16], b8: &[u8], q16: &[u16]) -> PathBuf {
    let model = serde_json::json!({
        "format": "graph-model",
        "modelTopology": {"node": [
            {"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"},
                "shape": {"shape": {"dim": [{"size": "1"}, {"size": "2"}, {"size": "2"}, {"size": "2"}]}}}},
            {"name": "w", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
            {"name": "b", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
            {"name": "q", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
            {"name": "conv", "op": "_FusedConv2D", "input": ["x", "w", "b"], "attr": {
                "strides": {"list": {"i": ["1", "1", "1", "1"]}},
                "padding": {"s": "VkFMSUQ="},
                "fused_ops": {"list": {"s": ["Qmlhc0FkZA=="]}},
                "num_args": {"i": "1"}}},
            {"name": "y", "op": "Mul", "input": ["conv", "q"]},
            {"name": "Identity", "op": "Identity", "input": ["y"]}
        ]},
        "signature": {"outputs": {"Identity:0": {"name": "Identity:0"}}},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": [
            {"name": "w", "shape": [1, 1, 2, 2], "dtype": "float32", "quantization": {"dtype": "float16", "original_dtype": "float32"}},
            {"name": "b", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0, "original_dtype": "float32"}},
            {"name": "q", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 0.25, "min": 0.5, "original_dtype": "float32"}}
        ]}]
    });
    let mut bin = Vec::new();
    for v in w16 {
        bin.extend_from_slice(&v.to_le_bytes());
    }
    bin.extend_from_slice(b8);
    for v in q16 {
        bin.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(dir.join("group1-shard1of1.bin"), bin).unwrap_or_else(|e| panic!("{e}"));
    let p = dir.join("model.json");
    std::fs::write(&p, model.to_string()).unwrap_or_else(|e| panic!("{e}"));
    p
}

#[test]
fn graph_import_keeps_f16_and_dequantises_like_tfjs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Halves chosen to include a subnormal, a negative and a value f32 can't round-trip through decimal.
    let w16: [u16; 4] = [0x3c00, 0xc155, 0x0001, 0x3555];
    let b8: [u8; 2] = [3, 250];
    let q16: [u16; 2] = [1, 60000];
    let model = write_tiny_graph(dir.path(), &w16, &b8, &q16);
    let out = dir.path().join("out");
    let st = modeldock()
        .args(["import", "tfjs"])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let path = out.join("model.safetensors");
    let t = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let w = &t["w"];
    assert_eq!(w.dtype(), candle_core::DType::F16, "float16 stays float16 on disk");
    let got: Vec<u16> = w
        .flatten_all()
        .and_then(|x| x.to_vec1::<half::f16>())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|h| h.to_bits())
        .collect();
    assert_eq!(got, w16, "the halves are stored bit for bit");
    // tfjs: Float32Array.from(q, v => v * scale + min), computed in f64 then stored as f32.
    let b: Vec<f32> = t["b"].to_vec1().unwrap_or_else(|e| panic!("{e}"));
    let want_b: Vec<f32> = b8.iter().map(|&v| (v as f64 * 0.5 - 1.0) as f32).collect();
    assert_eq!(b, want_b);
    let q: Vec<f32> = t["q"].to_vec1().unwrap_or_else(|e| panic!("{e}"));
    let want_q: Vec<f32> = q16.iter().map(|&v| (v as f64 * 0.25 + 0.5) as f32).collect();
    assert_eq!(q, want_q);
    let toml = std::fs::read_to_string(out.join("model.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(toml.contains("dtype = \"f16\""), "{toml}");
}

#[test]
fn graph_import_refuses_an_unknown_op_at_load() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = write_tiny_graph(dir.path(), &[0x3c00; 4], &[1, 2], &[1, 2]);
    let text = std::fs::read_to_string(&model)
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("\"op\":\"Mul\"", "\"op\":\"Erf\"");
    std::fs::write(&model, text).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let st = modeldock()
        .args(["import", "tfjs"])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let fixture = dir.path().join("io.safetensors");
    let x = candle_core::Tensor::zeros((1, 2, 2, 2), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"));
    let map = std::collections::HashMap::from([("input".to_string(), x.clone()), ("Identity".to_string(), x)]);
    candle_core::safetensors::save(&map, &fixture).unwrap_or_else(|e| panic!("{e}"));
    let (code, msg) = verify("nanodet", &out.join("model.safetensors"), &fixture, "1e-3");
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("node 'y' (Erf)") && msg.contains("not supported"), "{msg}");
}

#[test]
fn palm_and_landmark_raw_outputs_match_tfjs() {
    // Both networks live in the hands model's file: the palm detector at the
    // root, the landmark network under `landmark.`.
    let w = root("models/hands/handdetect.safetensors");
    let (code, out) = verify("palm_detector", &w, &hm("hands/sample2.handdetect.safetensors"), "1e-3");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Identity [1, 2944, 19]"), "{out}");
    let (code, out) = verify(
        "hand_landmarks",
        &w,
        &hm("hands/sample2.handlandmark.safetensors"),
        "1e-3",
    );
    assert_eq!(code, 0, "{out}");
    // Every output by name: landmarks, presence, handedness, world landmarks (3 rows each).
    for name in [
        "Identity [3, 63]",
        "Identity_1 [3, 1]",
        "Identity_2 [3, 1]",
        "Identity_3 [3, 63]",
    ] {
        assert!(out.contains(name), "{name} missing: {out}");
    }
}

#[test]
fn hands_cli_gives_labelled_hands_with_21_points() {
    let got = infer("hands", &[], &[hm("images/sample2.png"), hm("images/chelsea.png")]);
    let exp = json(&hm("hands/sample2.json"));
    let want = exp["hands"].as_array().cloned().unwrap_or_default();
    let dets = got[0]["detections"].as_array().cloned().unwrap_or_default();
    assert_eq!(dets.len(), want.len(), "sample2: {}", got[0]);
    for (d, w) in dets.iter().zip(&want) {
        let label = if f(&w["handedness"]) > 0.5 { "right" } else { "left" };
        assert_eq!(d["label"], label);
        assert!((f(&d["score"]) - f(&w["presence"])).abs() <= 1e-3);
        let k = d["keypoints"].as_array().cloned().unwrap_or_default();
        let l = w["landmarks"].as_array().cloned().unwrap_or_default();
        assert_eq!(k.len(), 21);
        for (a, b) in k.iter().zip(&l) {
            for j in 0..3 {
                assert!((f(&a[j]) - f(&b[j])).abs() <= 0.5, "{a} vs {b}");
            }
        }
    }
    assert_eq!(
        got[1]["detections"].as_array().map(|a| a.len()),
        Some(0),
        "chelsea has no hands"
    );
}

#[test]
fn f16_weights_are_predicted_at_their_f32_size_on_the_cpu() {
    use modeldock::catalog::registry::Registry;
    use modeldock::engine::Engine;
    let engine = Engine::start(Registry::discover(&[]), common::config(), None);
    let disk = modeldock::catalog::safetensors_header::read_header(&root("models/objects/nanodet.safetensors"))
        .unwrap_or_else(|e| panic!("{e}"))
        .data_bytes;
    let st = engine.status("objects").unwrap_or_else(|| panic!("no objects model"));
    engine.shutdown();
    // The weights are f16 on disk and f32 in memory on the CPU.
    assert_eq!(st.predicted_bytes, 2 * disk);
}
