//! Max pooling (stride 1, same size) and 2× nearest upsampling on NCHW f32
//! tensors: one parallel pass per channel plane on CPU, candle's ops elsewhere.

use candle_core::Tensor;
use rayon::prelude::*;

use super::host;
use crate::error::Result;

/// k×k max pool, stride 1, padding k/2 on every side that never wins (as
/// PyTorch's `MaxPool2d(k, 1, k // 2)`): the output has the input's size.
pub fn max_pool_same_size(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let r = k / 2;
    if !host::is_cpu_f32(x) {
        return Ok(x
            .pad_with_same(2, r, r)?
            .pad_with_same(3, r, r)?
            .max_pool2d_with_stride(k, 1)?);
    }
    host::with_slices(&[x], |d| {
        let src = d[0];
        // SAFETY: every plane of the output is written in full below.
        unsafe {
            host::tensor_filled((n, c, h, w), |out| {
                let out = std::slice::from_raw_parts_mut(out, n * c * h * w);
                out.par_chunks_mut(h * w)
                    .zip(src.par_chunks(h * w))
                    .for_each(|(o, s)| pool_plane(s, o, h, w, r));
            })
        }
    })
}

/// Separable max: along rows into `o`, then along columns through a row buffer.
fn pool_plane(s: &[f32], o: &mut [f32], h: usize, w: usize, r: usize) {
    for (srow, orow) in s.chunks(w).zip(o.chunks_mut(w)) {
        for (x, v) in orow.iter_mut().enumerate() {
            let window = &srow[x.saturating_sub(r)..(x + r + 1).min(w)];
            *v = window.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        }
    }
    let rows: Vec<f32> = o.to_vec();
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
        let orow = &mut o[y * w..(y + 1) * w];
        orow.copy_from_slice(&rows[y0 * w..(y0 + 1) * w]);
        for yy in y0 + 1..y1 {
            for (v, s) in orow.iter_mut().zip(&rows[yy * w..(yy + 1) * w]) {
                *v = v.max(*s);
            }
        }
    }
}

/// 2×2 max pool at `stride` with TF "same" padding: the extra row/column
/// (when needed) at the bottom/right never wins.
pub fn max_pool2_same(x: &Tensor, stride: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let need = |len: usize| {
        let out = len.div_ceil(stride);
        ((out - 1) * stride + 2).saturating_sub(len)
    };
    if !host::is_cpu_f32(x) || stride == 0 {
        // Replicating the edge never changes a max, unlike zero padding.
        let x = x.pad_with_same(2, 0, need(h))?.pad_with_same(3, 0, need(w))?;
        return Ok(x.max_pool2d_with_stride(2, stride)?);
    }
    let oh = (h + need(h) - 2) / stride + 1;
    let ow = (w + need(w) - 2) / stride + 1;
    host::with_slices(&[x], |d| {
        let src = d[0];
        // SAFETY: every output plane is written in full below.
        unsafe {
            host::tensor_filled((n, c, oh, ow), |out| {
                let out = std::slice::from_raw_parts_mut(out, n * c * oh * ow);
                out.par_chunks_mut((oh * ow).max(1))
                    .zip(src.par_chunks((h * w).max(1)))
                    .for_each(|(o, s)| {
                        // The two rows' max first (a vector loop), then pairs along it.
                        let mut m = vec![0f32; w];
                        for (oy, orow) in o.chunks_mut(ow).enumerate() {
                            let y0 = oy * stride;
                            let r0 = &s[y0 * w..(y0 + 1) * w];
                            let r1 = &s[(y0 + 1).min(h - 1) * w..][..w];
                            if stride == 2 {
                                pool2x2_stride2_row(r0, r1, orow);
                                continue;
                            }
                            for ((v, a), b) in m.iter_mut().zip(r0).zip(r1) {
                                *v = greater(*a, *b);
                            }
                            for (ox, v) in orow.iter_mut().enumerate() {
                                let (x0, x1) = (ox * stride, (ox * stride + 1).min(w - 1));
                                *v = greater(m[x0], m[x1]);
                            }
                        }
                    });
            })
        }
    })
}

