//! Depthwise convolution (one filter per channel). Every channel is an
//! independent job: its input is padded (and split into stride phases) once
//! into a per-thread buffer ([`super::planes`]), then each output row is a
//! sum of shifted, contiguous input rows times one weight each, a loop the
//! compiler vectorises; on CPUs with AVX-512 it is compiled for them.

use rayon::prelude::*;

use super::planes::Geometry;
use super::{Act, ConvArgs, ConvShape};

/// `x`: [c, h, w]; `weight`: [c, kh·kw]; `out`: [c, oh, ow]. `s.cin == s.cout == c`.
pub fn depthwise(args: ConvArgs<[f32], [f32]>, out: &mut [f32]) {
    let (x, (h, w), weight, bias, s, act) = (args.x, args.hw, args.weight, args.bias, args.s, args.act);
    // Offsets of one channel's taps: the geometry of a single-channel conv.
    let one = ConvShape { cin: 1, cout: 1, ..*s };
    let g = Geometry::new(&one, h, w);
    let (oh, ow) = (g.oh, g.ow);
    let kk = s.kh * s.kw;
    let avx512 = super::avx512::available();
    // 3×3, stride 1, padding 1 on every side (separable blocks): read in
    // place, the borders masked, instead of through a padded copy.
    let same3 = (s.kh, s.kw, s.stride) == (3, 3, 1) && s.pad == super::Padding::uniform(1) && (oh, ow) == (h, w);
    out.par_chunks_mut((oh * ow).max(1)).enumerate().for_each(|(c, o)| {
        let plane = &x[c * h * w..(c + 1) * h * w];
        let job = Channel {
            taps: &g.offsets,
            weights: &weight[c * kk..(c + 1) * kk],
            bias: bias.map(|b| b[c]).unwrap_or(0.0),
            act,
            wp: g.wp,
            ow,
        };
        let run = |src: &[f32], o: &mut [f32]| {
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                // SAFETY: AVX-512F is present (checked above).
                return unsafe { job.rows_avx512(src, o) };
            }
            job.rows(src, o)
        };
        #[cfg(target_arch = "x86_64")]
        if avx512 && same3 {
            // SAFETY: AVX-512F is present (checked above); the shape is 3×3,
            // stride 1, padding 1 (checked in `same3`).
            return unsafe { job.same3_in_place_avx512(plane, (h, w), o) };
        }
        if g.in_place {
            run(plane, o);
        } else {
            super::host::with_scratch(g.buffer_len(&one), |buf| {
                // Serial: a nested parallel loop would only add overhead here.
                g.fill_serial(plane, (h, w), &one, buf);
                run(buf, o);
            });
        }
    });
}

/// One channel's filter, applied row by row.
struct Channel<'a> {
    taps: &'a [usize],
    weights: &'a [f32],
    bias: f32,
    act: Act,
    wp: usize,
    ow: usize,
}

