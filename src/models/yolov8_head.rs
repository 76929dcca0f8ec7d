//! YOLOv8's eval-mode head output computed in one parallel pass on CPU:
//! distribution focal loss (softmax over 16 bins, expectation with the DFL
//! weights) to box centre/size in input pixels, sigmoid class scores, and
//! pose keypoints. It writes the same (4 + nc [+ 51], anchors) rows as the
//! candle path in `yolov8.rs`, which other devices keep.

use rayon::prelude::*;

use crate::kernels::fast_exp;

/// Bins of the box distribution.
pub const REG_MAX: usize = 16;

/// One scale of the head: raw branch outputs for `h`·`w` anchors.
pub struct Level<'a> {
    /// [4·REG_MAX, h·w]
    pub boxes: &'a [f32],
    /// [nc, h·w]
    pub cls: &'a [f32],
    /// [nk, h·w] (pose) or empty.
    pub kpts: &'a [f32],
    pub h: usize,
    pub w: usize,
    pub stride: f32,
}

impl Level<'_> {
    fn len(&self) -> usize {
        self.h * self.w
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-v))
}

/// Fills `out` ([4 + nc + nk, anchors], row-major) from the levels; rows
/// past the classes are keypoints.
pub fn decode(levels: &[Level], nc: usize, dfl: &[f32], out: &mut [f32]) {
    let a: usize = levels.iter().map(Level::len).sum();
    if a == 0 {
        return;
    }
    // Expected distance of each side (left, top, right, bottom) per anchor.
    let mut dist = vec![0f32; 4 * a];
    dist.par_chunks_mut(a).enumerate().for_each(|(side, row)| {
        let mut at = 0;
        for l in levels {
            let n = l.len();
            let d = &mut row[at..at + n];
            let bins = &l.boxes[side * REG_MAX * n..(side + 1) * REG_MAX * n];
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::avx512::available() && dfl.len() == REG_MAX {
                // SAFETY: AVX-512F is present; `bins` holds REG_MAX·n floats.
                unsafe { crate::kernels::avx512::dfl_expectation(bins, dfl, d) };
                at += n;
                continue;
            }
            let mut m = vec![f32::NEG_INFINITY; n];
            for b in bins.chunks(n) {
                m.iter_mut().zip(b).for_each(|(m, v)| *m = m.max(*v));
            }
            let mut den = vec![0f32; n];
            d.fill(0.0);
            for (b, &wt) in bins.chunks(n).zip(dfl) {
                for (((num, den), v), m) in d.iter_mut().zip(&mut den).zip(b).zip(&m) {
                    let e = fast_exp(v - m);
                    *den += e;
                    *num += e * wt;
                }
            }
            d.iter_mut().zip(&den).for_each(|(v, s)| *v /= s);
            at += n;
        }
    });
    out.par_chunks_mut(a).enumerate().for_each(|(r, row)| {
        let mut at = 0;
        for l in levels {
            let n = l.len();
            let o = &mut row[at..at + n];
            match r {
                0..4 => {
                    // cx = ax + (r − l)/2, w = l + r (and the same for y), × stride.
                    let (lo, hi) = (&dist[(r % 2) * a + at..][..n], &dist[(r % 2 + 2) * a + at..][..n]);
                    for (j, v) in o.iter_mut().enumerate() {
                        let anchor = if r % 2 == 0 { (j % l.w) as f32 } else { (j / l.w) as f32 } + 0.5;
                        *v = l.stride
                            * if r < 2 {
                                anchor + (hi[j] - lo[j]) * 0.5
                            } else {
                                lo[j] + hi[j]
                            };
                    }
                }
                _ if r < 4 + nc => {
                    let c = &l.cls[(r - 4) * n..(r - 3) * n];
                    #[cfg(target_arch = "x86_64")]
                    if crate::kernels::avx512::available() {
                        // SAFETY: AVX-512F is present (checked just above).
                        unsafe { crate::kernels::avx512::sigmoid_row(c, o) };
                        at += n;
                        continue;
                    }
                    o.iter_mut().zip(c).for_each(|(v, c)| *v = sigmoid(*c));
                }
                _ => {
                    // Keypoint k, component x / y / visibility.
                    let kr = r - 4 - nc;
                    let k = &l.kpts[kr * n..(kr + 1) * n];
                    for (j, (v, raw)) in o.iter_mut().zip(k).enumerate() {
                        *v = match kr % 3 {
                            0 => (raw * 2.0 + (j % l.w) as f32) * l.stride,
                            1 => (raw * 2.0 + (j / l.w) as f32) * l.stride,
                            _ => sigmoid(*raw),
                        };
                    }
                }
            }
            at += n;
        }
    });
}
