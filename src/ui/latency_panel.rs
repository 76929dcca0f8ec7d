//! Latency panel: per-model percentiles, the last request's stage split, and
//! a history plot of per-request latency.

use eframe::egui;
use egui::{Color32, RichText};
use egui_plot::{Legend, Line, Plot};

use crate::client::Snapshot;

const STAGES: [(&str, Color32); 5] = [
    ("queue", Color32::from_rgb(158, 158, 158)),
    ("decode", Color32::from_rgb(66, 133, 244)),
    ("preprocess", Color32::from_rgb(244, 180, 0)),
    ("forward", Color32::from_rgb(219, 68, 55)),
    ("postprocess", Color32::from_rgb(15, 157, 88)),
];

pub fn ui(ui: &mut egui::Ui, snap: &Snapshot) {
    ui.heading("Latency");
    if snap.latency.is_empty() {
        ui.label("No requests yet.");
        return;
    }
    egui::Grid::new("latency-grid").striped(true).show(ui, |ui| {
        for h in [
            "Model",
            "Count",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "errors",
            "cache hits",
        ] {
            ui.label(RichText::new(h).strong());
        }
        ui.end_row();
        for l in &snap.latency {
            ui.label(&l.model);
            ui.label(l.count.to_string());
            for v in [l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms] {
                ui.label(format!("{v:.1}"));
            }
            ui.label(l.errors.to_string());
            ui.label(l.cache_hits.to_string());
            ui.end_row();
        }
    });
    for q in &snap.queue {
        ui.label(format!(
            "Queue, {}: p50 {:.1} ms · p99 {:.1} ms · max {:.1} ms ({} images)",
            q.class, q.p50_ms, q.p99_ms, q.max_ms, q.count
        ));
    }
    ui.separator();
    for l in &snap.latency {
        let t = &l.last;
        let parts = [t.queue, t.decode, t.preprocess, t.forward, t.postprocess];
        let sum: f64 = parts.iter().sum::<f64>().max(1e-9);
        ui.label(format!("{} — last request {:.1} ms", l.model, t.total));
        let (rect, _) = ui.allocate_exact_size(egui::vec2(ui.available_width(), 12.0), egui::Sense::hover());
        let mut x = rect.left();
        for (v, (name, c)) in parts.iter().zip(STAGES) {
            let w = rect.width() * (*v / sum) as f32;
            let seg = egui::Rect::from_min_size(egui::pos2(x, rect.top()), egui::vec2(w, rect.height()));
            ui.painter().rect_filled(seg, 0.0, c);
            if w > 1.0 {
                ui.interact(seg, ui.scope_id().with((l.model.as_str(), name)), egui::Sense::hover())
                    .on_hover_text(format!("{name}: {v:.2} ms"));
            }
            x += w;
        }
    }
    for m in &snap.models {
        let Some(sp) = m.remote.as_ref().and_then(|r| r.split) else {
            continue;
        };
        ui.label(format!(
            "{} on its server — round trip {:.1} ms = network {:.1} + queue {:.1} + compute {:.1} ms",
            m.id, sp.round_trip_ms, sp.network_ms, sp.queue_ms, sp.compute_ms
        ))
        .on_hover_text(format!(
            "Mean over the last {} requests; queue and compute from the server's statistics extension",
            sp.requests
        ));
    }
    ui.horizontal_wrapped(|ui| {
        for (name, c) in STAGES {
            ui.colored_label(c, name);
        }
    });
    Plot::new("latency-history")
        .height(140.0)
        .legend(Legend::default())
        .y_axis_label("ms")
        .allow_zoom(false)
        .allow_drag(false)
        .show(ui, |p| {
            for l in &snap.latency {
                let pts: Vec<[f64; 2]> = l.history_ms.iter().enumerate().map(|(i, v)| [i as f64, *v]).collect();
                p.line(Line::new(l.model.clone(), pts));
            }
        });
}
