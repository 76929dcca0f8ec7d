//! Fusion at load: the nodes right after a conv that its kernel can do in
//! its output pass are folded into it.
//!
//! Walking from each conv along its single consumer, as long as the value
//! is read by that one node only and is not a graph output:
//!
//! - `Add`/`AddV2`/`BiasAdd` of a constant vector over the output channels
//!   joins the bias (before any activation);
//! - `Relu`, `Relu6`, `LeakyRelu` (alpha ≤ 1) become the activation, and so
//!   does a SiLU written out as `Mul(x, Sigmoid(x))` (ONNX exports of YOLO);
//! - `Add`/`AddV2`/`AddN` of another value computed before the conv becomes
//!   an addend before the activation (`act(conv + bias + r)`, the residual
//!   connections of MobileNet and BlazePalm), or after it when the conv has
//!   its activation already (`act(conv + bias) + r`, YOLO's bottlenecks);
//! - a `Transpose` to NCHW (graphs converted from ONNX) only relabels the
//!   output, so an activation after it still joins.
//!
//! Before the conv, a zero `Pad` of the image's height and width (alone, or
//! of NCHW planes then a `Transpose` back to NHWC, as ONNX-converted graphs
//! pad) becomes the conv's own padding: the kernels pad in place. A channel
//! `Concat` of NCHW values then a `Transpose` to NHWC (YOLO's C2f in ONNX
//! exports) becomes the conv's parts: the kernels read them in place.
//!
//! The conv then runs where the chain's last node was (so an addend
//! computed after the conv itself is there when it runs), reading the
//! conv's input and the addend; the conv and the other folded nodes become
//! `Folded` (nothing to run). Anything else ends the walk, and the node runs
//! as before: an unfusable pattern falls back by construction.

use candle_core::Tensor;

use super::executor::{ConvOp, Node, Op, PadMode};
use super::ops::{BinOp, UnOp, Val};
use crate::error::Result;
use crate::kernels::{Act, Padding};

/// Folds what it can into each conv; returns how many nodes it folded.
pub(super) fn fuse(nodes: &mut [Node], outputs: &[usize]) -> Result<usize> {
    let mut readers = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for &(src, _) in &node.inputs {
            readers[src].push(i);
        }
    }
    let mut folded = 0;
    for conv_at in 0..nodes.len() {
        if !matches!(nodes[conv_at].op, Op::Conv(_)) {
            continue;
        }
        let pads = fold_pad_before(nodes, &readers, outputs, conv_at);
        folded += pads;
        if pads == 0 {
            folded += fold_concat_before(nodes, &readers, outputs, conv_at);
        }
        let mut chain = vec![conv_at];
        let mut cur = conv_at;
        while !outputs.contains(&cur) {
            if let Some((sig, mul)) = silu_after(nodes, &readers, outputs, conv_at, cur) {
                if let Op::Conv(conv) = &mut nodes[conv_at].op {
                    conv.act = Act::Silu;
                }
                chain.extend([sig, mul]);
                cur = mul;
                continue;
            }
            if readers[cur].len() != 1 {
                break;
            }
            let next = readers[cur][0];
            let Some(step) = step_after(nodes, conv_at, cur, next) else {
                break;
            };
            let Node { op, inputs, .. } = &mut nodes[conv_at];
            let Op::Conv(conv) = op else {
                break;
            };
            apply(conv, step, inputs)?;
            chain.push(next);
            cur = next;
        }
        if let [.., end] = chain[..] {
            if end != conv_at {
                // The conv moves to the chain's end; the rest runs nothing.
                let op = std::mem::replace(&mut nodes[conv_at].op, Op::Folded);
                let inputs = std::mem::take(&mut nodes[conv_at].inputs);
                for &i in &chain[1..] {
                    nodes[i].op = Op::Folded;
                    nodes[i].inputs.clear();
                }
                nodes[end].op = op;
                nodes[end].inputs = inputs;
                folded += chain.len() - 1;
            }
        }
    }
    Ok(folded)
}

