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

/// OpenCV-style bilinear resize (half-pixel centres), rounded back to u8.
pub fn resize_linear(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.width() == w && img.height() == h {
        return img.clone();
    }
    let (sw, sh) = (img.width() as f32 / w as f32, img.height() as f32 / h as f32);
    let src = img.as_raw();
    let stride = img.width() as usize * 3;
    let axis = |d: u32, scale: f32, n: u32| {
        let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as u32).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0 as usize, i1 as usize, s - i0 as f32)
    };
    let xs: Vec<_> = (0..w).map(|x| axis(x, sw, img.width())).collect();
    let mut out = RgbImage::new(w, h);
    let buf: &mut [u8] = &mut out;
    for y in 0..h {
        let (y0, y1, fy) = axis(y, sh, img.height());
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let v = |xx: usize, yy: usize| src[yy * stride + xx * 3 + c] as f32;
                let top = v(x0, y0) * (1.0 - fx) + v(x1, y0) * fx;
                let bot = v(x0, y1) * (1.0 - fx) + v(x1, y1) * fx;
                buf[(y as usize * w as usize + x) * 3 + c] =
                    (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Letterboxes `img` into a `size`×`size` (1, 3, S, S) tensor in 0..1.
pub fn letterbox(img: &RgbImage, size: usize, device: &Device) -> Result<(Tensor, Letterbox)> {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let s = size as f32;
    let r = (s / h).min(s / w);
    let (nw, nh) = ((w * r).round() as u32, (h * r).round() as u32);
    let (dw, dh) = ((s - nw as f32) / 2.0, (s - nh as f32) / 2.0);
    let (top, left) = ((dh - 0.1).round() as usize, (dw - 0.1).round() as usize);
    let resized = resize_linear(img, nw.max(1), nh.max(1));
    let plane = size * size;
    let mut data = vec![114.0f32 / 255.0; plane * 3];
    for (y, row) in resized.rows().enumerate() {
        for (x, p) in row.enumerate() {
            let (yy, xx) = (y + top, x + left);
            if yy < size && xx < size {
                for c in 0..3 {
                    data[c * plane + yy * size + xx] = p.0[c] as f32 / 255.0;
                }
            }
        }
    }
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
}
