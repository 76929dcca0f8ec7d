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

/// Source index pair and weight of output coordinate `d` for an
/// OpenCV-style bilinear resize (half-pixel centres) by `scale` = in / out.
fn axis(d: u32, scale: f32, n: u32) -> (usize, usize, f32) {
    let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (s.floor() as u32).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    (i0 as usize, i1 as usize, s - i0 as f32)
}

/// One channel value of the bilinear resize, rounded to u8 as OpenCV does.
#[inline(always)]
fn blend(src: &[u8], (r0, r1, fy): (usize, usize, f32), (c0, c1, fx): (usize, usize, f32)) -> u8 {
    let v = |at: usize| src[at] as f32;
    let top = v(r0 + c0) * (1.0 - fx) + v(r0 + c1) * fx;
    let bot = v(r1 + c0) * (1.0 - fx) + v(r1 + c1) * fx;
    (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8
}

/// OpenCV-style bilinear resize (half-pixel centres), rounded back to u8.
pub fn resize_linear(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.width() == w && img.height() == h {
        return img.clone();
    }
    let (sw, sh) = (img.width() as f32 / w as f32, img.height() as f32 / h as f32);
    let src = img.as_raw();
    let stride = img.width() as usize * 3;
    let xs: Vec<_> = (0..w).map(|x| axis(x, sw, img.width())).collect();
    let mut out = RgbImage::new(w, h);
    let buf: &mut [u8] = &mut out;
    for y in 0..h {
        let (y0, y1, fy) = axis(y, sh, img.height());
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
    let (sw, sh) = (img.width() as f32 / nw as f32, img.height() as f32 / nh as f32);
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    // Columns that land inside the square, as byte offsets of channel 0.
    let xs: Vec<(usize, usize, f32)> = (0..nw)
        .take(size.saturating_sub(left))
        .map(|x| {
            let (x0, x1, fx) = axis(x, sw, img.width());
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
            let (y0, y1, fy) = axis(cy as u32, sh, img.height());
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
