//! An ONNX graph lowered to the graph executor's IR (the TF `NodeDef`s the
//! tfjs importer stores), so both importers share the executor, its fusion
//! and its kernels.
//!
//! ONNX tensors are NCHW; the executor's convs and pools are NHWC. Each
//! Conv and MaxPool is therefore wrapped in a Transpose to NHWC and one back,
//! which the executor's fusion folds into the conv (its input and output stay
//! NCHW planes): the same shape TF graphs converted from ONNX have. Ops whose
//! ONNX meaning has no TF twin (Slice with steps, Gather, Resize by scales,
//! Softmax on any axis, Split into equal parts, Shape, broadcast MatMul) lower
//! to `Onnx*` ops with ONNX semantics ([`crate::graph::onnx_ops`]).
//!
//! Values are looked up by their ONNX names; constants (initializers and
//! `Constant` nodes) become `Const` nodes whose tensors are stored under the
//! node's name, in the layouts the executor reads (conv filters HWIO).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use base64::Engine as _;
use candle_core::{DType, Tensor};
use serde_json::{json, Map, Value as Json};

use super::proto::{attr_type, data_type as dt, AttributeProto, GraphProto, NodeProto, TensorProto};
use super::tensors;
use crate::error::{Error, Result};

/// The lowered graph: the topology (a tfjs `model.json`'s shape) and the
/// tensors of its `Const` nodes.
pub struct Lowered {
    pub topology: Json,
    pub weights: Vec<(String, Tensor)>,
    /// The graph's inputs, in its order: name and declared shape (-1 where
    /// symbolic).
    pub inputs: Vec<(String, Vec<i64>)>,
    /// The graph's outputs: ONNX name → the node that gives it.
    pub outputs: Vec<(String, String)>,
    /// Each output's declared shape (-1 where symbolic; empty when the
    /// graph declares none), in `outputs`' order.
    pub output_shapes: Vec<Vec<i64>>,
}

/// Builds [`Lowered`] node by node.
struct Lower<'a> {
    dir: &'a Path,
    nodes: Vec<Json>,
    weights: Vec<(String, Tensor)>,
    taken: HashSet<String>,
    /// ONNX value name → executor reference (`node` or `node:k`).
    refs: HashMap<String, String>,
    /// ONNX value name → its tensor, for values known at import.
    consts: HashMap<String, Tensor>,
}

/// A node's attribute by name.
fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map(|a| a.i).unwrap_or(default)
}

fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map(|a| a.f).unwrap_or(default)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// `node 'NAME' (Op): msg`, the one-line error of a node.
fn node_err(node: &NodeProto, msg: impl std::fmt::Display) -> Error {
    let name = if node.name.is_empty() {
        node.output.first().map(String::as_str).unwrap_or("?")
    } else {
        node.name.as_str()
    };
    Error::msg(format!("node '{name}' ({}): {msg}", node.op_type))
}

fn s_attr(s: &str) -> Json {
    json!({ "s": base64::engine::general_purpose::STANDARD.encode(s) })
}

fn ints_attr(v: &[i64]) -> Json {
    json!({ "list": { "i": v } })
}

fn strs_attr(v: &[&str]) -> Json {
    let enc: Vec<String> = v
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s))
        .collect();
    json!({ "list": { "s": enc } })
}

const NHWC: [i64; 4] = [0, 2, 3, 1];
const NCHW: [i64; 4] = [0, 3, 1, 2];

impl<'a> Lower<'a> {
    /// A fresh node name from `base` (`:` would read as an output index).
    fn fresh(&mut self, base: &str) -> String {
        let clean = clean_name(base);
        let mut name = clean.clone();
        let mut k = 1;
        while !self.taken.insert(name.clone()) {
            name = format!("{clean}_{k}");
            k += 1;
        }
        name
    }

    fn push(&mut self, name: &str, op: &str, inputs: Vec<String>, attrs: Map<String, Json>) {
        self.nodes
            .push(json!({ "name": name, "op": op, "input": inputs, "attr": Json::Object(attrs) }));
    }

