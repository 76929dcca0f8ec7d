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
    /// blake3 of the header and the data length, in hex: every tensor's
    /// name, dtype, shape and place, so two files with one fingerprint
    /// take the same memory (the key of measured sizes).
    pub fingerprint: String,
}

/// safetensors' own limit on the header (`MAX_HEADER_SIZE`).
const MAX_HEADER: u64 = 100_000_000;

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
    if n > MAX_HEADER {
        return Err(Error::msg(format!(
            "{name}: not a safetensors file (header length {n} is above the {MAX_HEADER} byte limit)"
        )));
    }
    if n + 8 > file_len {
        return Err(Error::msg(format!(
            "{name}: not a safetensors file (header length {n} runs past the end of the {file_len} byte file)"
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
    if n > MAX_HEADER {
        return Err(Error::msg(format!(
            "not a safetensors buffer (header length {n} is above the {MAX_HEADER} byte limit)"
        )));
    }
    if n > bytes.len() as u64 - 8 {
        return Err(Error::msg(format!(
            "not a safetensors buffer (header length {n} runs past the end of the {} byte buffer)",
            bytes.len()
        )));
    }
    parse_header(&bytes[8..8 + n as usize], bytes.len() as u64 - 8 - n)
}

/// Element sizes in bits of the safetensors dtypes candle can load (the
/// others are refused here, naming the tensor, rather than at load time).
const DTYPES: &[(&str, u64)] = &[
    ("F32", 32),
    ("F16", 16),
    ("BF16", 16),
    ("F64", 64),
    ("U8", 8),
    ("U16", 16),
    ("U32", 32),
    ("I16", 16),
    ("I32", 32),
    ("I64", 64),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("F4", 4),
];

/// Valid safetensors dtypes candle cannot load.
const UNLOADABLE_DTYPES: &[&str] = &["BOOL", "I8", "U64", "C64", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ"];

/// One tensor's header entry, checked.
struct Entry<'a> {
    name: &'a str,
    start: u64,
    end: u64,
}

fn check_entry<'a>(name: &'a str, t: &'a serde_json::Value, data_len: u64) -> Result<Entry<'a>> {
    let t = t.as_object().ok_or_else(|| {
        Error::msg(format!(
            "tensor '{name}': expected an object with dtype, shape and data_offsets, got {}",
            short_json(t)
        ))
    })?;
    let dtype_v = t
        .get("dtype")
        .ok_or_else(|| Error::msg(format!("tensor '{name}' has no dtype")))?;
    let dtype = dtype_v.as_str().unwrap_or("");
    let bits = match DTYPES.iter().find(|(d, _)| *d == dtype) {
        Some((_, b)) => *b,
        None if UNLOADABLE_DTYPES.contains(&dtype) => {
            return Err(Error::msg(format!(
                "tensor '{name}' has dtype {dtype}, which modeldock cannot load (expected one of {})",
                dtype_list()
            )))
        }
        None => {
            return Err(Error::msg(format!(
                "tensor '{name}' has unknown dtype {} (expected one of {})",
                short_json(dtype_v),
                dtype_list()
            )))
        }
    };
    let shape_v = t
        .get("shape")
        .ok_or_else(|| Error::msg(format!("tensor '{name}' has no shape")))?;
    let shape: Vec<u64> = shape_v
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().filter(|&d| usize::try_from(d).is_ok()))
                .collect()
        })
        .ok_or_else(|| {
            Error::msg(format!(
                "tensor '{name}' shape {}: expected a list of non-negative integers",
                short_json(shape_v)
            ))
        })?;
    let offs_v = t
        .get("data_offsets")
        .ok_or_else(|| Error::msg(format!("tensor '{name}' has no data_offsets")))?;
    let (start, end) = match offs_v.as_array().map(|a| a.as_slice()) {
        Some([a, b]) => match (a.as_u64(), b.as_u64()) {
            (Some(a), Some(b)) if usize::try_from(a.max(b)).is_ok() => (a, b),
            _ => (u64::MAX, u64::MAX),
        },
        _ => (u64::MAX, u64::MAX),
    };
    if start == u64::MAX {
        return Err(Error::msg(format!(
            "tensor '{name}' data_offsets {}: expected [start, end], two byte offsets",
            short_json(offs_v)
        )));
    }
    if start > end {
        return Err(Error::msg(format!(
            "tensor '{name}' data_offsets [{start}, {end}] are reversed: the start is after the end"
        )));
    }
    if end > data_len {
        return Err(Error::msg(format!(
            "tensor '{name}' data_offsets [{start}, {end}] point past the end of the data ({data_len} bytes)"
        )));
    }
    let shape_str = format!("{shape:?}");
    let nbits = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .and_then(|n| n.checked_mul(bits))
        .filter(|&b| usize::try_from(b).is_ok())
        .ok_or_else(|| {
            Error::msg(format!(
                "tensor '{name}' ({dtype}, shape {shape_str}) is too large: its byte size overflows"
            ))
        })?;
    if nbits % 8 != 0 {
        return Err(Error::msg(format!(
            "tensor '{name}' ({dtype}, shape {shape_str}) is {nbits} bits, not a whole number of bytes"
        )));
    }
    let expected = nbits / 8;
    if end - start != expected {
        return Err(Error::msg(format!(
            "tensor '{name}' ({dtype}, shape {shape_str}) needs {expected} bytes, but its data_offsets [{start}, {end}] hold {}",
            end - start
        )));
    }
    Ok(Entry { name, start, end })
}

