//! More ONNX ops (`Onnx*` nodes), those transformer and DETR-style graphs
//! use: broadcasting math and logic (Pow, Mod, Equal, Less, Greater, And,
//! Or, Xor, Not, Where), unary math (Log, Sin, Cos, Erf, Reciprocal, Neg,
//! Abs, Floor, Ceil), ConstantOfShape, Range, Expand, Tile, TopK,
//! GatherElements, ReduceSum/Max/Min/Mean, Pad, LayerNormalization, Gemm
//! and GridSample.
//!
//! Most run on the host over flat arrays (integers stay [`IntArr`]s,
//! booleans are integers 0 and 1); LayerNormalization and Gemm run on
//! candle's ops. Every output is bounded in size before it is allocated.

use candle_core::{DType, Device, Tensor};

use super::node::NodeDef;
use super::ops::{self, IntArr, Val};
use crate::error::{Error, Result};

/// The most elements an output of these ops may have.
const MAX_ELEMENTS: usize = 1 << 26;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Math2 {
    Pow,
    Mod { fmod: bool },
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Math1 {
    Log,
    Sin,
    Cos,
    Erf,
    Reciprocal,
    Neg,
    Abs,
    Floor,
    Ceil,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Reduce {
    Sum,
    Max,
    Min,
    Mean,
}

#[derive(Debug, Clone)]
pub(super) enum HostOp {
    Math2(Math2),
    Math1(Math1),
    Where,
    ConstantOfShape,
    Range,
    Expand,
    Tile,
    TopK {
        axis: i64,
        largest: bool,
    },
    GatherElements {
        axis: i64,
    },
    Reduce {
        op: Reduce,
        keepdims: bool,
        noop_empty: bool,
    },
    Pad,
    LayerNorm {
        axis: i64,
        epsilon: f64,
    },
    Gemm {
        alpha: f64,
        beta: f64,
        ta: bool,
        tb: bool,
    },
    GridSample {
        nearest: bool,
        border: bool,
        align_corners: bool,
    },
}

impl HostOp {
    /// The op of an `Onnx<op>` node, or `None` when it is not one of these.
    pub(super) fn parse(op: &str, def: &NodeDef) -> Result<Option<HostOp>> {
        let i = |k: &str, d: i64| def.attr_i(k).unwrap_or(d);
        let m2 = |m| Some(HostOp::Math2(m));
        let m1 = |m| Some(HostOp::Math1(m));
        let reduce = |op| {
            Some(HostOp::Reduce {
                op,
                keepdims: i("keepdims", 1) != 0,
                noop_empty: i("noop_with_empty_axes", 0) != 0,
            })
        };
        Ok(match op {
            "Pow" => m2(Math2::Pow),
            "Mod" => m2(Math2::Mod {
                fmod: i("fmod", 0) != 0,
            }),
            "Equal" => m2(Math2::Equal),
            "Less" => m2(Math2::Less),
            "LessOrEqual" => m2(Math2::LessOrEqual),
            "Greater" => m2(Math2::Greater),
            "GreaterOrEqual" => m2(Math2::GreaterOrEqual),
            "And" => m2(Math2::And),
            "Or" => m2(Math2::Or),
            "Xor" => m2(Math2::Xor),
            "Log" => m1(Math1::Log),
            "Sin" => m1(Math1::Sin),
            "Cos" => m1(Math1::Cos),
            "Erf" => m1(Math1::Erf),
            "Reciprocal" => m1(Math1::Reciprocal),
            "Neg" => m1(Math1::Neg),
            "Abs" => m1(Math1::Abs),
            "Floor" => m1(Math1::Floor),
            "Ceil" => m1(Math1::Ceil),
            "Not" => m1(Math1::Not),
            "Where" => Some(HostOp::Where),
            "ConstantOfShape" => Some(HostOp::ConstantOfShape),
            "Range" => Some(HostOp::Range),
            "Expand" => Some(HostOp::Expand),
            "Tile" => Some(HostOp::Tile),
            // `sorted = 0` allows any order; sorted is one of them.
            "TopK" => Some(HostOp::TopK {
                axis: i("axis", -1),
                largest: i("largest", 1) != 0,
            }),
            "GatherElements" => Some(HostOp::GatherElements { axis: i("axis", 0) }),
            "ReduceSum" => reduce(Reduce::Sum),
            "ReduceMax" => reduce(Reduce::Max),
            "ReduceMin" => reduce(Reduce::Min),
            "ReduceMean" => reduce(Reduce::Mean),
            "Pad" => {
                let mode = def.attr_str("mode").unwrap_or_else(|| "constant".into());
                if mode != "constant" {
                    return Err(def.err(format!("Pad mode '{mode}' is not supported (constant is)")));
                }
                Some(HostOp::Pad)
            }
            "LayerNormalization" => Some(HostOp::LayerNorm {
                axis: i("axis", -1),
                epsilon: def.attr_f("epsilon").unwrap_or(1e-5),
            }),
            "Gemm" => Some(HostOp::Gemm {
                alpha: def.attr_f("alpha").unwrap_or(1.0),
                beta: def.attr_f("beta").unwrap_or(1.0),
                ta: i("transA", 0) != 0,
                tb: i("transB", 0) != 0,
            }),
            "GridSample" => {
                let mode = def.attr_str("mode").unwrap_or_else(|| "bilinear".into());
                let pad = def.attr_str("padding_mode").unwrap_or_else(|| "zeros".into());
                let nearest = match mode.as_str() {
                    "bilinear" | "linear" => false,
                    "nearest" => true,
                    other => return Err(def.err(format!("GridSample mode '{other}' is not supported"))),
                };
                let border = match pad.as_str() {
                    "zeros" => false,
                    "border" => true,
                    other => {
                        return Err(def.err(format!(
                            "GridSample padding_mode '{other}' is not supported (zeros and border are)"
                        )))
                    }
                };
                Some(HostOp::GridSample {
                    nearest,
                    border,
                    align_corners: i("align_corners", 0) != 0,
                })
            }
            _ => None,
        })
    }

    /// Runs the op; `slot(k)` is ONNX input `k` when given.
    pub(super) fn exec<'v>(
        &self,
        slot: &dyn Fn(i64) -> Option<&'v Val>,
        dev: &Device,
        dtype: DType,
    ) -> Result<Vec<Val>> {
        let need = |k: i64| slot(k).ok_or_else(|| Error::msg(format!("input {k} is missing")));
        let one = |v: Val| Ok(vec![v]);
        match self {
            HostOp::Math2(m) => one(math2(*m, need(0)?, need(1)?, dev, dtype)?),
            HostOp::Math1(m) => one(math1(*m, need(0)?, dev, dtype)?),
            HostOp::Where => one(where_(need(0)?, need(1)?, need(2)?, dev, dtype)?),
            HostOp::ConstantOfShape => {
                let shape = to_usizes(&need(0)?.ints()?)?;
                let n = count(&shape)?;
                match slot(1) {
                    Some(Val::I(v)) => one(Val::I(IntArr::new(
                        vec![v.data.first().copied().unwrap_or(0); n],
                        shape,
                    )?)),
                    Some(Val::F(t)) => {
                        let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                        one(float(vec![v.first().copied().unwrap_or(0.0); n], shape, dev, dtype)?)
                    }
                    None => one(float(vec![0.0; n], shape, dev, dtype)?),
                }
            }
            HostOp::Range => one(range(need(0)?, need(1)?, need(2)?, dev, dtype)?),
            HostOp::Expand => {
                let x = Host::of(need(0)?)?;
                let target = to_usizes(&need(1)?.ints()?)?;
                let out = broadcast(&[&x.shape, &target])?;
                let idx = indices(&out, &x.shape)?;
                one(x.take(&idx, out, dev, dtype)?)
            }
            HostOp::Tile => {
                let x = Host::of(need(0)?)?;
                let reps = to_usizes(&need(1)?.ints()?)?;
                if reps.len() != x.shape.len() {
                    return Err(Error::msg(format!("repeats {reps:?} do not fit shape {:?}", x.shape)));
                }
                let out: Vec<usize> = x.shape.iter().zip(&reps).map(|(d, r)| d * r).collect();
                count(&out)?;
                let idx = map_index(&out, |o| o.iter().zip(&x.shape).map(|(i, d)| i % d).collect(), &x.shape);
                one(x.take(&idx, out, dev, dtype)?)
            }
            HostOp::TopK { axis, largest } => topk(need(0)?, need(1)?, *axis, *largest, dev, dtype),
            HostOp::GatherElements { axis } => {
                let x = Host::of(need(0)?)?;
                let ind = need(1)?.ints_arr()?;
                let ax = ops::axis(*axis, x.shape.len())?;
                if ind.shape.len() != x.shape.len() {
                    return Err(Error::msg(format!(
                        "indices of shape {:?} for data of shape {:?}",
                        ind.shape, x.shape
                    )));
                }
                let d = x.shape[ax] as i64;
                let mut bad = None;
                let idx = map_index(
                    &ind.shape.clone(),
                    |o| {
                        let mut at = o.to_vec();
                        let flat = flat_of(o, &ind.shape);
                        let v = ind.data[flat];
                        let v = if v < 0 { v + d } else { v };
                        if !(0..d).contains(&v) {
                            bad = Some(ind.data[flat]);
                        }
                        at[ax] = v.clamp(0, (d - 1).max(0)) as usize;
                        at
                    },
                    &x.shape,
                );
                if let Some(v) = bad {
                    return Err(Error::msg(format!("index {v} is out of range for axis size {d}")));
                }
                one(x.take(&idx, ind.shape.clone(), dev, dtype)?)
            }
            HostOp::Reduce {
                op,
                keepdims,
                noop_empty,
            } => {
                let axes = match slot(1) {
                    Some(v) => v.ints()?,
                    None => Vec::new(),
                };
                if let (Val::F(t), false) = (need(0)?, axes.is_empty() && *noop_empty) {
                    return one(Val::F(reduce_float(t, *op, &axes, *keepdims)?));
                }
                let x = Host::of(need(0)?)?;
                one(reduce(&x, *op, &axes, *keepdims, *noop_empty, dev, dtype)?)
            }
            HostOp::Pad => {
                let x = need(0)?;
                let pads = need(1)?.ints()?;
                let r = dims_of(x).len();
                if slot(3).is_some() {
                    return Err(Error::msg("Pad with 'axes' is not supported"));
                }
                if pads.len() != 2 * r {
                    return Err(Error::msg(format!("pads {pads:?} do not fit rank {r}")));
                }
                // ONNX: all begins, then all ends; ours: (begin, end) pairs.
                let pairs: Vec<i64> = (0..r).flat_map(|d| [pads[d], pads[d + r]]).collect();
                match (x, slot(2)) {
                    (Val::I(a), v) => {
                        let value = match v {
                            Some(v) => v.ints()?.first().copied().unwrap_or(0),
                            None => 0,
                        };
                        one(Val::I(a.pad(&pairs, value)?))
                    }
                    (Val::F(t), v) => {
                        let value = match v {
                            Some(Val::F(c)) => c
                                .flatten_all()?
                                .to_dtype(DType::F32)?
                                .to_vec1::<f32>()?
                                .first()
                                .copied(),
                            Some(Val::I(c)) => c.data.first().map(|v| *v as f32),
                            None => None,
                        };
                        let mut out: Vec<usize> = t.dims().to_vec();
                        for (d, o) in out.iter_mut().enumerate() {
                            *o += (pairs[2 * d].max(0) + pairs[2 * d + 1].max(0)) as usize;
                        }
                        count(&out)?;
                        if pairs.iter().any(|p| *p < 0) {
                            return Err(Error::msg(format!("negative pads {pads:?} are not supported")));
                        }
                        one(Val::F(ops::pad(t, &pairs, value.unwrap_or(0.0) as f64)?))
                    }
                }
            }
            HostOp::LayerNorm { axis, epsilon } => {
                let x = need(0)?.as_float(dev, dtype)?;
                let scale = need(1)?.as_float(dev, dtype)?;
                let ax = ops::axis(*axis, x.rank())?;
                let dims = x.dims().to_vec();
                let outer: usize = dims[..ax].iter().product();
                let inner: usize = dims[ax..].iter().product();
                let flat = x.to_dtype(DType::F32)?.reshape((outer, inner))?;
                let mean = flat.mean_keepdim(1)?;
                let centred = flat.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(1)?;
                let norm = centred.broadcast_div(&(var + *epsilon)?.sqrt()?)?;
                let mut y = norm
                    .reshape(dims.as_slice())?
                    .to_dtype(x.dtype())?
                    .broadcast_mul(&scale)?;
                if let Some(b) = slot(2) {
                    y = y.broadcast_add(&b.as_float(dev, dtype)?)?;
                }
                one(Val::F(y))
            }
            HostOp::Gemm { alpha, beta, ta, tb } => {
                let mut a = need(0)?.as_float(dev, dtype)?;
                let mut b = need(1)?.as_float(dev, dtype)?;
                if a.rank() != 2 || b.rank() != 2 {
                    return Err(Error::msg(format!(
                        "Gemm of {:?} and {:?}: both must be 2-D",
                        a.dims(),
                        b.dims()
                    )));
                }
                if *ta {
                    a = a.t()?;
                }
                if *tb {
                    b = b.t()?;
                }
                let mut y = a.contiguous()?.matmul(&b.contiguous()?)?;
                if *alpha != 1.0 {
                    y = (y * *alpha)?;
                }
                if let Some(c) = slot(2) {
                    let c = c.as_float(dev, dtype)?;
                    y = y.broadcast_add(&(if *beta != 1.0 { (c * *beta)? } else { c }))?;
                }
                one(Val::F(y))
            }
            HostOp::GridSample {
                nearest,
                border,
                align_corners,
            } => {
                let x = need(0)?.as_float(dev, dtype)?;
                let g = need(1)?.as_float(dev, dtype)?;
                let y = grid_sample(&x, &g, *nearest, *border, *align_corners)?;
                one(Val::F(y.to_device(dev)?.to_dtype(dtype)?))
            }
        }
    }
}

/// A value on the host: shape and flat data.
struct Host {
    shape: Vec<usize>,
    data: HostData,
}

enum HostData {
    F(Vec<f32>),
    I(Vec<i64>),
}

impl Host {
    fn of(v: &Val) -> Result<Host> {
        Ok(match v {
            Val::I(a) => Host {
                shape: a.shape.clone(),
                data: HostData::I(a.data.clone()),
            },
            Val::F(t) => Host {
                shape: t.dims().to_vec(),
                data: HostData::F(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            },
        })
    }

    /// The elements at flat indices `idx`, as a value of shape `shape`.
    fn take(&self, idx: &[usize], shape: Vec<usize>, dev: &Device, dtype: DType) -> Result<Val> {
        match &self.data {
            HostData::I(d) => Ok(Val::I(IntArr::new(idx.iter().map(|&i| d[i]).collect(), shape)?)),
            HostData::F(d) => float(idx.iter().map(|&i| d[i]).collect(), shape, dev, dtype),
        }
    }

    fn f64_at(&self, i: usize) -> f64 {
        match &self.data {
            HostData::I(d) => d[i] as f64,
            HostData::F(d) => d[i] as f64,
        }
    }

    fn is_int(&self) -> bool {
        matches!(self.data, HostData::I(_))
    }
}

fn float(data: Vec<f32>, shape: Vec<usize>, dev: &Device, dtype: DType) -> Result<Val> {
    Ok(Val::F(
        Tensor::from_vec(data, shape, &Device::Cpu)?
            .to_device(dev)?
            .to_dtype(dtype)?,
    ))
}

fn dims_of(v: &Val) -> Vec<usize> {
    match v {
        Val::F(t) => t.dims().to_vec(),
        Val::I(a) => a.shape.clone(),
    }
}

fn count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| *n <= MAX_ELEMENTS)
        .ok_or_else(|| Error::msg(format!("an output of shape {shape:?} is too large")))
}

