//! Masks: a probability map a model returns for the whole image (person
//! segmentation) or for one detection (instance segmentation, prompts).
//!
//! A mask keeps the model's own resolution (`width`×`height` values, p·255
//! rounded) and the rectangle of the original image it covers (`region`,
//! `[x0, y0, x1, y1]` in image pixels), so it stays small; [`Mask::at`]
//! samples it bilinearly at any image pixel and [`Mask::to_image`] maps it
//! onto the whole image. In JSON the values are a base64 8-bit grayscale PNG
//! (`png`), which compresses the large flat areas masks have.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The most values one mask may hold (a 16384² map); bounds what a JSON
/// mask from another program may make us allocate.
pub const MAX_MASK_VALUES: usize = 1 << 28;

/// One probability map over a region of the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MaskJson", into = "MaskJson")]
pub struct Mask {
    /// What the mask shows ("person", a class name, …).
    pub label: String,
    /// The detection (index into `Output::detections`) this mask belongs
    /// to; `None` for a mask of the whole image.
    pub detection: Option<u32>,
    /// `[x0, y0, x1, y1]` in original image pixels: where the map's edges lie.
    pub region: [f32; 4],
    pub width: u32,
    pub height: u32,
    /// Row-major probabilities, 0 = surely not, 255 = surely.
    pub data: Vec<u8>,
}

/// A mask's JSON form: the values as a base64 grayscale PNG.
#[derive(Serialize, Deserialize)]
struct MaskJson {
    label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detection: Option<u32>,
    region: [f32; 4],
    width: u32,
    height: u32,
    png: String,
}

impl From<Mask> for MaskJson {
    fn from(m: Mask) -> MaskJson {
        // An empty string when encoding fails (it cannot for a checked mask):
        // reading it back then names the mask and the problem.
        let png = m
            .png()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            .unwrap_or_default();
        MaskJson {
            label: m.label,
            detection: m.detection,
            region: m.region,
            width: m.width,
            height: m.height,
            png,
        }
    }
}

impl TryFrom<MaskJson> for Mask {
    type Error = Error;

    fn try_from(j: MaskJson) -> Result<Mask> {
        let what = |e: String| Error::msg(format!("mask '{}': png: {e}", j.label));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(j.png.as_bytes())
            .map_err(|e| what(format!("not base64: {e}")))?;
        let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_MASK_VALUES as u64);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| what(e.to_string()))?;
        if (img.width(), img.height()) != (j.width, j.height) {
            return Err(what(format!(
                "{}x{} image for a {}x{} mask",
                img.width(),
                img.height(),
                j.width,
                j.height
            )));
        }
        let mut m = Mask::new(&j.label, j.region, j.width, j.height, img.into_luma8().into_raw())?;
        m.detection = j.detection;
        Ok(m)
    }
}

impl Mask {
    /// A mask from probabilities in `[0, 1]` (clamped), `width`×`height` row-major.
    pub fn from_probs(label: &str, region: [f32; 4], width: u32, height: u32, probs: &[f32]) -> Result<Mask> {
        let data = probs
            .iter()
            .map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        Mask::new(label, region, width, height, data)
    }

    /// A mask from bytes, checked to hold `width`×`height` values.
    pub fn new(label: &str, region: [f32; 4], width: u32, height: u32, data: Vec<u8>) -> Result<Mask> {
        let n = (width as usize).checked_mul(height as usize);
        if n != Some(data.len()) || data.len() > MAX_MASK_VALUES {
            return Err(Error::msg(format!(
                "mask '{label}': {} values for {width}x{height}",
                data.len()
            )));
        }
        Ok(Mask {
            label: label.to_string(),
            detection: None,
            region,
            width,
            height,
            data,
        })
    }

