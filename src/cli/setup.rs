//! Flags every engine-backed command shares, and turning them into an engine.

use std::path::PathBuf;

use super::args::Args;
use crate::engine::config::{parse_bytes, DeviceChoice};
use crate::engine::residency::KeepAlive;
use crate::engine::{Engine, EngineConfig, WakeFn};
use crate::error::{Error, Result};
use crate::models::registry::Registry;
use crate::telemetry::process;

pub const ENGINE_FLAGS: &[&str] = &[
    "models-dir",
    "budget",
    "keep-alive",
    "device",
    "preload",
    "max-resident",
];

pub const ENGINE_HELP: &str = "\
  --models-dir DIR     another folder of <id>/model.toml (repeatable; also MODELDOCK_MODELS)
  --budget SIZE        memory budget for resident models: 2GiB, 512MiB, 50% (MODELDOCK_BUDGET)
  --max-resident N     at most N models in memory at once (default 16)
  --keep-alive D       default idle time before unloading: 5m, 30s, 0, -1 = never
  --device D           cpu (default), cuda[:N], metal[:N] (GPU builds only)
  --preload a,b        load these models in the background right after start";

pub fn registry(args: &Args) -> Registry {
    let dirs: Vec<PathBuf> = args.values("models-dir").into_iter().map(PathBuf::from).collect();
    let r = Registry::discover(&Registry::default_dirs(&dirs));
    for p in &r.problems {
        eprintln!("warning: {p}");
        tracing::warn!("{p}");
    }
    r
}

pub fn config(args: &Args) -> Result<EngineConfig> {
    let device = match args.value("device") {
        Some(d) => DeviceChoice::parse(d)?,
        None => DeviceChoice::Cpu,
    };
    let mut c = EngineConfig::for_device(device);
    let budget = args
        .value("budget")
        .map(|s| s.to_string())
        .or_else(|| std::env::var("MODELDOCK_BUDGET").ok());
    if let Some(b) = budget {
        c.budget_bytes = parse_bytes(&b, process::total_ram())?;
    }
    if let Some(k) = args.value("keep-alive") {
        c.default_keep_alive =
            KeepAlive::parse(k).ok_or_else(|| Error::msg(format!("--keep-alive '{k}': expected 5m, 30s, 0 or -1")))?;
    }
    if let Some(n) = args.usize("max-resident")? {
        if n == 0 {
            return Err(Error::msg("--max-resident must be at least 1"));
        }
        c.max_resident = n;
    }
    if let Some(p) = args.value("preload") {
        c.preload = p
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    Ok(c)
}

pub fn engine(args: &Args, wake: Option<WakeFn>) -> Result<(Engine, Registry)> {
    let reg = registry(args);
    let cfg = config(args)?;
    Ok((Engine::start(reg.clone(), cfg, wake), reg))
}