fn to_usizes(v: &[i64]) -> Result<Vec<usize>> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| Error::msg(format!("shape {v:?} has a negative size"))))
        .collect()
}

/// The numpy broadcast of `shapes`.
fn broadcast(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let r = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; r];
    for s in shapes {
        let off = r - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(Error::msg(format!("shapes {shapes:?} do not broadcast")));
            }
        }
    }
    count(&out)?;
    Ok(out)
}

/// The flat index of position `at` in a row-major array of shape `shape`.
fn flat_of(at: &[usize], shape: &[usize]) -> usize {
    at.iter().zip(shape).fold(0, |f, (i, d)| f * d + i)
}

/// For each position of `out`, the flat index in `src` that `f` maps it to.
fn map_index(out: &[usize], mut f: impl FnMut(&[usize]) -> Vec<usize>, src: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let mut at = vec![0usize; out.len()];
    let mut idx = Vec::with_capacity(n);
    for _ in 0..n {
        idx.push(flat_of(&f(&at), src));
        for d in (0..out.len()).rev() {
            at[d] += 1;
            if at[d] < out[d] {
                break;
            }
            at[d] = 0;
        }
    }
    idx
}

/// For each position of the broadcast shape `out`, the flat index in an
/// operand of shape `src`.
fn indices(out: &[usize], src: &[usize]) -> Result<Vec<usize>> {
    count(out)?;
    let off = out.len() - src.len();
    Ok(map_index(
        out,
        |o| {
            o[off..]
                .iter()
                .zip(src)
                .map(|(i, d)| if *d == 1 { 0 } else { *i })
                .collect()
        },
        src,
    ))
}

