//! The values and ops of [`super::executor`]: float tensors on the graph's
//! device, small integer arrays (shapes, indices, paddings) on the host, and
//! the ops that candle has no single call for (TF's bilinear resize, padding
//! with a value, max pooling with SAME padding, TF's average pooling,
//! GatherNd, SparseToDense).

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Largest integer array an op may build (shapes and indices are small).
const MAX_INTS: usize = 1 << 24;

/// A node's output.
#[derive(Clone, Debug)]
pub enum Val {
    F(Tensor),
    I(IntArr),
}

impl Val {
    pub fn float(&self, def: &super::node::NodeDef) -> Result<Tensor> {
        match self {
            Val::F(t) => Ok(t.clone()),
            Val::I(_) => Err(Error::msg(format!("node '{}': expected a float constant", def.name))),
        }
    }

    pub fn as_int(&self) -> Option<&IntArr> {
        match self {
            Val::I(a) => Some(a),
            Val::F(_) => None,
        }
    }

    /// The value as a float tensor in `dtype` on `dev`.
    pub fn as_float(&self, dev: &Device, dtype: DType) -> Result<Tensor> {
        match self {
            Val::F(t) => Ok(t.clone()),
            Val::I(a) => a.to_tensor(dev, dtype),
        }
    }

    /// The value as integers (floats are truncated), flattened.
    pub fn ints(&self) -> Result<Vec<i64>> {
        Ok(self.ints_arr()?.data)
    }

    pub fn ints_arr(&self) -> Result<IntArr> {
        match self {
            Val::I(a) => Ok(a.clone()),
            Val::F(t) => IntArr::from_float_trunc(t),
        }
    }

    pub fn to_f32_tensor(&self, dev: &Device) -> Result<Tensor> {
        Ok(self.as_float(dev, DType::F32)?.to_dtype(DType::F32)?.contiguous()?)
    }
}

/// A small integer tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct IntArr {
    pub data: Vec<i64>,
    pub shape: Vec<usize>,
}

fn checked_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| *n <= MAX_INTS)
        .ok_or_else(|| Error::msg(format!("integer tensor of shape {shape:?} is too large")))
}

impl IntArr {
    pub fn new(data: Vec<i64>, shape: Vec<usize>) -> Result<IntArr> {
        if checked_count(&shape)? != data.len() {
            return Err(Error::msg(format!(
                "{} integers do not fill shape {shape:?}",
                data.len()
            )));
        }
        Ok(IntArr { data, shape })
    }

    pub fn from_tensor(t: &Tensor) -> Result<IntArr> {
        let shape = t.dims().to_vec();
        checked_count(&shape)?;
        let data = t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        IntArr::new(data, shape)
    }

    /// Float → int by truncation toward zero (TF's Cast).
    pub fn from_float_trunc(t: &Tensor) -> Result<IntArr> {
        let shape = t.dims().to_vec();
        checked_count(&shape)?;
        let data = t
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .into_iter()
            .map(|v| if v.is_finite() { v.trunc() as i64 } else { 0 })
            .collect();
        IntArr::new(data, shape)
    }

    pub fn to_tensor(&self, dev: &Device, dtype: DType) -> Result<Tensor> {
        let v: Vec<f32> = self.data.iter().map(|&x| x as f32).collect();
        Ok(Tensor::from_vec(v, self.shape.clone(), dev)?.to_dtype(dtype)?)
    }

    fn strides(&self) -> Vec<usize> {
        let mut s = vec![1usize; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.shape[i + 1];
        }
        s
    }

