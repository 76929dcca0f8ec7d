//! `modeldock gpu [--json] [--watch] [--interval SECS] [--count N]`: what the
//! GPU / System panel shows, once or continuously.

use std::time::Duration;

use serde_json::json;

use super::args::GpuArgs;
use crate::error::Result;
use crate::telemetry::gpu::{or_na, GpuProbe, GpuSample};
use crate::telemetry::system::{SystemProbe, SystemSample};
use crate::units::human_bytes;

pub fn report(nvml: &str, gpus: &[GpuSample], sys: &SystemSample) -> serde_json::Value {
    json!({
        "nvml": nvml,
        "devices": gpus,
        "system": sys,
    })
}

fn print_human(nvml: &str, gpus: &[GpuSample], s: &SystemSample) {
    if gpus.is_empty() {
        println!("GPU: none (NVML {nvml})");
    }
    for g in gpus {
        println!(
            "GPU {} {}  uuid {}",
            g.index,
            g.name,
            g.uuid.clone().unwrap_or_else(|| "n/a".into())
        );
        println!(
            "  memory {} / {} used (this process {})  util {}%  mem util {}%  {} °C  power {} / {} W  clocks SM {} MHz, mem {} MHz",
            g.memory_used_bytes.map(human_bytes).unwrap_or_else(|| "n/a".into()),
            g.memory_total_bytes.map(human_bytes).unwrap_or_else(|| "n/a".into()),
            g.own_memory_bytes.map(human_bytes).unwrap_or_else(|| "n/a".into()),
            or_na(g.utilization_gpu_pct),
            or_na(g.utilization_memory_pct),
            or_na(g.temperature_c),
            or_na(g.power_w.map(|w| format!("{w:.1}"))),
            or_na(g.power_limit_w.map(|w| format!("{w:.0}"))),
            or_na(g.sm_clock_mhz),
            or_na(g.memory_clock_mhz),
        );
        for p in &g.processes {
            println!(
                "  pid {:>8} {:>10}{}",
                p.pid,
                p.used_memory_bytes.map(human_bytes).unwrap_or_else(|| "n/a".into()),
                if p.own { "  (this process)" } else { "" }
            );
        }
    }
    println!(
        "CPU {:.0}% ({} cores)  RAM {} / {}  this process RSS {} CPU {:.0}%",
        s.cpu_pct,
        s.per_core_pct.len(),
        human_bytes(s.ram_used_bytes),
        human_bytes(s.ram_total_bytes),
        human_bytes(s.process_rss_bytes),
        s.process_cpu_pct
    );
}

pub fn run(args: &GpuArgs) -> Result<i32> {
    let interval = args.interval;
    let count = args.count;
    let gpu = GpuProbe::open();
    let mut sys = SystemProbe::open();
    // CPU usage is a delta: take a first reading and wait the minimum interval.
    sys.sample();
    std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(100)));
    let mut n = 0usize;
    loop {
        let gpus = gpu.sample();
        let s = sys.sample();
        if args.json {
            println!("{}", report(&gpu.status, &gpus, &s));
        } else {
            print_human(&gpu.status, &gpus, &s);
        }
        n += 1;
        if !args.watch || count.is_some_and(|c| n >= c) {
            break;
        }
        std::thread::sleep(Duration::from_secs_f64(interval));
    }
    Ok(0)
}
