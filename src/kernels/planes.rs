//! The input of a dense conv prepared so every kernel tap is a contiguous read.
//!
//! Zero padding is applied once and, for stride s, each padded channel is
//! split into s×s phase planes (rows ≡ a, columns ≡ b mod s). Output pixel
//! (oy, ox) then has the "wide" index p = oy·wp + ox, and tap k = (ci, ky, kx)
//! of every output pixel reads `data[p + offsets[k]]`: one shifted, contiguous
//! run per tap, whatever the stride or padding. Columns ox ≥ ow of a wide row
//! are computed and thrown away (one or two per row for a padded 3×3 conv).
//! A 1×1, stride-1, unpadded conv reads its input as it is. The tiled conv
//! uses the unpadded form for strided convs ([`super::borders::Phases`]),
//! where masks stand in for the padding.

use rayon::prelude::*;

use super::{ConvShape, Padding};

/// Where the taps of a conv read from, for one input size.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Output size.
    pub oh: usize,
    pub ow: usize,
    /// Size of one phase plane.
    pub hp: usize,
    pub wp: usize,
    /// True when the input is read as it is (no copy).
    pub in_place: bool,
    /// Offset of each tap (ci, ky, kx) from the wide output index.
    pub offsets: Vec<usize>,
}

impl Geometry {
    pub fn new(s: &ConvShape, h: usize, w: usize) -> Self {
        let (oh, ow) = s.out_hw(h, w);
        let in_place = s.kh == 1 && s.kw == 1 && s.stride == 1 && s.pad == Default::default();
        let st = s.stride;
        let (hp, wp) = if in_place {
            (h, w)
        } else {
            (
                (h + s.pad.top + s.pad.bottom).div_ceil(st),
                (w + s.pad.left + s.pad.right).div_ceil(st),
            )
        };
        let plane = hp * wp;
        let per_channel = plane * st * st;
        let mut offsets = Vec::with_capacity(s.cin * s.kh * s.kw);
        for ci in 0..s.cin {
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let phase = (ky % st) * st + kx % st;
                    offsets.push(ci * per_channel + phase * plane + (ky / st) * wp + kx / st);
                }
            }
        }
        Geometry {
            oh,
            ow,
            hp,
            wp,
            in_place,
            offsets,
        }
    }

    /// Number of wide positions that hold outputs (the last row needs no tail).
    pub fn wide_len(&self) -> usize {
        if self.oh == 0 || self.ow == 0 {
            0
        } else {
            (self.oh - 1) * self.wp + self.ow
        }
    }

    /// Floats the prepared input takes (0 when read in place).
    pub fn buffer_len(&self, s: &ConvShape) -> usize {
        if self.in_place {
            0
        } else {
            s.cin * s.stride * s.stride * self.hp * self.wp
        }
    }

    /// Writes the padded phase planes of `x` ([cin, h, w]) into `buf`, in
    /// parallel over plane rows (a few channels still split evenly).
    pub fn fill(&self, x: &[f32], hw: (usize, usize), s: &ConvShape, buf: &mut [f32]) {
        // Rows per job: about 16 KiB of output each.
        let rows_per_job = (4096 / self.wp.max(1)).clamp(1, self.hp.max(1));
        if s.stride == 2 && s.pad == Padding::default() && !self.in_place {
            return self.fill_unpadded_stride2(x, hw, buf, rows_per_job);
        }
        buf.par_chunks_mut(self.wp * rows_per_job)
            .enumerate()
            .for_each(|(job, rows)| self.fill_rows(x, hw, s, job * rows_per_job, rows));
    }

    /// [`Self::fill`] for stride 2 without padding: each input row is read
    /// once and split into its even and odd columns (phases b = 0 and 1 of
    /// its row phase), in parallel over channels, row phases and row blocks.
    fn fill_unpadded_stride2(&self, x: &[f32], (h, w): (usize, usize), buf: &mut [f32], rows_per_job: usize) {
        let (hp, wp) = (self.hp, self.wp);
        let plane = hp * wp;
        if plane == 0 {
            return;
        }
        let mut jobs = Vec::new();
        for (ci, channel) in buf.chunks_mut(4 * plane).enumerate() {
            let (a0, a1) = channel.split_at_mut((2 * plane).min(channel.len()));
            for (a, pair) in [a0, a1].into_iter().enumerate() {
                let (even, odd) = pair.split_at_mut(plane.min(pair.len()));
                let rows = even
                    .chunks_mut(wp * rows_per_job)
                    .zip(odd.chunks_mut(wp * rows_per_job));
                for (k, (e, o)) in rows.enumerate() {
                    jobs.push((ci, a, k * rows_per_job, e, o));
                }
            }
        }
        jobs.into_par_iter().for_each(|(ci, a, first, even, odd)| {
            for (k, (e, o)) in even.chunks_mut(wp).zip(odd.chunks_mut(wp)).enumerate() {
                let y = 2 * (first + k) + a;
                match x.get((ci * h + y) * w..(ci * h + y + 1) * w) {
                    Some(src) if y < h => split_even_odd(src, e, o),
                    _ => {
                        e.fill(0.0);
                        o.fill(0.0);
                    }
                }
            }
        });
    }

    /// [`Self::fill`] on the calling thread only (for callers that are
    /// themselves one of many parallel jobs).
    pub fn fill_serial(&self, x: &[f32], hw: (usize, usize), s: &ConvShape, buf: &mut [f32]) {
        self.fill_rows(x, hw, s, 0, buf);
    }

    /// Plane rows `first..` (counted over all channels and phases) into `rows`.
    fn fill_rows(&self, x: &[f32], (h, w): (usize, usize), s: &ConvShape, first: usize, rows: &mut [f32]) {
        let st = s.stride;
        let (hp, wp) = (self.hp, self.wp);
        let (pt, pl) = (s.pad.top, s.pad.left);
        for (k, row) in rows.chunks_mut(wp).enumerate() {
            let r = first + k;
            // Row r is row i of phase (a, b) of channel ci.
            let (i, phase, ci) = (r % hp, (r / hp) % (st * st), r / (hp * st * st));
            let (a, b) = (phase / st, phase % st);
            let y = (st * i + a) as isize - pt as isize;
            // Padded column of plane column j is st·j + b; input column is that − pl.
            let j0 = pl.saturating_sub(b).div_ceil(st).min(wp);
            let j1 = if w + pl > b {
                ((w + pl - b - 1) / st + 1).min(wp)
            } else {
                0
            };
            if y < 0 || y >= h as isize || j0 >= j1 {
                row.fill(0.0);
                continue;
            }
            let srow = &x[(ci * h + y as usize) * w..][..w];
            row[..j0].fill(0.0);
            let x0 = st * j0 + b - pl;
            if st == 1 {
                row[j0..j1].copy_from_slice(&srow[x0..x0 + (j1 - j0)]);
            } else if st == 2 {
                every_second(&srow[x0..], &mut row[j0..j1]);
            } else {
                for (jj, v) in row[j0..j1].iter_mut().enumerate() {
                    *v = srow[x0 + jj * st];
                }
            }
            row[j1..].fill(0.0);
        }
    }
}

