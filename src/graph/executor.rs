//! TF.js graph models (`model.json` with a `modelTopology`), run op by op.
//!
//! `import tfjs` stores a graph model's weights under their node names, in
//! TF layouts, plus the topology itself as the U8 tensor [`GRAPH_TENSOR`], so
//! one safetensors file holds a whole network. [`Graph::load`] reads both
//! back, keeps only the nodes the outputs need, converts the conv filters
//! once (HWIO → OIHW, onto [`FastConv`]) and [`Graph::run`] executes the
//! nodes in order. Tensors keep TF's NHWC meaning; a conv permutes to NCHW
//! and back lazily, so NCHW graphs (ONNX-converted ones, which wrap every
//! conv in Transposes) pay no copies for it.
//!
//! The op set is the one the graphs shipped with the app use (NanoDet,
//! MoveNet, the MediaPipe palm and hand landmark networks); an unknown op is
//! a load error naming the node. Op semantics follow tfjs-backend-cpu 4.x.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value as Json;

use super::node::NodeDef;
use super::ops::{self, IntArr, Val};
use super::planar::{self, Slot};
use crate::error::{Error, Result};
use crate::kernels::layer::FastConv;
use crate::kernels::{Act, Padding};

/// Name of the tensor holding the topology JSON inside the weights file.
pub const GRAPH_TENSOR: &str = "__graph__";

/// The parts of a tfjs `model.json` the graph needs.
#[derive(Deserialize)]
pub struct GraphJson {
    #[serde(rename = "modelTopology")]
    pub topology: Topology,
    #[serde(default)]
    pub signature: Option<Signature>,
}

#[derive(Deserialize)]
pub struct Topology {
    pub node: Vec<NodeDef>,
}

#[derive(Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub inputs: serde_json::Map<String, Json>,
    #[serde(default)]
    pub outputs: serde_json::Map<String, Json>,
}

/// `name:k` → (name, k).
fn split_ref(r: &str) -> (&str, usize) {
    match r.rsplit_once(':') {
        Some((n, k)) => match k.parse() {
            Ok(k) => (n, k),
            Err(_) => (r, 0),
        },
        None => (r, 0),
    }
}

/// How a conv pads.
#[derive(Debug, Clone, Copy)]
pub(super) enum PadMode {
    Same,
    Valid,
    Explicit(Padding),
}

/// A conv node: what the graph says (the filter, and the bias and
/// activation of TF's fused ops), widened by [`super::fuse`] with the nodes
/// after it, then compiled once onto [`FastConv`].
pub(super) struct ConvOp {
    pub(super) weight: Tensor,
    pub(super) bias: Option<Tensor>,
    pub(super) groups: usize,
    pub(super) act: Act,
    k: (usize, usize),
    stride: usize,
    pub(super) pad: PadMode,
    /// Position in the node's inputs of an addend fused in before the
    /// activation (a residual connection).
    pub(super) pre: Option<usize>,
    /// Position in the node's inputs of an addend fused in after the
    /// activation (a residual connection around the conv).
    pub(super) post: Option<usize>,
    /// Positions in the node's inputs of NCHW parts whose channel
    /// concatenation is the conv's input (a Concat, then a Transpose to
    /// NHWC, folded in); empty when input 0 is the input.
    pub(super) cat: Vec<usize>,
    /// The output is the NCHW tensor itself (a Transpose to NCHW fused in).
    pub(super) nchw_out: bool,
    /// The input is an NCHW tensor (a zero Pad of NCHW planes, then a
    /// Transpose to NHWC, folded in).
    pub(super) input_nchw: bool,
    /// The compiled layer (after fusion).
    conv: Option<FastConv>,
}

impl ConvOp {
    /// The output channels.
    pub(super) fn cout(&self) -> usize {
        self.weight.dims().first().copied().unwrap_or(0)
    }

    /// Multiply-adds of this conv on an `h`×`w` input.
    fn macs(&self, h: usize, w: usize) -> u64 {
        let (oh, ow) = match self.pad {
            PadMode::Same => (h.div_ceil(self.stride), w.div_ceil(self.stride)),
            PadMode::Valid => (
                h.saturating_sub(self.k.0) / self.stride + 1,
                w.saturating_sub(self.k.1) / self.stride + 1,
            ),
            PadMode::Explicit(p) => (
                (h + p.top + p.bottom).saturating_sub(self.k.0) / self.stride + 1,
                (w + p.left + p.right).saturating_sub(self.k.1) / self.stride + 1,
            ),
        };
        let per_out = self.weight.elem_count() as u64;
        per_out * (oh * ow) as u64
    }
}

pub(super) enum Op {
    Input,
    /// Folded into a conv after it ([`super::fuse`]): runs nothing.
    Folded,
    Const(Val),
    Identity,
    Conv(Box<ConvOp>),
    ConvTranspose(Box<ConvTransposeOp>),
    MatMul {
        b: Tensor,
        bias: Option<Tensor>,
        ta: bool,
    },
    Binary(ops::BinOp),
    AddN,
    Unary(ops::UnOp),
    LeakyRelu(f64),
    Pad {
        value_input: bool,
    },
    MaxPool {
        k: (usize, usize),
        stride: (usize, usize),
        same: bool,
    },
    Concat,
    Reshape,
    Transpose,
    SplitV,
    Resize {
        align_corners: bool,
        half_pixel: bool,
    },
    Mean {
        keep_dims: bool,
    },
    Cast {
        to_int: bool,
    },
    Unpack {
        axis: i64,
    },
    ExpandDims,
    Squeeze(Vec<i64>),
    Pack {
        axis: i64,
    },
    ArgMax,
    GatherNd,
    SparseToDense,
    AvgPool(ops::Window),
    /// An op with ONNX semantics ([`super::onnx_ops`]).
    Onnx(Box<super::onnx_ops::OnnxNode>),
}

pub(super) struct Node {
    name: String,
    pub(super) op: Op,
    /// (node index, output index) of each input.
    pub(super) inputs: Vec<(usize, usize)>,
    /// Index of the last node reading this node's outputs (frees them early).
    last_use: usize,
}

/// A loaded graph, ready to run.
pub struct Graph {
    nodes: Vec<Node>,
    /// Every Placeholder, in the topology's order.
    inputs: Vec<GraphInput>,
    outputs: Vec<(String, usize, usize)>,
    /// Each output's signature key (the name its exporter gave it; the
    /// node's name when the signature names none).
    output_keys: Vec<String>,
    device: Device,
    /// Float dtype the graph computes in (f32 on CPU; f16 on GPUs, and on
    /// the CPU under `Kernels::GenericHalf`).
    dtype: DType,
    /// Nodes folded into the convs before them at load.
    fused: usize,
    /// Conv multiply-adds of every run so far (for GFLOP/s figures).
    macs: AtomicU64,
}

