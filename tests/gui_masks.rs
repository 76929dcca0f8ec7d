//! Masks in the Live panel and the Viewer, driven headless with
//! egui_kittest: the mask controls appear for a model whose manifest task
//! is `segment` (and not for a detector), and the composite follows the
//! mode and the threshold. The
//! model is a toy whose mask keeps the pixels where red exceeds green.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::app::{app_on, step_until};
use common::*;
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use image::{Rgb, RgbImage};
use modeldock::catalog::registry::Registry;
use modeldock::ui::app::ModeldockApp;
use modeldock::ui::live_panel::SourceChoice;
use modeldock::ui::mask_view::ModeChoice;

/// `seg` (task segment, a mask of what is red) and `plain` (a detector).
fn models(dir: &Path) {
    let seg = toy(dir, "seg", &[("mask_red", 1.0)]);
    let toml = seg.join("model.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("task = \"detect\"", "task = \"segment\"")).unwrap();
    toy(dir, "plain", &[]);
}

/// A 640×480 picture: red top-left quadrant, a green and blue checker elsewhere.
fn picture(dir: &Path) -> RgbImage {
    let img = RgbImage::from_fn(640, 480, |x, y| {
        if x < 320 && y < 240 {
            Rgb([255, 0, 0])
        } else if (x / 4 + y / 4) % 2 == 0 {
            Rgb([0, 200, 0])
        } else {
            Rgb([0, 0, 200])
        }
    });
    std::fs::create_dir_all(dir).unwrap();
    img.save(dir.join("frame.png")).unwrap();
    img
}

fn app(models: &Path, open: Vec<std::path::PathBuf>) -> Harness<'static, ModeldockApp> {
    let registry = Registry::discover(&[models.to_path_buf()]);
    app_on(registry, open, "seg", egui::vec2(1400.0, 900.0))
}

/// The composite once it was made for the controls' current choices.
fn current_composite(h: &mut Harness<'static, ModeldockApp>, what: &str) -> Arc<RgbImage> {
    step_until(h, what, |h| {
        let live = &h.state().live;
        live.masks
            .composite
            .as_ref()
            .is_some_and(|((_, g), _)| *g == live.mask_controls.generation)
    });
    let c = h.state().live.masks.composite.as_ref().map(|(_, img)| img.clone());
    c.unwrap_or_else(|| panic!("no composite for {what}"))
}

#[test]
fn the_live_panel_offers_mask_controls_for_a_segment_model_and_composites_with_them() {
    let dir = tempfile::tempdir().unwrap();
    models(&dir.path().join("models"));
    let frames = dir.path().join("frames");
    let original = picture(&frames);
    let mut h = app(&dir.path().join("models"), Vec::new());
    h.step();
    h.get_by_label("Live").click();
    h.state_mut().live.model = "plain".into();
    h.run_steps(2);
    assert!(
        h.query_by_label("Blur background").is_none(),
        "a detector makes no masks"
    );
    h.state_mut().live.model = "seg".into();
    h.run_steps(2);
    assert!(
        h.query_by_label("Blur background").is_some(),
        "task segment: the mask controls"
    );
    assert!(h.query_all_by_label_contains("Mask threshold").next().is_some());

    h.state_mut().live.choice = SourceChoice::Folder;
    h.state_mut().live.folder = frames.display().to_string();
    h.get_by_label("Start").click();
    h.run_steps(2);
    h.get_by_label("Blur background").click();
    h.run_steps(2);
    assert_eq!(h.state().live.mask_controls.choice, ModeChoice::Blur);
    let blurred = current_composite(&mut h, "the blurred composite");
    assert_eq!(blurred.dimensions(), (640, 480));
    // The red quadrant is what the mask keeps: exactly as it was.
    assert_eq!(*blurred.get_pixel(20, 20), Rgb([255, 0, 0]));
    // The checker around it is blurred.
    assert_ne!(blurred.get_pixel(500, 400), original.get_pixel(500, 400));

    // A higher threshold keeps less of the mask's soft edge: another composite.
    h.state_mut().live.mask_controls.threshold = 0.9;
    h.run_steps(1);
    let higher = current_composite(&mut h, "the composite at threshold 0.9");
    assert_ne!(*higher, *blurred, "the threshold changes the composite");
    assert_eq!(*higher.get_pixel(20, 20), Rgb([255, 0, 0]));
    h.get_by_label("Stop").click();
    h.run_steps(2);
}

#[test]
fn the_viewer_tints_what_the_mask_keeps_and_offers_the_controls() {
    let dir = tempfile::tempdir().unwrap();
    models(&dir.path().join("models"));
    let frames = dir.path().join("frames");
    let original = picture(&frames);
    let mut h = app(&dir.path().join("models"), vec![frames.join("frame.png")]);
    step_until(&mut h, "the tinted image", |h| {
        let v = &h.state().viewer;
        let id = v.images.first().and_then(|i| i.result.as_ref()).map(|r| r.request_id);
        v.masks.composite.as_ref().is_some_and(|((k, _), _)| Some(*k) == id)
    });
    assert!(h.query_by_label("Blur background").is_some(), "the mask controls");
    let tinted = h
        .state()
        .viewer
        .masks
        .composite
        .as_ref()
        .map(|(_, img)| img.clone())
        .unwrap();
    assert_eq!(tinted.dimensions(), (640, 480));
    assert_ne!(
        *tinted.get_pixel(20, 20),
        Rgb([255, 0, 0]),
        "the kept quadrant is tinted"
    );
    assert_eq!(
        tinted.get_pixel(500, 400),
        original.get_pixel(500, 400),
        "the rest as it was"
    );
}