impl Channel<'_> {
    #[inline(always)]
    fn rows(&self, src: &[f32], out: &mut [f32]) {
        for (oy, o) in out.chunks_mut(self.ow.max(1)).enumerate() {
            self.rows_from(src, oy, o);
        }
    }

    /// Output row `oy`, tap by tap over the row.
    #[inline(always)]
    fn rows_from(&self, src: &[f32], oy: usize, o: &mut [f32]) {
        o.fill(self.bias);
        for (&off, &wt) in self.taps.iter().zip(self.weights) {
            let start = oy * self.wp + off;
            let s = &src[start..start + o.len()];
            o.iter_mut().zip(s).for_each(|(v, x)| *v += wt * x);
        }
        match self.act {
            Act::None => {}
            Act::Relu => o.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Relu6 => o.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
            Act::Leaky(a) => o.iter_mut().for_each(|v| {
                if *v < 0.0 {
                    *v *= a
                }
            }),
            Act::Silu | Act::Gelu => o.iter_mut().for_each(|v| *v = self.act.apply(*v)),
        }
    }

    /// A 3×3, stride-1, padding-1 filter over the unpadded `plane` (h×w) into
    /// `out` (h×w): as [`Self::rows_avx512`] on the padded copy, with lanes
    /// that fall in the padding masked to zero instead, so the same products
    /// are added in the same order and the values are the same.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `plane.len() >= h·w` and `out.len() == h·w`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn same3_in_place_avx512(&self, plane: &[f32], (h, w): (usize, usize), out: &mut [f32]) {
        use std::arch::x86_64::*;
        let zero = _mm512_setzero_ps();
        if w == 0 || plane.len() < h * w || out.len() < h * w || self.weights.len() < 9 {
            return;
        }
        for (oy, o) in out.chunks_mut(w).take(h).enumerate() {
            for x0 in (0..w).step_by(16) {
                let n = (w - x0).min(16);
                let all: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
                let mut acc = _mm512_set1_ps(self.bias);
                for ky in 0..3 {
                    // Input row oy + ky - 1; outside the plane every lane is padding.
                    let iy = (oy + ky).checked_sub(1).filter(|iy| *iy < h);
                    for kx in 0..3 {
                        let wt = _mm512_set1_ps(self.weights[ky * 3 + kx]);
                        let x = match iy {
                            None => zero,
                            Some(iy) => {
                                // Lane j reads column x0 + j + kx - 1: the first
                                // lane of the row's first block reads the left
                                // padding at kx = 0, the last lane of its last
                                // block the right padding at kx = 2.
                                let mut m = all;
                                if kx == 0 && x0 == 0 {
                                    m &= !1;
                                }
                                if kx == 2 && x0 + n == w {
                                    m &= !(1u16 << (n - 1));
                                }
                                let p = plane
                                    .as_ptr()
                                    .wrapping_add(iy * w + x0)
                                    .wrapping_add(kx)
                                    .wrapping_sub(1);
                                // SAFETY: every lane the mask keeps reads a column
                                // in 0..w of row iy < h, inside `plane`; the
                                // others are not read.
                                unsafe { _mm512_maskz_loadu_ps(m, p) }
                            }
                        };
                        acc = _mm512_add_ps(acc, _mm512_mul_ps(wt, x));
                    }
                }
                acc = act_avx512(self.act, acc);
                // SAFETY: lanes x0..x0+n lie in this output row.
                unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(x0), all, acc) };
            }
            if let Act::Silu = self.act {
                o.iter_mut().for_each(|v| *v = self.act.apply(*v));
            }
        }
    }

    /// [`Self::rows`] with AVX-512: blocks of 16 outputs summed in a register
    /// (one store per block instead of one per tap) and the row's last,
    /// partial block masked rather than scalar (a 13-wide row was mostly
    /// scalar). Same order and roundings (multiply, then add) as
    /// [`Self::rows`], so the same values.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_avx512(&self, src: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let reach = self.taps.iter().copied().max().unwrap_or(0);
        for (oy, o) in out.chunks_mut(self.ow.max(1)).enumerate() {
            let row = oy * self.wp;
            if row + reach + o.len() > src.len() {
                // Not reached with planes.rs's buffers; kept safe regardless.
                self.rows_from(src, oy, o);
                continue;
            }
            for x0 in (0..o.len()).step_by(16) {
                let n = (o.len() - x0).min(16);
                let m: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
                let mut acc = _mm512_set1_ps(self.bias);
                for (&off, &wt) in self.taps.iter().zip(self.weights) {
                    // SAFETY: lanes x0..x0+n of this tap's run lie in `src`
                    // (row + off + x0 + n <= row + reach + o.len() <= src.len());
                    // masked-off lanes are not read.
                    let x = unsafe { _mm512_maskz_loadu_ps(m, src.as_ptr().add(row + off + x0)) };
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(wt), x));
                }
                acc = act_avx512(self.act, acc);
                // SAFETY: lanes x0..x0+n lie in `o`; the others are not written.
                unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(x0), m, acc) };
            }
            if let Act::Silu = self.act {
                o.iter_mut().for_each(|v| *v = self.act.apply(*v));
            }
        }
    }
}

/// The activation on 16 sums, as the scalar path computes it (GELU to
/// rounding; SiLU is left to a pass over the row with [`Act::apply`]).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn act_avx512(act: Act, acc: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    match act {
        Act::Relu => _mm512_max_ps(acc, zero),
        Act::Relu6 => _mm512_min_ps(_mm512_max_ps(acc, zero), _mm512_set1_ps(6.0)),
        Act::Leaky(a) => {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(acc, zero);
            _mm512_mask_mul_ps(acc, neg, acc, _mm512_set1_ps(a))
        }
        // SAFETY: AVX-512F is enabled for this function.
        Act::Gelu => unsafe { super::avx512::gelu(acc) },
        Act::None | Act::Silu => acc,
    }
}
