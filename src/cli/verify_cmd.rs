//! `modeldock verify --arch A --variant V --task T --weights W --input I --expected O [--tol F]
//! [--rtol F] [--json]`: the raw network on a reference input, compared with
//! the reference output. Exits 1 above the tolerance. For yolov8, `--weights`
//! may be an Ultralytics checkpoint (`.pt`), read in memory by
//! [`crate::import::pt`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use super::args::VerifyArgs;
use crate::catalog::manifest::{Manifest, WeightsRef};
use crate::catalog::safetensors_header::read_header;
use crate::catalog::weights_source::WeightsSource;
use crate::error::{Error, Result};
use crate::graph::executor as tf_graph;
use crate::import::pt as pt_import;
use crate::models::face_landmarks::LandmarkNet;
use crate::models::tiny_face_detector::TinyFaceDetector;
use crate::models::weights::var_builder;
use crate::models::yolov8::{HeadKind, YoloV8};

/// The tensor named `preferred`, or the only tensor in the file.
fn one_tensor(path: &Path, preferred: &str) -> Result<Tensor> {
    let name = path.display();
    let mut t: HashMap<String, Tensor> =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::from(e).context(&name))?;
    if let Some(x) = t.remove(preferred) {
        return Ok(x);
    }
    if t.len() == 1 {
        if let Some((_, x)) = t.into_iter().next() {
            return Ok(x);
        }
    }
    Err(Error::msg(format!(
        "{name}: no tensor named '{preferred}' (and more than one tensor)"
    )))
}

/// The tensors of a YOLOv8 checkpoint, imported in memory; its variant and
/// task must be the ones asked for.
fn checkpoint_var_builder(
    arch: &str,
    variant: &str,
    task: &str,
    weights: &Path,
) -> Result<candle_nn::VarBuilder<'static>> {
    if arch != "yolov8" {
        return Err(Error::usage(format!(
            "verify: a .pt checkpoint needs --arch yolov8 (not '{arch}')"
        )));
    }
    let ck = pt_import::read_checkpoint(weights)?;
    if ck.variant != variant || ck.task != task {
        return Err(Error::usage(format!(
            "{}: a YOLOv8{} {} checkpoint; pass --variant {} --task {}",
            weights.display(),
            ck.variant,
            ck.task,
            ck.variant,
            ck.task
        )));
    }
    Ok(candle_nn::VarBuilder::from_tensors(
        ck.tensor_map(),
        DType::F32,
        &Device::Cpu,
    ))
}

/// Runs the raw network of `arch` on `input`.
pub fn raw_forward(arch: &str, variant: &str, task: &str, weights: &Path, input: &Tensor) -> Result<Tensor> {
    let vb = if pt_import::is_checkpoint_path(weights) {
        checkpoint_var_builder(arch, variant, task, weights)?
    } else {
        let total = read_header(weights)?.data_bytes;
        var_builder(
            &WeightsSource::File(weights.to_path_buf()),
            total,
            &Device::Cpu,
            Arc::new(|_, _| {}),
        )?
    };
    match arch {
        "yolov8" => {
            let t = HeadKind::named(task)?;
            let nc = match t {
                HeadKind::Segment => {
                    return Err(Error::usage(
                        "verify: YOLOv8 segmentation runs from an ONNX import: use --onnx",
                    ))
                }
                HeadKind::Pose => 1,
                HeadKind::Detect => {
                    // Classes from the last class conv's bias.
                    let probe = vb.clone().set_dtype(DType::F32);
                    (1..=1000)
                        .rev()
                        .find(|n| {
                            probe.get(*n, "model.22.cv3.0.2.bias").is_ok() || probe.get(*n, "head.cv3.0.2.bias").is_ok()
                        })
                        .unwrap_or(80)
                }
            };
            YoloV8::build(vb, variant, t, nc)?.forward(input)
        }
        "tiny_face_detector" => {
            let m = Manifest {
                id: "verify".into(),
                name: "verify".into(),
                task: crate::catalog::Task::Detect,
                arch: crate::catalog::Arch::TinyFaceDetector,
                variant: variant.into(),
                weights: WeightsRef::Path(weights.display().to_string()),
                input_size: input.dim(2)? as u32,
                labels: vec![],
                dtype: "f32".into(),
                preload: false,
                pinned: false,
                keep_alive: None,
                licence: String::new(),
                conf: None,
                iou: None,
                options: Default::default(),
                provenance: None,
                backend: None,
                decode: None,
                inputs: Vec::new(),
                outputs: Vec::new(),
            };
            Ok(TinyFaceDetector::load(vb, &m)?.forward_all(input)?.output)
        }
        "face_landmarks_68" => Ok(LandmarkNet::load(vb, variant == "tiny")?.forward_all(input)?.output),
        other => Err(Error::usage(format!(
            "verify: unknown arch '{other}' (yolov8, tiny_face_detector, face_landmarks_68, nanodet, movenet, palm_detector, hand_landmarks)"
        ))),
    }
}