impl Graph {
    /// Reads the topology stored in `vb` (under [`GRAPH_TENSOR`]) and its weights.
    pub fn load(vb: &VarBuilder, what: &str) -> Result<Graph> {
        let bytes: Vec<u8> = vb
            .get_unchecked_dtype(GRAPH_TENSOR, DType::U8)
            .map_err(|e| Error::msg(format!("{what}: no graph topology in the weights ({e})")))?
            .to_vec1()?;
        let json: GraphJson = serde_json::from_slice(&bytes)
            .map_err(|e| Error::msg(format!("{what}: graph topology is not a tfjs model.json: {e}")))?;
        let device = vb.device().clone();
        let dtype = if crate::kernels::Kernels::half_on(&device) {
            DType::F16
        } else {
            DType::F32
        };
        Self::build(&json, dtype, &device, &mut |name, dt| {
            vb.get_unchecked_dtype(name, dt)
                .map_err(|e| Error::msg(format!("{what}: weight '{name}': {e}")))
        })
        .map_err(|e| e.context(what))
    }

    /// Builds the graph from its topology, fetching each Const's tensor with
    /// `weight`, and folds what it can into the convs ([`super::fuse`]).
    pub fn build(
        json: &GraphJson,
        dtype: DType,
        device: &Device,
        weight: &mut dyn FnMut(&str, DType) -> Result<Tensor>,
    ) -> Result<Graph> {
        Self::build_with(json, dtype, device, weight, true)
    }