    pub fn transpose(&self, perm: &[usize]) -> Result<IntArr> {
        let r = self.shape.len();
        let mut seen = vec![false; r];
        if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::msg(format!("perm {perm:?} is not a permutation of rank {r}")));
        }
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let src = self.strides();
        let out = IntArr::new(vec![0; self.data.len()], shape.clone())?;
        let mut data = out.data;
        for (i, d) in data.iter_mut().enumerate() {
            let mut rem = i;
            let mut off = 0;
            for k in (0..r).rev() {
                let c = rem % shape[k].max(1);
                rem /= shape[k].max(1);
                off += c * src[perm[k]];
            }
            *d = self.data[off];
        }
        IntArr::new(data, shape)
    }

    pub fn expand_dims(&self, axis: i64) -> Result<IntArr> {
        let ax = self::axis(axis, self.shape.len() + 1)?;
        let mut shape = self.shape.clone();
        shape.insert(ax, 1);
        IntArr::new(self.data.clone(), shape)
    }

    pub fn squeeze(&self, dims: &[i64]) -> Result<IntArr> {
        let r = self.shape.len();
        let drop: Vec<usize> = if dims.is_empty() {
            (0..r).filter(|&i| self.shape[i] == 1).collect()
        } else {
            dims.iter().map(|&d| axis(d, r)).collect::<Result<_>>()?
        };
        let shape = self
            .shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, d)| *d)
            .collect();
        IntArr::new(self.data.clone(), shape)
    }

    pub fn unpack(&self, axis: i64) -> Result<Vec<IntArr>> {
        let ax = self::axis(axis, self.shape.len())?;
        let mut perm: Vec<usize> = vec![ax];
        perm.extend((0..self.shape.len()).filter(|&i| i != ax));
        let t = self.transpose(&perm)?;
        let n = self.shape[ax];
        let inner: Vec<usize> = t.shape[1..].to_vec();
        let len = checked_count(&inner)?;
        (0..n)
            .map(|i| IntArr::new(t.data[i * len..(i + 1) * len].to_vec(), inner.clone()))
            .collect()
    }

    pub fn stack(parts: &[&IntArr], axis: i64) -> Result<IntArr> {
        let first = parts.first().ok_or_else(|| Error::msg("nothing to stack"))?;
        let expanded: Vec<IntArr> = parts.iter().map(|p| p.expand_dims(axis)).collect::<Result<_>>()?;
        let refs: Vec<&IntArr> = expanded.iter().collect();
        let ax = self::axis(axis, first.shape.len() + 1)?;
        IntArr::concat(&refs, ax as i64)
    }

    pub fn concat(parts: &[&IntArr], axis: i64) -> Result<IntArr> {
        let first = parts.first().ok_or_else(|| Error::msg("nothing to concatenate"))?;
        let r = first.shape.len();
        let ax = self::axis(axis, r)?;
        for p in parts {
            if p.shape.len() != r || (0..r).any(|i| i != ax && p.shape[i] != first.shape[i]) {
                return Err(Error::msg(format!(
                    "cannot concatenate shapes {:?} and {:?} on axis {ax}",
                    first.shape, p.shape
                )));
            }
        }
        let outer: usize = first.shape[..ax].iter().product();
        let mut shape = first.shape.clone();
        shape[ax] = parts.iter().map(|p| p.shape[ax]).sum();
        checked_count(&shape)?;
        let mut data = Vec::new();
        for o in 0..outer {
            for p in parts {
                let inner: usize = p.shape[ax..].iter().product();
                data.extend_from_slice(&p.data[o * inner..(o + 1) * inner]);
            }
        }
        IntArr::new(data, shape)
    }

    pub fn pad(&self, pads: &[i64], value: i64) -> Result<IntArr> {
        let r = self.shape.len();
        if pads.len() != 2 * r || pads.iter().any(|p| *p < 0) {
            return Err(Error::msg(format!("paddings {pads:?} do not fit rank {r}")));
        }
        let shape: Vec<usize> = (0..r)
            .map(|i| self.shape[i] + pads[2 * i] as usize + pads[2 * i + 1] as usize)
            .collect();
        let n = checked_count(&shape)?;
        let mut data = vec![value; n];
        let src = self.strides();
        let dst = IntArr::new(vec![0; n], shape.clone())?.strides();
        for (i, v) in self.data.iter().enumerate() {
            let mut off = 0;
            for k in 0..r {
                off += ((i / src[k]) % self.shape[k].max(1) + pads[2 * k] as usize) * dst[k];
            }
            data[off] = *v;
        }
        IntArr::new(data, shape)
    }
}