fn math2(m: Math2, a: &Val, b: &Val, dev: &Device, dtype: DType) -> Result<Val> {
    let (x, y) = (Host::of(a)?, Host::of(b)?);
    let out = broadcast(&[&x.shape, &y.shape])?;
    let (ia, ib) = (indices(&out, &x.shape)?, indices(&out, &y.shape)?);
    let ints = x.is_int() && y.is_int();
    let logic = !matches!(m, Math2::Pow | Math2::Mod { .. });
    if ints || logic {
        let f = |p: f64, q: f64| -> f64 {
            let (bp, bq) = (p != 0.0, q != 0.0);
            let t = |c: bool| if c { 1.0 } else { 0.0 };
            match m {
                Math2::Pow => p.powf(q),
                Math2::Mod { fmod: true } => p % q,
                Math2::Mod { fmod: false } => {
                    if q == 0.0 {
                        0.0
                    } else {
                        p - q * (p / q).floor()
                    }
                }
                Math2::Equal => t(p == q),
                Math2::Less => t(p < q),
                Math2::LessOrEqual => t(p <= q),
                Math2::Greater => t(p > q),
                Math2::GreaterOrEqual => t(p >= q),
                Math2::And => t(bp && bq),
                Math2::Or => t(bp || bq),
                Math2::Xor => t(bp != bq),
            }
        };
        if ints && !logic {
            // Integer Pow/Mod on exact integers.
            let (HostData::I(p), HostData::I(q)) = (&x.data, &y.data) else {
                return Err(Error::msg("integer operands expected"));
            };
            let data = ia.iter().zip(&ib).map(|(&i, &j)| int_math(m, p[i], q[j])).collect();
            return Ok(Val::I(IntArr::new(data, out)?));
        }
        let data = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| f(x.f64_at(i), y.f64_at(j)) as i64)
            .collect();
        return Ok(Val::I(IntArr::new(data, out)?));
    }
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            let (p, q) = (x.f64_at(i), y.f64_at(j));
            (match m {
                Math2::Pow => p.powf(q),
                Math2::Mod { fmod: true } => p % q,
                _ => p - q * (p / q).floor(),
            }) as f32
        })
        .collect();
    float(data, out, dev, dtype)
}

