//! `FastConv`: a conv layer that runs the kernels here on CPU (as a candle
//! custom op) and candle's own ops on any other device.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use super::{conv, depthwise, tiled, Act, ConvShape, Padding};
use crate::error::{Error, Result};

#[derive(Clone)]
struct Op {
    weight: Arc<Vec<f32>>,
    bias: Option<Arc<Vec<f32>>>,
    /// Panels for the tiled kernel (dense convs, when the CPU can run it).
    packed: Option<Arc<tiled::Packed>>,
    shape: ConvShape,
    depthwise: bool,
    act: Act,
}

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        "modeldock-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("modeldock-conv2d: f32 input expected")
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("modeldock-conv2d: contiguous input expected")
        };
        let x = &data[a..b];
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != self.shape.cin {
            candle_core::bail!(
                "modeldock-conv2d: input has {c} channels, the layer expects {}",
                self.shape.cin
            )
        }
        let (oh, ow) = self.shape.out_hw(h, w);
        let per_out = self.shape.cout * oh * ow;
        let mut out = vec![0f32; n * per_out];
        for i in 0..n {
            let xi = &x[i * c * h * w..(i + 1) * c * h * w];
            let oi = &mut out[i * per_out..(i + 1) * per_out];
            let bias = self.bias.as_deref().map(|b| b.as_slice());
            if self.depthwise {
                depthwise::depthwise(xi, (h, w), &self.weight, bias, &self.shape, self.act, oi);
            } else if let Some(packed) = &self.packed {
                tiled::conv2d(xi, (h, w), packed, bias, &self.shape, self.act, oi);
            } else {
                conv::conv2d(xi, (h, w), &self.weight, bias, &self.shape, self.act, oi);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, self.shape.cout, oh, ow))))
    }
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
        let flat: Vec<f32> = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let b = match &bias {
            Some(b) => Some(Arc::new(b.to_dtype(DType::F32)?.to_vec1::<f32>()?)),
            None => None,
        };
        let packed =
            (!depthwise && tiled::available()).then(|| Arc::new(tiled::Packed::new(&flat, cout, cin_g * kh * kw)));
        Ok(FastConv {
            op: Op {
                packed,
                weight: Arc::new(flat),
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

    /// True when this layer runs the tiled kernel ([`tiled`]) on CPU.
    pub fn is_tiled(&self) -> bool {
        self.op.packed.is_some()
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
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let mut op = self.op.clone();
            op.shape.pad = pad;
            Ok(x.contiguous()?.apply_op1_no_bwd(&op)?)
        } else {
            self.reference_padded(x, pad)
        }
    }

    /// The same layer with candle's own ops (other devices, and tests).
    pub fn reference(&self, x: &Tensor) -> Result<Tensor> {
        self.reference_padded(x, self.op.shape.pad)
    }

    fn reference_padded(&self, x: &Tensor, p: Padding) -> Result<Tensor> {
        let x = x
            .pad_with_zeros(2, p.top, p.bottom)?
            .pad_with_zeros(3, p.left, p.right)?;
        let mut y = x.conv2d(&self.weight, 0, self.op.shape.stride, 1, self.groups)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
        }
        Ok(match self.op.act {
            Act::None => y,
            Act::Relu => y.relu()?,
            Act::Leaky(a) => y.maximum(&(&y * a as f64)?)?,
            Act::Silu => candle_nn::ops::silu(&y)?,
        })
    }
}
