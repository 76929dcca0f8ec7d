//! face-api's TinyFaceDetector: a tiny YOLOv2 with separable convs, 5 anchors,
//! one class, input 416. Reference: face-api `src/tinyYolov2`,
//! `src/tinyFaceDetector`.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::layers::{conv, max_pool_same, Act, FastConv, Padding, SeparableConv};
use super::remote_net::Net;
use super::timing::timed;
use super::{Manifest, Model};
use crate::error::Result;
use crate::vision::nms::nms;
use crate::vision::preprocess::FloatImage;
use crate::vision::{Detection, InferParams, ModelTimings};

pub const MEAN_RGB: [f32; 3] = [117.001, 114.697, 97.404];
pub const ANCHORS: [(f32, f32); 5] = [
    (1.603231, 2.094468),
    (6.041143, 7.080126),
    (2.882459, 3.518061),
    (4.266906, 5.178857),
    (9.041765, 10.66308),
];

/// The network's layers, when it runs here.
struct Layers {
    conv0: FastConv,
    sep: Vec<SeparableConv>,
    conv8: FastConv,
}

pub struct TinyFaceDetector {
    net: Net<Layers>,
    input_size: usize,
    conf: f32,
    iou: f32,
    device: Device,
}

/// Intermediate activations, for parity tests.
pub struct Activations {
    pub layers: Vec<Tensor>,
    pub output: Tensor,
}

