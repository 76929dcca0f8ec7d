//! `modeldock import tfjs MANIFEST.json --out DIR [--add PREFIX=MANIFEST.json]`

use std::path::PathBuf;

use super::args::Args;
use crate::error::{Error, Result};
use crate::models::tfjs_import;

pub fn run(argv: &[String]) -> Result<i32> {
    let args = Args::parse(argv, &["out", "add"], &[])?;
    let (kind, manifest) = match args.positional.as_slice() {
        [k, m] => (k.as_str(), PathBuf::from(m)),
        _ => {
            return Err(Error::msg(
                "usage: modeldock import tfjs MANIFEST.json --out DIR [--add PREFIX=MANIFEST.json]",
            ))
        }
    };
    if kind != "tfjs" {
        return Err(Error::msg(format!("import: unknown format '{kind}' (supported: tfjs)")));
    }
    let out = PathBuf::from(
        args.value("out")
            .ok_or_else(|| Error::msg("import: --out DIR is required"))?,
    );
    let mut extra = Vec::new();
    for a in args.values("add") {
        let (p, m) = a
            .split_once('=')
            .ok_or_else(|| Error::msg(format!("--add '{a}': expected PREFIX=MANIFEST.json")))?;
        extra.push((p.to_string(), PathBuf::from(m)));
    }
    let w = tfjs_import::import(&manifest, &extra, &out)?;
    println!("wrote {} and {}", w.display(), out.join("model.toml").display());
    Ok(0)
}