fn dtype_list() -> String {
    DTYPES.iter().map(|(d, _)| *d).collect::<Vec<_>>().join(", ")
}

/// A JSON value for a message: at most 40 characters.
fn short_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Checks everything safetensors (and candle's loader) would check, so that
/// a bad file is refused here with a message naming the tensor, the field and
/// what was expected, and candle never sees it.
/// A tensor entry's fields, each at most once: `serde_json::Value` keeps the
/// last of two equal keys, while safetensors' reader refuses the entry.
#[derive(serde::Deserialize)]
struct FieldsOnce {
    #[serde(rename = "dtype")]
    _dtype: serde::de::IgnoredAny,
    #[serde(rename = "shape")]
    _shape: serde::de::IgnoredAny,
    #[serde(rename = "data_offsets")]
    _data_offsets: serde::de::IgnoredAny,
}

/// The header's entries in file order, a name given twice kept twice (a
/// map would keep only the last, and the first would go unchecked).
struct AllEntries<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for AllEntries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = AllEntries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> std::result::Result<Self::Value, M::Error> {
                let mut all = Vec::new();
                while let Some(e) = m.next_entry()? {
                    all.push(e);
                }
                Ok(AllEntries(all))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Refuses a tensor named twice in the header, and a tensor entry that
/// names a field twice (e.g. two `shape`s).
fn refuse_duplicate_fields(header: &[u8]) -> Result<()> {
    let raw: AllEntries =
        serde_json::from_slice(header).map_err(|e| Error::msg(format!("not a safetensors file (header: {e})")))?;
    let mut seen = std::collections::HashSet::new();
    if let Some((k, _)) = raw.0.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        return Err(Error::msg(format!("tensor '{k}' is named twice in the header")));
    }
    for (k, v) in raw.0 {
        if k == "__metadata__" {
            continue;
        }
        serde_json::from_str::<FieldsOnce>(v.get())
            .map_err(|e| Error::msg(format!("tensor '{k}': {e} (each of dtype, shape, data_offsets once)")))?;
    }
    Ok(())
}

fn parse_header(header: &[u8], data_len: u64) -> Result<HeaderInfo> {
    let v: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| Error::msg(format!("not a safetensors file (header: {e})")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::msg("not a safetensors file (header is not a JSON object)"))?;
    let mut entries = Vec::with_capacity(obj.len());
    for (k, t) in obj {
        if k == "__metadata__" {
            let ok = t
                .as_object()
                .is_some_and(|m| m.values().all(serde_json::Value::is_string));
            if !ok {
                return Err(Error::msg(format!(
                    "__metadata__ {}: expected an object of string values",
                    short_json(t)
                )));
            }
            continue;
        }
        entries.push(check_entry(k, t, data_len)?);
    }
    refuse_duplicate_fields(header)?;
    // The tensors' data must tile the data section: in offset order, each
    // starts where the previous ends, and the last ends at the end of the file.
    entries.sort_by_key(|e| (e.start, e.end));
    let mut at = 0u64;
    let mut prev: Option<&Entry> = None;
    for e in &entries {
        if e.start != at {
            let (what, n) = if e.start > at {
                ("a gap of", e.start - at)
            } else {
                ("an overlap of", at - e.start)
            };
            let before = prev
                .map(|p| format!("tensor '{}' ends at byte {}", p.name, p.end))
                .unwrap_or_else(|| "the data starts at byte 0".to_string());
            return Err(Error::msg(format!(
                "tensor '{}' data_offsets [{}, {}] leave {what} {n} bytes: {before}, expected this tensor to start there",
                e.name, e.start, e.end
            )));
        }
        at = e.end;
        prev = Some(e);
    }
    if at != data_len {
        return Err(Error::msg(format!(
            "{} bytes after the last tensor ({}) belong to no tensor: the data section is {data_len} bytes, the tensors cover {at}",
            data_len - at,
            prev.map(|p| format!("'{}' ends at byte {}", p.name, p.end))
                .unwrap_or_else(|| "there are none".to_string())
        )));
    }
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(&data_len.to_le_bytes());
    Ok(HeaderInfo {
        tensors: entries.len(),
        data_bytes: at,
        fingerprint: h.finalize().to_hex().to_string(),
    })
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
        })
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
            Backing::Mmap(st) => st.get(name).ok()?,
            Backing::Slice(st) => st.get(name).ok()?,
            Backing::Random => return None,
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
                if !self.contains_tensor(name) {
                    return Err(candle_core::Error::Msg(format!(
                        "{}: missing tensor '{name}'",
                        self.origin
                    )));
                }
                let (t, checked) = match self.f32_checked(name, dev) {
                    Some(r) => {
                        let (t, finite) = r?;
                        if !finite {
                            return Err(candle_core::Error::Msg(format!(
                                "{}: tensor '{name}' holds NaN or infinite values",
                                self.origin
                            )));
                        }
                        (t, true)
                    }
                    None => (self.raw_named(name, dev)?, false),
                };
                if t.shape() != &s {
                    return Err(candle_core::Error::Msg(format!(
                        "{}: tensor '{name}' has shape {:?}, expected {:?}",
                        self.origin,
                        t.dims(),
                        s.dims()
                    )));
                }
                if !checked && t.dtype().is_float() && t.elem_count() > 0 {
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
        let t = self.raw(name, dev).map_err(|e| {
            candle_core::Error::Msg(format!(
                "{}: tensor '{name}': {}",
                self.origin,
                e.to_string().lines().next().unwrap_or("cannot be read")
            ))
        })?;
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
    let backend = CountingBackend::open(source, total, progress)?;
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
