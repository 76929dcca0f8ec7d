//! A VarBuilder backend that counts bytes as tensors materialise, and the
//! checked copies it makes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::weights_files::{FileTensors, CANCELLED};
use crate::catalog::safetensors_header::{header_of_bytes, read_header};
use crate::catalog::shards::check_shards;
use crate::catalog::weights_source::WeightsSource;
use crate::error::{Error, Result};

/// Called with (bytes_done, bytes_total) as tensors are materialised.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

enum Backing {
    Files(super::weights_files::FileTensors),
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
    /// Set when nothing waits for this load any more: reads stop, and what
    /// was read is dropped with the builder.
    cancel: Option<Arc<AtomicBool>>,
}

impl CountingBackend {
    pub fn open(source: &WeightsSource, total: u64, progress: ProgressFn) -> Result<Self> {
        let backing = match source {
            WeightsSource::File(p) => {
                // The header is checked here so errors name the problem.
                let header = read_header(p)?;
                Backing::Files(FileTensors::open(std::slice::from_ref(p), &[header])?)
            }
            WeightsSource::Shards { index, files } => {
                let set = check_shards(index.as_deref(), files)?;
                Backing::Files(FileTensors::open(files, &set.headers)?)
            }
            WeightsSource::Embedded { name, bytes } => {
                header_of_bytes(bytes).map_err(|e| e.context(name))?;
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
            cancel: None,
        })
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Acquire))
    }

    /// Adds `bytes` read from a file; false once the load is cancelled.
    fn advance_read(&self, bytes: u64) -> bool {
        self.advance(bytes);
        !self.cancelled()
    }

    fn stop_if_cancelled(&self) -> candle_core::Result<()> {
        match self.cancelled() {
            true => Err(candle_core::Error::Msg(CANCELLED.to_string())),
            false => Ok(()),
        }
    }

    /// Adds `bytes` to the bytes done and reports progress.
    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        (self.progress)(done, self.total.max(done));
    }

    /// `t` (and whether its values were found finite on the way) checked
    /// against the wanted shape and for NaN and infinities, as `dtype`.
    fn checked(&self, (t, finite): (Tensor, bool), s: &Shape, name: &str, dtype: DType) -> candle_core::Result<Tensor> {
        if t.shape() != s {
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor '{name}' has shape {:?}, expected {:?}",
                self.origin,
                t.dims(),
                s.dims()
            )));
        }
        let finite = finite
            || !t.dtype().is_float()
            || t.elem_count() == 0
            // 0 · inf and 0 · NaN are NaN, 0 · x is 0: one sum finds either.
            || (&t * t.zeros_like()?)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?
                .is_finite();
        if !finite {
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor '{name}' holds NaN or infinite values",
                self.origin
            )));
        }
        t.to_dtype(dtype)
    }

    /// An F32 tensor for the CPU in one pass over the file's bytes: copied
    /// into its final buffer while checked for NaN and infinities (the bytes
    /// are read once; no second pass, no temporary tensor). `None` for other
    /// dtypes and devices.
    fn f32_checked(&self, name: &str, dev: &Device) -> Option<candle_core::Result<(Tensor, bool)>> {
        if !dev.is_cpu() {
            return None;
        }
        let view = match &self.backing {
            Backing::Slice(st) => st.get(name).ok()?,
            Backing::Files(_) | Backing::Random => return None,
        };
        if view.dtype() != safetensors::Dtype::F32 {
            return None;
        }
        let (values, finite) = copy_f32_checked(view.data());
        Some(Tensor::from_vec(values, view.shape(), dev).map(|t| (t, finite)))
    }

    /// [`Self::raw`] with errors naming the file and the tensor.
    fn raw_named(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        self.raw(name, dev).map_err(|e| {
            candle_core::Error::Msg(format!(
                "{}: tensor '{name}': {}",
                self.origin,
                e.to_string().lines().next().unwrap_or("cannot be read")
            ))
        })
    }

    fn raw(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        match &self.backing {
            Backing::Files(ft) => ft
                .read(name, DType::F32, dev, &|b| self.advance_read(b))
                .map(|(t, _)| t),
            Backing::Slice(st) => st.load(name, dev),
            Backing::Random => Err(candle_core::Error::Msg(format!(
                "random weights need a shape for {name}"
            ))),
        }
    }
}

impl SimpleBackend for CountingBackend {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.stop_if_cancelled()?;
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
                let t = r.to_dtype(dtype)?;
                self.advance((t.elem_count() * t.dtype().size_in_bytes()) as u64);
                return Ok(t);
            }
            _ if !self.contains_tensor(name) => {
                return Err(candle_core::Error::Msg(format!(
                    "{}: missing tensor '{name}'",
                    self.origin
                )))
            }
            // File bytes are counted as they are read.
            Backing::Files(ft) => {
                return self.checked(
                    ft.read(name, DType::F32, dev, &|b| self.advance_read(b))?,
                    &s,
                    name,
                    dtype,
                )
            }
            Backing::Slice(_) => match self.f32_checked(name, dev) {
                Some(r) => self.checked(r?, &s, name, dtype)?,
                None => self.checked((self.raw_named(name, dev)?, false), &s, name, dtype)?,
            },
        };
        self.advance((t.elem_count() * t.dtype().size_in_bytes()) as u64);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.stop_if_cancelled()?;
        let (t, finite) = match &self.backing {
            Backing::Files(ft) => ft.read(name, DType::F32, dev, &|b| self.advance_read(b))?,
            _ => {
                let t = self.raw_named(name, dev)?;
                self.advance((t.elem_count() * t.dtype().size_in_bytes()) as u64);
                (t, false)
            }
        };
        if !finite {
            check_finite_graph_weight(&self.origin, name, &t)?;
        }
        t.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.backing {
            Backing::Files(ft) => ft.contains(name),
            Backing::Slice(st) => st.get(name).is_ok(),
            Backing::Random => true,
        }
    }
}