    /// A `Const` node holding `t` (f32, or i64 for integers).
    fn constant(&mut self, base: &str, t: Tensor) -> Result<String> {
        let name = self.fresh(base);
        let (t, ty) = if t.dtype() == DType::I64 {
            (t, "DT_INT64")
        } else {
            (t.to_dtype(DType::F32)?, "DT_FLOAT")
        };
        let mut attrs = Map::new();
        attrs.insert("dtype".into(), json!({ "type": ty }));
        self.push(&name, "Const", Vec::new(), attrs);
        self.weights.push((name.clone(), t));
        Ok(name)
    }

    fn int_const(&mut self, base: &str, v: &[i64]) -> Result<String> {
        let t = Tensor::from_vec(v.to_vec(), v.len(), &candle_core::Device::Cpu)?;
        self.constant(base, t)
    }

    /// Input `k` of `node` as an executor reference (`None` when absent).
    /// A constant becomes a `Const` node the first time a node reads it as
    /// a value (a conv's weight never does: its filter is stored instead).
    fn input(&mut self, node: &NodeProto, k: usize) -> Result<Option<String>> {
        let v = match node.input.get(k).map(String::as_str) {
            None | Some("") => return Ok(None),
            Some(v) => v.to_string(),
        };
        if let Some(r) = self.refs.get(&v) {
            return Ok(Some(r.clone()));
        }
        let t = self
            .consts
            .get(&v)
            .cloned()
            .ok_or_else(|| node_err(node, format!("input '{v}' is not produced by any node")))?;
        let name = self.constant(&v, t)?;
        self.refs.insert(v, name.clone());
        Ok(Some(name))
    }

    fn need(&mut self, node: &NodeProto, k: usize) -> Result<String> {
        self.input(node, k)?
            .ok_or_else(|| node_err(node, format!("input {k} is missing")))
    }

    /// Input `k`'s value when it is known at import (an initializer or Constant).
    fn const_of(&self, node: &NodeProto, k: usize) -> Option<&Tensor> {
        node.input
            .get(k)
            .filter(|v| !v.is_empty())
            .and_then(|v| self.consts.get(v))
    }

