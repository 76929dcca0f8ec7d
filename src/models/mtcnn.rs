//! MTCNN (P-Net → R-Net → O-Net cascade; boxes and 5 landmarks), following
//! facenet-pytorch 2.6.0 `models/mtcnn.py` and `models/utils/detect_face.py`
//! with its defaults: min face 20, thresholds 0.6 / 0.7 / 0.7, factor 0.709.

use std::time::Instant;

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use image::RgbImage;

use super::layers::{conv as fast_conv, Act, FastConv, Padding};
use super::timing::ms;
use super::{Manifest, Model};
use crate::error::Result;
use crate::kernels::host;
use crate::vision::nms::nms;
use crate::vision::preprocess::{FloatImage, Region};
use crate::vision::{Detection, InferParams, ModelTimings};
use rayon::prelude::*;

struct PRelu(Tensor);

impl PRelu {
    fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(PRelu(vb.get(c, "weight")?))
    }
    /// max(x, 0) + w * min(x, 0), per channel (dim 1): one pass on the CPU.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if host::is_cpu_f32(x) && host::is_cpu_f32(&self.0) && dims.len() >= 2 && self.0.dim(0)? == dims[1] {
            let c = dims[1];
            let inner: usize = dims[2..].iter().product::<usize>().max(1);
            return host::with_slices(&[x, &self.0], |s| {
                let (xs, ws) = (s[0], s[1]);
                let mut out = vec![0f32; xs.len()];
                let plane = |i: usize, o: &mut [f32], xi: &[f32]| {
                    let w = ws[i % c];
                    for (o, &v) in o.iter_mut().zip(xi) {
                        *o = if v > 0.0 { v } else { w * v };
                    }
                };
                if inner >= 4096 {
                    out.par_chunks_mut(inner)
                        .zip(xs.par_chunks(inner))
                        .enumerate()
                        .for_each(|(i, (o, xi))| plane(i, o, xi));
                } else {
                    for (i, (o, xi)) in out.chunks_mut(inner).zip(xs.chunks(inner)).enumerate() {
                        plane(i, o, xi);
                    }
                }
                Ok(Tensor::from_vec(out, dims.clone(), x.device())?)
            });
        }
        let shape: Vec<usize> = (0..x.rank())
            .map(|d| if d == 1 { self.0.dim(0).unwrap_or(1) } else { 1 })
            .collect();
        let w = self.0.reshape(shape)?;
        let neg = x.minimum(0f32)?;
        Ok((x.relu()? + neg.broadcast_mul(&w)?)?)
    }
}

