//! Ultralytics' letterbox: scale to fit a square, keep the aspect ratio,
//! centre with grey (114) padding; and the mapping back to the original.

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub ratio: f32,
    pub pad: [f32; 2],
    pub image_size: [u32; 2],
}

impl Letterbox {
    /// Input-pixel point → original-image point.
    pub fn unmap(&self, p: [f32; 2]) -> [f32; 2] {
        [(p[0] - self.pad[0]) / self.ratio, (p[1] - self.pad[1]) / self.ratio]
    }

    /// Input-pixel point → original-image point, clipped to the image.
    pub fn unmap_point_clipped(&self, p: [f32; 2]) -> [f32; 2] {
        let q = self.unmap(p);
        let (w, h) = (self.image_size[0] as f32, self.image_size[1] as f32);
        [q[0].clamp(0.0, w), q[1].clamp(0.0, h)]
    }

    /// Input-pixel box → original-image box, clipped to the image.
    pub fn unmap_box(&self, b: [f32; 4]) -> [f32; 4] {
        let a = self.unmap([b[0], b[1]]);
        let c = self.unmap([b[2], b[3]]);
        let (w, h) = (self.image_size[0] as f32, self.image_size[1] as f32);
        [
            a[0].clamp(0.0, w),
            a[1].clamp(0.0, h),
            c[0].clamp(0.0, w),
            c[1].clamp(0.0, h),
        ]
    }
}

/// OpenCV's fixed-point weights: 1 = 2048 (`INTER_RESIZE_COEF_SCALE`).
const ONE: i32 = 2048;

/// OpenCV's source position of output coordinate `d` of `n_out` from
/// `n_in`: the coordinate in f32 as OpenCV computes it, its floor and the
/// fractional part's fixed-point weight for the lower neighbour.
fn source(d: u32, n_out: u32, n_in: u32) -> (i64, i32) {
    let scale = 1.0 / (n_out as f64 / n_in as f64);
    let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let s = f.floor();
    let frac = f - s;
    (s as i64, ((1.0 - frac) * ONE as f32).round_ties_even() as i32)
}

/// Source column pair and the lower one's weight for output column `d`
/// (OpenCV clamps the position itself at the borders).
fn axis_x(d: u32, n_out: u32, n_in: u32) -> (usize, usize, i32) {
    let last = i64::from(n_in) - 1;
    let (s, w) = source(d, n_out, n_in);
    if s < 0 {
        return (0, 0, ONE);
    }
    if s >= last {
        return (last as usize, last as usize, ONE);
    }
    (s as usize, s as usize + 1, w)
}

/// Source row pair and the upper one's weight for output row `d` (OpenCV
/// keeps the weights at the borders and clamps the rows).
fn axis_y(d: u32, n_out: u32, n_in: u32) -> (usize, usize, i32) {
    let last = i64::from(n_in) - 1;
    let (s, w) = source(d, n_out, n_in);
    (s.clamp(0, last) as usize, (s + 1).clamp(0, last) as usize, w)
}

/// One channel value of the bilinear resize, bit for bit as OpenCV's
/// `INTER_LINEAR` on u8: each row blended horizontally in fixed point,
/// then the two rows with its vectorised rounding.
#[inline(always)]
fn blend(src: &[u8], (r0, r1, b0): (usize, usize, i32), (c0, c1, a0): (usize, usize, i32)) -> u8 {
    let v = |at: usize| src[at] as i32;
    let h0 = v(r0 + c0) * a0 + v(r0 + c1) * (ONE - a0);
    let h1 = v(r1 + c0) * a0 + v(r1 + c1) * (ONE - a0);
    let s = (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * (ONE - b0)) >> 16);
    ((s + 2) >> 2).clamp(0, 255) as u8
}

/// OpenCV's bilinear resize (`cv2.resize(..., INTER_LINEAR)` on u8: half-pixel
/// centres, fixed-point weights), bit for bit.
pub fn resize_linear(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.width() == w && img.height() == h {
        return img.clone();
    }
    let src = img.as_raw();
    let stride = img.width() as usize * 3;
    let xs: Vec<_> = (0..w).map(|x| axis_x(x, w, img.width())).collect();
    let mut out = RgbImage::new(w, h);
    let buf: &mut [u8] = &mut out;
    for y in 0..h {
        let (y0, y1, fy) = axis_y(y, h, img.height());
        let rows = (y0 * stride, y1 * stride, fy);
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            for c in 0..3 {
                buf[(y as usize * w as usize + x) * 3 + c] = blend(src, rows, (x0 * 3 + c, x1 * 3 + c, fx));
            }
        }
    }
    out
}