    /// [`Graph::build`], with fusion or (`fuse` false: every node on its
    /// own, the reference the fused graph is tested against) without.
    pub(super) fn build_with(
        json: &GraphJson,
        dtype: DType,
        device: &Device,
        weight: &mut dyn FnMut(&str, DType) -> Result<Tensor>,
        fuse: bool,
    ) -> Result<Graph> {
        let defs: HashMap<&str, &NodeDef> = json.topology.node.iter().map(|n| (n.name.as_str(), n)).collect();
        let placeholders: Vec<&NodeDef> = json.topology.node.iter().filter(|n| n.op == "Placeholder").collect();
        if placeholders.is_empty() {
            return Err(Error::msg("the graph has no Placeholder input"));
        }
        let (output_keys, out_names): (Vec<String>, Vec<String>) = output_names_of(json)?.into_iter().unzip();
        let order = topo_order(&defs, &out_names)?;
        let index: HashMap<&str, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut consts: HashMap<&str, Val> = HashMap::new();
        let mut nodes: Vec<Node> = Vec::with_capacity(order.len());
        for (i, name) in order.iter().enumerate() {
            let def = defs[name];
            let inputs: Vec<(usize, usize)> = def
                .input
                .iter()
                .filter(|s| !s.starts_with('^'))
                .map(|s| {
                    let (n, k) = split_ref(s);
                    (index[n], k)
                })
                .collect();
            let const_in = |k: usize| -> Result<&Val> {
                let src = def
                    .input
                    .get(k)
                    .map(|s| split_ref(s).0)
                    .ok_or_else(|| def.err(format!("input {k} is missing")))?;
                consts
                    .get(src)
                    .ok_or_else(|| def.err(format!("input {k} ('{src}') must be a constant")))
            };
            let op = match def.op.as_str() {
                "Placeholder" => Op::Input,
                "Const" => {
                    let v = const_val(def, name, dtype, device, weight)?;
                    consts.insert(name, v.clone());
                    Op::Const(v)
                }
                _ => compute_op(def, &const_in)?,
            };
            nodes.push(Node {
                name: name.to_string(),
                op,
                inputs,
                last_use: i,
            });
        }
        let inputs: Vec<GraphInput> = placeholders
            .iter()
            .map(|p| GraphInput {
                node: index.get(p.name.as_str()).copied(),
                key: input_key(json, &p.name),
                name: p.name.clone(),
                shape: declared_shape(p),
            })
            .collect();
        if inputs.iter().all(|i| i.node.is_none()) {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::msg(format!(
                "the outputs do not depend on the input ({})",
                names.join(", ")
            )));
        }
        let outputs: Vec<(String, usize, usize)> =
            out_names.iter().map(|n| (n.clone(), index[n.as_str()], 0)).collect();
        let output_nodes: Vec<usize> = outputs.iter().map(|(_, i, _)| *i).collect();
        let fused = if fuse {
            super::fuse::fuse(&mut nodes, &output_nodes)?
        } else {
            0
        };
        for node in &mut nodes {
            if let Op::Conv(c) = &mut node.op {
                c.compile()
                    .map_err(|e| Error::msg(format!("node '{}': {e}", node.name)))?;
            }
        }
        for i in 0..nodes.len() {
            for k in 0..nodes[i].inputs.len() {
                let (src, _) = nodes[i].inputs[k];
                nodes[src].last_use = nodes[src].last_use.max(i);
            }
        }
        for (_, i, _) in &outputs {
            nodes[*i].last_use = usize::MAX;
        }
        Ok(Graph {
            nodes,
            inputs,
            outputs,
            output_keys,
            device: device.clone(),
            dtype,
            fused,
            macs: AtomicU64::new(0),
        })
    }

    /// How many nodes were folded into the convs before them at load.
    pub fn fused_nodes(&self) -> usize {
        self.fused
    }

    /// Conv multiply-adds of every run so far.
    pub fn macs_done(&self) -> u64 {
        self.macs.load(Ordering::Relaxed)
    }

    /// The first input's declared shape (`-1` for unknown dimensions).
    pub fn input_shape(&self) -> &[i64] {
        self.inputs.first().map(|i| i.shape.as_slice()).unwrap_or(&[])
    }

    /// Every input, in the topology's order.
    pub fn inputs(&self) -> &[GraphInput] {
        &self.inputs
    }

    /// The output names, in the signature's order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    /// Each output's signature key, in the order [`Graph::run`] gives them.
    pub fn output_keys(&self) -> &[String] {
        &self.output_keys
    }

    /// Runs the graph on `x` (any float dtype; computed in the graph's
    /// dtype) and returns the outputs by name, as f32. The graph must have
    /// one input.
    pub fn run(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        if self.inputs.len() != 1 {
            return Err(Error::msg(format!(
                "the graph has {} inputs; give each",
                self.inputs.len()
            )));
        }
        self.run_inputs(&[x])
    }

    /// Runs the graph on one tensor per input, in [`Graph::inputs`]' order.
    pub fn run_inputs(&self, xs: &[&Tensor]) -> Result<Vec<(String, Tensor)>> {
        if xs.len() != self.inputs.len() {
            return Err(Error::msg(format!(
                "{} input tensors for a graph with {} inputs",
                xs.len(),
                self.inputs.len()
            )));
        }
        let mut given: HashMap<usize, Tensor> = HashMap::new();
        for (input, x) in self.inputs.iter().zip(xs) {
            let want = &input.shape;
            let dims = x.dims();
            if !want.is_empty()
                && (want.len() != dims.len() || want.iter().zip(dims).any(|(w, d)| *w >= 0 && *w as usize != *d))
            {
                return Err(Error::msg(format!(
                    "input '{}' must have shape {want:?}, got {dims:?}",
                    input.key
                )));
            }
            if let Some(node) = input.node {
                given.insert(node, x.to_device(&self.device)?.to_dtype(self.dtype)?);
            }
        }
        let mut vals: Vec<Option<Vec<Slot>>> = (0..self.nodes.len()).map(|_| None).collect();
        let mut macs = 0u64;
        for (i, node) in self.nodes.iter().enumerate() {
            let args: Vec<&Slot> = node
                .inputs
                .iter()
                .map(|&(src, k)| {
                    vals[src]
                        .as_ref()
                        .and_then(|v| v.get(k))
                        .ok_or_else(|| Error::msg(format!("node '{}': input {src}:{k} has no value", node.name)))
                })
                .collect::<Result<_>>()?;
            if let (Op::Conv(c), Some(first)) = (&node.op, args.first()) {
                // Folded-in NCHW inputs (parts of a Concat, padded planes) are
                // NCHW tensors; the others the graph's NHWC values.
                let hw = match first {
                    Slot::V(Val::F(t)) if (!c.cat.is_empty() || c.input_nchw) && t.rank() == 4 => {
                        Some((t.dims()[2], t.dims()[3]))
                    }
                    v => v.hw(),
                };
                if let Some((h, w)) = hw {
                    macs += c.macs(h, w);
                }
            }
            let out = if let Some(x) = given.remove(&i) {
                vec![Slot::V(Val::F(x))]
            } else {
                self.exec(node, &args)
                    .map_err(|e| Error::msg(format!("node '{}': {e}", node.name)))?
            };
            drop(args);
            vals[i] = Some(out);
            for &(src, _) in &node.inputs {
                if self.nodes[src].last_use == i {
                    vals[src] = None;
                }
            }
        }
        self.macs.fetch_add(macs, Ordering::Relaxed);
        let mut out = Vec::with_capacity(self.outputs.len());
        for (name, i, k) in &self.outputs {
            let v = vals[*i]
                .as_ref()
                .and_then(|v| v.get(*k))
                .ok_or_else(|| Error::msg(format!("output '{name}' has no value")))?;
            out.push((name.clone(), v.view()?.to_f32_tensor(&self.device)?));
        }
        Ok(out)
    }

    /// Runs one node on its inputs `a`: each op's work in its own method.
    fn exec(&self, node: &Node, slots: &[&Slot]) -> Result<Vec<Slot>> {
        if let Some(v) = self.exec_planar(node, slots)? {
            return Ok(vec![v]);
        }
        // Every other op sees planar values as their NHWC view.
        let views: Vec<std::borrow::Cow<Val>> = slots.iter().map(|v| v.view()).collect::<Result<_>>()?;
        let a: Vec<&Val> = views.iter().map(|v| v.as_ref()).collect();
        Ok(self.exec_nhwc(node, &a)?.into_iter().map(Slot::V).collect())
    }

    /// Runs one node on NHWC values.
    fn exec_nhwc(&self, node: &Node, a: &[&Val]) -> Result<Vec<Val>> {
        let one = |v: Val| Ok(vec![v]);
        match &node.op {
            Op::Input => Err(Error::msg("the input is set by run()")),
            Op::Folded => Ok(Vec::new()),
            Op::Const(v) => one(v.clone()),
            Op::Identity => one(arg(a, 0)?.clone()),
            Op::Conv(_) => Err(Error::msg("convs run on planar values")),
            Op::ConvTranspose(_) => Err(Error::msg("transposed convs run on planar values")),
            Op::MatMul { b, bias, ta } => one(self.matmul(b, bias.as_ref(), *ta, a)?),
            Op::Binary(op) => one(ops::binary(*op, arg(a, 0)?, arg(a, 1)?, &self.device, self.dtype)?),
            Op::AddN => one(self.add_n(a)?),
            Op::Unary(op) => one(Val::F(ops::unary(*op, &self.float(a, 0)?)?)),
            Op::LeakyRelu(alpha) => one(self.leaky_relu(*alpha, a)?),
            Op::Pad { value_input } => one(self.pad(*value_input, a)?),
            Op::MaxPool { k, stride, same } => one(Val::F(ops::max_pool(&self.float(a, 0)?, *k, *stride, *same)?)),
            Op::Concat => one(self.concat(a)?),
            Op::Reshape => one(reshape(a)?),
            Op::Transpose => one(transpose(a)?),
            Op::SplitV => self.split_v(a),
            Op::Resize {
                align_corners,
                half_pixel,
            } => one(self.resize(*align_corners, *half_pixel, a)?),
            Op::Mean { keep_dims } => one(self.mean(*keep_dims, a)?),
            Op::Cast { to_int } => one(self.cast(*to_int, a)?),
            Op::Unpack { axis } => unpack(*axis, a),
            Op::ExpandDims => one(expand_dims(a)?),
            Op::Squeeze(dims) => one(squeeze(dims, a)?),
            Op::Pack { axis } => one(self.pack(*axis, a)?),
            Op::ArgMax => one(self.arg_max(a)?),
            Op::GatherNd => one(ops::gather_nd(
                arg(a, 0)?,
                &arg(a, 1)?.ints_arr()?,
                &self.device,
                self.dtype,
            )?),
            Op::SparseToDense => one(ops::sparse_to_dense(
                &arg(a, 0)?.ints_arr()?,
                &ints(a, 1)?,
                arg(a, 2)?,
                arg(a, 3)?,
                &self.device,
                self.dtype,
            )?),
            Op::AvgPool(win) => one(Val::F(ops::avg_pool(&self.float(a, 0)?, win)?)),
            Op::Onnx(o) => o.exec(a, &self.device, self.dtype),
        }
    }

    /// The ops that take and give planar values ([`super::planar`]);
    /// `None` when this node's inputs are not in a form they handle.
    fn exec_planar(&self, node: &Node, a: &[&Slot]) -> Result<Option<Slot>> {
        let (dev, dt) = (&self.device, self.dtype);
        let first = a.first().copied();
        // Input `k`'s integers (shapes, axes, permutations).
        let ints_of = |k: usize| -> Result<Vec<i64>> {
            a.get(k)
                .ok_or_else(|| Error::msg(format!("input {k} is missing")))?
                .view()?
                .ints()
        };
        Ok(match (&node.op, first) {
            (Op::Conv(c), _) => Some(self.conv(c, a)?),
            (Op::ConvTranspose(t), _) => Some(self.conv_transpose(t, a)?),
            (Op::Identity, Some(v)) => Some(v.clone()),
            (Op::Unary(op), Some(Slot::P(t))) => Some(Slot::P(ops::unary(*op, t)?)),
            (Op::LeakyRelu(alpha), Some(Slot::P(t))) => Some(Slot::P(leaky(t, *alpha)?)),
            (Op::Binary(op), Some(x)) if a.len() == 2 => planar::binary(*op, x, a[1], dev, dt)?,
            (Op::AddN, Some(Slot::P(t))) => {
                let mut acc = t.clone();
                for v in &a[1..] {
                    match v {
                        Slot::P(u) if u.dims() == t.dims() => acc = (acc + u)?,
                        _ => return Ok(None),
                    }
                }
                Some(Slot::P(acc))
            }
            (Op::Transpose, Some(x)) => planar::transpose(x, &ints_of(1)?),
            (Op::MaxPool { k, stride, same }, Some(x)) => planar::max_pool(x, *k, *stride, *same)?,
            (Op::AvgPool(win), Some(x)) => planar::avg_pool(x, win)?,
            (Op::Concat, Some(_)) => {
                let n = a.len() - 1;
                let axis = *ints_of(n)?.first().ok_or_else(|| Error::msg("axis is empty"))?;
                planar::concat(&a[..n], axis, dev, dt)?
            }
            (Op::Mean { keep_dims }, Some(x)) => planar::mean(x, &ints_of(1)?, *keep_dims)?,
            (Op::Pad { value_input }, Some(x @ Slot::P(_))) => {
                let value = match a.get(2) {
                    Some(v) if *value_input => first_float(&v.as_float(dev, dt)?)?,
                    _ => 0.0,
                };
                planar::pad(x, &ints_of(1)?, value)?
            }
            _ => None,
        })
    }

    /// Input `k` as a float tensor in the graph's dtype, on its device.
    fn float(&self, a: &[&Val], k: usize) -> Result<Tensor> {
        arg(a, k)?.as_float(&self.device, self.dtype)
    }

    /// A conv (plain, fused, depthwise): planar in and out (NCHW for the
    /// kernel), plus a fused addend before the activation where there is one.
    fn conv(&self, c: &ConvOp, a: &[&Slot]) -> Result<Slot> {
        let slot = |k: usize| a.get(k).ok_or_else(|| Error::msg(format!("input {k} is missing")));
        let parts: Vec<Tensor> = if c.cat.is_empty() {
            vec![match slot(0)? {
                // A zero Pad of NCHW planes folded in: the planes themselves.
                Slot::V(Val::F(t)) if c.input_nchw => t.contiguous()?,
                s => s.planar(&self.device, self.dtype)?,
            }]
        } else {
            c.cat
                .iter()
                .map(|&k| match slot(k)? {
                    Slot::V(Val::F(t)) if t.rank() == 4 => Ok(t.to_dtype(self.dtype)?.contiguous()?),
                    _ => Err(Error::msg(format!("concatenated input {k} is not an NCHW tensor"))),
                })
                .collect::<Result<_>>()?
        };
        let nchw = parts.first().ok_or_else(|| Error::msg("the conv has no input"))?;
        let (_, _, h, w) = nchw.dims4()?;
        let pad = match c.pad {
            PadMode::Valid => Padding::default(),
            PadMode::Explicit(p) => p,
            PadMode::Same => {
                let (top, bottom) = crate::kernels::same_pad(h, c.k.0, c.stride);
                let (left, right) = crate::kernels::same_pad(w, c.k.1, c.stride);
                Padding {
                    top,
                    bottom,
                    left,
                    right,
                }
            }
        };
        let conv = c.conv.as_ref().ok_or_else(|| Error::msg("the conv was not compiled"))?;
        let pre = c.pre.map(|k| slot(k)?.planar(&self.device, self.dtype)).transpose()?;
        let post = c.post.map(|k| self.post_addend(c, slot(k)?)).transpose()?;
        let y = match (&pre, &post, parts.len()) {
            (None, None, 1) => conv.forward_padded(nchw, pad)?,
            _ => {
                let refs: Vec<&Tensor> = parts.iter().collect();
                conv.forward_parts_padded(&refs, pre.as_ref(), post.as_ref(), pad)?
            }
        };
        Ok(if c.nchw_out { Slot::V(Val::F(y)) } else { Slot::P(y) })
    }

    /// The addend after a conv's activation as NCHW planes: after a folded
    /// Transpose to NCHW the graph's value is NCHW already, else it is NHWC.
    fn post_addend(&self, c: &ConvOp, s: &Slot) -> Result<Tensor> {
        match s {
            Slot::V(Val::F(t)) if c.nchw_out => Ok(t.to_dtype(self.dtype)?.contiguous()?),
            Slot::V(_) if c.nchw_out => Err(Error::msg("the residual addend is not a float tensor")),
            Slot::P(_) if c.nchw_out => Err(Error::msg("the residual addend is not NCHW")),
            other => other.planar(&self.device, self.dtype),
        }
    }

    /// A transposed conv, cropped to the output shape given as input 0;
    /// planar in and out.
    fn conv_transpose(&self, t: &ConvTransposeOp, a: &[&Slot]) -> Result<Slot> {
        let slot = |k: usize| a.get(k).ok_or_else(|| Error::msg(format!("input {k} is missing")));
        let shape = slot(0)?.view()?.ints()?;
        let nchw = slot(2)?.planar(&self.device, self.dtype)?;
        let full = match &t.tiles {
            Some(conv) => {
                let (n, _, h, w) = nchw.dims4()?;
                let (kh, kw) = t.k;
                let out = t.filter.dim(1)?;
                // [n, (dy, dx, co), h, w] → [n, co, h, dy, w, dx] → [n, co, h·kh, w·kw].
                conv.forward(&nchw)?
                    .reshape((n, kh, kw, out, h, w))?
                    .permute((0, 3, 4, 1, 5, 2))?
                    .contiguous()?
                    .reshape((n, out, h * kh, w * kw))?
            }
            None => nchw.conv_transpose2d(&t.filter, 0, 0, t.stride, 1)?,
        };
        let (_, _, fh, fw) = full.dims4()?;
        if shape.len() != 4 {
            return Err(Error::msg(format!("output shape {shape:?} must have 4 entries")));
        }
        // A negative size keeps the transposed conv's own (ONNX's, unpadded).
        let size = |v: i64, full: usize| if v < 0 { full } else { v as usize };
        let (oh, ow) = (size(shape[1], fh), size(shape[2], fw));
        if oh > fh || ow > fw {
            return Err(Error::msg(format!(
                "output shape {shape:?} is larger than the transposed conv's {fh}x{fw}"
            )));
        }
        if (oh, ow) == (fh, fw) {
            return Ok(Slot::P(full));
        }
        let (top, left) = if t.same { ((fh - oh) / 2, (fw - ow) / 2) } else { (0, 0) };
        let y = full.narrow(2, top, oh)?.narrow(3, left, ow)?;
        Ok(Slot::P(y.contiguous()?))
    }

    /// `x · b (+ bias)`, `x` transposed first if `ta`.
    fn matmul(&self, b: &Tensor, bias: Option<&Tensor>, ta: bool, a: &[&Val]) -> Result<Val> {
        let x = self.float(a, 0)?;
        let x = if ta { x.t()? } else { x };
        let mut y = x.contiguous()?.matmul(b)?;
        if let Some(bias) = bias {
            y = y.broadcast_add(bias)?;
        }
        Ok(Val::F(y))
    }

    /// The sum of all inputs, broadcast.
    fn add_n(&self, a: &[&Val]) -> Result<Val> {
        let mut acc = self.float(a, 0)?;
        for k in 1..a.len() {
            acc = acc.broadcast_add(&self.float(a, k)?)?;
        }
        Ok(Val::F(acc))
    }

    /// `max(x, alpha·x)` (`min` when `alpha` > 1).
    fn leaky_relu(&self, alpha: f64, a: &[&Val]) -> Result<Val> {
        Ok(Val::F(leaky(&self.float(a, 0)?, alpha)?))
    }

    /// Pad/PadV2: constant padding, the value from input 2 for PadV2, else 0.
    fn pad(&self, value_input: bool, a: &[&Val]) -> Result<Val> {
        let pads = ints(a, 1)?;
        let value = self.pad_value(value_input, a)?;
        match arg(a, 0)? {
            Val::F(x) => Ok(Val::F(ops::pad(x, &pads, value)?)),
            Val::I(x) => Ok(Val::I(x.pad(&pads, value as i64)?)),
        }
    }

    /// The padding value: input 2 for PadV2, else 0.
    fn pad_value(&self, value_input: bool, a: &[&Val]) -> Result<f64> {
        if value_input {
            first_float(&self.float(a, 2)?)
        } else {
            Ok(0.0)
        }
    }

    /// ConcatV2: the inputs but the last joined along the last input's axis.
    fn concat(&self, a: &[&Val]) -> Result<Val> {
        let n = a.len().saturating_sub(1);
        let axis = *ints(a, n)?.first().ok_or_else(|| Error::msg("axis is empty"))?;
        if a[..n].iter().all(|v| matches!(v, Val::I(_))) {
            let parts: Vec<&IntArr> = a[..n].iter().filter_map(|v| v.as_int()).collect();
            return Ok(Val::I(IntArr::concat(&parts, axis)?));
        }
        let parts: Vec<Tensor> = (0..n).map(|k| self.float(a, k)).collect::<Result<_>>()?;
        let rank = parts.first().map(|t| t.rank()).unwrap_or(0);
        let ax = ops::axis(axis, rank)?;
        Ok(Val::F(Tensor::cat(&parts, ax)?))
    }

    /// SplitV: input 0 cut along an axis into the given sizes (one may be -1).
    fn split_v(&self, a: &[&Val]) -> Result<Vec<Val>> {
        let x = self.float(a, 0)?;
        let sizes = ints(a, 1)?;
        let ax = ops::axis(*ints(a, 2)?.first().unwrap_or(&0), x.rank())?;
        let dim = x.dim(ax)?;
        let known: i64 = sizes.iter().filter(|s| **s >= 0).sum();
        let mut out = Vec::with_capacity(sizes.len());
        let mut start = 0usize;
        for s in sizes {
            let len = if s < 0 { dim as i64 - known } else { s };
            let len = usize::try_from(len).map_err(|_| Error::msg("negative split size"))?;
            out.push(Val::F(x.narrow(ax, start, len)?));
            start += len;
        }
        Ok(out)
    }

    /// ResizeBilinear to the size given as input 1.
    fn resize(&self, align_corners: bool, half_pixel: bool, a: &[&Val]) -> Result<Val> {
        let size = ints(a, 1)?;
        if size.len() != 2 || size.iter().any(|s| *s <= 0 || *s > 1 << 15) {
            return Err(Error::msg(format!("resize size {size:?} must be two positive sizes")));
        }
        let y = ops::resize_bilinear(
            &self.float(a, 0)?,
            size[0] as usize,
            size[1] as usize,
            align_corners,
            half_pixel,
        )?;
        Ok(Val::F(y.to_dtype(self.dtype)?))
    }

    /// Mean over the axes given as input 1.
    fn mean(&self, keep_dims: bool, a: &[&Val]) -> Result<Val> {
        let x = self.float(a, 0)?;
        let mut axes: Vec<usize> = ints(a, 1)?
            .iter()
            .map(|&a| ops::axis(a, x.rank()))
            .collect::<Result<_>>()?;
        axes.sort_unstable();
        axes.dedup();
        let mut y = x.mean_keepdim(axes.clone())?;
        if !keep_dims {
            for ax in axes.iter().rev() {
                y = y.squeeze(*ax)?;
            }
        }
        Ok(Val::F(y))
    }

    /// Cast between floats and integers (truncating); other casts keep the value.
    fn cast(&self, to_int: bool, a: &[&Val]) -> Result<Val> {
        match (arg(a, 0)?, to_int) {
            (Val::F(x), true) => Ok(Val::I(IntArr::from_float_trunc(x)?)),
            (Val::I(x), false) => Ok(Val::F(x.to_tensor(&self.device, self.dtype)?)),
            (v, _) => Ok(v.clone()),
        }
    }

    /// Pack: the inputs stacked along a new axis.
    fn pack(&self, axis: i64, a: &[&Val]) -> Result<Val> {
        if a.iter().all(|v| matches!(v, Val::I(_))) {
            let parts: Vec<&IntArr> = a.iter().filter_map(|v| v.as_int()).collect();
            return Ok(Val::I(IntArr::stack(&parts, axis)?));
        }
        let parts: Vec<Tensor> = (0..a.len()).map(|k| self.float(a, k)).collect::<Result<_>>()?;
        let rank = parts.first().map(|t| t.rank()).unwrap_or(0);
        let ax = ops::axis(axis, rank + 1)?;
        Ok(Val::F(Tensor::stack(&parts, ax)?))
    }

    /// ArgMax along the axis given as input 1.
    fn arg_max(&self, a: &[&Val]) -> Result<Val> {
        let x = self.float(a, 0)?;
        let ax = ops::axis(*ints(a, 1)?.first().unwrap_or(&0), x.rank())?;
        let idx = x.argmax(ax)?;
        Ok(Val::I(IntArr::from_tensor(&idx)?))
    }
}

