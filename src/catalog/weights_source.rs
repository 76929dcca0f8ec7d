//! Where a model's weights are: a file, several files (shards), bytes
//! compiled into the binary, or random values of the right shapes.

use std::path::PathBuf;

use super::safetensors_header::{header_of_bytes, read_header, HeaderInfo};
use crate::error::Result;

/// Where a model's weights are.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// A safetensors file on disk.
    File(PathBuf),
    /// Safetensors shards on disk, read as one set of tensors: listed in
    /// a Hugging Face `*.safetensors.index.json` (`index`) or in the manifest.
    Shards {
        index: Option<PathBuf>,
        files: Vec<PathBuf>,
    },
    /// A safetensors file compiled into the binary.
    Embedded { name: String, bytes: &'static [u8] },
    /// Random values of the right shapes (benchmarks without real weights).
    Random,
}

impl WeightsSource {
    pub fn describe(&self) -> String {
        match self {
            WeightsSource::File(p) => p.display().to_string(),
            WeightsSource::Shards { index: Some(i), files } => {
                format!("{} ({} shards)", i.display(), files.len())
            }
            WeightsSource::Shards { index: None, files } => match files.first() {
                Some(f) => format!("{} (+{} more shards)", f.display(), files.len() - 1),
                None => "no shards".to_string(),
            },
            WeightsSource::Embedded { name, .. } => format!("{name} (embedded)"),
            WeightsSource::Random => "random weights".to_string(),
        }
    }

    /// The files on disk that hold the weights (none for embedded or random ones).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            WeightsSource::File(p) => vec![p.clone()],
            WeightsSource::Shards { files, .. } => files.clone(),
            _ => Vec::new(),
        }
    }

    /// The weights' header, every shard checked (against the index too):
    /// tensor count, data bytes and fingerprint. `None` for random weights.
    pub fn header(&self) -> Result<Option<HeaderInfo>> {
        Ok(match self {
            WeightsSource::File(p) => Some(read_header(p)?),
            WeightsSource::Shards { index, files } => {
                Some(super::shards::check_shards(index.as_deref(), files)?.combined)
            }
            WeightsSource::Embedded { name, bytes } => Some(header_of_bytes(bytes).map_err(|e| e.context(name))?),
            WeightsSource::Random => None,
        })
    }
}
