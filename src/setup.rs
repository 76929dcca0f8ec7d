//! The engine flags shared by the app and every command (one flattened clap
//! struct with environment fallbacks), and turning them into a registry, an
//! engine configuration and an engine. Neutral ground: `main`, the CLI, the
//! app and the server all use it; it uses none of them.

use std::path::PathBuf;

use crate::catalog::registry::Registry;
use crate::engine::config::{parse_bytes, DeviceChoice};
use crate::engine::{Engine, EngineConfig, WakeFn};
use crate::error::{Error, Result};
use crate::telemetry::process;
use crate::units::KeepAlive;

/// modeldock's default port: not Triton's (8000–8002), not Ollama's (11434).
pub const DEFAULT_PORT: u16 = 8765;

/// Where the catalogue looks for models besides the built-in ones and the
/// user's models folder (every command that reads the catalogue flattens it).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CatalogFlags {
    /// Another folder of <id>/model.toml (repeatable; the variable is a `:`-separated list)
    #[arg(
        long = "models-dir",
        value_name = "DIR",
        env = "MODELDOCK_MODELS",
        value_delimiter = ':'
    )]
    pub models_dir: Vec<PathBuf>,
}

impl CatalogFlags {
    /// The catalogue these folders (and the default ones) hold.
    pub fn registry(&self) -> Registry {
        Registry::discover(&Registry::default_dirs(&self.models_dir))
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct EngineFlags {
    #[command(flatten)]
    pub catalog: CatalogFlags,
    /// Memory for resident models: 2GiB, 512MiB, 50% [default: half the available RAM on CPU, 80% of free VRAM on CUDA]
    #[arg(long, value_name = "SIZE", env = "MODELDOCK_BUDGET")]
    pub budget: Option<String>,
    /// At most N models in memory at once [default: 16]
    #[arg(long, value_name = "N", env = "MODELDOCK_MAX_RESIDENT", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_resident: Option<u32>,
    /// Idle time before a model is unloaded: 5m, 30s, 0 (after each request), -1 (never) [default: 5m]
    #[arg(long, value_name = "D", env = "MODELDOCK_KEEP_ALIVE")]
    pub keep_alive: Option<KeepAlive>,
    /// cpu, cuda[:N], metal[:N] (GPU builds: --features cuda / metal) [default: cpu]
    #[arg(long, value_name = "D", env = "MODELDOCK_DEVICE")]
    pub device: Option<DeviceChoice>,
    /// fast: this CPU's kernels; generic: candle's ops on every device, as a GPU runs them [default: fast]
    #[arg(long, value_name = "K", env = "MODELDOCK_KERNELS")]
    pub kernels: Option<crate::kernels::Kernels>,
    /// Load these models in the background right after start (comma-separated)
    #[arg(long, value_name = "a,b", env = "MODELDOCK_PRELOAD", value_delimiter = ',')]
    pub preload: Vec<String>,
    /// Requests that may run side by side; bulk work leaves one lane to interactive work [default: 3 on 2+ cores, else 1]
    #[arg(long, value_name = "N", env = "MODELDOCK_LANES", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub lanes: Option<u32>,
    /// An image that waits this long without starting is answered with an error (250ms, 5s) [default: no limit]
    #[arg(long, value_name = "D", env = "MODELDOCK_QUEUE_TIMEOUT", value_parser = queue_timeout)]
    pub queue_timeout: Option<u64>,
    /// How far below the normal priority bulk work runs, in nice steps 0-19 (Linux) [default: 19]
    #[arg(long, value_name = "N", env = "MODELDOCK_BULK_NICE", value_parser = clap::value_parser!(u8).range(0..=19))]
    pub bulk_nice: Option<u8>,
    /// While bulk work waits, interactive work takes at most this fraction of one core, 0.05-1 (1: no limit) [default: 0.45]
    #[arg(long, value_name = "F", env = "MODELDOCK_INTERACTIVE_SHARE", value_parser = interactive_share)]
    pub interactive_share: Option<f64>,
}

/// `--interactive-share`: a fraction of one core, 0.05 to 1.
fn interactive_share(s: &str) -> crate::Result<f64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| crate::Error::usage(format!("'{s}': expected a fraction of one core such as 0.4")))?;
    if !(0.05..=1.0).contains(&v) {
        return Err(crate::Error::usage(format!(
            "'{s}': the share must be between 0.05 and 1"
        )));
    }
    Ok(v)
}