/// Folds a zero Pad (and a Transpose from NCHW) before the conv at
/// `conv_at` into its padding; returns how many nodes it folded.
fn fold_pad_before(nodes: &mut [Node], readers: &[Vec<usize>], outputs: &[usize], conv_at: usize) -> usize {
    let only_reader = |i: usize, r: usize| readers[i] == [r] && !outputs.contains(&i);
    let Some(&(src, 0)) = nodes[conv_at].inputs.first() else {
        return 0;
    };
    // NHWC: Pad → conv. NCHW: Pad → Transpose(0, 2, 3, 1) → conv.
    let (pad_at, transpose_at) = match &nodes[src].op {
        Op::Pad { value_input: false } => (src, None),
        Op::Transpose if only_reader(src, conv_at) && perm_of(nodes, src) == Some(&[0, 2, 3, 1][..]) => {
            match nodes[src].inputs.first() {
                Some(&(p, 0)) => (p, Some(src)),
                _ => return 0,
            }
        }
        _ => return 0,
    };
    let reader = transpose_at.unwrap_or(conv_at);
    if !matches!(nodes[pad_at].op, Op::Pad { value_input: false }) || !only_reader(pad_at, reader) {
        return 0;
    }
    let Some(pads) = nodes[pad_at].inputs.get(1).and_then(|&(k, _)| const_ints(nodes, k)) else {
        return 0;
    };
    let pads = pads.to_vec();
    // Only the image's height and width may be padded.
    let (h, w) = if transpose_at.is_some() { (4, 6) } else { (2, 4) };
    let spatial = [h, h + 1, w, w + 1];
    if pads.len() != 8
        || pads
            .iter()
            .enumerate()
            .any(|(i, p)| *p < 0 || (!spatial.contains(&i) && *p != 0))
    {
        return 0;
    }
    let Some(&input) = nodes[pad_at].inputs.first() else {
        return 0;
    };
    let Op::Conv(conv) = &mut nodes[conv_at].op else {
        return 0;
    };
    let old = match conv.pad {
        PadMode::Valid => Padding::default(),
        PadMode::Explicit(p) => p,
        PadMode::Same => return 0,
    };
    conv.pad = PadMode::Explicit(Padding {
        top: old.top + pads[h] as usize,
        bottom: old.bottom + pads[h + 1] as usize,
        left: old.left + pads[w] as usize,
        right: old.right + pads[w + 1] as usize,
    });
    conv.input_nchw = transpose_at.is_some();
    nodes[conv_at].inputs[0] = input;
    for i in std::iter::once(pad_at).chain(transpose_at) {
        nodes[i].op = Op::Folded;
        nodes[i].inputs.clear();
    }
    1 + usize::from(transpose_at.is_some())
}

/// Folds a channel Concat of NCHW values, then a Transpose to NHWC, before
/// the conv at `conv_at` (ONNX graphs: YOLO's C2f joins its branches for a
/// 1×1 conv): the conv reads the parts themselves. Returns the nodes folded.
fn fold_concat_before(nodes: &mut [Node], readers: &[Vec<usize>], outputs: &[usize], conv_at: usize) -> usize {
    let only_reader = |i: usize, r: usize| readers[i] == [r] && !outputs.contains(&i);
    let Some(&(t, 0)) = nodes[conv_at].inputs.first() else {
        return 0;
    };
    if !matches!(nodes[t].op, Op::Transpose) || !only_reader(t, conv_at) || perm_of(nodes, t) != Some(&[0, 2, 3, 1][..])
    {
        return 0;
    }
    let Some(&(cat, 0)) = nodes[t].inputs.first() else {
        return 0;
    };
    if !matches!(nodes[cat].op, Op::Concat) || !only_reader(cat, t) {
        return 0;
    }
    let Some((&(axis_at, _), parts)) = nodes[cat].inputs.split_last() else {
        return 0;
    };
    if const_ints(nodes, axis_at) != Some(&[1][..]) || parts.is_empty() {
        return 0;
    }
    let parts = parts.to_vec();
    let Op::Conv(conv) = &mut nodes[conv_at].op else {
        return 0;
    };
    if conv.input_nchw {
        return 0;
    }
    let inputs = &mut nodes[conv_at].inputs;
    inputs[0] = parts[0];
    conv.cat = vec![0];
    for p in &parts[1..] {
        conv.cat.push(inputs.len());
        inputs.push(*p);
    }
    for i in [t, cat] {
        nodes[i].op = Op::Folded;
        nodes[i].inputs.clear();
    }
    2
}