/// PyTorch `MaxPool2d(k, s, ceil_mode=True)` without padding: a window that
/// runs past the edge takes the max of the part inside. One pass per plane
/// on the CPU.
fn max_pool_ceil(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let out_len = |len: usize| {
        let mut out = (len.saturating_sub(k)).div_ceil(s) + 1;
        if (out - 1) * s >= len {
            out -= 1;
        }
        out
    };
    let (oh, ow) = (out_len(h), out_len(w));
    if host::is_cpu_f32(x) && h > 0 && w > 0 {
        return host::with_slices(&[x], |sl| {
            let xs = sl[0];
            let mut out = vec![0f32; n * c * oh * ow];
            // Per output row: the window's rows' max as one vector loop over
            // the row, then the max of each window's columns of it.
            let plane = |(o, p): (&mut [f32], &[f32])| {
                let mut rows = vec![0f32; w];
                for (oy, o) in o.chunks_exact_mut(ow).enumerate() {
                    let (y0, y1) = (oy * s, (oy * s + k).min(h));
                    rows.copy_from_slice(&p[y0 * w..y0 * w + w]);
                    // `if a > b` compiles to one max instruction (`f32::max`'s
                    // NaN rule does not), scalar or vector.
                    for y in y0 + 1..y1 {
                        for (m, v) in rows.iter_mut().zip(&p[y * w..y * w + w]) {
                            *m = if *v > *m { *v } else { *m };
                        }
                    }
                    let max = |a: f32, b: f32| if b > a { b } else { a };
                    // Windows wholly inside the row, with the window size
                    // known to the compiler; then the partial one at the edge.
                    let whole = if w >= k { ((w - k) / s + 1).min(ow) } else { 0 };
                    match k {
                        2 => (0..whole).for_each(|ox| o[ox] = max(rows[ox * s], rows[ox * s + 1])),
                        3 => {
                            (0..whole).for_each(|ox| o[ox] = max(max(rows[ox * s], rows[ox * s + 1]), rows[ox * s + 2]))
                        }
                        _ => {}
                    }
                    let from = if k == 2 || k == 3 { whole } else { 0 };
                    for (ox, o) in o.iter_mut().enumerate().skip(from) {
                        let (x0, x1) = (ox * s, (ox * s + k).min(w));
                        *o = rows[x0..x1]
                            .iter()
                            .fold(f32::NEG_INFINITY, |m, v| if *v > m { *v } else { m });
                    }
                }
            };
            if h * w >= 4096 {
                out.par_chunks_mut(oh * ow).zip(xs.par_chunks(h * w)).for_each(plane);
            } else {
                out.chunks_mut(oh * ow).zip(xs.chunks(h * w)).for_each(plane);
            }
            Ok(Tensor::from_vec(out, (n, c, oh, ow), x.device())?)
        });
    }
    let extra = |len: usize, out: usize| ((out - 1) * s + k).saturating_sub(len);
    let x = x.pad_with_same(2, 0, extra(h, oh))?.pad_with_same(3, 0, extra(w, ow))?;
    Ok(x.max_pool2d_with_stride(k, s)?)
}

fn linear(vb: VarBuilder, i: usize, o: usize) -> Result<Linear> {
    Ok(Linear::new(vb.get((o, i), "weight")?, Some(vb.get(o, "bias")?)))
}

/// One conv block of a stage: (in channels, out channels, kernel, the
/// ceil-mode max pool (kernel, stride) after its PReLU, if any).
type Block = (usize, usize, usize, Option<(usize, usize)>);

/// P-Net's conv blocks.
const PNET: [Block; 3] = [(3, 10, 3, Some((2, 2))), (10, 16, 3, None), (16, 32, 3, None)];
/// R-Net's conv blocks.
const RNET: [Block; 3] = [(3, 28, 3, Some((3, 2))), (28, 48, 3, Some((3, 2))), (48, 64, 2, None)];
/// O-Net's conv blocks.
const ONET: [Block; 4] = [
    (3, 32, 3, Some((3, 2))),
    (32, 64, 3, Some((3, 2))),
    (64, 64, 3, Some((2, 2))),
    (64, 128, 2, None),
];

/// A `convN` + `preluN` block, then its ceil-mode max pool if it has one.
struct ConvPRelu {
    conv: FastConv,
    act: PRelu,
    pool: Option<(usize, usize)>,
}

/// A stage's conv blocks, `conv1` + `prelu1` first.
struct Convs(Vec<ConvPRelu>);

impl Convs {
    fn load(vb: &VarBuilder, blocks: &[Block]) -> Result<Self> {
        let mut layers = Vec::with_capacity(blocks.len());
        for (i, &(cin, cout, k, pool)) in blocks.iter().enumerate() {
            let conv = fast_conv(
                vb.pp(format!("conv{}", i + 1)),
                cin,
                cout,
                k,
                1,
                Padding::default(),
                Act::None,
            )?;
            let act = PRelu::load(vb.pp(format!("prelu{}", i + 1)), cout)?;
            layers.push(ConvPRelu { conv, act, pool });
        }
        Ok(Convs(layers))
    }

    /// Each block in turn: conv, PReLU, then its pool.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.0 {
            x = b.act.forward(&b.conv.forward(&x)?)?;
            if let Some((k, s)) = b.pool {
                x = max_pool_ceil(&x, k, s)?;
            }
        }
        Ok(x)
    }
}

/// R-Net's and O-Net's `denseN` + `preluN` after the conv blocks, on their
/// output flattened as PyTorch's `permute(0, 3, 2, 1)` lays it out.
struct Dense(Linear, PRelu);