/// A negative axis counts from the end.
pub fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r.max(1) {
        return Err(Error::msg(format!("axis {a} is out of range for rank {rank}")));
    }
    Ok(v as usize)
}

/// A Reshape target with at most one -1, for `count` elements.
pub fn resolve_shape(shape: &[i64], count: usize) -> Result<Vec<usize>> {
    let known: i64 = shape.iter().filter(|d| **d >= 0).product();
    let unknown = shape.iter().filter(|d| **d < 0).count();
    let bad = || Error::msg(format!("cannot reshape {count} elements to {shape:?}"));
    let dims: Vec<usize> = match unknown {
        0 => shape.iter().map(|&d| d as usize).collect(),
        1 if known > 0 && count as i64 % known == 0 => shape
            .iter()
            .map(|&d| {
                if d < 0 {
                    (count as i64 / known) as usize
                } else {
                    d as usize
                }
            })
            .collect(),
        _ => return Err(bad()),
    };
    if dims.iter().product::<usize>() != count {
        return Err(bad());
    }
    Ok(dims)
}

#[derive(Debug, Clone, Copy)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Max,
    Min,
    SquaredDiff,
}

impl BinOp {
    fn int(self, a: i64, b: i64) -> i64 {
        match self {
            BinOp::Add => a.wrapping_add(b),
            BinOp::Sub => a.wrapping_sub(b),
            BinOp::Mul => a.wrapping_mul(b),
            BinOp::Div | BinOp::FloorDiv => {
                if b == 0 {
                    0
                } else {
                    let q = a / b;
                    if a % b != 0 && ((a < 0) != (b < 0)) {
                        q - 1
                    } else {
                        q
                    }
                }
            }
            BinOp::Max => a.max(b),
            BinOp::Min => a.min(b),
            BinOp::SquaredDiff => (a - b).wrapping_mul(a - b),
        }
    }
}

/// A binary op with numpy broadcasting; integer when both sides are.
pub fn binary(op: BinOp, a: &Val, b: &Val, dev: &Device, dtype: DType) -> Result<Val> {
    if let (Val::I(x), Val::I(y)) = (a, b) {
        return int_binary(op, x, y).map(Val::I);
    }
    let x = a.as_float(dev, dtype)?;
    let y = b.as_float(dev, dtype)?;
    let out = match op {
        BinOp::Add => x.broadcast_add(&y)?,
        BinOp::Sub => x.broadcast_sub(&y)?,
        BinOp::Mul => x.broadcast_mul(&y)?,
        BinOp::Div => x.broadcast_div(&y)?,
        BinOp::FloorDiv => x.broadcast_div(&y)?.floor()?,
        BinOp::Max => x.broadcast_maximum(&y)?,
        BinOp::Min => x.broadcast_minimum(&y)?,
        BinOp::SquaredDiff => x.broadcast_sub(&y)?.sqr()?,
    };
    Ok(Val::F(out))
}

fn int_binary(op: BinOp, x: &IntArr, y: &IntArr) -> Result<IntArr> {
    if x.shape == y.shape {
        let data = x.data.iter().zip(&y.data).map(|(a, b)| op.int(*a, *b)).collect();
        return IntArr::new(data, x.shape.clone());
    }
    if y.data.len() == 1 {
        let data = x.data.iter().map(|a| op.int(*a, y.data[0])).collect();
        return IntArr::new(data, x.shape.clone());
    }
    if x.data.len() == 1 {
        let data = y.data.iter().map(|b| op.int(x.data[0], *b)).collect();
        return IntArr::new(data, y.shape.clone());
    }
    Err(Error::msg(format!(
        "integer op on shapes {:?} and {:?} is not supported",
        x.shape, y.shape
    )))
}