/// Input `k` of a node.
fn arg<'v>(a: &[&'v Val], k: usize) -> Result<&'v Val> {
    a.get(k)
        .copied()
        .ok_or_else(|| Error::msg(format!("input {k} is missing")))
}

/// Input `k` as integers.
fn ints(a: &[&Val], k: usize) -> Result<Vec<i64>> {
    arg(a, k)?.ints()
}

/// Reshape to the shape given as input 1 (one entry may be -1).
fn reshape(a: &[&Val]) -> Result<Val> {
    let shape = ints(a, 1)?;
    match arg(a, 0)? {
        Val::F(x) => {
            let dims = ops::resolve_shape(&shape, x.elem_count())?;
            Ok(Val::F(x.reshape(dims)?))
        }
        Val::I(x) => {
            let dims = ops::resolve_shape(&shape, x.data.len())?;
            Ok(Val::I(IntArr::new(x.data.clone(), dims)?))
        }
    }
}

/// Transpose by the permutation given as input 1.
fn transpose(a: &[&Val]) -> Result<Val> {
    let perm: Vec<usize> = ints(a, 1)?.iter().map(|&p| p.max(0) as usize).collect();
    match arg(a, 0)? {
        Val::F(x) => {
            if perm.len() != x.rank() {
                return Err(Error::msg(format!("perm {perm:?} does not fit rank {}", x.rank())));
            }
            Ok(Val::F(x.permute(perm)?))
        }
        Val::I(x) => Ok(Val::I(x.transpose(&perm)?)),
    }
}

