//! ONNX graphs on the graph executor against ONNX Runtime (PyPI
//! `onnxruntime`, from `.ci/venv-triton`, made by `bash .ci/deps`):
//! - every op case in tests/fixtures/onnx/ops (small models with their
//!   ONNX Runtime outputs, committed);
//! - whole Ultralytics exports (tests/fixtures/onnx/*-320.onnx, conv weights
//!   zeroed in the repo), filled from a seed by tests/python/onnx_fixtures.py
//!   and run through ONNX Runtime here, then through `verify --onnx`;
//! - `import onnx` of such an export, then `infer` on a photo with it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::fixture;

fn python() -> PathBuf {
    let p = match std::env::var_os("MODELDOCK_TEST_ONNX_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv-triton/bin/python"),
    };
    assert!(
        p.exists(),
        "no Python with onnxruntime at {}: run `bash .ci/deps` (it creates .ci/venv-triton), \
         or set MODELDOCK_TEST_ONNX_PYTHON to a python that has onnx, onnxruntime and numpy",
        p.display()
    );
    p
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The worst `|got - want| - (atol + rtol·|want|)` over `want` (≤ 0 passes).
fn excess(got: &Tensor, want: &Tensor, atol: f64, rtol: f64) -> f64 {
    let want = want.to_dtype(DType::F32).unwrap_or_else(|e| panic!("{e}"));
    let diff = (got - &want).and_then(|d| d.abs()).unwrap_or_else(|e| panic!("{e}"));
    let allowed = want
        .abs()
        .and_then(|a| a.affine(rtol, atol))
        .unwrap_or_else(|e| panic!("{e}"));
    (diff - allowed)
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .unwrap_or_else(|e| panic!("{e}")) as f64
}

