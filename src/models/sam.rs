//! `sam`: Segment Anything (Meta's SAM ViT-B/L/H) and MobileSAM (TinyViT,
//! `tiny_vit`: ours, on our conv kernels), through `candle-transformers`'
//! `segment_anything` ViT image encoder, prompt
//! encoder (its dense positional encoding; the sparse point and box
//! embedding is `sam_prompt`'s) and two-way transformer (the mask decoder
//! around it is `sam_decoder`'s). The manifest's `variant` picks the encoder:
//! `vit_b`, `vit_l`, `vit_h` or `vit_t` (MobileSAM). Weights use the names
//! of Meta's state dicts (`image_encoder.*`, `prompt_encoder.*`,
//! `mask_decoder.*`): candle's safetensors conversions, or `import pt` of
//! `sam_vit_*.pth` / `mobile_sam.pt`.
//!
//! Pre-processing follows `segment_anything`'s `SamPredictor`: the longer
//! side resized to 1024 (`ResizeLongestSide`: new size `⌊side·s + 0.5⌋`,
//! antialiased bilinear as PIL's), normalised by the ImageNet mean and
//! deviation in 0–255, padded to 1024² at the bottom and right.
//!
//! The image embedding (`[1, 256, 64, 64]`, 4 MiB) depends only on the
//! image: it is kept for the last [`CACHED_EMBEDDINGS`] images (keyed by a
//! blake3 hash of the pixels), so each click on the same image runs only
//! the prompt encoder and the mask decoder. A request with no prompts
//! encodes the image and answers nothing, which warms that cache.
//!
//! Each prompt (points in or out of the object, and/or a box, in image
//! pixels) gives one mask. A prompt of one point and no box is ambiguous:
//! SAM answers three candidates and the one with the best predicted IoU is
//! kept (`SamPredictor`'s advice); otherwise the single-mask output. The
//! 256² low-resolution logits are upsampled bilinearly to 1024² (PyTorch's
//! `interpolate`, `align_corners=False`) and cropped to the resized image;
//! the mask holds `sigmoid(logit)` there, its region the whole image, so a
//! 0.5 threshold is SAM's `logit > 0`. Each mask has a detection: the
//! mask's bounding box, the predicted IoU as score.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::segment_anything::image_encoder::ImageEncoderViT;
use candle_transformers::models::segment_anything::prompt_encoder::PromptEncoder;
use image::RgbImage;

use super::sam_decoder::MaskDecoder;
use super::sam_prompt::SparsePrompt;
use super::tiny_vit::TinyVit;
use super::{Manifest, Model};
use crate::error::{Error, Result};
use crate::vision::prompt::Prompt;
use crate::vision::{Detection, InferParams, Mask, ModelTimings};

/// The encoder's input side.
pub const IMAGE_SIZE: usize = 1024;
/// The side of the low-resolution masks the decoder gives.
pub const LOW_RES: usize = 256;
/// Image embeddings kept (4 MiB each).
pub const CACHED_EMBEDDINGS: usize = 4;
const EMBED_DIM: usize = 256;
const GRID: usize = IMAGE_SIZE / 16;
const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// The encoders, by `variant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    VitB,
    VitL,
    VitH,
    /// MobileSAM's TinyViT-5M.
    VitT,
}

impl Variant {
    pub const NAMES: &'static [&'static str] = &["vit_b", "vit_l", "vit_h", "vit_t"];

    pub fn parse(s: &str) -> Option<Variant> {
        match s {
            "vit_b" => Some(Variant::VitB),
            "vit_l" => Some(Variant::VitL),
            "vit_h" => Some(Variant::VitH),
            "vit_t" => Some(Variant::VitT),
            _ => None,
        }
    }

    /// (embed dim, depth, heads, global attention blocks) of the ViTs.
    fn vit(self) -> Option<(usize, usize, usize, [usize; 4])> {
        match self {
            Variant::VitB => Some((768, 12, 12, [2, 5, 8, 11])),
            Variant::VitL => Some((1024, 24, 16, [5, 11, 17, 23])),
            Variant::VitH => Some((1280, 32, 16, [7, 15, 23, 31])),
            Variant::VitT => None,
        }
    }
}

enum Encoder {
    Vit(Box<ImageEncoderViT>),
    Tiny(Box<TinyVit>),
}

impl Encoder {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Encoder::Vit(e) => e.forward(x),
            Encoder::Tiny(e) => e.forward(x),
        }
    }
}

/// An image's embedding and the size it was resized to.
pub struct Embedding {
    pub tensor: Tensor,
    /// (width, height) of the resized image inside the 1024² input.
    pub resized: (usize, usize),
}