/// The tfjs graph networks and where each one sits in a weights file (the
/// root, or a prefix when it shares the file with another network).
const GRAPH_ARCHES: &[(&str, &str)] = &[
    ("nanodet", ""),
    ("movenet", ""),
    ("palm_detector", ""),
    ("hand_landmarks", "landmark"),
];

/// `verify` for a graph network: every tensor of `--expected` other than
/// `input` is compared with the output of the same name.
fn run_graph(args: &VerifyArgs, prefix: &str) -> Result<i32> {
    let weights = weights_arg(args)?;
    let total = read_header(weights)?.data_bytes;
    let vb = var_builder(
        &WeightsSource::File(weights.to_path_buf()),
        total,
        &Device::Cpu,
        Arc::new(|_, _| {}),
    )?;
    let vb = if !prefix.is_empty() && vb.contains_tensor(&format!("{prefix}.{}", tf_graph::GRAPH_TENSOR)) {
        vb.pp(prefix)
    } else {
        vb
    };
    let graph = tf_graph::Graph::load(&vb, &weights.display().to_string())?;
    compare_graph(args, &graph, "input", &args.arch)
}

/// `verify --onnx`: the ONNX model lowered in memory, then compared as a
/// graph network (tensors named as the graph's input and outputs).
fn run_onnx(args: &VerifyArgs, path: &Path) -> Result<i32> {
    let model = crate::import::onnx::read(path)?;
    let graph = model.build().map_err(|e| e.context(path.display().to_string()))?;
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let [(input_name, _)] = model.lowered.inputs.as_slice() {
        return compare_graph(args, &graph, input_name, &label);
    }
    // Several inputs: each by its graph name, one run.
    let iname = args.input.display();
    let given: HashMap<String, Tensor> =
        candle_core::safetensors::load(&args.input, &Device::Cpu).map_err(|e| Error::from(e).context(&iname))?;
    let xs: Vec<Tensor> = model
        .lowered
        .inputs
        .iter()
        .map(|(n, _)| {
            given
                .get(n)
                .ok_or_else(|| Error::msg(format!("{iname}: no tensor named '{n}' (the graph's input)")))
                .and_then(|t| Ok(t.to_dtype(DType::F32)?))
        })
        .collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = xs.iter().collect();
    let outs = graph.run_inputs(&refs)?;
    let names: Vec<&str> = model.lowered.inputs.iter().map(|(n, _)| n.as_str()).collect();
    compare_outputs(args, outs, &names, &label)
}

fn weights_arg(args: &VerifyArgs) -> Result<&Path> {
    args.weights
        .as_deref()
        .ok_or_else(|| Error::usage("verify: --weights is required (or --onnx)"))
}

/// Runs `graph` on `--input` and compares every output named in `--expected`.
fn compare_graph(args: &VerifyArgs, graph: &tf_graph::Graph, input_name: &str, label: &str) -> Result<i32> {
    let input = one_tensor(&args.input, input_name)?.to_dtype(DType::F32)?;
    // A batch of inputs for a batch-1 graph runs row by row (the hand
    // landmark fixtures hold one row per palm).
    let outs = if graph.input_shape().first() == Some(&1) && input.rank() > 1 && input.dim(0)? > 1 {
        let rows: Vec<Vec<(String, Tensor)>> = (0..input.dim(0)?)
            .map(|i| graph.run(&input.narrow(0, i, 1)?))
            .collect::<Result<_>>()?;
        let names: Vec<String> = rows[0].iter().map(|(n, _)| n.clone()).collect();
        names
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let parts: Vec<&Tensor> = rows.iter().map(|r| &r[k].1).collect();
                Ok((n.clone(), Tensor::cat(&parts, 0)?))
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        graph.run(&input)?
    };
    compare_outputs(args, outs, &[input_name], label)
}

