//! The input of a dense conv prepared so every kernel tap is a contiguous read.
//!
//! Zero padding is applied once and, for stride s, each padded channel is
//! split into s×s phase planes (rows ≡ a, columns ≡ b mod s). Output pixel
//! (oy, ox) then has the "wide" index p = oy·wp + ox, and tap k = (ci, ky, kx)
//! of every output pixel reads `data[p + offsets[k]]`: one shifted, contiguous
//! run per tap, whatever the stride or padding. Columns ox ≥ ow of a wide row
//! are computed and thrown away (one or two per row for a padded 3×3 conv).
//! A 1×1, stride-1, unpadded conv reads its input as it is.

use rayon::prelude::*;

use super::ConvShape;

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
        buf.par_chunks_mut(self.wp * rows_per_job)
            .enumerate()
            .for_each(|(job, rows)| self.fill_rows(x, hw, s, job * rows_per_job, rows));
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

/// `dst[j] = src[2·j]` for every j (`src` holds at least `2·dst.len() − 1`
/// floats): the columns of one phase of a stride-2 conv, 32 inputs → 16
/// outputs per AVX-512 step (even lanes gathered across two vectors).
fn every_second(src: &[f32], dst: &mut [f32]) {
    let n = dst.len().min(src.len().div_ceil(2));
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::avx512::available() {
        // SAFETY: AVX-512F is present (checked just above).
        done = unsafe { every_second_avx512(src, &mut dst[..n]) };
    }
    for (d, s) in dst[done..n].iter_mut().zip(src[2 * done..].iter().step_by(2)) {
        *d = *s;
    }
}

/// The whole 16-output blocks of [`every_second`]; returns how many outputs it wrote.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn every_second_avx512(src: &[f32], dst: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let whole = (src.len() / 32).min(dst.len() / 16);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for i in 0..whole {
        // SAFETY: inputs 32i..32i+32 lie in `src` (i < src.len() / 32) and
        // outputs 16i..16i+16 in `dst` (i < dst.len() / 16).
        unsafe {
            let a = src.as_ptr().add(32 * i);
            let v = _mm512_permutex2var_ps(_mm512_loadu_ps(a), even, _mm512_loadu_ps(a.add(16)));
            _mm512_storeu_ps(dst.as_mut_ptr().add(16 * i), v);
        }
    }
    whole * 16
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
            let s = ConvShape {
                cin: 2,
                cout: 1,
                kh: k,
                kw: k,
                stride: st,
                pad,
            };
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
}
