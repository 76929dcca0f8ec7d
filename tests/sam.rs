//! Segment Anything (`arch = "sam"`): MobileSAM and SAM ViT-B against Meta's
//! PyTorch code, and the prompt paths a user takes (`infer --point/--box`,
//! v2 `POINTS`/`POINT_LABELS`/`BOXES`).
//!
//! The weights are modeldock's random initialisation from seed 7
//! (`models::sam_random`), made here in memory; the references in
//! `tests/fixtures/sam/*-seed7.json` came from the same weights loaded into
//! `segment_anything` / `mobile_sam` by `tests/python/sam_reference.py` on
//! `tests/fixtures/sam/shapes-1024.png` (1024², so no resize differs).

mod common;

use std::time::Duration;

use base64::Engine as _;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::*;
use image::RgbImage;
use modeldock::models::sam::{Sam, Variant, LOW_RES};
use modeldock::models::sam_random::sam_weights;
use modeldock::models::Model;
use modeldock::vision::prompt::{Prompt, PromptPoint, Prompts};
use modeldock::vision::{InferParams, Mask};
use serde_json::{json, Value};

const SEED: u64 = 7;

fn reference(variant: &str) -> Value {
    let p = fixture(&format!("sam/{variant}-seed{SEED}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn picture() -> RgbImage {
    image::open(fixture("sam/shapes-1024.png")).unwrap().to_rgb8()
}

fn network(variant: Variant) -> Sam {
    let tensors = sam_weights(variant, SEED).unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Sam::build(vb, variant, "object".into()).unwrap()
}

fn prompt_of(case: &Value) -> Prompt {
    let points: Vec<PromptPoint> = case["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PromptPoint {
            x: p[0].as_f64().unwrap() as f32,
            y: p[1].as_f64().unwrap() as f32,
            positive: p[2].as_i64() == Some(1),
        })
        .collect();
    let bbox = case["box"].as_array().map(|b| {
        let v: Vec<f32> = b.iter().map(|x| x.as_f64().unwrap() as f32).collect();
        [v[0], v[1], v[2], v[3]]
    });
    Prompt::new(&points, bbox).unwrap()
}

fn reference_mask(case: &Value) -> Vec<bool> {
    let png = base64::engine::general_purpose::STANDARD
        .decode(case["mask_png"].as_str().unwrap())
        .unwrap();
    let img = image::load_from_memory(&png).unwrap().to_luma8();
    img.pixels().map(|p| p.0[0] > 127).collect()
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Runs every reference case; the embedding is made once. `logit_tol` is
/// relative to the largest reference logit.
///
/// Tolerance: `candle-transformers` computes GELU with the tanh
/// approximation in its mask decoder, where PyTorch's is exact (erf); our
/// TinyViT and candle's ViT encoder use the exact one. Measured gaps,
/// MobileSAM: embedding 7e-6, logits 4.0e-4 relative, mask IoU ≥ 0.9997;
/// ViT-B: embedding 2.5e-6, logits 6.1e-4 relative, mask IoU ≥ 0.9997.
fn matches_pytorch(variant: Variant, name: &str, logit_tol: f32, min_iou: f64) {
    let r = reference(name);
    let sam = network(variant);
    let img = picture();
    let e = sam.embedding(&img).unwrap();
    let emb: Vec<f32> = e.tensor.flatten_all().unwrap().to_vec1().unwrap();
    let plane = emb.len() / 256;
    let (mut worst_mean, mut worst_std) = (0f32, 0f32);
    for c in 0..256 {
        let v = &emb[c * plane..(c + 1) * plane];
        let mean = v.iter().sum::<f32>() / plane as f32;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / (plane - 1) as f32).sqrt();
        worst_mean = worst_mean.max((mean - r["embedding_mean"][c].as_f64().unwrap() as f32).abs());
        worst_std = worst_std.max((std - r["embedding_std"][c].as_f64().unwrap() as f32).abs());
    }
    eprintln!("{name}: embedding channel mean within {worst_mean:.2e}, deviation within {worst_std:.2e}");
    assert!(worst_mean < 1e-4 && worst_std < 1e-4, "{name}: embedding off");
    for case in r["cases"].as_array().unwrap() {
        let what = format!("{name} {}", case["name"]);
        let prompt = prompt_of(case);
        let (logits, predicted) = sam.decode(&e, &prompt, (1.0, 1.0)).unwrap();
        assert_eq!(logits.len(), LOW_RES * LOW_RES);
        let want: Vec<f32> = case["logits_every_4th"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let ours: Vec<f32> = (0..LOW_RES / 4)
            .flat_map(|y| (0..LOW_RES / 4).map(move |x| (y, x)))
            .map(|(y, x)| logits[y * 4 * LOW_RES + x * 4])
            .collect();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = ours.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let best = case["iou"][case["best"].as_u64().unwrap() as usize].as_f64().unwrap() as f32;
        // The whole request as the engine runs it: one mask over the image.
        let params = InferParams {
            prompts: Some(Prompts::new(&[prompt]).unwrap()),
            ..Default::default()
        };
        let (dets, masks, _) = sam.infer_with_masks(&img, &params).unwrap();
        assert_eq!((dets.len(), masks.len()), (1, 1), "{what}");
        let m: &Mask = &masks[0];
        assert_eq!((m.width, m.height, m.detection), (1024, 1024, Some(0)), "{what}");
        let ours_mask: Vec<bool> = m.data.iter().map(|v| *v >= 128).collect();
        let overlap = iou(&ours_mask, &reference_mask(case));
        eprintln!(
            "{what}: logits within {diff:.2e} of {scale:.2} ({:.2e} relative), IoU prediction {predicted:.5} vs {best:.5}, mask IoU {overlap:.4} ({} px)",
            diff / scale,
            case["mask_pixels"]
        );
        assert!(
            diff <= logit_tol * scale,
            "{what}: logits off by {diff} (scale {scale})"
        );
        assert!(
            (predicted - best).abs() <= 1e-3,
            "{what}: IoU prediction {predicted} vs {best}"
        );
        assert!(overlap >= min_iou, "{what}: mask IoU {overlap}");
        assert_eq!(
            dets[0].score, predicted,
            "{what}: the detection's score is the predicted IoU"
        );
    }
    assert_eq!(sam.encoder_runs(), 1, "the image was encoded once for every prompt");
}

#[test]
fn mobile_sam_matches_pytorch_mobile_sam_on_random_weights() {
    matches_pytorch(Variant::VitT, "vit_t", 1e-3, 0.995);
}

#[test]
fn sam_vit_b_matches_pytorch_segment_anything_on_random_weights() {
    matches_pytorch(Variant::VitB, "vit_b", 1e-3, 0.995);
}

#[test]
fn infer_point_and_box_give_one_mask_and_bad_prompts_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    sam_folder(&models);
    let img = dir.path().join("shapes.png");
    std::fs::copy(fixture("sam/shapes-1024.png"), &img).unwrap();
    let host = no_server();
    let env = [("MODELDOCK_HOST", host.as_str())];
    let (m, i) = (models.display().to_string(), img.display().to_string());
    let run = |extra: &[&str]| {
        let mut args = vec!["infer", "--local", "--models-dir", &m, "--model", "msam", "--json"];
        args.extend_from_slice(extra);
        args.push(&i);
        cli(&args, &env)
    };
    let (code, stdout, stderr) = run(&["--point", "300,320", "--point", "700,640,0"]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let masks: Vec<Mask> = serde_json::from_value(v["masks"].clone()).unwrap();
    assert_eq!(masks.len(), 1, "{v}");
    assert_eq!(v["detections"].as_array().map(Vec::len), Some(1));
    let r = reference("vit_t");
    let case = &r["cases"][1];
    assert_eq!(case["name"], "two_points");
    let ours: Vec<bool> = masks[0].data.iter().map(|v| *v >= 128).collect();
    let overlap = iou(&ours, &reference_mask(case));
    assert!(overlap >= 0.98, "CLI mask IoU {overlap} against PyTorch's");

    let (code, stdout, stderr) = run(&["--box", "180,200,460,470"]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["masks"].as_array().map(Vec::len), Some(1), "{v}");

    // No prompt: the image is encoded and nothing is answered.
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["masks"].as_array().map(Vec::len).unwrap_or(0), 0, "{v}");

    for (bad, needle) in [
        (vec!["--point", "300"], "point '300': expected X,Y"),
        (vec!["--point", "3,4,7"], "label 7"),
        (vec!["--box", "5,5,1,1"], "box '5,5,1,1': expected X0 < X1"),
    ] {
        let (code, _, stderr) = run(&bad);
        assert_ne!(code, 0, "{bad:?}");
        assert!(stderr.contains(needle), "{bad:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{bad:?}: {stderr}");
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().with_config().limit(256 << 20).read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn v2_points_and_boxes_give_one_mask_per_prompt_and_bad_shapes_are_named() {
    use modeldock::catalog::registry::Registry;
    use modeldock::engine::Engine;
    use modeldock::server::{self, ServerOptions};
    let dir = tempfile::tempdir().unwrap();
    sam_folder(dir.path());
    toy(dir.path(), "plain", &[]);
    let engine = Engine::start(Registry::discover(&[dir.path().to_path_buf()]), config(), None);
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let handle = server::start(engine.clone(), ServerOptions::default(), listener).unwrap();
    let url = |m: &str| format!("http://{}/v2/models/{m}/infer", handle.addr);
    let png = base64::engine::general_purpose::STANDARD.encode(std::fs::read(fixture("sam/shapes-1024.png")).unwrap());
    let image = json!({"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": [png]});
    // Two prompts: a point (padded) and two points; plus a box each.
    let good = json!({
        "inputs": [
            image,
            {"name": "POINTS", "shape": [2, 2, 2], "datatype": "FP32",
             "data": [300, 320, 0, 0, 620, 700, 100, 100]},
            {"name": "POINT_LABELS", "shape": [2, 2], "datatype": "INT32", "data": [1, -1, 1, 0]},
            {"name": "BOXES", "shape": [2, 4], "datatype": "FP32",
             "data": [180, 200, 460, 470, 520, 560, 900, 880]},
        ],
        "outputs": [{"name": "DETECTIONS"}, {"name": "MASKS"}],
    });
    let (status, v) = post_json(&url("msam"), &good);
    assert_eq!(status, 200, "{v}");
    let outs = v["outputs"].as_array().unwrap();
    let masks = outs.iter().find(|o| o["name"] == "MASKS").unwrap();
    assert_eq!(masks["shape"], json!([1, 2, 1024, 1024]), "one mask per prompt");
    let det: Value = serde_json::from_str(
        outs.iter().find(|o| o["name"] == "DETECTIONS").unwrap()["data"][0]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(det["detections"].as_array().map(Vec::len), Some(2), "{det}");

    for (input, needle) in [
        (
            json!({"name": "POINT_LABELS", "shape": [2, 3], "datatype": "INT32", "data": [1, 1, 1, 1, 1, 1]}),
            "input 'POINT_LABELS': shape [2, 3], expected [2, 2]",
        ),
        (
            json!({"name": "POINT_LABELS", "shape": [2, 2], "datatype": "INT32", "data": [1, 5, 1, 0]}),
            "input 'POINT_LABELS': [0, 1] is 5",
        ),
        (
            json!({"name": "POINT_LABELS", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}),
            "input 'POINT_LABELS': datatype \"BYTES\"",
        ),
    ] {
        let mut bad = good.clone();
        bad["inputs"][2] = input;
        let (status, v) = post_json(&url("msam"), &bad);
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains(needle), "{needle}: {v}");
    }
    let mut only_points = good.clone();
    only_points["inputs"].as_array_mut().unwrap().truncate(2);
    let (status, v) = post_json(&url("msam"), &only_points);
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("'POINTS' needs 'POINT_LABELS'"),
        "{v}"
    );
    let (status, v) = post_json(&url("plain"), &good);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("takes no prompts"), "{v}");
    // Still serving.
    let (status, v) = post_json(&url("msam"), &good);
    assert_eq!(status, 200, "{v}");
    handle.shutdown();
    engine.shutdown();
}

/// `bench --model` of a SAM model times one click on an image it has
/// encoded (`prompt_p50_ms`); `bench --sam-weights` writes random SAM
/// weights as one file and as shards and loads both.
#[test]
fn bench_reports_a_click_and_loads_random_sam_weights_whole_and_sharded() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    sam_folder(&models);
    let m = models.display().to_string();
    let img = fixture("sam/shapes-1024.png").display().to_string();
    let host = no_server();
    let env = [("MODELDOCK_HOST", host.as_str())];
    let last_json = |out: &str| -> Value {
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON: {out}"));
        serde_json::from_str(line).unwrap()
    };
    let args = [
        "bench",
        "--models-dir",
        &m,
        "--model",
        "msam",
        "--image",
        &img,
        "--runs",
        "3",
        "--json",
    ];
    let (code, out, err) = cli(&args, &env);
    assert_eq!(code, 0, "{err}");
    let v = last_json(&out);
    let click = v["prompt_p50_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no prompt_p50_ms: {v}"));
    assert!(click > 0.0, "{v}");

    let (code, out, err) = cli(
        &[
            "bench",
            "--sam-weights",
            "vit_t",
            "--shards",
            "3",
            "--runs",
            "3",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let v = last_json(&out);
    // MobileSAM has 10.1 M parameters: about 40 MB in f32.
    let bytes = v["weights_bytes"].as_u64().unwrap_or(0);
    assert!((35_000_000..45_000_000).contains(&bytes), "{v}");
    assert_eq!(v["single_file"]["files"], 1, "{v}");
    assert_eq!(v["sharded"]["files"], 3, "{v}");
    for layout in ["single_file", "sharded"] {
        assert_eq!(v[layout]["weights_bytes"].as_u64(), Some(bytes), "{layout}: {v}");
        let loads = v[layout]["load_ms"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(loads, 3, "{layout}: {v}");
    }

    let (code, _, err) = cli(&["bench", "--sam-weights", "vit_q", "--json"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sam-weights vit_q: expected one of"), "{err}");
}