fn int_math(m: Math2, p: i64, q: i64) -> i64 {
    match m {
        Math2::Pow => u32::try_from(q).map(|e| p.wrapping_pow(e)).unwrap_or(0),
        Math2::Mod { fmod: true } => p.checked_rem(q).unwrap_or(0),
        Math2::Mod { fmod: false } => p
            .checked_rem_euclid(q)
            .map(|r| if r != 0 && q < 0 { r + q } else { r })
            .unwrap_or(0),
        _ => 0,
    }
}

fn math1(m: Math1, v: &Val, dev: &Device, dtype: DType) -> Result<Val> {
    if let Val::I(a) = v {
        let f = |x: i64| match m {
            Math1::Not => i64::from(x == 0),
            Math1::Neg => x.wrapping_neg(),
            Math1::Abs => x.wrapping_abs(),
            _ => x,
        };
        if matches!(m, Math1::Not | Math1::Neg | Math1::Abs | Math1::Floor | Math1::Ceil) {
            return Ok(Val::I(IntArr::new(
                a.data.iter().map(|x| f(*x)).collect(),
                a.shape.clone(),
            )?));
        }
    }
    let t = v.as_float(dev, dtype)?;
    Ok(Val::F(match m {
        Math1::Log => t.log()?,
        Math1::Sin => t.sin()?,
        Math1::Cos => t.cos()?,
        Math1::Erf => t.erf()?,
        Math1::Reciprocal => t.recip()?,
        Math1::Neg => t.neg()?,
        Math1::Abs => t.abs()?,
        Math1::Floor => t.floor()?,
        Math1::Ceil => t.ceil()?,
        Math1::Not => return Err(Error::msg("Not of a float tensor")),
    }))
}

