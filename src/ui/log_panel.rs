//! Log panel: the app's own tracing events, filterable by level.

use eframe::egui;
use tracing::Level;

use super::log_capture::LogBuffer;

pub fn ui(ui: &mut egui::Ui, log: &LogBuffer, level: &mut Level) {
    ui.horizontal(|ui| {
        ui.strong("Log");
        egui::ComboBox::from_label("Level")
            .selected_text(level.to_string())
            .show_ui(ui, |ui| {
                for l in [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG] {
                    ui.selectable_value(level, l, l.to_string());
                }
            });
    });
    egui::ScrollArea::vertical()
        .stick_to_bottom(true)
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for l in log.lines(*level) {
                let color = match l.level {
                    Level::ERROR => ui.visuals().error_fg_color,
                    Level::WARN => ui.visuals().warn_fg_color,
                    _ => ui.visuals().text_color(),
                };
                ui.colored_label(color, format!("{:>5} {}", l.level, l.text));
            }
        });
}
