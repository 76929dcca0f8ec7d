//! Where a model's weights are: a file, bytes compiled into the binary, or
//! random values of the right shapes.

use std::path::PathBuf;

/// Where a model's weights are.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// A safetensors file on disk (memory-mapped at load time).
    File(PathBuf),
    /// A safetensors file compiled into the binary.
    Embedded { name: String, bytes: &'static [u8] },
    /// Random values of the right shapes (benchmarks without real weights).
    Random,
}

impl WeightsSource {
    pub fn describe(&self) -> String {
        match self {
            WeightsSource::File(p) => p.display().to_string(),
            WeightsSource::Embedded { name, .. } => format!("{name} (embedded)"),
            WeightsSource::Random => "random weights".to_string(),
        }
    }
}
