//! Telemetry against a fake NVML library built here (tests/fake_nvml), and
//! the sysinfo fallback on this machine as it is.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

fn build_fake_nvml() -> PathBuf {
    let out = std::env::temp_dir().join(format!("modeldock-fake-nvml-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{e}"));
    let lib = out.join("libnvidia-ml.so.1");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fake_nvml/fake_nvml.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("the fake NVML library needs a C compiler ({cc}): {e}"));
    assert!(st.success(), "compiling {}", src.display());
    lib
}

fn gpu_json(lib: Option<&PathBuf>, extra: &[&str]) -> Vec<Value> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modeldock"));
    c.arg("gpu").arg("--json").args(extra);
    match lib {
        Some(l) => c.env("MODELDOCK_NVML_LIB", l),
        None => c.env_remove("MODELDOCK_NVML_LIB"),
    };
    let out = c.output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn gpu_json_reads_the_fake_nvml_devices() {
    let lib = build_fake_nvml();
    let v = gpu_json(Some(&lib), &["--watch", "--interval", "0.05", "--count", "2"]);
    assert_eq!(v.len(), 2);
    let r = &v[0];
    assert_eq!(r["nvml"], "ok");
    let devs = r["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devs.len(), 2);
    let (a, b) = (&devs[0], &devs[1]);
    assert_eq!(a["name"], "Fake RTX 4090");
    assert_eq!(a["uuid"], "GPU-00000000-1111-2222-3333-444444444444");
    assert_eq!(a["memory_total_bytes"], 24u64 << 30);
    assert_eq!(a["utilization_gpu_pct"], 87);
    assert_eq!(a["temperature_c"], 66);
    assert_eq!(a["power_w"], 312.5);
    assert_eq!(a["power_limit_w"], 450.0);
    assert_eq!(a["sm_clock_mhz"], 2520);
    let procs = a["processes"].as_array().cloned().unwrap_or_default();
    assert_eq!(procs.len(), 2);
    let own: Vec<&Value> = procs.iter().filter(|p| p["own"] == true).collect();
    assert_eq!(own.len(), 1, "this process is picked out: {procs:?}");
    assert_eq!(own[0]["used_memory_bytes"], 300u64 << 20);
    assert_eq!(a["own_memory_bytes"], 300u64 << 20);
    assert!(procs
        .iter()
        .any(|p| p["pid"] == 4242 && p["used_memory_bytes"] == (1u64 << 30)));
    // The unsupported queries are null (shown as n/a), not errors.
    assert_eq!(b["name"], "Fake T4");
    assert!(b["temperature_c"].is_null() && b["power_w"].is_null(), "{b}");
    assert_eq!(b["utilization_gpu_pct"], 3);
    // Memory changes between calls.
    let used0 = a["memory_used_bytes"].as_u64().unwrap_or(0);
    let used1 = v[1]["devices"][0]["memory_used_bytes"].as_u64().unwrap_or(0);
    assert!(used1 > used0, "{used0} then {used1}");
    assert!(r["system"]["ram_total_bytes"].as_u64().unwrap_or(0) > 0);
    // The human form says n/a for the unsupported values.
    let out = Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .arg("gpu")
        .env("MODELDOCK_NVML_LIB", &lib)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Fake T4") && text.contains("n/a °C"), "{text}");
    assert!(text.contains("(this process)"), "{text}");
}

#[test]
fn sampler_history_from_the_fake_nvml_and_the_fallback() {
    // Both halves in one test: the environment variable is process-wide.
    let lib = build_fake_nvml();
    std::env::set_var("MODELDOCK_NVML_LIB", &lib);
    let cfg = modeldock::telemetry::sampler::SamplerConfig {
        rate_hz: 50.0,
        history: Duration::from_millis(100),
    };
    assert_eq!(cfg.capacity(), 5);
    let s = modeldock::telemetry::sampler::Sampler::start(cfg, None);
    assert!(s.wait_for_samples(8, Duration::from_secs(10)));
    let snap = s.snapshot();
    drop(s);
    assert_eq!(snap.nvml, "ok");
    assert_eq!(snap.history.len(), 5, "history is bounded");
    let used: Vec<u64> = snap
        .history
        .iter()
        .filter_map(|p| p.gpus.first()?.memory_used_bytes)
        .collect();
    assert_eq!(used.len(), 5);
    assert!(used.windows(2).all(|w| w[1] > w[0]), "{used:?}");
    assert!(snap
        .history
        .iter()
        .all(|p| p.gpus.len() == 2 && p.gpus[1].temperature_c.is_none()));
    let ts: Vec<f64> = snap.history.iter().map(|p| p.t).collect();
    assert!(ts.windows(2).all(|w| w[1] > w[0]));

    std::env::set_var("MODELDOCK_NVML_LIB", "/nonexistent/libnvidia-ml.so.1");
    let s = modeldock::telemetry::sampler::Sampler::start(cfg, None);
    assert!(s.wait_for_samples(3, Duration::from_secs(10)));
    let snap = s.snapshot();
    drop(s);
    std::env::remove_var("MODELDOCK_NVML_LIB");
    assert!(snap.nvml.starts_with("unavailable: "), "{}", snap.nvml);
    let p = snap.latest().unwrap_or_else(|| panic!("a sample"));
    assert!(p.gpus.is_empty());
    assert!(p.system.ram_total_bytes > 0 && p.system.process_rss_bytes > 0);
    assert!(!p.system.per_core_pct.is_empty());
}

#[test]
fn gpu_json_without_nvidia_says_so_once_and_reports_the_system() {
    let v = gpu_json(None, &[]);
    assert_eq!(v.len(), 1);
    let r = &v[0];
    let nvml = r["nvml"].as_str().unwrap_or("");
    // On a machine with a driver this reads "ok"; here there is none.
    if nvml != "ok" {
        assert!(nvml.starts_with("unavailable: ") && !nvml.contains('\n'), "{nvml}");
        assert_eq!(r["devices"].as_array().map(|a| a.len()), Some(0));
    }
    let s = &r["system"];
    for k in ["cpu_pct", "ram_total_bytes", "ram_used_bytes", "process_rss_bytes"] {
        assert!(s[k].is_number(), "{k}: {s}");
    }
    assert!(s["ram_total_bytes"].as_u64().unwrap_or(0) >= s["ram_used_bytes"].as_u64().unwrap_or(u64::MAX));
    assert!(s["process_rss_bytes"].as_u64().unwrap_or(0) > 0);
}
