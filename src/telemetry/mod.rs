//! Telemetry: what the GPU / System panel shows, as a library first. NVML per
//! GPU when a driver is there (`MODELDOCK_NVML_LIB` picks the library),
//! sysinfo always; a sampler thread keeps bounded history.

pub mod gpu;
pub mod nvml;
pub mod process;
pub mod sampler;
pub mod system;