impl Dense {
    /// `denseN` + `preluN`, N one past the last conv block.
    fn load(vb: &VarBuilder, n: usize, i: usize, o: usize) -> Result<Self> {
        Ok(Dense(
            linear(vb.pp(format!("dense{n}")), i, o)?,
            PRelu::load(vb.pp(format!("prelu{n}")), o)?,
        ))
    }

    /// The flattened features through the dense layer and its PReLU.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.permute((0, 3, 2, 1))?.contiguous()?.flatten_from(1)?;
        self.1.forward(&self.0.forward(&x)?)
    }
}

/// The face probability: softmax of the two-class logits over `dim`, class 1.
fn face_prob(logits: &Tensor, dim: impl candle_core::shape::Dim) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(logits, dim)?.narrow(1, 1, 1)?.squeeze(1)?)
}

struct PNet {
    convs: Convs,
    c41: FastConv,
    c42: FastConv,
}

impl PNet {
    fn load(vb: VarBuilder) -> Result<Self> {
        Ok(PNet {
            convs: Convs::load(&vb, &PNET)?,
            c41: fast_conv(vb.pp("conv4_1"), 32, 2, 1, 1, Padding::default(), Act::None)?,
            c42: fast_conv(vb.pp("conv4_2"), 32, 4, 1, 1, Padding::default(), Act::None)?,
        })
    }
    /// (regression (1,4,h,w), face probability (1,h,w)).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.convs.forward(x)?;
        let prob = face_prob(&self.c41.forward(&x)?, 1)?;
        Ok((self.c42.forward(&x)?, prob))
    }
}

/// R-Net and O-Net's common part: conv blocks, `denseN` + `preluN`, and the
/// face (`dense{N+1}_1`) and box regression (`dense{N+1}_2`) heads.
struct CropNet {
    convs: Convs,
    dense: Dense,
    cls: Linear,
    reg: Linear,
}

impl CropNet {
    /// `n`: the dense layer's number; `flat` → `width` its features.
    fn load(vb: &VarBuilder, blocks: &[Block], n: usize, flat: usize, width: usize) -> Result<Self> {
        Ok(CropNet {
            convs: Convs::load(vb, blocks)?,
            dense: Dense::load(vb, n, flat, width)?,
            cls: linear(vb.pp(format!("dense{}_1", n + 1)), width, 2)?,
            reg: linear(vb.pp(format!("dense{}_2", n + 1)), width, 4)?,
        })
    }
    /// (features (n,width), regression (n,4), probability (n)).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let x = self.dense.forward(&self.convs.forward(x)?)?;
        let prob = face_prob(&self.cls.forward(&x)?, D::Minus1)?;
        let reg = self.reg.forward(&x)?;
        Ok((x, reg, prob))
    }
}

/// R-Net: the crop network alone.
fn load_rnet(vb: VarBuilder) -> Result<CropNet> {
    CropNet::load(&vb, &RNET, 4, 576, 128)
}

/// O-Net: the crop network and its landmark head `dense6_3`.
struct ONet {
    net: CropNet,
    d63: Linear,
}

impl ONet {
    fn load(vb: VarBuilder) -> Result<Self> {
        let net = CropNet::load(&vb, &ONET, 5, 1152, 256)?;
        Ok(ONet {
            net,
            d63: linear(vb.pp("dense6_3"), 256, 10)?,
        })
    }
    /// (regression (n,4), landmarks (n,10), probability (n)).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (x, reg, prob) = self.net.forward(x)?;
        Ok((reg, self.d63.forward(&x)?, prob))
    }
}

/// A candidate: box, score, regression (and landmarks in stage 3).
#[derive(Clone, Debug)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
    points: [[f32; 2]; 5],
}

pub struct Mtcnn {
    pnet: PNet,
    rnet: CropNet,
    onet: ONet,
    min_face: f32,
    thresholds: [f32; 3],
    factor: f32,
    device: Device,
}

