//! SAM's mask decoder (`segment_anything/modeling/mask_decoder.py`) under
//! Meta's weight names (`mask_decoder.*`): candle-transformers' two-way
//! transformer, and around it our own output upscaling and heads.
//!
//! Two differences from candle-transformers' `MaskDecoder`, which this
//! replaces: each 2×2, stride-2 transposed convolution of the upscaling is
//! one matrix product (every output pixel has exactly one input pixel and
//! one tap: `[4·Cout, Cin] × [Cin, H·W]`, then the 2×2 taps interleaved),
//! where candle's CPU `conv_transpose2d` loops per element; and GELU is
//! PyTorch's exact `nn.GELU()` (erf), not the tanh approximation.

use candle_core::{IndexOp, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::segment_anything::transformer::TwoWayTransformer;
use candle_transformers::models::segment_anything::LayerNorm2d;

use super::tiny_vit::gelu;

type R<T> = candle_core::Result<T>;

/// `num_layers` linear layers with ReLU between (`MLP` in `mask_decoder.py`).
struct Mlp(Vec<Linear>);

impl Mlp {
    fn new(cin: usize, hidden: usize, cout: usize, layers: usize, vb: VarBuilder) -> R<Self> {
        let vb = vb.pp("layers");
        (0..layers)
            .map(|i| {
                let a = if i == 0 { cin } else { hidden };
                let b = if i + 1 == layers { cout } else { hidden };
                let l = vb.pp(i);
                Ok(Linear::new(l.get((b, a), "weight")?, Some(l.get(b, "bias")?)))
            })
            .collect::<R<Vec<_>>>()
            .map(Mlp)
    }

    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let mut x = x.clone();
        for (i, l) in self.0.iter().enumerate() {
            x = l.forward(&x)?;
            if i + 1 < self.0.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// A 2×2, stride-2 transposed convolution as one matrix product.
struct Up2 {
    /// `[4·Cout, Cin]`, rows ordered (co, dy, dx).
    weight: Tensor,
    /// `[1, Cout, 1, 1]`.
    bias: Tensor,
    cout: usize,
}

impl Up2 {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> R<Self> {
        // PyTorch's ConvTranspose2d weight is [Cin, Cout, kH, kW].
        let w = vb.get((cin, cout, 2, 2), "weight")?;
        let weight = w.permute((1, 2, 3, 0))?.reshape((cout * 4, cin))?.contiguous()?;
        let bias = vb.get(cout, "bias")?.reshape((1, cout, 1, 1))?;
        Ok(Up2 { weight, bias, cout })
    }

    /// `[B, Cin, H, W]` → `[B, Cout, 2H, 2W]`.
    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let (b, cin, h, w) = x.dims4()?;
        let taps = self
            .weight
            .broadcast_left(b)?
            .matmul(&x.reshape((b, cin, h * w))?.contiguous()?)?;
        taps.reshape((b, self.cout, 2, 2, h, w))?
            .permute((0, 1, 4, 2, 5, 3))?
            .reshape((b, self.cout, 2 * h, 2 * w))?
            .broadcast_add(&self.bias)
    }
}

/// The mask decoder: its output is the same as candle-transformers'
/// `MaskDecoder::forward` (up to GELU's form).
pub struct MaskDecoder {
    /// `[1 + masks, C]`: the IoU token, then the mask tokens.
    tokens: Tensor,
    iou_head: Mlp,
    up1: Up2,
    up_norm: LayerNorm2d,
    up2: Up2,
    hyper: Vec<Mlp>,
    transformer: TwoWayTransformer,
    masks: usize,
}

impl MaskDecoder {
    /// SAM's decoder: `dim` 256, 3 multimask outputs (4 mask tokens), an
    /// IoU head of depth 3 and width 256.
    pub fn new(dim: usize, vb: VarBuilder) -> R<Self> {
        let masks = 4;
        let tokens = Tensor::cat(
            &[
                vb.get((1, dim), "iou_token.weight")?,
                vb.get((masks, dim), "mask_tokens.weight")?,
            ],
            0,
        )?;
        let hyper = (0..masks)
            .map(|i| Mlp::new(dim, dim, dim / 8, 3, vb.pp("output_hypernetworks_mlps").pp(i)))
            .collect::<R<Vec<_>>>()?;
        Ok(MaskDecoder {
            tokens,
            iou_head: Mlp::new(dim, 256, masks, 3, vb.pp("iou_prediction_head"))?,
            up1: Up2::new(dim, dim / 4, vb.pp("output_upscaling.0"))?,
            up_norm: LayerNorm2d::new(dim / 4, 1e-6, vb.pp("output_upscaling.1"))?,
            up2: Up2::new(dim / 4, dim / 8, vb.pp("output_upscaling.3"))?,
            hyper,
            transformer: TwoWayTransformer::new(2, dim, 8, 2048, vb.pp("transformer"))?,
            masks,
        })
    }

    /// Low-resolution mask logits `[B, M, 256, 256]` and predicted IoUs
    /// `[B, M]` for B prompts: the three multimask outputs (M = 3) or the
    /// single one (M = 1).
    pub fn forward(
        &self,
        image: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask: bool,
    ) -> R<(Tensor, Tensor)> {
        let n = sparse.dim(0)?;
        let (t, c) = self.tokens.dims2()?;
        let tokens = Tensor::cat(&[&self.tokens.unsqueeze(0)?.expand((n, t, c))?, sparse], 1)?;
        let src = image.broadcast_add(dense)?;
        let src = if src.dim(0)? == n {
            src
        } else {
            src.broadcast_as(repeat(&src, n)?)?.contiguous()?
        };
        let pos = image_pe.broadcast_as(repeat(image_pe, n)?)?.contiguous()?;
        let (b, c, h, w) = src.dims4()?;
        let (hs, src) = self.transformer.forward(&src, &pos, &tokens)?;
        let iou_out = hs.i((.., 0))?;
        let mask_out = hs.i((.., 1..1 + self.masks))?;
        let src = src.transpose(1, 2)?.reshape((b, c, h, w))?;
        let up = self.up1.forward(&src)?.apply(&self.up_norm)?;
        let up = gelu(self.up2.forward(&gelu(up)?)?)?;
        let hyper = self
            .hyper
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&mask_out.i((.., i))?))
            .collect::<R<Vec<_>>>()?;
        let hyper = Tensor::stack(&hyper, 1)?.contiguous()?;
        let (b, c, h, w) = up.dims4()?;
        let masks = hyper.matmul(&up.reshape((b, c, h * w))?)?.reshape((b, (), h, w))?;
        let iou = self.iou_head.forward(&iou_out)?;
        let range = if multimask { 1..self.masks } else { 0..1 };
        Ok((masks.i((.., range.clone()))?, iou.i((.., range))?))
    }
}

/// The shape of `t` (`[1, …]`) repeated `n` times along the first axis.
fn repeat(t: &Tensor, n: usize) -> R<Vec<usize>> {
    let mut dims = t.dims().to_vec();
    if let Some(d) = dims.first_mut() {
        *d = n;
    }
    Ok(dims)
}
