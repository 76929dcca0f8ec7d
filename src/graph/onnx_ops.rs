//! Ops with ONNX semantics (`Onnx*` nodes, written by the ONNX importer
//! where no TF op means the same): Reshape with 0 = "keep", Softmax on any
//! axis, Shape, Gather, Slice with steps, Split into equal or given parts,
//! Resize by scales or sizes, broadcasting MatMul, Unsqueeze, Squeeze and
//! Flatten. Integer values (shape arithmetic) stay [`IntArr`]s on the host.
//!
//! A node's inputs are those the ONNX node had, absent optional ones
//! dropped; its `slots` attribute says which ONNX input each one is.

use candle_core::{DType, Device, Tensor};

use super::node::NodeDef;
use super::ops::{self, IntArr, Val};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub(super) enum OnnxOp {
    Reshape {
        allowzero: bool,
    },
    Softmax {
        axis: i64,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Gather {
        axis: i64,
    },
    Slice,
    Split {
        axis: i64,
        n: usize,
    },
    Resize {
        linear: bool,
        align_corners: bool,
        half_pixel: bool,
    },
    MatMul,
    Unsqueeze,
    Squeeze,
    Flatten {
        axis: i64,
    },
    /// The ops of [`super::onnx_host_ops`].
    Host(super::onnx_host_ops::HostOp),
}

/// An `Onnx*` node: the op and the ONNX input slot of each input.
#[derive(Debug, Clone)]
pub(super) struct OnnxNode {
    op: OnnxOp,
    slots: Vec<i64>,
}

impl OnnxNode {
    pub(super) fn parse(def: &NodeDef) -> Result<OnnxNode> {
        let i = |k: &str, d: i64| def.attr_i(k).unwrap_or(d);
        let op = match def.op.strip_prefix("Onnx").unwrap_or_default() {
            "Reshape" => OnnxOp::Reshape {
                allowzero: i("allowzero", 0) != 0,
            },
            "Softmax" => OnnxOp::Softmax { axis: i("axis", -1) },
            "Shape" => OnnxOp::Shape {
                start: i("start", 0),
                end: def.attr_i("end"),
            },
            "Gather" => OnnxOp::Gather { axis: i("axis", 0) },
            "Slice" => OnnxOp::Slice,
            "Split" => OnnxOp::Split {
                axis: i("axis", 0),
                n: usize::try_from(i("num_outputs", 1))
                    .ok()
                    .filter(|n| (1..=4096).contains(n))
                    .ok_or_else(|| def.err("num_outputs must be 1..4096"))?,
            },
            "Resize" => {
                let mode = def.attr_str("mode").unwrap_or_default();
                let ctm = def.attr_str("coordinate_transformation_mode").unwrap_or_default();
                OnnxOp::Resize {
                    linear: mode == "linear",
                    align_corners: ctm == "align_corners",
                    half_pixel: ctm == "half_pixel" || ctm == "pytorch_half_pixel",
                }
            }
            "MatMul" => OnnxOp::MatMul,
            "Unsqueeze" => OnnxOp::Unsqueeze,
            "Squeeze" => OnnxOp::Squeeze,
            "Flatten" => OnnxOp::Flatten { axis: i("axis", 1) },
            other => match super::onnx_host_ops::HostOp::parse(other, def)? {
                Some(h) => OnnxOp::Host(h),
                None => return Err(def.err(format!("ONNX op '{other}' is not supported by this build"))),
            },
        };
        let mut slots = def.attr_ints("slots");
        if slots.is_empty() {
            slots = (0..def.input.len() as i64).collect();
        }
        Ok(OnnxNode { op, slots })
    }

    /// The value in ONNX input slot `k`, if given.
    fn slot<'v>(&self, a: &[&'v Val], k: i64) -> Option<&'v Val> {
        self.slots.iter().position(|s| *s == k).and_then(|i| a.get(i).copied())
    }

    fn need<'v>(&self, a: &[&'v Val], k: i64) -> Result<&'v Val> {
        self.slot(a, k)
            .ok_or_else(|| Error::msg(format!("input {k} is missing")))
    }

    pub(super) fn exec(&self, a: &[&Val], dev: &Device, dtype: DType) -> Result<Vec<Val>> {
        if let OnnxOp::Host(h) = &self.op {
            return h.exec(&|k| self.slot(a, k), dev, dtype);
        }
        let x = self.need(a, 0)?;
        let one = |v: Val| Ok(vec![v]);
        match &self.op {
            OnnxOp::Host(_) => Err(Error::msg("run above")),
            OnnxOp::Reshape { allowzero } => one(reshape(x, &self.need(a, 1)?.ints()?, *allowzero)?),
            OnnxOp::Softmax { axis } => {
                let t = x.as_float(dev, dtype)?;
                let ax = ops::axis(*axis, t.rank())?;
                one(Val::F(if ax + 1 == t.rank() {
                    candle_nn::ops::softmax_last_dim(&t.contiguous()?)?
                } else {
                    softmax_inner(&t, ax)?
                }))
            }
            OnnxOp::Shape { start, end } => {
                let dims = dims_of(x);
                let r = dims.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
                let d: Vec<i64> = dims[s..e.max(s)].iter().map(|&d| d as i64).collect();
                let n = d.len();
                one(Val::I(IntArr::new(d, vec![n])?))
            }
            OnnxOp::Gather { axis } => one(gather(x, &self.need(a, 1)?.ints_arr()?, *axis)?),
            OnnxOp::Slice => {
                let starts = self.need(a, 1)?.ints()?;
                let ends = self.need(a, 2)?.ints()?;
                let axes = match self.slot(a, 3) {
                    Some(v) => v.ints()?,
                    None => (0..starts.len() as i64).collect(),
                };
                let steps = match self.slot(a, 4) {
                    Some(v) => v.ints()?,
                    None => vec![1; starts.len()],
                };
                if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
                    return Err(Error::msg(format!(
                        "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
                    )));
                }
                let mut v = x.clone();
                for i in 0..starts.len() {
                    let dims = dims_of(&v);
                    let ax = ops::axis(axes[i], dims.len())?;
                    let idx = slice_indices(dims[ax], starts[i], ends[i], steps[i])?;
                    v = take(&v, ax, &idx)?;
                }
                one(v)
            }
            OnnxOp::Split { axis, n } => {
                let dims = dims_of(x);
                let ax = ops::axis(*axis, dims.len())?;
                let dim = dims[ax];
                let sizes: Vec<usize> = match self.slot(a, 1) {
                    Some(s) => s
                        .ints()?
                        .iter()
                        .map(|&v| usize::try_from(v).map_err(|_| Error::msg(format!("split size {v} is negative"))))
                        .collect::<Result<_>>()?,
                    None => {
                        let each = dim.div_ceil(*n);
                        (0..*n).map(|k| each.min(dim.saturating_sub(k * each))).collect()
                    }
                };
                if sizes.iter().sum::<usize>() != dim {
                    return Err(Error::msg(format!("split sizes {sizes:?} do not add up to {dim}")));
                }
                let mut out = Vec::with_capacity(sizes.len());
                let mut start = 0;
                for s in sizes {
                    let idx: Vec<usize> = (start..start + s).collect();
                    out.push(take(x, ax, &idx)?);
                    start += s;
                }
                Ok(out)
            }
            OnnxOp::Resize {
                linear,
                align_corners,
                half_pixel,
            } => {
                let t = x.as_float(dev, dtype)?;
                let (n, c, h, w) = t.dims4()?;
                let (oh, ow) = match (self.slot(a, 3), self.slot(a, 2)) {
                    (Some(sizes), _) => {
                        let s = sizes.ints()?;
                        if s.len() != 4 || s[0] as usize != n || s[1] as usize != c {
                            return Err(Error::msg(format!(
                                "sizes {s:?} must be [N, C, H, W] of {:?}",
                                t.dims()
                            )));
                        }
                        (s[2], s[3])
                    }
                    (None, Some(scales)) => {
                        let s: Vec<f32> = scales.as_float(dev, DType::F32)?.flatten_all()?.to_vec1()?;
                        if s.len() != 4 || s[0] != 1.0 || s[1] != 1.0 {
                            return Err(Error::msg(format!("scales {s:?} must be [1, 1, sh, sw]")));
                        }
                        ((h as f32 * s[2]).floor() as i64, (w as f32 * s[3]).floor() as i64)
                    }
                    (None, None) => return Err(Error::msg("neither scales nor sizes are given")),
                };
                if !(1..=1 << 15).contains(&oh) || !(1..=1 << 15).contains(&ow) {
                    return Err(Error::msg(format!("output size {oh}x{ow} is out of range")));
                }
                let (oh, ow) = (oh as usize, ow as usize);
                bounded(&[n, c, oh, ow])?;
                let y = if *linear {
                    let nhwc = t.permute((0, 2, 3, 1))?.contiguous()?;
                    ops::resize_bilinear(&nhwc, oh, ow, *align_corners, *half_pixel)?
                        .permute((0, 3, 1, 2))?
                        .to_dtype(dtype)?
                } else {
                    t.contiguous()?.upsample_nearest2d(oh, ow)?
                };
                one(Val::F(y))
            }
            OnnxOp::MatMul => {
                let l = x.as_float(dev, dtype)?;
                let r = self.need(a, 1)?.as_float(dev, dtype)?;
                if l.rank() < 2 || r.rank() < 2 {
                    return Err(Error::msg(format!(
                        "MatMul of {:?} and {:?}: 1-D operands are not supported",
                        l.dims(),
                        r.dims()
                    )));
                }
                // The broadcast batch dimensions, then rows × columns.
                let (ld, rd) = (l.dims(), r.dims());
                let batch = ld.len().max(rd.len()) - 2;
                let dim_at = |d: &[usize], i: usize| -> usize {
                    let off = batch + 2 - d.len();
                    if i < off {
                        1
                    } else {
                        d[i - off]
                    }
                };
                let mut out: Vec<usize> = (0..batch).map(|i| dim_at(ld, i).max(dim_at(rd, i))).collect();
                out.extend([ld[ld.len() - 2], rd[rd.len() - 1]]);
                bounded(&out)?;
                one(Val::F(l.contiguous()?.broadcast_matmul(&r.contiguous()?)?))
            }
            OnnxOp::Unsqueeze => {
                let dims = dims_of(x);
                let axes = self.need(a, 1)?.ints()?;
                let rank = dims.len() + axes.len();
                let mut norm: Vec<usize> = axes.iter().map(|&v| ops::axis(v, rank)).collect::<Result<_>>()?;
                norm.sort_unstable();
                norm.dedup();
                if norm.len() != axes.len() {
                    return Err(Error::msg(format!("axes {axes:?} repeat")));
                }
                let mut out = dims.clone();
                for ax in norm {
                    out.insert(ax, 1);
                }
                one(with_dims(x, out)?)
            }
            OnnxOp::Squeeze => {
                let dims = dims_of(x);
                let axes: Vec<usize> = match self.slot(a, 1) {
                    Some(v) => v
                        .ints()?
                        .iter()
                        .map(|&v| ops::axis(v, dims.len()))
                        .collect::<Result<_>>()?,
                    None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
                };
                if let Some(&bad) = axes.iter().find(|&&ax| dims[ax] != 1) {
                    return Err(Error::msg(format!("axis {bad} has size {}, not 1", dims[bad])));
                }
                let out: Vec<usize> = (0..dims.len()).filter(|i| !axes.contains(i)).map(|i| dims[i]).collect();
                one(with_dims(x, out)?)
            }
            OnnxOp::Flatten { axis } => {
                let dims = dims_of(x);
                let r = dims.len() as i64;
                let ax = if *axis < 0 { axis + r } else { *axis };
                if !(0..=r).contains(&ax) {
                    return Err(Error::msg(format!("axis {axis} is out of range for rank {r}")));
                }
                let outer: usize = dims[..ax as usize].iter().product();
                let inner: usize = dims[ax as usize..].iter().product();
                one(with_dims(x, vec![outer, inner])?)
            }
        }
    }
}

