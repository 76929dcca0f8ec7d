//! face-api's 68-point landmark nets (full: 4 dense blocks of 4 convs; tiny:
//! 3 blocks of 3), run on each face the tiny face detector finds.
//! Reference: face-api `src/faceFeatureExtractor`, `src/faceLandmarkNet`,
//! `src/dom/extractFaceTensors.ts`.

use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use image::RgbImage;

use super::layers::{conv, same_padding, Act, FastConv, Padding, SeparableConv};
use super::timing::ms;
use super::tiny_face_detector::TinyFaceDetector;
use super::{Manifest, Model};
use crate::error::{Error, Result};
use crate::vision::preprocess::FloatImage;
use crate::vision::{Detection, InferParams, ModelTimings};

pub const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];
pub const INPUT: usize = 112;

enum FirstConv {
    Plain(FastConv),
    Separable(Box<SeparableConv>),
}

struct DenseBlock {
    first: FirstConv,
    rest: Vec<SeparableConv>,
}

impl DenseBlock {
    fn load(vb: VarBuilder, cin: usize, cout: usize, convs: usize, plain_first: bool) -> Result<Self> {
        let first = if plain_first {
            FirstConv::Plain(conv(vb.pp("conv0"), cin, cout, 3, 2, Padding::default(), Act::Relu)?)
        } else {
            FirstConv::Separable(Box::new(SeparableConv::load(vb.pp("conv0"), cin, cout, 2, Act::Relu)?))
        };
        let rest = (1..convs)
            .map(|i| SeparableConv::load(vb.pp(format!("conv{i}")), cout, cout, 1, Act::None))
            .collect::<Result<Vec<_>>>()?;
        Ok(DenseBlock { first, rest })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // o1 = relu(conv0(x)), the ReLU fused into the conv.
        let o1 = match &self.first {
            FirstConv::Plain(c) => c.forward_padded(x, same_padding(x, 3, 2)?)?,
            FirstConv::Separable(s) => s.forward_same(x)?,
        };
        // sum = o1 + o2 + ... ; each next conv sees relu(sum so far).
        let mut sum = o1.clone();
        let mut input = o1;
        for (i, c) in self.rest.iter().enumerate() {
            let o = c.forward_same(&input)?;
            sum = (sum + o)?;
            if i + 1 < self.rest.len() {
                input = sum.relu()?;
            }
        }
        Ok(sum.relu()?)
    }
}

pub struct LandmarkNet {
    blocks: Vec<DenseBlock>,
    fc: Linear,
    device: Device,
}

/// Activations for parity tests.
pub struct Activations {
    pub blocks: Vec<Tensor>,
    pub pooled: Tensor,
    pub output: Tensor,
}

impl LandmarkNet {
    /// `tiny`: 3 blocks of 3 convs (32, 64, 128); else 4 blocks of 4 (…, 256).
    pub fn load(vb: VarBuilder, tiny: bool) -> Result<Self> {
        let chans: &[usize] = if tiny { &[32, 64, 128] } else { &[32, 64, 128, 256] };
        let convs = if tiny { 3 } else { 4 };
        let mut blocks = Vec::new();
        let mut cin = 3;
        for (i, &c) in chans.iter().enumerate() {
            blocks.push(DenseBlock::load(vb.pp(format!("dense{i}")), cin, c, convs, i == 0)?);
            cin = c;
        }
        let w = vb.get((136, cin), "fc.weight")?;
        let b = vb.get(136, "fc.bias")?;
        Ok(LandmarkNet {
            blocks,
            fc: Linear::new(w, Some(b)),
            device: vb.device().clone(),
        })
    }