/// facenet-pytorch's input normalisation: (v - 127.5) / 128.
const MEAN: [f32; 3] = [127.5; 3];
const SCALE: f32 = 128.0;

fn keep(c: &[Cand], idx: Vec<usize>) -> Vec<Cand> {
    idx.into_iter().map(|i| c[i].clone()).collect()
}

fn nms_iou(c: &[Cand], thr: f32) -> Vec<Cand> {
    let boxes: Vec<[f32; 4]> = c.iter().map(|c| c.b).collect();
    let scores: Vec<f32> = c.iter().map(|c| c.score).collect();
    keep(c, nms(&boxes, &scores, thr))
}

/// facenet-pytorch's numpy NMS with the "Min" overlap (areas with +1).
fn nms_min(c: &[Cand], thr: f32) -> Vec<Cand> {
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[a].score.total_cmp(&c[b].score));
    let mut pick = Vec::new();
    while let Some(i) = order.pop() {
        pick.push(i);
        let bi = c[i].b;
        order.retain(|&j| {
            let bj = c[j].b;
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            w * h / area(&bi).min(area(&bj)) <= thr
        });
    }
    keep(c, pick)
}

fn rerec(c: &mut [Cand]) {
    for k in c {
        let (w, h) = (k.b[2] - k.b[0], k.b[3] - k.b[1]);
        let l = w.max(h);
        k.b[0] += w * 0.5 - l * 0.5;
        k.b[1] += h * 0.5 - l * 0.5;
        k.b[2] = k.b[0] + l;
        k.b[3] = k.b[1] + l;
    }
}

fn bbreg(c: &mut [Cand]) {
    for k in c {
        let (w, h) = (k.b[2] - k.b[0] + 1.0, k.b[3] - k.b[1] + 1.0);
        k.b = [
            k.b[0] + k.reg[0] * w,
            k.b[1] + k.reg[1] * h,
            k.b[2] + k.reg[2] * w,
            k.b[3] + k.reg[3] * h,
        ];
    }
}

