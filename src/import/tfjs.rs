//! `modeldock import tfjs MANIFEST.json --out DIR`: tfjs weights → safetensors.
//!
//! Reads a tfjs `*-weights_manifest.json` and its `.bin` shards; dequantises
//! uint8/uint16 (`w = q * scale + min`) and float16; keeps float32; int32
//! becomes i64. Layouts are converted here, once, so models read candle's
//! native layouts at load time:
//! * conv `…/filters` `[kh, kw, in, out]` (HWIO) → `…weight` `[out, in, kh, kw]` (OIHW)
//! * `…/depthwise_filter` `[kh, kw, C, m]` → `…depthwise` `[C*m, 1, kh, kw]`
//! * `…/pointwise_filter` `[1, 1, in, out]` → `…pointwise` `[out, in, 1, 1]`
//! * dense `…/weights` `[in, out]` → `…weight` `[out, in]` (candle `Linear`)
//! * names: `/` becomes `.`; `bias` stays `bias`.
//!
//! A graph model's `model.json` (with `modelTopology`) is read by
//! [`read_graph`] instead: see [`crate::graph::executor`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Group {
    paths: Vec<String>,
    weights: Vec<Spec>,
}

#[derive(Deserialize)]
struct Spec {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    #[serde(default)]
    quantization: Option<Quant>,
}

#[derive(Deserialize)]
struct Quant {
    dtype: String,
    #[serde(default)]
    scale: f64,
    #[serde(default)]
    min: f64,
}

/// A shard path from a manifest: a plain relative name of a regular file
/// inside the manifest's folder (no `..`, no absolute path, no symlink out).
fn confined_shard(dir: &Path, rel: &str) -> Result<std::path::PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() || p.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(Error::msg(format!(
            "shard path '{rel}' must be a file name inside the manifest's folder"
        )));
    }
    let full = dir.join(p);
    let meta = std::fs::symlink_metadata(&full).map_err(|e| Error::msg(format!("shard '{rel}': {e}")))?;
    if !meta.file_type().is_file() {
        return Err(Error::msg(format!("shard '{rel}' is not a regular file")));
    }
    Ok(full)
}

/// Bytes a weight entry declares (its element count times its stored width).
fn declared_bytes(w: &Spec) -> Option<u64> {
    let width = match (&w.quantization, w.dtype.as_str()) {
        (Some(q), _) => match q.dtype.as_str() {
            "uint8" => 1,
            _ => 2,
        },
        (None, "float16") => 2,
        _ => 4,
    };
    w.shape
        .iter()
        .try_fold(width, |a: u64, &d| a.checked_mul(d as u64))
        .filter(|b| *b <= MAX_WEIGHT_BYTES)
}

/// Largest weight a manifest may declare (8 GiB): sizes are checked against
/// it before any shard is read.
const MAX_WEIGHT_BYTES: u64 = 8 << 30;

/// Where a manifest's `.bin` shards come from: the manifest's folder
/// ([`read_tfjs`]) or memory ([`read_tfjs_text`] callers such as the fuzz
/// targets).
pub trait Shards {
    /// Checks the shard path `rel` and returns the shard's size, without reading it.
    fn size(&mut self, rel: &str) -> Result<u64>;
    /// Reads the shard `rel` (its size was checked first).
    fn read(&mut self, rel: &str) -> Result<Vec<u8>>;
}

/// The shards of a manifest on disk, confined to its folder.
struct FolderShards<'a> {
    dir: &'a Path,
    mname: &'a str,
}

impl Shards for FolderShards<'_> {
    fn size(&mut self, rel: &str) -> Result<u64> {
        let shard = confined_shard(self.dir, rel).map_err(|e| e.context(self.mname))?;
        Ok(std::fs::metadata(&shard)
            .map_err(|e| Error::msg(format!("{}: {e}", shard.display())))?
            .len())
    }

    fn read(&mut self, rel: &str) -> Result<Vec<u8>> {
        let shard = confined_shard(self.dir, rel).map_err(|e| e.context(self.mname))?;
        std::fs::read(&shard).map_err(|e| Error::msg(format!("{}: {e}", shard.display())))
    }
}