fn where_(c: &Val, a: &Val, b: &Val, dev: &Device, dtype: DType) -> Result<Val> {
    let cond = c.ints_arr()?;
    let (x, y) = (Host::of(a)?, Host::of(b)?);
    let out = broadcast(&[&cond.shape, &x.shape, &y.shape])?;
    let ic = indices(&out, &cond.shape)?;
    let (ia, ib) = (indices(&out, &x.shape)?, indices(&out, &y.shape)?);
    let pick = |k: usize| (cond.data[ic[k]] != 0, ia[k], ib[k]);
    match (&x.data, &y.data) {
        (HostData::I(p), HostData::I(q)) => {
            let data = (0..ic.len())
                .map(|k| match pick(k) {
                    (true, i, _) => p[i],
                    (false, _, j) => q[j],
                })
                .collect();
            Ok(Val::I(IntArr::new(data, out)?))
        }
        _ => {
            let data = (0..ic.len())
                .map(|k| match pick(k) {
                    (true, i, _) => x.f64_at(i) as f32,
                    (false, _, j) => y.f64_at(j) as f32,
                })
                .collect();
            float(data, out, dev, dtype)
        }
    }
}

fn range(start: &Val, limit: &Val, delta: &Val, dev: &Device, dtype: DType) -> Result<Val> {
    let scalar = |v: &Val| -> Result<f64> {
        let h = Host::of(v)?;
        if h.shape.iter().product::<usize>() != 1 {
            return Err(Error::msg(format!("Range takes scalars, got shape {:?}", h.shape)));
        }
        Ok(h.f64_at(0))
    };
    let (s, l, d) = (scalar(start)?, scalar(limit)?, scalar(delta)?);
    if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
        return Err(Error::msg(format!("Range({s}, {l}, {d}) is not a finite range")));
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > MAX_ELEMENTS as f64 {
        return Err(Error::msg(format!("Range({s}, {l}, {d}) is too long")));
    }
    let n = n as usize;
    let ints = [start, limit, delta].iter().all(|v| matches!(v, Val::I(_)));
    if ints {
        let (s, d) = (s as i64, d as i64);
        return Ok(Val::I(IntArr::new(
            (0..n as i64).map(|k| s + k * d).collect(),
            vec![n],
        )?));
    }
    float((0..n).map(|k| (s + k as f64 * d) as f32).collect(), vec![n], dev, dtype)
}

