//! Small layers shared by the face networks (TF semantics on NCHW tensors),
//! built on the CPU kernels of [`crate::kernels`].

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::error::Result;
pub use crate::kernels::layer::FastConv;
pub use crate::kernels::{Act, Padding};

/// A k×k conv with bias and a fused activation; `pad` applies unless the
/// caller passes its own.
pub fn conv(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: Padding,
    act: Act,
) -> Result<FastConv> {
    let w = vb.get((cout, cin, k, k), "weight")?;
    let b = vb.get(cout, "bias")?;
    FastConv::new(w, Some(b), stride, pad, 1, act)
}

pub use crate::kernels::same_pad;

pub fn same_padding(x: &Tensor, k: usize, stride: usize) -> Result<Padding> {
    let (_, _, h, w) = x.dims4()?;
    let (top, bottom) = same_pad(h, k, stride);
    let (left, right) = same_pad(w, k, stride);
    Ok(Padding {
        top,
        bottom,
        left,
        right,
    })
}

/// Depthwise 3×3 then pointwise 1×1 then bias (`tf.separableConv2d` + bias),
/// with the activation fused into the pointwise pass.
pub struct SeparableConv {
    depthwise: FastConv,
    pointwise: FastConv,
    stride: usize,
}

impl SeparableConv {
    pub fn load(vb: VarBuilder, cin: usize, cout: usize, stride: usize, act: Act) -> Result<Self> {
        let dw = vb.get((cin, 1, 3, 3), "depthwise")?;
        let pw = vb.get((cout, cin, 1, 1), "pointwise")?;
        let b = vb.get(cout, "bias")?;
        Ok(SeparableConv {
            depthwise: FastConv::new(dw, None, stride, Padding::default(), cin, Act::None)?,
            pointwise: FastConv::new(pw, Some(b), 1, Padding::default(), 1, act)?,
            stride,
        })
    }

    /// TF "same" padding (1 each side at stride 1; at stride 2 on an even
    /// size, 0 before and 1 after).
    pub fn forward_same(&self, x: &Tensor) -> Result<Tensor> {
        let pad = same_padding(x, 3, self.stride)?;
        self.pointwise.forward(&self.depthwise.forward_padded(x, pad)?)
    }

    /// [`Self::forward_same`] then a 2×2, stride-2 TF-same max pool, the pool
    /// fused into the pointwise pass on CPU.
    pub fn forward_same_pool2(&self, x: &Tensor) -> Result<Tensor> {
        let pad = same_padding(x, 3, self.stride)?;
        self.pointwise.forward_pool2(&self.depthwise.forward_padded(x, pad)?)
    }
}

pub use crate::kernels::pool::max_pool2_same as max_pool_same;
