//! `modeldock infer --model ID [--conf F] [--iou F] [--json] IMAGE...`

use std::path::PathBuf;

use serde_json::json;

use super::args::Args;
use super::setup;
use crate::engine::{ImageInput, InferResult};
use crate::error::{Error, Result};
use crate::vision::InferParams;

/// The CLI's JSON for one answered image (also what the GUI exports).
pub fn result_json(r: &InferResult) -> serde_json::Value {
    json!({
        "image": r.image,
        "model": r.model,
        "image_size": r.output.image_size,
        "detections": r.output.detections,
        "cached": r.output.cached,
        "timings_ms": r.timings,
    })
}

pub fn run(argv: &[String]) -> Result<i32> {
    let mut flags = vec!["model", "conf", "iou"];
    flags.extend_from_slice(setup::ENGINE_FLAGS);
    let args = Args::parse(argv, &flags, &["json"])?;
    let model = args
        .value("model")
        .ok_or_else(|| Error::msg("infer: --model ID is required (see `modeldock models`)"))?
        .to_string();
    if args.positional.is_empty() {
        return Err(Error::msg("infer: give at least one image file"));
    }
    let params = InferParams {
        conf: args.f32("conf")?,
        iou: args.f32("iou")?,
    };
    for (k, v) in [("conf", params.conf), ("iou", params.iou)] {
        if let Some(v) = v {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::msg(format!("--{k} {v} is outside 0..1")));
            }
        }
    }
    let (engine, reg) = setup::engine(&args, None)?;
    if reg.get(&model).is_none() {
        engine.shutdown();
        let known: Vec<&str> = reg.entries.iter().map(|e| e.manifest.id.as_str()).collect();
        return Err(Error::msg(format!(
            "unknown model '{model}' (known: {})",
            known.join(", ")
        )));
    }
    let mut failures = 0;
    for img in &args.positional {
        match engine.infer_wait(&model, ImageInput::Path(PathBuf::from(img)), params) {
            Ok(r) => {
                if args.has("json") {
                    println!("{}", result_json(&r));
                } else {
                    println!(
                        "{}: {} detection(s) in {:.1} ms (forward {:.1} ms)",
                        r.image,
                        r.output.detections.len(),
                        r.timings.total,
                        r.timings.forward
                    );
                    for d in &r.output.detections {
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
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {}", e.error);
            }
        }
    }
    engine.shutdown();
    Ok(if failures > 0 { 1 } else { 0 })
}
