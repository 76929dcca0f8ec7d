//! MobileSAM's image encoder, TinyViT-5M (`mobile_sam/modeling/tiny_vit_sam.py`),
//! on our kernels.
//!
//! The network and the weight names are those of candle-transformers'
//! `segment_anything::tiny_vit` (Meta's `image_encoder.*` names), with these
//! changes, which make it several times faster on the CPU and closer to
//! PyTorch:
//!
//! - every `Conv2d_BN` is one [`FastConv`]: the batch norm folded into the
//!   weights and a bias at load (inference mode: running statistics);
//! - the depthwise 3×3 convs (MBConv, patch merging, each block's local
//!   conv) run on `kernels::depthwise`, where candle runs one conv per channel;
//! - GELU is PyTorch's exact `nn.GELU()` (erf), fused into the conv that
//!   feeds it; candle's `gelu` is the tanh approximation;
//! - on the CPU each attention block runs channel-first ([`PlanarBlock`]):
//!   its linear layers are 1×1 convs with GELU and the residual adds fused,
//!   layer norm runs over channels (`kernels::norm`) and window attention
//!   reads the qkv planes (`kernels::attention`). Elsewhere the block runs on
//!   candle's ops as tokens.
//!
//! NCHW throughout: `[1, 3, 1024, 1024]` in, the `[1, 256, 64, 64]`
//! embedding out.