/// Softmax over an axis that is not the last: each of the axis' `n`
/// entries is a contiguous run of `inner` values, so the max, the sum and
/// the division sweep whole runs (candle's generic softmax reduces with
/// strided reads, 10x slower on YOLO's DFL head).
fn softmax_inner(t: &Tensor, ax: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let n = dims[ax];
    let inner: usize = dims[ax + 1..].iter().product();
    let mut v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let block = n * inner;
    if block > 0 {
        let mut mx = vec![0f32; inner];
        let mut sum = vec![0f32; inner];
        for blk in v.chunks_exact_mut(block) {
            mx.fill(f32::NEG_INFINITY);
            sum.fill(0.0);
            for run in blk.chunks_exact(inner) {
                for (m, x) in mx.iter_mut().zip(run) {
                    *m = m.max(*x);
                }
            }
            for run in blk.chunks_exact_mut(inner) {
                for ((x, m), s) in run.iter_mut().zip(&mx).zip(sum.iter_mut()) {
                    *x = (*x - m).exp();
                    *s += *x;
                }
            }
            for run in blk.chunks_exact_mut(inner) {
                for (x, s) in run.iter_mut().zip(&sum) {
                    *x /= s;
                }
            }
        }
    }
    Ok(Tensor::from_vec(v, dims, t.device())?.to_dtype(t.dtype())?)
}

