//! JPEG decoding at a reduced scale: the inverse DCT at 1/2, 1/4 or 1/8 (as
//! libjpeg's `scale_denom`), when a model needs far fewer pixels than a photo
//! has. A 1920×1398 photo for a 416-pixel network decodes at half size, in a
//! fraction of the time, and nothing downstream sees the difference except
//! the scale, which the caller maps the detections back through.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, RgbImage};

use super::decode::DecodeLimits;

/// A reduced decode and how to map its coordinates back to the original.
pub struct Reduced {
    pub image: RgbImage,
    /// The original image's size (after EXIF orientation).
    pub original: (u32, u32),
}

impl Reduced {
    /// Original pixels per decoded pixel, x and y.
    pub fn factor(&self) -> (f32, f32) {
        (
            self.original.0 as f32 / self.image.width().max(1) as f32,
            self.original.1 as f32 / self.image.height().max(1) as f32,
        )
    }
}

/// The largest reduction (1, 2, 4 or 8) that keeps the longer side at least
/// `min_side` pixels.
pub fn reduction(w: u32, h: u32, min_side: u32) -> u32 {
    let long = w.max(h);
    [8, 4, 2]
        .into_iter()
        .find(|&r| long.div_ceil(r) >= min_side)
        .unwrap_or(1)
}

/// Decodes `bytes` at the smallest scale whose longer side stays at least
/// `min_side`. `None` when `bytes` is not a baseline/progressive JPEG this
/// decoder reads, no reduction applies, or the image is over the limits: the
/// caller then decodes it the usual way (with the usual error messages).
pub fn decode_reduced(bytes: &[u8], min_side: u32, limits: &DecodeLimits) -> Option<Reduced> {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) || bytes.len() as u64 > limits.max_bytes {
        return None;
    }
    // EXIF orientation, as the usual path applies it.
    let orientation = image::codecs::jpeg::JpegDecoder::new(Cursor::new(bytes))
        .ok()
        .and_then(|mut d| d.orientation().ok())?;
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    d.read_info().ok()?;
    let info = d.info()?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > limits.max_pixels {
        return None;
    }
    let r = reduction(w, h, min_side);
    if r == 1 {
        return None;
    }
    let (sw, sh) = d
        .scale(info.width.div_ceil(r as u16), info.height.div_ceil(r as u16))
        .ok()?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    // A decoder bug costs this path, not the worker: the usual path runs instead.
    let pixels = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.decode()))
        .ok()?
        .ok()?;
    let info = d.info()?;
    let rgb: Vec<u8> = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        // CMYK and 16-bit gray: rare in photos; the usual path converts them.
        _ => return None,
    };
    let img = RgbImage::from_raw(sw, sh, rgb)?;
    let mut dynimg = DynamicImage::ImageRgb8(img);
    dynimg.apply_orientation(orientation);
    let swaps = matches!(
        orientation,
        image::metadata::Orientation::Rotate90
            | image::metadata::Orientation::Rotate270
            | image::metadata::Orientation::Rotate90FlipH
            | image::metadata::Orientation::Rotate270FlipH
    );
    Some(Reduced {
        image: dynimg.into_rgb8(),
        original: if swaps { (h, w) } else { (w, h) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 199) as u8])
        });
        let mut out = Cursor::new(Vec::new());
        let _ = DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg);
        out.into_inner()
    }

    #[test]
    fn the_reduction_keeps_the_longer_side_above_what_the_model_needs() {
        assert_eq!(reduction(1920, 1398, 832), 2);
        assert_eq!(reduction(1920, 1398, 416), 4);
        assert_eq!(reduction(4000, 3000, 416), 8);
        assert_eq!(reduction(640, 480, 832), 1);
    }

    #[test]
    fn a_large_jpeg_decodes_at_half_size_with_the_original_size_kept() {
        let bytes = jpeg(1921, 1399);
        let r = decode_reduced(&bytes, 832, &DecodeLimits::default());
        let Some(r) = r else { panic!("no reduced decode") };
        assert_eq!(r.original, (1921, 1399));
        assert_eq!((r.image.width(), r.image.height()), (961, 700));
        let (fx, fy) = r.factor();
        assert!((fx - 1921.0 / 961.0).abs() < 1e-6 && (fy - 1399.0 / 700.0).abs() < 1e-6);
        // The content matches the full decode downsampled (JPEG noise aside).
        let full = crate::vision::decode::decode_bytes("t", &bytes, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let (x, y) = (500u32, 300u32);
        let a = r.image.get_pixel(x, y).0;
        let b = full.get_pixel(2 * x, 2 * y).0;
        for c in 0..3 {
            assert!((i32::from(a[c]) - i32::from(b[c])).abs() <= 24, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn small_images_other_formats_and_garbage_take_the_usual_path() {
        let l = DecodeLimits::default();
        assert!(decode_reduced(&jpeg(640, 480), 832, &l).is_none());
        assert!(decode_reduced(b"\x89PNG\r\n\x1a\n", 16, &l).is_none());
        assert!(decode_reduced(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0], 16, &l).is_none());
        let tiny = DecodeLimits {
            max_bytes: 1 << 30,
            max_pixels: 1000,
        };
        assert!(decode_reduced(&jpeg(1920, 1080), 16, &tiny).is_none());
    }
}
