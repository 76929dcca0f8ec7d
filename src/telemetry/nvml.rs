//! NVIDIA GPUs through NVML (nvml-wrapper). `MODELDOCK_NVML_LIB` picks the
//! library file; without a driver, every call here reports why, once.

use nvml_wrapper::Nvml;

/// Opens NVML from `MODELDOCK_NVML_LIB` or the system library.
pub fn open() -> crate::Result<Nvml> {
    let r = match std::env::var_os("MODELDOCK_NVML_LIB") {
        Some(p) => Nvml::builder().lib_path(&p).init(),
        None => Nvml::init(),
    };
    r.map_err(|e| crate::Error::unavailable(format!("NVML: {}", e.to_string().lines().next().unwrap_or("error"))))
}

/// Free memory of GPU `index`, if NVML can tell.
pub fn free_memory(index: usize) -> Option<u64> {
    let nvml = open().ok()?;
    let d = nvml.device_by_index(index as u32).ok()?;
    d.memory_info().ok().map(|m| m.free)
}

/// Device memory this process uses on GPU `index` (from NVML's process table).
pub fn own_used_memory(index: usize) -> Option<u64> {
    let nvml = open().ok()?;
    let d = nvml.device_by_index(index as u32).ok()?;
    let me = std::process::id();
    let procs = d.running_compute_processes().ok()?;
    procs
        .into_iter()
        .filter(|p| p.pid == me)
        .map(|p| match p.used_gpu_memory {
            nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b),
            nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
        })
        .sum()
}

/// After an unload, waits (polling every 50 ms, up to `limit`) until this
/// process's device memory has dropped by about `expect` bytes from `before`:
/// drivers free asynchronously, and the budget must not trust memory that is
/// not back yet. Returns true when it was seen released.
pub fn wait_released(index: usize, before: u64, expect: u64, limit: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        match own_used_memory(index) {
            Some(now) if before.saturating_sub(now) >= expect / 10 * 9 => return true,
            None => return false,
            _ => {}
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