#[derive(Debug, Clone, Copy)]
pub enum UnOp {
    Relu,
    Relu6,
    Sigmoid,
    Sqrt,
    Exp,
    Tanh,
}

pub fn unary(op: UnOp, x: &Tensor) -> Result<Tensor> {
    Ok(match op {
        UnOp::Relu => x.relu()?,
        UnOp::Relu6 => x.clamp(0f32, 6f32)?,
        UnOp::Sigmoid => candle_nn::ops::sigmoid(x)?,
        UnOp::Sqrt => x.sqrt()?,
        UnOp::Exp => x.exp()?,
        UnOp::Tanh => x.tanh()?,
    })
}

/// Pads every dimension by `pads` (before, after pairs) with `value`.
pub fn pad(x: &Tensor, pads: &[i64], value: f64) -> Result<Tensor> {
    let r = x.rank();
    if pads.len() != 2 * r || pads.iter().any(|p| *p < 0 || *p > 1 << 15) {
        return Err(Error::msg(format!("paddings {pads:?} do not fit rank {r}")));
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 && r > 0 {
        return pad_host(x, pads, value as f32);
    }
    pad_with_ops(x, pads, value)
}

/// [`pad`] with candle's ops (other devices and dtypes).
fn pad_with_ops(x: &Tensor, pads: &[i64], value: f64) -> Result<Tensor> {
    let r = x.rank();
    let mut y = x.clone();
    for d in 0..r {
        let (before, after) = (pads[2 * d] as usize, pads[2 * d + 1] as usize);
        if before == 0 && after == 0 {
            continue;
        }
        if value == 0.0 {
            y = y.pad_with_zeros(d, before, after)?;
            continue;
        }
        let mut parts = Vec::with_capacity(3);
        let mut dims = y.dims().to_vec();
        if before > 0 {
            dims[d] = before;
            parts.push(Tensor::full(value as f32, dims.clone(), y.device())?.to_dtype(y.dtype())?);
        }
        parts.push(y.clone());
        if after > 0 {
            dims[d] = after;
            parts.push(Tensor::full(value as f32, dims.clone(), y.device())?.to_dtype(y.dtype())?);
        }
        y = Tensor::cat(&parts, d)?;
    }
    Ok(y)
}

/// [`pad`] of a CPU f32 tensor: the output filled with `value` once, each
/// row of the last axis copied into place.
fn pad_host(x: &Tensor, pads: &[i64], value: f32) -> Result<Tensor> {
    let dims = x.dims();
    let r = dims.len();
    let out_dims: Vec<usize> = (0..r)
        .map(|d| dims[d] + pads[2 * d] as usize + pads[2 * d + 1] as usize)
        .collect();
    let total = out_dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| *n <= 1 << 28)
        .ok_or_else(|| Error::msg(format!("padding to {out_dims:?} is too large")))?;
    let src: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let mut out = vec![value; total];
    let row = dims[r - 1];
    if row > 0 {
        // Output strides, and each input row's multi-index over the outer axes.
        let mut strides = vec![1usize; r];
        for d in (0..r - 1).rev() {
            strides[d] = strides[d + 1] * out_dims[d + 1];
        }
        let mut idx = vec![0usize; r - 1];
        for chunk in src.chunks_exact(row) {
            let at: usize = (0..r - 1)
                .map(|d| (idx[d] + pads[2 * d] as usize) * strides[d])
                .sum::<usize>()
                + pads[2 * (r - 1)] as usize;
            out[at..at + row].copy_from_slice(chunk);
            for d in (0..r - 1).rev() {
                idx[d] += 1;
                if idx[d] < dims[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Ok(Tensor::from_vec(out, out_dims, x.device())?)
}

/// NHWC max pooling; SAME pads with -inf (TF ignores the padding).
pub fn max_pool(x: &Tensor, k: (usize, usize), s: (usize, usize), same: bool) -> Result<Tensor> {
    let y = max_pool_nchw(&x.permute((0, 3, 1, 2))?, k, s, same)?;
    Ok(y.permute((0, 2, 3, 1))?)
}

/// Max pooling of NCHW planes, TF's window placement.
pub fn max_pool_nchw(x: &Tensor, k: (usize, usize), s: (usize, usize), same: bool) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let mut nchw = x.clone();
    if same {
        let (t, b) = crate::kernels::same_pad(h, k.0, s.0);
        let (l, r) = crate::kernels::same_pad(w, k.1, s.1);
        if t + b + l + r > 0 {
            nchw = pad(
                &nchw,
                &[0, 0, 0, 0, t as i64, b as i64, l as i64, r as i64],
                f64::NEG_INFINITY,
            )?;
        }
    }
    Ok(nchw.contiguous()?.max_pool2d_with_stride(k, s)?)
}

/// A pooling node's window: `ksize`, `strides` and `padding` of an NHWC node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub k: (usize, usize),
    pub stride: (usize, usize),
    pub same: bool,
}

impl Window {
    /// The window of a pooling node (`ksize`/`strides` `[1, h, w, 1]`, SAME or VALID).
    pub fn of(def: &super::node::NodeDef) -> Result<Window> {
        if !matches!(def.attr_str("data_format").as_deref(), None | Some("NHWC")) {
            return Err(def.err("data_format must be NHWC"));
        }
        let (k, s) = (def.attr_ints("ksize"), def.attr_ints("strides"));
        let pair = |v: &[i64]| {
            (v.len() == 4 && v[0] == 1 && v[3] == 1 && v[1] >= 1 && v[2] >= 1).then(|| (v[1] as usize, v[2] as usize))
        };
        let (Some(k), Some(stride)) = (pair(&k), pair(&s)) else {
            return Err(def.err(format!("ksize {k:?} and strides {s:?} must be [1, h, w, 1]")));
        };
        let same = match def.attr_str("padding").as_deref() {
            Some("SAME") => true,
            Some("VALID") | None => false,
            Some(other) => return Err(def.err(format!("padding {other} is not supported"))),
        };
        Ok(Window { k, stride, same })
    }
}

/// NHWC average pooling as TF computes it: VALID windows lie inside the
/// input; SAME pads like a conv and divides each sum by the number of cells
/// inside the input (padding is not counted). Summed in f32 whatever the
/// graph's dtype (a global mean of an f16 map would lose digits).
pub fn avg_pool(x: &Tensor, win: &Window) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let (k, s) = (win.k, win.stride);
    if h == 0 || w == 0 || (!win.same && (k.0 > h || k.1 > w)) {
        return Err(Error::msg(format!(
            "AvgPool window {}x{} does not fit a {h}x{w} input",
            k.0, k.1
        )));
    }
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    if !win.same {
        let y = x32.permute((0, 3, 1, 2))?.contiguous()?.avg_pool2d_with_stride(k, s)?;
        return Ok(y.permute((0, 2, 3, 1))?.contiguous()?.to_dtype(dtype)?);
    }
    let (top, _) = crate::kernels::same_pad(h, k.0, s.0);
    let (left, _) = crate::kernels::same_pad(w, k.1, s.1);
    let (oh, ow) = (h.div_ceil(s.0), w.div_ceil(s.1));
    let src: Vec<f32> = x32.flatten_all()?.to_vec1()?;
    let span = |o: usize, stride: usize, pad: usize, k: usize, n: usize| {
        let start = (o * stride) as i64 - pad as i64;
        (
            start.max(0) as usize,
            ((start + k as i64).min(n as i64)).max(0) as usize,
        )
    };
    let mut out = vec![0f32; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            let (y0, y1) = span(oy, s.0, top, k.0, h);
            for ox in 0..ow {
                let (x0, x1) = span(ox, s.1, left, k.1, w);
                let count = ((y1 - y0) * (x1 - x0)).max(1) as f32;
                let dst = &mut out[((b * oh + oy) * ow + ox) * c..][..c];
                for y in y0..y1 {
                    for xx in x0..x1 {
                        let row = &src[((b * h + y) * w + xx) * c..][..c];
                        dst.iter_mut().zip(row).for_each(|(d, v)| *d += v);
                    }
                }
                dst.iter_mut().for_each(|d| *d /= count);
            }
        }
    }
    Ok(Tensor::from_vec(out, (n, oh, ow, c), x.device())?.to_dtype(dtype)?)
}

