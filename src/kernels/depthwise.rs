//! Depthwise convolution (one filter per channel), direct: every channel is
//! an independent job; interior pixels take a branch-free path.

use rayon::prelude::*;

use super::{Act, ConvShape};

/// `x`: [c, h, w]; `weight`: [c, kh·kw]; `out`: [c, oh, ow]. `s.cin == s.cout == c`.
pub fn depthwise(
    x: &[f32],
    (h, w): (usize, usize),
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    act: Act,
    out: &mut [f32],
) {
    let (oh, ow) = s.out_hw(h, w);
    let kk = s.kh * s.kw;
    let (pt, pl) = (s.pad.top as isize, s.pad.left as isize);
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(c, o)| {
        let plane = &x[c * h * w..(c + 1) * h * w];
        let f = &weight[c * kk..(c + 1) * kk];
        let b = bias.map(|b| b[c]).unwrap_or(0.0);
        for oy in 0..oh {
            let iy0 = (oy * s.stride) as isize - pt;
            let row_inside = iy0 >= 0 && iy0 + s.kh as isize <= h as isize;
            for ox in 0..ow {
                let ix0 = (ox * s.stride) as isize - pl;
                let mut acc = 0f32;
                if row_inside && ix0 >= 0 && ix0 + s.kw as isize <= w as isize {
                    let base = iy0 as usize * w + ix0 as usize;
                    for ky in 0..s.kh {
                        let r = &plane[base + ky * w..base + ky * w + s.kw];
                        let fr = &f[ky * s.kw..(ky + 1) * s.kw];
                        for (a, b) in r.iter().zip(fr) {
                            acc += a * b;
                        }
                    }
                } else {
                    for ky in 0..s.kh {
                        let iy = iy0 + ky as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..s.kw {
                            let ix = ix0 + kx as isize;
                            if ix >= 0 && ix < w as isize {
                                acc += plane[iy as usize * w + ix as usize] * f[ky * s.kw + kx];
                            }
                        }
                    }
                }
                o[oy * ow + ox] = act.apply(acc + b);
            }
        }
    });
}