/// Most elements an op here may produce (a 4 GiB f32 tensor): a graph's
/// runtime sizes cannot make it allocate without bound.
const MAX_ELEMENTS: usize = 1 << 30;

/// Refuses an output of `dims` larger than [`MAX_ELEMENTS`].
fn bounded(dims: &[usize]) -> Result<()> {
    match dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Error::msg(format!("an output of shape {dims:?} is too large"))),
    }
}

/// A value's dimensions.
fn dims_of(v: &Val) -> Vec<usize> {
    match v {
        Val::F(t) => t.dims().to_vec(),
        Val::I(a) => a.shape.clone(),
    }
}

/// The same elements under new dimensions.
fn with_dims(v: &Val, dims: Vec<usize>) -> Result<Val> {
    Ok(match v {
        Val::F(t) => Val::F(t.reshape(dims)?),
        Val::I(a) => Val::I(IntArr::new(a.data.clone(), dims)?),
    })
}

/// ONNX Reshape: 0 keeps the input's dimension (unless `allowzero`), one -1 is inferred.
fn reshape(x: &Val, shape: &[i64], allowzero: bool) -> Result<Val> {
    let dims = dims_of(x);
    let shape: Vec<i64> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if d == 0 && !allowzero {
                dims.get(i)
                    .map(|&v| v as i64)
                    .ok_or_else(|| Error::msg(format!("shape {shape:?}: 0 at {i} has no input dimension to keep")))
            } else {
                Ok(d)
            }
        })
        .collect::<Result<_>>()?;
    let count = dims.iter().product();
    with_dims(x, ops::resolve_shape(&shape, count)?)
}

