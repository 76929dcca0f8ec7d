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

    /// The same reads on a grid of its own: an `h`×`w` image (a phase
    /// plane) whose conv output is `oh`×`ow` at wide indices oy·w + ox, with
    /// a `kh`×`kw` kernel of offsets from (−top, −left).
    #[allow(clippy::too_many_arguments)]
    fn grid(h: usize, w: usize, oh: usize, ow: usize, kh: usize, kw: usize, top: usize, left: usize) -> Self {
        InPlace {
            h,
            w,
            oh,
            ow,
            kh,
            kw,
            top,
            left,
        }
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

/// A conv of stride s ≥ 2 read from the s×s phase planes of its input, with
/// no padding and no wasted columns. Plane (a, b) of channel ci holds
/// x[ci][s·i + a][s·j + b], ⌈h/s⌉ × ⌈w/s⌉, zero past the image (what
/// [`super::planes::Geometry::fill`] writes for an unpadded shape). Output
/// (oy, ox) has the wide index oy·pw + ox, and tap (ky, kx) reads phase
/// ((ky − top) mod s, (kx − left) mod s) shifted by ⌊(ky − top)/s⌋ plane
/// rows and ⌊(kx − left)/s⌋ columns: a stride-1 read of that plane, whose
/// lanes outside it are masked as for [`InPlace`].
#[derive(Debug, Clone, PartialEq)]
pub struct Phases {
    /// The masks and output size, on the plane grid.
    pub grid: InPlace,
    /// Per kernel position (ky·kw + kx): the offset of its read from the wide
    /// output index, inside one input channel's planes, and its mask class.
    pub kernel: Vec<(isize, u8)>,
}

impl Phases {
    /// `None` for stride 1, or when the output is wider than a phase plane.
    pub fn new(s: &ConvShape, h: usize, w: usize) -> Option<Self> {
        let st = s.stride;
        if !(2..=8).contains(&st) || s.kh == 0 || s.kw == 0 || s.kh > 16 || s.kw > 16 {
            return None;
        }
        let (oh, ow) = s.out_hw(h, w);
        let (ph, pw) = (h.div_ceil(st), w.div_ceil(st));
        if oh == 0 || ow == 0 || ow > pw {
            return None;
        }
        let split = |k: usize, pad: usize| {
            let d = k as isize - pad as isize;
            (d.div_euclid(st as isize), d.rem_euclid(st as isize) as usize)
        };
        let (y0, y1) = (split(0, s.pad.top).0, split(s.kh - 1, s.pad.top).0);
        let (x0, x1) = (split(0, s.pad.left).0, split(s.kw - 1, s.pad.left).0);
        let (kh, kw) = ((y1 - y0 + 1) as usize, (x1 - x0 + 1) as usize);
        let grid = InPlace::grid(ph, pw, oh, ow, kh, kw, (-y0) as usize, (-x0) as usize);
        let plane = (ph * pw) as isize;
        let mut kernel = Vec::with_capacity(s.kh * s.kw);
        for ky in 0..s.kh {
            let (dy, a) = split(ky, s.pad.top);
            for kx in 0..s.kw {
                let (dx, b) = split(kx, s.pad.left);
                let offset = (a * st + b) as isize * plane + dy * pw as isize + dx;
                let class = ((dy - y0) as usize * kw + (dx - x0) as usize) as u8;
                kernel.push((offset, class));
            }
        }
        Some(Phases { grid, kernel })
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

    /// Strided convs on phase planes: every unmasked lane of every tap reads
    /// the input value it should, and every tap that falls in the padding is
    /// masked or reads a zero the fill wrote past the image.
    #[test]
    fn phase_plane_taps_read_the_padded_input() {
        use crate::kernels::planes::Geometry;
        for &(h, w, k, st, pad) in &[
            (6usize, 8usize, 3usize, 2usize, Padding::uniform(1)),
            (7, 5, 3, 2, Padding::uniform(1)),
            (
                9,
                11,
                5,
                3,
                Padding {
                    top: 2,
                    bottom: 1,
                    left: 0,
                    right: 2,
                },
            ),
            (8, 8, 1, 2, Padding::default()),
            (
                5,
                9,
                2,
                2,
                Padding {
                    top: 0,
                    bottom: 1,
                    left: 1,
                    right: 0,
                },
            ),
            (40, 70, 3, 2, Padding::uniform(1)),
        ] {
            let s = ConvShape::square(2, 1, k, st, pad);
            let Some(ph) = Phases::new(&s, h, w) else {
                panic!("{h}x{w} k{k} s{st} has phase planes")
            };
            let unpadded = ConvShape {
                pad: Padding::default(),
                ..s
            };
            let g = Geometry::new(&unpadded, h, w);
            let x: Vec<f32> = (0..2 * h * w).map(|i| i as f32 + 1.0).collect();
            let mut buf = vec![f32::NAN; g.buffer_len(&unpadded)];
            g.fill(&x, (h, w), &unpadded, &mut buf);
            let per_channel = buf.len() / 2;
            let (oh, ow) = s.out_hw(h, w);
            assert_eq!((ph.grid.oh, ph.grid.ow), (oh, ow));
            let wide = ph.grid.wide_len();
            let mut masks = vec![0u64; ph.grid.classes()];
            for start in (0..wide).step_by(48) {
                let n = (wide - start).min(48);
                ph.grid.masks(start, n, &mut masks);
                for j in 0..n {
                    let (oy, ox) = ((start + j) / g.wp, (start + j) % g.wp);
                    if ox >= ow {
                        continue;
                    }
                    for ci in 0..2 {
                        for (t, &(offset, class)) in ph.kernel.iter().enumerate() {
                            let (ky, kx) = (t / k, t % k);
                            let iy = (oy * st + ky) as isize - pad.top as isize;
                            let ix = (ox * st + kx) as isize - pad.left as isize;
                            let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                            let on = masks[class as usize] >> j & 1 == 1;
                            let got = if on {
                                let at = (ci * per_channel) as isize + (start + j) as isize + offset;
                                buf[usize::try_from(at).unwrap_or_else(|_| panic!("tap {t} reads before the planes"))]
                            } else {
                                0.0
                            };
                            let want = if inside {
                                x[ci * h * w + iy as usize * w + ix as usize]
                            } else {
                                0.0
                            };
                            assert!(
                                on || !inside,
                                "{h}x{w} k{k} s{st} ({oy},{ox}) tap ({ky},{kx}) masked inside the image"
                            );
                            assert_eq!(got, want, "{h}x{w} k{k} s{st} ({oy},{ox}) tap ({ky},{kx})");
                        }
                    }
                }
            }
        }
    }
}
