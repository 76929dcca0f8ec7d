//! Models panel: every registered model, its state and memory, with Load /
//! Unload / Pin / Retry. Reads the engine snapshot; sends commands.

use eframe::egui;
use egui::{Color32, RichText};

use crate::client::Client;
use crate::client::{ModelState, ModelStatus, RemoteStatus, Snapshot};
use crate::units::human_bytes;

pub fn palette(i: usize) -> Color32 {
    const C: [Color32; 8] = [
        Color32::from_rgb(66, 133, 244),
        Color32::from_rgb(219, 68, 55),
        Color32::from_rgb(244, 180, 0),
        Color32::from_rgb(15, 157, 88),
        Color32::from_rgb(171, 71, 188),
        Color32::from_rgb(0, 172, 193),
        Color32::from_rgb(255, 112, 67),
        Color32::from_rgb(158, 157, 36),
    ];
    C[i % C.len()]
}

fn ago(ms: u64) -> String {
    if ms < 1000 {
        "just now".into()
    } else if ms < 60_000 {
        format!("{}s ago", ms / 1000)
    } else {
        format!("{}m ago", ms / 60_000)
    }
}

fn countdown(ms: u64) -> String {
    format!("{}:{:02}", ms / 60_000, (ms / 1000) % 60)
}

/// The budget bar: resident bytes vs budget, one coloured segment per model.
fn budget_bar(ui: &mut egui::Ui, snap: &Snapshot) {
    let used = snap.used_bytes;
    ui.label(format!(
        "Budget: {} of {} ({:.0}%)",
        human_bytes(used),
        human_bytes(snap.budget_bytes),
        100.0 * used as f64 / snap.budget_bytes.max(1) as f64
    ));
    let (rect, _) = ui.allocate_exact_size(egui::vec2(ui.available_width(), 14.0), egui::Sense::hover());
    let p = ui.painter();
    p.rect_filled(rect, 3.0, ui.visuals().extreme_bg_color);
    let mut x = rect.left();
    for (i, m) in snap.models.iter().enumerate() {
        if !m.state.in_memory() {
            continue;
        }
        let w = rect.width() * m.predicted_bytes as f32 / snap.budget_bytes.max(1) as f32;
        let seg = egui::Rect::from_min_size(egui::pos2(x, rect.top()), egui::vec2(w.max(1.0), rect.height()));
        p.rect_filled(seg, 0.0, palette(i));
        x += w;
    }
}

/// How far a load (or its download) has come, 0..1.
fn load_fraction(m: &ModelStatus) -> f32 {
    if m.bytes_total > 0 {
        m.bytes_done as f32 / m.bytes_total as f32
    } else {
        0.0
    }
}

fn state_cell(ui: &mut egui::Ui, engine: &Client, m: &ModelStatus) {
    match m.state {
        ModelState::Loading if m.downloading => {
            let f = load_fraction(m);
            let eta = m
                .eta_ms
                .map(|e| format!(" · {:.0} s", (e as f64 / 1000.0).ceil()))
                .unwrap_or_default();
            ui.add(
                egui::ProgressBar::new(f)
                    .desired_width(180.0)
                    .text(format!("Downloading {:.0}%{eta}", 100.0 * f)),
            )
            .on_hover_text(format!(
                "Downloading the weights: {} / {}; the load follows",
                human_bytes(m.bytes_done),
                human_bytes(m.bytes_total)
            ));
        }
        ModelState::Loading => {
            let f = load_fraction(m);
            let eta = m
                .eta_ms
                .map(|e| format!(", ETA {:.1} s", e as f64 / 1000.0))
                .unwrap_or_default();
            ui.add(egui::ProgressBar::new(f).desired_width(180.0).text(format!(
                "Loading {} / {}{eta}",
                human_bytes(m.bytes_done),
                human_bytes(m.bytes_total)
            )));
        }
        ModelState::Failed => {
            ui.vertical(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, "Failed");
                if let Some(r) = &m.failed_reason {
                    ui.label(RichText::new(r).small());
                }
                if ui.button("Retry").clicked() {
                    let _ = engine.load(&m.id);
                }
            });
        }
        s => {
            ui.label(s.to_string());
        }
    }
}