/// Reads a tfjs manifest and returns candle tensors in candle layouts.
pub fn read_tfjs(manifest: &Path) -> Result<Vec<(String, Tensor)>> {
    let mname = manifest.display().to_string();
    let text = std::fs::read_to_string(manifest).map_err(|e| Error::msg(format!("{mname}: {e}")))?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    read_tfjs_text(&mname, &text, &mut FolderShards { dir, mname: &mname })
}

/// [`read_tfjs`] on the manifest's text, with the shards from `shards`;
/// `mname` names the manifest in errors. Pure apart from `shards`, so it can
/// be fuzzed without a folder.
pub fn read_tfjs_text(mname: &str, text: &str, shards: &mut dyn Shards) -> Result<Vec<(String, Tensor)>> {
    let groups: Vec<Group> =
        serde_json::from_str(text).map_err(|e| Error::msg(format!("{mname}: not a tfjs weights manifest: {e}")))?;
    read_groups(mname, groups, shards, Mode::Layers)
}

/// How weights are stored: layers models' weights are converted to candle
/// layouts and f32; graph models' keep their node names, TF layouts, and
/// float16 stays float16.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Layers,
    Graph,
}

fn read_groups(mname: &str, groups: Vec<Group>, shards: &mut dyn Shards, mode: Mode) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for g in groups {
        let mut data = Vec::new();
        let mut declared: u64 = 0;
        for w in &g.weights {
            declared = declared_bytes(w)
                .and_then(|b| declared.checked_add(b))
                .filter(|b| *b <= MAX_WEIGHT_BYTES)
                .ok_or_else(|| {
                    Error::msg(format!(
                        "{mname}: weight '{}': shape {:?} declares more than {} bytes",
                        w.name, w.shape, MAX_WEIGHT_BYTES
                    ))
                })?;
        }
        for p in &g.paths {
            let size = shards.size(p)?;
            if data.len() as u64 + size > declared {
                return Err(Error::msg(format!(
                    "{mname}: shard '{p}' is {size} bytes; the weights it holds declare {declared} bytes in all"
                )));
            }
            data.extend_from_slice(&shards.read(p)?);
        }
        let mut off = 0usize;
        for w in g.weights {
            let n: usize = w
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|n| *n <= 1 << 31)
                .ok_or_else(|| {
                    Error::msg(format!(
                        "{mname}: weight '{}': shape {:?} is too large",
                        w.name, w.shape
                    ))
                })?;
            let (values, used) = decode(&w, &data[off.min(data.len())..], n, mode == Mode::Graph)
                .map_err(|e| e.context(format!("{mname}: weight '{}'", w.name)))?;
            off += used;
            let t = match values {
                Decoded::F32(v) => {
                    let lone_inf = mode == Mode::Graph && v.len() == 1 && v[0].is_infinite();
                    if let Some(i) = v.iter().position(|x| !x.is_finite()).filter(|_| !lone_inf) {
                        return Err(Error::msg(format!(
                            "{mname}: weight '{}': value {i} is {} after dequantisation (scale {}, min {})",
                            w.name,
                            v[i],
                            w.quantization.as_ref().map(|q| q.scale).unwrap_or(1.0),
                            w.quantization.as_ref().map(|q| q.min).unwrap_or(0.0)
                        )));
                    }
                    Tensor::from_vec(v, w.shape.clone(), &Device::Cpu)?
                }
                Decoded::F16(v) => {
                    // A lone ±inf is a padding value or clip bound (see weights.rs).
                    let lone_inf = v.len() == 1 && v[0].is_infinite();
                    if let Some(i) = v.iter().position(|x| !x.is_finite()).filter(|_| !lone_inf) {
                        return Err(Error::msg(format!(
                            "{mname}: weight '{}': value {i} is {} (float16)",
                            w.name, v[i]
                        )));
                    }
                    Tensor::from_vec(v, w.shape.clone(), &Device::Cpu)?
                }
                Decoded::I64(v) => Tensor::from_vec(v, w.shape.clone(), &Device::Cpu)?,
            };
            match mode {
                Mode::Layers => out.push(to_candle_layout(&w.name, t)?),
                Mode::Graph => out.push((w.name.clone(), t)),
            }
        }
        if off != data.len() {
            return Err(Error::msg(format!(
                "{mname}: shards hold {} bytes but the weights use {off}",
                data.len()
            )));
        }
    }
    Ok(out)
}

enum Decoded {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    I64(Vec<i64>),
}

