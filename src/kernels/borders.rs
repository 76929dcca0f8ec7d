//! Stride-1 convs read their input in place, with no padded copy: output
//! pixel (oy, ox) has the wide index p = oy·w + ox and tap (ci, ky, kx) reads
//! `x[ci][p + (ky − top)·w + (kx − left)]`. Where that lands in the padding
//! (above or below the image, or wrapped from the neighbouring row) the lane
//! is masked off, so it reads nothing and counts as zero. Masks depend only on
//! (ky, kx) and the tile, so a tile computes one per kernel position.

use super::ConvShape;

/// A stride-1 conv whose padding is smaller than its kernel on each axis.
#[derive(Debug, Clone, PartialEq)]
pub struct InPlace {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    kh: usize,
    kw: usize,
    top: usize,
    left: usize,
}

impl InPlace {
    pub fn new(s: &ConvShape, h: usize, w: usize) -> Option<Self> {
        let p = s.pad;
        let fits = s.stride == 1 && s.kh <= 16 && s.kw <= 16 && p.top + p.bottom < s.kh && p.left + p.right < s.kw;
        let (oh, ow) = s.out_hw(h, w);
        (fits && h + p.top + p.bottom >= s.kh && w + p.left + p.right >= s.kw).then_some(InPlace {
            h,
            w,
            oh,
            ow,
            kh: s.kh,
            kw: s.kw,
            top: p.top,
            left: p.left,
        })
    }

    /// Kernel positions (mask classes); tap (ci, ky, kx) has class ky·kw + kx.
    pub fn classes(&self) -> usize {
        self.kh * self.kw
    }

    /// Offset of tap (ky, kx) of channel `ci` from the wide output index.
    pub fn offset(&self, ci: usize, ky: usize, kx: usize) -> isize {
        (ci * self.h * self.w) as isize
            + (ky as isize - self.top as isize) * self.w as isize
            + (kx as isize - self.left as isize)
    }

    /// Number of wide positions that hold outputs.
    pub fn wide_len(&self) -> usize {
        if self.oh == 0 || self.ow == 0 {
            0
        } else {
            (self.oh - 1) * self.w + self.ow
        }
    }

    /// Lane masks (bit j = wide position start + j, j < n) of every class.
    pub fn masks(&self, start: usize, n: usize, out: &mut [u64]) {
        let mut rows = [0u64; 16];
        let mut cols = [0u64; 16];
        let (mut oy, mut ox) = (start / self.w, start % self.w);
        for j in 0..n.min(64) {
            let bit = 1u64 << j;
            for (ky, r) in rows.iter_mut().enumerate().take(self.kh) {
                let iy = oy + ky;
                if iy >= self.top && iy - self.top < self.h {
                    *r |= bit;
                }
            }
            for (kx, c) in cols.iter_mut().enumerate().take(self.kw) {
                let ix = ox + kx;
                if ix >= self.left && ix - self.left < self.w {
                    *c |= bit;
                }
            }
            ox += 1;
            if ox == self.w {
                ox = 0;
                oy += 1;
            }
        }
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                out[ky * self.kw + kx] = rows[ky] & cols[kx];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Padding;

    /// Every unmasked lane reads the input value the tap should; every tap
    /// that falls in the padding is masked.
    #[test]
    fn masked_taps_read_the_padded_input() {
        for &(h, w, k, pad) in &[
            (5usize, 7usize, 3usize, Padding::uniform(1)),
            (
                4,
                9,
                3,
                Padding {
                    top: 0,
                    bottom: 2,
                    left: 2,
                    right: 0,
                },
            ),
            (6, 6, 5, Padding::uniform(2)),
            (3, 3, 1, Padding::default()),
        ] {
            let s = ConvShape {
                cin: 2,
                cout: 1,
                kh: k,
                kw: k,
                stride: 1,
                pad,
            };
            let g = InPlace::new(&s, h, w).unwrap_or_else(|| panic!("{h}x{w} k{k} fits"));
            let x: Vec<f32> = (0..2 * h * w).map(|i| i as f32 + 1.0).collect();
            let wide = g.wide_len();
            let mut masks = vec![0u64; g.classes()];
            for start in (0..wide).step_by(48) {
                let n = (wide - start).min(48);
                g.masks(start, n, &mut masks);
                for j in 0..n {
                    let (oy, ox) = ((start + j) / w, (start + j) % w);
                    if ox >= g.ow {
                        continue;
                    }
                    for ci in 0..2 {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy + ky) as isize - pad.top as isize;
                                let ix = (ox + kx) as isize - pad.left as isize;
                                let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                                let on = masks[ky * k + kx] >> j & 1 == 1;
                                assert_eq!(on, inside, "{h}x{w} k{k} ({oy},{ox}) tap ({ky},{kx})");
                                if on {
                                    let at = (start + j) as isize + g.offset(ci, ky, kx);
                                    let want = x[ci * h * w + iy as usize * w + ix as usize];
                                    assert_eq!(x[at as usize], want);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
