//! CPU kernels for the convolutions the vision models spend their time in.
//!
//! candle's CPU conv2d lowers every convolution the same way and runs a
//! grouped (depthwise) conv as one tiny conv per channel. These kernels do
//! what the networks here need instead: im2col feeding the `gemm` crate with
//! 1×1 convs as plain matmuls, a direct depthwise kernel, asymmetric (TF
//! "same") padding, and bias + activation fused into the output pass. Models
//! use them through [`layer::FastConv`], which falls back to candle's own ops
//! on other devices, so GPU backends keep candle's kernels.

pub mod conv;
pub mod depthwise;
pub mod layer;

/// Activation fused into a conv's output pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    None,
    Relu,
    Leaky(f32),
    Silu,
}

impl Act {
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => v.max(0.0),
            Act::Leaky(a) => {
                if v < 0.0 {
                    v * a
                } else {
                    v
                }
            }
            Act::Silu => v / (1.0 + (-v).exp()),
        }
    }
}

/// Zero padding on each side (TF "same" can be asymmetric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub fn uniform(p: usize) -> Self {
        Padding {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }
}

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvShape {
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: Padding,
}

impl ConvShape {
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let ph = h + self.pad.top + self.pad.bottom;
        let pw = w + self.pad.left + self.pad.right;
        (
            ph.saturating_sub(self.kh) / self.stride + 1,
            pw.saturating_sub(self.kw) / self.stride + 1,
        )
    }
}

/// Adds the bias and applies the activation to a [C, N] output, in parallel over channels.
pub fn epilogue(out: &mut [f32], n: usize, bias: Option<&[f32]>, act: Act) {
    use rayon::prelude::*;
    if bias.is_none() && act == Act::None {
        return;
    }
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(c, row)| {
        let b = bias.map(|b| b[c]).unwrap_or(0.0);
        for v in row.iter_mut() {
            *v = act.apply(*v + b);
        }
    });
}
