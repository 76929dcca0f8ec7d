//! Planar values and the ops that keep them planar.
//!
//! A [`Slot`] holds a node's output: a [`Val`] as the graph means it, or a
//! planar tensor ([`Slot::P`]): a 4-D value the graph sees as NHWC, stored
//! as contiguous NCHW, as the conv kernels read and write it. Convs give
//! planar values, and the ops here (per-channel arithmetic, activations,
//! pooling, channel concatenation, padding, global means, relabelling
//! transposes) keep them planar, so a chain of them never transposes.
//!
//! Each function answers `None` when its inputs are not in a form it handles
//! (then the executor runs the op on the NHWC view, as for any op), so every
//! rule here is an optimisation with the op's NHWC meaning unchanged.

use std::borrow::Cow;

use candle_core::{DType, Device, Tensor};

use super::ops::{self, BinOp, Val};
use crate::error::{Error, Result};

/// A node's output as the executor keeps it.
#[derive(Clone, Debug)]
pub enum Slot {
    V(Val),
    /// `[n, c, h, w]`, contiguous; the graph's value is its NHWC view.
    P(Tensor),
}

impl Slot {
    /// The value as the graph means it: planar values as their NHWC view
    /// (no copy), the others borrowed.
    pub fn view(&self) -> Result<Cow<'_, Val>> {
        Ok(match self {
            Slot::V(v) => Cow::Borrowed(v),
            Slot::P(t) => Cow::Owned(Val::F(t.permute((0, 2, 3, 1))?)),
        })
    }

    /// A 4-D value as contiguous NCHW (a copy unless it is planar already).
    pub fn planar(&self, dev: &Device, dtype: DType) -> Result<Tensor> {
        match self {
            Slot::P(t) => Ok(t.contiguous()?),
            Slot::V(v) => {
                let t = v.as_float(dev, dtype)?;
                if t.rank() != 4 {
                    return Err(Error::msg(format!("expected a 4-D tensor, got shape {:?}", t.dims())));
                }
                Ok(t.permute((0, 3, 1, 2))?.contiguous()?)
            }
        }
    }

    /// The height and width of a 4-D float value.
    pub fn hw(&self) -> Option<(usize, usize)> {
        match self {
            Slot::P(t) => t.dims4().ok().map(|(_, _, h, w)| (h, w)),
            Slot::V(Val::F(t)) => t.dims4().ok().map(|(_, h, w, _)| (h, w)),
            Slot::V(Val::I(_)) => None,
        }
    }

    /// The value's float tensor as the graph means it.
    pub fn as_float(&self, dev: &Device, dtype: DType) -> Result<Tensor> {
        self.view()?.as_float(dev, dtype)
    }
}

/// NHWC axis `a` of a 4-D value as the NCHW axis it is stored on.
const NHWC_TO_NCHW: [usize; 4] = [0, 2, 3, 1];