fn topk(x: &Val, k: &Val, axis: i64, largest: bool, dev: &Device, dtype: DType) -> Result<Vec<Val>> {
    let h = Host::of(x)?;
    let ax = ops::axis(axis, h.shape.len())?;
    let k = k.ints()?.first().copied().unwrap_or(0);
    let d = h.shape[ax];
    let k = usize::try_from(k)
        .ok()
        .filter(|k| *k <= d)
        .ok_or_else(|| Error::msg(format!("k = {k} is out of range for axis size {d}")))?;
    let outer: usize = h.shape[..ax].iter().product();
    let inner: usize = h.shape[ax + 1..].iter().product();
    let mut out_shape = h.shape.clone();
    out_shape[ax] = k;
    let n = count(&out_shape)?;
    let mut vals = vec![0usize; n];
    let mut idx = vec![0i64; n];
    let mut order: Vec<usize> = (0..d).collect();
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * d + j) * inner + i;
            order.iter_mut().enumerate().for_each(|(j, v)| *v = j);
            // Ties keep the lower index first (a stable sort).
            order.sort_by(|&p, &q| {
                let (a, b) = (h.f64_at(at(p)), h.f64_at(at(q)));
                let c = a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal);
                if largest {
                    c.reverse()
                } else {
                    c
                }
            });
            for (j, &src) in order.iter().take(k).enumerate() {
                let dst = (o * k + j) * inner + i;
                vals[dst] = at(src);
                idx[dst] = src as i64;
            }
        }
    }
    Ok(vec![
        h.take(&vals, out_shape.clone(), dev, dtype)?,
        Val::I(IntArr::new(idx, out_shape)?),
    ])
}