/// Compares every output named in `--expected` and reports each.
fn compare_outputs(args: &VerifyArgs, outs: Vec<(String, Tensor)>, inputs: &[&str], label: &str) -> Result<i32> {
    let ename = args.expected.display();
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(&args.expected, &Device::Cpu).map_err(|e| Error::from(e).context(&ename))?;
    let mut pass = true;
    let mut compared = 0;
    let mut report = Vec::new();
    for (name, out) in &outs {
        let Some(exp) = expected.get(name) else { continue };
        let exp = exp.to_dtype(DType::F32)?;
        if out.dims() != exp.dims() {
            return Err(Error::msg(format!(
                "verify: output '{name}' has shape {:?}; {ename} has {:?}",
                out.dims(),
                exp.dims()
            )));
        }
        let diff = (out - &exp)?.abs()?.flatten_all()?;
        let max = diff.max(0)?.to_scalar::<f32>()? as f64;
        let allowed = ((exp.abs()?.flatten_all()? * args.rtol)? + args.tol)?;
        let worst = (diff - allowed)?.max(0)?.to_scalar::<f32>()? as f64;
        pass &= worst <= 0.0;
        compared += 1;
        report.push(json!({"output": name, "shape": exp.dims(), "max_abs_diff": max, "pass": worst <= 0.0}));
        if !args.json {
            println!(
                "{label} {name} {:?}: max abs diff {max:.3e} — {}",
                exp.dims(),
                if worst <= 0.0 { "PASS" } else { "FAIL" }
            );
        }
    }
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| *k != "input" && !inputs.contains(&k.as_str()) && !outs.iter().any(|(n, _)| n == *k))
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = outs.iter().map(|(n, _)| n.as_str()).collect();
        return Err(Error::msg(format!(
            "verify: {ename} has {missing:?}, which the network does not output (it outputs {names:?})"
        )));
    }
    if compared == 0 {
        return Err(Error::msg(format!("verify: {ename} holds no output to compare")));
    }
    if args.json {
        println!(
            "{}",
            json!({"arch": label, "tol": args.tol, "rtol": args.rtol, "outputs": report, "pass": pass})
        );
    }
    Ok(if pass { 0 } else { 1 })
}

pub fn run(args: &VerifyArgs) -> Result<i32> {
    if let Some(path) = &args.onnx {
        return run_onnx(args, path);
    }
    if let Some((_, prefix)) = GRAPH_ARCHES.iter().find(|(a, _)| *a == args.arch) {
        return run_graph(args, prefix);
    }
    let arch = args.arch.as_str();
    let variant = args.variant.as_str();
    let task = args.task.as_str();
    let weights = weights_arg(args)?;
    let input = one_tensor(&args.input, "input")?.to_dtype(DType::F32)?;
    let expected = one_tensor(&args.expected, "output")?.to_dtype(DType::F32)?;
    let tol = args.tol;
    // Like numpy's allclose: |out - expected| <= tol + rtol * |expected|. Large
    // outputs (YOLO boxes in pixels, up to the input size) carry float32 noise
    // proportional to their size: 3e-5 allows 2e-2 px at 640, the fixture
    // README's own estimate of float32 noise on YOLO box rows.
    let rtol = args.rtol;
    let out = raw_forward(arch, variant, task, weights, &input)?;
    if out.dims() != expected.dims() {
        return Err(Error::msg(format!(
            "verify: output shape {:?} differs from the expected {:?}",
            out.dims(),
            expected.dims()
        )));
    }
    let diff = (out - &expected)?.abs()?.flatten_all()?;
    let max = diff.max(0)?.to_scalar::<f32>()? as f64;
    let mean = diff.mean(0)?.to_scalar::<f32>()? as f64;
    let allowed = ((expected.abs()?.flatten_all()? * rtol)? + tol)?;
    let worst = (diff - allowed)?.max(0)?.to_scalar::<f32>()? as f64;
    let pass = worst <= 0.0;
    if args.json {
        println!(
            "{}",
            json!({"arch": arch, "variant": variant, "task": task, "shape": expected.dims(),
                   "max_abs_diff": max, "mean_abs_diff": mean, "tol": tol, "rtol": rtol,
                   "worst_excess": worst.max(0.0), "pass": pass})
        );
    } else {
        println!(
            "{arch} {variant} {task}: max abs diff {max:.3e}, mean {mean:.3e} over {:?} (tolerance {tol:.1e} + {rtol:.1e}·|expected|) — {}",
            expected.dims(),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    Ok(if pass { 0 } else { 1 })
}