/// One output row of a 2×2, stride-2 max pool from input rows `r0`, `r1`
/// (`out.len() == r0.len().div_ceil(2)`; an odd last column pairs with
/// itself): rows and column pairs in one vector pass, 8 inputs → 4 outputs.
pub(super) fn pool2x2_stride2_row(r0: &[f32], r1: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        // SAFETY: AVX-512F is present (checked just above).
        return unsafe { pool2x2_stride2_row_avx512(r0, r1, out) };
    }
    pool2x2_stride2_row_sse(r0, r1, out, 0)
}

/// [`pool2x2_stride2_row`] with AVX-512: 32 inputs of each row → 16 outputs
/// per step (the row max, then even and odd lanes gathered across the two
/// vectors and their max); the rest in one masked step.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool2x2_stride2_row_avx512(r0: &[f32], r1: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let w = r0.len().min(r1.len());
    let whole = (w / 32).min(out.len() / 16);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for i in 0..whole {
        // SAFETY: lanes 32i..32i+32 lie in both rows (i < w / 32) and
        // 16i..16i+16 in `out` (i < out.len() / 16).
        unsafe {
            let (a, b) = (r0.as_ptr().add(32 * i), r1.as_ptr().add(32 * i));
            let lo = _mm512_max_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b));
            let hi = _mm512_max_ps(_mm512_loadu_ps(a.add(16)), _mm512_loadu_ps(b.add(16)));
            let m = _mm512_max_ps(
                _mm512_permutex2var_ps(lo, even, hi),
                _mm512_permutex2var_ps(lo, odd, hi),
            );
            _mm512_storeu_ps(out.as_mut_ptr().add(16 * i), m);
        }
    }
    // The rest (under 32 inputs) in one masked step: lanes past the row read
    // as −inf, so an odd last column pairs with itself.
    let (i0, o0) = (32 * whole, 16 * whole);
    let (n_in, n_out) = (w - i0, out.len() - o0);
    if n_out == 0 || n_out > 16 || n_in > 32 || n_in.div_ceil(2) < n_out {
        return pool2x2_stride2_row_sse(r0, r1, out, o0);
    }
    let lanes = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
    let (m_lo, m_hi) = (lanes(n_in), lanes(n_in.saturating_sub(16)));
    let low = _mm512_set1_ps(f32::NEG_INFINITY);
    // SAFETY: the masks cover inputs i0..w of both rows and outputs o0..o0 + n_out.
    unsafe {
        let (a, b) = (r0.as_ptr().add(i0), r1.as_ptr().add(i0));
        let lo = _mm512_max_ps(_mm512_mask_loadu_ps(low, m_lo, a), _mm512_mask_loadu_ps(low, m_lo, b));
        let hi = _mm512_max_ps(
            _mm512_mask_loadu_ps(low, m_hi, a.wrapping_add(16)),
            _mm512_mask_loadu_ps(low, m_hi, b.wrapping_add(16)),
        );
        let m = _mm512_max_ps(
            _mm512_permutex2var_ps(lo, even, hi),
            _mm512_permutex2var_ps(lo, odd, hi),
        );
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(o0), lanes(n_out), m);
    }
}