/// Letterboxes `img` into a `size`×`size` (1, 3, S, S) tensor in 0..1: the
/// values of [`resize_linear`] to the fitted size, centred on grey (114),
/// divided by 255. Written straight into the three planes (no resized image
/// in between), output rows shared among rayon's threads.
pub fn letterbox(img: &RgbImage, size: usize, device: &Device) -> Result<(Tensor, Letterbox)> {
    use rayon::prelude::*;
    let (w, h) = (img.width() as f32, img.height() as f32);
    let s = size as f32;
    let r = (s / h).min(s / w);
    let (fw, fh) = ((w * r).round() as u32, (h * r).round() as u32);
    let (dw, dh) = ((s - fw as f32) / 2.0, (s - fh as f32) / 2.0);
    let (nw, nh) = (fw.max(1), fh.max(1));
    let (top, left) = ((dh - 0.1).round() as usize, (dw - 0.1).round() as usize);
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    // Columns that land inside the square, as byte offsets of channel 0.
    let xs: Vec<(usize, usize, i32)> = (0..nw)
        .take(size.saturating_sub(left))
        .map(|x| {
            let (x0, x1, fx) = axis_x(x, nw, img.width());
            (x0 * 3, x1 * 3, fx)
        })
        .collect();
    let unit: [f32; 256] = std::array::from_fn(|v| v as f32 / 255.0);
    let grey = 114.0f32 / 255.0;
    let mut data = vec![0f32; size * size * 3];
    data.par_chunks_mut(size.max(1))
        .with_min_len(8)
        .enumerate()
        .for_each(|(i, row)| {
            let (c, y) = (i / size, i % size);
            let Some(cy) = y.checked_sub(top).filter(|&cy| cy < nh as usize) else {
                row.fill(grey);
                return;
            };
            let (y0, y1, fy) = axis_y(cy as u32, nh, img.height());
            let rows = (y0 * stride, y1 * stride, fy);
            row[..left.min(size)].fill(grey);
            let content = &mut row[left.min(size)..];
            for (o, &(x0, x1, fx)) in content.iter_mut().zip(&xs) {
                *o = unit[blend(src, rows, (x0 + c, x1 + c, fx)) as usize];
            }
            content[xs.len()..].fill(grey);
        });
    Ok((
        Tensor::from_vec(data, (1, 3, size, size), device)?,
        Letterbox {
            ratio: r,
            pad: [left as f32, top as f32],
            image_size: [img.width(), img.height()],
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_maps_back_to_the_original() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([10, 20, 30]));
        let (t, lb) = letterbox(&img, 64, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.dims(), &[1, 3, 64, 64]);
        assert_eq!(lb.pad, [0.0, 16.0]);
        assert!((lb.ratio - 0.32).abs() < 1e-6);
        let p = lb.unmap([32.0, 32.0]);
        assert!((p[0] - 100.0).abs() < 1e-3 && (p[1] - 50.0).abs() < 1e-3);
        let v: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).unwrap_or_default();
        assert!((v[0] - 114.0 / 255.0).abs() < 1e-6, "padding is grey");
        assert!((v[32 * 64] - 10.0 / 255.0).abs() < 1e-6, "content is the image");
    }

    /// `resize_linear` gives OpenCV's `INTER_LINEAR` bits (PNGs from
    /// `cv2.resize`, see tests/fixtures/resize/README.md): upscaling,
    /// downscaling and both at once.
    #[test]
    fn resize_linear_is_opencvs_bit_for_bit() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resize");
        for (w, h, ow, oh) in [(97, 61, 320, 320), (640, 480, 320, 240), (33, 40, 41, 17)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    ((x * 7 + y * 13) % 256) as u8,
                    ((x * x + 3 * y) % 256) as u8,
                    (((x ^ y) * 5) % 256) as u8,
                ])
            });
            let path = dir.join(format!("pattern-{w}x{h}-to-{ow}x{oh}.png"));
            let want = image::open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .to_rgb8();
            let got = resize_linear(&img, ow, oh);
            let off = got.as_raw().iter().zip(want.as_raw()).filter(|(a, b)| a != b).count();
            assert_eq!((got.dimensions(), off), (want.dimensions(), 0), "{w}x{h} to {ow}x{oh}");
        }
    }

    /// The fused letterbox gives the bits of resizing with [`resize_linear`]
    /// and filling the planes, on shapes that pad either side, fit exactly,
    /// upscale and downscale.
    #[test]
    fn fused_letterbox_equals_resize_then_planes() {
        for (w, h, size) in [
            (810, 1080, 64),
            (37, 11, 32),
            (32, 32, 32),
            (5, 9, 40),
            (1, 1, 8),
            (300, 170, 96),
        ] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 7 + y) as u8, (x ^ y) as u8, (x * y % 251) as u8])
            });
            let (t, lb) = letterbox(&img, size, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
            let got: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).unwrap_or_default();
            let (nw, nh) = (
                (w as f32 * lb.ratio).round().max(1.0) as u32,
                (h as f32 * lb.ratio).round().max(1.0) as u32,
            );
            let resized = resize_linear(&img, nw, nh);
            let plane = size * size;
            let mut want = vec![114.0f32 / 255.0; plane * 3];
            for (x, y, p) in resized.enumerate_pixels() {
                let (xx, yy) = (x as usize + lb.pad[0] as usize, y as usize + lb.pad[1] as usize);
                if xx < size && yy < size {
                    for c in 0..3 {
                        want[c * plane + yy * size + xx] = p.0[c] as f32 / 255.0;
                    }
                }
            }
            assert_eq!(got.len(), want.len());
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{w}x{h} into {size}");
        }
    }
}