pub struct Sam {
    encoder: Encoder,
    sparse: SparsePrompt,
    decoder: MaskDecoder,
    dense_pe: Tensor,
    /// The dense prompt embedding with no mask prompt (`no_mask_embed`).
    dense: Tensor,
    label: String,
    device: Device,
    cache: Mutex<VecDeque<([u8; 32], Arc<Embedding>)>>,
    encoder_runs: AtomicU64,
}

impl Sam {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let variant = Variant::parse(&m.variant).ok_or_else(|| {
            Error::msg(format!(
                "model '{}': variant '{}' is not a SAM encoder (one of {})",
                m.id,
                m.variant,
                Variant::NAMES.join(", ")
            ))
        })?;
        let label = m.labels.first().cloned().unwrap_or_else(|| "object".to_string());
        Sam::build(vb, variant, label).map_err(|e| Error::msg(format!("model '{}': {e}", m.id)))
    }

    /// The network of `variant` from `vb`.
    pub fn build(vb: VarBuilder, variant: Variant, label: String) -> Result<Self> {
        let what = Error::from;
        let encoder = match variant.vit() {
            Some((dim, depth, heads, global)) => Encoder::Vit(Box::new(
                ImageEncoderViT::new(
                    IMAGE_SIZE,
                    16,
                    3,
                    dim,
                    depth,
                    heads,
                    EMBED_DIM,
                    true,
                    true,
                    true,
                    14,
                    &global,
                    vb.pp("image_encoder"),
                )
                .map_err(what)?,
            )),
            None => Encoder::Tiny(Box::new(TinyVit::new(vb.pp("image_encoder")).map_err(what)?)),
        };
        let prompt_encoder = PromptEncoder::new(
            EMBED_DIM,
            (GRID, GRID),
            (IMAGE_SIZE, IMAGE_SIZE),
            16,
            vb.pp("prompt_encoder"),
        )
        .map_err(what)?;
        let decoder = MaskDecoder::new(EMBED_DIM, vb.pp("mask_decoder")).map_err(what)?;
        let dense_pe = prompt_encoder.get_dense_pe().map_err(what)?;
        let (_, dense) = prompt_encoder.forward(None, None, None).map_err(what)?;
        let sparse = SparsePrompt::load(&vb.pp("prompt_encoder"), IMAGE_SIZE)?;
        Ok(Sam {
            encoder,
            sparse,
            decoder,
            dense_pe,
            dense,
            label,
            device: vb.device().clone(),
            cache: Mutex::new(VecDeque::new()),
            encoder_runs: AtomicU64::new(0),
        })
    }

    /// How many times the image encoder has run (cache misses).
    pub fn encoder_runs(&self) -> u64 {
        self.encoder_runs.load(Ordering::Relaxed)
    }

    /// The encoder's input for `img`: `[1, 3, 1024, 1024]`, and the
    /// resized (width, height).
    pub fn preprocess(&self, img: &RgbImage) -> Result<(Tensor, (usize, usize))> {
        let (w, h) = super::image_size(img)?;
        let (rw, rh) = resized_size(w, h);
        let resized;
        let src = if (rw, rh) == (w, h) {
            img
        } else {
            resized = image::imageops::resize(img, rw as u32, rh as u32, image::imageops::FilterType::Triangle);
            &resized
        };
        let plane = IMAGE_SIZE * IMAGE_SIZE;
        let mut data = vec![0f32; 3 * plane];
        for (y, row) in src.as_raw().chunks_exact(rw * 3).enumerate() {
            for (x, p) in row.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    data[c * plane + y * IMAGE_SIZE + x] = (p[c] as f32 - PIXEL_MEAN[c]) / PIXEL_STD[c];
                }
            }
        }
        let t = Tensor::from_vec(data, (1, 3, IMAGE_SIZE, IMAGE_SIZE), &self.device)?;
        Ok((t, (rw, rh)))
    }

    /// The image's embedding, from the cache or the encoder.
    pub fn embedding(&self, img: &RgbImage) -> Result<Arc<Embedding>> {
        Ok(self.embedding_timed(img)?.0)
    }

    /// [`Sam::embedding`] and the milliseconds spent pre-processing (0 on a
    /// cache hit).
    fn embedding_timed(&self, img: &RgbImage) -> Result<(Arc<Embedding>, f64)> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&img.width().to_le_bytes());
        hasher.update(&img.height().to_le_bytes());
        hasher.update(img.as_raw());
        let key: [u8; 32] = *hasher.finalize().as_bytes();
        if let Some(e) = self.cached(&key) {
            return Ok((e, 0.0));
        }
        let t = std::time::Instant::now();
        let (x, resized) = self.preprocess(img)?;
        let pre = t.elapsed().as_secs_f64() * 1e3;
        let tensor = crate::kernels::host::in_pool(|| self.encoder.forward(&x))?;
        self.encoder_runs.fetch_add(1, Ordering::Relaxed);
        let e = Arc::new(Embedding { tensor, resized });
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHED_EMBEDDINGS {
                c.pop_front();
            }
            c.push_back((key, e.clone()));
        }
        Ok((e, pre))
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Arc<Embedding>> {
        let mut c = self.cache.lock().ok()?;
        let i = c.iter().position(|(k, _)| k == key)?;
        let hit = c.remove(i)?;
        let e = hit.1.clone();
        c.push_back(hit);
        Some(e)
    }

    /// The decoder's low-resolution logits `[256, 256]` and predicted IoU
    /// for one prompt (coordinates in original pixels, `scale` = resized
    /// over original per axis: [`prompt_scale`]), the best of three when the
    /// prompt is ambiguous.
    pub fn decode(&self, e: &Embedding, prompt: &Prompt, scale: (f32, f32)) -> Result<(Vec<f32>, f32)> {
        let (sx, sy) = scale;
        let points: Vec<(f32, f32, bool)> = prompt
            .points()
            .iter()
            .map(|p| (p.x * sx, p.y * sy, p.positive))
            .collect();
        let bbox = prompt
            .bbox()
            .map(|[x0, y0, x1, y1]| [x0 * sx, y0 * sy, x1 * sx, y1 * sy]);
        let sparse = self.sparse.embed(&points, bbox, &self.device)?;
        let multi = prompt.ambiguous();
        let (masks, iou) = self
            .decoder
            .forward(&e.tensor, &self.dense_pe, &sparse, &self.dense, multi)?;
        let iou: Vec<f32> = iou.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let best = iou
            .iter()
            .enumerate()
            .fold(0, |b, (i, v)| if *v > iou[b] { i } else { b });
        let masks = masks.squeeze(0)?.get(best)?.flatten_all()?.to_vec1::<f32>()?;
        if masks.len() != LOW_RES * LOW_RES {
            return Err(Error::msg(format!(
                "the mask decoder gave {} values, expected {LOW_RES}x{LOW_RES}",
                masks.len()
            )));
        }
        Ok((masks, iou.get(best).copied().unwrap_or(0.0)))
    }

    /// The mask and detection of one prompt's logits for an image `w`×`h`.
    fn mask(&self, logits: &[f32], iou: f32, resized: (usize, usize), w: usize, h: usize) -> Result<(Detection, Mask)> {
        let (rw, rh) = resized;
        let up = upsample_crop(logits, rw, rh);
        let probs: Vec<f32> = up.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
        let (fx, fy) = (w as f32 / rw as f32, h as f32 / rh as f32);
        let mut bbox = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
        for (i, l) in up.iter().enumerate() {
            if *l > 0.0 {
                let (x, y) = ((i % rw) as f32, (i / rw) as f32);
                bbox = [
                    bbox[0].min(x),
                    bbox[1].min(y),
                    bbox[2].max(x + 1.0),
                    bbox[3].max(y + 1.0),
                ];
            }
        }
        if bbox[0] > bbox[2] {
            bbox = [0.0; 4];
        }
        let det = Detection {
            label: self.label.clone(),
            class_id: None,
            score: iou,
            bbox: [bbox[0] * fx, bbox[1] * fy, bbox[2] * fx, bbox[3] * fy],
            keypoints: Vec::new(),
        };
        let mask = Mask::from_probs(
            &self.label,
            [0.0, 0.0, w as f32, h as f32],
            rw as u32,
            rh as u32,
            &probs,
        )?;
        Ok((det, mask))
    }
}

