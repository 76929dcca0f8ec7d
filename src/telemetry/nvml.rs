//! NVIDIA GPUs through NVML (nvml-wrapper). `MODELDOCK_NVML_LIB` picks the
//! library file; without a driver, every call here reports why, once.

use nvml_wrapper::Nvml;

/// Opens NVML from `MODELDOCK_NVML_LIB` or the system library.
pub fn open() -> Result<Nvml, String> {
    let r = match std::env::var_os("MODELDOCK_NVML_LIB") {
        Some(p) => Nvml::builder().lib_path(&p).init(),
        None => Nvml::init(),
    };
    r.map_err(|e| e.to_string().lines().next().unwrap_or("NVML error").to_string())
}

/// Free memory of GPU `index`, if NVML can tell.
pub fn free_memory(index: usize) -> Option<u64> {
    let nvml = open().ok()?;
    let d = nvml.device_by_index(index as u32).ok()?;
    d.memory_info().ok().map(|m| m.free)
}