fn reduce(
    x: &Host,
    op: Reduce,
    axes: &[i64],
    keepdims: bool,
    noop_empty: bool,
    dev: &Device,
    dtype: DType,
) -> Result<Val> {
    let r = x.shape.len();
    if axes.is_empty() && noop_empty {
        return x.take(
            &(0..x.shape.iter().product()).collect::<Vec<_>>(),
            x.shape.clone(),
            dev,
            dtype,
        );
    }
    let mut red: Vec<bool> = vec![axes.is_empty(); r];
    for &a in axes {
        red[ops::axis(a, r)?] = true;
    }
    let kept: Vec<usize> = (0..r).map(|d| if red[d] { 1 } else { x.shape[d] }).collect();
    let n = count(&kept)?;
    let mut acc: Vec<f64> = vec![
        match op {
            Reduce::Sum | Reduce::Mean => 0.0,
            Reduce::Max => f64::NEG_INFINITY,
            Reduce::Min => f64::INFINITY,
        };
        n
    ];
    let total: usize = x.shape.iter().product();
    let mut at = vec![0usize; r];
    for i in 0..total {
        let dst = flat_of(
            &at.iter()
                .enumerate()
                .map(|(d, v)| if red[d] { 0 } else { *v })
                .collect::<Vec<_>>(),
            &kept,
        );
        let v = x.f64_at(i);
        let a = &mut acc[dst];
        *a = match op {
            Reduce::Sum | Reduce::Mean => *a + v,
            Reduce::Max => a.max(v),
            Reduce::Min => a.min(v),
        };
        for d in (0..r).rev() {
            at[d] += 1;
            if at[d] < x.shape[d] {
                break;
            }
            at[d] = 0;
        }
    }
    if op == Reduce::Mean {
        let per = (total / n.max(1)).max(1) as f64;
        acc.iter_mut().for_each(|a| *a /= per);
    }
    let shape: Vec<usize> = if keepdims {
        kept
    } else {
        (0..r).filter(|d| !red[*d]).map(|d| x.shape[d]).collect()
    };
    if x.is_int() && op != Reduce::Mean {
        return Ok(Val::I(IntArr::new(acc.iter().map(|v| *v as i64).collect(), shape)?));
    }
    float(acc.iter().map(|v| *v as f32).collect(), shape, dev, dtype)
}

/// A reduction of a float tensor on candle's ops (empty `axes`: all).
fn reduce_float(t: &Tensor, op: Reduce, axes: &[i64], keepdims: bool) -> Result<Tensor> {
    let r = t.rank();
    let mut red: Vec<usize> = if axes.is_empty() {
        (0..r).collect()
    } else {
        axes.iter().map(|&a| ops::axis(a, r)).collect::<Result<_>>()?
    };
    red.sort_unstable();
    red.dedup();
    let mut y = t.clone();
    for &ax in &red {
        y = match op {
            Reduce::Sum => y.sum_keepdim(ax)?,
            Reduce::Mean => y.mean_keepdim(ax)?,
            Reduce::Max => y.max_keepdim(ax)?,
            Reduce::Min => y.min_keepdim(ax)?,
        };
    }
    if !keepdims {
        for &ax in red.iter().rev() {
            y = y.squeeze(ax)?;
        }
    }
    Ok(y)
}

