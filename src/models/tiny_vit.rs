//! MobileSAM's image encoder, TinyViT-5M (`mobile_sam/modeling/tiny_vit_sam.py`),
//! with its convolutions on our kernels.
//!
//! The network and the weight names are those of candle-transformers'
//! `segment_anything::tiny_vit` (Meta's `image_encoder.*` names), with three
//! changes that make it several times faster on the CPU and closer to
//! PyTorch:
//!
//! - every `Conv2d_BN` is one [`FastConv`]: the batch norm folded into the
//!   weights and a bias at load (inference mode: running statistics);
//! - the depthwise 3×3 convs (MBConv, patch merging, each block's local
//!   conv) run on `kernels::depthwise`, where candle runs one conv per channel;
//! - GELU is PyTorch's exact `nn.GELU()` (erf), fused into the conv that
//!   feeds it and the MLP's as one parallel pass ([`crate::kernels::gelu_in_place`]);
//!   candle's `gelu` is the tanh approximation.
//!
//! - window attention runs on `kernels::attention` (one task per window).
//!
//! Layer norms and the linear layers stay on candle's ops.
//! Shapes: `[1, 3, 1024, 1024]` in, the `[1, 256, 64, 64]` embedding out.

use candle_core::{IndexOp, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use candle_transformers::models::segment_anything::LayerNorm2d;

use crate::kernels::attention::{window_attention, Windows};
use crate::kernels::host;
use crate::kernels::layer::FastConv;
use crate::kernels::{Act, Padding};

const IMG_SIZE: usize = 1024;
const EMBED_DIMS: [usize; 4] = [64, 128, 160, 320];
const DEPTHS: [usize; 4] = [2, 2, 6, 2];
const NUM_HEADS: [usize; 4] = [2, 4, 5, 10];
const WINDOW_SIZES: [usize; 4] = [7, 7, 14, 7];
const MBCONV_EXPAND: usize = 4;
const MLP_RATIO: usize = 4;

type R<T> = candle_core::Result<T>;

/// `Conv2d_BN` (`{p}.c.weight`, `{p}.bn.*`) folded into one conv:
/// `w·γ/√(var+ε)` and bias `β − mean·γ/√(var+ε)`.
fn conv_bn(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize, groups: usize, act: Act) -> R<FastConv> {
    let w = vb.get((cout, cin / groups, k, k), "c.weight")?;
    let bn = vb.pp("bn");
    let (g, b) = (bn.get(cout, "weight")?, bn.get(cout, "bias")?);
    let (mean, var) = (bn.get(cout, "running_mean")?, bn.get(cout, "running_var")?);
    let scale = (g / (var + 1e-5)?.sqrt()?)?;
    let w = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
    let bias = (b - (mean * &scale)?)?;
    FastConv::new(w, Some(bias), stride, Padding::uniform(k / 2), groups, act).map_err(to_candle)
}

fn to_candle(e: crate::error::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

fn conv(c: &FastConv, x: &Tensor) -> R<Tensor> {
    c.forward(&x.contiguous()?).map_err(to_candle)
}

/// Exact GELU: one parallel pass on the CPU, candle's `gelu_erf` elsewhere.
pub(crate) fn gelu(x: Tensor) -> R<Tensor> {
    let x = x.contiguous()?;
    if !host::is_cpu_f32(&x) {
        return x.gelu_erf();
    }
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    crate::kernels::gelu_in_place(&mut v);
    Tensor::from_vec(v, x.shape(), x.device())
}

fn linear(vb: VarBuilder, cin: usize, cout: usize) -> R<Linear> {
    Ok(Linear::new(vb.get((cout, cin), "weight")?, Some(vb.get(cout, "bias")?)))
}

fn layer_norm(vb: VarBuilder, dim: usize) -> R<LayerNorm> {
    candle_nn::layer_norm(dim, 1e-5, vb)
}

/// MBConv: 1×1 expand, depthwise 3×3, 1×1 project, plus the input; GELU
/// after each of the first two and after the sum.
struct MbConv {
    expand: FastConv,
    depthwise: FastConv,
    project: FastConv,
}

impl MbConv {
    fn new(dim: usize, vb: VarBuilder) -> R<Self> {
        let hidden = dim * MBCONV_EXPAND;
        Ok(MbConv {
            expand: conv_bn(vb.pp("conv1"), dim, hidden, 1, 1, 1, Act::Gelu)?,
            depthwise: conv_bn(vb.pp("conv2"), hidden, hidden, 3, 1, hidden, Act::Gelu)?,
            project: conv_bn(vb.pp("conv3"), hidden, dim, 1, 1, 1, Act::Gelu)?,
        })
    }

    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let h = conv(&self.depthwise, &conv(&self.expand, x)?)?;
        // GELU(project(h) + x): the shortcut added before the activation.
        self.project.forward_pre(&h, x).map_err(to_candle)
    }
}

/// Patch merging: 1×1, depthwise 3×3 (stride 2, or 1 into the last stage),
/// 1×1; tokens `[1, H·W, C]` out.
struct Merging {
    conv1: FastConv,
    conv2: FastConv,
    conv3: FastConv,
    /// The input's grid, for token inputs.
    resolution: usize,
}

impl Merging {
    fn new(resolution: usize, dim: usize, out: usize, vb: VarBuilder) -> R<Self> {
        let stride = if [320, 448, 576].contains(&out) { 1 } else { 2 };
        Ok(Merging {
            conv1: conv_bn(vb.pp("conv1"), dim, out, 1, 1, 1, Act::Gelu)?,
            conv2: conv_bn(vb.pp("conv2"), out, out, 3, stride, out, Act::Gelu)?,
            conv3: conv_bn(vb.pp("conv3"), out, out, 1, 1, 1, Act::None)?,
            resolution,
        })
    }

    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let x = if x.rank() == 3 {
            let (b, _, c) = x.dims3()?;
            x.reshape((b, self.resolution, self.resolution, c))?
                .permute((0, 3, 1, 2))?
        } else {
            x.clone()
        };
        let y = conv(&self.conv3, &conv(&self.conv2, &conv(&self.conv1, &x)?)?)?;
        y.flatten_from(2)?.transpose(1, 2)?.contiguous()
    }
}

