//! The Live panel's hand-tracking row, headless with egui_kittest: it shows
//! the Live model's hands manifest's `max_hands` and `skip_frames`, and
//! disappears for a Live model without hands.

mod common;

use common::app::app_on;
use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use modeldock::catalog::registry::Registry;
use modeldock::live::TrackOptions;
use modeldock::ui::app::ModeldockApp;
use modeldock::ui::live_tracking::{MAX_HANDS_LABEL, SKIP_FRAMES_LABEL};

/// The manifest's values: neither the built-in manifest's nor the tracker's defaults.
const MAX_HANDS: f64 = 3.0;
const SKIP_FRAMES: f64 = 7.0;

fn app() -> Harness<'static, ModeldockApp> {
    let registry = Registry::discover(&[]);
    let mut entries: Vec<_> = registry
        .entries
        .into_iter()
        .filter(|e| e.manifest.id == "hands" || e.manifest.id == "face-detector")
        .collect();
    for e in entries.iter_mut().filter(|e| e.manifest.id == "hands") {
        e.manifest.options.insert("max_hands".into(), MAX_HANDS);
        e.manifest.options.insert("skip_frames".into(), SKIP_FRAMES);
    }
    let registry = Registry {
        entries,
        problems: Vec::new(),
    };
    app_on(registry, Vec::new(), "face-detector", egui::vec2(1400.0, 900.0))
}

/// The number a spin button named `label` shows.
fn shown(h: &Harness<'static, ModeldockApp>, label: &str) -> Option<f64> {
    h.get_by_role_and_label(Role::SpinButton, label)
        .accesskit_node()
        .numeric_value()
}

#[test]
fn the_tracking_row_shows_the_hands_manifests_max_hands_and_skip_frames() {
    let d = TrackOptions::default();
    assert!(MAX_HANDS != d.max_hands as f64 && SKIP_FRAMES != d.skip_frames as f64);
    let mut h = app();
    h.step();
    h.get_by_label("Live").click();
    h.run_steps(3);
    // The default Live model is hands + faces: its hands model's values.
    assert!(h.state().live.model.contains("hands"), "{}", h.state().live.model);
    assert_eq!(shown(&h, MAX_HANDS_LABEL), Some(MAX_HANDS));
    assert_eq!(shown(&h, SKIP_FRAMES_LABEL), Some(SKIP_FRAMES));
    // A value the user changes stays while the model does ...
    if let Some(t) = h.state_mut().live.tracking.as_mut() {
        t.max_hands = 1;
    }
    h.run_steps(2);
    assert_eq!(shown(&h, MAX_HANDS_LABEL), Some(1.0));
    // ... a model without hands has no row ...
    h.state_mut().live.model = "face-detector".into();
    h.run_steps(2);
    assert!(
        h.query_by_label(MAX_HANDS_LABEL).is_none(),
        "no tracking row without hands"
    );
    // ... and the hands model again shows its manifest's values.
    h.state_mut().live.model = "hands".into();
    h.run_steps(2);
    assert_eq!(shown(&h, MAX_HANDS_LABEL), Some(MAX_HANDS));
    assert_eq!(shown(&h, SKIP_FRAMES_LABEL), Some(SKIP_FRAMES));
}