/// Decodes one weight's `n` values from the front of `data`; float16 stays
/// float16 when `keep_f16`. Returns the values and the bytes used.
fn decode(w: &Spec, data: &[u8], n: usize, keep_f16: bool) -> Result<(Decoded, usize)> {
    let need = |bytes: usize| -> Result<()> {
        if data.len() < bytes {
            Err(Error::msg(format!(
                "shard data ends early (needs {bytes} bytes, {} left)",
                data.len()
            )))
        } else {
            Ok(())
        }
    };
    if let Some(q) = &w.quantization {
        return match q.dtype.as_str() {
            "uint8" => {
                need(n)?;
                let v = data[..n].iter().map(|&b| (b as f64 * q.scale + q.min) as f32).collect();
                Ok((Decoded::F32(v), n))
            }
            "uint16" => {
                need(2 * n)?;
                let v = data[..2 * n]
                    .chunks_exact(2)
                    .map(|c| (u16::from_le_bytes([c[0], c[1]]) as f64 * q.scale + q.min) as f32)
                    .collect();
                Ok((Decoded::F32(v), 2 * n))
            }
            "float16" if keep_f16 => {
                need(2 * n)?;
                let v = data[..2 * n]
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect();
                Ok((Decoded::F16(v), 2 * n))
            }
            "float16" => {
                need(2 * n)?;
                let v = data[..2 * n]
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect();
                Ok((Decoded::F32(v), 2 * n))
            }
            other => Err(Error::msg(format!("unsupported quantization dtype '{other}'"))),
        };
    }
    match w.dtype.as_str() {
        "float32" => {
            need(4 * n)?;
            let v = data[..4 * n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok((Decoded::F32(v), 4 * n))
        }
        "int32" => {
            need(4 * n)?;
            let v = data[..4 * n]
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect();
            Ok((Decoded::I64(v), 4 * n))
        }
        other => Err(Error::msg(format!("unsupported dtype '{other}'"))),
    }
}

/// A tfjs graph model (`model.json` with `modelTopology` and `weightsManifest`).
#[derive(Deserialize)]
struct GraphModelJson {
    #[serde(rename = "modelTopology")]
    topology: serde_json::Value,
    #[serde(default)]
    signature: Option<serde_json::Value>,
    #[serde(rename = "weightsManifest")]
    weights: Vec<Group>,
}

/// True when `text` is a graph model's `model.json` (not a weights manifest).
pub fn is_graph_model(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("modelTopology").map(|t| t.get("node").is_some()))
        .unwrap_or(false)
}

/// Reads a graph model: its weights under their node names (TF layouts;
/// float16 kept as float16, int32 as i64, uint8/uint16 dequantised to f32)
/// plus the topology and signature as the U8 tensor
/// [`crate::graph::executor::GRAPH_TENSOR`].
pub fn read_graph_text(mname: &str, text: &str, shards: &mut dyn Shards) -> Result<Vec<(String, Tensor)>> {
    let g: GraphModelJson =
        serde_json::from_str(text).map_err(|e| Error::msg(format!("{mname}: not a tfjs graph model: {e}")))?;
    let mut out = read_groups(mname, g.weights, shards, Mode::Graph)?;
    let topo = serde_json::json!({"modelTopology": g.topology, "signature": g.signature});
    let bytes = serde_json::to_vec(&topo).map_err(|e| Error::msg(format!("{mname}: {e}")))?;
    let n = bytes.len();
    out.push((
        crate::graph::executor::GRAPH_TENSOR.to_string(),
        Tensor::from_vec(bytes, n, &Device::Cpu)?,
    ));
    Ok(out)
}

/// [`read_graph_text`] on a `model.json` and the shards beside it.
pub fn read_graph(model_json: &Path) -> Result<Vec<(String, Tensor)>> {
    let mname = model_json.display().to_string();
    let text = std::fs::read_to_string(model_json).map_err(|e| Error::msg(format!("{mname}: {e}")))?;
    let dir = model_json.parent().unwrap_or(Path::new("."));
    read_graph_text(&mname, &text, &mut FolderShards { dir, mname: &mname })
}

/// Either kind of tfjs file: a graph model or a layers weights manifest.
fn read_any(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    if is_graph_model(&text) {
        read_graph(path)
    } else {
        read_tfjs(path)
    }
}

