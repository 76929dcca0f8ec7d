//! Dense convolution: im2col into a reused buffer, then one GEMM per image
//! (`gemm` crate, threads from rayon). A 1×1 stride-1 unpadded conv skips
//! im2col: the input already is the right matrix.

use rayon::prelude::*;

use super::{epilogue, ConvArgs, ConvShape};

/// `x`: [cin, h, w]; `weight`: [cout, cin·kh·kw] row-major; `out`: [cout, oh, ow].
pub fn conv2d(args: ConvArgs<[f32], [f32]>, out: &mut [f32]) {
    let (x, (h, w), weight, bias, s, act) = (args.x, args.hw, args.weight, args.bias, args.s, args.act);
    let (oh, ow) = s.out_hw(h, w);
    let n = oh * ow;
    let k = s.cin * s.kh * s.kw;
    debug_assert_eq!(out.len(), s.cout * n);
    let direct = s.kh == 1 && s.kw == 1 && s.stride == 1 && s.pad == Default::default();
    if direct {
        matmul(weight, x, out, s.cout, n, k);
    } else {
        super::host::with_scratch(k * n, |cols| {
            im2col(x, h, w, s, oh, ow, cols);
            matmul(weight, cols, out, s.cout, n, k);
        });
    }
    epilogue(out, n, bias, act);
}

/// `out` [m, n] = `a` [m, k] · `b` [k, n], all row-major.
pub fn matmul(a: &[f32], b: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
    // SAFETY: the slices hold m·k, k·n and m·n elements with the strides given;
    // gemm reads a and b and writes out only within those bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// Rows (ci, ky, kx) × columns (oy, ox); zeros where the window is in the padding.
fn im2col(x: &[f32], h: usize, w: usize, s: &ConvShape, oh: usize, ow: usize, cols: &mut [f32]) {
    let n = oh * ow;
    cols.par_chunks_mut(n).enumerate().for_each(|(row, dst)| {
        let kx = row % s.kw;
        let ky = (row / s.kw) % s.kh;
        let ci = row / (s.kw * s.kh);
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for oy in 0..oh {
            let d = &mut dst[oy * ow..(oy + 1) * ow];
            let iy = (oy * s.stride + ky) as isize - s.pad.top as isize;
            if iy < 0 || iy >= h as isize {
                d.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * w..(iy as usize + 1) * w];
            // Output columns whose input column is inside the image.
            let first = (s.pad.left.saturating_sub(kx)).div_ceil(s.stride);
            let last = if w + s.pad.left > kx {
                ((w + s.pad.left - kx - 1) / s.stride + 1).min(ow)
            } else {
                0
            };
            d[..first.min(ow)].fill(0.0);
            if first < last {
                let ix0 = first * s.stride + kx - s.pad.left;
                if s.stride == 1 {
                    d[first..last].copy_from_slice(&src[ix0..ix0 + (last - first)]);
                } else {
                    for (j, v) in d[first..last].iter_mut().enumerate() {
                        *v = src[ix0 + j * s.stride];
                    }
                }
            }
            if last < ow {
                d[last.max(first)..].fill(0.0);
            }
        }
    });
}
