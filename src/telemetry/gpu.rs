//! Per-GPU readings through NVML. A query a device does not support (MIG,
//! WDDM, old boards) is `None` — shown as "n/a" — never an error loop.

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    /// True for this process.
    pub own: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    pub uuid: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    pub utilization_gpu_pct: Option<u32>,
    pub utilization_memory_pct: Option<u32>,
    pub temperature_c: Option<u32>,
    pub power_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub processes: Vec<GpuProcess>,
    /// Memory this process uses on the device (from the process table).
    pub own_memory_bytes: Option<u64>,
}

/// NVML, opened once; `status` says "ok" or why not.
pub struct GpuProbe {
    nvml: Option<Nvml>,
    pub status: String,
}

impl GpuProbe {
    pub fn open() -> GpuProbe {
        match super::nvml::open() {
            Ok(n) => GpuProbe {
                nvml: Some(n),
                status: "ok".to_string(),
            },
            Err(e) => GpuProbe {
                nvml: None,
                status: format!("unavailable: {e}"),
            },
        }
    }

    pub fn available(&self) -> bool {
        self.nvml.is_some()
    }

    pub fn sample(&self) -> Vec<GpuSample> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let me = std::process::id();
        let count = nvml.device_count().unwrap_or(0);
        let mut out = Vec::new();
        for index in 0..count {
            let Ok(d) = nvml.device_by_index(index) else { continue };
            let mem = d.memory_info().ok();
            let util = d.utilization_rates().ok();
            let processes: Vec<GpuProcess> = d
                .running_compute_processes()
                .unwrap_or_default()
                .into_iter()
                .map(|p| GpuProcess {
                    pid: p.pid,
                    used_memory_bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    },
                    own: p.pid == me,
                })
                .collect();
            let own = processes.iter().find(|p| p.own).and_then(|p| p.used_memory_bytes);
            out.push(GpuSample {
                index,
                name: d.name().unwrap_or_else(|_| "n/a".to_string()),
                uuid: d.uuid().ok(),
                memory_total_bytes: mem.as_ref().map(|m| m.total),
                memory_used_bytes: mem.as_ref().map(|m| m.used),
                memory_free_bytes: mem.as_ref().map(|m| m.free),
                utilization_gpu_pct: util.as_ref().map(|u| u.gpu),
                utilization_memory_pct: util.as_ref().map(|u| u.memory),
                temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                power_w: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
                power_limit_w: d.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0),
                sm_clock_mhz: d.clock_info(Clock::SM).ok(),
                memory_clock_mhz: d.clock_info(Clock::Memory).ok(),
                processes,
                own_memory_bytes: own,
            });
        }
        out
    }
}

/// "n/a" for a value the device does not report.
pub fn or_na<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "n/a".to_string())
}
