//! `modeldock import tfjs MANIFEST.json --out DIR [--add PREFIX=MANIFEST.json]`

use std::path::PathBuf;

use super::args::ImportCommand;
use crate::error::{Error, Result};
use crate::models::tfjs_import;

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
    }
}
