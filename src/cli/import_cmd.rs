//! `modeldock import tfjs MANIFEST.json --out DIR [--add PREFIX=MANIFEST.json]`,
//! `modeldock import pt FILE.pt --out DIR`,
//! `modeldock import onnx MODEL.onnx --out DIR [--id ID] [--family F]`

use std::path::PathBuf;

use super::args::ImportCommand;
use crate::error::{Error, Result};
use crate::import::onnx::store::{self as onnx_store, Family};
use crate::import::{pt as pt_import, tfjs as tfjs_import};

pub fn run(cmd: &ImportCommand) -> Result<i32> {
    match cmd {
        ImportCommand::Tfjs { manifest, out, add } => {
            let mut extra = Vec::new();
            for a in add {
                let (p, m) = a
                    .split_once('=')
                    .ok_or_else(|| Error::usage(format!("--add '{a}': expected PREFIX=MANIFEST.json")))?;
                extra.push((p.to_string(), PathBuf::from(m)));
            }
            let w = tfjs_import::import(manifest, &extra, out)?;
            println!("wrote {} and {}", w.display(), out.join("model.toml").display());
            Ok(0)
        }
        ImportCommand::Onnx { model, out, id, family } => {
            let family = Family::parse(family)?;
            let w = onnx_store::import(model, out, id.as_deref(), family)?;
            println!(
                "wrote {} ({} graph nodes, family {}, {} labels, input {}) and {}",
                w.weights.display(),
                w.nodes,
                w.family.name(),
                w.labels,
                w.input_size,
                w.manifest.display()
            );
            println!("model id: {}", w.id);
            Ok(0)
        }
        ImportCommand::Pt { checkpoint, out } => {
            let w = pt_import::import(checkpoint, out)?;
            println!(
                "wrote {} ({} tensors, {} bytes, f32): YOLOv8{} {}, {} classes, input {}",
                w.weights.display(),
                w.tensors,
                w.weights_bytes,
                w.variant,
                w.task,
                w.classes,
                w.input_size
            );
            match &w.manifest {
                Some(m) => println!("wrote {}", m.display()),
                None => println!("kept the existing {}", w.manifest_path.display()),
            }
            Ok(0)
        }
    }
}
