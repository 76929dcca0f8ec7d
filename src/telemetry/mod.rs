//! Telemetry: what the GPU / System panel shows, as a library first.

pub mod nvml;
pub mod process;