/// Asks for transparent huge pages for a large buffer not yet touched, so
/// filling it takes one page fault per 2 MiB instead of one per 4 KiB (most
/// of a warm-cache load's time otherwise). A hint: ignored where unsupported.
fn huge_pages(buf: &mut Vec<f32>) {
    advise_huge_pages(buf.as_mut_ptr().cast::<u8>(), buf.capacity() * 4);
}

/// The hint of [`huge_pages`] for `bytes` bytes from `ptr` (the whole
/// 4 KiB pages inside them); buffers under 4 MiB are left alone.
pub fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        if bytes < 4 << 20 {
            return;
        }
        let page = 4096usize;
        let p = ptr as usize;
        let start = (p + page - 1) & !(page - 1);
        let end = (p + bytes) & !(page - 1);
        if end > start {
            // SAFETY: the callers pass their own allocation's range; MADV_HUGEPAGE
            // changes no contents, only how untouched pages are backed.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// Values per block of [`copy_f32_checked`]: 16 KiB, so the check reads what
/// the copy just wrote from L1.
const CHECK_BLOCK: usize = 4096;
/// From this many values on, the blocks are shared among rayon's threads
/// (the page faults of a fresh buffer are CPU work too).
const PARALLEL_FROM: usize = 1 << 20;

/// Little-endian F32 bytes → values, and whether every value is finite, in
/// one pass over memory: each block is copied (memcpy) and then checked while
/// it is in L1 (the exponent test is integer work, so it vectorises).
pub fn copy_f32_checked(bytes: &[u8]) -> (Vec<f32>, bool) {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let n = bytes.len() / 4;
    let src = &bytes[..n * 4];
    if cfg!(target_endian = "big") {
        let v: Vec<f32> = src
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let finite = v.iter().all(|x| x.is_finite());
        return (v, finite);
    }
    let mut out: Vec<f32> = Vec::with_capacity(n);
    huge_pages(&mut out);
    let block = |d: &mut [MaybeUninit<f32>], s: &[u8]| -> bool {
        debug_assert_eq!(d.len() * 4, s.len());
        // SAFETY: `d` has room for s.len() bytes (MaybeUninit<f32> is laid out
        // as f32), the two do not overlap, and on a little-endian target the
        // bytes are the values.
        let vals: &[f32] = unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), d.as_mut_ptr().cast::<u8>(), s.len());
            std::slice::from_raw_parts(d.as_ptr().cast::<f32>(), d.len())
        };
        let mut bad = 0u32;
        for v in vals {
            bad |= u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000);
        }
        bad == 0
    };
    let dst = &mut out.spare_capacity_mut()[..n];
    let finite = if n >= PARALLEL_FROM {
        dst.par_chunks_mut(CHECK_BLOCK)
            .zip(src.par_chunks(CHECK_BLOCK * 4))
            .map(|(d, s)| block(d, s))
            .reduce(|| true, |a, b| a && b)
    } else {
        // Every block is copied: the check result is combined after it.
        dst.chunks_mut(CHECK_BLOCK)
            .zip(src.chunks(CHECK_BLOCK * 4))
            .fold(true, |ok, (d, s)| block(d, s) && ok)
    };
    // SAFETY: every block above wrote its elements, and the blocks cover all n.
    unsafe { out.set_len(n) };
    (out, finite)
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
    cancellable_var_builder(source, total, device, progress, None)
}

/// [`var_builder`] whose reads stop (with [`CANCELLED`]) once `cancel` is set.
pub fn cancellable_var_builder(
    source: &WeightsSource,
    total: u64,
    device: &Device,
    progress: ProgressFn,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<VarBuilder<'static>> {
    let mut backend = CountingBackend::open(source, total, progress)?;
    backend.cancel = cancel;
    Ok(VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone()))
}

#[cfg(test)]
mod tests {
    use super::copy_f32_checked;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn one_pass_copy_keeps_values_and_finds_nan_and_infinities() {
        let v = [0.0, -1.5, f32::MAX, f32::MIN_POSITIVE, 1e-42, -0.0];
        assert_eq!(copy_f32_checked(&bytes(&v)), (v.to_vec(), true));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut w = vec![1.0f32; 37];
            w[29] = bad;
            let (out, finite) = copy_f32_checked(&bytes(&w));
            assert!(!finite, "{bad} not found");
            assert_eq!(out.len(), 37);
        }
        assert_eq!(copy_f32_checked(&[]), (Vec::new(), true));
    }
}
