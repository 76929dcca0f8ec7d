//! Image decoding with limits: every failure is one line naming the file.

use crate::error::{Error, Result};
use crate::units::human_bytes;
use image::error::{ImageError, ImageFormatHint, LimitErrorKind};
use image::{ImageDecoder, ImageFormat, ImageReader, RgbImage};
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
        return Err(too_big(&name, meta.len(), limits.max_bytes));
    }
    std::fs::read(path).map_err(|e| Error::msg(format!("{name}: {e}")))
}

fn too_big(name: &str, len: u64, max: u64) -> Error {
    Error::msg(format!(
        "{name}: file is {len} bytes ({}), above the image file limit of {} ({max} bytes)",
        human_bytes(len),
        human_bytes(max)
    ))
}

/// Reads a file and decodes it (see [`decode_bytes`]).
pub fn decode_file(path: &std::path::Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let bytes = read_file_limited(path, limits)?;
    decode_bytes(&path.display().to_string(), &bytes, limits)
}

/// The formats the decoder reads, as people name them (for messages).
pub const FORMAT_NAMES: &str = "PNG, JPEG, BMP, GIF, WebP or TIFF";

/// The name people know `f` by.
pub fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Bmp => "BMP",
        other => other.extensions_str().first().copied().unwrap_or("image"),
    }
}

/// Most memory the decoder may use before it knows the image's size
/// (headers, tags and chunks it reads to find out).
const OPEN_ALLOC: u64 = 512 << 20;

/// What a decoder knows about the image when it fails, for the message.
struct Known<'a> {
    name: &'a str,
    format: &'static str,
    /// Width, height and the bytes of decoded pixels, once the header is read.
    size: Option<(u32, u32, u64)>,
    /// The decoder's memory limit (`image::Limits::max_alloc`).
    limit: u64,
}

impl Known<'_> {
    fn dims(&self) -> String {
        self.size.map(|(w, h, _)| format!(" ({w}x{h})")).unwrap_or_default()
    }

    /// One line for an `image` error: the file, the format, the size when
    /// known and what is wrong, in the underlying decoder's words.
    fn error(&self, e: ImageError) -> Error {
        let (name, fmt) = (self.name, self.format);
        let fmt_of = |hint: ImageFormatHint| match hint {
            ImageFormatHint::Exact(f) => format_name(f),
            _ => fmt,
        };
        match e {
            ImageError::Decoding(d) => {
                let fmt = fmt_of(d.format_hint());
                let why = std::error::Error::source(&d)
                    .map(|u| reason(&u.to_string()))
                    .unwrap_or_else(|| "malformed data".to_string());
                Error::msg(format!("{name}: cannot decode {fmt} image{}: {why}", self.dims()))
            }
            ImageError::IoError(io) => Error::msg(format!(
                "{name}: cannot decode {fmt} image{}: {}",
                self.dims(),
                io_reason(&io)
            )),
            ImageError::Limits(l) => match l.kind() {
                LimitErrorKind::InsufficientMemory => self.over_memory(),
                LimitErrorKind::DimensionError => Error::msg(format!(
                    "{name}: the {fmt} image{} is larger than the decoder accepts",
                    self.dims()
                )),
                _ => Error::msg(format!("{name}: cannot decode {fmt} image{}: {l}", self.dims())),
            },
            ImageError::Unsupported(u) => Error::msg(format!(
                "{name}: unsupported {} image{}: {}",
                fmt_of(u.format_hint()),
                self.dims(),
                reason(&u.to_string())
            )),
            other => Error::msg(format!(
                "{name}: cannot decode {fmt} image{}: {}",
                self.dims(),
                reason(&other.to_string())
            )),
        }
    }

    /// "Memory limit exceeded", with the size the image needs and the limit.
    fn over_memory(&self) -> Error {
        let (name, fmt, limit) = (self.name, self.format, self.limit);
        let lim = format!("the limit of {} ({limit} bytes)", human_bytes(limit));
        match self.size {
            Some((w, h, px)) if px > limit => Error::msg(format!(
                "{name}: the {w}x{h} {fmt} image needs {px} bytes ({}) to decode, above {lim}",
                human_bytes(px)
            )),
            Some((w, h, px)) => Error::msg(format!(
                "{name}: the {w}x{h} {fmt} image ({px} bytes of pixels) needs more memory to decode than {lim}: {}",
                match fmt {
                    "GIF" => "a frame in it is larger than the image",
                    "TIFF" => "a strip, tile or tag in it holds more than the image needs",
                    "PNG" => "a chunk in it (text, ICC profile, frame) holds more than the image needs",
                    _ => "its data claims more than the image needs",
                }
            )),
            None => Error::msg(format!(
                "{name}: reading the {fmt} header needs more memory than {lim}: it declares more data than an image needs"
            )),
        }
    }
}