/// ONNX GridSample on `x` `[N, C, H, W]` at `grid` `[N, Ho, Wo, 2]` (x, y
/// in -1..1): bilinear or nearest, zeros or border padding.
fn grid_sample(x: &Tensor, grid: &Tensor, nearest: bool, border: bool, align_corners: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (gn, ho, wo, two) = grid.dims4()?;
    if gn != n || two != 2 {
        return Err(Error::msg(format!(
            "GridSample of {:?} at a grid of {:?}: expected [N, Ho, Wo, 2]",
            x.dims(),
            grid.dims()
        )));
    }
    count(&[n, c, ho, wo])?;
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let gs = grid.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * c * ho * wo];
    let unnorm = |g: f32, size: usize| -> f32 {
        let s = size as f32;
        if align_corners {
            (g + 1.0) / 2.0 * (s - 1.0)
        } else {
            ((g + 1.0) * s - 1.0) / 2.0
        }
    };
    for b in 0..n {
        for p in 0..ho * wo {
            let g = (b * ho * wo + p) * 2;
            let (mut ix, mut iy) = (unnorm(gs[g], w), unnorm(gs[g + 1], h));
            if border {
                ix = ix.clamp(0.0, (w as f32 - 1.0).max(0.0));
                iy = iy.clamp(0.0, (h as f32 - 1.0).max(0.0));
            }
            let (x0, y0) = if nearest {
                // Round half to even, as ONNX Runtime does.
                (ix.round_ties_even(), iy.round_ties_even())
            } else {
                (ix.floor(), iy.floor())
            };
            let (fx, fy) = if nearest { (0.0, 0.0) } else { (ix - x0, iy - y0) };
            let (x0, y0) = (x0 as i64, y0 as i64);
            // Each tap: its offset in a plane (None outside) and weight.
            let at = |tx: i64, ty: i64| -> Option<usize> {
                (tx >= 0 && ty >= 0 && (tx as usize) < w && (ty as usize) < h).then(|| ty as usize * w + tx as usize)
            };
            let taps = [
                (at(x0, y0), (1.0 - fx) * (1.0 - fy)),
                (at(x0 + 1, y0), fx * (1.0 - fy)),
                (at(x0, y0 + 1), (1.0 - fx) * fy),
                (at(x0 + 1, y0 + 1), fx * fy),
            ];
            for ch in 0..c {
                let plane = &xs[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                let mut v = 0f32;
                for &(off, wt) in &taps {
                    if let (Some(o), true) = (off, wt != 0.0) {
                        v += wt * plane[o];
                    }
                }
                out[(b * c + ch) * ho * wo + p] = v;
            }
        }
    }
    Ok(Tensor::from_vec(out, (n, c, ho, wo), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[&[2, 1, 3], &[4, 1]]).ok(), Some(vec![2, 4, 3]));
        assert!(broadcast(&[&[2, 3], &[4, 3]]).is_err());
        assert_eq!(indices(&[2, 3], &[3]).ok(), Some(vec![0, 1, 2, 0, 1, 2]));
        assert_eq!(indices(&[2, 3], &[2, 1]).ok(), Some(vec![0, 0, 0, 1, 1, 1]));
    }

    #[test]
    fn integer_mod_takes_the_divisors_sign_and_fmod_the_dividends() {
        assert_eq!(int_math(Math2::Mod { fmod: false }, -7, 3), 2);
        assert_eq!(int_math(Math2::Mod { fmod: false }, 7, -3), -2);
        assert_eq!(int_math(Math2::Mod { fmod: true }, -7, 3), -1);
        assert_eq!(int_math(Math2::Mod { fmod: false }, 7, 0), 0);
    }
}