    /// The probability (0–255) at image pixel centre (`x`, `y`), bilinear
    /// between the map's cells; 0 outside the region.
    pub fn at(&self, x: f32, y: f32) -> u8 {
        let [x0, y0, x1, y1] = self.region;
        let (w, h) = (self.width as usize, self.height as usize);
        if w == 0 || h == 0 || x < x0 || y < y0 || x >= x1 || y >= y1 || x1 <= x0 || y1 <= y0 {
            return 0;
        }
        // Cell centres sit at (i + 0.5) of the map's grid.
        let u = ((x - x0) / (x1 - x0) * w as f32 - 0.5).clamp(0.0, (w - 1) as f32);
        let v = ((y - y0) / (y1 - y0) * h as f32 - 0.5).clamp(0.0, (h - 1) as f32);
        let (i, j) = (u as usize, v as usize);
        let (i1, j1) = ((i + 1).min(w - 1), (j + 1).min(h - 1));
        let (fu, fv) = (u - i as f32, v - j as f32);
        let p = |i: usize, j: usize| self.data[j * w + i] as f32;
        let top = p(i, j) + (p(i1, j) - p(i, j)) * fu;
        let bottom = p(i, j1) + (p(i1, j1) - p(i, j1)) * fu;
        (top + (bottom - top) * fv).round() as u8
    }

    /// The map on the image's own pixel grid (`width`×`height`, row-major).
    pub fn to_image(&self, width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height {
            for x in 0..width {
                out.push(self.at(x as f32 + 0.5, y as f32 + 0.5));
            }
        }
        out
    }

    /// Maps the region from a scaled image's pixels to the original's.
    pub fn scale(&mut self, fx: f32, fy: f32) {
        let r = &mut self.region;
        *r = [r[0] * fx, r[1] * fy, r[2] * fx, r[3] * fy];
    }

    /// Rough heap size, for the result cache's byte bound.
    pub fn approx_bytes(&self) -> usize {
        64 + self.label.len() + self.data.len()
    }

    /// The map as an 8-bit grayscale PNG.
    pub fn png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let enc = image::codecs::png::PngEncoder::new(&mut out);
        image::ImageEncoder::write_image(enc, &self.data, self.width, self.height, image::ExtendedColorType::L8)
            .map_err(|e| Error::msg(format!("mask '{}': PNG: {e}", self.label)))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_value() {
        let probs: Vec<f32> = (0..12 * 7).map(|i| (i % 13) as f32 / 12.0).collect();
        let mut m = Mask::from_probs("person", [10.0, 20.0, 130.0, 90.0], 12, 7, &probs).unwrap();
        m.detection = Some(3);
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"png\":\""), "{text}");
        let back: Mask = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_png_of_the_wrong_size_is_refused_by_name() {
        let m = Mask::new("cat", [0.0, 0.0, 4.0, 4.0], 2, 2, vec![0, 64, 128, 255]).unwrap();
        let text = serde_json::to_string(&m).unwrap().replace("\"width\":2", "\"width\":3");
        let err = serde_json::from_str::<Mask>(&text).unwrap_err().to_string();
        assert!(
            err.contains("mask 'cat'") && err.contains("2x2 image for a 3x2 mask"),
            "{err}"
        );
    }

    #[test]
    fn sampling_maps_the_region_onto_image_pixels() {
        // A 2x1 map (left 0, right 255) over image columns 100..300.
        let m = Mask::new("m", [100.0, 0.0, 300.0, 10.0], 2, 1, vec![0, 255]).unwrap();
        assert_eq!(m.at(50.0, 5.0), 0, "outside the region");
        assert_eq!(m.at(120.0, 5.0), 0, "left cell's centre side");
        assert_eq!(m.at(280.0, 5.0), 255, "right cell's centre side");
        assert_eq!(m.at(200.0, 5.0), 128, "half way between the centres");
        let full = m.to_image(400, 10);
        assert_eq!(full.len(), 4000);
        assert_eq!(full[0], 0);
        assert_eq!(full[299], 255);
        assert_eq!(full[300], 0);
    }
}