/// Renames a tfjs weight and converts its layout (see the module docs).
pub fn to_candle_layout(name: &str, t: Tensor) -> Result<(String, Tensor)> {
    let (stem, last) = match name.rsplit_once('/') {
        Some((s, l)) => (format!("{}.", s.replace('/', ".")), l),
        None => (String::new(), name),
    };
    let rank = t.rank();
    let (suffix, t) = match (last, rank) {
        ("depthwise_filter", 4) => {
            let (kh, kw, c, m) = t.dims4()?;
            ("depthwise", t.permute((2, 3, 0, 1))?.reshape((c * m, 1, kh, kw))?)
        }
        ("pointwise_filter", 4) => ("pointwise", t.permute((3, 2, 0, 1))?),
        ("filters" | "filter" | "kernel", 4) => ("weight", t.permute((3, 2, 0, 1))?),
        ("weights" | "kernel", 2) => ("weight", t.t()?),
        (other, _) => (other, t),
    };
    Ok((format!("{stem}{suffix}"), t.contiguous()?))
}

/// Known tfjs models: (file stem prefix, arch, variant, input size, labels).
fn skeleton_for(stem: &str) -> (&'static str, &'static str, u32, &'static str) {
    if stem.starts_with("tiny_face_detector") {
        ("tiny_face_detector", "", 416, "face")
    } else if stem.starts_with("face_landmark_68_tiny") {
        ("face_landmarks_68", "tiny", 112, "face")
    } else if stem.starts_with("face_landmark_68") {
        ("face_landmarks_68", "full", 112, "face")
    } else if stem.starts_with("nanodet") {
        ("nanodet", "", 416, "")
    } else if stem.starts_with("movenet") {
        ("movenet", "", 192, "person")
    } else if stem.starts_with("handdetect") {
        ("hands", "", 256, "hand")
    } else {
        ("unknown", "", 0, "")
    }
}

/// Converts `manifest` (plus `extra` manifests stored under a name prefix)
/// into `out/<stem>.safetensors` and `out/model.toml`. Returns the weights path.
pub fn import(manifest: &Path, extra: &[(String, PathBuf)], out: &Path) -> Result<PathBuf> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in read_any(manifest)? {
        tensors.insert(name, t);
    }
    for (prefix, m) in extra {
        for (name, t) in read_any(m)? {
            tensors.insert(format!("{prefix}.{name}"), t);
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::msg(format!("{}: {e}", out.display())))?;
    let file_name = manifest.file_name().and_then(|s| s.to_str()).unwrap_or("model");
    let stem = file_name
        .trim_end_matches(".json")
        .trim_end_matches("-weights_manifest")
        .to_string();
    let wpath = out.join(format!("{stem}.safetensors"));
    candle_core::safetensors::save(&tensors, &wpath).map_err(|e| Error::from(e).context(wpath.display()))?;
    let (arch, variant, input, label) = skeleton_for(&stem);
    let toml_path = out.join("model.toml");
    if !toml_path.exists() {
        let id = stem.replace('_', "-");
        let labels = if arch == "nanodet" {
            crate::models::coco::COCO
                .iter()
                .map(|l| format!("\"{l}\""))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            format!("\"{label}\"")
        };
        // The dtype on disk: float16 graph weights stay float16.
        let dtype = if tensors.values().any(|t| t.dtype() == DType::F16) {
            "f16"
        } else {
            "f32"
        };
        let text = format!(
            "# Generated by `modeldock import tfjs {file_name}`; review before use.\n\
             id = \"{id}\"\nname = \"{stem}\"\ntask = \"detect\"\narch = \"{arch}\"\nvariant = \"{variant}\"\n\
             weights = \"{stem}.safetensors\"\ninput_size = {input}\nlabels = [{labels}]\ndtype = \"{dtype}\"\n\
             preload = false\npinned = false\nlicence = \"see LICENSE\"\n"
        );
        std::fs::write(&toml_path, text).map_err(|e| Error::msg(format!("{}: {e}", toml_path.display())))?;
    }
    let total: usize = tensors.values().map(|t| t.elem_count()).sum();
    let f32s = tensors.values().filter(|t| t.dtype() == DType::F32).count();
    tracing::info!(
        "imported {} tensors ({total} values, {f32s} f32) into {}",
        tensors.len(),
        wpath.display()
    );
    Ok(wpath)
}