#[test]
fn every_op_case_matches_onnxruntime() {
    let root = fixture("onnx/ops");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "only {} op cases in {}", cases.len(), root.display());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = (|| -> Result<(), String> {
            let model = modeldock::import::onnx::read(&case.join("model.onnx")).map_err(|e| e.to_string())?;
            let graph = model.build().map_err(|e| e.to_string())?;
            let inputs = load(&case.join("input.safetensors"));
            let xs: Vec<&Tensor> = graph
                .inputs()
                .iter()
                .map(|i| inputs.get(&i.key).ok_or(format!("no input '{}'", i.key)))
                .collect::<Result<_, _>>()?;
            let outs = graph.run_inputs(&xs).map_err(|e| e.to_string())?;
            let expected = load(&case.join("expected.safetensors"));
            if expected.is_empty() {
                return Err("no expected outputs".into());
            }
            for (k, want) in &expected {
                let got = outs
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, t)| t)
                    .ok_or_else(|| format!("output '{k}' is missing"))?;
                if got.dims() != want.dims() {
                    return Err(format!(
                        "output '{k}': shape {:?}, expected {:?}",
                        got.dims(),
                        want.dims()
                    ));
                }
                let e = excess(got, want, 1e-4, 1e-4);
                if e > 0.0 {
                    return Err(format!("output '{k}' off by {e:.3e} beyond 1e-4"));
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} op cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Fills the committed export `name` from `seed` and runs ONNX Runtime on it
/// (a gzip-compressed export has its dense initializers refilled too).
fn filled(name: &str, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/onnx_fixtures.py");
    let plain = fixture(&format!("onnx/{name}-320.onnx"));
    let (src, dense) = if plain.exists() {
        (plain, None)
    } else {
        (fixture(&format!("onnx/{name}-320.onnx.gz")), Some("--dense"))
    };
    let out = Command::new(python())
        .arg(&script)
        .arg("fill")
        .arg(src)
        .arg(dir.path())
        .args(["--seed", &seed.to_string()])
        .args(dense)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(
        out.status.success(),
        "onnx_fixtures.py fill {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// `verify --onnx` on a filled export: ONNX Runtime's outputs within 1e-3
/// (+3e-5·|expected| for box rows in pixels), and a perturbed reference fails.
fn verify_export(name: &str) {
    let dir = filled(name, 7);
    let p = |f: &str| dir.path().join(f).display().to_string();
    let (model, input, expected) = (p("model.onnx"), p("input.safetensors"), p("expected.safetensors"));
    let (code, stdout, stderr) = common::cli(
        &[
            "verify",
            "--onnx",
            &model,
            "--input",
            &input,
            "--expected",
            &expected,
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{name}: {stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let outputs = v["outputs"].as_array().cloned().unwrap_or_default();
    assert!(!outputs.is_empty(), "{stdout}");
    for o in &outputs {
        assert_eq!(o["pass"], true, "{name}: {o}");
    }
    // The same check fails when the reference moves by more than the tolerance.
    let mut exp = load(&dir.path().join("expected.safetensors"));
    let first = exp.keys().next().cloned().unwrap_or_default();
    if let Some(t) = exp.get_mut(&first) {
        *t = t.affine(1.0, 0.01).unwrap_or_else(|e| panic!("{e}"));
    }
    let moved = p("moved.safetensors");
    candle_core::safetensors::save(&exp, &moved).unwrap_or_else(|e| panic!("{e}"));
    let (code, stdout, _) = common::cli(
        &["verify", "--onnx", &model, "--input", &input, "--expected", &moved],
        &[],
    );
    assert_eq!(code, 1, "{name}: a reference moved by 0.01 must fail: {stdout}");
}

/// RT-DETR-l (ResNet-style HGNet backbone, AIFI encoder, deformable
/// decoder with GridSample, TopK, GatherElements, LayerNormalization): its
/// 300 rows `[cx, cy, w, h, score, class]` match ONNX Runtime's within
/// 1e-4, each row matched to one of ours (queries with equal scores may come
/// out of TopK in either order), and a moved reference does not match.
/// Then, on the same filled file (one fill: it takes half a minute), the
/// detections equal Ultralytics' `predict`.
#[test]
fn rtdetr_l_export_matches_onnxruntime_and_ultralytics_predict() {
    let dir = filled("rtdetr-l", 8);
    let model = modeldock::import::onnx::read(&dir.path().join("model.onnx")).unwrap_or_else(|e| panic!("{e}"));
    let graph = model.build().unwrap_or_else(|e| panic!("{e}"));
    let x = load(&dir.path().join("input.safetensors"));
    let x = x.get("images").unwrap_or_else(|| panic!("no input 'images'"));
    let outs = graph.run(x).unwrap_or_else(|e| panic!("{e}"));
    let expected = load(&dir.path().join("expected.safetensors"));
    let want = expected.get("output0").unwrap_or_else(|| panic!("no output0"));
    let got = outs
        .iter()
        .find(|(n, _)| n == "output0")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no output0 from the graph"));
    assert_eq!(got.dims(), want.dims());
    let rows = |t: &Tensor| -> Vec<Vec<f32>> {
        t.squeeze(0)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2::<f32>())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let unmatched = |got: &[Vec<f32>], want: &[Vec<f32>], tol: f32| -> usize {
        let mut used = vec![false; got.len()];
        want.iter()
            .filter(|w| {
                let hit = (0..got.len())
                    .find(|&i| !used[i] && got[i].iter().zip(w.iter()).all(|(g, w)| (g - w).abs() <= tol));
                if let Some(i) = hit {
                    used[i] = true;
                }
                hit.is_none()
            })
            .count()
    };
    let (g, w) = (rows(got), rows(want));
    assert!(
        w.iter().any(|r| r[4] > 0.1),
        "the filled model scores something: {:?}",
        &w[..3]
    );
    assert_eq!(unmatched(&g, &w, 1e-4), 0, "rows of ours vs ONNX Runtime's");
    let moved: Vec<Vec<f32>> = w.iter().map(|r| r.iter().map(|v| v + 0.01).collect()).collect();
    assert_eq!(
        unmatched(&g, &moved, 1e-4),
        w.len(),
        "a reference moved by 0.01 matches no row"
    );
    matches_ultralytics_on("rtdetr-l-seed8.json", Some(dir));
}

#[test]
fn yolo11n_export_matches_onnxruntime() {
    verify_export("yolo11n");
}

#[test]
fn yolov8n_export_matches_onnxruntime() {
    verify_export("yolov8n");
}

/// `infer --local --json` of model `id` in `models_dir` on `image` at `conf`
/// (no server): the reply's first line as JSON.
fn infer_json(models_dir: &Path, id: &str, conf: &str, image: &Path) -> serde_json::Value {
    let (models_s, img) = (models_dir.display().to_string(), image.display().to_string());
    let host = common::no_server();
    let (code, stdout, stderr) = common::cli(
        &[
            "infer",
            "--local",
            "--models-dir",
            &models_s,
            "--model",
            id,
            "--conf",
            conf,
            "--json",
            &img,
        ],
        &[("MODELDOCK_HOST", host.as_str())],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    serde_json::from_str(stdout.lines().next().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Fills export `name` from `seed`, imports it as `id` into a fresh models
/// folder and runs `infer --json` on astronaut.png at `conf`: the import's
/// stdout, the model folder, and the reply.
struct Served {
    import_stdout: String,
    model_dir: PathBuf,
    reply: serde_json::Value,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn import_and_infer(name: &str, seed: u64, id: &str, conf: &str) -> Served {
    let dir = filled(name, seed);
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let onnx = dir.path().join("model.onnx").display().to_string();
    let model_dir = models.path().join(id);
    let out_s = model_dir.display().to_string();
    let (code, import_stdout, stderr) = common::cli(&["import", "onnx", &onnx, "--out", &out_s, "--id", id], &[]);
    assert_eq!(code, 0, "{import_stdout}{stderr}");
    let reply = infer_json(models.path(), id, conf, &fixture("images/astronaut.png"));
    Served {
        import_stdout,
        model_dir,
        reply,
        _dirs: (dir, models),
    }
}

#[test]
fn an_imported_export_serves_detections_with_its_own_labels() {
    let r = import_and_infer("yolo11n", 3, "yolo11n-test", "0.05");
    assert!(
        r.import_stdout.contains("family yolo,") && r.import_stdout.contains("input 320"),
        "{}",
        r.import_stdout
    );
    let toml = std::fs::read_to_string(r.model_dir.join("model.toml")).unwrap_or_else(|e| panic!("{e}"));
    // Ultralytics' metadata: names (a model built from its yaml calls its
    // classes "0".."79"), imgsz 320, task detect.
    assert!(toml.contains("\"79\"]") && toml.contains("input_size = 320"), "{toml}");
    assert!(toml.contains("task = \"detect\""), "{toml}");
    let dets = r.reply["detections"].as_array().cloned().unwrap_or_default();
    assert!(
        !dets.is_empty(),
        "random weights at conf 0.05 still detect something: {}",
        r.reply
    );
    for d in &dets {
        let label = d["label"].as_str().unwrap_or_default();
        assert!(
            label.parse::<u32>().is_ok_and(|c| c < 80),
            "the metadata's labels, not COCO's: {d}"
        );
    }
}

#[test]
fn yolov8n_seg_export_matches_onnxruntime_on_both_outputs() {
    verify_export("yolov8n-seg");
}

#[test]
fn an_imported_seg_export_gives_each_detection_its_mask_inside_its_box() {
    let r = import_and_infer("yolov8n-seg", 5, "seg-test", "0.3");
    assert!(r.import_stdout.contains("family yolo-seg"), "{}", r.import_stdout);
    let v = &r.reply;
    let dets = v["detections"].as_array().cloned().unwrap_or_default();
    let masks = v["masks"].as_array().cloned().unwrap_or_default();
    assert!(!dets.is_empty(), "{v}");
    assert_eq!(masks.len(), dets.len(), "one mask per detection");
    for (i, m) in masks.iter().enumerate() {
        let mask: modeldock::vision::Mask =
            serde_json::from_value(m.clone()).unwrap_or_else(|e| panic!("mask {i}: {e}"));
        assert_eq!(mask.detection, Some(i as u32));
        let bbox: Vec<f32> = dets[i]["bbox"]
            .as_array()
            .map(|b| b.iter().filter_map(|v| v.as_f64()).map(|v| v as f32).collect())
            .unwrap_or_default();
        assert_eq!(bbox.len(), 4, "{}", dets[i]);
        assert_eq!(mask.label, dets[i]["label"].as_str().unwrap_or_default());
        // The mask's cells cover the box (to one 4-pixel prototype cell,
        // 2 image pixels at this letterbox) and nothing is set outside it.
        let cell = 4.0 * 512.0 / 320.0;
        assert!(
            mask.region[0] <= bbox[0] + 0.01 && mask.region[0] > bbox[0] - cell,
            "{:?} {bbox:?}",
            mask.region
        );
        assert!(
            mask.region[2] >= bbox[2] - 0.01 && mask.region[2] < bbox[2] + cell,
            "{:?} {bbox:?}",
            mask.region
        );
        for y in (0..512).step_by(7) {
            for x in (0..512).step_by(7) {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let outside = px < bbox[0] - cell || px > bbox[2] + cell || py < bbox[1] - cell || py > bbox[3] + cell;
                if outside {
                    assert_eq!(mask.at(px, py), 0, "mask {i} set at ({px}, {py}) outside {bbox:?}");
                }
            }
        }
    }
    assert!(
        masks.iter().any(|m| m["png"].as_str().is_some_and(|p| p.len() > 60)),
        "some mask holds values"
    );
}

#[test]
fn yolov8n_pose_export_matches_onnxruntime() {
    verify_export("yolov8n-pose");
}

#[test]
fn an_imported_pose_export_gives_17_keypoints_per_person() {
    let r = import_and_infer("yolov8n-pose", 9, "pose-test", "0.1");
    assert!(r.import_stdout.contains("family yolo-pose"), "{}", r.import_stdout);
    let dets = r.reply["detections"].as_array().cloned().unwrap_or_default();
    assert!(!dets.is_empty(), "{}", r.reply);
    for d in &dets {
        assert_eq!(d["keypoints"].as_array().map(|k| k.len()), Some(17), "{d}");
    }
}

/// One reference detection of tests/fixtures/onnx/ultralytics/*.json.
fn ref_box(d: &serde_json::Value) -> ([f64; 4], f64, u64) {
    let b: Vec<f64> = d["xyxy"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    assert_eq!(b.len(), 4, "{d}");
    (
        [b[0], b[1], b[2], b[3]],
        d["score"].as_f64().unwrap_or(-1.0),
        d["class"].as_u64().unwrap_or(u64::MAX),
    )
}

/// modeldock's detections equal Ultralytics' own `predict` on the same
/// filled export (tests/fixtures/onnx/ultralytics/`reference`, written by
/// tests/python/ultralytics_reference.py: Ultralytics needs torch, so its
/// answers are committed): the same detections, boxes within 1 px, scores
/// within 1e-3, classes equal, keypoints within 1 px, on the square photo
/// and on a crop that is letterboxed. Only a detection whose score is within
/// 1e-3 of the threshold may be on one side alone.
fn matches_ultralytics(reference: &str) {
    matches_ultralytics_on(reference, None)
}

/// [`matches_ultralytics`] on the export already filled in `filled_dir`
/// (with the reference's seed), else filled here.
fn matches_ultralytics_on(reference: &str, filled_dir: Option<tempfile::TempDir>) {
    let path = fixture(&format!("onnx/ultralytics/{reference}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let (name, seed) = (
        r["export"].as_str().unwrap_or_default(),
        r["seed"].as_u64().unwrap_or(0),
    );
    let conf = r["conf"].as_f64().unwrap_or(0.25);
    let dir = filled_dir.unwrap_or_else(|| filled(name, seed));
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let onnx = dir.path().join("model.onnx").display().to_string();
    let out = models.path().join("m").display().to_string();
    let (code, stdout, stderr) = common::cli(&["import", "onnx", &onnx, "--out", &out, "--id", "m"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let photo = image::open(fixture("images/astronaut.png"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_rgb8();
    for (k, im) in r["images"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        let img = match im["crop"].as_array() {
            Some(c) => {
                let c: Vec<u32> = c.iter().filter_map(|v| v.as_u64().map(|v| v as u32)).collect();
                image::imageops::crop_imm(&photo, c[0], c[1], c[2], c[3]).to_image()
            }
            None => photo.clone(),
        };
        let file = models.path().join(format!("image{k}.png"));
        img.save(&file).unwrap_or_else(|e| panic!("{e}"));
        let reply = infer_json(models.path(), "m", &conf.to_string(), &file);
        let ours = reply["detections"].as_array().cloned().unwrap_or_default();
        let want = im["detections"].as_array().cloned().unwrap_or_default();
        assert!(!want.is_empty(), "{reference} image {k}: the reference has detections");
        let mut used = vec![false; ours.len()];
        let mut missing = Vec::new();
        for w in &want {
            let (wb, ws, wc) = ref_box(w);
            let hit = ours.iter().enumerate().position(|(i, o)| {
                let ob: Vec<f64> = o["bbox"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                    .unwrap_or_default();
                !used[i]
                    && o["class_id"].as_u64() == Some(wc)
                    && (o["score"].as_f64().unwrap_or(-1.0) - ws).abs() <= 1e-3
                    && ob.len() == 4
                    && ob.iter().zip(wb).all(|(a, b)| (a - b).abs() <= 1.0)
                    && keypoints_match(&o["keypoints"], &w["keypoints"])
            });
            match hit {
                Some(i) => used[i] = true,
                None if ws - conf <= 1e-3 => {}
                None => missing.push(format!("{wb:?} score {ws} class {wc}")),
            }
        }
        let extra: Vec<String> = ours
            .iter()
            .zip(&used)
            .filter(|(o, u)| !**u && o["score"].as_f64().unwrap_or(0.0) - conf > 1e-3)
            .map(|(o, _)| o.to_string())
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{reference} image {k}: {} of Ultralytics' {} detections not found ({missing:?}); ours alone: {extra:?}",
            missing.len(),
            want.len()
        );
    }
}

/// Keypoints of ours (`[x, y, score]` each) and of the reference, within 1 px
/// and 1e-3 (both absent is a match).
fn keypoints_match(ours: &serde_json::Value, want: &serde_json::Value) -> bool {
    let flat = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .flat_map(|k| k.as_array().cloned().unwrap_or_default())
                    .filter_map(|x| x.as_f64())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (o, w) = (flat(ours), flat(want));
    o.len() == w.len()
        && o.chunks(3)
            .zip(w.chunks(3))
            .all(|(a, b)| (a[0] - b[0]).abs() <= 1.0 && (a[1] - b[1]).abs() <= 1.0 && (a[2] - b[2]).abs() <= 1e-3)
}

#[test]
fn yolo11n_detections_equal_ultralytics_predict() {
    matches_ultralytics("yolo11n-seed3.json");
}

#[test]
fn yolov8n_pose_detections_equal_ultralytics_predict() {
    matches_ultralytics("yolov8n-pose-seed3.json");
}
