//! Sharded safetensors: a Hugging Face `*.safetensors.index.json` (a
//! `weight_map` from tensor name to shard file) or a list of files, checked
//! as one set of tensors before anything is read.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::safetensors_header::{read_header, HeaderInfo};
use crate::error::{Error, Result};

/// The most bytes an index file may have (real ones are a few hundred KiB).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Whether `name` names a sharded checkpoint's index.
pub fn is_index(name: &str) -> bool {
    name.ends_with(".safetensors.index.json")
}

/// The shard files an index names, in order of first mention, each a plain
/// file name in the index's folder; and the index's tensor → file map.
pub struct Index {
    pub files: Vec<PathBuf>,
    pub weight_map: HashMap<String, PathBuf>,
}

/// Reads and checks `path`, a `*.safetensors.index.json`.
pub fn read_index(path: &Path) -> Result<Index> {
    let name = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| Error::msg(format!("{name}: {e}")))?
        .len();
    if len > MAX_INDEX_BYTES {
        return Err(Error::msg(format!(
            "{name}: index is {len} bytes, above the {MAX_INDEX_BYTES} byte limit"
        )));
    }
    let text = std::fs::read(path).map_err(|e| Error::msg(format!("{name}: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::msg(format!("{name}: not a JSON index: {e}")))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
        Error::msg(format!(
            "{name}: weight_map: expected an object of tensor name → shard file"
        ))
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    let mut by_name: HashMap<String, PathBuf> = HashMap::new();
    let mut weight_map = HashMap::with_capacity(map.len());
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            Error::msg(format!(
                "{name}: weight_map['{tensor}']: expected a shard file name (a string)"
            ))
        })?;
        let p = match by_name.get(shard) {
            Some(p) => p.clone(),
            None => {
                let p = shard_path(dir, shard).map_err(|e| e.context(format!("{name}: weight_map['{tensor}']")))?;
                by_name.insert(shard.to_string(), p.clone());
                files.push(p.clone());
                p
            }
        };
        weight_map.insert(tensor.clone(), p);
    }
    if files.is_empty() {
        return Err(Error::msg(format!("{name}: weight_map names no shards")));
    }
    Ok(Index { files, weight_map })
}

/// A shard named in an index: a plain file name, in the index's folder.
fn shard_path(dir: &Path, shard: &str) -> Result<PathBuf> {
    let mut comps = Path::new(shard).components();
    let plain = matches!((comps.next(), comps.next()), (Some(Component::Normal(_)), None));
    if !plain {
        return Err(Error::msg(format!(
            "shard '{shard}' is not a plain file name in the index's folder"
        )));
    }
    super::registry::resolve_inside(dir, shard)
}

/// What [`check_shards`] found: each shard's header, and the set as one.
pub struct ShardSet {
    pub headers: Vec<HeaderInfo>,
    /// Every tensor of every shard, the data bytes summed, and a
    /// fingerprint over the shards' fingerprints.
    pub combined: HeaderInfo,
}

/// Reads every shard's header and checks the set: each shard exists and is
/// whole, no tensor is in two shards, and with an index, every tensor is in
/// the shard the index places it in. Errors name the shard (or the index).
pub fn check_shards(index: Option<&Path>, files: &[PathBuf]) -> Result<ShardSet> {
    let placed = index.map(read_index).transpose()?;
    let mut headers = Vec::with_capacity(files.len());
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for f in files {
        headers.push(read_header(f)?);
    }
    for (i, h) in headers.iter().enumerate() {
        for t in &h.entries {
            if let Some(j) = owner.insert(t.name.as_str(), i) {
                return Err(Error::msg(format!(
                    "{}: tensor '{}' is also in {}",
                    files[i].display(),
                    t.name,
                    files[j].display()
                )));
            }
            if let (Some(ix), Some(ix_path)) = (&placed, index) {
                match ix.weight_map.get(&t.name) {
                    Some(p) if same_file(p, &files[i]) => {}
                    Some(p) => {
                        return Err(Error::msg(format!(
                            "{}: holds tensor '{}', which {} places in {}",
                            files[i].display(),
                            t.name,
                            ix_path.display(),
                            p.display()
                        )))
                    }
                    None => {
                        return Err(Error::msg(format!(
                            "{}: holds tensor '{}', which is not in {}'s weight_map",
                            files[i].display(),
                            t.name,
                            ix_path.display()
                        )))
                    }
                }
            }
        }
    }
    if let (Some(ix), Some(ix_path)) = (&placed, index) {
        let mut missing: Vec<(&String, &PathBuf)> = ix
            .weight_map
            .iter()
            .filter(|(t, _)| !owner.contains_key(t.as_str()))
            .collect();
        missing.sort();
        if let Some((t, p)) = missing.first() {
            return Err(Error::msg(format!(
                "{}: has no tensor '{t}', which {} places there",
                p.display(),
                ix_path.display()
            )));
        }
    }
    let mut combined = HeaderInfo::default();
    let mut h = blake3::Hasher::new();
    for s in &headers {
        combined.tensors += s.tensors;
        combined.data_bytes += s.data_bytes;
        combined.entries.extend(s.entries.iter().cloned());
        h.update(s.fingerprint.as_bytes());
    }
    combined.fingerprint = h.finalize().to_hex().to_string();
    Ok(ShardSet { headers, combined })
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}
