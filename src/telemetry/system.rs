//! CPU, RAM and this process through sysinfo (on every machine).

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SystemSample {
    pub cpu_pct: f32,
    pub per_core_pct: Vec<f32>,
    pub ram_total_bytes: u64,
    pub ram_used_bytes: u64,
    pub process_rss_bytes: u64,
    pub process_cpu_pct: f32,
}

pub struct SystemProbe {
    sys: Option<System>,
    pid: Option<Pid>,
}

impl SystemProbe {
    pub fn open() -> SystemProbe {
        let sys = System::new().ok();
        SystemProbe {
            sys,
            pid: sysinfo::get_current_pid().ok(),
        }
    }

    /// CPU figures are deltas since the previous call (the first is 0).
    pub fn sample(&mut self) -> SystemSample {
        let Some(sys) = &mut self.sys else {
            return SystemSample {
                process_rss_bytes: super::process::rss_bytes().unwrap_or(0),
                ..Default::default()
            };
        };
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        let mut s = SystemSample {
            cpu_pct: sys.global_cpu_usage(),
            per_core_pct: sys.cpus().iter().map(|c| c.usage()).collect(),
            ram_total_bytes: sys.total_memory(),
            ram_used_bytes: sys.used_memory(),
            ..Default::default()
        };
        if let Some(pid) = self.pid {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
            if let Some(p) = sys.process(pid) {
                s.process_rss_bytes = p.memory();
                s.process_cpu_pct = p.cpu_usage();
            }
        }
        if s.process_rss_bytes == 0 {
            s.process_rss_bytes = super::process::rss_bytes().unwrap_or(0);
        }
        s
    }
}
