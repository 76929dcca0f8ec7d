//! A tiny CNN used by tests and benchmarks when no real weights are wanted:
//! conv 3×3 (3→8) + ReLU, global average pool, linear 8→5 → one box.
//!
//! Tensors: `conv.weight` (8,3,3,3), `conv.bias` (8), `head.weight` (5,8),
//! `head.bias` (5), and optionally `pad` (`options.pad_elems` f32 values) to
//! give the model a realistic size, or with `options.pad_tensors` = K,
//! K tensors `pad.0` … `pad.{K-1}` of `pad_elems` values each (so the
//! weights can be split into shards). Options (numbers) that stand in for
//! real-world trouble: `slow_load_ms` (a slow disk), `slow_forward_ms` (a slow
//! network), `panic_on_width` (a forward that panics on inputs of that width),
//! `error_on_width` (a forward that returns an error), `panic_on_drop` (a
//! destructor that panics when the model is unloaded, outside any request),
//! `mask_red` (a whole-image mask labelled "red" at the input size: p = 1
//! where a pixel's red exceeds its green, so a test knows the mask it gets).

use std::time::{Duration, Instant};

use candle_core::{Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use image::RgbImage;

use super::timing::ms;
use super::{Manifest, Model};
use crate::error::{Error, Result};
use crate::vision::{Detection, InferParams, Mask, ModelTimings};

pub struct Toy {
    conv: Conv2d,
    head: Linear,
    _pad: Vec<Tensor>,
    size: usize,
    conf: f32,
    slow_forward: Duration,
    panic_on_width: u32,
    error_on_width: u32,
    panic_on_drop: bool,
    mask_red: bool,
    device: Device,
}

impl Drop for Toy {
    fn drop(&mut self) {
        if self.panic_on_drop && !std::thread::panicking() {
            panic!("toy model: panic_on_drop");
        }
    }
}

impl Toy {
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let pad_elems = m.option("pad_elems", 0.0) as usize;
        let slow = Duration::from_millis(m.option("slow_load_ms", 0.0) as u64);
        let step = slow / 4;
        let conv_w = vb.get((8, 3, 3, 3), "conv.weight")?;
        std::thread::sleep(step);
        let conv_b = vb.get(8, "conv.bias")?;
        std::thread::sleep(step);
        let head_w = vb.get((5, 8), "head.weight")?;
        std::thread::sleep(step);
        let head_b = vb.get(5, "head.bias")?;
        std::thread::sleep(step);
        let pad = match (pad_elems, m.options.get("pad_tensors").map(|k| *k as usize)) {
            (0, _) => Vec::new(),
            (n, None) => vec![vb.get(n, "pad")?],
            (n, Some(k)) => (0..k)
                .map(|i| vb.get(n, &format!("pad.{i}")))
                .collect::<candle_core::Result<_>>()?,
        };
        Ok(Toy {
            conv: Conv2d::new(
                conv_w,
                Some(conv_b),
                Conv2dConfig {
                    padding: 1,
                    ..Default::default()
                },
            ),
            head: Linear::new(head_w, Some(head_b)),
            _pad: pad,
            size: m.input_size as usize,
            conf: m.conf.unwrap_or(0.0),
            slow_forward: Duration::from_millis(m.option("slow_forward_ms", 0.0) as u64),
            panic_on_width: m.option("panic_on_width", 0.0) as u32,
            error_on_width: m.option("error_on_width", 0.0) as u32,
            panic_on_drop: m.option("panic_on_drop", 0.0) != 0.0,
            mask_red: m.option("mask_red", 0.0) != 0.0,
            device: vb.device().clone(),
        })
    }
}

impl Toy {
    /// The `mask_red` mask of `img`: red over green, at the input size.
    fn red_mask(&self, img: &RgbImage) -> Result<Mask> {
        let s = self.size as u32;
        let small = image::imageops::resize(img, s, s, image::imageops::FilterType::Nearest);
        let data = small.pixels().map(|p| if p.0[0] > p.0[1] { 255 } else { 0 }).collect();
        let region = [0.0, 0.0, img.width() as f32, img.height() as f32];
        Mask::new("red", region, s, s, data)
    }
}

