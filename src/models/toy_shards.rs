//! Big toy models written without holding their weights in memory: the
//! same tensors as one safetensors file and as Hugging Face style shards
//! with a `model.safetensors.index.json`, for the loader's benchmark and
//! tests. Values come from a seed, so both layouts hold the same bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};

/// One f32 tensor to write: name, shape, and the seed of its values.
struct Spec {
    name: String,
    shape: Vec<usize>,
    seed: u32,
}

impl Spec {
    fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The two layouts written by [`write_big_toy`]: model ids and their files.
pub struct BigToy {
    /// The single-file model's id, and its file.
    pub single: (String, PathBuf),
    /// The sharded model's id, and its shard files.
    pub sharded: (String, Vec<PathBuf>),
    /// Tensor bytes of either layout.
    pub weights_bytes: u64,
}

/// The value `i` of the tensor seeded with `seed`: finite, in [-0.25, 0.25).
fn value(i: usize, seed: u32) -> f32 {
    let x = (i as u32)
        .wrapping_mul(2654435761)
        .wrapping_add(seed.wrapping_mul(40503));
    ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.5
}

/// Writes `specs` as one safetensors file at `path`, the data made in
/// 4 MiB blocks.
fn write_file(path: &Path, specs: &[&Spec]) -> Result<()> {
    let err = |e: std::io::Error| Error::msg(format!("{}: {e}", path.display()));
    let mut header = serde_json::Map::new();
    let mut at = 0usize;
    for s in specs {
        let end = at + s.elems() * 4;
        header.insert(
            s.name.clone(),
            serde_json::json!({"dtype": "F32", "shape": s.shape, "data_offsets": [at, end]}),
        );
        at = end;
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    // The data section starts 8-aligned, as safetensors' own writer does.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).map_err(err)?);
    f.write_all(&(text.len() as u64).to_le_bytes()).map_err(err)?;
    f.write_all(&text).map_err(err)?;
    const BLOCK: usize = 1 << 20;
    let mut bytes = vec![0u8; BLOCK * 4];
    for s in specs {
        let n = s.elems();
        for lo in (0..n).step_by(BLOCK) {
            let hi = (lo + BLOCK).min(n);
            let out = &mut bytes[..(hi - lo) * 4];
            out.par_chunks_mut(4 << 10).enumerate().for_each(|(c, chunk)| {
                for (j, b) in chunk.chunks_exact_mut(4).enumerate() {
                    b.copy_from_slice(&value(lo + c * 1024 + j, s.seed).to_le_bytes());
                }
            });
            f.write_all(out).map_err(err)?;
        }
    }
    // On disk before it is timed: dirty pages cannot be dropped from the
    // page cache, and their writeback would run during the loads.
    f.into_inner().map_err(|e| err(e.into_error()))?.sync_all().map_err(err)
}

/// Writes a toy model of about `bytes` bytes of weights into `dir/<id>/`
/// as one file, with `extra_options` added to its `[options]` (e.g.
/// `slow_load_ms = 500`). Returns the weights' bytes.
pub fn write_big_toy_file(dir: &Path, id: &str, bytes: u64, extra_options: &str) -> Result<u64> {
    let specs = toy_specs(bytes, 1)?;
    let d = dir.join(id);
    std::fs::create_dir_all(&d).map_err(|e| Error::msg(format!("{}: {e}", d.display())))?;
    write_file(&d.join("model.safetensors"), &specs.iter().collect::<Vec<_>>())?;
    let per = specs.last().map(Spec::elems).unwrap_or(0);
    let toml = format!("{}{extra_options}\n", manifest(id, "model.safetensors", per, 1));
    let p = d.join("model.toml");
    std::fs::write(&p, toml).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
    Ok(specs.iter().map(|s| s.elems() as u64 * 4).sum())
}

/// The toy's four small tensors and `shards` padding tensors making about
/// `bytes` bytes in all.
fn toy_specs(bytes: u64, shards: usize) -> Result<Vec<Spec>> {
    let per = usize::try_from(bytes / 4 / shards as u64).map_err(|_| Error::msg("toy model too large"))?;
    let mut specs = vec![
        Spec {
            name: "conv.weight".into(),
            shape: vec![8, 3, 3, 3],
            seed: 1,
        },
        Spec {
            name: "conv.bias".into(),
            shape: vec![8],
            seed: 2,
        },
        Spec {
            name: "head.weight".into(),
            shape: vec![5, 8],
            seed: 3,
        },
        Spec {
            name: "head.bias".into(),
            shape: vec![5],
            seed: 4,
        },
    ];
    for i in 0..shards {
        specs.push(Spec {
            name: format!("pad.{i}"),
            shape: vec![per],
            seed: 5 + i as u32,
        });
    }
    Ok(specs)
}

/// A toy's manifest: weights `weights`, `shards` padding tensors of `per` values.
fn manifest(id: &str, weights: &str, per: usize, shards: usize) -> String {
    format!(
        "id = \"{id}\"\nname = \"Toy {id}\"\ntask = \"detect\"\narch = \"toy\"\nweights = \"{weights}\"\n\
         input_size = 32\nlabels = [\"toy\"]\nlicence = \"CC0-1.0\"\n\n[options]\npad_elems = {per}\npad_tensors = {shards}\n"
    )
}

/// Writes a toy model of about `bytes` bytes of weights twice into `dir`:
/// `<id>/` as one file and `<id>-sharded/` as `shards` shards (at least 1)
/// with an index. The padding is `shards` tensors `pad.0` … so each shard
/// holds one.
pub fn write_big_toy(dir: &Path, id: &str, bytes: u64, shards: usize) -> Result<BigToy> {
    let shards = shards.max(1);
    let specs = toy_specs(bytes, shards)?;
    let per = specs.last().map(Spec::elems).unwrap_or(0);
    let weights_bytes = specs.iter().map(|s| s.elems() as u64 * 4).sum();
    let manifest = |id: &str, weights: &str| manifest(id, weights, per, shards);
    let mkdir = |d: &Path| std::fs::create_dir_all(d).map_err(|e| Error::msg(format!("{}: {e}", d.display())));
    let write =
        |p: PathBuf, text: String| std::fs::write(&p, text).map_err(|e| Error::msg(format!("{}: {e}", p.display())));

    let one = dir.join(id);
    mkdir(&one)?;
    let single = one.join("model.safetensors");
    write_file(&single, &specs.iter().collect::<Vec<_>>())?;
    write(one.join("model.toml"), manifest(id, "model.safetensors"))?;

    let sharded_id = format!("{id}-sharded");
    let sdir = dir.join(&sharded_id);
    mkdir(&sdir)?;
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    for i in 0..shards {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        // Shard 1 also holds the four small tensors.
        let mine: Vec<&Spec> = specs
            .iter()
            .filter(|s| s.name == format!("pad.{i}") || (i == 0 && !s.name.starts_with("pad.")))
            .collect();
        for s in &mine {
            weight_map.insert(s.name.clone(), serde_json::Value::String(name.clone()));
        }
        let p = sdir.join(&name);
        write_file(&p, &mine)?;
        files.push(p);
    }
    let index = serde_json::json!({"metadata": {"total_size": weights_bytes}, "weight_map": weight_map});
    write(sdir.join("model.safetensors.index.json"), index.to_string())?;
    write(
        sdir.join("model.toml"),
        manifest(&sharded_id, "model.safetensors.index.json"),
    )?;
    Ok(BigToy {
        single: (id.to_string(), single),
        sharded: (sharded_id, files),
        weights_bytes,
    })
}