/// Window attention with TinyViT's learned per-offset biases.
struct Attention {
    norm: LayerNorm,
    qkv: Linear,
    proj: Linear,
    /// `[heads, N, N]` biases for the window's N positions.
    bias: Tensor,
    /// The same biases as host floats, for the CPU kernel (CPU weights only).
    bias_host: Option<Vec<f32>>,
    heads: usize,
    key_dim: usize,
    scale: f64,
}

impl Attention {
    fn new(dim: usize, heads: usize, window: usize, vb: VarBuilder) -> R<Self> {
        let key_dim = dim / heads;
        let points: Vec<(i64, i64)> = (0..window as i64)
            .flat_map(|x| (0..window as i64).map(move |y| (x, y)))
            .collect();
        let mut offsets = std::collections::HashMap::new();
        let mut idxs = Vec::with_capacity(points.len() * points.len());
        for &(x1, y1) in &points {
            for &(x2, y2) in &points {
                let next = offsets.len();
                idxs.push(*offsets.entry(((x2 - x1).abs(), (y2 - y1).abs())).or_insert(next) as u32);
            }
        }
        let biases = vb.get((heads, offsets.len()), "attention_biases")?;
        let idxs = Tensor::new(idxs, biases.device())?;
        let bias = biases
            .index_select(&idxs, 1)?
            .reshape((heads, points.len(), points.len()))?;
        let bias_host = if bias.device().is_cpu() {
            Some(bias.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?)
        } else {
            None
        };
        Ok(Attention {
            bias_host,
            norm: layer_norm(vb.pp("norm"), dim)?,
            qkv: linear(vb.pp("qkv"), dim, 3 * dim)?,
            proj: linear(vb.pp("proj"), dim, dim)?,
            bias,
            heads,
            key_dim,
            scale: 1.0 / (key_dim as f64).sqrt(),
        })
    }