/// A binary op with a planar side: planar with planar of the same shape,
/// or planar with a scalar or a per-channel vector (NHWC shapes `[C]`,
/// `[1, C]`, `[1, 1, C]`, `[1, 1, 1, C]`).
pub fn binary(op: BinOp, a: &Slot, b: &Slot, dev: &Device, dtype: DType) -> Result<Option<Slot>> {
    let (x, y) = match (a, b) {
        (Slot::P(x), Slot::P(y)) if x.dims() == y.dims() => (x.clone(), y.clone()),
        (Slot::P(x), Slot::V(other)) => match per_channel(other, x, dev, dtype)? {
            Some(y) => (x.clone(), y),
            None => return Ok(None),
        },
        (Slot::V(other), Slot::P(y)) => match per_channel(other, y, dev, dtype)? {
            Some(x) => (x, y.clone()),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    match ops::binary(op, &Val::F(x), &Val::F(y), dev, dtype)? {
        Val::F(t) => Ok(Some(Slot::P(t))),
        Val::I(_) => Err(Error::msg("a float op gave integers")),
    }
}

/// `v` shaped to broadcast against the planar `x` ([n, c, h, w]): a scalar
/// as [1, 1, 1, 1], a vector over the channels as [1, c, 1, 1].
fn per_channel(v: &Val, x: &Tensor, dev: &Device, dtype: DType) -> Result<Option<Tensor>> {
    let t = v.as_float(dev, dtype)?;
    let c = x.dim(1)?;
    let n = t.elem_count();
    let channels_last = t.rank() <= 4 && t.dims().last() == Some(&c) && n == c;
    Ok(if n == 1 {
        Some(t.reshape((1, 1, 1, 1))?)
    } else if channels_last {
        Some(t.reshape((1, c, 1, 1))?)
    } else {
        None
    })
}

/// Transposes that only relabel the storage: a planar value to NCHW is its
/// own tensor, and a contiguous NCHW tensor to NHWC is planar already.
pub fn transpose(x: &Slot, perm: &[i64]) -> Option<Slot> {
    match (x, perm) {
        (Slot::P(t), [0, 3, 1, 2]) => Some(Slot::V(Val::F(t.clone()))),
        (Slot::V(Val::F(t)), [0, 2, 3, 1]) if t.rank() == 4 && t.is_contiguous() => Some(Slot::P(t.clone())),
        _ => None,
    }
}

/// ConcatV2 along the channels (NHWC axis 3) of 4-D parts, one of them
/// planar at least: the planes joined, no transposes.
pub fn concat(parts: &[&Slot], axis: i64, dev: &Device, dtype: DType) -> Result<Option<Slot>> {
    let any_planar = parts.iter().any(|v| matches!(v, Slot::P(_)));
    let four_d = parts.iter().all(|v| match v {
        Slot::P(_) => true,
        Slot::V(Val::F(t)) => t.rank() == 4,
        Slot::V(Val::I(_)) => false,
    });
    if !any_planar || !four_d || !(axis == 3 || axis == -1) {
        return Ok(None);
    }
    let planes: Vec<Tensor> = parts.iter().map(|v| v.planar(dev, dtype)).collect::<Result<_>>()?;
    Ok(Some(Slot::P(Tensor::cat(&planes, 1)?)))
}

/// Mean over NHWC axes 1 and 2 (a global average pool) of a planar value.
pub fn mean(x: &Slot, axes: &[i64], keep_dims: bool) -> Result<Option<Slot>> {
    let Slot::P(t) = x else { return Ok(None) };
    let mut ax: Vec<usize> = axes.iter().map(|&a| ops::axis(a, 4)).collect::<Result<_>>()?;
    ax.sort_unstable();
    ax.dedup();
    if ax != [1, 2] {
        return Ok(None);
    }
    let (n, c, _, _) = t.dims4()?;
    let y = t.mean_keepdim((2, 3))?;
    Ok(Some(if keep_dims {
        Slot::P(y)
    } else {
        Slot::V(Val::F(y.reshape((n, c))?))
    }))
}

/// Pad of a planar value: the NHWC paddings applied to the NCHW planes.
pub fn pad(x: &Slot, pads: &[i64], value: f64) -> Result<Option<Slot>> {
    let Slot::P(t) = x else { return Ok(None) };
    if pads.len() != 8 {
        return Ok(None);
    }
    let mut nchw = [0i64; 8];
    for (nhwc_axis, &axis) in NHWC_TO_NCHW.iter().enumerate() {
        nchw[2 * axis] = pads[2 * nhwc_axis];
        nchw[2 * axis + 1] = pads[2 * nhwc_axis + 1];
    }
    Ok(Some(Slot::P(ops::pad(t, &nchw, value)?)))
}

/// AvgPool with VALID windows inside a planar value, planar out (summed in
/// f32, as [`ops::avg_pool`]).
pub fn avg_pool(x: &Slot, win: &ops::Window) -> Result<Option<Slot>> {
    let Slot::P(t) = x else { return Ok(None) };
    let (_, _, h, w) = t.dims4()?;
    if win.same || win.k.0 > h || win.k.1 > w || h == 0 || w == 0 {
        return Ok(None);
    }
    let y = t.to_dtype(DType::F32)?.avg_pool2d_with_stride(win.k, win.stride)?;
    Ok(Some(Slot::P(y.to_dtype(t.dtype())?)))
}

/// MaxPool of a planar value, planar out.
pub fn max_pool(x: &Slot, k: (usize, usize), s: (usize, usize), same: bool) -> Result<Option<Slot>> {
    let Slot::P(t) = x else { return Ok(None) };
    Ok(Some(Slot::P(ops::max_pool_nchw(t, k, s, same)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nhwc(seed: u32, dims: (usize, usize, usize, usize)) -> Tensor {
        let n = dims.0 * dims.1 * dims.2 * dims.3;
        let v: Vec<f32> = (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed)) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    fn planar_of(t: &Tensor) -> Slot {
        Slot::P(t.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap())
    }

    fn f(t: Tensor) -> Slot {
        Slot::V(Val::F(t))
    }

    fn same(a: &Slot, b: &Tensor) {
        let a = a.as_float(&Device::Cpu, DType::F32).unwrap();
        assert_eq!(a.dims(), b.dims());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn planar_ops_mean_what_the_nhwc_ops_mean() {
        let (dev, dt) = (Device::Cpu, DType::F32);
        let x = nhwc(1, (1, 5, 6, 3));
        let y = nhwc(2, (1, 5, 6, 3));
        let bias = Tensor::new(&[0.5f32, -1.0, 2.0], &dev).unwrap();
        let got = binary(BinOp::Mul, &planar_of(&x), &f(bias.clone()), &dev, dt)
            .unwrap()
            .unwrap();
        same(&got, &x.broadcast_mul(&bias).unwrap());
        let got = binary(BinOp::Sub, &planar_of(&x), &planar_of(&y), &dev, dt)
            .unwrap()
            .unwrap();
        same(&got, &(&x - &y).unwrap());
        // A [W, C]-shaped operand is not per channel: left to the NHWC op.
        let wc = f(nhwc(3, (1, 1, 6, 3)).reshape((6, 3)).unwrap());
        assert!(binary(BinOp::Add, &planar_of(&x), &wc, &dev, dt).unwrap().is_none());

        let cat = concat(&[&planar_of(&x), &f(y.clone())], -1, &dev, dt).unwrap().unwrap();
        same(&cat, &Tensor::cat(&[&x, &y], 3).unwrap());
        let m = mean(&planar_of(&x), &[1, 2], true).unwrap().unwrap();
        same(&m, &x.mean_keepdim((1, 2)).unwrap());
        let m = mean(&planar_of(&x), &[2, -3], false).unwrap().unwrap();
        same(&m, &x.mean_keepdim((1, 2)).unwrap().reshape((1, 3)).unwrap());
        let pads = [0, 0, 1, 2, 0, 3, 0, 0];
        let p = pad(&planar_of(&x), &pads, 0.25).unwrap().unwrap();
        same(&p, &ops::pad(&x, &pads, 0.25).unwrap());
        let win = ops::Window {
            k: (2, 3),
            stride: (2, 3),
            same: false,
        };
        let ap = avg_pool(&planar_of(&x), &win).unwrap().unwrap();
        same(&ap, &ops::avg_pool(&x, &win).unwrap());
        let mp = max_pool(&planar_of(&x), (3, 3), (2, 2), true).unwrap().unwrap();
        same(&mp, &ops::max_pool(&x, (3, 3), (2, 2), true).unwrap());
        let t = transpose(&planar_of(&x), &[0, 3, 1, 2]).unwrap();
        same(&t, &x.permute((0, 3, 1, 2)).unwrap());
        let back = transpose(&t, &[0, 2, 3, 1]).unwrap();
        assert!(matches!(back, Slot::P(_)));
        same(&back, &x);
    }
}
