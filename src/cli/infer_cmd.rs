//! `modeldock infer --model ID [--conf F] [--iou F] [--json] [--save DIR] IMAGE|DIR|GLOB...`
//!
//! Uses the running server when one answers (so the model is loaded once per
//! machine), else an engine in this process. One line per input, in input
//! order, failures included.

use std::path::PathBuf;

use serde_json::Value;

use super::args::InferArgs;
use super::infer_inputs::{expand, Input};
use crate::client::{Client, Door, HttpClient, ImageInput};
use crate::error::{Context, Error, Result};
use crate::vision::prompt::Prompts;
use crate::vision::{Detection, InferParams};

/// Answers one input at a time, in order.
enum Runner {
    Remote(HttpClient),
    /// The engine of this process, or one attached to another v2 server.
    Local(Client),
}

impl Runner {
    fn infer(&self, model: &str, path: &PathBuf, params: InferParams) -> Result<Value> {
        let name = path.display().to_string();
        match self {
            Runner::Local(e) => match e.infer_wait(model, ImageInput::Path(path.clone()), params) {
                Ok(r) => Ok(r.to_json()),
                Err(e) => Err(Error::msg(e.error)),
            },
            Runner::Remote(c) => {
                let bytes = std::fs::read(path).ctx(&name)?;
                let mut v = c.infer(model, &[(name.clone(), bytes)], params)?;
                match v.pop() {
                    Some(v) => match v.get("error").and_then(Value::as_str) {
                        Some(e) => Err(Error::msg(e)),
                        None => Ok(v),
                    },
                    None => Err(Error::unavailable(format!("{name}: the server sent no answer"))),
                }
            }
        }
    }
}

fn print_human(v: &Value) {
    let dets: Vec<Detection> = serde_json::from_value(v["detections"].clone()).unwrap_or_default();
    println!(
        "{}: {} detection(s) in {:.1} ms (forward {:.1} ms)",
        v["image"].as_str().unwrap_or("?"),
        dets.len(),
        v["timings_ms"]["total"].as_f64().unwrap_or(0.0),
        v["timings_ms"]["forward"].as_f64().unwrap_or(0.0)
    );
    for d in &dets {
        println!(
            "  {} {:.3} [{:.1}, {:.1}, {:.1}, {:.1}]{}",
            d.label,
            d.score,
            d.bbox[0],
            d.bbox[1],
            d.bbox[2],
            d.bbox[3],
            if d.keypoints.is_empty() {
                String::new()
            } else {
                format!(" + {} points", d.keypoints.len())
            }
        );
    }
}

pub fn run(args: &InferArgs) -> Result<i32> {
    let model = args.model.clone();
    let params = InferParams {
        conf: args.conf,
        iou: args.iou,
        prompts: Prompts::from_args(&args.points, args.bbox.as_deref())?,
        ..Default::default()
    };
    let inputs = expand(&args.inputs);
    let door = if args.local {
        None
    } else {
        Some(crate::client::choose(args.server.server.as_deref(), false)?)
    };
    // Another v2 server: pre/post-processing here, the network there.
    let (remote, other) = match door {
        Some(Door::Modeldock(c)) => (Some(c), None),
        Some(Door::Other { base, name }) => (None, Some(super::v2_cmds::OtherServer { base, name })),
        Some(Door::Own { .. }) | None => (None, None),
    };
    let runner = match remote {
        Some(c) => {
            let snap = c.snapshot()?;
            if !snap.models.iter().any(|m| m.id == model) {
                let known: Vec<&str> = snap.models.iter().map(|m| m.id.as_str()).collect();
                return Err(Error::not_found(format!(
                    "unknown model '{model}' on the server at {} (known: {})",
                    c.base,
                    known.join(", ")
                )));
            }
            // Many images, or a --save run, is bulk work: it takes its turn
            // after interactive work on the shared server.
            let bulk = inputs.len() > 1 || args.save.is_some();
            Runner::Remote(if bulk { c.with_priority(2) } else { c })
        }
        None => {
            let door = match other {
                Some(o) => {
                    eprintln!(
                        "modeldock: {} at {}: pre- and post-processing here, the network there",
                        o.name, o.base
                    );
                    Door::Other {
                        base: o.base,
                        name: o.name,
                    }
                }
                None => {
                    if !args.local {
                        eprintln!("modeldock: no server running; running in this process");
                    }
                    Door::Own { base: String::new() }
                }
            };
            let client = crate::client::open(door, &args.engine, None, None)?;
            let snap = client.snapshot();
            if !snap.models.iter().any(|m| m.id == model) {
                client.shutdown();
                let known: Vec<&str> = snap.models.iter().map(|m| m.id.as_str()).collect();
                return Err(Error::not_found(format!(
                    "unknown model '{model}' (known: {})",
                    known.join(", ")
                )));
            }
            Runner::Local(client)
        }
    };
    let mut failures = 0;
    let mut taken = Vec::new();
    let mask_style = crate::vision::mask_overlay::MaskStyle {
        mode: args.mask_style.clone(),
        ..Default::default()
    };
    for input in &inputs {
        let (name, answer) = match input {
            Input::Problem { name, error } => (name.clone(), Err(Error::msg(error.clone()))),
            Input::File(p) => (p.display().to_string(), runner.infer(&model, p, params)),
        };
        match answer {
            Ok(v) => {
                if args.json {
                    println!("{v}");
                } else {
                    print_human(&v);
                }
                if let (Some(dir), Input::File(p)) = (&args.save, input) {
                    if let Err(e) = super::infer_save::save(dir, p, &v, &mask_style, &mut taken) {
                        failures += 1;
                        eprintln!("error: {e}");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if args.json {
                    println!("{}", serde_json::json!({"image": name, "error": e.to_string()}));
                }
                eprintln!("error: {e}");
            }
        }
    }
    if let Runner::Local(e) = &runner {
        e.shutdown();
    }
    Ok(if failures > 0 { 1 } else { 0 })
}