/// `--queue-timeout`: a positive duration, in milliseconds.
fn queue_timeout(s: &str) -> crate::Result<u64> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| crate::Error::usage(format!("'{s}': expected a duration such as 250ms or 5s ({e})")))?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(crate::Error::usage(format!("'{s}': the timeout must be at least 1ms")));
    }
    Ok(ms)
}

impl EngineFlags {
    /// Every model folder the flags (and the user's config folder) name; bad
    /// manifests are reported on stderr and skipped.
    pub fn registry(&self) -> Registry {
        let r = self.catalog.registry();
        for p in &r.problems {
            eprintln!("warning: {p}");
            tracing::warn!("{p}");
        }
        r
    }

    pub fn config(&self) -> Result<EngineConfig> {
        let mut c = EngineConfig::for_device(self.device.unwrap_or(DeviceChoice::Cpu));
        if let Some(b) = &self.budget {
            c.budget_bytes = parse_bytes(b, process::total_ram()).map_err(|e| Error::usage(format!("--budget {e}")))?;
        }
        if let Some(k) = self.keep_alive {
            c.default_keep_alive = k;
        }
        if let Some(n) = self.max_resident {
            c.max_resident = n as usize;
        }
        if let Some(n) = self.lanes {
            c.lanes = n as usize;
        }
        c.queue_timeout_ms = self.queue_timeout;
        if let Some(n) = self.bulk_nice {
            c.bulk_nice = i32::from(n);
        }
        if let Some(s) = self.interactive_share {
            c.interactive_share = s;
        }
        c.sizes_file = crate::engine::sizes::default_path();
        c.kernels = self.kernels.unwrap_or_default();
        c.preload = self
            .preload
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(c)
    }

    /// [`Self::config`] with the device opened once first: a device that
    /// cannot open (a GPU without the build feature, no GPU) is a one-line
    /// error naming what is missing.
    pub fn checked_config(&self) -> Result<EngineConfig> {
        let c = self.config()?;
        c.device.open()?;
        Ok(c)
    }

    /// [`Self::config`] for the app: a device that cannot open gives way
    /// to the CPU, and the reason goes to the status bar.
    pub fn config_or_cpu(&self) -> Result<EngineConfig> {
        let c = self.config()?;
        let Err(e) = c.device.open() else {
            return Ok(c);
        };
        tracing::warn!("{e}; running on the CPU");
        let mut cpu = EngineConfig::for_device(DeviceChoice::Cpu);
        cpu.device_note = Some(format!("{}; on the CPU instead", e.message()));
        Ok(EngineConfig {
            device: DeviceChoice::Cpu,
            budget_bytes: if self.budget.is_some() {
                c.budget_bytes
            } else {
                cpu.budget_bytes
            },
            device_note: cpu.device_note,
            ..c
        })
    }

    /// Starts an in-process engine.
    pub fn engine(&self, wake: Option<WakeFn>) -> Result<(Engine, Registry)> {
        let reg = self.registry();
        let cfg = self.checked_config()?;
        Ok((Engine::start(reg.clone(), cfg, wake), reg))
    }
}

/// The keep-alive flag in its text form, for help and status lines.
pub fn keep_alive_label(k: Option<KeepAlive>) -> String {
    k.map(|k| k.to_string()).unwrap_or_else(|| "5m".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_that_cannot_open_is_a_one_line_error_for_commands_and_the_cpu_for_the_app() {
        let flags = EngineFlags {
            device: Some(DeviceChoice::Cuda(0)),
            ..Default::default()
        };
        let Err(why) = DeviceChoice::Cuda(0).open() else {
            // A CUDA build on a machine with a GPU: nothing to fall back from.
            return;
        };
        let e = flags.checked_config().err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, why.to_string());
        assert!(e.starts_with("cuda") && !e.contains('\n'), "{e}");
        if !candle_core::utils::cuda_is_available() {
            assert!(e.contains("--features cuda"), "names what is missing: {e}");
        }
        let c = flags.config_or_cpu().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.device, DeviceChoice::Cpu);
        let note = c.device_note.unwrap_or_default();
        assert!(
            note.starts_with("cuda") && note.ends_with("; on the CPU instead"),
            "{note}"
        );
    }
}
