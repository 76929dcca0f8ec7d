//! Inputs that once took the engine down: decoder panics, huge aspect ratios,
//! runaway manifest options, tfjs manifests pointing outside their folder,
//! non-finite weights. Runaway cases run in a child process with a capped
//! address space, so a regression fails the test instead of the machine.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use modeldock::catalog::registry::Registry;
use serde_json::Value;

fn write(p: &Path, b: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(p, b).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn decoder_panics_and_a_64000_pixel_wide_image_cost_one_answer_each_under_a_memory_cap() {
    let bad = |n: &str| fixture(&format!("bad_inputs/{n}"));
    let good = fixture("images/astronaut.png");
    let inputs = [
        good.clone(),
        bad("tiff_tiled_planar_raw.tif"),
        good.clone(),
        bad("tiff_tiled_planar_lzw.tiff"),
        bad("wide_64000x1000.png"),
        fixture("images/camera.png"),
    ];
    let mut script = String::from("ulimit -v 2500000; exec \"$0\" infer --model face-detector --json");
    for (i, _) in inputs.iter().enumerate() {
        script.push_str(&format!(" \"${}\"", i + 1));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_modeldock"))
        .args(&inputs)
        .env("MODELDOCK_HOST", no_server())
        .env_remove("RUST_BACKTRACE")
        .env_remove("MODELDOCK_MODELS")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1 (two inputs failed), not a crash: {stderr}"
    );
    let lines: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(lines.len(), inputs.len(), "one answer per input: {stdout}\n{stderr}");
    for (i, l) in lines.iter().enumerate() {
        let name = inputs[i].display().to_string();
        assert_eq!(l["image"].as_str(), Some(name.as_str()), "input order");
        if name.contains("tiff") {
            let e = l["error"].as_str().unwrap_or_default();
            assert!(
                e.starts_with(&format!(
                    "{name}: the TIFF decoder failed on this 278x374 image (internal error: assertion failed: "
                )) && e.ends_with(')')
                    && !e.contains('\n'),
                "{e}"
            );
        } else {
            assert!(l["detections"].is_array(), "{l}");
        }
    }
    assert_eq!(lines[4]["image_size"], serde_json::json!([64000, 1000]));
    assert!(!lines[0]["detections"].as_array().is_none_or(|d| d.is_empty()));
    assert!(
        !lines[5]["detections"].as_array().is_none_or(|d| d.is_empty()),
        "the image after them"
    );
    assert!(!stderr.contains("panicked"), "no panic text on the terminal: {stderr}");
}

fn mtcnn_manifest(extra: &str) -> String {
    let builtin = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mtcnn/model.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut lines: Vec<String> = builtin
        .lines()
        .filter(|l| !l.starts_with("factor") && !l.starts_with("min_face_size"))
        .map(|l| l.replace("id = \"mtcnn\"", "id = \"mtcnn-x\""))
        .collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "[options]")
        .unwrap_or(lines.len());
    if at == lines.len() {
        lines.push("[options]".into());
    }
    lines.insert(at + 1, extra.to_string());
    lines.join("\n")
}

#[test]
fn runaway_model_options_are_refused_at_discovery_naming_key_value_and_range() {
    for (opt, key) in [
        ("factor = 1.0", "options.factor = 1"),
        ("factor = 2.0", "options.factor = 2"),
        ("min_face_size = 0", "options.min_face_size = 0"),
    ] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(&dir.path().join("m/model.toml"), mtcnn_manifest(opt).as_bytes());
        let reg = Registry::discover(&[dir.path().to_path_buf()]);
        assert!(reg.get("mtcnn-x").is_none(), "{opt} must be refused");
        let p = reg.problems.join("\n");
        assert!(
            p.contains("m/model.toml") && p.contains(key) && p.contains(".."),
            "{opt}: {p}"
        );
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (id, size) in [("tiny1", 1), ("huge", 8192), ("odd", 417)] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/face-detector/model.toml"))
                .unwrap_or_else(|e| panic!("{e}"))
                .replace("id = \"face-detector\"", &format!("id = \"{id}\""))
                .replace("input_size = 416", &format!("input_size = {size}"));
        write(&dir.path().join(format!("{id}/model.toml")), text.as_bytes());
    }
    let reg = Registry::discover(&[dir.path().to_path_buf()]);
    for (id, size) in [("tiny1", 1), ("huge", 8192), ("odd", 417)] {
        assert!(reg.get(id).is_none(), "{id}");
        assert!(
            reg.problems
                .iter()
                .any(|p| p.contains(&format!("{id}/model.toml")) && p.contains(&format!("input_size = {size}"))),
            "{:?}",
            reg.problems
        );
    }
}

