//! Weights: where they are, how big they are (from the safetensors header
//! alone), and a VarBuilder backend that counts bytes as tensors materialise.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

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

/// The parsed header of a safetensors file: tensor byte sizes only.
#[derive(Debug, Clone, Default)]
pub struct HeaderInfo {
    pub tensors: usize,
    pub data_bytes: u64,
}

const MAX_HEADER: u64 = 100 << 20;

/// Reads only the header of a safetensors file and sums the tensor sizes.
pub fn read_header(path: &Path) -> Result<HeaderInfo> {
    use std::io::Read;
    let name = path.display();
    let mut f = std::fs::File::open(path).map_err(|e| Error::msg(format!("{name}: {e}")))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| Error::msg(format!("{name}: not a safetensors file (shorter than 8 bytes)")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n + 8 > file_len {
        return Err(Error::msg(format!(
            "{name}: not a safetensors file (header length {n} does not fit a {file_len} byte file)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| Error::msg(format!("{name}: {e}")))?;
    parse_header(&header, file_len - 8 - n).map_err(|e| e.context(name))
}

/// Header info of an in-memory safetensors buffer.
pub fn header_of_bytes(bytes: &[u8]) -> Result<HeaderInfo> {
    if bytes.len() < 8 {
        return Err(Error::msg("not a safetensors buffer (shorter than 8 bytes)"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(len);
    if n > bytes.len() as u64 - 8 {
        return Err(Error::msg(format!(
            "not a safetensors buffer (header of {n} bytes past the end of {} bytes)",
            bytes.len()
        )));
    }
    parse_header(&bytes[8..8 + n as usize], bytes.len() as u64 - 8 - n)
}

fn parse_header(header: &[u8], data_len: u64) -> Result<HeaderInfo> {
    let v: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| Error::msg(format!("not a safetensors file (header: {e})")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::msg("not a safetensors file (header is not a JSON object)"))?;
    let mut info = HeaderInfo::default();
    for (k, t) in obj {
        if k == "__metadata__" {
            continue;
        }
        let offs = t
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|a| a.len() == 2)
            .ok_or_else(|| Error::msg(format!("tensor '{k}' has no data_offsets")))?;
        let (a, b) = (
            offs[0].as_u64().unwrap_or(u64::MAX),
            offs[1].as_u64().unwrap_or(u64::MAX),
        );
        if a > b || b > data_len {
            return Err(Error::msg(format!(
                "tensor '{k}' data_offsets [{a}, {b}] point past the end of the data ({data_len} bytes)"
            )));
        }
        info.tensors += 1;
        info.data_bytes += b - a;
    }
    Ok(info)
}

/// Called with (bytes_done, bytes_total) as tensors are materialised.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

enum Backing {
    Mmap(candle_core::safetensors::MmapedSafetensors),
    Slice(candle_core::safetensors::SliceSafetensors<'static>),
    Random,
}

/// A VarBuilder backend that counts the bytes of every tensor it hands out.
pub struct CountingBackend {
    backing: Backing,
    origin: String,
    done: AtomicU64,
    total: u64,
    progress: ProgressFn,
}

impl CountingBackend {
    pub fn open(source: &WeightsSource, total: u64, progress: ProgressFn) -> Result<Self> {
        let backing = match source {
            WeightsSource::File(p) => {
                // Validate the header ourselves first so errors name the problem.
                read_header(p)?;
                // SAFETY: the file is opened read-only; a concurrent writer to a
                // weights file is outside what we can guard against, as with any mmap.
                let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(p) }
                    .map_err(|e| Error::from(e).context(p.display()))?;
                Backing::Mmap(st)
            }
            WeightsSource::Embedded { name, bytes } => {
                let st =
                    candle_core::safetensors::SliceSafetensors::new(bytes).map_err(|e| Error::from(e).context(name))?;
                Backing::Slice(st)
            }
            WeightsSource::Random => Backing::Random,
        };
        Ok(CountingBackend {
            backing,
            origin: source.describe(),
            done: AtomicU64::new(0),
            total,
            progress,
        })
    }

    fn raw(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        match &self.backing {
            Backing::Mmap(st) => st.load(name, dev),
            Backing::Slice(st) => st.load(name, dev),
            Backing::Random => Err(candle_core::Error::Msg(format!(
                "random weights need a shape for {name}"
            ))),
        }
    }
}

impl SimpleBackend for CountingBackend {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = match &self.backing {
            Backing::Random => {
                // Small values keep activations finite through deep stacks;
                // variances and BN scales must stay positive.
                let r = (Tensor::randn(0f32, 1f32, s.clone(), dev)? * 0.05)?;
                let r = if name.ends_with("running_var") || name.ends_with("bn.weight") {
                    (r.abs()? + 0.5)?
                } else {
                    r
                };
                r.to_dtype(dtype)?
            }
            _ => {
                let t = self
                    .raw(name, dev)
                    .map_err(|_| candle_core::Error::Msg(format!("{}: missing tensor '{name}'", self.origin)))?;
                if t.shape() != &s {
                    return Err(candle_core::Error::Msg(format!(
                        "{}: tensor '{name}' has shape {:?}, expected {:?}",
                        self.origin,
                        t.dims(),
                        s.dims()
                    )));
                }
                if t.dtype().is_float() && t.elem_count() > 0 {
                    // 0 · inf and 0 · NaN are NaN, 0 · x is 0: one sum finds either.
                    let probe = (&t * t.zeros_like()?)?
                        .to_dtype(DType::F32)?
                        .sum_all()?
                        .to_scalar::<f32>()?;
                    if !probe.is_finite() {
                        return Err(candle_core::Error::Msg(format!(
                            "{}: tensor '{name}' holds NaN or infinite values",
                            self.origin
                        )));
                    }
                }
                t.to_dtype(dtype)?
            }
        };
        let bytes = (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        (self.progress)(done, self.total.max(done));
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .raw(name, dev)
            .map_err(|_| candle_core::Error::Msg(format!("{}: missing tensor '{name}'", self.origin)))?;
        check_finite_graph_weight(&self.origin, name, &t)?;
        let t = t.to_dtype(dtype)?;
        let bytes = (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        (self.progress)(done, self.total.max(done));
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.backing {
            Backing::Mmap(st) => st.get(name).is_ok(),
            Backing::Slice(st) => st.get(name).is_ok(),
            Backing::Random => true,
        }
    }
}

/// Graph weights (read unchecked, by node name) must be finite, except a
/// lone ±inf: graphs use single-value constants as padding values and clip
/// bounds (NanoDet pads its max pool with -inf).
fn check_finite_graph_weight(origin: &str, name: &str, t: &Tensor) -> candle_core::Result<()> {
    if !t.dtype().is_float() || t.elem_count() == 0 {
        return Ok(());
    }
    let bad = if t.elem_count() == 1 {
        t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?[0].is_nan()
    } else {
        !(t * t.zeros_like()?)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?
            .is_finite()
    };
    if bad {
        return Err(candle_core::Error::Msg(format!(
            "{origin}: tensor '{name}' holds NaN or infinite values"
        )));
    }
    Ok(())
}

/// A VarBuilder over `source` that reports progress.
pub fn var_builder(
    source: &WeightsSource,
    total: u64,
    device: &Device,
    progress: ProgressFn,
) -> Result<VarBuilder<'static>> {
    let backend = CountingBackend::open(source, total, progress)?;
    Ok(VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone()))
}
