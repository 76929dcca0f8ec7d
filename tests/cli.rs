//! The `modeldock` binary, driven as a user would.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixture;
use serde_json::Value;

fn modeldock() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modeldock"));
    c.env_remove("MODELDOCK_MODELS")
        .env("MODELDOCK_HOST", common::no_server())
        .env("XDG_CONFIG_HOME", std::env::temp_dir().join("modeldock-no-config"));
    c
}

fn lines(b: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(b)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn infer_from_any_directory_uses_the_embedded_face_detector() {
    let cwd = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = modeldock()
        .current_dir(cwd.path())
        .args(["infer", "--model", "face-detector", "--json"])
        .arg(fixture("images/astronaut.png"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = lines(&out.stdout);
    assert_eq!(v.len(), 1);
    let dets = v[0]["detections"].as_array().cloned().unwrap_or_default();
    assert_eq!(dets.len(), 1);
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny_face_detector/astronaut.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    for k in 0..4 {
        let a = dets[0]["bbox"][k].as_f64().unwrap_or(0.0);
        let b = exp["detections"][0]["bbox"][k].as_f64().unwrap_or(1e9);
        assert!((a - b).abs() < 0.05, "bbox[{k}] {a} vs {b}");
    }
    for key in ["queue", "decode", "preprocess", "forward", "postprocess", "total"] {
        assert!(v[0]["timings_ms"][key].is_number(), "timings_ms.{key}");
    }
    assert_eq!(v[0]["model"], "face-detector");
}

#[test]
fn face_landmarks_from_the_cli_gives_68_points_per_face() {
    let out = modeldock()
        .args(["infer", "--model", "face-landmarks", "--json"])
        .arg(fixture("images/astronaut.png"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = lines(&out.stdout);
    let kp = v[0]["detections"][0]["keypoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(kp.len(), 68);
}

#[test]
fn mtcnn_from_the_cli_gives_five_points() {
    let out = modeldock()
        .args(["infer", "--model", "mtcnn", "--json"])
        .arg(fixture("images/astronaut.png"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = lines(&out.stdout);
    let dets = v[0]["detections"].as_array().cloned().unwrap_or_default();
    assert_eq!(dets.len(), 1);
    assert_eq!(dets[0]["keypoints"].as_array().map(|a| a.len()), Some(5));
}

#[test]
fn a_bad_image_fails_alone_with_one_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnope").unwrap_or_else(|e| panic!("{e}"));
    let out = modeldock()
        .args(["infer", "--model", "face-detector", "--json"])
        .arg(&bad)
        .arg(fixture("images/camera.png"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let err_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(err_lines.len(), 1, "{err}");
    assert!(err_lines[0].contains("broken.png"), "{err}");
    // One JSON line per input, in input order, the failure included.
    let v = lines(&out.stdout);
    assert_eq!(v.len(), 2, "one line per input");
    assert!(v[0]["image"].as_str().unwrap_or("").ends_with("broken.png"));
    assert!(v[0]["error"].as_str().unwrap_or("").contains("broken.png"), "{}", v[0]);
    assert!(v[1]["image"].as_str().unwrap_or("").ends_with("camera.png"));
    assert!(v[1]["detections"].is_array());
}

/// A GPU this build or machine cannot open is one line naming what is
/// missing (this CI build has no CUDA), and `--kernels` takes only its two
/// names.
#[test]
fn a_device_that_cannot_open_and_a_bad_kernels_name_are_one_line_errors() {
    let out = modeldock()
        .args(["infer", "--local", "--device", "cuda", "--model", "face-detector"])
        .arg(fixture("images/camera.png"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(0) {
        // A CUDA build on a machine with a GPU: it ran there.
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("cuda"), "{err}");
    let out = modeldock()
        .args([
            "infer",
            "--local",
            "--kernels",
            "gpu",
            "--model",
            "face-detector",
            "x.png",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernels 'gpu'"));
    let out = modeldock()
        .args([
            "infer",
            "--local",
            "--kernels",
            "generic",
            "--json",
            "--model",
            "face-detector",
        ])
        .arg(fixture("images/camera.png"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(&out.stdout)[0]["detections"].as_array().map(Vec::len), Some(1));
}

#[test]
fn unknown_model_and_bad_flags_are_clear_errors() {
    let out = modeldock()
        .args(["infer", "--model", "nope", "x.png"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model 'nope'"));
    let out = modeldock()
        .args(["models", "--budget", "lots"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("budget 'lots'"));
}

#[test]
fn models_lists_the_built_in_and_extra_folders() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    common::toy(dir.path(), "extra-toy", &[]);
    let out = modeldock()
        .args(["models", "--json", "--models-dir"])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let ids: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    for id in [
        "face-detector",
        "face-landmarks",
        "face-landmarks-tiny",
        "mtcnn",
        "extra-toy",
    ] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    assert!(v
        .as_array()
        .map(|a| a.iter().all(|m| m["state"] == "Available"))
        .unwrap_or(false));
    // The environment variable works too.
    let out = modeldock()
        .args(["models", "--json"])
        .env("MODELDOCK_MODELS", dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("extra-toy"));
}

#[test]
fn bench_reports_one_load_for_32_concurrent_requests() {
    let out = modeldock()
        .args(["bench", "--json", "--runs", "5"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    for k in [
        "raw_read_ms",
        "cold_load_ms",
        "load_ratio",
        "load_ratio_warm",
        "raw_read_fresh_memory_ms",
        "load_ratio_warm_fresh_memory",
        "warm_p50_ms",
        "warm_p95_ms",
        "cache_hit_p50_ms",
        "rss_idle_mb",
        "rss_loaded_mb",
        "rss_after_unload_mb",
    ] {
        assert!(v[k].is_number(), "{k} in {v}");
    }
    assert_eq!(v["loads_under_32_concurrent"], 1);
    assert_eq!(v["answers_under_32_concurrent"], 32);
    assert!(v["cache_hits"].as_u64().unwrap_or(0) >= 4, "{v}");
}

/// A tfjs manifest with every supported encoding, written by the test.
#[test]
fn import_tfjs_converts_quantised_weights_and_layouts() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // conv0/filters [kh=1, kw=2, in=1, out=3] uint8 with scale 0.5, min -1:
    // HWIO value at (0, w, 0, o) = (w*3 + o) * 0.5 - 1.
    let mut bin: Vec<u8> = (0u8..6).collect();
    // conv0/bias [3] float16
    for v in [1.5f32, -2.0, 0.25] {
        bin.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
    }
    // fc/weights [2, 3] float32: in=2, out=3, value = i*10 + o
    for i in 0..2 {
        for o in 0..3 {
            bin.extend_from_slice(&((i * 10 + o) as f32).to_le_bytes());
        }
    }
    // steps [2] int32
    for v in [7i32, -9] {
        bin.extend_from_slice(&v.to_le_bytes());
    }
    // dw/depthwise_filter [3,3,2,1] uint16 scale 1 min 0 → value = index
    for v in 0u16..18 {
        bin.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(d.join("m.bin"), &bin).unwrap_or_else(|e| panic!("{e}"));
    let manifest = r#"[{"paths":["m.bin"],"weights":[
      {"name":"conv0/filters","shape":[1,2,1,3],"dtype":"float32","quantization":{"dtype":"uint8","scale":0.5,"min":-1}},
      {"name":"conv0/bias","shape":[3],"dtype":"float32","quantization":{"dtype":"float16"}},
      {"name":"fc/weights","shape":[2,3],"dtype":"float32"},
      {"name":"steps","shape":[2],"dtype":"int32"},
      {"name":"dw/depthwise_filter","shape":[3,3,2,1],"dtype":"float32","quantization":{"dtype":"uint16","scale":1,"min":0}}
    ]}]"#;
    std::fs::write(d.join("m-weights_manifest.json"), manifest).unwrap_or_else(|e| panic!("{e}"));
    let out = modeldock()
        .args(["import", "tfjs"])
        .arg(d.join("m-weights_manifest.json"))
        .arg("--out")
        .arg(d.join("out"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = candle_core::safetensors::load(d.join("out/m.safetensors"), &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"));
    let conv = &t["conv0.weight"];
    assert_eq!(conv.dims(), &[3, 1, 1, 2], "OIHW");
    let v: Vec<f32> = conv.flatten_all().and_then(|x| x.to_vec1()).unwrap_or_default();
    // OIHW (o, 0, 0, w) = (w*3 + o) * 0.5 - 1
    for o in 0..3 {
        for w in 0..2 {
            assert_eq!(v[o * 2 + w], (w * 3 + o) as f32 * 0.5 - 1.0);
        }
    }
    let b: Vec<f32> = t["conv0.bias"].to_vec1().unwrap_or_default();
    assert_eq!(b, vec![1.5, -2.0, 0.25]);
    let fc = &t["fc.weight"];
    assert_eq!(fc.dims(), &[3, 2], "dense [in,out] becomes [out,in]");
    let f: Vec<Vec<f32>> = fc.to_vec2().unwrap_or_default();
    assert_eq!(f[2][1], 12.0);
    let s: Vec<i64> = t["steps"].to_vec1().unwrap_or_default();
    assert_eq!(s, vec![7, -9]);
    let dw = &t["dw.depthwise"];
    assert_eq!(dw.dims(), &[2, 1, 3, 3]);
    let v: Vec<f32> = dw.flatten_all().and_then(|x| x.to_vec1()).unwrap_or_default();
    // [C, 1, kh, kw] at (c=1, 0, kh=2, kw=1) = HWC index (2*3 + 1)*2 + 1 = 15
    assert_eq!(v[9 + 2 * 3 + 1], 15.0);
    assert!(d.join("out/model.toml").is_file());
    // A shard that is too short is a clear error.
    std::fs::write(d.join("m.bin"), &bin[..10]).unwrap_or_else(|e| panic!("{e}"));
    let out = modeldock()
        .args(["import", "tfjs"])
        .arg(d.join("m-weights_manifest.json"))
        .arg("--out")
        .arg(d.join("out2"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends early"));
}

#[test]
fn live_with_the_synthetic_source_reports_its_figures() {
    let out = modeldock()
        .args([
            "live",
            "--source",
            "synthetic",
            "--model",
            "face-detector",
            "--frames",
            "20",
            "--fps",
            "20",
            "--json",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    for k in [
        "frames_captured",
        "frames_inferred",
        "frames_dropped",
        "camera_fps",
        "inference_fps",
        "e2e_latency_p50_ms",
        "e2e_latency_p95_ms",
        "inference_p50_ms",
        "max_queue_len",
    ] {
        assert!(v[k].is_number(), "{k} in {v}");
    }
    assert_eq!(v["frames_captured"], 20);
    assert!(v["max_queue_len"].as_u64().unwrap_or(9) <= 1);
    assert_eq!(
        v["frames_inferred"].as_u64().unwrap_or(0) + v["frames_dropped"].as_u64().unwrap_or(0),
        20,
        "every frame inferred or dropped: {v}"
    );
    // No camera here: a clear one-line error.
    let out = modeldock()
        .args(["live", "--source", "webcam:3", "--frames", "5"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("webcam 3"), "{err}");
}

#[test]
fn every_command_has_help_and_typos_get_suggestions() {
    for cmd in [
        "infer",
        "models",
        "serve",
        "pull",
        "ps",
        "load",
        "bench",
        "verify",
        "live",
        "gpu",
        "completions",
    ] {
        let out = modeldock()
            .args([cmd, "--help"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.status.code(), Some(0), "{cmd} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: modeldock"),
            "{cmd}"
        );
    }
    let out = modeldock()
        .args(["infer", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "MODELDOCK_BUDGET",
        "MODELDOCK_KEEP_ALIVE",
        "MODELDOCK_MAX_RESIDENT",
        "MODELDOCK_DEVICE",
        "MODELDOCK_PRELOAD",
        "MODELDOCK_MODELS",
    ] {
        assert!(help.contains(env), "infer --help lacks {env}");
    }
    let out = modeldock().arg("--version").output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = modeldock().arg("infre").output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'infer'"), "a suggestion");
    let out = modeldock()
        .args(["infer", "--model", "face-detector", "--conf", "3", "x.png"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2), "a value out of range is a usage error");
    let out = modeldock()
        .args(["models", "--keep-alive", "soon"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let out = modeldock()
        .args(["models"])
        .env("MODELDOCK_BUDGET", "lots")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "the environment fallback is parsed like the flag"
    );
}

#[test]
fn bad_scheduler_flags_are_usage_errors_naming_the_flag() {
    for (args, env, flag) in [
        (&["models", "--lanes", "0"][..], None, "--lanes"),
        (&["models", "--queue-timeout", "0ms"][..], None, "--queue-timeout"),
        (&["models", "--queue-timeout", "soon"][..], None, "--queue-timeout"),
        (&["models", "--bulk-nice", "25"][..], None, "--bulk-nice"),
        (&["models", "--interactive-share", "0"][..], None, "--interactive-share"),
        (
            &["models", "--interactive-share", "half"][..],
            None,
            "--interactive-share",
        ),
        (
            &["models"][..],
            Some(("MODELDOCK_INTERACTIVE_SHARE", "2")),
            "--interactive-share",
        ),
        (&["models"][..], Some(("MODELDOCK_LANES", "many")), "--lanes"),
        (
            &["serve", "--max-queue-per-client", "0"][..],
            None,
            "--max-queue-per-client",
        ),
    ] {
        let mut c = modeldock();
        c.args(args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(flag), "{args:?} {env:?}: the error names {flag}: {err}");
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef modeldock"),
        ("fish", "complete -c modeldock"),
    ] {
        let out = modeldock()
            .args(["completions", shell])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker) && text.contains("infer"), "{shell}");
    }
}

#[test]
fn log_directives_with_targets_reach_the_engine_log() {
    let run = |filter: &str| {
        let out = modeldock()
            .args(["infer", "--model", "face-detector", "--json"])
            .arg(fixture("images/camera.png"))
            .env("MODELDOCK_LOG", filter)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run("modeldock=debug,wgpu=warn").contains("load started"));
    assert!(!run("modeldock=warn").contains("load started"));
    assert!(!run("off").contains("load started"));
}

#[test]
fn infer_takes_folders_and_globs_and_saves_annotated_copies() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap_or_else(|e| panic!("{e}"));
    for n in ["astronaut.png", "camera.png"] {
        std::fs::copy(fixture(&format!("images/{n}")), imgs.join(n)).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap_or_else(|e| panic!("{e}"));
    let out_dir = dir.path().join("out");
    let pattern = format!("{}/astro*.png", imgs.display());
    let out = modeldock()
        .args(["infer", "--model", "face-detector", "--json", "--save"])
        .arg(&out_dir)
        .arg(&imgs)
        .arg(&pattern)
        .arg(format!("{}/nothing*.png", imgs.display()))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let v = lines(&out.stdout);
    let names: Vec<String> = v
        .iter()
        .map(|l| {
            Path::new(l["image"].as_str().unwrap_or(""))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        names,
        ["astronaut.png", "camera.png", "astronaut.png", "nothing*.png"],
        "input order"
    );
    assert!(v[3]["error"].as_str().unwrap_or("").contains("no file matches"));
    assert_eq!(out.status.code(), Some(1), "an input matched nothing");
    // Annotated copies differ from the originals where the boxes are drawn.
    let saved = image::open(out_dir.join("astronaut.png"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_rgb8();
    let orig = image::open(imgs.join("astronaut.png"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_rgb8();
    assert_eq!(saved.dimensions(), orig.dimensions());
    let changed = saved.pixels().zip(orig.pixels()).filter(|(a, b)| a != b).count();
    assert!(changed > 200, "boxes drawn ({changed} pixels changed)");
    let b = &v[0]["detections"][0]["bbox"];
    let (x0, y0) = (b[0].as_f64().unwrap_or(0.0) as u32, b[1].as_f64().unwrap_or(0.0) as u32);
    assert_ne!(
        saved.get_pixel(x0 + 5, y0),
        orig.get_pixel(x0 + 5, y0),
        "the box's top edge"
    );
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("astronaut.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_default();
    assert_eq!(json["detections"], v[0]["detections"]);
    assert!(out_dir.join("camera.png").exists() && out_dir.join("astronaut_2.png").exists());
}

#[test]
fn models_without_local_weights_say_so() {
    // An empty hub cache: the YOLOv8 manifests list as "no weights", and the
    // embedded graph models (objects, pose, hands) as available.
    let hf = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = modeldock()
        .arg("models")
        .env("HF_HOME", hf.path())
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |id: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no {id} row in:\n{text}"))
            .to_string()
    };
    assert!(row("yolov8n").contains("no weights"), "{text}");
    for id in ["objects", "pose", "hands", "selfie", "face-detector"] {
        assert!(row(id).contains("Available"), "{text}");
    }
}