    /// `x`: `[windows, N, C]`.
    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let (b, n, _) = x.dims3()?;
        let qkv = x.apply(&self.norm)?.apply(&self.qkv)?;
        if let (Some(bias), true) = (&self.bias_host, host::is_cpu_f32(&qkv)) {
            let w = Windows {
                count: b,
                tokens: n,
                heads: self.heads,
                key_dim: self.key_dim,
                scale: self.scale as f32,
            };
            let out = host::with_slices(&[&qkv], |s| {
                let mut out = vec![0f32; b * n * self.heads * self.key_dim];
                window_attention(w, s[0], bias, &mut out);
                Ok(out)
            })
            .map_err(to_candle)?;
            return Tensor::from_vec(out, (b, n, self.heads * self.key_dim), x.device())?.apply(&self.proj);
        }
        let qkv = qkv.reshape((b, n, self.heads, ()))?;
        let part = |i: usize| {
            qkv.narrow(D::Minus1, i * self.key_dim, self.key_dim)?
                .permute((0, 2, 1, 3))?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let attn = (q.matmul(&k.t()?)? * self.scale)?.broadcast_add(&self.bias)?;
        let attn = candle_nn::ops::softmax_last_dim(&attn)?;
        attn.matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, self.heads * self.key_dim))?
            .apply(&self.proj)
    }
}

/// A TinyViT block: window attention, the depthwise local conv, the MLP;
/// residual adds around attention and MLP.
struct Block {
    attn: Attention,
    local_conv: FastConv,
    mlp_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    window: usize,
    resolution: usize,
}

impl Block {
    fn new(dim: usize, resolution: usize, heads: usize, window: usize, vb: VarBuilder) -> R<Self> {
        let mlp = vb.pp("mlp");
        Ok(Block {
            attn: Attention::new(dim, heads, window, vb.pp("attn"))?,
            local_conv: conv_bn(vb.pp("local_conv"), dim, dim, 3, 1, dim, Act::None)?,
            mlp_norm: layer_norm(mlp.pp("norm"), dim)?,
            fc1: linear(mlp.pp("fc1"), dim, dim * MLP_RATIO)?,
            fc2: linear(mlp.pp("fc2"), dim * MLP_RATIO, dim)?,
            window,
            resolution,
        })
    }

    /// `x`: tokens `[1, H·W, C]`.
    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let (b, l, c) = x.dims3()?;
        let (h, w, ws) = (self.resolution, self.resolution, self.window);
        let attended = if h == ws && w == ws {
            self.attn.forward(x)?
        } else {
            let pad_b = (ws - h % ws) % ws;
            let pad_r = (ws - w % ws) % ws;
            let mut t = x.reshape((b, h, w, c))?;
            if pad_b > 0 {
                t = t.pad_with_zeros(1, 0, pad_b)?;
            }
            if pad_r > 0 {
                t = t.pad_with_zeros(2, 0, pad_r)?;
            }
            let (ph, pw) = (h + pad_b, w + pad_r);
            let (nh, nw) = (ph / ws, pw / ws);
            let windows = t
                .reshape((b, nh, ws, nw, ws, c))?
                .transpose(2, 3)?
                .reshape((b * nh * nw, ws * ws, c))?;
            let mut t = self
                .attn
                .forward(&windows)?
                .reshape((b, nh, nw, ws, ws, c))?
                .transpose(2, 3)?
                .reshape((b, ph, pw, c))?;
            if pad_r > 0 || pad_b > 0 {
                t = t.i((.., ..h, ..w))?.contiguous()?;
            }
            t.reshape((b, l, c))?
        };
        let x = (attended + x)?;
        let x = x.transpose(1, 2)?.reshape((b, c, h, w))?;
        let x = conv(&self.local_conv, &x)?
            .reshape((b, c, l))?
            .transpose(1, 2)?
            .contiguous()?;
        let hidden = gelu(x.apply(&self.mlp_norm)?.apply(&self.fc1)?)?;
        &x + hidden.apply(&self.fc2)?
    }
}