impl TinyFaceDetector {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let leaky = Act::Leaky(0.1);
        let conv0 = conv(vb.pp("conv0"), 3, 16, 3, 1, Padding::default(), leaky)?;
        let chans = [16, 32, 64, 128, 256, 512];
        let mut sep = Vec::new();
        for i in 1..=5 {
            sep.push(SeparableConv::load(
                vb.pp(format!("conv{i}")),
                chans[i - 1],
                chans[i],
                1,
                leaky,
            )?);
        }
        let conv8 = conv(vb.pp("conv8"), 512, 25, 1, 1, Padding::default(), Act::None)?;
        Ok(Self::with_net(Net::Local(Layers { conv0, sep, conv8 }), m, vb.device()))
    }

    /// The detector with its network on a v2 server (`m.backend`).
    pub fn remote(m: &Manifest, device: &Device) -> Result<Self> {
        Ok(Self::with_net(Net::Remote(super::remote_net::connect(m)?), m, device))
    }

    fn with_net(net: Net<Layers>, m: &Manifest, device: &Device) -> Self {
        TinyFaceDetector {
            net,
            input_size: m.input_size as usize,
            conf: m.conf.unwrap_or(0.5),
            iou: m.iou.unwrap_or(0.4),
            device: device.clone(),
        }
    }

    /// The network with every block's output kept (a local network only).
    pub fn forward_all(&self, x: &Tensor) -> Result<Activations> {
        let Net::Local(l) = &self.net else {
            return Err(crate::error::Error::msg(
                "the network runs on a server: no activations here",
            ));
        };
        let mut layers = Vec::new();
        // Each block's conv and its 2×2 stride-2 pool run as one pass.
        let mut h = l.conv0.forward_pool2(x)?;
        layers.push(h.clone());
        for (i, s) in l.sep.iter().enumerate() {
            h = if i == 4 {
                max_pool_same(&s.forward_same(&h)?, 1)?
            } else {
                s.forward_same_pool2(&h)?
            };
            layers.push(h.clone());
        }
        let output = l.conv8.forward(&h)?;
        Ok(Activations { layers, output })
    }

    /// face-api's tensor path: pad bottom/right to a square, TF bilinear to
    /// `input_size`, subtract the mean, divide by 255.
    pub fn preprocess(&self, img: &FloatImage) -> Result<Tensor> {
        let r = img.pad_square_resize_tf(false, self.input_size);
        r.to_nchw(MEAN_RGB, 255.0, &self.device)
    }

    /// Detections in pixels of an image of `w`×`h` from the raw (1,25,G,G) output.
    pub fn decode(&self, out: &Tensor, w: usize, h: usize, conf: f32, iou: f32) -> Result<Vec<Detection>> {
        let (_, c, g, g2) = out.dims4()?;
        let data: Vec<f32> = out.flatten_all()?.to_vec1()?;
        let s = self.input_size as f64;
        let m = w.max(h) as f64;
        let rw = (w as f64 * s / m).round();
        let rh = (h as f64 * s / m).round();
        let side = rw.max(rh);
        let (fx, fy) = ((side / rw) as f32, (side / rh) as f32);
        let at = |ch: usize, row: usize, col: usize| data[(ch * g + row) * g2 + col];
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let mut boxes = Vec::new();
        let mut scores = Vec::new();
        let n = g as f32;
        for row in 0..g {
            for col in 0..g2 {
                for (a, &(aw, ah)) in ANCHORS.iter().enumerate().take(c / 5) {
                    let score = sig(at(a * 5 + 4, row, col));
                    if score <= conf {
                        continue;
                    }
                    let cx = (col as f32 + sig(at(a * 5, row, col))) / n * fx;
                    let cy = (row as f32 + sig(at(a * 5 + 1, row, col))) / n * fy;
                    let bw = at(a * 5 + 2, row, col).exp() * aw / n * fx;
                    let bh = at(a * 5 + 3, row, col).exp() * ah / n * fy;
                    let (x0, y0) = (cx - bw / 2.0, cy - bh / 2.0);
                    boxes.push([x0, y0, x0 + bw, y0 + bh]);
                    scores.push(score);
                }
            }
        }
        let keep = nms(&boxes, &scores, iou);
        Ok(keep
            .into_iter()
            .map(|i| {
                let b = boxes[i];
                Detection {
                    label: "face".to_string(),
                    class_id: None,
                    score: scores[i],
                    bbox: [b[0] * w as f32, b[1] * h as f32, b[2] * w as f32, b[3] * h as f32],
                    keypoints: Vec::new(),
                }
            })
            .collect())
    }

    /// [`preprocess`](Self::preprocess) straight from 8-bit pixels (same values,
    /// no full-size float copy of the image).
    pub fn preprocess_rgb(&self, img: &RgbImage) -> Result<Tensor> {
        let n = self.input_size;
        let planes = crate::vision::preprocess::pad_square_resize_tf_planes(img, false, n, MEAN_RGB, 255.0);
        Ok(Tensor::from_vec(planes, (1, 3, n, n), &self.device)?)
    }

    /// Whole pipeline on an 8-bit image.
    pub fn detect_rgb(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        self.detect_input(|| self.preprocess_rgb(img), w, h, params)
    }

    /// Whole pipeline on a float image.
    pub fn detect(&self, img: &FloatImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        self.detect_input(|| self.preprocess(img), img.width, img.height, params)
    }

    /// `preprocess`, the network and [`Self::decode`], timed.
    fn detect_input(
        &self,
        preprocess: impl FnOnce() -> Result<Tensor>,
        width: usize,
        height: usize,
        params: &InferParams,
    ) -> Result<(Vec<Detection>, ModelTimings)> {
        timed(
            preprocess,
            |x| self.forward_raw(x),
            |_, out| {
                let (conf, iou) = (params.conf.unwrap_or(self.conf), params.iou.unwrap_or(self.iou));
                self.decode(&out, width, height, conf, iou)
            },
        )
    }
}

impl Model for TinyFaceDetector {
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        self.detect_rgb(img, params)
    }

    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        match &self.net {
            Net::Local(_) => crate::kernels::host::in_pool(|| self.forward_all(x)).map(|a| a.output),
            Net::Remote(r) => super::remote_net::run(r, x),
        }
    }

    fn raw_input_shape(&self) -> Option<Vec<usize>> {
        Some(vec![1, 3, self.input_size, self.input_size])
    }

    fn preprocess_raw(&self, img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(Some(self.preprocess_rgb(img)?))
    }
}