/// The resized (width, height) of an image `w`×`h`: the longer side 1024
/// (`ResizeLongestSide.get_preprocess_shape`).
pub fn resized_size(w: usize, h: usize) -> (usize, usize) {
    let s = IMAGE_SIZE as f64 / w.max(h) as f64;
    let r = |v: usize| ((v as f64 * s + 0.5) as usize).clamp(1, IMAGE_SIZE);
    (r(w), r(h))
}

/// How prompt coordinates in an image `w`×`h` map into its resized copy:
/// per axis, as `ResizeLongestSide.apply_coords` (the two differ by the
/// rounding of the shorter side).
pub fn prompt_scale(w: usize, h: usize, resized: (usize, usize)) -> (f32, f32) {
    (resized.0 as f32 / w as f32, resized.1 as f32 / h as f32)
}

/// 256² logits upsampled bilinearly to 1024² (half-pixel centres, edges
/// clamped: PyTorch's `align_corners=False`), only the top-left `rw`×`rh`.
pub fn upsample_crop(logits: &[f32], rw: usize, rh: usize) -> Vec<f32> {
    let f = (IMAGE_SIZE / LOW_RES) as f32;
    let taps = |d: usize| {
        let s = ((d as f32 + 0.5) / f - 0.5).max(0.0);
        let i0 = (s as usize).min(LOW_RES - 1);
        let i1 = (i0 + 1).min(LOW_RES - 1);
        (i0, i1, s - i0 as f32)
    };
    let xs: Vec<(usize, usize, f32)> = (0..rw).map(taps).collect();
    let mut out = Vec::with_capacity(rw * rh);
    for y in 0..rh {
        let (y0, y1, fy) = taps(y);
        let (r0, r1) = (&logits[y0 * LOW_RES..][..LOW_RES], &logits[y1 * LOW_RES..][..LOW_RES]);
        for &(x0, x1, fx) in &xs {
            let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
            let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

impl Model for Sam {
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let (d, _, t) = self.infer_with_masks(img, params)?;
        Ok((d, t))
    }

    fn infer_with_masks(
        &self,
        img: &RgbImage,
        params: &InferParams,
    ) -> Result<(Vec<Detection>, Vec<Mask>, ModelTimings)> {
        let (w, h) = super::image_size(img)?;
        let t0 = std::time::Instant::now();
        let (e, pre) = self.embedding_timed(img)?;
        let t1 = std::time::Instant::now();
        let scale = prompt_scale(w, h, e.resized);
        let mut dets = Vec::new();
        let mut masks = Vec::new();
        let mut post = 0.0;
        for (i, p) in params.prompts.iter().flat_map(|p| p.as_slice()).enumerate() {
            let (logits, iou) = crate::kernels::host::in_pool(|| self.decode(&e, p, scale))?;
            let t = std::time::Instant::now();
            let (d, mut m) = self.mask(&logits, iou, e.resized, w, h)?;
            m.detection = Some(i as u32);
            dets.push(d);
            masks.push(m);
            post += t.elapsed().as_secs_f64() * 1e3;
        }
        let total = t1.elapsed().as_secs_f64() * 1e3;
        let timings = ModelTimings {
            preprocess: pre,
            forward: ((t1 - t0).as_secs_f64() * 1e3 - pre).max(0.0) + (total - post),
            postprocess: post,
        };
        Ok((dets, masks, timings))
    }

    /// The image encoder on a preprocessed `[1, 3, 1024, 1024]` input.
    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        Ok(crate::kernels::host::in_pool(|| self.encoder.forward(x))?)
    }

    fn preprocess_raw(&self, img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(Some(self.preprocess(img)?.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_sizes_follow_resize_longest_side() {
        assert_eq!(resized_size(1024, 1024), (1024, 1024));
        assert_eq!(resized_size(640, 480), (1024, 768));
        assert_eq!(resized_size(1920, 1080), (1024, 576));
        assert_eq!(resized_size(3, 4000), (1, 1024));
    }

    #[test]
    fn prompts_scale_each_axis_by_its_own_ratio() {
        // 481 rows become round(481 * 1.6) = 770, not 769.6: y scales by 770/481.
        let r = resized_size(640, 481);
        assert_eq!(r, (1024, 770));
        let (sx, sy) = prompt_scale(640, 481, r);
        assert_eq!(sx, 1.6);
        assert_eq!(sy, 770.0 / 481.0);
        assert!((480.0 * sy - 768.4).abs() < 0.01, "{}", 480.0 * sy);
    }

    #[test]
    fn upsampling_is_bilinear_with_half_pixel_centres() {
        // A ramp along x: logits[y][x] = x. Output pixel d maps to
        // (d + 0.5) / 4 - 0.5, clamped at 0 and at the last cell.
        let logits: Vec<f32> = (0..LOW_RES * LOW_RES).map(|i| (i % LOW_RES) as f32).collect();
        let up = upsample_crop(&logits, IMAGE_SIZE, 2);
        assert_eq!(up[0], 0.0);
        assert_eq!(up[1], 0.0);
        assert!((up[2] - 0.125).abs() < 1e-6);
        assert!((up[5] - 0.875).abs() < 1e-6);
        assert_eq!(up[IMAGE_SIZE - 1], 255.0);
        assert_eq!(up.len(), 2 * IMAGE_SIZE);
    }
}
