//! Engine settings: budget, limits, device, cache sizes.

use candle_core::Device;

use crate::error::{Error, Result};
use crate::units::KeepAlive;
use crate::vision::decode::DecodeLimits;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub budget_bytes: u64,
    pub max_resident: usize,
    pub default_keep_alive: KeepAlive,
    pub device: DeviceChoice,
    pub cache_entries: usize,
    pub cache_bytes: usize,
    pub decode_limits: DecodeLimits,
    /// Extra models to load in the background right after start.
    pub preload: Vec<String>,
    /// Use random weights of the right shapes instead of the real ones.
    pub random_weights: bool,
    /// Requests that may run side by side (see `engine::lanes`).
    pub lanes: usize,
    /// Compute threads in each lane's pool.
    pub lane_threads: usize,
    /// Nice steps below the normal priority that bulk work runs at, in the
    /// lanes past the first (Linux; 0 = the same priority).
    pub bulk_nice: i32,
    /// The fraction of one core interactive work may take while bulk work
    /// waits (`engine::pacer`; 1 = no limit).
    pub interactive_share: f64,
    /// How long a request may wait to start before it is answered with an
    /// error; `None` = no limit.
    pub queue_timeout_ms: Option<u64>,
    /// Where measured sizes are remembered across restarts
    /// (`engine::sizes`); `None` = this run only.
    pub sizes_file: Option<std::path::PathBuf>,
    /// The layers' path: this CPU's fast kernels, or candle's ops as on a GPU.
    pub kernels: crate::kernels::Kernels,
    /// Why the device asked for was replaced by the CPU (the app's
    /// fallback), shown beside the device in the status bar.
    pub device_note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DeviceChoice::parse(s)
    }
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Result<DeviceChoice> {
        let (kind, idx) = match s.split_once(':') {
            Some((k, i)) => (
                k,
                i.parse::<usize>()
                    .map_err(|_| Error::msg(format!("device '{s}': bad index")))?,
            ),
            None => (s, 0),
        };
        match kind {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(idx)),
            "metal" => Ok(DeviceChoice::Metal(idx)),
            _ => Err(Error::msg(format!("device '{s}': expected cpu, cuda[:N] or metal[:N]"))),
        }
    }

    /// Opens the device; GPU backends need the `cuda` / `metal` cargo features.
    pub fn open(&self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::msg(
                        "cuda: this build has no CUDA support (build with --features cuda)",
                    ));
                }
                Device::new_cuda(*i).map_err(|e| Error::from(e).context(format!("cuda:{i}")))
            }
            DeviceChoice::Metal(i) => {
                if !candle_core::utils::metal_is_available() {
                    return Err(Error::msg(
                        "metal: this build has no Metal support (build with --features metal)",
                    ));
                }
                Device::new_metal(*i).map_err(|e| Error::from(e).context(format!("metal:{i}")))
            }
        }
    }

    pub fn label(&self) -> String {
        match self {
            DeviceChoice::Cpu => "cpu".to_string(),
            DeviceChoice::Cuda(i) => format!("cuda:{i}"),
            DeviceChoice::Metal(i) => format!("metal:{i}"),
        }
    }
}

/// Parses a size with `bytesize` ("2GiB", "512 MiB", "1.5GB", "1000") or a
/// share of `base` ("50%"). Zero, negative and non-finite sizes are refused.
pub fn parse_bytes(s: &str, base: u64) -> Result<u64> {
    let t = s.trim();
    let bad = || Error::usage(format!("'{s}': expected a size like 2GiB, 512MiB, 1.5GB or 50%"));
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(bad());
        }
        return Ok((base as f64 * v / 100.0) as u64);
    }
    if t.starts_with('-') || t.to_ascii_lowercase().contains("nan") || t.to_ascii_lowercase().contains("inf") {
        return Err(bad());
    }
    let v = t.parse::<bytesize::ByteSize>().map_err(|_| bad())?.as_u64();
    if v == 0 {
        return Err(bad());
    }
    Ok(v)
}

pub use crate::units::human_bytes;

impl EngineConfig {
    /// Defaults for `device`: on CPU half of the available RAM; on a GPU 80%
    /// of its free memory at start (CPU rule if that cannot be read).
    pub fn for_device(device: DeviceChoice) -> EngineConfig {
        let budget = match device {
            DeviceChoice::Cuda(i) => crate::telemetry::nvml::free_memory(i)
                .map(|free| free / 10 * 8)
                .unwrap_or_else(|| crate::telemetry::process::available_ram() / 2),
            _ => crate::telemetry::process::available_ram() / 2,
        };
        EngineConfig {
            budget_bytes: budget.max(64 << 20),
            max_resident: 16,
            default_keep_alive: KeepAlive::Millis(5 * 60_000),
            device,
            cache_entries: 512,
            cache_bytes: 32 << 20,
            decode_limits: DecodeLimits::default(),
            preload: Vec::new(),
            random_weights: false,
            lanes: super::lanes::default_lanes(),
            lane_threads: super::lanes::compute_threads(),
            bulk_nice: super::lanes::DEFAULT_BULK_NICE,
            interactive_share: super::pacer::DEFAULT_INTERACTIVE_SHARE,
            queue_timeout_ms: None,
            sizes_file: None,
            kernels: crate::kernels::Kernels::Fast,
            device_note: None,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::for_device(DeviceChoice::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("2GiB", 0).ok(), Some(2 << 30));
        assert_eq!(parse_bytes("512 MiB", 0).ok(), Some(512 << 20));
        assert_eq!(parse_bytes("50%", 1000).ok(), Some(500));
        assert_eq!(parse_bytes("1000", 0).ok(), Some(1000));
        for bad in ["", "abc", "-1G", "0", "150%", "nanG"] {
            assert!(parse_bytes(bad, 1000).is_err(), "{bad}");
        }
    }
}
