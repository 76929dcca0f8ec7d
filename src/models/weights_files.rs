//! Tensors read from safetensors files on disk (one file or a set of
//! shards) by positioned reads straight into their final buffers.
//!
//! Nothing is memory-mapped: a mapping keeps each page it touched resident
//! beside the copy until the whole mapping goes, which doubled the peak
//! memory of a load. Here the only memory is the tensors themselves (the
//! file's bytes stay in the page cache, which is not the process's). Large
//! tensors are read in blocks shared among rayon's threads, each block
//! checked for NaN and infinities while it is in cache; f16/bf16 blocks are
//! widened to f32 block by block, so no second copy of a tensor exists.

use std::collections::HashMap;
use std::fs::File;
use std::mem::MaybeUninit;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::catalog::safetensors_header::HeaderInfo;
use crate::error::{Error, Result};

/// Values per block (512 KiB of f32): one positioned read, then checked
/// while the block is still in L2.
const BLOCK: usize = 128 << 10;
/// From this many values on, blocks are shared among rayon's threads (the
/// page faults of a fresh buffer are CPU work too, and cold reads overlap).
const PARALLEL_FROM: usize = 1 << 20;

/// Where one tensor's bytes are.
struct Place {
    file: usize,
    dtype: String,
    shape: Vec<usize>,
    offset: u64,
    len: u64,
}

/// The tensors of a set of safetensors files, by name.
pub struct FileTensors {
    files: Vec<File>,
    paths: Vec<PathBuf>,
    by_name: HashMap<String, Place>,
}

/// Called with the bytes of the file just read (for progress); false stops
/// the read (the load was cancelled) with [`CANCELLED`].
pub type ReadFn<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// The error of a read stopped by its [`ReadFn`].
pub const CANCELLED: &str = "load cancelled";

fn cancelled() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, CANCELLED)
}

impl FileTensors {
    /// Opens `paths`, whose headers (already checked) are `headers`.
    pub fn open(paths: &[PathBuf], headers: &[HeaderInfo]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut by_name = HashMap::new();
        for (i, (p, h)) in paths.iter().zip(headers).enumerate() {
            files.push(File::open(p).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?);
            for t in &h.entries {
                by_name.insert(
                    t.name.clone(),
                    Place {
                        file: i,
                        dtype: t.dtype.clone(),
                        shape: t.shape.clone(),
                        offset: h.data_start + t.start,
                        len: t.end - t.start,
                    },
                );
            }
        }
        Ok(FileTensors {
            files,
            paths: paths.to_vec(),
            by_name,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The tensor `name`, as `want` where it is stored as F32, F16 or BF16
    /// and `want` is F32 (or the stored dtype), else in its stored dtype;
    /// and whether its values were checked finite on the way. `read` is
    /// told the file bytes as they arrive. Errors name the file and tensor.
    pub fn read(&self, name: &str, want: DType, dev: &Device, read: ReadFn) -> candle_core::Result<(Tensor, bool)> {
        let p = self
            .by_name
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor '{name}'")))?;
        let path = &self.paths[p.file];
        let fail = |e: std::io::Error| candle_core::Error::Msg(format!("{}: tensor '{name}': {e}", path.display()));
        let f = Source {
            file: &self.files[p.file],
            path,
        };
        let widen = match (p.dtype.as_str(), want) {
            ("F32", _) => Some(Half::No),
            ("BF16", DType::F32) => Some(Half::Bf16),
            ("F16", DType::F32) => Some(Half::F16),
            _ => None,
        };
        if let Some(kind) = widen {
            let (values, finite) = read_as_f32(&f, p.offset, p.len, kind, read).map_err(fail)?;
            return Ok((Tensor::from_vec(values, p.shape.as_slice(), dev)?, finite));
        }
        let bytes = read_bytes(f.file, p.offset, p.len, read).map_err(fail)?;
        let dtype = safetensors_dtype(&p.dtype).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: tensor '{name}': dtype {} cannot be loaded",
                path.display(),
                p.dtype
            ))
        })?;
        let view = safetensors::tensor::TensorView::new(dtype, p.shape.clone(), &bytes)
            .map_err(|e| candle_core::Error::Msg(format!("{}: tensor '{name}': {e}", path.display())))?;
        Ok((candle_core::safetensors::Load::load(&view, dev)?, false))
    }
}

fn safetensors_dtype(name: &str) -> Option<safetensors::Dtype> {
    use safetensors::Dtype as D;
    Some(match name {
        "F32" => D::F32,
        "F16" => D::F16,
        "BF16" => D::BF16,
        "F64" => D::F64,
        "U8" => D::U8,
        "U16" => D::U16,
        "U32" => D::U32,
        "I16" => D::I16,
        "I32" => D::I32,
        "I64" => D::I64,
        "F8_E4M3" => D::F8_E4M3,
        "F8_E8M0" => D::F8_E8M0,
        "F6_E2M3" => D::F6_E2M3,
        "F6_E3M2" => D::F6_E3M2,
        "F4" => D::F4,
        _ => return None,
    })
}

/// A file open for small reads, and its path to open it again for each
/// thread of a large read (the kernel's readahead follows one sequential
/// reader per open file; two threads taking turns on one would look random).
struct Source<'a> {
    file: &'a File,
    path: &'a std::path::Path,
}

/// How the stored values become f32.
#[derive(Clone, Copy)]
enum Half {
    No,
    Bf16,
    F16,
}