    /// Binds `node`'s outputs to `name` (`name:k` for output k).
    fn bind(&mut self, node: &NodeProto, name: &str) {
        for (k, out) in node.output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            let r = if k == 0 {
                name.to_string()
            } else {
                format!("{name}:{k}")
            };
            self.refs.insert(out.clone(), r);
        }
    }

    /// A Transpose of `x` by `perm`.
    fn transpose(&mut self, base: &str, x: String, perm: &[i64]) -> Result<String> {
        let p = self.int_const(&format!("{base}/perm"), perm)?;
        let name = self.fresh(base);
        self.push(&name, "Transpose", vec![x, p], Map::new());
        Ok(name)
    }

    /// One ONNX node onto executor nodes.
    fn node(&mut self, node: &NodeProto) -> Result<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(node_err(
                node,
                format!("operator domain '{}' is not supported", node.domain),
            ));
        }
        if let Some(a) = node
            .attribute
            .iter()
            .find(|a| a.r#type == attr_type::GRAPH || a.r#type == attr_type::GRAPHS)
        {
            return Err(node_err(
                node,
                format!("subgraph attribute '{}' is not supported", a.name),
            ));
        }
        let base = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        let simple = |op: &str| -> Option<&'static str> {
            Some(match op {
                "Add" => "AddV2",
                "Sub" => "Sub",
                "Mul" => "Mul",
                "Div" => "RealDiv",
                "Max" => "Maximum",
                "Min" => "Minimum",
                "Relu" => "Relu",
                "Sigmoid" => "Sigmoid",
                "Tanh" => "Tanh",
                "Exp" => "Exp",
                "Sqrt" => "Sqrt",
                "Identity" => "Identity",
                _ => return None,
            })
        };
        let op = node.op_type.as_str();
        if op == "Identity" {
            // An Identity of a constant is that constant (exporters share
            // equal initializers this way, conv biases among them).
            if let (Some(t), Some(out)) = (self.const_of(node, 0).cloned(), node.output.first()) {
                self.consts.insert(out.clone(), t);
                return Ok(());
            }
        }
        if let Some(tf) = simple(op) {
            let arity = if matches!(op, "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min") {
                2
            } else {
                1
            };
            if node.input.len() != arity {
                return Err(node_err(
                    node,
                    format!("expects {arity} inputs, has {}", node.input.len()),
                ));
            }
            let inputs = (0..arity).map(|k| self.need(node, k)).collect::<Result<Vec<_>>>()?;
            let name = self.fresh(&base);
            self.push(&name, tf, inputs, Map::new());
            self.bind(node, &name);
            return Ok(());
        }
        match op {
            "Constant" => self.constant_node(node),
            "Conv" => self.conv(node, &base),
            "MaxPool" => self.max_pool(node, &base),
            "ConvTranspose" => self.conv_transpose(node, &base),
            "LeakyRelu" => {
                let x = self.need(node, 0)?;
                let name = self.fresh(&base);
                let mut a = Map::new();
                a.insert("alpha".into(), json!({ "f": attr_f(node, "alpha", 0.01) }));
                self.push(&name, "LeakyRelu", vec![x], a);
                self.bind(node, &name);
                Ok(())
            }
            "Concat" => {
                let axis = attr(node, "axis").ok_or_else(|| node_err(node, "attribute 'axis' is missing"))?;
                let mut inputs = Vec::new();
                for k in 0..node.input.len() {
                    inputs.push(self.need(node, k)?);
                }
                inputs.push(self.int_const(&format!("{base}/axis"), &[axis.i])?);
                let name = self.fresh(&base);
                self.push(&name, "ConcatV2", inputs, Map::new());
                self.bind(node, &name);
                Ok(())
            }
            "Transpose" => {
                let x = self.need(node, 0)?;
                let perm = attr_ints(node, "perm")
                    .ok_or_else(|| node_err(node, "a Transpose without 'perm' (reversal) is not supported"))?;
                let name = self.transpose(&base, x, &perm)?;
                self.bind(node, &name);
                Ok(())
            }
            "Cast" => {
                let to = attr_i(node, "to", 0) as i32;
                let ty = if tensors::is_float(to) {
                    "DT_FLOAT"
                } else if matches!(to, dt::INT64 | dt::INT32 | dt::INT8 | dt::UINT8 | dt::BOOL) {
                    "DT_INT64"
                } else {
                    return Err(node_err(
                        node,
                        format!("cast to {} is not supported", tensors::type_name(to)),
                    ));
                };
                let x = self.need(node, 0)?;
                let name = self.fresh(&base);
                let mut a = Map::new();
                a.insert("DstT".into(), json!({ "type": ty }));
                self.push(&name, "Cast", vec![x], a);
                self.bind(node, &name);
                Ok(())
            }
            "Clip" => self.clip(node, &base),
            "Reshape" | "Softmax" | "Shape" | "Gather" | "Slice" | "Split" | "Resize" | "MatMul" | "Unsqueeze"
            | "Squeeze" | "Flatten" => self.onnx_op(node, &base),
            o if HOST_OPS.contains(&o) => self.onnx_op(node, &base),
            other => Err(node_err(node, format!("op '{other}' is not supported by this build"))),
        }
    }

    /// A `Constant` node: a value known at import, like an initializer.
    fn constant_node(&mut self, node: &NodeProto) -> Result<()> {
        let a = node
            .attribute
            .first()
            .ok_or_else(|| node_err(node, "a Constant without a value"))?;
        let cpu = candle_core::Device::Cpu;
        let t = match a.name.as_str() {
            "value" => {
                let tp = a.t.as_ref().ok_or_else(|| node_err(node, "'value' holds no tensor"))?;
                tensors::to_tensor(tp, self.dir).map_err(|e| node_err(node, e))?
            }
            "value_float" => Tensor::new(a.f, &cpu)?,
            "value_floats" => Tensor::new(a.floats.as_slice(), &cpu)?,
            "value_int" => Tensor::new(a.i, &cpu)?,
            "value_ints" => Tensor::new(a.ints.as_slice(), &cpu)?,
            other => return Err(node_err(node, format!("Constant attribute '{other}' is not supported"))),
        };
        let out = node.output.first().cloned().unwrap_or_default();
        self.consts.insert(out, t);
        Ok(())
    }

    /// Conv (2-D, plain or depthwise): Transpose → Conv2D (+ bias) → Transpose.
    fn conv(&mut self, node: &NodeProto, base: &str) -> Result<()> {
        let w = self
            .const_of(node, 1)
            .ok_or_else(|| node_err(node, "the weight must be an initializer"))?
            .clone();
        let (cout, cin_g, _, _) = w
            .dims4()
            .map_err(|_| node_err(node, format!("only 2-D convs are supported (weight {:?})", w.dims())))?;
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|v| *v != 1)) {
            return Err(node_err(node, "dilated convs are not supported"));
        }
        let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        if strides.len() != 2 || strides[0] != strides[1] || strides[0] < 1 {
            return Err(node_err(node, format!("strides {strides:?} must be two equal values")));
        }
        let group = attr_i(node, "group", 1);
        let depthwise = group > 1 && group as usize == cout && cin_g == 1;
        if group != 1 && !depthwise {
            return Err(node_err(
                node,
                format!("grouped convs with {group} groups are not supported (only 1 or depthwise)"),
            ));
        }
        let mut a = Map::new();
        a.insert("strides".into(), ints_attr(&[1, strides[0], strides[0], 1]));
        a.insert("data_format".into(), s_attr("NHWC"));
        match attr_s(node, "auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") => {
                let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                if p.len() != 4 || p.iter().any(|v| *v < 0) {
                    return Err(node_err(node, format!("pads {p:?} must be 4 non-negative values")));
                }
                a.insert("padding".into(), s_attr("EXPLICIT"));
                a.insert(
                    "explicit_paddings".into(),
                    ints_attr(&[0, 0, p[0], p[2], p[1], p[3], 0, 0]),
                );
            }
            Some("SAME_UPPER") => {
                a.insert("padding".into(), s_attr("SAME"));
            }
            Some("VALID") => {
                a.insert("padding".into(), s_attr("VALID"));
            }
            Some(other) => return Err(node_err(node, format!("auto_pad {other} is not supported"))),
        }
        // ONNX OIHW → TF HWIO (depthwise: [kh, kw, C, 1]).
        let filter = if depthwise {
            w.permute((2, 3, 0, 1))?.contiguous()?
        } else {
            w.permute((2, 3, 1, 0))?.contiguous()?
        };
        let x = self.need(node, 0)?;
        let xt = self.transpose(&format!("{base}/to_nhwc"), x, &NHWC)?;
        let f = self.constant(&format!("{base}/filter"), filter)?;
        let mut inputs = vec![xt, f];
        let op = match self.const_of(node, 2).cloned() {
            Some(b) => {
                inputs.push(self.constant(&format!("{base}/bias"), b)?);
                a.insert("fused_ops".into(), strs_attr(&["BiasAdd"]));
                if depthwise {
                    "FusedDepthwiseConv2dNative"
                } else {
                    "_FusedConv2D"
                }
            }
            None if node.input.get(2).is_some_and(|s| !s.is_empty()) => {
                return Err(node_err(node, "the bias must be an initializer"));
            }
            None if depthwise => "DepthwiseConv2dNative",
            None => "Conv2D",
        };
        let name = self.fresh(base);
        self.push(&name, op, inputs, a);
        let out = self.transpose(&format!("{base}/to_nchw"), name, &NCHW)?;
        self.bind(node, &out);
        Ok(())
    }

    /// ConvTranspose (2-D, one group, no padding): Transpose →
    /// Conv2DBackpropInput at its full size → bias Add → Transpose.
    fn conv_transpose(&mut self, node: &NodeProto, base: &str) -> Result<()> {
        let w = self
            .const_of(node, 1)
            .ok_or_else(|| node_err(node, "the weight must be an initializer"))?
            .clone();
        let (_, cout, _, _) = w.dims4().map_err(|_| {
            node_err(
                node,
                format!("only 2-D transposed convs are supported (weight {:?})", w.dims()),
            )
        })?;
        let zero = |k: &str| attr_ints(node, k).is_none_or(|v| v.iter().all(|x| *x == 0));
        if !zero("pads") || !zero("output_padding") || attr(node, "output_shape").is_some() {
            return Err(node_err(node, "padded transposed convs are not supported"));
        }
        if attr_i(node, "group", 1) != 1 {
            return Err(node_err(node, "grouped transposed convs are not supported"));
        }
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|v| *v != 1)) {
            return Err(node_err(node, "dilated transposed convs are not supported"));
        }
        let s = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        if s.len() != 2 || s[0] != s[1] || s[0] < 1 {
            return Err(node_err(node, format!("strides {s:?} must be two equal values")));
        }
        let bias = match (
            self.const_of(node, 2).cloned(),
            node.input.get(2).is_some_and(|v| !v.is_empty()),
        ) {
            (Some(b), _) => Some(b),
            (None, true) => return Err(node_err(node, "the bias must be an initializer")),
            (None, false) => None,
        };
        let x = self.need(node, 0)?;
        let xt = self.transpose(&format!("{base}/to_nhwc"), x, &NHWC)?;
        // ONNX [in, out, kh, kw] → TF [kh, kw, out, in].
        let f = self.constant(&format!("{base}/filter"), w.permute((2, 3, 1, 0))?.contiguous()?)?;
        let shape = self.int_const(&format!("{base}/output_shape"), &[-1, -1, -1, cout as i64])?;
        let mut a = Map::new();
        a.insert("strides".into(), ints_attr(&[1, s[0], s[0], 1]));
        a.insert("padding".into(), s_attr("VALID"));
        a.insert("data_format".into(), s_attr("NHWC"));
        let name = self.fresh(base);
        self.push(&name, "Conv2DBackpropInput", vec![shape, f, xt], a);
        let mut last = name;
        if let Some(b) = bias {
            let bc = self.constant(&format!("{base}/bias"), b)?;
            let add = self.fresh(&format!("{base}/bias_add"));
            self.push(&add, "BiasAdd", vec![last, bc], Map::new());
            last = add;
        }
        let out = self.transpose(&format!("{base}/to_nchw"), last, &NCHW)?;
        self.bind(node, &out);
        Ok(())
    }

    /// MaxPool (2-D): Transpose → [PadV2 with -inf] → MaxPool → Transpose.
    fn max_pool(&mut self, node: &NodeProto, base: &str) -> Result<()> {
        let k = attr_ints(node, "kernel_shape").ok_or_else(|| node_err(node, "kernel_shape is missing"))?;
        if k.len() != 2 || k.iter().any(|v| *v < 1) {
            return Err(node_err(node, format!("kernel_shape {k:?} must be two positive sizes")));
        }
        if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|v| *v != 1)) {
            return Err(node_err(node, "dilated pooling is not supported"));
        }
        if node.output.len() > 1 && node.output.get(1).is_some_and(|s| !s.is_empty()) {
            return Err(node_err(node, "the Indices output is not supported"));
        }
        let s = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        if s.len() != 2 || s.iter().any(|v| *v < 1) {
            return Err(node_err(node, format!("strides {s:?} must be two positive values")));
        }
        let pads = match attr_s(node, "auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") | Some("VALID") => attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]),
            Some(other) => return Err(node_err(node, format!("auto_pad {other} is not supported"))),
        };
        if pads.len() != 4 || pads.iter().any(|v| *v < 0) {
            return Err(node_err(node, format!("pads {pads:?} must be 4 non-negative values")));
        }
        // ceil_mode: stride - 1 more at each end is floor((L + s - 1 - k) / s)
        // + 1 = ceil((L - k) / s) + 1 windows (nothing changes at stride 1).
        let mut pads = pads;
        if attr_i(node, "ceil_mode", 0) != 0 {
            pads[2] += s[0] - 1;
            pads[3] += s[1] - 1;
        }
        let x = self.need(node, 0)?;
        let mut cur = self.transpose(&format!("{base}/to_nhwc"), x, &NHWC)?;
        // Stride 1 with (k-1)/2 on every side is TF's SAME; other padding
        // is written out with -inf (never the max of a window that has a
        // real value).
        let same = s == [1, 1]
            && k.iter().all(|v| v % 2 == 1)
            && pads == [(k[0] - 1) / 2, (k[1] - 1) / 2, (k[0] - 1) / 2, (k[1] - 1) / 2];
        if !same && pads.iter().any(|v| *v > 0) {
            let p = self.int_const(
                &format!("{base}/pads"),
                &[0, 0, pads[0], pads[2], pads[1], pads[3], 0, 0],
            )?;
            let pshape = self.int_const(&format!("{base}/pads_shape"), &[4, 2])?;
            let pr = self.fresh(&format!("{base}/pads2d"));
            self.push(&pr, "Reshape", vec![p, pshape], Map::new());
            let v = self.constant(
                &format!("{base}/neg_inf"),
                Tensor::new(f32::NEG_INFINITY, &candle_core::Device::Cpu)?,
            )?;
            let padded = self.fresh(&format!("{base}/pad"));
            self.push(&padded, "PadV2", vec![cur, pr, v], Map::new());
            cur = padded;
        }
        let mut a = Map::new();
        a.insert("ksize".into(), ints_attr(&[1, k[0], k[1], 1]));
        a.insert("strides".into(), ints_attr(&[1, s[0], s[1], 1]));
        a.insert("padding".into(), s_attr(if same { "SAME" } else { "VALID" }));
        a.insert("data_format".into(), s_attr("NHWC"));
        let name = self.fresh(base);
        self.push(&name, "MaxPool", vec![cur], a);
        let out = self.transpose(&format!("{base}/to_nchw"), name, &NCHW)?;
        self.bind(node, &out);
        Ok(())
    }

    /// Clip with constant bounds: Relu6 for [0, 6], Relu for [0, ∞).
    fn clip(&mut self, node: &NodeProto, base: &str) -> Result<()> {
        let bound = |k: usize, attr_name: &str, default: f32| -> Result<f32> {
            match self.const_of(node, k) {
                Some(t) => Ok(t
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?
                    .first()
                    .copied()
                    .unwrap_or(default)),
                None if node.input.get(k).is_some_and(|s| !s.is_empty()) => {
                    Err(node_err(node, "bounds must be constants"))
                }
                None => Ok(attr(node, attr_name).map(|a| a.f).unwrap_or(default)),
            }
        };
        let lo = bound(1, "min", f32::NEG_INFINITY)?;
        let hi = bound(2, "max", f32::INFINITY)?;
        if lo.is_nan() || hi.is_nan() {
            return Err(node_err(node, format!("Clip to [{lo}, {hi}] is not a range")));
        }
        let x = self.need(node, 0)?;
        let op = match (lo, hi) {
            (l, h) if l == 0.0 && h == 6.0 => "Relu6",
            (l, h) if l == 0.0 && h == f32::INFINITY => "Relu",
            _ => {
                // Any other bounds: Maximum with the lower, Minimum with the upper.
                let mut cur = x;
                for (v, op, skip) in [(lo, "Maximum", f32::NEG_INFINITY), (hi, "Minimum", f32::INFINITY)] {
                    if v == skip {
                        continue;
                    }
                    let c = self.constant(
                        &format!("{base}/{op}_bound"),
                        Tensor::new(v, &candle_core::Device::Cpu)?,
                    )?;
                    let name = self.fresh(&format!("{base}/{op}"));
                    self.push(&name, op, vec![cur, c], Map::new());
                    cur = name;
                }
                self.bind(node, &cur);
                return Ok(());
            }
        };
        let name = self.fresh(base);
        self.push(&name, op, vec![x], Map::new());
        self.bind(node, &name);
        Ok(())
    }

    /// The ops with ONNX semantics ([`crate::graph::onnx_ops`]): inputs as
    /// in ONNX (absent optional ones dropped from the end), attributes kept.
    fn onnx_op(&mut self, node: &NodeProto, base: &str) -> Result<()> {
        let op = node.op_type.as_str();
        let mut a = Map::new();
        let mut inputs = Vec::new();
        let mut present = Vec::new();
        for k in 0..node.input.len() {
            if let Some(r) = self.input(node, k)? {
                inputs.push(r);
                present.push(k as i64);
            }
        }
        // Inputs given by position: which ONNX slots they fill.
        a.insert("slots".into(), ints_attr(&present));
        match op {
            "Reshape" => {
                a.insert("allowzero".into(), json!({ "i": attr_i(node, "allowzero", 0) }));
            }
            "Softmax" => {
                a.insert("axis".into(), json!({ "i": attr_i(node, "axis", -1) }));
            }
            "Shape" => {
                a.insert("start".into(), json!({ "i": attr_i(node, "start", 0) }));
                if let Some(e) = attr(node, "end") {
                    a.insert("end".into(), json!({ "i": e.i }));
                }
            }
            "Gather" | "Flatten" => {
                let d = if op == "Flatten" { 1 } else { 0 };
                a.insert("axis".into(), json!({ "i": attr_i(node, "axis", d) }));
            }
            "Split" => {
                a.insert("axis".into(), json!({ "i": attr_i(node, "axis", 0) }));
                a.insert("num_outputs".into(), json!({ "i": node.output.len() as i64 }));
                if let Some(s) = attr_ints(node, "split") {
                    // opset < 13: sizes as an attribute.
                    let c = self.int_const(&format!("{base}/split"), &s)?;
                    inputs.push(c);
                    a.insert("slots".into(), ints_attr(&[0, 1]));
                }
            }
            "Unsqueeze" | "Squeeze" => {
                if let Some(axes) = attr_ints(node, "axes") {
                    // opset < 13: axes as an attribute.
                    let c = self.int_const(&format!("{base}/axes"), &axes)?;
                    inputs.push(c);
                    a.insert("slots".into(), ints_attr(&[0, 1]));
                }
            }
            "Resize" => {
                let mode = attr_s(node, "mode").unwrap_or_else(|| "nearest".into());
                let ctm = attr_s(node, "coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into());
                let nearest = attr_s(node, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into());
                match (mode.as_str(), ctm.as_str(), nearest.as_str()) {
                    ("nearest", "asymmetric", "floor") => {}
                    ("linear", "half_pixel" | "pytorch_half_pixel" | "align_corners" | "asymmetric", _) => {}
                    _ => {
                        return Err(node_err(
                            node,
                            format!("Resize mode {mode} with {ctm} (nearest_mode {nearest}) is not supported"),
                        ))
                    }
                }
                if attr_i(node, "antialias", 0) != 0 {
                    return Err(node_err(node, "antialiased Resize is not supported"));
                }
                a.insert("mode".into(), s_attr(&mode));
                a.insert("coordinate_transformation_mode".into(), s_attr(&ctm));
            }
            _ => {
                // The other ops' attributes as they are (numbers, strings,
                // lists of integers); a tensor attribute (ConstantOfShape's
                // `value`) and the `axes` of an older Reduce become inputs.
                for at in &node.attribute {
                    match at.r#type {
                        attr_type::INT => {
                            a.insert(at.name.clone(), json!({ "i": at.i }));
                        }
                        attr_type::FLOAT => {
                            a.insert(at.name.clone(), json!({ "f": at.f }));
                        }
                        attr_type::STRING => {
                            a.insert(at.name.clone(), s_attr(&String::from_utf8_lossy(&at.s)));
                        }
                        attr_type::INTS if at.name == "axes" && op.starts_with("Reduce") => {
                            let c = self.int_const(&format!("{base}/axes"), &at.ints)?;
                            inputs.push(c);
                            present.push(1);
                        }
                        attr_type::TENSOR if at.name == "value" && op == "ConstantOfShape" => {
                            let t =
                                at.t.as_ref()
                                    .ok_or_else(|| node_err(node, "attribute 'value' holds no tensor"))?;
                            let t = tensors::to_tensor(t, self.dir)?;
                            let c = if t.dtype() == DType::I64 {
                                let v: Vec<i64> = t.flatten_all()?.to_vec1()?;
                                self.int_const(&format!("{base}/value"), &v)?
                            } else {
                                self.constant(&format!("{base}/value"), t)?
                            };
                            inputs.push(c);
                            present.push(1);
                        }
                        _ => {
                            return Err(node_err(
                                node,
                                format!("attribute '{}' of this form is not supported", at.name),
                            ))
                        }
                    }
                }
                a.insert("slots".into(), ints_attr(&present));
            }
        }
        let name = self.fresh(base);
        self.push(&name, &format!("Onnx{op}"), inputs, a);
        self.bind(node, &name);
        Ok(())
    }
}

