//! CPU kernels for the convolutions the vision models spend their time in.
//!
//! candle's CPU conv2d lowers every convolution the same way and runs a
//! grouped (depthwise) conv as one tiny conv per channel. These kernels do
//! what the networks here need instead:
//!
//! - [`tiled`]: dense convs on a register-tiled microkernel ([`avx512`], or
//!   [`avx2`] without AVX-512) over weights packed once, reading the input in
//!   place ([`borders`]: stride 1, padding masked per lane) or from a padded,
//!   phase-split copy ([`planes`]: strided convs); bias, activation and a
//!   residual add in registers; a conv over a channel concatenation reads
//!   the parts where they are.
//! - [`conv`]: im2col feeding the `gemm` crate (CPUs with neither ISA).
//! - [`depthwise`], [`pool`]: per-channel parallel loops.
//! - [`attention`]: multi-head attention over many small windows (TinyViT);
//!   [`norm`]: layer norm over the channels of channel-first data.
//! - [`host`]: borrowing CPU tensors' data and filling new ones.
//!
//! Models use them through [`layer::FastConv`], which falls back to candle's
//! own ops on other devices, so GPU backends keep candle's kernels. Every
//! fast path asks [`host::is_cpu_f32`] first; [`choice::Kernels::Generic`]
//! makes it say no on the CPU too, so the generic path can be tested here.

pub mod attention;
pub mod avx2;
pub mod avx512;
pub mod borders;
pub mod choice;
pub mod conv;
pub mod depthwise;
pub mod host;
pub mod layer;
pub mod norm;
pub mod planes;
pub mod pool;
pub mod scratch;
pub mod tiled;

pub use choice::Kernels;

/// Activation fused into a conv's output pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    None,
    Relu,
    Leaky(f32),
    Silu,
    /// min(max(v, 0), 6) (MobileNet's ReLU6).
    Relu6,
    /// `v·Φ(v) = ½v(1 + erf(v/√2))`: PyTorch's `nn.GELU()` (the exact
    /// form, not the tanh approximation), erf by [`erf`].
    Gelu,
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
            Act::Silu => v / (1.0 + fast_exp(-v)),
            Act::Relu6 => v.clamp(0.0, 6.0),
            Act::Gelu => 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)),
        }
    }
}

/// p of Abramowitz & Stegun 7.1.26: `erf(x) ≈ 1 − t·P(t)·e^(−x²)`, `t = 1/(1 + p·x)`.
pub(crate) const ERF_P: f32 = 0.327_591_1;
/// The coefficients a₁…a₅ of that P (|error| ≤ 1.5e-7 for x ≥ 0).
pub(crate) const ERF_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7, odd by
/// construction) with [`fast_exp`]; the vector GELUs use the same formula.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + ERF_P * a);
    let mut p = ERF_A[4];
    for c in ERF_A[..4].iter().rev() {
        p = p * t + c;
    }
    (1.0 - p * t * fast_exp(-a * a)).copysign(x)
}

/// [`Act::Gelu`] over `x` in place, in parallel, 16 lanes at a time where
/// the CPU has AVX-512.
pub fn gelu_in_place(x: &mut [f32]) {
    use rayon::prelude::*;
    x.par_chunks_mut(16 * 1024).for_each(|c| {
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            // SAFETY: the CPU has AVX-512F (checked just above).
            unsafe { avx512::gelu_row(c) };
            return;
        }
        c.iter_mut().for_each(|v| *v = Act::Gelu.apply(*v));
    });
}

/// ln 2 split in two (`x − n·HI + n·LO` keeps the reduction exact enough).
pub(crate) const EXP_LN2_HI: f32 = 0.693_359_4;
pub(crate) const EXP_LN2_LO: f32 = 2.121_944_4e-4;
/// Cephes expf polynomial on the reduced range, highest degree first; the
/// scalar and vector exps all use it.
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_66,
    0.5,
];