/// `even[j] = src[2·j]`, `odd[j] = src[2·j + 1]`, 0 past the end of `src`,
/// for j < `even.len()` (= `odd.len()`).
fn split_even_odd(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = even.len().min(odd.len());
    deinterleave(src, &mut even[..n], Some(&mut odd[..n]));
}

/// `dst[j] = src[2·j]` for every j, 0 past the end of `src`: the columns of
/// one phase of a padded stride-2 conv.
fn every_second(src: &[f32], dst: &mut [f32]) {
    deinterleave(src, dst, None);
}

/// The even columns of `src` into `even` and, if given, the odd ones into
/// `odd` (same length), 0 past the end of `src`: 32 inputs per AVX-512 step
/// (lanes gathered across two vectors), the tail masked.
fn deinterleave(src: &[f32], even: &mut [f32], odd: Option<&mut [f32]>) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        // SAFETY: AVX-512F is present (checked just above).
        return unsafe { deinterleave_avx512(src, even, odd) };
    }
    let at = |i: usize| src.get(i).copied().unwrap_or(0.0);
    for (j, v) in even.iter_mut().enumerate() {
        *v = at(2 * j);
    }
    for (j, v) in odd.into_iter().flatten().enumerate() {
        *v = at(2 * j + 1);
    }
}

