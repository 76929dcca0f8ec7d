//! What every model returns: detections in pixels of the original image.

use serde::{Deserialize, Serialize};

/// One detected object. `bbox` is `[x0, y0, x1, y1]` in pixels of the original
/// image; `keypoints` are `[x, y, score]` in the same pixels (hands:
/// `[x, y, z]`, z in the same pixel scale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub label: String,
    /// Index of `label` in the model's label list, for multi-class models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_id: Option<u32>,
    pub score: f32,
    pub bbox: [f32; 4],
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keypoints: Vec<[f32; 3]>,
}

impl Detection {
    /// Maps the box and keypoints from a scaled image's pixels to the
    /// original's (`fx`, `fy`: original pixels per scaled pixel).
    pub fn scale(&mut self, fx: f32, fy: f32) {
        self.bbox = [
            self.bbox[0] * fx,
            self.bbox[1] * fy,
            self.bbox[2] * fx,
            self.bbox[3] * fy,
        ];
        for k in &mut self.keypoints {
            k[0] *= fx;
            k[1] *= fy;
        }
    }

    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// Post-processing parameters a request may set; `None` keeps the model's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct InferParams {
    pub conf: Option<f32>,
    pub iou: Option<f32>,
    /// Hands tracked from the previous video frame (the live pipeline's
    /// `HandTracker`): a hands model crops these regions instead of running
    /// its palm detector. `None` for a single image. Other models ignore it.
    #[serde(skip)]
    pub hand_regions: Option<super::hand_roi::HandRegions>,
    /// Points and boxes for promptable segmentation (Segment Anything): one
    /// mask per prompt. Other models ignore them.
    #[serde(skip)]
    pub prompts: Option<super::prompt::Prompts>,
}

impl InferParams {
    /// Stable bytes for cache keys.
    pub fn key_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; 10];
        let enc = |v: Option<f32>| -> (u8, [u8; 4]) {
            match v {
                Some(f) => (1, f.to_bits().to_le_bytes()),
                None => (0, [0; 4]),
            }
        };
        let (a, b) = enc(self.conf);
        let (c, d) = enc(self.iou);
        out[0] = a;
        out[1..5].copy_from_slice(&b);
        out[5] = c;
        out[6..10].copy_from_slice(&d);
        if let Some(r) = &self.hand_regions {
            out.extend(r.key_bytes());
        }
        if let Some(p) = &self.prompts {
            out.push(b'p');
            out.extend(p.key_bytes());
        }
        out
    }
}

/// Stage timings of one request in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub queue: f64,
    pub decode: f64,
    pub preprocess: f64,
    pub forward: f64,
    pub postprocess: f64,
    pub total: f64,
}

/// Timings a model measures itself while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelTimings {
    pub preprocess: f64,
    pub forward: f64,
    pub postprocess: f64,
}

/// Result of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub image_size: [u32; 2],
    pub detections: Vec<Detection>,
    /// Probability maps: of the whole image (person segmentation) or of
    /// single detections (`Mask::detection`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<super::Mask>,
    /// True when the answer came from the result cache.
    #[serde(default)]
    pub cached: bool,
    /// The output tensors by name, for a request that sent tensors (a
    /// raw-tensor model, or another modeldock using this one as its remote
    /// backend).
    #[serde(skip)]
    pub tensors: Option<std::sync::Arc<crate::v2::named_tensors::NamedTensors>>,
}

impl Output {
    /// Rough heap size, for the cache's byte bound.
    pub fn approx_bytes(&self) -> usize {
        64 + self
            .detections
            .iter()
            .map(|d| 64 + d.label.len() + d.keypoints.len() * 12)
            .sum::<usize>()
            + self.masks.iter().map(|m| m.approx_bytes()).sum::<usize>()
    }
}