/// The indices an ONNX Slice of one axis of size `dim` visits.
fn slice_indices(dim: usize, start: i64, end: i64, step: i64) -> Result<Vec<usize>> {
    if step == 0 {
        return Err(Error::msg("slice step 0"));
    }
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, d), norm(end).clamp(0, d))
    } else {
        (norm(start).clamp(-1, d - 1), norm(end).clamp(-1, d - 1))
    };
    let mut out = Vec::new();
    let mut i = s;
    while (step > 0 && i < e) || (step < 0 && i > e) {
        out.push(i as usize);
        i += step;
    }
    Ok(out)
}

/// The entries at `idx` along `axis` (a gather with 1-D indices).
fn take(v: &Val, axis: usize, idx: &[usize]) -> Result<Val> {
    match v {
        Val::F(t) => {
            let dim = t.dim(axis)?;
            if idx.iter().any(|&i| i >= dim) {
                return Err(Error::msg(format!("index out of range for dimension {dim}")));
            }
            let contiguous_run = idx.windows(2).all(|w| w[1] == w[0] + 1);
            Ok(Val::F(match idx.first() {
                Some(&first) if contiguous_run => t.narrow(axis, first, idx.len())?,
                _ => {
                    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                    let ids = Tensor::from_vec(ids, idx.len(), t.device())?;
                    t.contiguous()?.index_select(&ids, axis)?
                }
            }))
        }
        Val::I(a) => {
            let dim = *a.shape.get(axis).ok_or_else(|| Error::msg("axis out of range"))?;
            if idx.iter().any(|&i| i >= dim) {
                return Err(Error::msg(format!("index out of range for dimension {dim}")));
            }
            let outer: usize = a.shape[..axis].iter().product();
            let inner: usize = a.shape[axis + 1..].iter().product();
            let mut data = Vec::with_capacity(outer * idx.len() * inner);
            for o in 0..outer {
                for &i in idx {
                    let base = (o * dim + i) * inner;
                    data.extend_from_slice(&a.data[base..base + inner]);
                }
            }
            let mut shape = a.shape.clone();
            shape[axis] = idx.len();
            Ok(Val::I(IntArr::new(data, shape)?))
        }
    }
}

