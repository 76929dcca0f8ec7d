//! Nail AR in the Live panel, driven headless with egui_kittest: the polish
//! toggle and colour picker, and the nails painted on a hand that sits on
//! the synthetic source's known path.

mod common;

use common::app::app_on;
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use modeldock::camera::synthetic::SyntheticSource;
use modeldock::catalog::registry::Registry;
use modeldock::ui::app::ModeldockApp;
use modeldock::ui::live_panel::{LivePanel, DEFAULT_POLISH, POLISH_LABEL, POLISH_PRESETS};
use modeldock::vision::nails::{CENTRE_ALONG, FINGERTIP_SEGMENTS};
use modeldock::vision::overlay::ImageToScreen;
use modeldock::vision::Detection;

fn app() -> Harness<'static, ModeldockApp> {
    let registry = Registry::discover(&[]);
    let registry = Registry {
        entries: registry
            .entries
            .into_iter()
            .filter(|e| e.manifest.id == "face-detector")
            .collect(),
        problems: Vec::new(),
    };
    app_on(registry, Vec::new(), "face-detector", egui::vec2(1400.0, 900.0))
}

#[test]
fn the_live_panel_has_a_nails_toggle_and_a_polish_colour_picker() {
    let mut h = app();
    h.step();
    h.get_by_label("Live").click();
    h.run_steps(2);
    // The toggle, on by default, and the colour button showing the polish.
    assert!(h.state().live.show_nails, "nails on by default");
    let well = h.get_by_label(POLISH_LABEL);
    let hex = |c: egui::Color32| format!("#{:02x}{:02x}{:02x}", c.r(), c.g(), c.b());
    assert_eq!(well.value(), Some(hex(DEFAULT_POLISH)));
    h.get_by_label("Nails").click();
    h.run_steps(2);
    assert!(!h.state().live.show_nails, "the toggle turns nails off");
    h.get_by_label("Nails").click();
    h.run_steps(2);
    assert!(h.state().live.show_nails, "and on again");
    // A new colour shows on the button.
    let pink = egui::Color32::from_rgb(255, 105, 180);
    h.state_mut().live.polish = pink;
    h.run_steps(2);
    assert_eq!(h.get_by_label(POLISH_LABEL).value(), Some(hex(pink)));
    // Clicking it opens the picker: swatches and hue, saturation and brightness.
    assert!(h.query_by_label("Nude").is_none());
    h.get_by_label(POLISH_LABEL).click();
    h.run_steps(3);
    for name in ["Hue", "Saturation", "Brightness"] {
        assert!(h.query_all_by_label_contains(name).next().is_some(), "a {name} slider");
    }
    h.get_by_label("Nude").click();
    h.run_steps(2);
    let nude = POLISH_PRESETS
        .iter()
        .find(|p| p.0 == "Nude")
        .map(|p| p.1)
        .unwrap_or_else(|| panic!("a nude swatch"));
    assert_eq!(h.state().live.polish, nude);
    assert_eq!(h.get_by_label(POLISH_LABEL).value(), Some(hex(nude)));
    assert!(h.query_by_label("Smooth").is_some(), "the smoothing toggle");
}

/// A hand detection where the synthetic source's hand is in frame `i`.
fn synthetic_hand(src: &SyntheticSource, i: u64) -> Detection {
    let kp = src.hand_landmarks(i).to_vec();
    let (lo, hi) = kp.iter().fold(([f32::MAX; 2], [f32::MIN; 2]), |(l, h), p| {
        ([l[0].min(p[0]), l[1].min(p[1])], [h[0].max(p[0]), h[1].max(p[1])])
    });
    Detection {
        label: "right".into(),
        class_id: None,
        score: 0.99,
        bbox: [lo[0], lo[1], hi[0], hi[1]],
        keypoints: kp,
    }
}

