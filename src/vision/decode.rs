//! Image decoding with limits: every failure is one line naming the file.

use crate::error::{Error, Result};
use image::{ImageDecoder, ImageReader, RgbImage};
use std::io::Cursor;

/// Limits that stop decompression bombs and oversized inputs before any
/// pixel buffer is allocated.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_bytes: u64,
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 256 << 20,
            max_pixels: 64_000_000,
        }
    }
}

/// Reads a file whose size is within the limits.
pub fn read_file_limited(path: &std::path::Path, limits: &DecodeLimits) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::msg(format!("{name}: {e}")))?;
    if meta.is_dir() {
        return Err(Error::msg(format!("{name}: is a directory, not an image")));
    }
    if meta.len() > limits.max_bytes {
        return Err(Error::msg(format!(
            "{name}: file is {} bytes, above the {} byte limit",
            meta.len(),
            limits.max_bytes
        )));
    }
    std::fs::read(path).map_err(|e| Error::msg(format!("{name}: {e}")))
}

/// Reads a file and decodes it (see [`decode_bytes`]).
pub fn decode_file(path: &std::path::Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let bytes = read_file_limited(path, limits)?;
    decode_bytes(&path.display().to_string(), &bytes, limits)
}

/// Decodes image bytes to RGB8 with EXIF orientation applied. Gray, RGBA and
/// 16-bit images are converted. `name` is used in error messages only.
pub fn decode_bytes(name: &str, bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::msg(format!("{name}: empty file (0 bytes)")));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::msg(format!(
            "{name}: {} bytes, above the {} byte limit",
            bytes.len(),
            limits.max_bytes
        )));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::msg(format!("{name}: {e}")))?;
    if reader.format().is_none() {
        if bytes.starts_with(b"II+\0") || bytes.starts_with(b"MM\0+") {
            return Err(Error::msg(format!(
                "{name}: BigTIFF (64-bit TIFF) is not supported; save it as a classic TIFF, PNG or JPEG"
            )));
        }
        return Err(Error::msg(format!("{name}: not an image (unrecognised format)")));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::msg(format!("{name}: cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels == 0 {
        return Err(Error::msg(format!("{name}: image has zero size ({w}x{h})")));
    }
    if pixels > limits.max_pixels {
        return Err(Error::msg(format!(
            "{name}: {w}x{h} is {pixels} pixels, above the {} pixel limit",
            limits.max_pixels
        )));
    }
    let mut ilimits = image::Limits::default();
    ilimits.max_alloc = Some(pixels.saturating_mul(16).max(1 << 20));
    decoder
        .set_limits(ilimits)
        .map_err(|e| Error::msg(format!("{name}: {e}")))?;
    let orientation = decoder.orientation().ok();
    // A decoder bug must cost this file its answer, not the engine its worker.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        image::DynamicImage::from_decoder(decoder)
    }));
    let mut img = match decoded {
        Ok(r) => r.map_err(|e| Error::msg(format!("{name}: cannot decode: {e}")))?,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown reason".to_string());
            return Err(Error::msg(format!(
                "{name}: the image decoder failed on this file ({}): {w}x{h} {}",
                why.lines().next().unwrap_or(""),
                if bytes.starts_with(b"II") || bytes.starts_with(b"MM") {
                    "TIFF"
                } else {
                    "image"
                }
            )));
        }
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.to_rgb8())
}