/// Unpack: input 0 cut into its slices along `axis`, that axis dropped.
fn unpack(axis: i64, a: &[&Val]) -> Result<Vec<Val>> {
    match arg(a, 0)? {
        Val::F(x) => {
            let ax = ops::axis(axis, x.rank())?;
            (0..x.dim(ax)?)
                .map(|i| Ok(Val::F(x.narrow(ax, i, 1)?.squeeze(ax)?)))
                .collect()
        }
        Val::I(x) => Ok(x.unpack(axis)?.into_iter().map(Val::I).collect()),
    }
}

/// ExpandDims: a new axis of size 1 at the position given as input 1.
fn expand_dims(a: &[&Val]) -> Result<Val> {
    let ax = *ints(a, 1)?.first().unwrap_or(&0);
    match arg(a, 0)? {
        Val::F(x) => {
            let ax = ops::axis(ax, x.rank() + 1)?;
            Ok(Val::F(x.unsqueeze(ax)?))
        }
        Val::I(x) => Ok(Val::I(x.expand_dims(ax)?)),
    }
}

/// Squeeze the given axes (every axis of size 1 when none are given).
fn squeeze(dims: &[i64], a: &[&Val]) -> Result<Val> {
    match arg(a, 0)? {
        Val::F(x) => {
            let mut axes: Vec<usize> = if dims.is_empty() {
                x.dims()
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| **d == 1)
                    .map(|(i, _)| i)
                    .collect()
            } else {
                dims.iter().map(|&d| ops::axis(d, x.rank())).collect::<Result<_>>()?
            };
            axes.sort_unstable();
            let mut y = x.clone();
            for ax in axes.iter().rev() {
                y = y.squeeze(*ax)?;
            }
            Ok(Val::F(y))
        }
        Val::I(x) => Ok(Val::I(x.squeeze(dims)?)),
    }
}