/// `len` bytes at `offset` of `f` as f32 values (widened from `kind`), and
/// whether every value is finite.
fn read_as_f32(src: &Source, offset: u64, len: u64, kind: Half, read: ReadFn) -> std::io::Result<(Vec<f32>, bool)> {
    let width = if matches!(kind, Half::No) { 4 } else { 2 };
    let n = usize::try_from(len / width).map_err(std::io::Error::other)?;
    let mut out: Vec<f32> = Vec::new();
    out.try_reserve_exact(n).map_err(std::io::Error::other)?;
    super::weights::advise_huge_pages(out.as_mut_ptr().cast::<u8>(), n * 4);
    // Element `first` of the tensor into `d`, read from `f`.
    let block = |f: &File, first: usize, d: &mut [MaybeUninit<f32>]| -> std::io::Result<bool> {
        let at = offset + first as u64 * width;
        let vals = match kind {
            Half::No => {
                // SAFETY: `d` has room for d.len() f32s; pread_exact fills every byte.
                unsafe { pread_exact(f, d.as_mut_ptr().cast::<u8>(), d.len() * 4, at)? };
                // SAFETY: every element was just written.
                let v = unsafe { std::slice::from_raw_parts_mut(d.as_mut_ptr().cast::<f32>(), d.len()) };
                if cfg!(target_endian = "big") {
                    v.iter_mut()
                        .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
                }
                &*v
            }
            Half::Bf16 | Half::F16 => {
                let mut raw = vec![0u16; d.len()];
                // SAFETY: `raw` has d.len() u16s, all initialised.
                unsafe { pread_exact(f, raw.as_mut_ptr().cast::<u8>(), d.len() * 2, at)? };
                for (o, &h) in d.iter_mut().zip(&raw) {
                    let h = u16::from_le(h);
                    o.write(match kind {
                        Half::Bf16 => f32::from_bits(u32::from(h) << 16),
                        _ => half::f16::from_bits(h).to_f32(),
                    });
                }
                // SAFETY: every element was just written.
                unsafe { std::slice::from_raw_parts(d.as_ptr().cast::<f32>(), d.len()) }
            }
        };
        if !read((d.len() as u64) * width) {
            return Err(cancelled());
        }
        let mut bad = 0u32;
        for v in vals {
            bad |= u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000);
        }
        Ok(bad == 0)
    };
    let dst = &mut out.spare_capacity_mut()[..n];
    // One contiguous part per thread, each read in order through its own
    // open file, block by block.
    let part = |f: &File, first: usize, d: &mut [MaybeUninit<f32>]| -> std::io::Result<bool> {
        let mut ok = true;
        for (j, b) in d.chunks_mut(BLOCK).enumerate() {
            ok &= block(f, first + j * BLOCK, b)?;
        }
        Ok(ok)
    };
    let finite = if n >= PARALLEL_FROM {
        let threads = rayon::current_num_threads().max(1);
        let per = n.div_ceil(threads).div_ceil(BLOCK) * BLOCK;
        dst.par_chunks_mut(per)
            .enumerate()
            .map(|(i, d)| {
                let f = File::open(src.path)?;
                advise_sequential(&f);
                part(&f, i * per, d)
            })
            .try_reduce(|| true, |a, b| Ok(a && b))?
    } else {
        part(src.file, 0, dst)?
    };
    // SAFETY: every block above filled its elements, and the blocks cover all n.
    unsafe { out.set_len(n) };
    Ok((out, finite))
}

/// Tells the kernel `f` is read in order (a larger readahead window).
fn advise_sequential(f: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// `len` bytes at `offset` of `f`.
fn read_bytes(f: &File, offset: u64, len: u64, read: ReadFn) -> std::io::Result<Vec<u8>> {
    let n = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(std::io::Error::other)?;
    out.resize(n, 0u8);
    let chunk = BLOCK * 4;
    let one = |(i, d): (usize, &mut [u8])| -> std::io::Result<()> {
        // SAFETY: `d` is an initialised slice of d.len() bytes.
        unsafe { pread_exact(f, d.as_mut_ptr(), d.len(), offset + (i * chunk) as u64)? };
        if read(d.len() as u64) {
            Ok(())
        } else {
            Err(cancelled())
        }
    };
    if n >= PARALLEL_FROM * 4 {
        out.par_chunks_mut(chunk).enumerate().try_for_each(one)?;
    } else {
        out.chunks_mut(chunk).enumerate().try_for_each(one)?;
    }
    Ok(out)
}

/// Reads exactly `len` bytes at `offset` of `f` into `dst`.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
#[cfg(unix)]
unsafe fn pread_exact(f: &File, dst: *mut u8, len: usize, offset: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let mut done = 0usize;
    while done < len {
        let at = libc::off_t::try_from(offset + done as u64).map_err(std::io::Error::other)?;
        // SAFETY: the caller guarantees dst..dst+len is writable; done < len.
        let r = unsafe { libc::pread(f.as_raw_fd(), dst.add(done).cast(), len - done, at) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file ends before the tensor does (truncated?)",
            ));
        }
        done += r as usize;
    }
    Ok(())
}

/// Reads exactly `len` bytes at `offset` of `f` into `dst`.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
#[cfg(windows)]
unsafe fn pread_exact(f: &File, dst: *mut u8, len: usize, offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    // SAFETY: the caller guarantees dst..dst+len is writable; zeroed first
    // so the slice is initialised.
    let buf = unsafe {
        std::ptr::write_bytes(dst, 0, len);
        std::slice::from_raw_parts_mut(dst, len)
    };
    let mut done = 0usize;
    while done < len {
        match f.seek_read(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file ends before the tensor does (truncated?)",
                ))
            }
            Ok(r) => done += r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
