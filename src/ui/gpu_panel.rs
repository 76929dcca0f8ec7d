//! GPU / System panel: reads the telemetry sampler's snapshot only.

use eframe::egui;
use egui_plot::{Legend, Line, Plot};

use crate::telemetry::gpu::{or_na, GpuSample};
use crate::telemetry::sampler::TelemetrySnapshot;
use crate::telemetry::system::SystemSample;
use crate::units::human_bytes;

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

/// What a history plot's y axis measures. Each unit gets its own plot, so a
/// line in MiB never flattens the percentages (as nvitop draws them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// 0–100, fixed range.
    Percent,
    /// Mebibytes, from 0 up to the largest value.
    MiB,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::MiB => "MiB",
        }
    }
}

/// One plot: lines that share a unit, as (name, [t, value] points).
pub struct HistoryPlot {
    pub unit: Unit,
    pub lines: Vec<(String, Vec<[f64; 2]>)>,
}

const MIB: f64 = 1048576.0;

/// The plots of GPU `idx`: VRAM % and utilisation %; VRAM used and this process's VRAM in MiB.
pub fn gpu_plots(t: &TelemetrySnapshot, idx: u32) -> Vec<HistoryPlot> {
    let series = |f: &dyn Fn(&GpuSample) -> Option<f64>| -> Vec<[f64; 2]> {
        t.history
            .iter()
            .filter_map(|pt| {
                let gs = pt.gpus.iter().find(|x| x.index == idx)?;
                Some([pt.t, f(gs)?])
            })
            .collect()
    };
    let pct = HistoryPlot {
        unit: Unit::Percent,
        lines: vec![
            (
                "VRAM %".into(),
                series(&|g| Some(100.0 * g.memory_used_bytes? as f64 / g.memory_total_bytes?.max(1) as f64)),
            ),
            ("util %".into(), series(&|g| g.utilization_gpu_pct.map(f64::from))),
        ],
    };
    let mib = HistoryPlot {
        unit: Unit::MiB,
        lines: vec![
            (
                "VRAM used MiB".into(),
                series(&|g| Some(g.memory_used_bytes? as f64 / MIB)),
            ),
            (
                "this process MiB".into(),
                series(&|g| Some(g.own_memory_bytes? as f64 / MIB)),
            ),
        ],
    };
    vec![pct, mib]
}

/// The system plots: CPU % and RAM %; this process's RSS in MiB.
pub fn system_plots(t: &TelemetrySnapshot) -> Vec<HistoryPlot> {
    let pts = |f: &dyn Fn(&SystemSample) -> f64| -> Vec<[f64; 2]> {
        t.history.iter().map(|pt| [pt.t, f(&pt.system)]).collect()
    };
    vec![
        HistoryPlot {
            unit: Unit::Percent,
            lines: vec![
                ("CPU %".into(), pts(&|s| s.cpu_pct as f64)),
                (
                    "RAM %".into(),
                    pts(&|s| 100.0 * s.ram_used_bytes as f64 / s.ram_total_bytes.max(1) as f64),
                ),
            ],
        },
        HistoryPlot {
            unit: Unit::MiB,
            lines: vec![("RSS MiB".into(), pts(&|s| s.process_rss_bytes as f64 / MIB))],
        },
    ]
}

/// Draws one history plot; `id` must be unique in the panel.
fn show_plot(ui: &mut egui::Ui, id: impl std::hash::Hash + std::fmt::Debug, plot: HistoryPlot) {
    let mut p = Plot::new((id, plot.unit.label()))
        .height(90.0)
        .legend(Legend::default())
        .y_axis_label(plot.unit.label())
        .include_y(0.0)
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false);
    if plot.unit == Unit::Percent {
        p = p.include_y(100.0);
    }
    p.show(ui, |p| {
        for (name, points) in plot.lines {
            if !points.is_empty() {
                p.line(Line::new(name, points));
            }
        }
    });
}

/// The attached server's GPUs, from its Prometheus metrics (Triton's
/// `nv_gpu_*` gauges).
pub fn server_ui(ui: &mut egui::Ui, name: &str, base: &str, gpu: Option<Option<crate::backend::GpuMetrics>>) {
    ui.heading(format!("Server GPUs — {name}"));
    match gpu {
        None => {
            ui.label(format!("Reading {base}'s metrics…"));
        }
        Some(None) => {
            ui.label(format!(
                "{base} reports no GPU metrics (a CPU-only server, or its metrics endpoint is elsewhere: --remote-metrics)."
            ));
        }
        Some(Some(g)) => {
            if let (Some(u), Some(t)) = (g.memory_used_bytes, g.memory_total_bytes) {
                bar(ui, u as u64, t as u64, None, "VRAM (server)");
            }
            ui.label(format!(
                "{} GPU{} · util {} · power {} W",
                g.gpus,
                if g.gpus == 1 { "" } else { "s" },
                or_na(g.utilization.map(|u| format!("{:.0}%", 100.0 * u))),
                or_na(g.power_watts.map(|w| format!("{w:.0}")))
            ));
        }
    }
    ui.label(egui::RichText::new("This machine:").strong());
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
        for plot in gpu_plots(t, g.index) {
            show_plot(ui, ("gpu-history", g.index), plot);
        }
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
    for plot in system_plots(t) {
        show_plot(ui, "system-history", plot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::sampler::Point;

    fn snapshot() -> TelemetrySnapshot {
        let mut t = TelemetrySnapshot::default();
        for i in 0..3u64 {
            t.history.push_back(Point {
                t: i as f64,
                system: SystemSample {
                    cpu_pct: 40.0,
                    per_core_pct: vec![40.0; 4],
                    ram_total_bytes: 16 << 30,
                    ram_used_bytes: 8 << 30,
                    process_rss_bytes: (900 + i) << 20,
                    process_cpu_pct: 10.0,
                },
                gpus: Vec::new(),
            });
        }
        t
    }

    #[test]
    fn percentages_and_mib_are_in_separate_plots() {
        let plots = system_plots(&snapshot());
        for p in &plots {
            for (name, points) in &p.lines {
                assert!(
                    name.ends_with(p.unit.label()),
                    "{name} drawn on a {} axis",
                    p.unit.label()
                );
                if p.unit == Unit::Percent {
                    assert!(points.iter().all(|q| (0.0..=100.0).contains(&q[1])), "{name}");
                }
            }
        }
        let pct = plots.iter().find(|p| p.unit == Unit::Percent).map(|p| p.lines.len());
        let mib = plots.iter().find(|p| p.unit == Unit::MiB);
        assert_eq!(pct, Some(2), "CPU % and RAM % together");
        let rss = mib.map(|p| p.lines[0].1[2][1]);
        assert_eq!(rss, Some(902.0), "RSS in MiB on its own axis");
    }
}