use candle_core::{IndexOp, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use candle_transformers::models::segment_anything::LayerNorm2d;

use crate::kernels::attention::{window_attention_planar, Planar};
use crate::kernels::host;
use crate::kernels::layer::FastConv;
use crate::kernels::norm::layer_norm_planar;
use crate::kernels::{Act, Padding};

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
/// 1×1; NCHW in and out.
struct Merging {
    conv1: FastConv,
    conv2: FastConv,
    conv3: FastConv,
}

impl Merging {
    fn new(dim: usize, out: usize, vb: VarBuilder) -> R<Self> {
        let stride = if [320, 448, 576].contains(&out) { 1 } else { 2 };
        Ok(Merging {
            conv1: conv_bn(vb.pp("conv1"), dim, out, 1, 1, 1, Act::Gelu)?,
            conv2: conv_bn(vb.pp("conv2"), out, out, 3, stride, out, Act::Gelu)?,
            conv3: conv_bn(vb.pp("conv3"), out, out, 1, 1, 1, Act::None)?,
        })
    }

    fn forward(&self, x: &Tensor) -> R<Tensor> {
        conv(&self.conv3, &conv(&self.conv2, &conv(&self.conv1, x)?)?)
    }
}

/// Window attention with TinyViT's learned per-offset biases.
struct Attention {
    norm: LayerNorm,
    qkv: Linear,
    proj: Linear,
    /// `[heads, N, N]` biases for the window's N positions.
    bias: Tensor,
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
        Ok(Attention {
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
/// residual adds around attention and MLP. NCHW in and out.
struct Block {
    attn: Attention,
    local_conv: FastConv,
    mlp_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    window: usize,
    /// The block as our CPU kernels run it, when its weights are host f32.
    planar: Option<PlanarBlock>,
}

/// A block's layers on channel-first data: layer norms over channels,
/// every linear layer a 1×1 [`FastConv`] (GELU and the residual adds fused),
/// window attention reading the qkv planes in place.
struct PlanarBlock {
    norm1: (Vec<f32>, Vec<f32>),
    qkv: FastConv,
    /// The qkv of a padding token: the projection of `norm1`'s β.
    pad: Vec<f32>,
    bias: Vec<f32>,
    proj: FastConv,
    norm2: (Vec<f32>, Vec<f32>),
    fc1: FastConv,
    fc2: FastConv,
}

fn host(t: &Tensor) -> R<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()
}

/// A linear layer as a 1×1 conv.
fn pointwise(l: &Linear, act: Act) -> R<FastConv> {
    let (o, i) = l.weight().dims2()?;
    FastConv::new(
        l.weight().reshape((o, i, 1, 1))?,
        l.bias().cloned(),
        1,
        Padding::default(),
        1,
        act,
    )
    .map_err(to_candle)
}

fn norm_host(n: &LayerNorm) -> R<(Vec<f32>, Vec<f32>)> {
    let beta = n
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("layer norm without bias".into()))?;
    Ok((host(n.weight())?, host(beta)?))
}

impl PlanarBlock {
    fn new(attn: &Attention, mlp_norm: &LayerNorm, fc1: &Linear, fc2: &Linear) -> R<Self> {
        let norm1 = norm_host(&attn.norm)?;
        let w = host(attn.qkv.weight())?;
        let b = attn.qkv.bias().map(host).transpose()?;
        let cin = norm1.1.len();
        let pad = (0..w.len() / cin.max(1))
            .map(|o| {
                let dot: f32 = w[o * cin..][..cin].iter().zip(&norm1.1).map(|(a, x)| a * x).sum();
                dot + b.as_ref().map_or(0.0, |b| b[o])
            })
            .collect();
        Ok(PlanarBlock {
            qkv: pointwise(&attn.qkv, Act::None)?,
            pad,
            bias: host(&attn.bias)?,
            proj: pointwise(&attn.proj, Act::None)?,
            norm2: norm_host(mlp_norm)?,
            fc1: pointwise(fc1, Act::Gelu)?,
            fc2: pointwise(fc2, Act::None)?,
            norm1,
        })
    }
}

/// [`layer_norm_planar`] on a `[1, C, H, W]` CPU tensor.
fn norm_planar(x: &Tensor, (gamma, beta): &(Vec<f32>, Vec<f32>)) -> R<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let out = host::with_slices(&[x], |s| {
        let mut out = vec![0f32; c * h * w];
        layer_norm_planar(s[0], c, h * w, gamma, beta, 1e-5, &mut out);
        Ok(out)
    })
    .map_err(to_candle)?;
    Tensor::from_vec(out, x.shape(), x.device())
}

impl Block {
    fn new(dim: usize, heads: usize, window: usize, vb: VarBuilder) -> R<Self> {
        let mlp = vb.pp("mlp");
        let attn = Attention::new(dim, heads, window, vb.pp("attn"))?;
        let mlp_norm = layer_norm(mlp.pp("norm"), dim)?;
        let fc1 = linear(mlp.pp("fc1"), dim, dim * MLP_RATIO)?;
        let fc2 = linear(mlp.pp("fc2"), dim * MLP_RATIO, dim)?;
        let planar = host::is_cpu_f32(attn.qkv.weight())
            .then(|| PlanarBlock::new(&attn, &mlp_norm, &fc1, &fc2))
            .transpose()?;
        Ok(Block {
            local_conv: conv_bn(vb.pp("local_conv"), dim, dim, 3, 1, dim, Act::None)?,
            attn,
            mlp_norm,
            fc1,
            fc2,
            window,
            planar,
        })
    }

    /// `x`: `[1, C, H, W]`.
    fn forward(&self, x: &Tensor) -> R<Tensor> {
        match &self.planar {
            Some(p) if host::is_cpu_f32(x) && x.dim(0)? == 1 => self.forward_planar(p, &x.contiguous()?),
            _ => self.forward_tokens(x),
        }
    }

    fn forward_planar(&self, p: &PlanarBlock, x: &Tensor) -> R<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let qkv = conv(&p.qkv, &norm_planar(x, &p.norm1)?)?;
        let shape = Planar {
            h,
            w,
            window: self.window,
            heads: self.attn.heads,
            key_dim: self.attn.key_dim,
            scale: self.attn.scale as f32,
        };
        let attended = host::with_slices(&[&qkv], |s| {
            let mut out = vec![0f32; c * h * w];
            window_attention_planar(shape, s[0], &p.pad, &p.bias, &mut out);
            Ok(out)
        })
        .map_err(to_candle)?;
        let attended = Tensor::from_vec(attended, x.shape(), x.device())?;
        let x = p.proj.forward_fused(&[&attended], Some(x)).map_err(to_candle)?;
        let x = conv(&self.local_conv, &x)?;
        let hidden = conv(&p.fc1, &norm_planar(&x, &p.norm2)?)?;
        p.fc2.forward_fused(&[&hidden], Some(&x)).map_err(to_candle)
    }

    /// The block on candle's ops, as tokens `[1, H·W, C]` (other devices).
    fn forward_tokens(&self, x: &Tensor) -> R<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let l = h * w;
        let x = &x.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let ws = self.window;
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
        let x = conv(&self.local_conv, &x)?;
        let t = x.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let hidden = gelu(t.apply(&self.mlp_norm)?.apply(&self.fc1)?)?;
        let y = (&t + hidden.apply(&self.fc2)?)?;
        y.transpose(1, 2)?.reshape((b, c, h, w))
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
        for i in 0..EMBED_DIMS.len() {
            let vl = vb.pp("layers").pp(i);
            let dim = EMBED_DIMS[i];
            let stage = if i == 0 {
                Stage::Conv(
                    (0..DEPTHS[0])
                        .map(|j| MbConv::new(dim, vl.pp("blocks").pp(j)))
                        .collect::<R<_>>()?,
                )
            } else {
                Stage::Vit(
                    (0..DEPTHS[i])
                        .map(|j| Block::new(dim, NUM_HEADS[i], WINDOW_SIZES[i], vl.pp("blocks").pp(j)))
                        .collect::<R<_>>()?,
                )
            };
            let merge = (i + 1 < EMBED_DIMS.len())
                .then(|| Merging::new(dim, EMBED_DIMS[i + 1], vl.pp("downsample")))
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
        let x = conv(&self.neck_conv1, &x)?.apply(&self.neck_ln1)?;
        conv(&self.neck_conv2, &x)?.apply(&self.neck_ln2)
    }
}
