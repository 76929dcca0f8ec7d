//! `modeldock infer` with a model that makes masks, driven as a user would:
//! `--json` carries the masks, `--save` composites them in the
//! `--mask-style` asked for. The model is a toy whose mask keeps the pixels
//! where red exceeds green.

mod common;

use std::path::Path;

use common::*;
use image::{Rgb, RgbImage};
use modeldock::vision::Mask;
use serde_json::Value;

fn seg_model(dir: &Path) {
    let seg = toy(dir, "seg", &[("mask_red", 1.0)]);
    let toml = seg.join("model.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("task = \"detect\"", "task = \"segment\"")).unwrap();
}

/// 64×48, red left half, grey right half.
fn picture(path: &Path) {
    let img = RgbImage::from_fn(64, 48, |x, _| if x < 32 { Rgb([255, 0, 0]) } else { Rgb([90, 90, 90]) });
    img.save(path).unwrap();
}

#[test]
fn infer_save_composites_masks_in_the_asked_style_and_json_carries_them() {
    let dir = tempfile::tempdir().unwrap();
    let (models, img, out) = (
        dir.path().join("models"),
        dir.path().join("a.png"),
        dir.path().join("out"),
    );
    seg_model(&models);
    picture(&img);
    let host = no_server();
    let env = [("MODELDOCK_HOST", host.as_str())];
    let m = models.display().to_string();
    let (code, stdout, stderr) = cli(
        &[
            "infer",
            "--models-dir",
            &m,
            "--model",
            "seg",
            "--json",
            "--save",
            &out.display().to_string(),
            "--mask-style",
            "replace:#0000ff",
            &img.display().to_string(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    let masks: Vec<Mask> = serde_json::from_value(line["masks"].clone()).unwrap();
    assert_eq!(masks.len(), 1);
    let saved = image::open(out.join("a.png")).unwrap().to_rgb8();
    // Kept where red, replaced by the colour elsewhere (each half 1536
    // pixels; the toy's box and label may cover some anywhere, so count
    // rather than pick pixels).
    let blue = saved.pixels().filter(|p| **p == Rgb([0, 0, 255])).count();
    let red = saved.pixels().filter(|p| **p == Rgb([255, 0, 0])).count();
    assert!(blue > 700 && red > 700, "blue {blue}, red {red}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("a.json")).unwrap()).unwrap();
    assert_eq!(json["masks"], line["masks"], "the JSON beside has the masks");

    let (code, _, stderr) = cli(
        &[
            "infer",
            "--models-dir",
            &m,
            "--model",
            "seg",
            "--save",
            &out.display().to_string(),
            "--mask-style",
            "sepia",
            &img.display().to_string(),
        ],
        &env,
    );
    assert_eq!(code, 2, "a bad style is a usage error");
    assert!(stderr.contains("mask style 'sepia'"), "{stderr}");
}