/// The ops of `graph::onnx_host_ops`, lowered as `Onnx<op>` nodes with
/// their attributes.
const HOST_OPS: &[&str] = &[
    "Pow",
    "Mod",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Log",
    "Sin",
    "Cos",
    "Erf",
    "Reciprocal",
    "Neg",
    "Abs",
    "Floor",
    "Ceil",
    "Not",
    "Where",
    "ConstantOfShape",
    "Range",
    "Expand",
    "Tile",
    "TopK",
    "GatherElements",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "Pad",
    "LayerNormalization",
    "Gemm",
    "GridSample",
];

/// A node name from an ONNX name (`:` would read as an output index, `^`
/// as a control input).
fn clean_name(base: &str) -> String {
    let clean: String = base
        .chars()
        .map(|c| if c == ':' || c == '^' { '.' } else { c })
        .collect();
    if clean.is_empty() {
        "node".to_string()
    } else {
        clean
    }
}

/// Lowers `graph` (whose external data lives in `dir`).
pub fn lower(graph: &GraphProto, dir: &Path) -> Result<Lowered> {
    let mut l = Lower {
        dir,
        nodes: Vec::new(),
        weights: Vec::new(),
        taken: HashSet::new(),
        refs: HashMap::new(),
        consts: HashMap::new(),
    };
    // The outputs keep their ONNX names (an Identity each, added last).
    let mut out_names = Vec::new();
    for o in &graph.output {
        let name = clean_name(&o.name);
        if !l.taken.insert(name.clone()) {
            return Err(Error::msg(format!("output '{}' is listed twice", o.name)));
        }
        out_names.push(name);
    }
    for t in &graph.initializer {
        load_initializer(&mut l, t)?;
    }
    let real_inputs: Vec<_> = graph.input.iter().filter(|i| !l.consts.contains_key(&i.name)).collect();
    if real_inputs.is_empty() {
        return Err(Error::msg("the graph has no input"));
    }
    if real_inputs.len() > MAX_INPUTS {
        return Err(Error::msg(format!(
            "the graph has {} inputs (at most {MAX_INPUTS})",
            real_inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(real_inputs.len());
    let mut sig_inputs = Map::new();
    for input in real_inputs {
        let tt = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| Error::msg(format!("input '{}' is not a tensor", input.name)))?;
        if !tensors::is_float(tt.elem_type) {
            return Err(Error::msg(format!(
                "input '{}' is {}: only float inputs are supported",
                input.name,
                tensors::type_name(tt.elem_type)
            )));
        }
        let shape = declared_dims(tt.shape.as_ref());
        let in_name = l.fresh(&input.name);
        let dims: Vec<Json> = shape.iter().map(|d| json!({ "size": d })).collect();
        let mut a = Map::new();
        a.insert("dtype".into(), json!({ "type": "DT_FLOAT" }));
        a.insert("shape".into(), json!({ "shape": { "dim": dims } }));
        l.push(&in_name, "Placeholder", Vec::new(), a);
        sig_inputs.insert(input.name.clone(), json!({ "name": in_name }));
        l.refs.insert(input.name.clone(), in_name);
        inputs.push((input.name.clone(), shape));
    }
    for node in &graph.node {
        l.node(node)?;
    }
    let mut outputs = Vec::new();
    let mut output_shapes = Vec::new();
    let mut sig = Map::new();
    for (o, name) in graph.output.iter().zip(out_names) {
        let src = l
            .refs
            .get(&o.name)
            .cloned()
            .ok_or_else(|| Error::msg(format!("output '{}' is not produced by any node", o.name)))?;
        l.push(&name, "Identity", vec![src], Map::new());
        sig.insert(o.name.clone(), json!({ "name": name }));
        outputs.push((o.name.clone(), name));
        let tt = o.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        output_shapes.push(declared_dims(tt.and_then(|t| t.shape.as_ref())));
    }
    let topology = json!({
        "modelTopology": { "node": l.nodes },
        "signature": { "inputs": Json::Object(sig_inputs), "outputs": Json::Object(sig) },
    });
    Ok(Lowered {
        topology,
        weights: l.weights,
        inputs,
        outputs,
        output_shapes,
    })
}

/// The most inputs a graph may have.
pub const MAX_INPUTS: usize = 64;

/// A declared shape: each dimension's size, -1 where symbolic or unset.
fn declared_dims(shape: Option<&super::proto::TensorShapeProto>) -> Vec<i64> {
    shape
        .map(|s| {
            s.dim
                .iter()
                .map(|d| d.dim_value.filter(|v| *v > 0).unwrap_or(-1))
                .collect()
        })
        .unwrap_or_default()
}

/// An initializer is a value known at import ([`Lower::input`] makes its
/// `Const` node when a node reads it).
fn load_initializer(l: &mut Lower, t: &TensorProto) -> Result<()> {
    let tensor = tensors::to_tensor(t, l.dir)?;
    l.consts.insert(t.name.clone(), tensor);
    Ok(())
}