fn tfjs_manifest(dir: &Path, paths: &[&str], scale: f64) -> std::path::PathBuf {
    let m = serde_json::json!([{
        "paths": paths,
        "weights": [{"name": "conv/bias", "shape": [4], "dtype": "float32",
                     "quantization": {"dtype": "uint8", "scale": scale, "min": 0.0}}]
    }]);
    let p = dir.join("model-weights_manifest.json");
    write(&p, m.to_string().as_bytes());
    p
}

fn import(manifest: &Path, out: &Path) -> (i32, String) {
    let o = Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 2500000; exec \"$0\" import tfjs \"$1\" --out \"$2\"")
        .arg(env!("CARGO_BIN_EXE_modeldock"))
        .arg(manifest)
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn tfjs_imports_stay_inside_their_folder_and_refuse_non_finite_weights() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = root.path().join("m");
    write(&root.path().join("secret.bin"), &[1, 2, 3, 4]);
    let out = root.path().join("out");
    for (paths, why) in [
        (vec!["../secret.bin"], "inside the manifest's folder"),
        (vec!["/dev/zero"], "inside the manifest's folder"),
        (vec![""], "inside the manifest's folder"),
    ] {
        let m = tfjs_manifest(&dir, &paths, 0.1);
        let (code, err) = import(&m, &out);
        assert_eq!(code, 1, "{paths:?}: {err}");
        assert!(err.contains(why) && err.lines().count() == 1, "{paths:?}: {err}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.bin")).unwrap_or_else(|e| panic!("{e}"));
        let m = tfjs_manifest(&dir, &["zero.bin"], 0.1);
        let (code, err) = import(&m, &out);
        assert_eq!(code, 1);
        assert!(err.contains("not a regular file"), "{err}");
    }
    // A shard larger than its weights declare is refused before it is read.
    write(&dir.join("big.bin"), &[0u8; 4096]);
    let (code, err) = import(&tfjs_manifest(&dir, &["big.bin"], 0.1), &out);
    assert_eq!(code, 1);
    assert!(err.contains("declare 4 bytes"), "{err}");
    // Non-finite after dequantisation: refused, naming the weight.
    write(&dir.join("w.bin"), &[1, 2, 3, 255]);
    let (code, err) = import(&tfjs_manifest(&dir, &["w.bin"], 1e308), &out);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("conv/bias") && err.contains("inf"), "{err}");
    // And a sane one imports.
    let (code, err) = import(&tfjs_manifest(&dir, &["w.bin"], 0.5), &out);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn weights_holding_nan_fail_their_load_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "nan", &[]);
    let file = dir.path().join("nan/toy.safetensors");
    let mut bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap_or_default();
    let start = header["conv.weight"]["data_offsets"][0].as_u64().unwrap_or(u64::MAX) as usize;
    assert_eq!(header["conv.weight"]["dtype"], "F32");
    bytes[8 + hlen + start..8 + hlen + start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let (engine, _) = engine_for(dir.path(), config());
    let e = engine
        .infer_wait(
            "nan",
            modeldock::engine::ImageInput::Bytes {
                name: "x".into(),
                bytes: std::sync::Arc::new(png(9, 9)),
            },
            Default::default(),
        )
        .err()
        .map(|e| e.error)
        .unwrap_or_default();
    assert!(e.contains("conv.weight") && e.contains("NaN"), "{e}");
    engine.shutdown();
}

/// The fuzzers' finds (fuzz/regressions/), replayed as plain tests.
#[test]
fn fuzzer_finds_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let read = |p: &str| std::fs::read(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let e = modeldock::catalog::safetensors_header::header_of_bytes(&read("safetensors_header/header_len_overflow"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        e,
        "not a safetensors buffer (header length 18446744073709551615 is above the 100000000 byte limit)"
    );
    let e = modeldock::catalog::safetensors_header::header_of_bytes(&[16, 0, 0, 0, 0, 0, 0, 0, b'{', b'}'])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        e,
        "not a safetensors buffer (header length 16 runs past the end of the 10 byte buffer)"
    );

    struct Mem(Vec<u8>);
    impl modeldock::import::tfjs::Shards for Mem {
        fn size(&mut self, _: &str) -> modeldock::Result<u64> {
            Ok(self.0.len() as u64)
        }
        fn read(&mut self, _: &str) -> modeldock::Result<Vec<u8>> {
            Ok(self.0.clone())
        }
    }
    for name in ["declared_sum_overflow", "shape_product_overflow"] {
        let data = read(&format!("tfjs_manifest/{name}"));
        let (text, blob) = match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], data[i + 1..].to_vec()),
            None => (&data[..], Vec::new()),
        };
        let text = String::from_utf8_lossy(text).to_string();
        let e = modeldock::import::tfjs::read_tfjs_text("m.json", &text, &mut Mem(blob))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("m.json") && e.contains("declares more than"),
            "{name}: {e}"
        );
    }
}