/// ONNX Gather: `data` indexed along `axis` by `indices` (negative from the end).
fn gather(data: &Val, indices: &IntArr, axis: i64) -> Result<Val> {
    let dims = dims_of(data);
    let ax = ops::axis(axis, dims.len())?;
    let dim = dims[ax] as i64;
    let idx: Vec<usize> = indices
        .data
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim } else { i };
            usize::try_from(j)
                .ok()
                .filter(|j| (*j as i64) < dim)
                .ok_or_else(|| Error::msg(format!("index {i} is out of range for dimension {dim}")))
        })
        .collect::<Result<_>>()?;
    let taken = take(data, ax, &idx)?;
    let mut out: Vec<usize> = dims[..ax].to_vec();
    out.extend_from_slice(&indices.shape);
    out.extend_from_slice(&dims[ax + 1..]);
    with_dims(&taken, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_indices_follow_onnx_clamping() {
        assert_eq!(slice_indices(5, 1, i64::MAX, 1).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(slice_indices(5, -2, i64::MAX, 1).unwrap(), vec![3, 4]);
        assert_eq!(slice_indices(5, 0, 5, 2).unwrap(), vec![0, 2, 4]);
        assert_eq!(slice_indices(5, -1, i64::MIN, -1).unwrap(), vec![4, 3, 2, 1, 0]);
        assert_eq!(slice_indices(5, 3, 1, 1).unwrap(), Vec::<usize>::new());
        assert!(slice_indices(5, 0, 5, 0).is_err());
    }

    #[test]
    fn gather_on_shapes_drops_a_scalar_axis() {
        let shape = Val::I(IntArr::new(vec![1, 64, 80, 80], vec![4]).unwrap());
        let idx = IntArr::new(vec![-1], vec![]).unwrap();
        let Val::I(got) = gather(&shape, &idx, 0).unwrap() else {
            panic!("ints in, ints out")
        };
        assert_eq!((got.data, got.shape), (vec![80], vec![]));
    }

    #[test]
    fn softmax_on_an_inner_axis_matches_candles() {
        let t = Tensor::arange(0f32, 120.0, &Device::Cpu)
            .and_then(|t| t.reshape((2, 5, 3, 4)))
            .and_then(|t| t.affine(0.37, -3.0))
            .unwrap();
        for ax in [0, 1, 2] {
            let want = candle_nn::ops::softmax(&t, ax).unwrap();
            let got = softmax_inner(&t, ax).unwrap();
            let d = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-6, "axis {ax}");
        }
    }

    #[test]
    fn reshape_zero_keeps_the_input_dimension() {
        let x = Val::F(Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu).unwrap());
        assert_eq!(dims_of(&reshape(&x, &[0, -1], false).unwrap()), vec![2, 12]);
        assert!(reshape(&x, &[0, -1], true).is_err());
    }
}
