//! YOLOv8 against the ultralytics random-weight fixture (tests/fixtures/yolov8n-random).

mod common;

use std::path::PathBuf;

use candle_core::{Device, IndexOp, Tensor};
use common::{fixture, no_server};
use modeldock::cli::verify_cmd::raw_forward;

fn load(rel: &str, name: &str) -> Tensor {
    let mut t = candle_core::safetensors::load(fixture(rel), &Device::Cpu).unwrap_or_else(|e| panic!("{rel}: {e}"));
    t.remove(name).unwrap_or_else(|| panic!("{rel}: {name}"))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar())
        .unwrap_or(f32::INFINITY)
}

#[test]
fn yolov8n_head_output_matches_ultralytics() {
    let input = load("yolov8n-random/input.safetensors", "input");
    let expected = load("yolov8n-random/output.safetensors", "output");
    let w: PathBuf = fixture("yolov8n-random/weights.safetensors");
    let out = raw_forward("yolov8", "n", "detect", &w, &input).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.dims(), &[1, 84, 8400]);
    let boxes = max_abs(
        &out.i((.., 0..4)).unwrap_or_else(|e| panic!("{e}")),
        &expected.i((.., 0..4)).unwrap_or_else(|e| panic!("{e}")),
    );
    let scores = max_abs(
        &out.i((.., 4..)).unwrap_or_else(|e| panic!("{e}")),
        &expected.i((.., 4..)).unwrap_or_else(|e| panic!("{e}")),
    );
    println!("box rows max abs diff {boxes:.3e} px, score rows {scores:.3e}");
    assert!(scores <= 1e-4, "scores differ by {scores}");
    assert!(boxes <= 2e-2, "boxes differ by {boxes} px");
}

fn verify(expected: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .env("MODELDOCK_HOST", no_server())
        .args([
            "verify",
            "--arch",
            "yolov8",
            "--variant",
            "n",
            "--task",
            "detect",
            "--json",
            "--weights",
        ])
        .arg(fixture("yolov8n-random/weights.safetensors"))
        .arg("--input")
        .arg(fixture("yolov8n-random/input.safetensors"))
        .arg("--expected")
        .arg(expected)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn verify_passes_on_the_fixture_and_fails_on_a_perturbed_one() {
    let out = verify(&fixture("yolov8n-random/output.safetensors"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["pass"], true);
    assert!(v["max_abs_diff"].as_f64().unwrap_or(1.0) < 2e-2);
    // One score off by 0.01 must fail.
    let mut expected = load("yolov8n-random/output.safetensors", "output")
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap_or_default();
    expected[10 * 8400 + 5] += 0.01;
    let t = Tensor::from_vec(expected, (1, 84, 8400), &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("bad.safetensors");
    t.save_safetensors("output", &p).unwrap_or_else(|e| panic!("{e}"));
    let out = verify(&p);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn candle_hub_names_load_through_the_name_map() {
    let w = candle_core::safetensors::load(fixture("yolov8n-random/weights.safetensors"), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"));
    let renamed: std::collections::HashMap<String, Tensor> = w
        .into_iter()
        .map(|(k, v)| (modeldock::models::yolov8::candle_hub_name(&k), v))
        .collect();
    assert!(
        renamed.contains_key("net.b2.0.bottleneck.0.cv1.conv.weight"),
        "{:?}",
        renamed.keys().take(3).collect::<Vec<_>>()
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("candle.safetensors");
    candle_core::safetensors::save(&renamed, &p).unwrap_or_else(|e| panic!("{e}"));
    let input = load("yolov8n-random/input.safetensors", "input");
    let a = raw_forward(
        "yolov8",
        "n",
        "detect",
        &fixture("yolov8n-random/weights.safetensors"),
        &input,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let b = raw_forward("yolov8", "n", "detect", &p, &input).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(max_abs(&a, &b), 0.0);
}

#[test]
fn every_variant_and_task_builds_with_the_right_output_shape() {
    use modeldock::catalog::weights_source::WeightsSource;
    use modeldock::models::weights::var_builder;
    use modeldock::models::yolov8::{HeadKind, YoloV8};
    let x = Tensor::zeros((1, 3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    for v in ["n", "s", "m", "l", "x"] {
        for (task, rows) in [(HeadKind::Detect, 84), (HeadKind::Pose, 56)] {
            let vb = var_builder(&WeightsSource::Random, 0, &Device::Cpu, std::sync::Arc::new(|_, _| {}))
                .unwrap_or_else(|e| panic!("{e}"));
            let nc = if task == HeadKind::Pose { 1 } else { 80 };
            let y = YoloV8::build(vb, v, task, nc).unwrap_or_else(|e| panic!("{v}: {e}"));
            let out = y.forward(&x).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(out.dims(), &[1, rows, 64 + 16 + 4], "{v} {task:?}");
        }
    }
}

#[test]
fn hub_weights_come_from_the_cache_layout_or_fail_clearly_offline() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_modeldock"))
            .env("MODELDOCK_HOST", no_server())
            .args(["infer", "--model", "yolov8n", "--json"])
            .arg(fixture("images/astronaut.png"))
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("HF_HUB_CACHE")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = run();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lmz/candle-yolo-v8/yolov8n.safetensors@main") && err.contains("hub cache"),
        "{err}"
    );
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error line: {err}"
    );
    // Build the cache layout: refs/main → commit, snapshots/<commit>/file.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let root = home.path().join("hub/models--lmz--candle-yolo-v8");
    std::fs::create_dir_all(root.join("refs")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(root.join("snapshots").join(commit)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("refs/main"), commit).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        fixture("yolov8n-random/weights.safetensors"),
        root.join("snapshots").join(commit).join("yolov8n.safetensors"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["model"], "yolov8n");
    assert!(v["detections"].is_array());
}