impl Model for Toy {
    fn infer_with_masks(
        &self,
        img: &RgbImage,
        params: &InferParams,
    ) -> Result<(Vec<Detection>, Vec<Mask>, ModelTimings)> {
        let (d, t) = self.infer(img, params)?;
        let masks = if self.mask_red {
            vec![self.red_mask(img)?]
        } else {
            Vec::new()
        };
        Ok((d, masks, t))
    }

    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        if self.panic_on_width != 0 && img.width() == self.panic_on_width {
            panic!("toy model: forced panic on width {}", img.width());
        }
        if self.error_on_width != 0 && img.width() == self.error_on_width {
            return Err(Error::msg(format!("toy model: forced error on width {}", img.width())));
        }
        let t0 = Instant::now();
        let small = image::imageops::resize(
            img,
            self.size as u32,
            self.size as u32,
            image::imageops::FilterType::Nearest,
        );
        let plane = self.size * self.size;
        let mut v = vec![0f32; plane * 3];
        for (i, p) in small.pixels().enumerate() {
            for c in 0..3 {
                v[c * plane + i] = p.0[c] as f32 / 255.0;
            }
        }
        let x = Tensor::from_vec(v, (1, 3, self.size, self.size), &self.device)?;
        let t1 = Instant::now();
        let h = self
            .conv
            .forward(&x)?
            .relu()?
            .mean_keepdim(3)?
            .mean_keepdim(2)?
            .flatten_from(1)?;
        let out: Vec<f32> = self.head.forward(&h)?.flatten_all()?.to_vec1()?;
        std::thread::sleep(self.slow_forward);
        let t2 = Instant::now();
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let (w, hgt) = (img.width() as f32, img.height() as f32);
        let score = sig(out[0]);
        let (cx, cy) = (sig(out[1]) * w, sig(out[2]) * hgt);
        let (bw, bh) = (sig(out[3]) * w, sig(out[4]) * hgt);
        let mut dets = Vec::new();
        if score > params.conf.unwrap_or(self.conf) {
            dets.push(Detection {
                label: "toy".to_string(),
                class_id: None,
                score,
                bbox: [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
                keypoints: Vec::new(),
            });
        }
        Ok((
            dets,
            ModelTimings {
                preprocess: ms(t1 - t0),
                forward: ms(t2 - t1),
                postprocess: ms(t2.elapsed()),
            },
        ))
    }
}

/// Writes a toy model (weights + model.toml) into `dir/<id>/`, for tests and
/// benchmarks. `pad_elems` f32 values of padding set its size; `extra_toml`
/// adds top-level manifest keys; `options` adds `[options]` entries.
pub fn write_toy_model(
    dir: &std::path::Path,
    id: &str,
    pad_elems: usize,
    extra_toml: &str,
    options: &[(&str, f64)],
) -> Result<std::path::PathBuf> {
    let mdir = dir.join(id);
    std::fs::create_dir_all(&mdir).map_err(|e| Error::msg(format!("{}: {e}", mdir.display())))?;
    let dev = Device::Cpu;
    let seeded = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.5
            })
            .collect()
    };
    let mut tensors = std::collections::HashMap::new();
    tensors.insert(
        "conv.weight".to_string(),
        Tensor::from_vec(seeded(216, 1), (8, 3, 3, 3), &dev)?,
    );
    tensors.insert("conv.bias".to_string(), Tensor::from_vec(seeded(8, 2), 8, &dev)?);
    tensors.insert(
        "head.weight".to_string(),
        Tensor::from_vec(seeded(40, 3), (5, 8), &dev)?,
    );
    tensors.insert("head.bias".to_string(), Tensor::from_vec(seeded(5, 4), 5, &dev)?);
    if pad_elems > 0 {
        tensors.insert(
            "pad".to_string(),
            Tensor::from_vec(seeded(pad_elems, 5), pad_elems, &dev)?,
        );
    }
    let wpath = mdir.join("toy.safetensors");
    candle_core::safetensors::save(&tensors, &wpath).map_err(|e| Error::from(e).context(wpath.display()))?;
    let mut toml = format!(
        "id = \"{id}\"\nname = \"Toy {id}\"\ntask = \"detect\"\narch = \"toy\"\nweights = \"toy.safetensors\"\n\
         input_size = 32\nlabels = [\"toy\"]\nlicence = \"CC0-1.0\"\n{extra_toml}\n[options]\npad_elems = {pad_elems}\n"
    );
    for (k, v) in options {
        toml.push_str(&format!("{k} = {v:?}\n"));
    }
    std::fs::write(mdir.join("model.toml"), toml).map_err(|e| Error::msg(format!("{}: {e}", mdir.display())))?;
    Ok(mdir)
}
