//! `FastConv`: a conv layer that runs the kernels here on CPU (reading the
//! tensors' data in place) and candle's own ops on any other device.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::{conv, depthwise, host, tiled, Act, ConvArgs, ConvShape, Padding};
use crate::error::{Error, Result};

/// A batch whose images each take fewer multiply-adds than this runs one
/// image per job (a single image this small splits badly among threads).
const BATCH_PARALLEL_BELOW: usize = 8 << 20;

struct Op {
    /// The weights are on the CPU, so the host copies below exist (on a GPU
    /// they are not made: candle's ops run there on the device's weights).
    on_host: bool,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// Panels for the tiled kernel (dense convs, when the CPU can run it).
    packed: Option<tiled::Packed>,
    shape: ConvShape,
    depthwise: bool,
    act: Act,
}

/// A 2-D convolution with optional bias and fused activation. `groups` is 1
/// (dense) or the number of input channels (depthwise).
pub struct FastConv {
    weight: Tensor,
    bias: Option<Tensor>,
    groups: usize,
    op: Op,
}

impl FastConv {
    /// `weight`: OIHW (depthwise: [C, 1, kh, kw]).
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        pad: Padding,
        groups: usize,
        act: Act,
    ) -> Result<Self> {
        let (cout, cin_g, kh, kw) = weight.dims4()?;
        let depthwise = groups > 1;
        if depthwise && (groups != cout || cin_g != 1) {
            return Err(Error::msg(format!(
                "FastConv: only depthwise grouping is supported (groups {groups}, weight {:?})",
                weight.dims()
            )));
        }
        let cin = cin_g * groups;
        // The path is chosen per device here, at load: host copies and
        // packed panels for the CPU kernels only when the weights are there.
        let on_host = weight.device().is_cpu();
        let flat: Vec<f32> = if on_host {
            weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?
        } else {
            Vec::new()
        };
        let b = match &bias {
            Some(b) if on_host => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            _ => None,
        };
        let packed = match tiled::Isa::best() {
            Some(isa) if !depthwise && on_host => Some(tiled::Packed::new(&flat, cout, cin_g * kh * kw, isa)),
            _ => None,
        };
        Ok(FastConv {
            op: Op {
                on_host,
                packed,
                weight: flat,
                bias: b,
                shape: ConvShape {
                    cin,
                    cout,
                    kh,
                    kw,
                    stride: stride.max(1),
                    pad,
                },
                depthwise,
                act,
            },
            weight,
            bias,
            groups,
        })
    }

    /// This dense conv as two over its input channels `..at` and `at..`:
    /// the first without bias or activation, the second with both, so that
    /// `second.forward_pre(x_b, &first.forward(x_a)?)` is this conv of the
    /// concatenation (to float rounding). For a 1×1 conv whose first input
    /// is upsampled, the first runs before the upsampling, on a quarter of
    /// the positions.
    pub fn split_input(&self, at: usize) -> Result<(FastConv, FastConv)> {
        let cin = self.op.shape.cin;
        if self.groups != 1 || at == 0 || at >= cin {
            return Err(Error::msg(format!(
                "conv: cannot split {cin} input channels at {at} (groups {})",
                self.groups
            )));
        }
        let s = self.op.shape;
        let first = FastConv::new(self.weight.narrow(1, 0, at)?, None, s.stride, s.pad, 1, Act::None)?;
        let second = FastConv::new(
            self.weight.narrow(1, at, cin - at)?,
            self.bias.clone(),
            s.stride,
            s.pad,
            1,
            self.op.act,
        )?;
        Ok((first, second))
    }

    /// True when this layer runs the tiled kernel ([`tiled`]) on CPU.
    pub fn is_tiled(&self) -> bool {
        self.op.packed.is_some()
    }

    /// The tiled kernel's instruction set for this layer, if it runs one.
    pub fn tiled_isa(&self) -> Option<tiled::Isa> {
        self.op.packed.as_ref().map(|p| p.isa)
    }

    /// The same layer on another tiled microkernel (when this CPU supports
    /// it; otherwise unchanged); for tests and comparisons.
    pub fn with_tiled_isa(mut self, isa: tiled::Isa) -> Self {
        if let Some(p) = &mut self.op.packed {
            if isa.supported() {
                p.isa = isa;
            }
        }
        self
    }

    /// The same layer on the im2col + GEMM path (the tiled kernel's fallback
    /// on CPUs without AVX-512); for tests and comparisons.
    pub fn without_tiled(mut self) -> Self {
        self.op.packed = None;
        self
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_padded(x, self.op.shape.pad)
    }

    /// With padding chosen per call (TF "same" depends on the input size).
    pub fn forward_padded(&self, x: &Tensor, pad: Padding) -> Result<Tensor> {
        if self.op.on_host && host::is_cpu_f32(x) {
            self.cpu(&[x], (None, None), pad)
        } else {
            self.reference_padded(x, pad)
        }
    }

    /// The conv over the channel concatenation of `parts`, plus `residual`
    /// (output-shaped) added after the activation: `act(conv(cat(parts))) +
    /// residual`. On CPU with the tiled kernel neither the concatenation nor
    /// the sum is built as a tensor of its own.
    pub fn forward_fused(&self, parts: &[&Tensor], residual: Option<&Tensor>) -> Result<Tensor> {
        let on_cpu = self.op.on_host && parts.iter().chain(residual.iter()).all(|t| host::is_cpu_f32(t));
        if on_cpu && self.op.packed.is_some() {
            return self.cpu(parts, (None, residual), self.op.shape.pad);
        }
        let x = match parts {
            [one] => (*one).clone(),
            _ => Tensor::cat(parts, 1)?,
        };
        let y = self.forward(&x)?;
        Ok(match residual {
            Some(r) => (y + r)?,
            None => y,
        })
    }

    /// `act(conv(x) + bias + pre)`: `pre` (output-shaped) is added before
    /// the activation, as a second input's contribution computed elsewhere
    /// (e.g. at a lower resolution and upsampled). On CPU it is added in the
    /// kernel's output pass.
    pub fn forward_pre(&self, x: &Tensor, pre: &Tensor) -> Result<Tensor> {
        self.forward_pre_padded(x, pre, self.op.shape.pad)
    }

    /// [`Self::forward_pre`] with padding chosen per call.
    pub fn forward_pre_padded(&self, x: &Tensor, pre: &Tensor, pad: Padding) -> Result<Tensor> {
        if self.op.on_host && host::is_cpu_f32(x) && host::is_cpu_f32(pre) {
            return self.cpu(&[x], (Some(pre), None), pad);
        }
        let y = (self.linear(x, pad)? + pre)?;
        activate(y, self.op.act)
    }

    /// `act(conv(x) + bias [+ pre]) [+ post]` with padding chosen per
    /// call: both addends output-shaped, `pre` before the activation,
    /// `post` after it (a residual connection around a conv with its own
    /// activation). On CPU both are added in the kernel's output pass.
    pub fn forward_add_padded(
        &self,
        x: &Tensor,
        pre: Option<&Tensor>,
        post: Option<&Tensor>,
        pad: Padding,
    ) -> Result<Tensor> {
        self.forward_parts_padded(&[x], pre, post, pad)
    }

    /// [`Self::forward_add_padded`] over the channel concatenation of
    /// `parts` (NCHW each), which on CPU is never built as a tensor.
    pub fn forward_parts_padded(
        &self,
        parts: &[&Tensor],
        pre: Option<&Tensor>,
        post: Option<&Tensor>,
        pad: Padding,
    ) -> Result<Tensor> {
        let all_cpu = self.op.on_host
            && parts.iter().all(|t| host::is_cpu_f32(t))
            && pre.is_none_or(host::is_cpu_f32)
            && post.is_none_or(host::is_cpu_f32);
        if all_cpu {
            return self.cpu(parts, (pre, post), pad);
        }
        let x = match parts {
            [one] => (*one).clone(),
            _ => Tensor::cat(parts, 1)?,
        };
        let mut y = self.linear(&x, pad)?;
        if let Some(p) = pre {
            y = (y + p)?;
        }
        y = activate(y, self.op.act)?;
        Ok(match post {
            Some(r) => (y + r)?,
            None => y,
        })
    }

    /// This conv, then a 2×2, stride-2 max pool with TF "same" padding
    /// ([`super::pool::max_pool2_same`]). On CPU with the tiled kernel and a
    /// stride-1 conv, in one pass that never writes the full-size output.
    pub fn forward_pool2(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.op.shape;
        if let (Some(packed), true) = (&self.op.packed, host::is_cpu_f32(x)) {
            let (n, c, h, w) = x.dims4()?;
            let (oh, ow) = s.out_hw(h, w);
            if c == s.cin && n == 1 && oh > 0 && ow > 0 {
                let bias = self.op.bias.as_deref();
                let fused = host::with_slices(&[x], |d| {
                    let mut v: Vec<f32> = Vec::with_capacity(s.cout * oh.div_ceil(2) * ow.div_ceil(2));
                    let parts = [d[0]];
                    let args = ConvArgs::new(&parts[..], (h, w), packed, bias, &s, self.op.act);
                    // SAFETY: on `true` every element of the pooled output is written.
                    let done = unsafe { tiled::conv2d_pool2(args, v.as_mut_ptr()) };
                    if !done {
                        return Ok(None);
                    }
                    // SAFETY: conv2d_pool2 wrote all of them.
                    unsafe { v.set_len(v.capacity()) };
                    Ok(Some(Tensor::from_vec(
                        v,
                        (1, s.cout, oh.div_ceil(2), ow.div_ceil(2)),
                        &candle_core::Device::Cpu,
                    )?))
                })?;
                if let Some(t) = fused {
                    return Ok(t);
                }
            }
        }
        super::pool::max_pool2_same(&self.forward(x)?, 2)
    }

    fn cpu(
        &self,
        parts: &[&Tensor],
        (pre, residual): (Option<&Tensor>, Option<&Tensor>),
        pad: Padding,
    ) -> Result<Tensor> {
        let s = ConvShape { pad, ..self.op.shape };
        let (n, h, w) = input_dims(parts, s.cin)?;
        let (oh, ow) = s.out_hw(h, w);
        let per_out = s.cout * oh * ow;
        check_addends((pre, residual), [n, s.cout, oh, ow])?;
        let mut all: Vec<&Tensor> = parts.to_vec();
        all.extend(pre);
        all.extend(residual);
        let bias = self.op.bias.as_deref();
        // The tiled kernel adds `pre` only where it writes its results directly.
        let tiled = self
            .op
            .packed
            .as_ref()
            .filter(|_| pre.is_none() || tiled::writes_directly(&s, (h, w)));
        host::with_slices(&all, |data| {
            let (inputs, extra) = data.split_at(parts.len());
            let (pre_data, res) = extra.split_at(usize::from(pre.is_some()));
            let image = |i: usize| -> Vec<&[f32]> {
                inputs
                    .iter()
                    .map(|d| {
                        let per = d.len() / n.max(1);
                        &d[i * per..(i + 1) * per]
                    })
                    .collect()
            };
            if let Some(packed) = tiled {
                // SAFETY: the tiled kernel writes every output element of every image.
                return unsafe {
                    host::tensor_filled((n, s.cout, oh, ow), |out| {
                        let one = |i: usize, out: *mut f32| {
                            let r = res.first().map(|r| &r[i * per_out..(i + 1) * per_out]);
                            let p = pre_data.first().map(|p| &p[i * per_out..(i + 1) * per_out]);
                            let parts = image(i);
                            let args = ConvArgs::new(&parts[..], (h, w), packed, bias, &s, self.op.act);
                            tiled::conv2d(args, (p, r), out.add(i * per_out));
                        };
                        if n > 1 && per_out * s.cin * s.kh * s.kw < BATCH_PARALLEL_BELOW {
                            // Many small images (MTCNN's crops): one image per
                            // job, each run whole on its thread.
                            let out = tiled::OutPtr(out);
                            (0..n).into_par_iter().for_each(|i| host::serial(|| one(i, out.get())));
                        } else {
                            (0..n).for_each(|i| one(i, out));
                        }
                    })
                };
            }
            let mut out = vec![0f32; n * per_out];
            for (i, o) in out.chunks_mut(per_out.max(1)).enumerate() {
                let parts = image(i);
                let joined;
                let x: &[f32] = match parts.as_slice() {
                    [one] => one,
                    many => {
                        joined = many.concat();
                        &joined
                    }
                };
                // With a pre-activation addend, the activation waits for it.
                let act = if pre.is_some() { Act::None } else { self.op.act };
                let args = ConvArgs::new(x, (h, w), &self.op.weight[..], bias, &s, act);
                if self.op.depthwise {
                    depthwise::depthwise(args, o);
                } else {
                    conv::conv2d(args, o);
                }
                if let Some(p) = pre_data.first() {
                    let act = self.op.act;
                    o.iter_mut()
                        .zip(&p[i * per_out..])
                        .for_each(|(v, p)| *v = act.apply(*v + p));
                }
                if let Some(r) = res.first() {
                    o.iter_mut().zip(&r[i * per_out..]).for_each(|(v, r)| *v += r);
                }
            }
            Ok(Tensor::from_vec(out, (n, s.cout, oh, ow), &candle_core::Device::Cpu)?)
        })
    }

    /// The same layer with candle's own ops (other devices, and tests).
    pub fn reference(&self, x: &Tensor) -> Result<Tensor> {
        self.reference_padded(x, self.op.shape.pad)
    }

    fn reference_padded(&self, x: &Tensor, p: Padding) -> Result<Tensor> {
        activate(self.linear(x, p)?, self.op.act)
    }

    /// The conv plus bias with candle's ops, before the activation.
    fn linear(&self, x: &Tensor, p: Padding) -> Result<Tensor> {
        let x = x
            .pad_with_zeros(2, p.top, p.bottom)?
            .pad_with_zeros(3, p.left, p.right)?;
        let mut y = x.conv2d(&self.weight, 0, self.op.shape.stride, 1, self.groups)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
        }
        Ok(y)
    }

    /// The reference of [`Self::forward_pre`]: candle's conv, plus bias and
    /// `pre`, then the activation.
    pub fn reference_pre(&self, x: &Tensor, pre: &Tensor) -> Result<Tensor> {
        activate((self.linear(x, self.op.shape.pad)? + pre)?, self.op.act)
    }
}