/// tfjs-backend-cpu's `resizeBilinear` on NHWC, computed in f64 and stored as f32.
pub fn resize_bilinear(x: &Tensor, oh: usize, ow: usize, align_corners: bool, half_pixel: bool) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    if h == 0 || w == 0 {
        return Err(Error::msg(format!("cannot resize an empty {h}x{w} image")));
    }
    let src: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let ratio = |inp: usize, out: usize| -> f64 {
        if align_corners && out > 1 {
            (inp as f64 - 1.0) / (out as f64 - 1.0)
        } else {
            inp as f64 / out as f64
        }
    };
    let taps = |inp: usize, out: usize| -> Vec<(usize, usize, f64)> {
        let r = ratio(inp, out);
        (0..out)
            .map(|o| {
                let f = if half_pixel {
                    r * (o as f64 + 0.5) - 0.5
                } else {
                    r * o as f64
                };
                let lo = f.floor().max(0.0);
                let frac = f - lo;
                let hi = (f.ceil().max(0.0) as usize).min(inp - 1);
                ((lo as usize).min(inp - 1), hi, frac)
            })
            .collect()
    };
    let ys = taps(h, oh);
    let xs = taps(w, ow);
    let total = n
        .checked_mul(oh)
        .and_then(|v| v.checked_mul(ow))
        .and_then(|v| v.checked_mul(c))
        .filter(|v| *v <= 1 << 28)
        .ok_or_else(|| Error::msg(format!("resize to {oh}x{ow} is too large")))?;
    let mut out = vec![0f32; total];
    let mut o = 0;
    for b in 0..n {
        let base = b * h * w * c;
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                for ch in 0..c {
                    let at = |y: usize, x: usize| src[base + (y * w + x) * c + ch] as f64;
                    let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
                    let bot = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
                    out[o] = (top + (bot - top) * fy) as f32;
                    o += 1;
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (n, oh, ow, c), x.device())?)
}