impl Mtcnn {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        Ok(Mtcnn {
            pnet: PNet::load(vb.pp("pnet"))?,
            rnet: load_rnet(vb.pp("rnet"))?,
            onet: ONet::load(vb.pp("onet"))?,
            min_face: m.option("min_face_size", 20.0) as f32,
            thresholds: [
                m.option("threshold1", 0.6) as f32,
                m.option("threshold2", 0.7) as f32,
                m.conf.unwrap_or(0.7),
            ],
            factor: m.option("factor", 0.709) as f32,
            device: vb.device().clone(),
        })
    }

    /// Crops `img[y-1..ey, x-1..ex]` of each (truncated, clamped) box and
    /// area-resizes it to `size`; drops boxes with an empty crop. The crops
    /// are shared among rayon's threads.
    fn crops(&self, img: &FloatImage, c: Vec<Cand>, size: usize) -> Result<(Vec<Cand>, Option<Tensor>)> {
        let (w, h) = (img.width as i64, img.height as i64);
        let region = |k: &Cand| {
            let x = (k.b[0].trunc() as i64).max(1);
            let y = (k.b[1].trunc() as i64).max(1);
            let ex = (k.b[2].trunc() as i64).min(w);
            let ey = (k.b[3].trunc() as i64).min(h);
            if ey < y || ex < x || x > w || y > h {
                return None;
            }
            Some(Region {
                x: (x - 1) as usize,
                y: (y - 1) as usize,
                width: (ex - x + 1) as usize,
                height: (ey - y + 1) as usize,
            })
        };
        let (kept, regions): (Vec<Cand>, Vec<Region>) =
            c.into_iter().filter_map(|k| region(&k).map(|r| (k, r))).unzip();
        if kept.is_empty() {
            return Ok((kept, None));
        }
        let per = 3 * size * size;
        let mut batch = vec![0f32; kept.len() * per];
        batch
            .par_chunks_mut(per)
            .zip(regions.par_iter())
            .for_each(|(dst, r)| dst.copy_from_slice(&img.resize_area_planes(*r, size, size, MEAN, SCALE)));
        let n = kept.len();
        Ok((
            kept,
            Some(Tensor::from_vec(batch, (n, 3, size, size), &Device::Cpu)?.to_device(&self.device)?),
        ))
    }

    /// P-Net's candidates at one scale of the pyramid, NMS 0.5 applied.
    fn pnet_scale(&self, img: &FloatImage, scale: f32) -> Result<Vec<Cand>> {
        let (w, h) = (img.width as f32, img.height as f32);
        let (hs, ws) = ((h * scale + 1.0) as usize, (w * scale + 1.0) as usize);
        let whole = Region {
            x: 0,
            y: 0,
            width: img.width,
            height: img.height,
        };
        let planes = img.resize_area_planes(whole, ws, hs, MEAN, SCALE);
        let x = Tensor::from_vec(planes, (1, 3, hs, ws), &Device::Cpu)?.to_device(&self.device)?;
        let (reg, prob) = self.pnet.forward(&x)?;
        let prob: Vec<Vec<f32>> = prob.squeeze(0)?.to_vec2()?;
        let reg: Vec<Vec<Vec<f32>>> = reg.squeeze(0)?.to_vec3()?;
        let mut here = Vec::new();
        for (yy, row) in prob.iter().enumerate() {
            for (xx, &p) in row.iter().enumerate() {
                if p >= self.thresholds[0] {
                    let (bx, by) = (xx as f32, yy as f32);
                    here.push(Cand {
                        b: [
                            ((2.0 * bx + 1.0) / scale).floor(),
                            ((2.0 * by + 1.0) / scale).floor(),
                            ((2.0 * bx + 12.0) / scale).floor(),
                            ((2.0 * by + 12.0) / scale).floor(),
                        ],
                        score: p,
                        reg: [reg[0][yy][xx], reg[1][yy][xx], reg[2][yy][xx], reg[3][yy][xx]],
                        points: [[0.0; 2]; 5],
                    });
                }
            }
        }
        Ok(nms_iou(&here, 0.5))
    }

    pub fn detect(&self, img: &FloatImage, conf: f32) -> Result<Vec<Detection>> {
        const MAX_SCALES: usize = 64;
        let (w, h) = (img.width as f32, img.height as f32);
        // Scale pyramid.
        let m = 12.0 / self.min_face;
        let mut minl = w.min(h) * m;
        let mut scales = Vec::new();
        let mut s = m;
        // Bounded whatever the options say (they are validated at discovery too).
        while minl >= 12.0 && scales.len() < MAX_SCALES {
            scales.push(s);
            s *= self.factor;
            minl *= self.factor;
        }
        // Stage 1: P-Net on each scale, NMS 0.5 per scale, then 0.7 overall.
        // The scales run side by side, each whole on one thread (host::serial) (the largest
        // is about half the work, the rest the other half); the candidates
        // are joined in scale order, as one after the other would give.
        let per_scale: Vec<Vec<Cand>> = scales
            .par_iter()
            .with_max_len(1)
            .map(|&scale| host::serial(|| self.pnet_scale(img, scale)))
            .collect::<Result<_>>()?;
        let all: Vec<Cand> = per_scale.into_iter().flatten().collect();
        let mut c = nms_iou(&all, 0.7);
        for k in &mut c {
            let (rw, rh) = (k.b[2] - k.b[0], k.b[3] - k.b[1]);
            k.b = [
                k.b[0] + k.reg[0] * rw,
                k.b[1] + k.reg[1] * rh,
                k.b[2] + k.reg[2] * rw,
                k.b[3] + k.reg[3] * rh,
            ];
        }
        rerec(&mut c);
        // Stage 2: R-Net on 24×24 crops.
        let (c2, batch) = self.crops(img, c, 24)?;
        let Some(batch) = batch else { return Ok(Vec::new()) };
        let (_, reg, prob) = self.rnet.forward(&batch)?;
        let (reg, prob): (Vec<Vec<f32>>, Vec<f32>) = (reg.to_vec2()?, prob.to_vec1()?);
        let mut c: Vec<Cand> = c2
            .into_iter()
            .enumerate()
            .filter(|(i, _)| prob[*i] > self.thresholds[1])
            .map(|(i, mut k)| {
                k.score = prob[i];
                k.reg = [reg[i][0], reg[i][1], reg[i][2], reg[i][3]];
                k
            })
            .collect();
        c = nms_iou(&c, 0.7);
        bbreg(&mut c);
        rerec(&mut c);
        // Stage 3: O-Net on 48×48 crops, with landmarks.
        let (c3, batch) = self.crops(img, c, 48)?;
        let Some(batch) = batch else { return Ok(Vec::new()) };
        let (reg, pts, prob) = self.onet.forward(&batch)?;
        let (reg, pts, prob): (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<f32>) =
            (reg.to_vec2()?, pts.to_vec2()?, prob.to_vec1()?);
        let mut c: Vec<Cand> = c3
            .into_iter()
            .enumerate()
            .filter(|(i, _)| prob[*i] > conf)
            .map(|(i, mut k)| {
                k.score = prob[i];
                k.reg = [reg[i][0], reg[i][1], reg[i][2], reg[i][3]];
                let (wi, hi) = (k.b[2] - k.b[0] + 1.0, k.b[3] - k.b[1] + 1.0);
                for j in 0..5 {
                    k.points[j] = [wi * pts[i][j] + k.b[0] - 1.0, hi * pts[i][j + 5] + k.b[1] - 1.0];
                }
                k
            })
            .collect();
        bbreg(&mut c);
        let mut c = nms_min(&c, 0.7);
        // Largest box first (facenet-pytorch's select_largest).
        c.sort_by(|a, b| {
            let area = |k: &Cand| (k.b[2] - k.b[0]) * (k.b[3] - k.b[1]);
            area(b).total_cmp(&area(a))
        });
        Ok(c.into_iter()
            .map(|k| Detection {
                label: "face".into(),
                class_id: None,
                score: k.score,
                bbox: k.b,
                keypoints: k.points.iter().map(|p| [p[0], p[1], 1.0]).collect(),
            })
            .collect())
    }
}