/// The batch, height and width every part of a conv's input shares, checked
/// to add up to the `expected` channels.
fn input_dims(parts: &[&Tensor], expected: usize) -> Result<(usize, usize, usize)> {
    let (n, _, h, w) = parts.first().ok_or_else(|| Error::msg("conv: no input"))?.dims4()?;
    let mut cin = 0;
    for p in parts {
        let (pn, pc, ph, pw) = p.dims4()?;
        if (pn, ph, pw) != (n, h, w) {
            return Err(Error::msg(format!(
                "conv: inputs of different sizes {:?} and {:?}",
                parts[0].dims(),
                p.dims()
            )));
        }
        cin += pc;
    }
    if cin != expected {
        return Err(Error::msg(format!(
            "conv: input has {cin} channels, the layer expects {expected}"
        )));
    }
    Ok((n, h, w))
}

/// Checks that the pre-activation addend and the residual, where given, have
/// the output's shape `out`.
fn check_addends((pre, residual): (Option<&Tensor>, Option<&Tensor>), out: [usize; 4]) -> Result<()> {
    for (what, t) in [("pre-activation addend", pre), ("residual", residual)] {
        if let Some(r) = t {
            if r.dims() != out {
                return Err(Error::msg(format!(
                    "conv: {what} {:?} does not match the output {:?}",
                    r.dims(),
                    out
                )));
            }
        }
    }
    Ok(())
}

/// `act` on a tensor with candle's ops.
fn activate(y: Tensor, act: Act) -> Result<Tensor> {
    Ok(match act {
        Act::None => y,
        Act::Relu => y.relu()?,
        Act::Relu6 => y.clamp(0f32, 6f32)?,
        Act::Leaky(a) => y.maximum(&(&y * a as f64)?)?,
        Act::Silu => candle_nn::ops::silu(&y)?,
        Act::Gelu => y.gelu_erf()?,
    })
}