/// exp(x) in f32 without a libm call, so output loops vectorise: range
/// reduction by ln 2 and a degree-6 polynomial (Cephes expf coefficients);
/// relative error about 2e-7 over the clamped range.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and removing 1.5·2^23 (no libm call).
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - n * EXP_LN2_HI + n * EXP_LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    // 2^n from n + 127 in the low bits of 2^23 + n + 127 (n is a whole number
    // in [−126, 127] here), shifted into the exponent: float adds and a
    // shift, no float-to-int conversion, so loops of it vectorise.
    e * f32::from_bits((n + 8_388_735.0).to_bits() << 23)
}

/// TF "same" padding of a k×k window at `stride` on an `n`-long axis:
/// (before, after); the odd pixel goes after.
pub fn same_pad(n: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(n);
    (total / 2, total - total / 2)
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
    /// A square `k`×`k` kernel.
    pub fn square(cin: usize, cout: usize, k: usize, stride: usize, pad: Padding) -> Self {
        ConvShape {
            cin,
            cout,
            kh: k,
            kw: k,
            stride,
            pad,
        }
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let ph = h + self.pad.top + self.pad.bottom;
        let pw = w + self.pad.left + self.pad.right;
        (
            ph.saturating_sub(self.kh) / self.stride + 1,
            pw.saturating_sub(self.kw) / self.stride + 1,
        )
    }
}

/// One image's operands, as every CPU conv kernel takes them: the input `I`
/// (planes, or the parts of a channel concatenation) of `hw` pixels, the
/// weights `W` (flat or packed), the bias, the shape and the fused activation.
pub struct ConvArgs<'a, I: ?Sized, W: ?Sized> {
    pub x: &'a I,
    pub hw: (usize, usize),
    pub weight: &'a W,
    pub bias: Option<&'a [f32]>,
    pub s: &'a ConvShape,
    pub act: Act,
}

impl<'a, I: ?Sized, W: ?Sized> ConvArgs<'a, I, W> {
    /// The operands of one image's conv.
    pub fn new(
        x: &'a I,
        hw: (usize, usize),
        weight: &'a W,
        bias: Option<&'a [f32]>,
        s: &'a ConvShape,
        act: Act,
    ) -> Self {
        ConvArgs {
            x,
            hw,
            weight,
            bias,
            s,
            act,
        }
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
        // One loop per activation, so each one vectorises.
        match act {
            Act::None => row.iter_mut().for_each(|v| *v += b),
            Act::Relu => row.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
            Act::Relu6 => row.iter_mut().for_each(|v| *v = (*v + b).clamp(0.0, 6.0)),
            Act::Leaky(a) => row.iter_mut().for_each(|v| {
                let t = *v + b;
                *v = if t < 0.0 { t * a } else { t };
            }),
            Act::Silu => row.iter_mut().for_each(|v| {
                let t = *v + b;
                *v = t / (1.0 + fast_exp(-t));
            }),
            Act::Gelu => row.iter_mut().for_each(|v| *v = Act::Gelu.apply(*v + b)),
        }
    });
}

/// Checks a vector SiLU of `lanes` lanes (`eval(x, out)`) against f64 over
/// the whole range where SiLU changes, both tails included: within a few
/// ulp, and within 1e-35 where the value is below 1e-30 (far below any
/// activation's scale).
#[cfg(test)]
pub(crate) fn check_silu_against_f64(lanes: usize, eval: impl Fn(&[f32], &mut [f32])) {
    let xs: Vec<f32> = (0..lanes * 32000 / lanes)
        .map(|i| -100.0 + i as f32 * 0.00631)
        .collect();
    let mut worst = 0f64;
    let mut got = vec![0f32; lanes];
    for chunk in xs.chunks_exact(lanes) {
        eval(chunk, &mut got);
        for (g, x) in got.iter().zip(chunk) {
            let x = *x as f64;
            let want = x / (1.0 + (-x).exp());
            if want.abs() < 1e-30 {
                assert!((*g as f64 - want).abs() < 1e-35, "silu({x}) = {g}, want {want}");
            } else {
                worst = worst.max((*g as f64 - want).abs() / want.abs());
            }
        }
    }
    assert!(worst < 1e-6, "relative error {worst}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let (a, b) = (fast_exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert_eq!(fast_exp(-200.0), (-87.0f32).exp());
    }
}