/// The Placeholder's declared shape (`-1` for unknown dimensions; empty if it declares none).
fn declared_shape(placeholder: &NodeDef) -> Vec<i64> {
    placeholder
        .attr("shape")
        .and_then(|s| s.get("shape"))
        .and_then(|s| s.get("dim"))
        .and_then(|d| d.as_array())
        .map(|dims| {
            dims.iter()
                .map(|d| {
                    d.get("size")
                        .and_then(|s| s.as_i64().or_else(|| s.as_str()?.parse().ok()))
                        .unwrap_or(-1)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One input of a graph.
pub struct GraphInput {
    /// The Placeholder's node name.
    pub name: String,
    /// Its signature key (the name its exporter gave it), else the node name.
    pub key: String,
    /// Its declared shape (`-1` for unknown dimensions; empty if it declares none).
    pub shape: Vec<i64>,
    /// Its node; `None` when no output depends on it.
    node: Option<usize>,
}

/// The signature key of Placeholder `node`, else its name.
fn input_key(json: &GraphJson, node: &str) -> String {
    json.signature
        .as_ref()
        .and_then(|sig| {
            sig.inputs.iter().find_map(|(k, v)| {
                let n = v.get("name").and_then(|n| n.as_str())?;
                (split_ref(n).0 == node).then(|| k.clone())
            })
        })
        .unwrap_or_else(|| node.to_string())
}

/// (signature key, output node name) pairs: the signature's order (tfjs'
/// execute() order), else every Identity.
fn output_names_of(json: &GraphJson) -> Result<Vec<(String, String)>> {
    let mut out_names: Vec<(String, String)> = match &json.signature {
        Some(sig) if !sig.outputs.is_empty() => sig
            .outputs
            .iter()
            .map(|(k, v)| {
                let n = v.get("name").and_then(|n| n.as_str()).unwrap_or(k);
                (k.clone(), n.to_string())
            })
            .collect(),
        _ => json
            .topology
            .node
            .iter()
            .filter(|n| n.op == "Identity")
            .map(|n| (n.name.clone(), n.name.clone()))
            .collect(),
    };
    for (_, n) in &mut out_names {
        *n = split_ref(n).0.to_string();
    }
    if out_names.is_empty() {
        return Err(Error::msg("the graph names no outputs"));
    }
    Ok(out_names)
}

/// Topological order of the nodes the outputs need (iterative DFS).
fn topo_order<'a>(defs: &HashMap<&'a str, &'a NodeDef>, out_names: &'a [String]) -> Result<Vec<&'a str>> {
    let mut order: Vec<&str> = Vec::new();
    let mut state: HashMap<&str, u8> = HashMap::new();
    for out in out_names {
        let mut stack: Vec<(&str, bool)> = vec![(out.as_str(), false)];
        while let Some((name, done)) = stack.pop() {
            if done {
                state.insert(name, 2);
                order.push(name);
                continue;
            }
            match state.get(name) {
                Some(2) => continue,
                Some(1) => return Err(Error::msg(format!("the graph has a cycle through '{name}'"))),
                _ => {}
            }
            let def = defs
                .get(name)
                .ok_or_else(|| Error::msg(format!("node '{name}' is used but not defined")))?;
            state.insert(name, 1);
            stack.push((name, true));
            for inp in &def.input {
                if inp.starts_with('^') {
                    continue; // control dependency
                }
                let (src, _) = split_ref(inp);
                if state.get(src) != Some(&2) {
                    stack.push((src, false));
                }
            }
        }
    }
    Ok(order)
}

/// A Const node's value: its weight as a float tensor or as integers.
fn const_val(
    def: &NodeDef,
    name: &str,
    dtype: DType,
    device: &Device,
    weight: &mut dyn FnMut(&str, DType) -> Result<Tensor>,
) -> Result<Val> {
    let dt = def.attr_type("dtype").unwrap_or_default();
    Ok(match dt.as_str() {
        "DT_FLOAT" => Val::F(weight(name, dtype)?.to_device(device)?),
        "DT_INT32" | "DT_INT64" | "DT_BOOL" => Val::I(IntArr::from_tensor(&weight(name, DType::I64)?)?),
        other => return Err(def.err(format!("constant of unsupported dtype {other}"))),
    })
}

/// The op of a node that computes (neither the Placeholder nor a Const).
fn compute_op<'a>(def: &NodeDef, const_in: &dyn Fn(usize) -> Result<&'a Val>) -> Result<Op> {
    Ok(match def.op.as_str() {
        "Identity" | "StopGradient" => Op::Identity,
        "Conv2D" | "_FusedConv2D" | "DepthwiseConv2dNative" | "FusedDepthwiseConv2dNative" => {
            Op::Conv(Box::new(conv_op(def, const_in)?))
        }
        "Conv2DBackpropInput" => conv_transpose_op(def, const_in)?,
        "_FusedMatMul" | "MatMul" => matmul_op(def, const_in)?,
        "Add" | "AddV2" | "BiasAdd" => Op::Binary(ops::BinOp::Add),
        "Sub" => Op::Binary(ops::BinOp::Sub),
        "Mul" => Op::Binary(ops::BinOp::Mul),
        "RealDiv" | "Div" => Op::Binary(ops::BinOp::Div),
        "FloorDiv" => Op::Binary(ops::BinOp::FloorDiv),
        "Maximum" => Op::Binary(ops::BinOp::Max),
        "Minimum" => Op::Binary(ops::BinOp::Min),
        "SquaredDifference" => Op::Binary(ops::BinOp::SquaredDiff),
        "AddN" => Op::AddN,
        "Relu" => Op::Unary(ops::UnOp::Relu),
        "Relu6" => Op::Unary(ops::UnOp::Relu6),
        "Sigmoid" => Op::Unary(ops::UnOp::Sigmoid),
        "Sqrt" => Op::Unary(ops::UnOp::Sqrt),
        "Exp" => Op::Unary(ops::UnOp::Exp),
        "Tanh" => Op::Unary(ops::UnOp::Tanh),
        "LeakyRelu" => Op::LeakyRelu(def.attr_f("alpha").unwrap_or(0.2)),
        "Pad" => Op::Pad { value_input: false },
        "PadV2" => Op::Pad { value_input: true },
        "MaxPool" => max_pool_op(def)?,
        "ConcatV2" => Op::Concat,
        "Reshape" => Op::Reshape,
        "Transpose" => Op::Transpose,
        "SplitV" => Op::SplitV,
        "ResizeBilinear" => Op::Resize {
            align_corners: def.attr_b("align_corners"),
            half_pixel: def.attr_b("half_pixel_centers"),
        },
        "Mean" => Op::Mean {
            keep_dims: def.attr_b("keep_dims"),
        },
        "Cast" => {
            let to = def.attr_type("DstT").unwrap_or_default();
            Op::Cast {
                to_int: to.starts_with("DT_INT"),
            }
        }
        "Unpack" => Op::Unpack {
            axis: def.attr_i("axis").unwrap_or(0),
        },
        "ExpandDims" => Op::ExpandDims,
        "Squeeze" => Op::Squeeze(def.attr_ints("squeeze_dims")),
        "Pack" => Op::Pack {
            axis: def.attr_i("axis").unwrap_or(0),
        },
        "ArgMax" => Op::ArgMax,
        "GatherNd" => Op::GatherNd,
        "SparseToDense" => Op::SparseToDense,
        "AvgPool" => Op::AvgPool(ops::Window::of(def)?),
        onnx if onnx.starts_with("Onnx") => Op::Onnx(Box::new(super::onnx_ops::OnnxNode::parse(def)?)),
        other => return Err(def.err(format!("op '{other}' is not supported by this build"))),
    })
}

/// A `Conv2DBackpropInput` node, its filter permuted for candle's `conv_transpose2d`.
fn conv_transpose_op<'a>(def: &NodeDef, const_in: &dyn Fn(usize) -> Result<&'a Val>) -> Result<Op> {
    check_nhwc(def)?;
    let f = const_in(1)?.float(def)?;
    let (_, _, _, _) = f.dims4().map_err(|_| def.err("filter must be 4-D"))?;
    // TF [kh, kw, out, in] → candle's conv_transpose2d [in, out, kh, kw].
    let filter = f.permute((3, 2, 0, 1))?.contiguous()?;
    let strides = def.attr_ints("strides");
    let stride = *strides.get(1).unwrap_or(&1) as usize;
    if strides.get(1) != strides.get(2) {
        return Err(def.err(format!("unequal strides {strides:?}")));
    }
    let same = def.attr_str("padding").as_deref() == Some("SAME");
    let (kh, kw, out, cin) = f.dims4()?;
    // Windows that tile the output without overlap (kernel = stride, the
    // usual 2×2 upsampling): one 1×1 conv to kh·kw·out channels on the
    // kernels, then each pixel's channels spread over its kh×kw block.
    let tiles = if kh == stride && kw == stride {
        let w = f.reshape((kh * kw * out, cin, 1, 1))?;
        Some(FastConv::new(w, None, 1, Padding::default(), 1, Act::None)?)
    } else {
        None
    };
    Ok(Op::ConvTranspose(Box::new(ConvTransposeOp {
        filter,
        stride,
        same,
        k: (kh, kw),
        tiles,
    })))
}

/// A `Conv2DBackpropInput` node.
pub(super) struct ConvTransposeOp {
    /// candle's `conv_transpose2d` layout [in, out, kh, kw].
    filter: Tensor,
    stride: usize,
    same: bool,
    k: (usize, usize),
    /// The 1×1 conv computing every kernel tap at once, when the windows
    /// do not overlap.
    tiles: Option<FastConv>,
}

/// A `MatMul`/`_FusedMatMul` node with a constant right-hand side (and bias).
fn matmul_op<'a>(def: &NodeDef, const_in: &dyn Fn(usize) -> Result<&'a Val>) -> Result<Op> {
    let b = const_in(1)?.float(def)?;
    let b = if def.attr_b("transpose_b") {
        b.t()?.contiguous()?
    } else {
        b
    };
    let fused = def.attr_strs("fused_ops");
    let bias = match fused.as_slice() {
        [] => None,
        [x] if x == "BiasAdd" => Some(const_in(2)?.float(def)?),
        other => return Err(def.err(format!("unsupported fused ops {other:?}"))),
    };
    Ok(Op::MatMul {
        b,
        bias,
        ta: def.attr_b("transpose_a"),
    })
}