impl Model for Mtcnn {
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let t0 = Instant::now();
        let f = FloatImage::from_rgb(img);
        let t1 = Instant::now();
        let conf = params.conf.unwrap_or(self.thresholds[2]);
        let d = host::in_pool(|| self.detect(&f, conf))?;
        Ok((
            d,
            ModelTimings {
                preprocess: ms(t1 - t0),
                forward: ms(t1.elapsed()),
                postprocess: 0.0,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass ceil-mode pool against candle's pad-then-pool, on odd and
    /// even sizes, both window shapes MTCNN uses, and planes large enough to
    /// be shared among threads.
    #[test]
    fn ceil_mode_max_pool_matches_padding_then_pooling() -> Result<()> {
        for &(h, w) in &[(1usize, 1usize), (5, 7), (6, 8), (9, 4), (70, 67), (64, 66)] {
            for &(k, s) in &[(2usize, 2usize), (3, 2)] {
                let n = 2 * 3 * h * w;
                let vals: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 - 500.0).collect();
                let x = Tensor::from_vec(vals, (2, 3, h, w), &Device::Cpu)?;
                let got = max_pool_ceil(&x, k, s)?;
                let (oh, ow) = (got.dim(2)?, got.dim(3)?);
                let extra = |len: usize, out: usize| ((out - 1) * s + k).saturating_sub(len);
                let want = x
                    .pad_with_same(2, 0, extra(h, oh))?
                    .pad_with_same(3, 0, extra(w, ow))?
                    .max_pool2d_with_stride(k, s)?;
                assert_eq!(got.dims(), want.dims(), "{h}x{w} k{k} s{s}");
                let (g, e) = (
                    got.flatten_all()?.to_vec1::<f32>()?,
                    want.flatten_all()?.to_vec1::<f32>()?,
                );
                assert_eq!(g, e, "{h}x{w} k{k} s{s}");
            }
        }
        Ok(())
    }
}
