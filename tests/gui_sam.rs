//! The Viewer's prompt tool with MobileSAM, driven headless with
//! egui_kittest: a click on the image places a point in the object and a
//! mask comes back for it, a right click places one outside it, and Clear
//! prompt takes them away. The model is MobileSAM on random weights of a
//! seed (`models::sam_random`).

mod common;

use std::path::Path;

use common::app::{app_on, step_until};
use common::*;
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use modeldock::catalog::registry::Registry;
use modeldock::ui::app::ModeldockApp;

fn app(models: &Path, open: Vec<std::path::PathBuf>) -> Harness<'static, ModeldockApp> {
    let registry = Registry::discover(&[models.to_path_buf()]);
    app_on(registry, open, "msam", egui::vec2(1400.0, 1000.0))
}

/// Clicks image pixel `at` of the 1024² picture on the canvas with `button`.
fn click(h: &mut Harness<'static, ModeldockApp>, at: [f32; 2], button: egui::PointerButton) {
    let r = h.state().viewer.image_rect.expect("the image is on the canvas");
    let pos = egui::pos2(
        r.min.x + at[0] / 1024.0 * r.width(),
        r.min.y + at[1] / 1024.0 * r.height(),
    );
    for pressed in [true, false] {
        h.input_mut().events.push(egui::Event::PointerMoved(pos));
        h.input_mut().events.push(egui::Event::PointerButton {
            pos,
            button,
            pressed,
            modifiers: egui::Modifiers::NONE,
        });
        h.step();
    }
}

fn masks_of_answer(h: &Harness<'static, ModeldockApp>) -> Option<usize> {
    let img = h.state().viewer.images.first()?;
    if img.request.is_some() {
        return None;
    }
    img.result.as_ref().map(|r| r.output.masks.len())
}

#[test]
fn clicks_place_points_and_each_brings_a_mask_back() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    sam_folder(&models);
    let img = dir.path().join("shapes.png");
    std::fs::copy(fixture("sam/shapes-1024.png"), &img).unwrap();
    let mut h = app(&models, vec![img]);
    // Opening the image encodes it: an answer with no mask.
    step_until(&mut h, "the first answer", |h| masks_of_answer(h) == Some(0));
    assert!(h.state().viewer.model_takes_prompts, "MobileSAM takes prompts");
    assert!(h.query_by_label("Clear prompt").is_some(), "the prompt bar");

    click(&mut h, [300.0, 320.0], egui::PointerButton::Primary);
    {
        let p = &h.state().viewer.images[0].prompt;
        assert_eq!(p.points.len(), 1, "a click places a point");
        assert!(p.points[0].positive);
        assert!(
            (p.points[0].x - 300.0).abs() < 4.0 && (p.points[0].y - 320.0).abs() < 4.0,
            "{p:?}"
        );
    }
    step_until(&mut h, "the mask of one point", |h| masks_of_answer(h) == Some(1));

    click(&mut h, [700.0, 640.0], egui::PointerButton::Secondary);
    assert_eq!(h.state().viewer.images[0].prompt.points.len(), 2);
    assert!(
        !h.state().viewer.images[0].prompt.points[1].positive,
        "a right click is outside"
    );
    step_until(&mut h, "the mask of two points", |h| {
        masks_of_answer(h) == Some(1)
            && h.state().viewer.images[0]
                .result
                .as_ref()
                .is_some_and(|r| r.output.masks[0].width == 1024)
    });

    h.get_by_label("Clear prompt").click();
    h.run_steps(2);
    assert!(h.state().viewer.images[0].prompt.is_empty(), "cleared");
    step_until(&mut h, "no mask once cleared", |h| masks_of_answer(h) == Some(0));
}
