//! GPU / System panel: reads the telemetry sampler's snapshot only.

use eframe::egui;
use egui_plot::{Legend, Line, Plot};

use crate::cli::models_cmd::human_bytes;
use crate::telemetry::gpu::or_na;
use crate::telemetry::sampler::TelemetrySnapshot;

fn bar(ui: &mut egui::Ui, used: u64, total: u64, own: Option<u64>, label: &str) {
    let f = used as f32 / total.max(1) as f32;
    let own_txt = own
        .map(|o| format!(", this process {}", human_bytes(o)))
        .unwrap_or_default();
    ui.add(egui::ProgressBar::new(f).text(format!(
        "{label} {} / {}{own_txt}",
        human_bytes(used),
        human_bytes(total)
    )));
}

/// The look shared by the history plots: percentages, fixed view.
fn history_plot(p: Plot<'_>) -> Plot<'_> {
    p.height(110.0)
        .legend(Legend::default())
        .include_y(0.0)
        .include_y(100.0)
        .allow_zoom(false)
        .allow_drag(false)
}

pub fn ui(ui: &mut egui::Ui, t: &TelemetrySnapshot) {
    ui.heading("GPU / System");
    let Some(last) = t.latest() else {
        ui.label("Sampling…");
        return;
    };
    if last.gpus.is_empty() {
        ui.label(format!("No NVIDIA GPU (NVML {}). Showing CPU and memory.", t.nvml));
    }
    for g in &last.gpus {
        ui.label(egui::RichText::new(format!("GPU {} — {}", g.index, g.name)).strong());
        if let (Some(u), Some(tot)) = (g.memory_used_bytes, g.memory_total_bytes) {
            bar(ui, u, tot, g.own_memory_bytes, "VRAM");
        } else {
            ui.label("VRAM n/a");
        }
        ui.label(format!(
            "util {}% · {} °C · power {} / {} W · SM {} MHz",
            or_na(g.utilization_gpu_pct),
            or_na(g.temperature_c),
            or_na(g.power_w.map(|w| format!("{w:.0}"))),
            or_na(g.power_limit_w.map(|w| format!("{w:.0}"))),
            or_na(g.sm_clock_mhz)
        ));
        let idx = g.index;
        history_plot(Plot::new(("gpu-history", idx))).show(ui, |p| {
            let series = |f: &dyn Fn(&crate::telemetry::gpu::GpuSample) -> Option<f64>| -> Vec<[f64; 2]> {
                t.history
                    .iter()
                    .filter_map(|pt| {
                        let gs = pt.gpus.iter().find(|x| x.index == idx)?;
                        Some([pt.t, f(gs)?])
                    })
                    .collect()
            };
            p.line(Line::new(
                "VRAM %",
                series(&|g| Some(100.0 * g.memory_used_bytes? as f64 / g.memory_total_bytes?.max(1) as f64)),
            ));
            p.line(Line::new(
                "util %",
                series(&|g| g.utilization_gpu_pct.map(|u| u as f64)),
            ));
        });
    }
    let s = &last.system;
    ui.separator();
    ui.label(format!(
        "CPU {:.0}% ({} cores) · this process {:.0}%",
        s.cpu_pct,
        s.per_core_pct.len(),
        s.process_cpu_pct
    ));
    bar(
        ui,
        s.ram_used_bytes,
        s.ram_total_bytes,
        Some(s.process_rss_bytes),
        "RAM",
    );
    history_plot(Plot::new("system-history")).show(ui, |p| {
        let pts = |f: &dyn Fn(&crate::telemetry::system::SystemSample) -> f64| -> Vec<[f64; 2]> {
            t.history.iter().map(|pt| [pt.t, f(&pt.system)]).collect()
        };
        p.line(Line::new("CPU %", pts(&|s| s.cpu_pct as f64)));
        p.line(Line::new(
            "RAM %",
            pts(&|s| 100.0 * s.ram_used_bytes as f64 / s.ram_total_bytes.max(1) as f64),
        ));
        p.line(Line::new("RSS MiB", pts(&|s| s.process_rss_bytes as f64 / 1048576.0)));
    });
}