/// A decoder's own words, on one line, without Debug noise.
fn reason(s: &str) -> String {
    let mut t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // png: "while decoding ChunkType { type: IDAT, critical: true, … } chunk"
    while let Some(at) = t.find("ChunkType { type: ") {
        let rest = &t[at + "ChunkType { type: ".len()..];
        let kind: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let end = rest
            .find('}')
            .map(|i| at + "ChunkType { type: ".len() + i + 1)
            .unwrap_or(t.len());
        t.replace_range(at..end, &kind);
    }
    let t = t.strip_prefix("I/O errors ").unwrap_or(&t);
    let t = t.trim().trim_end_matches('.').trim();
    let lower = t.to_ascii_lowercase();
    const GENERIC_EOF: [&str; 4] = [
        "unexpected end of file",
        "failed to fill whole buffer",
        "unexpected eof",
        "unexpected end of data",
    ];
    if GENERIC_EOF.contains(&lower.as_str()) {
        TRUNCATED.to_string()
    } else if lower.contains("not enough bytes") || lower.contains("unexpected end") || lower.contains("unexpected eof")
    {
        format!("{TRUNCATED}: {t}")
    } else if t.is_empty() {
        "malformed data".to_string()
    } else {
        t.to_string()
    }
}

const TRUNCATED: &str = "the data ends early (truncated file)";

/// An I/O error from inside a decoder: truncation, or a codec's error the
/// `image` crate passes on as I/O (LZW, CCITT fax).
fn io_reason(io: &std::io::Error) -> String {
    if io.kind() == std::io::ErrorKind::UnexpectedEof {
        return TRUNCATED.to_string();
    }
    match io.get_ref() {
        // The `fax` crate's error says only "Decode Error"; its variant says more.
        Some(inner) if inner.to_string() == "Decode Error" => match format!("{inner:?}").as_str() {
            "Invalid" => "invalid CCITT Group 4 (fax) compressed data".to_string(),
            "Unsupported" => "the CCITT Group 4 (fax) data uses a feature the decoder does not support".to_string(),
            _ => "the CCITT Group 4 (fax) data ends early (truncated file)".to_string(),
        },
        Some(inner) => reason(&inner.to_string()),
        None => reason(&io.to_string()),
    }
}

/// Decodes image bytes to RGB8 with EXIF orientation applied. Gray, RGBA and
/// 16-bit images are converted. `name` is used in error messages only.
pub fn decode_bytes(name: &str, bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::msg(format!("{name}: empty file (0 bytes)")));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(too_big(name, bytes.len() as u64, limits.max_bytes));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::msg(format!("{name}: {e}")))?;
    let Some(format) = reader.format() else {
        if bytes.starts_with(b"II+\0") || bytes.starts_with(b"MM\0+") {
            return Err(Error::msg(format!(
                "{name}: BigTIFF (64-bit TIFF) is not supported; save it as a classic TIFF, PNG or JPEG"
            )));
        }
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(Error::msg(format!(
            "{name}: not an image (unrecognised format: starts with bytes {}; expected {FORMAT_NAMES})",
            head.join(" ")
        )));
    };
    let mut known = Known {
        name,
        format: format_name(format),
        size: None,
        limit: OPEN_ALLOC.min(limits.max_pixels.saturating_mul(16)).max(1 << 20),
    };
    let mut open_limits = image::Limits::default();
    open_limits.max_alloc = Some(known.limit);
    reader.limits(open_limits);
    let mut decoder = reader.into_decoder().map_err(|e| known.error(e))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels == 0 {
        return Err(Error::msg(format!(
            "{name}: {} image has zero size ({w}x{h})",
            known.format
        )));
    }
    if pixels > limits.max_pixels {
        return Err(Error::msg(format!(
            "{name}: {w}x{h} is {pixels} pixels, above the {} pixel limit",
            limits.max_pixels
        )));
    }
    known.size = Some((w, h, decoder.total_bytes()));
    known.limit = pixels.saturating_mul(16).max(1 << 20);
    let mut ilimits = image::Limits::default();
    ilimits.max_alloc = Some(known.limit);
    decoder.set_limits(ilimits).map_err(|e| known.error(e))?;
    let orientation = decoder.orientation().ok();
    // A decoder bug must cost this file its answer, not the engine its worker.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        image::DynamicImage::from_decoder(decoder)
    }));
    let mut img = match decoded {
        Ok(r) => r.map_err(|e| known.error(e))?,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown reason".to_string());
            return Err(Error::msg(format!(
                "{name}: the {} decoder failed on this {w}x{h} image (internal error: {})",
                known.format,
                why.lines().next().unwrap_or("")
            )));
        }
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.to_rgb8())
}
