//! Resamplers that reproduce a reference pipeline's pixels exactly: OpenCV
//! 4.x's fixed-point bilinear warp (NanoDet's letterbox) and TF's legacy
//! bilinear resize over a zero-padded image (MoveNet, the palm detector).
//! Both read the decoded u8 image in place: no full-size float copy.

use image::RgbImage;

/// `cv2.warpPerspective(img, M, (out, out))` for `M = [[r, 0, tx], [0, r, ty]]`
/// with INTER_LINEAR and a black constant border, bit-exact to OpenCV 4.x:
/// the source position is rounded to 1/32 px (half to even) and the four
/// taps are weighted in 15-bit fixed point. Returns `out × out` RGB bytes.
pub fn cv_warp_scale(img: &RgbImage, r: f64, tx: f64, ty: f64, out: usize) -> Vec<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let pos = |d: usize, t: f64| -> (i64, i64) {
        let v = (((d as f64 - t) / r) * 32.0).round_ties_even() as i64;
        (v >> 5, v & 31)
    };
    let xs: Vec<(i64, i64)> = (0..out).map(|x| pos(x, tx)).collect();
    let mut dst = vec![0u8; out * out * 3];
    for y in 0..out {
        let (sy, ay) = pos(y, ty);
        for (x, &(sx, ax)) in xs.iter().enumerate() {
            let wts = [
                (32 - ay) * (32 - ax) * 32,
                (32 - ay) * ax * 32,
                ay * (32 - ax) * 32,
                ay * ax * 32,
            ];
            let taps = [(sy, sx), (sy, sx + 1), (sy + 1, sx), (sy + 1, sx + 1)];
            for c in 0..3 {
                let mut acc: i64 = 16384;
                for (&(py, px), &wt) in taps.iter().zip(&wts) {
                    if wt != 0 && (0..h).contains(&py) && (0..w).contains(&px) {
                        acc += wt * src[((py * w + px) * 3 + c as i64) as usize] as i64;
                    }
                }
                dst[(y * out + x) * 3 + c] = (acc >> 15).clamp(0, 255) as u8;
            }
        }
    }
    dst
}

/// TF's legacy bilinear resize (`align_corners = false`, no half-pixel
/// centres: `src = dst · in / out`) of `img` placed at (`left`, `top`) on a
/// black `wp × hp` canvas, to `out_w × out_h`. Computed in f64, stored as
/// f32, HWC RGB with values 0..255 (tfjs-backend-cpu's arithmetic).
pub fn resize_legacy_padded(
    img: &RgbImage,
    left: usize,
    top: usize,
    wp: usize,
    hp: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let taps = |inp: usize, out: usize| -> Vec<(usize, usize, f64)> {
        let ratio = inp as f64 / out as f64;
        (0..out)
            .map(|o| {
                let f = ratio * o as f64;
                let lo = f.floor();
                let hi = (f.ceil() as usize).min(inp.saturating_sub(1));
                ((lo as usize).min(inp.saturating_sub(1)), hi, f - lo)
            })
            .collect()
    };
    let ys = taps(hp, out_h);
    let xs = taps(wp, out_w);
    let at = |y: usize, x: usize, c: usize| -> f64 {
        if y < top || x < left || y - top >= h || x - left >= w {
            0.0
        } else {
            src[((y - top) * w + (x - left)) * 3 + c] as f64
        }
    };
    let mut dst = Vec::with_capacity(out_w * out_h * 3);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            for c in 0..3 {
                let t = at(y0, x0, c) + (at(y0, x1, c) - at(y0, x0, c)) * fx;
                let b = at(y1, x0, c) + (at(y1, x1, c) - at(y1, x0, c)) * fx;
                dst.push((t + (b - t) * fy) as f32);
            }
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_warp_copies_pixels() {
        let img = RgbImage::from_fn(5, 5, |x, y| image::Rgb([(x * 40) as u8, (y * 40) as u8, 7]));
        let out = cv_warp_scale(&img, 1.0, 0.0, 0.0, 5);
        assert_eq!(out, img.as_raw().as_slice());
    }

    #[test]
    fn warp_outside_is_black() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([200, 100, 50]));
        let out = cv_warp_scale(&img, 1.0, 2.0, 2.0, 8);
        assert_eq!(&out[..3], &[0, 0, 0]);
        assert_eq!(&out[(3 * 8 + 3) * 3..(3 * 8 + 3) * 3 + 3], &[200, 100, 50]);
    }

    #[test]
    fn legacy_resize_pads_with_black() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([100, 100, 100]));
        // 2x2 image at the top of a 2x4 canvas, resized to 2x2: rows 0 and 2.
        let out = resize_legacy_padded(&img, 0, 0, 2, 4, 2, 2);
        assert_eq!(out[0], 100.0);
        assert_eq!(out[2 * 3], 0.0);
    }
}