/// `tf.gatherND(params, indices)`: the last axis of `indices` indexes the
/// leading axes of `params`.
pub fn gather_nd(params: &Val, idx: &IntArr, dev: &Device, dtype: DType) -> Result<Val> {
    let k = *idx
        .shape
        .last()
        .ok_or_else(|| Error::msg("GatherNd indices are a scalar"))?;
    let (shape, data): (Vec<usize>, Vec<f64>) = match params {
        Val::F(t) => (
            t.dims().to_vec(),
            t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
        ),
        Val::I(a) => (a.shape.clone(), a.data.iter().map(|&v| v as f64).collect()),
    };
    if k > shape.len() {
        return Err(Error::msg(format!(
            "GatherNd index depth {k} exceeds params rank {}",
            shape.len()
        )));
    }
    let inner: usize = shape[k..].iter().product();
    let mut strides = vec![inner; k];
    for i in (0..k.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let rows = idx.data.len() / k.max(1);
    let mut out = Vec::with_capacity(rows * inner);
    for r in 0..rows {
        let mut off = 0usize;
        for j in 0..k {
            let v = idx.data[r * k + j];
            if v < 0 || v as usize >= shape[j] {
                return Err(Error::msg(format!(
                    "GatherNd index {v} is out of range for {}",
                    shape[j]
                )));
            }
            off += v as usize * strides[j];
        }
        out.extend_from_slice(&data[off..off + inner]);
    }
    let mut oshape: Vec<usize> = idx.shape[..idx.shape.len() - 1].to_vec();
    oshape.extend_from_slice(&shape[k..]);
    Ok(match params {
        Val::F(_) => {
            Val::F(Tensor::from_vec(out.iter().map(|&v| v as f32).collect::<Vec<_>>(), oshape, dev)?.to_dtype(dtype)?)
        }
        Val::I(_) => Val::I(IntArr::new(out.iter().map(|&v| v as i64).collect(), oshape)?),
    })
}

/// `SparseToDense(indices, output_shape, values, default)`.
pub fn sparse_to_dense(
    idx: &IntArr,
    shape: &[i64],
    values: &Val,
    default: &Val,
    dev: &Device,
    dtype: DType,
) -> Result<Val> {
    let oshape: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| Error::msg(format!("output shape {shape:?} is negative"))))
        .collect::<Result<_>>()?;
    let n = checked_count(&oshape)?;
    let r = oshape.len();
    let rows = if idx.shape.len() <= 1 && r == 1 {
        idx.data.len()
    } else {
        idx.data.len() / r.max(1)
    };
    let depth = if idx.shape.len() <= 1 && r == 1 { 1 } else { r };
    let to_f64 = |v: &Val| -> Result<Vec<f64>> {
        Ok(match v {
            Val::F(t) => t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
            Val::I(a) => a.data.iter().map(|&x| x as f64).collect(),
        })
    };
    let vals = to_f64(values)?;
    let def = to_f64(default)?.first().copied().unwrap_or(0.0);
    let mut out = vec![def; n];
    let dst = IntArr::new(vec![0; n], oshape.clone())?.strides();
    for row in 0..rows {
        let mut off = 0usize;
        for j in 0..depth {
            let v = idx.data[row * depth + j];
            if v < 0 || v as usize >= oshape[j] {
                return Err(Error::msg(format!("SparseToDense index {v} is out of range")));
            }
            off += v as usize * dst[j];
        }
        out[off] = if vals.len() == 1 {
            vals[0]
        } else {
            *vals.get(row).unwrap_or(&def)
        };
    }
    Ok(match values {
        Val::F(_) => {
            Val::F(Tensor::from_vec(out.iter().map(|&v| v as f32).collect::<Vec<_>>(), oshape, dev)?.to_dtype(dtype)?)
        }
        Val::I(_) => Val::I(IntArr::new(out.iter().map(|&v| v as i64).collect(), oshape)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_transpose_and_pad() {
        let a = IntArr::new((0..6).collect(), vec![2, 3]).unwrap();
        let t = a.transpose(&[1, 0]).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.data, vec![0, 3, 1, 4, 2, 5]);
        let p = a.pad(&[1, 0, 0, 1], -1).unwrap();
        assert_eq!(p.shape, vec![3, 4]);
        assert_eq!(p.data, vec![-1, -1, -1, -1, 0, 1, 2, -1, 3, 4, 5, -1]);
    }

    #[test]
    fn host_padding_equals_padding_with_candles_ops() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 5.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4, 5))
            .unwrap();
        for (pads, value) in [
            (vec![0, 0, 1, 2, 0, 3, 1, 0], 0.0),
            (vec![1, 0, 0, 0, 2, 2, 0, 1], f64::NEG_INFINITY),
            (vec![0; 8], 7.5),
        ] {
            let a = pad(&x, &pads, value).unwrap();
            let b = pad_with_ops(&x, &pads, value).unwrap();
            assert_eq!(a.dims(), b.dims());
            let (a, b): (Vec<f32>, Vec<f32>) = (
                a.flatten_all().unwrap().to_vec1().unwrap(),
                b.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(a, b, "{pads:?}");
        }
        let row = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let p: Vec<f32> = pad(&row, &[2, 1], -1.0).unwrap().to_vec1().unwrap();
        assert_eq!(p, [-1.0, -1.0, 1.0, 2.0, -1.0]);
    }

    #[test]
    fn floor_div_rounds_down() {
        assert_eq!(BinOp::FloorDiv.int(7, 2), 3);
        assert_eq!(BinOp::FloorDiv.int(-7, 2), -4);
        assert_eq!(BinOp::FloorDiv.int(7, -2), -4);
    }

    #[test]
    fn legacy_resize_matches_the_formula() {
        // 1x2x2x1 → 4x4 without half-pixel centres: src = dst * 0.5.
        let x = Tensor::from_vec(vec![0f32, 10., 20., 30.], (1, 2, 2, 1), &Device::Cpu).unwrap();
        let y = resize_bilinear(&x, 4, 4, false, false).unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(&v[..4], &[0., 5., 10., 10.]);
        assert_eq!(&v[4..8], &[10., 15., 20., 20.]);
        assert_eq!(&v[12..], &[20., 25., 30., 30.]);
    }

    #[test]
    fn reshape_resolves_one_unknown() {
        assert_eq!(resolve_shape(&[2, -1], 6).unwrap(), vec![2, 3]);
        assert!(resolve_shape(&[4, -1], 6).is_err());
        assert!(resolve_shape(&[-1, -1], 6).is_err());
    }

    /// TF's AvgPool by its definition, cell by cell.
    fn avg_pool_reference(x: &[f32], (h, w, c): (usize, usize, usize), win: &Window) -> (usize, usize, Vec<f32>) {
        let (k, s) = (win.k, win.stride);
        let (oh, ow, top, left) = if win.same {
            let oh = h.div_ceil(s.0);
            let ow = w.div_ceil(s.1);
            let th = ((oh - 1) * s.0 + k.0).saturating_sub(h);
            let tw = ((ow - 1) * s.1 + k.1).saturating_sub(w);
            (oh, ow, (th / 2) as i64, (tw / 2) as i64)
        } else {
            ((h - k.0) / s.0 + 1, (w - k.1) / s.1 + 1, 0, 0)
        };
        let mut out = Vec::new();
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let (mut sum, mut n) = (0f64, 0);
                    for dy in 0..k.0 as i64 {
                        for dx in 0..k.1 as i64 {
                            let y = (oy * s.0) as i64 - top + dy;
                            let xx = (ox * s.1) as i64 - left + dx;
                            if (0..h as i64).contains(&y) && (0..w as i64).contains(&xx) {
                                sum += x[((y as usize) * w + xx as usize) * c + ch] as f64;
                                n += 1;
                            }
                        }
                    }
                    out.push((sum / n as f64) as f32);
                }
            }
        }
        (oh, ow, out)
    }

    #[test]
    fn avg_pool_matches_tf_definition() {
        let (h, w, c) = (7, 9, 3);
        let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let t = Tensor::from_vec(x.clone(), (1, h, w, c), &Device::Cpu).unwrap();
        for same in [false, true] {
            for (k, s) in [((3, 3), (2, 2)), ((2, 3), (1, 2)), ((7, 9), (7, 9)), ((4, 4), (3, 3))] {
                let win = Window { k, stride: s, same };
                let (oh, ow, want) = avg_pool_reference(&x, (h, w, c), &win);
                let y = avg_pool(&t, &win).unwrap();
                assert_eq!(y.dims(), &[1, oh, ow, c], "{win:?}");
                let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
                let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(d < 1e-5, "{win:?}: max diff {d}");
            }
        }
        // SAME at a border divides by the cells inside only: a constant map stays constant.
        let ones = Tensor::ones((1, 5, 5, 2), DType::F32, &Device::Cpu).unwrap();
        let win = Window {
            k: (3, 3),
            stride: (2, 2),
            same: true,
        };
        let v: Vec<f32> = avg_pool(&ones, &win).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| (x - 1.0).abs() < 1e-6), "{v:?}");
        let too_big = Window {
            k: (8, 8),
            stride: (1, 1),
            same: false,
        };
        assert!(avg_pool(&t, &too_big).is_err());
    }
}