/// Filled polygons of colour `c` painted last frame, as their vertices' centroids.
fn filled(h: &Harness<'_, LivePanel>, c: egui::Color32) -> Vec<egui::Pos2> {
    h.output()
        .shapes
        .iter()
        .filter_map(|s| match &s.shape {
            egui::Shape::Path(p) if p.closed && p.fill == c && !p.points.is_empty() => {
                let sum = p.points.iter().fold(egui::Vec2::ZERO, |a, q| a + q.to_vec2());
                Some((sum / p.points.len() as f32).to_pos2())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn nails_are_painted_on_each_fingertip_of_the_synthetic_hand() {
    let src = SyntheticSource::new(640, 480, 30.0).unwrap_or_else(|e| panic!("{e}"));
    let frame = 37;
    let hand = synthetic_hand(&src, frame);
    // The frame shown at half size, offset, as the panel would.
    let map = ImageToScreen::fit([640.0, 480.0], [20.0, 10.0, 320.0, 240.0]);
    let dets = vec![hand.clone()];
    let mut h = Harness::new_ui_state(
        move |ui, panel: &mut LivePanel| panel.draw_overlay(ui.painter(), &map, &dets),
        LivePanel::default(),
    );
    h.run_steps(1);
    let polish = h.state().polish;
    let nails = filled(&h, polish);
    // The hand's thumb is tucked under its fingers: no nail painted on it.
    assert_eq!(nails.len(), 4, "one nail per visible finger");
    // Each nail sits on its fingertip segment, toward the tip (the outline is
    // fuller at the cuticle end, so its vertex centroid sits a little back).
    for (&(j, t), got) in FINGERTIP_SEGMENTS[1..].iter().zip(&nails) {
        let (a, b) = (hand.keypoints[j], hand.keypoints[t]);
        let at = |f: f32| {
            let p = map.point([a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])]);
            egui::pos2(p[0], p[1])
        };
        let seg = (at(1.0) - at(0.0)).length();
        let err = (*got - at(CENTRE_ALONG)).length();
        assert!(
            err < 0.25 * seg,
            "nail {t}: {got:?} vs {:?} ({err:.1} of {seg:.1})",
            at(CENTRE_ALONG)
        );
    }
    // The gloss: four lighter shapes, one inside each nail.
    let gloss: usize = h
        .output()
        .shapes
        .iter()
        .filter(|s| matches!(&s.shape, egui::Shape::Path(p) if p.closed && p.fill.a() == 170))
        .count();
    assert_eq!(gloss, 4);

    // Another colour paints in that colour.
    let gold = egui::Color32::from_rgb(212, 175, 55);
    h.state_mut().polish = gold;
    h.run_steps(1);
    assert_eq!(filled(&h, gold).len(), 4);
    // Off: no nails, the hand's boxes and landmarks still drawn.
    h.state_mut().show_nails = false;
    h.run_steps(1);
    assert!(filled(&h, gold).is_empty());
    let circles = h
        .output()
        .shapes
        .iter()
        .filter(|s| matches!(s.shape, egui::Shape::Circle(_)))
        .count();
    assert_eq!(circles, 21, "the 21 landmarks");
}

#[test]
fn no_nails_on_a_face_or_a_body() {
    let face = Detection {
        label: "face".into(),
        class_id: None,
        score: 0.9,
        bbox: [10.0, 10.0, 110.0, 110.0],
        keypoints: (0..68).map(|i| [20.0 + i as f32, 50.0, 1.0]).collect(),
    };
    let body = Detection {
        label: "person".into(),
        class_id: Some(0),
        score: 0.8,
        bbox: [200.0, 10.0, 300.0, 400.0],
        keypoints: (0..17).map(|i| [220.0, 20.0 + 20.0 * i as f32, 0.9]).collect(),
    };
    let map = ImageToScreen::fit([640.0, 480.0], [0.0, 0.0, 640.0, 480.0]);
    let dets = vec![face, body];
    let mut h = Harness::new_ui_state(
        move |ui, panel: &mut LivePanel| panel.draw_overlay(ui.painter(), &map, &dets),
        LivePanel::default(),
    );
    h.run_steps(1);
    let polish = h.state().polish;
    assert!(filled(&h, polish).is_empty());
}
