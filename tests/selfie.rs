//! The `selfie` model (MediaPipe Selfie Segmentation, run as the `human`
//! library runs it) against tfjs 4.22's outputs in
//! tests/fixtures/human-models/selfie (see the README there): the network
//! input, the raw probability map, and the final whole-image mask, plus the
//! model through the engine and the CLI.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use image::RgbImage;
use modeldock::catalog::weights_source::WeightsSource;
use modeldock::catalog::Manifest;
use modeldock::models::selfie::Selfie;
use modeldock::models::weights::var_builder;
use modeldock::models::Model;
use modeldock::vision::{InferParams, Mask};
use serde_json::Value;

const STEMS: [&str; 5] = ["astronaut", "chelsea", "motorcycle_left", "rocket", "sample2"];

/// Max |ours − tfjs| on the probability map. tfjs sums each conv in a
/// different order (float32 noise ~1e-6 before the sigmoids) and the
/// fixture stores the map in f16 (half an ulp ≤ 2.5e-4 below 1): 1e-3 leaves
/// room for both and still fails on any wrong op, weight or input pixel.
const MAP_TOL: f32 = 1e-3;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures/human-models").join(rel)
}

fn tensors(stem: &str) -> HashMap<String, Tensor> {
    let p = fixture(&format!("selfie/{stem}.safetensors"));
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn image(stem: &str) -> RgbImage {
    let p = fixture(&format!("images/{stem}.png"));
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    modeldock::vision::decode::decode_bytes(stem, &b, &Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// human's final map for `stem`, round(p · 255), one byte per image pixel.
fn alpha(stem: &str) -> Vec<u8> {
    let p = fixture(&format!("selfie/{stem}.alpha.png"));
    image::open(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .into_luma8()
        .into_raw()
}

fn load() -> Selfie {
    let p = root().join("models/selfie/model.toml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let m = Manifest::parse(&text, "models/selfie/model.toml").unwrap_or_else(|e| panic!("{e}"));
    let w = root().join("models/selfie/selfie.safetensors");
    let bytes = std::fs::metadata(&w).map(|m| m.len()).unwrap_or(0);
    let vb = var_builder(&WeightsSource::File(w), bytes, &Device::Cpu, Arc::new(|_, _| {}))
        .unwrap_or_else(|e| panic!("{e}"));
    Selfie::load(vb, &m).unwrap_or_else(|e| panic!("{e}"))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn preprocessing_equals_the_tfjs_input() {
    let model = load();
    for stem in STEMS {
        let want = flat(&tensors(stem)["input_every3"]);
        let x = model.preprocess(&image(stem)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(x.dims(), &[1, 256, 256, 3]);
        let all = flat(&x);
        let mut got = Vec::with_capacity(want.len());
        for y in (0..256).step_by(3) {
            for xx in (0..256).step_by(3) {
                got.extend_from_slice(&all[(y * 256 + xx) * 3..][..3]);
            }
        }
        let d = max_diff(&got, &want);
        println!("{stem}: input max |diff| = {d:e}");
        assert!(d <= 1e-6, "{stem}: the network input differs from tfjs' by {d}");
    }
}

/// The raw map of every image, and what the engine answers for it.
#[test]
fn probability_map_and_mask_match_tfjs() {
    let model = load();
    for stem in STEMS {
        let img = image(stem);
        let (w, h) = (img.width(), img.height());
        let want = flat(&tensors(stem)["output"]);
        let x = model.preprocess(&img).unwrap_or_else(|e| panic!("{e}"));
        let out = model.forward_raw(&x).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.dims(), &[1, 256, 256, 1]);
        let d = max_diff(&flat(&out), &want);
        println!("{stem}: map max |diff| = {d:e}");
        assert!(d <= MAP_TOL, "{stem}: the probability map differs from tfjs' by {d}");

        let (dets, masks, _) = model
            .infer_with_masks(&img, &InferParams::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(dets.is_empty(), "{stem}: a segmentation model makes no detections");
        assert_eq!(masks.len(), 1, "{stem}: one whole-image mask");
        let m: &Mask = &masks[0];
        assert_eq!(m.label, "person");
        assert_eq!(m.detection, None);
        assert_eq!(m.region, [0.0, 0.0, w as f32, h as f32]);
        assert_eq!((m.width, m.height), (256, 256));
        let levels: Vec<f32> = m.data.iter().map(|&v| v as f32 / 255.0).collect();
        let d = max_diff(&levels, &want);
        // Rounding to 1/255 adds half a level to the map's tolerance.
        assert!(d <= MAP_TOL + 0.5 / 255.0, "{stem}: the mask's bytes differ by {d}");
    }
}

/// The mask against human's final map. human resizes the map to the image
/// with TF's legacy bilinear resize: image pixel `x` reads the map at cell
/// coordinate `x · 256 / W`, which [`Mask::at`] (cell centres at `i + 0.5`)
/// reads at image position `x + W / 512`. Sampled there, the mask must give
/// human's map: within the map's tolerance plus the byte roundings (the
/// mask's, `at`'s and the fixture's: half a level each). Pixels whose
/// position falls past the region's right or bottom edge are skipped (the
/// legacy resize clamps there; the mask answers 0 outside its region).
/// `to_image` itself samples at pixel centres, up to half a cell from
/// human's positions; that offset is the legacy resize's, not the model's.
#[test]
fn mask_sampled_where_human_samples_gives_humans_final_map() {
    let model = load();
    for stem in STEMS {
        let img = image(stem);
        let (w, h) = (img.width() as usize, img.height() as usize);
        let want = alpha(stem);
        assert_eq!(want.len(), w * h, "{stem}: the fixture's size");
        let (_, masks, _) = model
            .infer_with_masks(&img, &InferParams::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let m = &masks[0];
        let (dx, dy) = (w as f32 / 512.0, h as f32 / 512.0);
        let (mut worst, mut n) = (0f32, 0usize);
        for y in 0..h {
            let py = y as f32 + dy;
            if py >= h as f32 {
                continue;
            }
            for x in 0..w {
                let px = x as f32 + dx;
                if px >= w as f32 {
                    continue;
                }
                let d = (m.at(px, py) as f32 - want[y * w + x] as f32).abs() / 255.0;
                worst = worst.max(d);
                n += 1;
            }
        }
        println!("{stem}: final map max |diff| {worst:.2e} over {n} of {} pixels", w * h);
        assert!(n * 100 >= w * h * 99, "{stem}: only {n} pixels compared");
        assert!(
            worst <= MAP_TOL + 1.5 / 255.0,
            "{stem}: the mask differs from human's final map by {worst}"
        );
    }
}

#[test]
fn the_cli_answers_a_mask_and_no_detections() {
    let out = Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .env_remove("MODELDOCK_MODELS")
        .env("MODELDOCK_HOST", common::no_server())
        .env("XDG_CONFIG_HOME", std::env::temp_dir().join("modeldock-no-config"))
        .args(["infer", "--local", "--json", "--model", "selfie"])
        .arg(fixture("images/astronaut.png"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "infer failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["detections"].as_array().map(|a| a.len()), Some(0), "{v}");
    let masks = v["masks"].as_array().cloned().unwrap_or_default();
    assert_eq!(masks.len(), 1, "{line}");
    let mask: Mask = serde_json::from_value(masks[0].clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mask.label, "person");
    assert_eq!(mask.region, [0.0, 0.0, 512.0, 512.0]);
    // The astronaut fills the lower middle: the mask says person there and not at the top corners.
    assert!(mask.at(256.0, 400.0) > 200, "centre: {}", mask.at(256.0, 400.0));
    assert!(mask.at(10.0, 10.0) < 50 && mask.at(500.0, 10.0) < 50);
}