/// The permutation of a Transpose node, when it is a constant.
fn perm_of(nodes: &[Node], at: usize) -> Option<&[i64]> {
    nodes[at].inputs.get(1).and_then(|&(k, _)| const_ints(nodes, k))
}

/// A Const node's integers.
fn const_ints(nodes: &[Node], at: usize) -> Option<&[i64]> {
    match &nodes[at].op {
        Op::Const(Val::I(a)) => Some(&a.data),
        _ => None,
    }
}

/// `x · sigmoid(x)` right after the conv (the SiLU of YOLO exports: the
/// value read by a Sigmoid and by the Mul of the two, and by nothing else):
/// the (Sigmoid, Mul) to fold as the conv's activation.
fn silu_after(
    nodes: &[Node],
    readers: &[Vec<usize>],
    outputs: &[usize],
    conv_at: usize,
    cur: usize,
) -> Option<(usize, usize)> {
    let Op::Conv(conv) = &nodes[conv_at].op else {
        return None;
    };
    if conv.act != Act::None {
        return None;
    }
    let [a, b] = readers[cur][..] else {
        return None;
    };
    let (sig, mul) = if matches!(nodes[a].op, Op::Unary(UnOp::Sigmoid)) {
        (a, b)
    } else {
        (b, a)
    };
    let is_sig = matches!(nodes[sig].op, Op::Unary(UnOp::Sigmoid)) && nodes[sig].inputs == [(cur, 0)];
    let is_mul = matches!(nodes[mul].op, Op::Binary(BinOp::Mul))
        && (nodes[mul].inputs == [(cur, 0), (sig, 0)] || nodes[mul].inputs == [(sig, 0), (cur, 0)]);
    (is_sig && is_mul && readers[sig] == [mul] && !outputs.contains(&sig)).then_some((sig, mul))
}

/// What folding node `next` (reading `cur`, the chain from the conv at
/// `conv_at`) does to the conv.
enum Step {
    Bias(Tensor),
    Act(Act),
    Addend((usize, usize)),
    Post((usize, usize)),
    ToNchw,
}

fn step_after(nodes: &[Node], conv_at: usize, cur: usize, next: usize) -> Option<Step> {
    let Op::Conv(conv) = &nodes[conv_at].op else {
        return None;
    };
    let node = &nodes[next];
    let other = || -> Option<(usize, usize)> {
        match node.inputs.as_slice() {
            [a, b] if a.0 == cur && b.0 != cur => Some(*b),
            [a, b] if b.0 == cur && a.0 != cur => Some(*a),
            _ => None,
        }
    };
    let plain = conv.act == Act::None && !conv.nchw_out;
    match &node.op {
        Op::Binary(BinOp::Add) | Op::AddN if plain => {
            let (src, k) = other()?;
            match &nodes[src].op {
                Op::Const(Val::F(t)) => channel_vector(t, conv.cout()).map(Step::Bias),
                Op::Const(_) => None,
                _ if conv.pre.is_none() => Some(Step::Addend((src, k))),
                _ => None,
            }
        }
        // After the activation: a residual Add of a value computed before
        // (not a constant), added in the conv's output pass.
        Op::Binary(BinOp::Add) | Op::AddN if conv.act != Act::None && conv.post.is_none() => {
            let (src, k) = other()?;
            match &nodes[src].op {
                Op::Const(_) => None,
                _ => Some(Step::Post((src, k))),
            }
        }
        Op::Unary(UnOp::Relu) if conv.act == Act::None => Some(Step::Act(Act::Relu)),
        Op::Unary(UnOp::Relu6) if conv.act == Act::None => Some(Step::Act(Act::Relu6)),
        Op::LeakyRelu(a) if conv.act == Act::None && *a <= 1.0 => Some(Step::Act(Act::Leaky(*a as f32))),
        Op::Transpose if !conv.nchw_out => {
            let perm = node.inputs.get(1)?;
            (const_ints(nodes, perm.0)? == [0, 3, 1, 2]).then_some(Step::ToNchw)
        }
        _ => None,
    }
}