/// [`deinterleave`] with AVX-512.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave_avx512(src: &[f32], even: &mut [f32], mut odd: Option<&mut [f32]>) {
    use std::arch::x86_64::*;
    let lanes = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let n = match &odd {
        Some(o) => even.len().min(o.len()),
        None => even.len(),
    };
    let mut j = 0;
    while j < n {
        let at = 2 * j;
        let (m0, m1) = (
            lanes(src.len().saturating_sub(at)),
            lanes(src.len().saturating_sub(at + 16)),
        );
        let out = lanes(n - j);
        // SAFETY: the loads read only lanes inside `src` (masks m0, m1) and the
        // stores write only lanes j..min(j + 16, n) of `even` and `odd`.
        unsafe {
            let p = src.as_ptr().wrapping_add(at);
            let lo = _mm512_maskz_loadu_ps(m0, p);
            let hi = _mm512_maskz_loadu_ps(m1, p.wrapping_add(16));
            _mm512_mask_storeu_ps(even.as_mut_ptr().add(j), out, _mm512_permutex2var_ps(lo, ie, hi));
            if let Some(o) = odd.as_deref_mut() {
                _mm512_mask_storeu_ps(o.as_mut_ptr().add(j), out, _mm512_permutex2var_ps(lo, io, hi));
            }
        }
        j += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Padding;

    /// Every tap of every valid output reads the padded input value it should.
    #[test]
    fn taps_read_the_padded_input() {
        for &(h, w, k, st, pad) in &[
            (5usize, 7usize, 3usize, 1usize, Padding::uniform(1)),
            (6, 5, 3, 2, Padding::uniform(1)),
            (
                7,
                9,
                2,
                2,
                Padding {
                    top: 0,
                    bottom: 1,
                    left: 0,
                    right: 1,
                },
            ),
            (4, 4, 1, 1, Padding::default()),
            (
                9,
                8,
                5,
                3,
                Padding {
                    top: 2,
                    bottom: 0,
                    left: 1,
                    right: 2,
                },
            ),
        ] {
            let s = ConvShape::square(2, 1, k, st, pad);
            let x: Vec<f32> = (0..2 * h * w).map(|i| i as f32 + 1.0).collect();
            let g = Geometry::new(&s, h, w);
            let mut buf = vec![f32::NAN; g.buffer_len(&s)];
            g.fill(&x, (h, w), &s, &mut buf);
            let data = if g.in_place { &x[..] } else { &buf[..] };
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for (t, off) in g.offsets.iter().enumerate() {
                        let (ci, ky, kx) = (t / (k * k), (t / k) % k, t % k);
                        let iy = (oy * st + ky) as isize - pad.top as isize;
                        let ix = (ox * st + kx) as isize - pad.left as isize;
                        let want = if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            0.0
                        } else {
                            x[ci * h * w + iy as usize * w + ix as usize]
                        };
                        let got = data[oy * g.wp + ox + off];
                        assert_eq!(got, want, "{h}x{w} k{k} s{st} out ({oy},{ox}) tap {t}");
                    }
                }
            }
        }
    }

    /// Even and odd columns (together, and the even ones alone), zero past
    /// the row, on lengths around the 32-input vector step (the tail is masked).
    #[test]
    fn even_odd_split_matches_the_definition() {
        for len in [0usize, 1, 2, 15, 31, 32, 33, 63, 64, 65, 101, 640] {
            let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 7.0).collect();
            for n in [len.div_ceil(2), len / 2, len.div_ceil(2) + 3] {
                let (mut even, mut odd) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                split_even_odd(&src, &mut even, &mut odd);
                let mut alone = vec![f32::NAN; n];
                every_second(&src, &mut alone);
                assert_eq!(alone, even, "len {len} n {n}: even columns alone");
                for j in 0..n {
                    assert_eq!(
                        even[j],
                        src.get(2 * j).copied().unwrap_or(0.0),
                        "len {len} n {n} even {j}"
                    );
                    assert_eq!(
                        odd[j],
                        src.get(2 * j + 1).copied().unwrap_or(0.0),
                        "len {len} n {n} odd {j}"
                    );
                }
            }
        }
    }
}