/// A `MaxPool` node: its window, strides and padding.
fn max_pool_op(def: &NodeDef) -> Result<Op> {
    check_nhwc(def)?;
    let k = def.attr_ints("ksize");
    let s = def.attr_ints("strides");
    if k.len() != 4 || s.len() != 4 {
        return Err(def.err("ksize and strides must have 4 entries"));
    }
    Ok(Op::MaxPool {
        k: (k[1].max(1) as usize, k[2].max(1) as usize),
        stride: (s[1].max(1) as usize, s[2].max(1) as usize),
        same: def.attr_str("padding").as_deref() == Some("SAME"),
    })
}

fn check_nhwc(def: &NodeDef) -> Result<()> {
    match def.attr_str("data_format").as_deref() {
        None | Some("NHWC") => Ok(()),
        Some(other) => Err(def.err(format!("data_format {other} is not supported (NHWC only)"))),
    }
}

/// A conv node (plain, fused, depthwise) compiled onto [`FastConv`].
fn conv_op<'a>(def: &NodeDef, const_in: &dyn Fn(usize) -> Result<&'a Val>) -> Result<ConvOp> {
    check_nhwc(def)?;
    if def.attr_ints("dilations").iter().any(|d| *d != 1) {
        return Err(def.err("dilated convolutions are not supported"));
    }
    let strides = def.attr_ints("strides");
    if strides.len() != 4 || strides[1] != strides[2] || strides[1] < 1 {
        return Err(def.err(format!("strides {strides:?} must be [1, s, s, 1]")));
    }
    let stride = strides[1] as usize;
    let f = const_in(1)?.float(def)?;
    let (kh, kw, cin, m) = f.dims4().map_err(|_| def.err("filter must be 4-D"))?;
    let depthwise = def.op.contains("Depthwise");
    let (weight, groups) = if depthwise {
        if m != 1 {
            return Err(def.err(format!("depth multiplier {m} is not supported")));
        }
        (f.permute((2, 3, 0, 1))?.reshape((cin, 1, kh, kw))?, cin)
    } else {
        (f.permute((3, 2, 0, 1))?.contiguous()?, 1)
    };
    let fused = def.attr_strs("fused_ops");
    let (bias, act) = match fused.iter().map(|s| s.as_str()).collect::<Vec<_>>().as_slice() {
        [] => (None, Act::None),
        ["BiasAdd"] => (Some(const_in(2)?.float(def)?), Act::None),
        ["BiasAdd", "Relu"] => (Some(const_in(2)?.float(def)?), Act::Relu),
        ["BiasAdd", "Relu6"] => (Some(const_in(2)?.float(def)?), Act::Relu6),
        ["BiasAdd", "LeakyRelu"] => (
            Some(const_in(2)?.float(def)?),
            Act::Leaky(def.attr_f("leakyrelu_alpha").unwrap_or(0.2) as f32),
        ),
        other => return Err(def.err(format!("unsupported fused ops {other:?}"))),
    };
    let pad = match def.attr_str("padding").as_deref() {
        Some("SAME") => PadMode::Same,
        Some("VALID") | None => PadMode::Valid,
        Some("EXPLICIT") => {
            let p = def.attr_ints("explicit_paddings");
            if p.len() != 8 || p.iter().any(|v| *v < 0) {
                return Err(def.err(format!("explicit_paddings {p:?} must be 8 non-negative values")));
            }
            PadMode::Explicit(Padding {
                top: p[2] as usize,
                bottom: p[3] as usize,
                left: p[4] as usize,
                right: p[5] as usize,
            })
        }
        Some(other) => return Err(def.err(format!("padding {other} is not supported"))),
    };
    Ok(ConvOp {
        weight,
        bias,
        groups,
        act,
        k: (kh, kw),
        stride,
        pad,
        pre: None,
        post: None,
        cat: Vec::new(),
        nchw_out: false,
        input_nchw: false,
        conv: None,
    })
}

impl ConvOp {
    /// Packs the weights for the kernels, with the bias and activation as
    /// fused (once, at load).
    fn compile(&mut self) -> Result<()> {
        let bias = self.bias.clone();
        self.conv = Some(FastConv::new(
            self.weight.clone(),
            bias,
            self.stride,
            Padding::default(),
            self.groups,
            self.act,
        )?);
        Ok(())
    }
}

/// The first element of `t` (0 for an empty tensor).
fn first_float(t: &Tensor) -> Result<f64> {
    Ok(t.flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .first()
        .copied()
        .unwrap_or(0.0))
}

/// `max(x, alpha·x)` (`min` when `alpha` > 1): TF's LeakyRelu.
fn leaky(x: &Tensor, alpha: f64) -> Result<Tensor> {
    let neg = x.affine(alpha, 0.0)?;
    Ok(if alpha <= 1.0 {
        x.maximum(&neg)?
    } else {
        x.minimum(&neg)?
    })
}
