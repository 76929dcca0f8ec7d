//! Borrowing the f32 data of CPU tensors for the kernels, and wrapping a
//! kernel's output back into a tensor without a copy.

use std::cell::Cell;

use candle_core::{CpuStorage, DType, Device, Shape, Storage, Tensor};

use crate::error::{Error, Result};

pub use super::scratch::with_scratch;

/// True when the kernels here run on `t`, reading it in place: a CPU f32
/// tensor, and the fast kernels in force (not [`super::Kernels::Generic`]).
pub fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && super::Kernels::current() == super::Kernels::Fast
}

/// Runs `f` on the data of CPU f32 tensors (each made contiguous first; a
/// contiguous tensor is not copied).
pub fn with_slices<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let held: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = held.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(CpuStorage::F32(data)) = &**storage else {
            return Err(Error::msg("CPU kernels: an f32 tensor on the CPU was expected"));
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            return Err(Error::msg("CPU kernels: a contiguous tensor was expected"));
        };
        slices.push(&data[a..b]);
    }
    f(&slices)
}

/// A CPU tensor of `shape` whose every element `fill` writes exactly once
/// (through the pointer it is given; no zeroing pass first).
///
/// # Safety
/// `fill` must write all `shape.elem_count()` floats before it returns.
pub unsafe fn tensor_filled(shape: impl Into<Shape>, fill: impl FnOnce(*mut f32)) -> Result<Tensor> {
    let shape: Shape = shape.into();
    let n = shape.elem_count();
    let mut v: Vec<f32> = Vec::with_capacity(n);
    fill(v.as_mut_ptr());
    // SAFETY: capacity is n and the caller guarantees all n floats are written.
    unsafe { v.set_len(n) };
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Runs `f` on a thread of rayon's pool while this thread waits. A network's
/// parallel loops then share their work among the pool's threads directly,
/// instead of each loop waking the pool from outside and waiting on it:
/// one hand-over per forward rather than one per layer (5% of the face
/// detector's forward on 2 cores). Inside the pool already, `f` just runs.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::join(f, || ()).0
}

thread_local! {
    /// Set while this thread runs one job of a batch or pyramid that is
    /// already shared among rayon's threads.
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the kernels on this thread alone: for one job of work that
/// is already split among rayon's threads (the images of a batch, the scales
/// of a pyramid), where splitting each kernel again would only add
/// wake-ups. The previous setting comes back afterwards, panic or not.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// True inside [`serial`]: kernels run without splitting their work.
pub fn is_serial() -> bool {
    SERIAL.with(|s| s.get())
}
