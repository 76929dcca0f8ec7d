//! The Live panel's hand-tracking row: how many hands are tracked at most
//! and how many frames pass between palm detections, shown for the Live
//! model's hands model with its manifest's `max_hands` and `skip_frames`
//! until the user changes them (see `live::hand_tracker`).

use eframe::egui;

use crate::client::Snapshot;
use crate::live::hand_tracker::{hands_model, track_options};
use crate::live::TrackOptions;

/// The accessible labels of the two values.
pub const MAX_HANDS_LABEL: &str = "Max hands";
pub const SKIP_FRAMES_LABEL: &str = "Skip frames";

/// Tracking settings for one hands model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackingChoice {
    /// The hands model whose manifest gave the starting values.
    pub model: String,
    pub max_hands: usize,
    pub skip_frames: u32,
}

impl TrackingChoice {
    /// The choice for the Live model `model` (an id or an `a+b` combo): kept
    /// while its hands model stays the same, else that model's manifest
    /// values; `None` without a hands model.
    pub fn follow(current: Option<TrackingChoice>, snapshot: &Snapshot, model: &str) -> Option<TrackingChoice> {
        let models = crate::live::model_list(model);
        let id = hands_model(snapshot, &models)?;
        if let Some(c) = current.filter(|c| c.model == id) {
            return Some(c);
        }
        let o = track_options(snapshot, None, &models)?;
        Some(TrackingChoice {
            model: id.to_string(),
            max_hands: o.max_hands,
            skip_frames: o.skip_frames,
        })
    }

    /// `options` with this choice's values.
    pub fn apply(&self, options: TrackOptions) -> TrackOptions {
        TrackOptions {
            max_hands: self.max_hands,
            skip_frames: self.skip_frames,
            ..options
        }
    }

    /// The two values, editable (they apply from the next Start).
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let l = ui.label(MAX_HANDS_LABEL);
            ui.add(egui::DragValue::new(&mut self.max_hands).range(range("max_hands")))
                .labelled_by(l.id)
                .on_hover_text(format!(
                    "Hands tracked at most ({}'s max_hands; from the next Start)",
                    self.model
                ));
            let l = ui.label(SKIP_FRAMES_LABEL);
            ui.add(egui::DragValue::new(&mut self.skip_frames).range(range("skip_frames")))
                .labelled_by(l.id)
                .on_hover_text(format!(
                    "Frames between palm detections while fewer hands are tracked ({}'s skip_frames)",
                    self.model
                ));
        });
    }
}

/// The hands arch's documented range of option `key` (the manifest's bounds).
fn range(key: &str) -> std::ops::RangeInclusive<f64> {
    let (lo, hi) = crate::catalog::Arch::Hands.option_range(key).unwrap_or((1.0, 1000.0));
    lo..=hi
}
