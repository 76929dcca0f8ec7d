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
    /// Rows: a tap row is valid on one contiguous range of wide positions.
    /// Columns: the lanes split into runs of one output row each, and on a
    /// run a tap column is valid on one contiguous range. So the cost is
    /// O(kh + runs · kw) word operations, not O(n · (kh + kw)) bit tests.
    pub fn masks(&self, start: usize, n: usize, out: &mut [u64]) {
        let n = n.min(64);
        let below = |b: usize| if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
        // Lanes whose wide position is in [lo, hi).
        let range = |lo: isize, hi: isize| -> u64 {
            let a = (lo - start as isize).clamp(0, n as isize) as usize;
            let b = (hi - start as isize).clamp(0, n as isize) as usize;
            if b <= a {
                0
            } else {
                below(b) & !below(a)
            }
        };
        let w = self.w as isize;
        let mut rows = [0u64; 16];
        for (ky, r) in rows.iter_mut().enumerate().take(self.kh) {
            // Valid when top <= oy + ky < top + h, oy = p / w.
            let lo = (self.top as isize - ky as isize) * w;
            let hi = (self.top as isize + self.h as isize - ky as isize) * w;
            *r = range(lo.max(0), hi);
        }
        let mut cols = [0u64; 16];
        let mut j = 0usize;
        while j < n {
            let ox = (start + j) % self.w;
            let len = (self.w - ox).min(n - j);
            for (kx, c) in cols.iter_mut().enumerate().take(self.kw) {
                // Valid when left <= ox + t + kx < left + w, for t in [0, len).
                let lo = self.left as isize - kx as isize - ox as isize;
                let hi = lo + w;
                let a = lo.clamp(0, len as isize) as usize;
                let b = hi.clamp(0, len as isize) as usize;
                if b > a {
                    *c |= (below(b) & !below(a)) << j;
                }
            }
            j += len;
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

    /// Lane by lane, tap by tap: what [`InPlace::masks`] must equal.
    fn masks_reference(g: &InPlace, start: usize, n: usize) -> Vec<u64> {
        let mut out = vec![0u64; g.classes()];
        for j in 0..n.min(64) {
            let (oy, ox) = ((start + j) / g.w, (start + j) % g.w);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let (iy, ix) = (oy + ky, ox + kx);
                    if iy >= g.top && iy - g.top < g.h && ix >= g.left && ix - g.left < g.w {
                        out[ky * g.kw + kx] |= 1u64 << j;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn word_masks_equal_the_lane_by_lane_masks() {
        for h in 1..9usize {
            for w in 1..11usize {
                for k in [1usize, 2, 3, 5] {
                    for (top, left) in [(0, 0), (1, 1), (0, 2), (2, 0), (k - 1, k - 1)] {
                        let pad = Padding {
                            top: top.min(k - 1),
                            bottom: 0,
                            left: left.min(k - 1),
                            right: 0,
                        };
                        let s = ConvShape {
                            cin: 1,
                            cout: 1,
                            kh: k,
                            kw: k,
                            stride: 1,
                            pad,
                        };
                        let Some(g) = InPlace::new(&s, h, w) else { continue };
                        let wide = g.wide_len();
                        for nr in [1usize, 7, 48, 64] {
                            for start in (0..wide.max(1)).step_by(nr.max(1)) {
                                let n = (wide.saturating_sub(start)).min(nr);
                                let mut got = vec![0u64; g.classes()];
                                g.masks(start, n, &mut got);
                                assert_eq!(
                                    got,
                                    masks_reference(&g, start, n),
                                    "{h}x{w} k{k} {pad:?} start {start} n {n}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

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