    pub fn forward_all(&self, x: &Tensor) -> Result<Activations> {
        let mut h = x.clone();
        let mut blocks = Vec::new();
        for b in &self.blocks {
            h = b.forward(&h)?;
            blocks.push(h.clone());
        }
        let pooled = h.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)?;
        let output = self.fc.forward(&pooled)?;
        Ok(Activations { blocks, pooled, output })
    }

    /// Pads the crop to a centred square, resizes to 112, normalises.
    pub fn preprocess(&self, crop: &FloatImage) -> Result<Tensor> {
        crop.pad_square_resize_tf(true, INPUT)
            .to_nchw(MEAN_RGB, 255.0, &self.device)
    }

    /// Maps the raw 136 outputs to points in the crop (face-api's postProcess).
    pub fn points_in_crop(out: &[f32], w: usize, h: usize) -> Vec<[f32; 2]> {
        let (w, h) = (w as f32, h as f32);
        let s = INPUT as f32 / w.max(h);
        let (sw, sh) = (w * s, h * s);
        let px = if sw < sh { (sh - sw) / 2.0 } else { 0.0 };
        let py = if sh < sw { (sw - sh) / 2.0 } else { 0.0 };
        out.chunks_exact(2)
            .map(|p| {
                let rx = (p[0] * INPUT as f32 - px) / sw;
                let ry = (p[1] * INPUT as f32 - py) / sh;
                [rx * w, ry * h]
            })
            .collect()
    }
}

/// face-api's crop of a detection box: clipped to the image, then floored.
pub fn crop_rect(bbox: &[f32; 4], img_w: usize, img_h: usize) -> Option<(usize, usize, usize, usize)> {
    let x = bbox[0].max(0.0);
    let y = bbox[1].max(0.0);
    let w = (bbox[2] - x).min(img_w as f32 - x);
    let h = (bbox[3] - y).min(img_h as f32 - y);
    let (x, y, w, h) = (x.floor(), y.floor(), w.floor(), h.floor());
    if w < 1.0 || h < 1.0 || x >= img_w as f32 || y >= img_h as f32 {
        return None;
    }
    let (x, y) = (x as usize, y as usize);
    Some((x, y, (w as usize).min(img_w - x), (h as usize).min(img_h - y)))
}

/// Detector + landmarks: every face with its 68 points.
pub struct FaceLandmarks {
    detector: TinyFaceDetector,
    net: LandmarkNet,
}

impl FaceLandmarks {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let tiny = match m.variant.as_str() {
            "tiny" => true,
            "" | "full" => false,
            v => {
                return Err(Error::msg(format!(
                    "face_landmarks_68: unknown variant '{v}' (full or tiny)"
                )))
            }
        };
        let mut dm = m.clone();
        dm.input_size = m.option("detector_input_size", 416.0) as u32;
        Ok(FaceLandmarks {
            detector: TinyFaceDetector::load(vb.pp("detector"), &dm)?,
            net: LandmarkNet::load(vb, tiny)?,
        })
    }

    pub fn net(&self) -> &LandmarkNet {
        &self.net
    }
}

impl Model for FaceLandmarks {
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let (mut faces, mut t) = self.detector.detect_rgb(img, params)?;
        for face in &mut faces {
            let Some((x, y, w, h)) = crop_rect(&face.bbox, img.width() as usize, img.height() as usize) else {
                continue;
            };
            let t0 = Instant::now();
            let input = self.net.preprocess(&FloatImage::from_rgb_region(img, x, y, w, h))?;
            let t1 = Instant::now();
            let out: Vec<f32> = self.net.forward_all(&input)?.output.flatten_all()?.to_vec1()?;
            let t2 = Instant::now();
            face.keypoints = LandmarkNet::points_in_crop(&out, w, h)
                .into_iter()
                .map(|p| [p[0] + face.bbox[0], p[1] + face.bbox[1], 1.0])
                .collect();
            t.preprocess += ms(t1 - t0);
            t.forward += ms(t2 - t1);
            t.postprocess += ms(t2.elapsed());
        }
        Ok((faces, t))
    }

    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.net.forward_all(x)?.output)
    }
}
