//! Small layers shared by the face networks (TF semantics on NCHW tensors).

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use crate::error::Result;

/// A conv with bias; padding is applied by the caller (TF 'same' can be asymmetric).
pub fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv2d> {
    let w = vb.get((cout, cin, k, k), "weight")?;
    let b = vb.get(cout, "bias")?;
    Ok(Conv2d::new(
        w,
        Some(b),
        Conv2dConfig {
            stride,
            ..Default::default()
        },
    ))
}

/// Depthwise 3×3 then pointwise 1×1 then bias, as `tf.separableConv2d` + bias.
pub struct SeparableConv {
    depthwise: Conv2d,
    pointwise: Conv2d,
    stride: usize,
}

impl SeparableConv {
    pub fn load(vb: VarBuilder, cin: usize, cout: usize, stride: usize) -> Result<Self> {
        let dw = vb.get((cin, 1, 3, 3), "depthwise")?;
        let pw = vb.get((cout, cin, 1, 1), "pointwise")?;
        let b = vb.get(cout, "bias")?;
        Ok(SeparableConv {
            depthwise: Conv2d::new(
                dw,
                None,
                Conv2dConfig {
                    stride,
                    groups: cin,
                    ..Default::default()
                },
            ),
            pointwise: Conv2d::new(pw, Some(b), Conv2dConfig::default()),
            stride,
        })
    }

    /// `padded`: the input already padded by the caller.
    pub fn forward_padded(&self, padded: &Tensor) -> Result<Tensor> {
        Ok(self.pointwise.forward(&self.depthwise.forward(padded)?)?)
    }

    /// TF 'same' padding for a 3×3 kernel: 1 on each side at stride 1; at
    /// stride 2 on an even size, 0 before and 1 after.
    pub fn forward_same(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_padded(&pad_same3(x, self.stride)?)
    }
}

/// Zero padding that makes a 3×3 conv at `stride` behave like TF 'same'.
pub fn pad_same3(x: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pads = |n: usize| {
        let out = n.div_ceil(stride);
        let total = ((out - 1) * stride + 3).saturating_sub(n);
        (total / 2, total - total / 2)
    };
    let (t, b) = pads(h);
    let (l, r) = pads(w);
    Ok(x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?)
}

/// 2×2 max pool with TF 'same' padding (extra row/column at the bottom/right).
pub fn max_pool_same(x: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let need = |n: usize| {
        let out = n.div_ceil(stride);
        ((out - 1) * stride + 2).saturating_sub(n)
    };
    // Replicating the edge never changes a max, unlike zero padding.
    let x = x.pad_with_same(2, 0, need(h))?.pad_with_same(3, 0, need(w))?;
    Ok(x.max_pool2d_with_stride(2, stride)?)
}

/// TF's leaky ReLU with alpha 0.1.
pub fn leaky(x: &Tensor) -> Result<Tensor> {
    Ok(x.maximum(&(x * 0.1)?)?)
}
