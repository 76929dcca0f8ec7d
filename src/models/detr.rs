//! `detr`: DETR-style detectors imported from ONNX (Ultralytics RT-DETR
//! exports): no anchors and no NMS, each of the decoder's queries is one
//! box.
//!
//! Pre-processing follows Ultralytics' `RTDETRPredictor` (`scale_fill`):
//! the whole image stretched to the input size with OpenCV's bilinear
//! resize, `/ 255`, NCHW. The graph's one output is `[1, Q, 6]` rows
//! `cx, cy, w, h, score, class` (boxes normalised to the input: Ultralytics'
//! export, queries already top-k selected), or `[1, Q, 4 + C]` rows
//! `cx, cy, w, h` and C class scores (the best class is the query's). Rows
//! at or above the confidence threshold become detections, boxes
//! `cxcywh → xyxy` scaled to the image's pixels, in the graph's order, at
//! most [`MAX_DET`].

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::timing::timed;
use super::{Manifest, Model};
use crate::error::{Error, Result};
use crate::graph::executor::Graph;
use crate::vision::letterbox::resize_linear;
use crate::vision::{Detection, InferParams, ModelTimings};

/// The most detections one image gives (Ultralytics' `max_det`).
pub const MAX_DET: usize = 300;

pub struct Detr {
    graph: Graph,
    size: usize,
    labels: Vec<String>,
    conf: f32,
    device: Device,
}

impl Detr {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let what = format!("model '{}'", m.id);
        let graph = Graph::load(&vb, &what)?;
        let shape = graph.input_shape().to_vec();
        if shape.len() != 4 || shape[1] != 3 || shape[2] <= 0 || shape[2] != shape[3] {
            return Err(Error::msg(format!(
                "{what}: the graph's input is {shape:?}, expected [1, 3, S, S]"
            )));
        }
        Ok(Detr {
            graph,
            size: shape[2] as usize,
            labels: m.labels.clone(),
            conf: m.conf.unwrap_or(0.25),
            device: vb.device().clone(),
        })
    }

    /// The network's input for `img`: `[1, 3, S, S]`, RGB in `[0, 1]`, the
    /// whole image stretched to S×S.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Tensor> {
        super::image_size(img)?;
        let s = self.size;
        let resized = resize_linear(img, s as u32, s as u32);
        let px = resized.as_raw();
        let mut data = vec![0f32; 3 * s * s];
        for (i, p) in px.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * s * s + i] = p[c] as f32 / 255.0;
            }
        }
        Ok(Tensor::from_vec(data, (1, 3, s, s), &self.device)?)
    }

    fn output(&self, x: &Tensor) -> Result<Tensor> {
        let outs = crate::kernels::host::in_pool(|| self.graph.run(x))?;
        outs.into_iter()
            .next()
            .map(|(_, t)| t)
            .ok_or_else(|| Error::msg("the network gave no output"))
    }

    /// Detections from the graph's output for an image `w`×`h`.
    pub fn decode(&self, out: &Tensor, w: f32, h: f32, conf: f32) -> Result<Vec<Detection>> {
        let rows = out.squeeze(0)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        decode_rows(&rows, &self.labels, w, h, conf)
    }
}

/// [`Detr::decode`] on the output's rows.
pub fn decode_rows(rows: &[Vec<f32>], labels: &[String], w: f32, h: f32, conf: f32) -> Result<Vec<Detection>> {
    let cols = rows.first().map(|r| r.len()).unwrap_or(0);
    // [cx, cy, w, h, score, class], unless the labels say 2 classes.
    let ranked = cols == 6 && labels.len() != 2;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if cols < 5 {
        return Err(Error::msg(format!(
            "the network's rows have {cols} values; a DETR head gives cx, cy, w, h and scores"
        )));
    }
    let mut out = Vec::new();
    for r in rows {
        let (score, class) = if ranked {
            (r[4], r[5])
        } else {
            let (best, s) = r[4..]
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |a, (i, &s)| if s > a.1 { (i, s) } else { a });
            (s, best as f32)
        };
        if score.is_nan() || score < conf || !class.is_finite() || class < 0.0 {
            continue;
        }
        let id = class.round() as u32;
        let (cx, cy, bw, bh) = (r[0] * w, r[1] * h, r[2] * w, r[3] * h);
        out.push(Detection {
            label: labels.get(id as usize).cloned().unwrap_or_else(|| id.to_string()),
            class_id: Some(id),
            score,
            bbox: [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
            keypoints: Vec::new(),
        });
        if out.len() == MAX_DET {
            break;
        }
    }
    Ok(out)
}

impl Model for Detr {
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let (w, h) = super::image_size(img)?;
        let conf = params.conf.unwrap_or(self.conf);
        timed(
            || self.preprocess(img),
            |x| self.output(x),
            |_, out| self.decode(&out, w as f32, h as f32, conf),
        )
    }

    fn macs_done(&self) -> u64 {
        self.graph.macs_done()
    }

    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        self.output(x)
    }

    fn preprocess_raw(&self, img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(Some(self.preprocess(img)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranked_rows_become_boxes_in_pixels_above_the_threshold() {
        let labels: Vec<String> = (0..80).map(|i| format!("c{i}")).collect();
        let rows = vec![
            vec![0.5, 0.25, 0.2, 0.1, 0.9, 3.0],
            vec![0.1, 0.1, 0.1, 0.1, 0.2, 7.0],
            vec![0.75, 0.5, 0.5, 1.0, 0.3, 79.0],
        ];
        let d = decode_rows(&rows, &labels, 640.0, 480.0, 0.25).unwrap_or_default();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].label.as_str(), d[0].class_id, d[0].score), ("c3", Some(3), 0.9));
        assert_eq!(d[0].bbox, [256.0, 96.0, 384.0, 144.0]);
        assert_eq!(d[1].bbox, [320.0, 0.0, 640.0, 480.0]);
        assert_eq!(d[1].label, "c79");
    }

    #[test]
    fn per_class_rows_take_the_best_class() {
        let labels: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let rows = vec![
            vec![0.5, 0.5, 1.0, 1.0, 0.1, 0.7, 0.3],
            vec![0.5, 0.5, 1.0, 1.0, 0.1, 0.2, 0.1],
        ];
        let d = decode_rows(&rows, &labels, 10.0, 10.0, 0.25).unwrap_or_default();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].label.as_str(), d[0].score), ("b", 0.7));
        assert!(decode_rows(&[vec![1.0, 2.0]], &labels, 1.0, 1.0, 0.1).is_err());
    }
}
