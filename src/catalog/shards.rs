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

/// What an index says: the shard files it names (plain file names in the
/// index's folder, in order of first mention) and which tensor is in which.
pub struct Index {
    pub shards: Vec<String>,
    pub weight_map: HashMap<String, String>,
    /// `metadata.total_size`, where given: the tensors' bytes.
    pub total_size: Option<u64>,
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
    let mut shards: Vec<String> = Vec::new();
    let mut weight_map = HashMap::with_capacity(map.len());
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            Error::msg(format!(
                "{name}: weight_map['{tensor}']: expected a shard file name (a string)"
            ))
        })?;
        let mut comps = Path::new(shard).components();
        let plain =
            matches!((comps.next(), comps.next()), (Some(Component::Normal(_)), None)) && !shard.contains(['/', '\\']);
        if !plain {
            return Err(Error::msg(format!(
                "{name}: weight_map['{tensor}']: shard '{shard}' is not a plain file name in the index's folder"
            )));
        }
        if !shards.iter().any(|s| s == shard) {
            shards.push(shard.to_string());
        }
        weight_map.insert(tensor.clone(), shard.to_string());
    }
    if shards.is_empty() {
        return Err(Error::msg(format!("{name}: weight_map names no shards")));
    }
    let total_size = v.pointer("/metadata/total_size").and_then(|t| t.as_u64());
    Ok(Index {
        shards,
        weight_map,
        total_size,
    })
}

/// The shard files of the index at `path` that sits in a model folder:
/// each resolved inside that folder (no links out).
pub fn shards_in_folder(path: &Path) -> Result<Vec<PathBuf>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    read_index(path)?
        .shards
        .iter()
        .map(|s| super::registry::resolve_inside(dir, s).map_err(|e| e.context(path.display())))
        .collect()
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
                    Some(p) if files[i].file_name().is_some_and(|f| f == p.as_str()) => {}
                    Some(p) => {
                        return Err(Error::msg(format!(
                            "{}: holds tensor '{}', which {} places in {p}",
                            files[i].display(),
                            t.name,
                            ix_path.display(),
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
        let mut missing: Vec<(&String, &String)> = ix
            .weight_map
            .iter()
            .filter(|(t, _)| !owner.contains_key(t.as_str()))
            .collect();
        missing.sort();
        if let Some((t, p)) = missing.first() {
            let shard = files
                .iter()
                .find(|f| f.file_name().is_some_and(|n| n == p.as_str()))
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| p.to_string());
            return Err(Error::msg(format!(
                "{shard}: has no tensor '{t}', which {} places there",
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