enum Stage {
    Conv(Vec<MbConv>),
    Vit(Vec<Block>),
}

/// TinyViT-5M with SAM's neck.
pub struct TinyVit {
    patch1: FastConv,
    patch2: FastConv,
    stages: Vec<(Stage, Option<Merging>)>,
    neck_conv1: FastConv,
    neck_ln1: LayerNorm2d,
    neck_conv2: FastConv,
    neck_ln2: LayerNorm2d,
}

impl TinyVit {
    /// From `image_encoder.*` (`vb` already at that prefix).
    pub fn new(vb: VarBuilder) -> R<Self> {
        let pe = vb.pp("patch_embed.seq");
        let patch1 = conv_bn(pe.pp(0), 3, EMBED_DIMS[0] / 2, 3, 2, 1, Act::Gelu)?;
        let patch2 = conv_bn(pe.pp(2), EMBED_DIMS[0] / 2, EMBED_DIMS[0], 3, 2, 1, Act::None)?;
        let mut stages = Vec::with_capacity(EMBED_DIMS.len());
        let mut resolution = IMG_SIZE / 4;
        for i in 0..EMBED_DIMS.len() {
            let vl = vb.pp("layers").pp(i);
            let dim = EMBED_DIMS[i];
            if i > 0 {
                resolution = IMG_SIZE / 4 / (1 << i.min(2));
            }
            let stage = if i == 0 {
                Stage::Conv(
                    (0..DEPTHS[0])
                        .map(|j| MbConv::new(dim, vl.pp("blocks").pp(j)))
                        .collect::<R<_>>()?,
                )
            } else {
                Stage::Vit(
                    (0..DEPTHS[i])
                        .map(|j| Block::new(dim, resolution, NUM_HEADS[i], WINDOW_SIZES[i], vl.pp("blocks").pp(j)))
                        .collect::<R<_>>()?,
                )
            };
            let merge = (i + 1 < EMBED_DIMS.len())
                .then(|| Merging::new(resolution, dim, EMBED_DIMS[i + 1], vl.pp("downsample")))
                .transpose()?;
            stages.push((stage, merge));
        }
        let last = EMBED_DIMS[EMBED_DIMS.len() - 1];
        let neck = |name: &str, cin: usize, k: usize| -> R<FastConv> {
            let w = vb.pp("neck").get((256, cin, k, k), &format!("{name}.weight"))?;
            FastConv::new(w, None, 1, Padding::uniform(k / 2), 1, Act::None).map_err(to_candle)
        };
        Ok(TinyVit {
            patch1,
            patch2,
            stages,
            neck_conv1: neck("0", last, 1)?,
            neck_ln1: LayerNorm2d::new(256, 1e-6, vb.pp("neck.1"))?,
            neck_conv2: neck("2", 256, 3)?,
            neck_ln2: LayerNorm2d::new(256, 1e-6, vb.pp("neck.3"))?,
        })
    }
}

impl Module for TinyVit {
    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let mut x = conv(&self.patch2, &conv(&self.patch1, x)?)?;
        for (stage, merge) in &self.stages {
            match stage {
                Stage::Conv(blocks) => {
                    for b in blocks {
                        x = b.forward(&x)?;
                    }
                }
                Stage::Vit(blocks) => {
                    for b in blocks {
                        x = b.forward(&x)?;
                    }
                }
            }
            if let Some(m) = merge {
                x = m.forward(&x)?;
            }
        }
        let (b, _, c) = x.dims3()?;
        let grid = IMG_SIZE / 16;
        let x = x.reshape((b, grid, grid, c))?.permute((0, 3, 1, 2))?;
        let x = conv(&self.neck_conv1, &x)?.apply(&self.neck_ln1)?;
        conv(&self.neck_conv2, &x)?.apply(&self.neck_ln2)
    }
}