/// Where a remote model's network runs, the server's state for it, and why
/// a raw model is not offered for images.
fn remote_lines(ui: &mut egui::Ui, r: &RemoteStatus) {
    ui.label(RichText::new(format!("on {}", r.backend)).small().weak());
    if let Some(s) = &r.server_state {
        ui.label(RichText::new(format!("server: {s}")).small());
    }
    if let Some(u) = &r.unreachable {
        ui.colored_label(ui.visuals().warn_fg_color, RichText::new(u).small());
    }
    if r.raw {
        ui.label(RichText::new("raw tensors: not offered for images").small().weak())
            .on_hover_text(crate::models::remote_net::no_decoder(&r.backend));
    }
}

/// Draws the panel; `selected` is the row keyboard shortcuts act on.
pub fn ui(ui: &mut egui::Ui, engine: &Client, snap: &Snapshot, selected: &mut Option<String>) {
    ui.heading("Models");
    budget_bar(ui, snap);
    ui.add_space(6.0);
    egui::ScrollArea::both().auto_shrink([false, false]).show(ui, |ui| {
        egui::Grid::new("models-grid")
            .striped(true)
            .num_columns(9)
            .show(ui, |ui| {
                for h in [
                    "Model",
                    "",
                    "",
                    "State",
                    "Memory (pred / meas)",
                    "Device",
                    "Last used",
                    "Keep-alive",
                    "Task",
                ] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                for (i, m) in snap.models.iter().enumerate() {
                    let is_sel = selected.as_deref() == Some(m.id.as_str());
                    ui.horizontal(|ui| {
                        let (r, _) = ui.allocate_exact_size(egui::vec2(8.0, 8.0), egui::Sense::hover());
                        ui.painter().rect_filled(r, 2.0, palette(i));
                        if ui.selectable_label(is_sel, &m.name).on_hover_text(&m.id).clicked() {
                            *selected = Some(m.id.clone());
                        }
                    });
                    match m.state {
                        ModelState::Resident | ModelState::Loading => {
                            if ui.button("Unload").clicked() {
                                let _ = engine.unload(&m.id);
                            }
                        }
                        // Leaving once its requests finish: a load keeps it.
                        ModelState::Unloading => {
                            if ui
                                .button("Keep")
                                .on_hover_text("Its requests are finishing before it leaves; keep it loaded")
                                .clicked()
                            {
                                let _ = engine.load(&m.id);
                            }
                        }
                        // A load downloads the weights first, then the usual
                        // budget and residency rules apply.
                        _ if m.weights_missing.is_some() && m.download_bytes.is_some() => {
                            let size = m.download_bytes.unwrap_or(0);
                            let text = if size > 0 {
                                format!("Download ({})", human_bytes(size))
                            } else {
                                "Download".to_string()
                            };
                            if ui
                                .button(text)
                                .on_hover_text(m.weights_missing.as_deref().unwrap_or_default())
                                .clicked()
                            {
                                let _ = engine.load(&m.id);
                            }
                        }
                        _ if m.weights_missing.is_some() => {
                            ui.label(RichText::new("no weights").weak())
                                .on_hover_text(m.weights_missing.as_deref().unwrap_or_default());
                        }
                        _ => {
                            if ui.button("Load").clicked() {
                                let _ = engine.load(&m.id);
                            }
                        }
                    }
                    let mut pinned = m.pinned;
                    if ui
                        .checkbox(&mut pinned, "Pin")
                        .on_hover_text("Pinned models are never evicted")
                        .changed()
                    {
                        let _ = engine.pin(&m.id, pinned);
                    }
                    ui.vertical(|ui| {
                        state_cell(ui, engine, m);
                        let queued = m.queued + m.waiting;
                        if queued > 0 {
                            ui.label(RichText::new(format!("{queued} queued")).weak())
                                .on_hover_text("Images waiting for their turn or for this model's load");
                        }
                        if let Some(r) = &m.remote {
                            remote_lines(ui, r);
                        }
                    });
                    ui.vertical(|ui| {
                        ui.label(format!(
                            "{} / {}",
                            human_bytes(m.predicted_bytes),
                            m.measured_bytes.map(human_bytes).unwrap_or_else(|| "–".into())
                        ));
                        if !m.precision.is_empty() && m.precision != "f32" {
                            ui.label(RichText::new(&m.precision).weak())
                                .on_hover_text("What the network computes in, and how its weights are stored");
                        }
                    });
                    ui.label(if m.device.is_empty() { "–" } else { &m.device });
                    ui.label(m.last_used_ms_ago.map(ago).unwrap_or_else(|| "never".into()));
                    ui.label(match m.keep_alive_left_ms {
                        Some(ms) => countdown(ms),
                        None => m.keep_alive.clone(),
                    });
                    ui.label(m.task.name());
                    ui.end_row();
                }
            });
    });
}