/// [`pool2x2_stride2_row`] from output `from` on, 8 inputs → 4 outputs per
/// SSE step, then one by one.
fn pool2x2_stride2_row_sse(r0: &[f32], r1: &[f32], out: &mut [f32], from: usize) {
    let w = r0.len().min(r1.len());
    #[cfg(not(target_arch = "x86_64"))]
    let done = from;
    #[cfg(target_arch = "x86_64")]
    let done = {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_max_ps, _mm_shuffle_ps, _mm_storeu_ps};
        let whole = (w / 8).min(out.len() / 4);
        for i in from / 4..whole {
            // SAFETY: SSE is part of x86_64; lanes 8i..8i+8 lie in both rows
            // (i < w / 8) and 4i..4i+4 in `out` (i < out.len() / 4).
            unsafe {
                let (a, b) = (r0.as_ptr().add(8 * i), r1.as_ptr().add(8 * i));
                let lo = _mm_max_ps(_mm_loadu_ps(a), _mm_loadu_ps(b));
                let hi = _mm_max_ps(_mm_loadu_ps(a.add(4)), _mm_loadu_ps(b.add(4)));
                let even = _mm_shuffle_ps::<0b10_00_10_00>(lo, hi);
                let odd = _mm_shuffle_ps::<0b11_01_11_01>(lo, hi);
                _mm_storeu_ps(out.as_mut_ptr().add(4 * i), _mm_max_ps(even, odd));
            }
        }
        (whole * 4).max(from)
    };
    for (ox, v) in out.iter_mut().enumerate().skip(done) {
        let (x0, x1) = (2 * ox, (2 * ox + 1).min(w - 1));
        *v = greater(greater(r0[x0], r1[x0]), greater(r0[x1], r1[x1]));
    }
}

/// The larger of two values: one `maxps` lane (finite inputs; `f32::max`'s
/// NaN handling keeps the loop scalar).
#[inline(always)]
fn greater(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Nearest-neighbour upsampling by 2 in both directions.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if !host::is_cpu_f32(x) {
        return Ok(x.upsample_nearest2d(2 * h, 2 * w)?);
    }
    host::with_slices(&[x], |d| {
        let src = d[0];
        // SAFETY: every output row is written below (two per input row).
        unsafe {
            host::tensor_filled((n, c, 2 * h, 2 * w), |out| {
                let out = std::slice::from_raw_parts_mut(out, n * c * 4 * h * w);
                out.par_chunks_mut(4 * h * w)
                    .zip(src.par_chunks(h * w))
                    .for_each(|(o, s)| {
                        for (srow, orows) in s.chunks(w).zip(o.chunks_mut(4 * w)) {
                            let (a, b) = orows.split_at_mut(2 * w);
                            for (pair, v) in a.chunks_mut(2).zip(srow) {
                                pair[0] = *v;
                                pair[1] = *v;
                            }
                            b.copy_from_slice(a);
                        }
                    });
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn sample(shape: (usize, usize, usize, usize)) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 - 500.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.dims() == b.dims()
            && a.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok()
                == b.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok()
    }

    #[test]
    fn pooling_and_upsampling_match_candle() {
        for shape in [
            (1, 3, 7, 5),
            (2, 2, 1, 9),
            (1, 1, 20, 20),
            (1, 2, 9, 37),
            (1, 1, 4, 16),
            (1, 1, 3, 61),
        ] {
            let x = sample(shape);
            for k in [3, 5] {
                let r = k / 2;
                let want = x
                    .pad_with_same(2, r, r)
                    .and_then(|t| t.pad_with_same(3, r, r))
                    .and_then(|t| t.max_pool2d_with_stride(k, 1))
                    .unwrap_or_else(|e| panic!("{e}"));
                let got = max_pool_same_size(&x, k).unwrap_or_else(|e| panic!("{e}"));
                assert!(same(&got, &want), "max pool {k} on {shape:?}");
            }
            for stride in [1, 2] {
                let (h, w) = (shape.2, shape.3);
                let need = |len: usize| ((len.div_ceil(stride) - 1) * stride + 2).saturating_sub(len);
                let want = x
                    .pad_with_same(2, 0, need(h))
                    .and_then(|t| t.pad_with_same(3, 0, need(w)))
                    .and_then(|t| t.max_pool2d_with_stride(2, stride))
                    .unwrap_or_else(|e| panic!("{e}"));
                let got = max_pool2_same(&x, stride).unwrap_or_else(|e| panic!("{e}"));
                assert!(same(&got, &want), "2x2 same pool, stride {stride}, on {shape:?}");
            }
            let want = x
                .upsample_nearest2d(2 * shape.2, 2 * shape.3)
                .unwrap_or_else(|e| panic!("{e}"));
            let got = upsample2x(&x).unwrap_or_else(|e| panic!("{e}"));
            assert!(same(&got, &want), "upsample on {shape:?}");
        }
    }
}