/// `t` as a bias over `c` output channels: NHWC shapes `[c]` … `[1, 1, 1, c]`.
fn channel_vector(t: &Tensor, c: usize) -> Option<Tensor> {
    let fits = t.elem_count() == c && t.dims().last() == Some(&c) && t.rank() <= 4;
    fits.then(|| t.flatten_all().ok()).flatten()
}

fn apply(conv: &mut ConvOp, step: Step, inputs: &mut Vec<(usize, usize)>) -> Result<()> {
    match step {
        Step::Bias(b) => {
            let b = b.to_dtype(conv.weight.dtype())?;
            conv.bias = Some(match conv.bias.take() {
                Some(old) => (old + b)?,
                None => b,
            });
        }
        Step::Act(a) => conv.act = a,
        Step::Addend(src) => {
            conv.pre = Some(inputs.len());
            inputs.push(src);
        }
        Step::Post(src) => {
            conv.post = Some(inputs.len());
            inputs.push(src);
        }
        Step::ToNchw => conv.nchw_out = true,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::Engine as _;
    use candle_core::{DType, Device, Tensor};
    use serde_json::{json, Value};

    use super::super::executor::{Graph, GraphJson};

    /// A tfjs node.
    fn node(name: &str, op: &str, inputs: &[&str], attr: Value) -> Value {
        json!({"name": name, "op": op, "input": inputs, "attr": attr})
    }

    fn s(v: &str) -> Value {
        json!({"s": base64::engine::general_purpose::STANDARD.encode(v)})
    }

    fn conv_attr(op: &str, fused: &[&str]) -> Value {
        let mut a = json!({
            "strides": {"list": {"i": ["1", "1", "1", "1"]}},
            "padding": s("SAME"),
        });
        if op.starts_with("_Fused") || op.starts_with("Fused") {
            let ops: Vec<String> = fused
                .iter()
                .map(|f| base64::engine::general_purpose::STANDARD.encode(f))
                .collect();
            a["fused_ops"] = json!({"list": {"s": ops}});
        }
        a
    }

    /// Pseudo-random values in [-1, 1) from `seed`.
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A graph over a [1, 6, 7, C] input from its nodes (the Placeholder
    /// `x` added), its float constants and int constants.
    struct Case {
        nodes: Vec<Value>,
        floats: HashMap<String, Tensor>,
        ints: HashMap<String, Vec<i64>>,
        c: usize,
    }

    impl Case {
        fn new(c: usize) -> Case {
            let shape =
                json!({"shape": {"dim": [{"size": "1"}, {"size": "6"}, {"size": "7"}, {"size": c.to_string()}]}});
            Case {
                nodes: vec![node("x", "Placeholder", &[], json!({"shape": shape}))],
                floats: HashMap::new(),
                ints: HashMap::new(),
                c,
            }
        }

        fn float(&mut self, name: &str, dims: &[usize]) -> &mut Self {
            let n = dims.iter().product();
            let t = Tensor::from_vec(values(self.floats.len() as u64 + 7, n), dims, &Device::Cpu).unwrap();
            self.floats.insert(name.into(), t);
            self.nodes
                .push(node(name, "Const", &[], json!({"dtype": {"type": "DT_FLOAT"}})));
            self
        }

        fn ints(&mut self, name: &str, v: &[i64]) -> &mut Self {
            self.ints.insert(name.into(), v.to_vec());
            self.nodes
                .push(node(name, "Const", &[], json!({"dtype": {"type": "DT_INT32"}})));
            self
        }

        fn op(&mut self, name: &str, op: &str, inputs: &[&str], attr: Value) -> &mut Self {
            self.nodes.push(node(name, op, inputs, attr));
            self
        }

        fn graph(&self, outputs: &[&str], fuse: bool) -> Graph {
            let outs: serde_json::Map<String, Value> =
                outputs.iter().map(|o| (o.to_string(), json!({"name": o}))).collect();
            let j: GraphJson = serde_json::from_value(json!({
                "modelTopology": {"node": self.nodes},
                "signature": {"outputs": outs},
            }))
            .unwrap();
            let mut weight = |name: &str, dt: DType| -> crate::Result<Tensor> {
                if let Some(v) = self.ints.get(name) {
                    return Ok(Tensor::new(v.as_slice(), &Device::Cpu)?);
                }
                Ok(self.floats[name].to_dtype(dt)?)
            };
            Graph::build_with(&j, DType::F32, &Device::Cpu, &mut weight, fuse).unwrap()
        }

        /// Runs the graph fused and unfused on random inputs: the same
        /// outputs (to float rounding); returns how many nodes were fused.
        fn check(&self, outputs: &[&str]) -> usize {
            let fused = self.graph(outputs, true);
            let plain = self.graph(outputs, false);
            assert_eq!(plain.fused_nodes(), 0);
            for seed in 0..3 {
                let x = Tensor::from_vec(values(100 + seed, 6 * 7 * self.c), (1, 6, 7, self.c), &Device::Cpu).unwrap();
                let a = fused.run(&x).unwrap();
                let b = plain.run(&x).unwrap();
                for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
                    assert_eq!(na, nb);
                    assert_eq!(ta.dims(), tb.dims(), "{na}");
                    let d: f32 = (ta - tb)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar()
                        .unwrap();
                    let scale: f32 = tb.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
                    assert!(d <= 1e-5 * scale.max(1.0), "{na}: fused differs by {d}");
                }
            }
            fused.fused_nodes()
        }
    }

    #[test]
    fn conv_bias_and_activation_fold_into_the_conv() {
        for (act, alpha) in [("Relu", None), ("Relu6", None), ("LeakyRelu", Some(0.1))] {
            let mut c = Case::new(3);
            c.float("w", &[3, 3, 3, 5]).float("b", &[5]);
            c.op("conv", "Conv2D", &["x", "w"], conv_attr("Conv2D", &[]));
            c.op("add", "BiasAdd", &["conv", "b"], json!({}));
            let attr = alpha.map(|a| json!({"alpha": {"f": a}})).unwrap_or(json!({}));
            c.op("act", act, &["add"], attr);
            assert_eq!(c.check(&["act"]), 2, "{act}");
        }
    }

    #[test]
    fn a_transpose_to_nchw_between_bias_and_activation_folds_too() {
        // NanoDet's shape: Conv2D > Add(bias) > Transpose(NCHW) > LeakyRelu.
        let mut c = Case::new(4);
        c.float("w", &[1, 1, 4, 6])
            .float("b", &[1, 1, 1, 6])
            .ints("perm", &[0, 3, 1, 2]);
        c.op("conv", "Conv2D", &["x", "w"], conv_attr("Conv2D", &[]));
        c.op("add", "Add", &["b", "conv"], json!({}));
        c.op("t", "Transpose", &["add", "perm"], json!({}));
        c.op("act", "LeakyRelu", &["t"], json!({"alpha": {"f": 0.2}}));
        assert_eq!(c.check(&["act"]), 3);
    }

    #[test]
    fn an_onnx_silu_and_the_residual_after_it_fold_into_the_conv() {
        // A YOLO bottleneck as the ONNX importer lowers it, on an NCHW value:
        // Transpose(NHWC) > Conv2D+bias > Transpose(NCHW) > x·Sigmoid(x) > Add(input).
        let mut c = Case::new(4);
        c.float("w", &[3, 3, 4, 4])
            .float("b", &[4])
            .ints("to_nchw", &[0, 3, 1, 2])
            .ints("to_nhwc", &[0, 2, 3, 1]);
        c.op("xn", "Transpose", &["x", "to_nchw"], json!({}));
        c.op("t0", "Transpose", &["xn", "to_nhwc"], json!({}));
        c.op(
            "conv",
            "_FusedConv2D",
            &["t0", "w", "b"],
            conv_attr("_FusedConv2D", &["BiasAdd"]),
        );
        c.op("t1", "Transpose", &["conv", "to_nchw"], json!({}));
        c.op("sig", "Sigmoid", &["t1"], json!({}));
        c.op("silu", "Mul", &["t1", "sig"], json!({}));
        c.op("sum", "AddV2", &["xn", "silu"], json!({}));
        // Transpose, Sigmoid, Mul and Add fold; the graph's output stays NCHW.
        assert_eq!(c.check(&["sum"]), 4);
        // A Sigmoid read by anything else stays: the Mul is not a SiLU then.
        let mut c2 = Case::new(4);
        c2.float("w", &[1, 1, 4, 4]).ints("to_nchw", &[0, 3, 1, 2]);
        c2.op("conv", "Conv2D", &["x", "w"], conv_attr("Conv2D", &[]));
        c2.op("t1", "Transpose", &["conv", "to_nchw"], json!({}));
        c2.op("sig", "Sigmoid", &["t1"], json!({}));
        c2.op("silu", "Mul", &["t1", "sig"], json!({}));
        c2.op("also", "Exp", &["sig"], json!({}));
        assert_eq!(c2.check(&["silu", "also"]), 1, "only the Transpose folds");
    }

    #[test]
    fn a_channel_concat_of_nchw_values_before_a_conv_folds_into_it() {
        // YOLO's C2f as the ONNX importer lowers it: two NCHW branches,
        // Concat(axis 1) > Transpose(NHWC) > 1x1 conv > Transpose(NCHW).
        let mut c = Case::new(4);
        c.float("w", &[1, 1, 8, 3])
            .float("w2", &[3, 3, 4, 4])
            .ints("to_nchw", &[0, 3, 1, 2])
            .ints("to_nhwc", &[0, 2, 3, 1])
            .ints("axis", &[1]);
        c.op("a", "Transpose", &["x", "to_nchw"], json!({}));
        c.op("bconv", "Conv2D", &["x", "w2"], conv_attr("Conv2D", &[]));
        c.op("b", "Transpose", &["bconv", "to_nchw"], json!({}));
        c.op("cat", "ConcatV2", &["a", "b", "axis"], json!({}));
        c.op("t0", "Transpose", &["cat", "to_nhwc"], json!({}));
        c.op("conv", "Conv2D", &["t0", "w"], conv_attr("Conv2D", &[]));
        c.op("out", "Transpose", &["conv", "to_nchw"], json!({}));
        // The Concat and its Transpose, and each conv's Transpose to NCHW.
        assert_eq!(c.check(&["out"]), 4);
        // Read by anything else, the Concat stays.
        c.op("also", "Exp", &["cat"], json!({}));
        assert_eq!(c.check(&["out", "also"]), 2);
    }

    #[test]
    fn residual_adds_before_the_activation_fold_in() {
        // BlazePalm: depthwise > 1x1 conv (bias) > AddV2(residual) > Relu.
        let mut c = Case::new(4);
        c.float("dw", &[3, 3, 4, 1])
            .float("pw", &[1, 1, 4, 4])
            .float("pb", &[4]);
        c.op(
            "d",
            "DepthwiseConv2dNative",
            &["x", "dw"],
            conv_attr("DepthwiseConv2dNative", &[]),
        );
        c.op(
            "p",
            "_FusedConv2D",
            &["d", "pw", "pb"],
            conv_attr("_FusedConv2D", &["BiasAdd"]),
        );
        c.op("sum", "AddV2", &["x", "p"], json!({}));
        c.op("act", "Relu", &["sum"], json!({}));
        assert_eq!(c.check(&["act"]), 2);
        // Hand landmarks: Conv2D > AddN(residual) > AddV2(bias), then Relu6.
        let mut c = Case::new(4);
        c.float("w", &[1, 1, 4, 4]).float("b", &[4]);
        c.op("conv", "Conv2D", &["x", "w"], conv_attr("Conv2D", &[]));
        c.op("sum", "AddN", &["conv", "x"], json!({}));
        c.op("bias", "AddV2", &["sum", "b"], json!({}));
        c.op("act", "Relu6", &["bias"], json!({}));
        assert_eq!(c.check(&["act"]), 3);
    }

    #[test]
    fn unfusable_patterns_run_as_they_are() {
        let mut c = Case::new(3);
        c.float("w", &[3, 3, 3, 3])
            .float("w2", &[1, 1, 3, 3])
            .float("b", &[7, 3]);
        c.op("conv", "Conv2D", &["x", "w"], conv_attr("Conv2D", &[]));
        // Read twice: the conv's own output must stay as it is.
        c.op("r1", "Relu", &["conv"], json!({}));
        c.op("r2", "Sigmoid", &["conv"], json!({}));
        // A [W, C] constant is no bias; LeakyRelu with alpha > 1 is a min.
        c.op("c2", "Conv2D", &["r1", "w2"], conv_attr("Conv2D", &[]));
        c.op("c3", "Conv2D", &["r2", "w2"], conv_attr("Conv2D", &[]));
        c.op("sum", "AddV2", &["c2", "c3"], json!({}));
        c.op("nb", "AddV2", &["sum", "b"], json!({}));
        c.op("l", "LeakyRelu", &["nb"], json!({"alpha": {"f": 2.0}}));
        // c2 takes c3's output as its addend (computed after c2: the fused
        // conv runs where the sum was); nothing else folds.
        assert_eq!(c.check(&["l", "r1"]), 1);
    }

    #[test]
    fn a_two_by_two_upsampling_transposed_conv_equals_candles() {
        let mut c = Case::new(3);
        c.float("w", &[2, 2, 4, 3]).ints("shape", &[1, 12, 14, 4]);
        let attr = json!({"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": s("SAME")});
        c.op("up", "Conv2DBackpropInput", &["shape", "w", "x"], attr);
        let g = c.graph(&["up"], true);
        let x = Tensor::from_vec(values(5, 6 * 7 * 3), (1, 6, 7, 3), &Device::Cpu).unwrap();
        let got = g.run(&x).unwrap().remove(0).1;
        let filter = c.floats["w"].permute((3, 2, 0, 1)).unwrap().contiguous().unwrap();
        let want = x
            .permute((0, 3, 1, 2))
            .unwrap()
            .contiguous()
            .unwrap()
            .conv_transpose2d(&filter, 0, 0, 2, 1)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        assert_eq!(got.dims(), [1, 12, 14, 4]);
        let d: f32 = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 1e-5, "differs by {d}");
    }

    #[test]
    fn zero_pads_before_a_conv_become_its_padding() {
        let valid = || {
            let mut a = conv_attr("Conv2D", &[]);
            a["padding"] = s("VALID");
            a
        };
        // NHWC: Pad → Conv2D (VALID).
        let mut c = Case::new(3);
        c.float("w", &[3, 3, 3, 4]).ints("pads", &[0, 0, 1, 2, 2, 1, 0, 0]);
        c.op("pad", "Pad", &["x", "pads"], json!({}));
        c.op("conv", "Conv2D", &["pad", "w"], valid());
        assert_eq!(c.check(&["conv"]), 1);
        // NCHW (ONNX-converted): Transpose → Pad → Transpose → Conv2D.
        let mut c = Case::new(3);
        c.float("w", &[3, 3, 3, 4])
            .ints("to_nchw", &[0, 3, 1, 2])
            .ints("to_nhwc", &[0, 2, 3, 1]);
        c.ints("pads", &[0, 0, 0, 0, 1, 1, 0, 2]);
        c.op("t1", "Transpose", &["x", "to_nchw"], json!({}));
        c.op("pad", "Pad", &["t1", "pads"], json!({}));
        c.op("t2", "Transpose", &["pad", "to_nhwc"], json!({}));
        c.op("conv", "Conv2D", &["t2", "w"], valid());
        assert_eq!(c.check(&["conv"]), 2);
        // Padding the channels is no conv padding: left as it is.
        let mut c = Case::new(3);
        c.float("w", &[3, 3, 4, 4]).ints("pads", &[0, 0, 1, 1, 1, 1, 0, 1]);
        c.op("pad", "Pad", &["x", "pads"], json!({}));
        c.op("conv", "Conv2D", &["pad", "w"], valid());
        assert_eq!(c.check(&["conv"]), 0);
    }
}
