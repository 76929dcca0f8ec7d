//! `modeldock import pt FILE.pt --out DIR`: an Ultralytics YOLOv8 checkpoint
//! (or a Segment Anything state dict: `pt_sam`) → safetensors +
//! `model.toml`, without Python and without executing the pickle.
//!
//! A zip-format torch checkpoint holds `<prefix>/data.pkl` (the pickled
//! object graph, read by [`super::pickle`]) and one `<prefix>/data/<key>`
//! entry per storage. The model is `ckpt['ema']` if present, else
//! `ckpt['model']` (as Ultralytics loads it), a `DetectionModel` or
//! `PoseModel` record; its tensors are named the way `state_dict()` names
//! them (`_parameters`, then persistent `_buffers`, then `_modules`,
//! recursively), minus BatchNorm's `num_batches_tracked`. A plain state dict
//! (`{name: tensor}`) works too. Floats become f32, integers i64.
//!
//! Nothing read from the file names a path: storages are looked up by their
//! key (a plain name) inside the archive, and the output folder gets two
//! fixed names. Every entry's size is checked against the size the pickle
//! declares before it is read.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use zip::CompressionMethod;

use super::pickle::{self, Limits, Pickle, StorageType, TensorMeta, Value};
use crate::catalog::manifest::Manifest;
use crate::error::{Error, Result};

/// Largest `data.pkl` read.
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most entries an archive may list.
const MAX_ENTRIES: usize = 1 << 20;
/// Largest tensor (elements).
const MAX_TENSOR_ELEMS: u64 = 1 << 31;
/// Module visits while walking the tree (shared submodules count each time).
const MAX_MODULE_VISITS: usize = 1 << 16;
/// Module tree depth.
const MAX_DEPTH: usize = 64;
/// Dict entries looked through while walking the tree, in all.
const MAX_WALK_ENTRIES: usize = 1 << 24;
/// YOLOv8 BatchNorm eps (what [`crate::models::yolov8`] folds with).
const YOLO_BN_EPS: f64 = 1e-3;

/// What a checkpoint holds, ready to build a YOLOv8 network from.
#[derive(Debug)]
pub struct Checkpoint {
    /// `state_dict()` names → f32 (floats) or i64 tensors, in state_dict order.
    pub tensors: Vec<(String, Tensor)>,
    /// `detect` or `pose`.
    pub task: String,
    /// `n`, `s`, `m`, `l` or `x`.
    pub variant: String,
    /// One label per class, in class order.
    pub labels: Vec<String>,
    pub input_size: u32,
    /// The pickled model class (`ultralytics.nn.tasks.DetectionModel`), if any.
    pub model_class: Option<String>,
    /// The storage types the weights were stored as (`float16`).
    pub stored_as: Vec<&'static str>,
    /// `ckpt['version']` (the Ultralytics version that wrote it).
    pub version: Option<String>,
    /// `ckpt['license']`.
    pub licence: Option<String>,
}

impl Checkpoint {
    /// The tensors as a map (for a `VarBuilder` or safetensors).
    pub fn tensor_map(&self) -> HashMap<String, Tensor> {
        self.tensors.iter().cloned().collect()
    }

    pub fn nc(&self) -> usize {
        self.labels.len()
    }
}

/// What [`import`] wrote.
#[derive(Debug)]
pub struct Imported {
    pub weights: PathBuf,
    /// The manifest written, or `None` when an existing `model.toml` was kept.
    pub manifest: Option<PathBuf>,
    pub manifest_path: PathBuf,
    pub tensors: usize,
    pub weights_bytes: u64,
    pub task: String,
    pub variant: String,
    pub classes: usize,
    pub input_size: u32,
}

fn fail(m: impl Into<String>) -> Error {
    Error::msg(m)
}

/// Whether `path` names a torch checkpoint (`.pt`, `.pth`).
pub fn is_checkpoint_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pt") || e.eq_ignore_ascii_case("pth"))
}

/// Reads a YOLOv8 checkpoint. Errors are one line and start with the file name.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| fail(format!("{name}: {e}")))?;
    let len = f
        .metadata()
        .map(|m| m.len())
        .map_err(|e| fail(format!("{name}: {e}")))?;
    read_checkpoint_from(std::io::BufReader::new(f), len).map_err(|e| e.context(&name))
}

/// [`read_checkpoint`] on any seekable reader of `len` bytes (errors without the file name).
pub fn read_checkpoint_from<R: Read + Seek>(reader: R, len: u64) -> Result<Checkpoint> {
    let mut ar = Archive::open(reader, len)?;
    let pk = ar.pickle()?;
    interpret(&pk, &mut ar)
}

/// The zip side: entry lookup by name, size-checked reads, decoded storages.
struct Archive<R: Read + Seek> {
    zip: zip::ZipArchive<R>,
    prefix: String,
    len: u64,
    storages: HashMap<String, Decoded>,
}

enum Decoded {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl<R: Read + Seek> Archive<R> {
    fn open(mut reader: R, len: u64) -> Result<Self> {
        // Legacy (torch < 1.6) files are a bare pickle stream: PROTO 2 first.
        let mut magic = [0u8; 2];
        let legacy = reader.read_exact(&mut magic).is_ok() && magic == [0x80, 0x02];
        reader
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| fail(e.to_string()))?;
        let zip = zip::ZipArchive::new(reader).map_err(|e| {
            if legacy {
                fail("a legacy (torch < 1.6, not zip) checkpoint: not supported; re-save it with a newer torch")
            } else {
                fail(format!(
                    "not a zip-format torch checkpoint ({})",
                    first_line(&e.to_string())
                ))
            }
        })?;
        if zip.len() > MAX_ENTRIES {
            return Err(fail(format!(
                "the zip archive has {} entries (at most {MAX_ENTRIES})",
                zip.len()
            )));
        }
        // `<prefix>/data.pkl`, one level deep.
        let mut prefixes: Vec<String> = zip
            .file_names_raw()
            .filter_map(|n| std::str::from_utf8(n).ok())
            .filter_map(|n| n.strip_suffix("/data.pkl"))
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .map(str::to_string)
            .collect();
        prefixes.sort();
        prefixes.dedup();
        let prefix = match prefixes.as_slice() {
            [p] => p.clone(),
            [] => {
                return Err(fail(
                    "zip archive without a <name>/data.pkl entry: not a torch checkpoint",
                ))
            }
            _ => {
                return Err(fail(format!(
                    "zip archive with {} <name>/data.pkl entries (expected exactly one)",
                    prefixes.len()
                )))
            }
        };
        let mut a = Archive {
            zip,
            prefix,
            len,
            storages: HashMap::new(),
        };
        if let Some(order) = a.small_entry("byteorder")? {
            if order.trim_ascii() != b"little" {
                return Err(fail(format!(
                    "byteorder '{}': only little-endian checkpoints are supported",
                    String::from_utf8_lossy(&order).trim()
                )));
            }
        }
        Ok(a)
    }

    /// A small optional metadata entry under the prefix.
    fn small_entry(&mut self, rel: &str) -> Result<Option<Vec<u8>>> {
        let full = format!("{}/{rel}", self.prefix);
        if self.zip.index_for_name(&full).is_none() {
            return Ok(None);
        }
        self.read_entry(rel, None, 64).map(Some)
    }

    /// Reads `<prefix>/<rel>`: STORED, exactly `expect` bytes if given, at most `max`.
    fn read_entry(&mut self, rel: &str, expect: Option<u64>, max: u64) -> Result<Vec<u8>> {
        let full = format!("{}/{rel}", self.prefix);
        let file_len = self.len;
        let mut e = self.zip.by_name(&full).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => fail(format!("entry '{rel}' is missing")),
            e => fail(format!("entry '{rel}': {}", first_line(&e.to_string()))),
        })?;
        if e.compression() != CompressionMethod::Stored {
            return Err(fail(format!(
                "entry '{rel}' is compressed ({:?}); torch writes STORED entries",
                e.compression()
            )));
        }
        let size = e.size();
        if let Some(n) = expect {
            if size != n {
                return Err(fail(format!("entry '{rel}' is {size} bytes; the pickle declares {n}")));
            }
        }
        if size > max || size > file_len {
            return Err(fail(format!(
                "entry '{rel}' claims {size} bytes ({} allowed, the file has {file_len})",
                max.min(file_len)
            )));
        }
        let mut buf = Vec::with_capacity(size as usize);
        (&mut e)
            .take(size)
            .read_to_end(&mut buf)
            .map_err(|err| fail(format!("entry '{rel}': {}", first_line(&err.to_string()))))?;
        if buf.len() as u64 != size {
            return Err(fail(format!(
                "entry '{rel}' ends after {} of {size} bytes (truncated file?)",
                buf.len()
            )));
        }
        // Reading to the end checks the CRC.
        let mut rest = [0u8; 1];
        match e.read(&mut rest) {
            Ok(0) => {}
            Ok(_) => return Err(fail(format!("entry '{rel}' is longer than it declares"))),
            Err(err) => return Err(fail(format!("entry '{rel}': {}", first_line(&err.to_string())))),
        }
        Ok(buf)
    }

    fn pickle(&mut self) -> Result<Pickle> {
        let data = self.read_entry("data.pkl", None, MAX_PICKLE_BYTES)?;
        pickle::load(&data, Limits::default()).map_err(|e| e.context("data.pkl"))
    }

    /// The decoded storage `key` (read once, size-checked against `numel`).
    fn storage(&mut self, t: &TensorMeta) -> Result<&Decoded> {
        let s = &t.storage;
        if !self.storages.contains_key(&s.key) {
            let width = s.dtype.size_in_bytes() as u64;
            let bytes = s.numel.checked_mul(width).ok_or_else(|| {
                fail(format!(
                    "storage '{}' of {} {} elements is too large (its byte size overflows)",
                    s.key,
                    s.numel,
                    dtype_name(s.dtype)
                ))
            })?;
            let raw = self.read_entry(&format!("data/{}", s.key), Some(bytes), u64::MAX)?;
            self.storages.insert(s.key.clone(), decode(s.dtype, &raw));
        }
        self.storages
            .get(&s.key)
            .ok_or_else(|| fail(format!("storage '{}' vanished", s.key)))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn decode(dtype: StorageType, raw: &[u8]) -> Decoded {
    use StorageType::*;
    let w = dtype.size_in_bytes();
    let it = raw.chunks_exact(w);
    match dtype {
        F64 => Decoded::F32(
            it.map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
        ),
        F32 => Decoded::F32(it.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        F16 => Decoded::F32(it.map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
        BF16 => Decoded::F32(it.map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
        I64 => Decoded::I64(
            it.map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        I32 => Decoded::I64(
            it.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
        ),
        I16 => Decoded::I64(it.map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect()),
        I8 => Decoded::I64(it.map(|c| c[0] as i8 as i64).collect()),
        U8 | Bool => Decoded::I64(it.map(|c| c[0] as i64).collect()),
    }
}

fn dtype_name(d: StorageType) -> &'static str {
    use StorageType::*;
    match d {
        F64 => "float64",
        F32 => "float32",
        F16 => "float16",
        BF16 => "bfloat16",
        I64 => "int64",
        I32 => "int32",
        I16 => "int16",
        I8 => "int8",
        U8 => "uint8",
        Bool => "bool",
    }
}

/// The view `t` of `src` (a storage), copied out contiguously.
fn gather<T: Copy>(src: &[T], t: &TensorMeta) -> Result<Vec<T>> {
    let n = t
        .size
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR_ELEMS)
        .ok_or_else(|| {
            fail(format!(
                "shape {:?} is too large (at most {MAX_TENSOR_ELEMS} elements)",
                t.size
            ))
        })?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let last = t.size.iter().zip(&t.stride).try_fold(t.offset, |a, (&d, &s)| {
        (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
    });
    match last {
        Some(l) if l < src.len() as u64 => {}
        _ => {
            return Err(fail(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches past its {} element storage '{}'",
                t.offset,
                t.size,
                t.stride,
                src.len(),
                t.storage.key
            )))
        }
    }
    let n = n as usize;
    let off = t.offset as usize;
    // Row-major strides: one slice.
    let mut expect = 1u64;
    let contiguous = t.size.iter().zip(&t.stride).rev().all(|(&d, &s)| {
        let ok = d == 1 || s == expect;
        expect *= d;
        ok
    });
    if contiguous {
        return Ok(src[off..off + n].to_vec());
    }
    let rank = t.size.len();
    let mut idx = vec![0u64; rank];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let p: u64 = t.offset + idx.iter().zip(&t.stride).map(|(&i, &s)| i * s).sum::<u64>();
        out.push(src[p as usize]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// Walks a module tree the way `nn.Module.state_dict()` does.
struct Walk<'a> {
    pk: &'a Pickle,
    out: Vec<(String, TensorMeta)>,
    visits: usize,
    entries: usize,
}

impl Walk<'_> {
    fn module(&mut self, m: &Value, prefix: &str, depth: usize) -> Result<()> {
        self.visits += 1;
        if self.visits > MAX_MODULE_VISITS || depth > MAX_DEPTH {
            return Err(fail(format!(
                "module tree too large or too deep at '{}'",
                prefix.trim_end_matches('.')
            )));
        }
        let pk = self.pk;
        let at = || {
            if prefix.is_empty() {
                "the model".to_string()
            } else {
                format!("module '{}'", prefix.trim_end_matches('.'))
            }
        };
        // Every lookup below scans the module's __dict__ (and the dicts in
        // it once each): count them so a shared, bloated module cannot make
        // the walk quadratic.
        let own = pk
            .dict_entries(m)
            .ok_or_else(|| fail(format!("{} is not a torch module (no __dict__)", at())))?
            .len();
        let inner: usize = ["_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"]
            .iter()
            .filter_map(|f| pk.get(m, f))
            .map(|v| {
                pk.dict_entries(v)
                    .map(<[_]>::len)
                    .or(pk.seq(v).map(<[_]>::len))
                    .unwrap_or(0)
            })
            .sum();
        self.entries = self.entries.saturating_add(8 * own + inner);
        if self.entries > MAX_WALK_ENTRIES {
            return Err(fail(format!(
                "module tree too large at '{}'",
                prefix.trim_end_matches('.')
            )));
        }
        let class = pk.class_of(m).unwrap_or("");
        if class.ends_with(".BatchNorm2d") {
            if let Some(eps) = pk.get(m, "eps").and_then(Value::as_float) {
                if (eps - YOLO_BN_EPS).abs() > 1e-9 {
                    return Err(fail(format!(
                        "{}: BatchNorm eps {eps} differs from the {YOLO_BN_EPS} YOLOv8 uses",
                        at()
                    )));
                }
            }
        }
        let non_persistent: HashSet<&str> = pk
            .get(m, "_non_persistent_buffers_set")
            .and_then(|s| pk.seq(s))
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (field, skip) in [("_parameters", &HashSet::new()), ("_buffers", &non_persistent)] {
            let Some(entries) = pk.get(m, field).and_then(|d| pk.dict_entries(d)) else {
                continue;
            };
            let entries =
                str_entries(entries).ok_or_else(|| fail(format!("{}: {field} has a non-string key", at())))?;
            for (k, v) in entries {
                if skip.contains(k) || *v == Value::None {
                    continue;
                }
                let t = pk
                    .tensor(v)
                    .ok_or_else(|| fail(format!("{}: {field}['{k}'] is not a tensor", at())))?;
                self.out.push((format!("{prefix}{k}"), t.clone()));
            }
        }
        if let Some(entries) = pk.get(m, "_modules").and_then(|d| pk.dict_entries(d)) {
            let entries =
                str_entries(entries).ok_or_else(|| fail(format!("{}: _modules has a non-string key", at())))?;
            for (k, v) in entries {
                if *v != Value::None {
                    self.module(v, &format!("{prefix}{k}."), depth + 1)?;
                }
            }
        }
        Ok(())
    }
}

/// A dict's string-keyed entries in Python's order: a repeated key keeps its
/// first place and takes its last value. `None` if a key is not a string.
fn str_entries(entries: &[(Value, Value)]) -> Option<Vec<(&str, &Value)>> {
    let mut out: Vec<(&str, &Value)> = Vec::with_capacity(entries.len());
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (k, v) in entries {
        let k = k.as_str()?;
        match at.get(k) {
            Some(&i) => out[i].1 = v,
            None => {
                at.insert(k, out.len());
                out.push((k, v));
            }
        }
    }
    Some(out)
}

/// The ordered `_modules` of a module record.
fn children<'a>(pk: &'a Pickle, m: &Value) -> Vec<(&'a str, &'a Value)> {
    pk.get(m, "_modules")
        .and_then(|d| pk.dict_entries(d))
        .and_then(str_entries)
        .unwrap_or_default()
}

fn short_class(c: &str) -> &str {
    c.rsplit('.').next().unwrap_or(c)
}

/// YOLOv8's layer classes, in order (the head last).
const YOLOV8_LAYERS: [&str; 22] = [
    "Conv", "Conv", "C2f", "Conv", "C2f", "Conv", "C2f", "Conv", "C2f", "SPPF", "Upsample", "Concat", "C2f",
    "Upsample", "Concat", "C2f", "Conv", "Concat", "C2f", "Conv", "Concat", "C2f",
];

/// Checks the model's layer list is YOLOv8's and returns the head's task.
fn head_task(pk: &Pickle, model: &Value) -> Result<&'static str> {
    let seq = children(pk, model)
        .into_iter()
        .find(|(k, _)| *k == "model")
        .map(|(_, v)| v)
        .ok_or_else(|| fail("the model has no 'model' layer list"))?;
    let layers = children(pk, seq);
    let classes: Vec<&str> = layers
        .iter()
        .map(|(_, v)| pk.class_of(v).map(short_class).unwrap_or("?"))
        .collect();
    if classes.len() != 23 {
        return Err(fail(format!(
            "the model has {} layers, YOLOv8 has 23: only YOLOv8 detect and pose checkpoints are supported",
            classes.len()
        )));
    }
    if let Some(i) = (0..22).find(|&i| classes[i] != YOLOV8_LAYERS[i]) {
        return Err(fail(format!(
            "layer {i} is {}, YOLOv8 has {} there: only YOLOv8 detect and pose checkpoints are supported",
            classes[i], YOLOV8_LAYERS[i]
        )));
    }
    match classes[22] {
        "Detect" => Ok("detect"),
        "Pose" => {
            let head = layers[22].1;
            let kpt: Option<Vec<i64>> = pk
                .get(head, "kpt_shape")
                .and_then(|v| pk.seq(v))
                .map(|s| s.iter().filter_map(Value::as_int).collect());
            match kpt.as_deref() {
                None | Some([17, 3]) => Ok("pose"),
                Some(k) => Err(fail(format!(
                    "pose head with kpt_shape {k:?}: only 17 keypoints (x, y, visibility) are supported"
                ))),
            }
        }
        other => Err(fail(format!("head {other} is not supported (YOLOv8 Detect or Pose)"))),
    }
}

fn variant_of_width(c: usize) -> Option<&'static str> {
    Some(match c {
        16 => "n",
        32 => "s",
        48 => "m",
        64 => "l",
        80 => "x",
        _ => return None,
    })
}

fn dims_of(tensors: &[(String, TensorMeta)], name: &str) -> Option<Vec<u64>> {
    tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t.size.clone())
}

/// The class names in class order (from `{i: name}` or `[name, …]`).
fn names_of(pk: &Pickle, names: &Value, nc: usize) -> Result<Vec<String>> {
    let clean = |s: &str| -> Result<String> {
        if s.len() > 256 {
            return Err(fail("model.names holds a name longer than 256 bytes"));
        }
        Ok(s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
    };
    if let Some(seq) = pk.seq(names) {
        if seq.len() != nc {
            return Err(fail(format!("model.names lists {} names for {nc} classes", seq.len())));
        }
        return seq
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| fail("model.names holds a non-string"))
                    .and_then(clean)
            })
            .collect();
    }
    let entries = pk
        .dict_entries(names)
        .ok_or_else(|| fail("model.names is neither a dict nor a list"))?;
    let by_index: HashMap<i64, &Value> = entries.iter().filter_map(|(k, v)| Some((k.as_int()?, v))).collect();
    (0..nc)
        .map(|i| {
            by_index
                .get(&(i as i64))
                .and_then(|v| v.as_str())
                .ok_or_else(|| fail(format!("model.names has no name for class {i}")))
                .and_then(clean)
        })
        .collect()
}

/// `args.imgsz` if it is a usable square YOLOv8 input size.
fn imgsz_of(pk: &Pickle, model: &Value) -> Option<u32> {
    let args = pk.get(model, "args")?;
    let v = pk.get(args, "imgsz")?;
    let s = match v.as_int() {
        Some(s) => s,
        None => match pk.seq(v)? {
            [a, b] if a.as_int() == b.as_int() => a.as_int()?,
            _ => return None,
        },
    };
    let s = u32::try_from(s).ok()?;
    let (lo, hi, step) = crate::catalog::Arch::Yolov8.input_size_range();
    (s >= lo && s <= hi && s.is_multiple_of(step)).then_some(s)
}

/// What `data.pkl` holds: the model module (none for a plain state dict),
/// its tensors by state-dict name and the task its head declares.
struct Found<'a> {
    model: Option<&'a Value>,
    tensors: Vec<(String, TensorMeta)>,
    task: Option<&'static str>,
}

/// The checkpoint `data.pkl` describes, its tensors read from the archive.
fn interpret<R: Read + Seek>(pk: &Pickle, ar: &mut Archive<R>) -> Result<Checkpoint> {
    let root = &pk.root;
    let Found { model, tensors, task } = find_tensors(pk)?;
    if super::pt_sam::is_sam(tensors.iter().map(|(n, _)| n.as_str())) {
        // A Segment Anything state dict: no YOLO head to read.
        let (out, stored_as) = materialise(ar, &tensors)?;
        let mut ck = Checkpoint {
            tensors: out,
            task: "segment".to_string(),
            variant: String::new(),
            labels: vec!["object".to_string()],
            input_size: 1024,
            model_class: None,
            stored_as,
            version: None,
            licence: None,
        };
        ck.variant = super::pt_sam::variant(&ck)
            .ok_or_else(|| fail("a Segment Anything state dict whose image encoder is none of ViT-B/L/H or TinyViT"))?
            .to_string();
        return Ok(ck);
    }
    // Shapes decide what the network needs; the pickled attributes must agree.
    let variant = variant_of(pk, model, &tensors)?;
    let (task, nc) = head_of(task, &tensors)?;
    let labels = labels_of(pk, model, task, nc)?;
    let input_size = model.and_then(|m| imgsz_of(pk, m)).unwrap_or(640);
    let (out, stored_as) = materialise(ar, &tensors)?;
    Ok(Checkpoint {
        tensors: out,
        task: task.to_string(),
        variant: variant.to_string(),
        labels,
        input_size,
        model_class: model.and_then(|m| pk.class_of(m)).map(str::to_string),
        stored_as,
        version: pk.get(root, "version").and_then(Value::as_str).map(str::to_string),
        licence: pk.get(root, "license").and_then(Value::as_str).map(str::to_string),
    })
}

/// The model (the root if it is a module, else `ema`, else `model`) and its tensors, or a plain state dict's.
fn find_tensors(pk: &Pickle) -> Result<Found<'_>> {
    let root = &pk.root;
    let is_module = |v: &Value| pk.class_of(v).is_some() && pk.get(v, "_modules").is_some();
    // Ultralytics loads `ckpt.get('ema') or ckpt['model']`.
    let model = if is_module(root) {
        Some(root)
    } else {
        ["ema", "model"]
            .iter()
            .filter_map(|k| pk.get(root, k))
            .find(|v| is_module(v))
    };
    let mut tensors: Vec<(String, TensorMeta)> = Vec::new();
    let mut task: Option<&'static str> = None;
    match model {
        Some(m) => {
            let mut w = Walk {
                pk,
                out: Vec::new(),
                visits: 0,
                entries: 0,
            };
            w.module(m, "", 0)?;
            tensors = w.out;
            task = Some(head_task(pk, m)?);
        }
        None => {
            // A plain state dict: {name: tensor}.
            let entries = pk
                .dict_entries(root)
                .ok_or_else(|| fail("data.pkl holds neither an Ultralytics checkpoint (model/ema) nor a state dict"))?;
            for (k, v) in entries {
                if let (Some(k), Some(t)) = (k.as_str(), pk.tensor(v)) {
                    tensors.retain(|(n, _)| n != k);
                    tensors.push((k.to_string(), t.clone()));
                }
            }
            if tensors.is_empty() {
                return Err(fail(
                    "data.pkl holds neither an Ultralytics checkpoint (model/ema) nor a state dict",
                ));
            }
        }
    }
    tensors.retain(|(n, _)| !n.ends_with("num_batches_tracked"));
    Ok(Found { model, tensors, task })
}

/// The YOLOv8 variant the first conv's width gives, checked against the model's `yaml.scale`.
fn variant_of(pk: &Pickle, model: Option<&Value>, tensors: &[(String, TensorMeta)]) -> Result<&'static str> {
    let width = dims_of(tensors, "model.0.conv.weight")
        .and_then(|d| d.first().copied())
        .ok_or_else(|| fail("no tensor 'model.0.conv.weight': not a YOLOv8 checkpoint"))?;
    let variant = variant_of_width(width as usize).ok_or_else(|| {
        fail(format!(
            "first conv has {width} channels; YOLOv8 n/s/m/l/x have 16/32/48/64/80"
        ))
    })?;
    if let Some(scale) = model
        .and_then(|m| pk.get(m, "yaml"))
        .and_then(|y| pk.get(y, "scale"))
        .and_then(Value::as_str)
    {
        if scale != variant {
            return Err(fail(format!(
                "yaml scale '{scale}' disagrees with the weights (first conv width {width} is YOLOv8{variant})"
            )));
        }
    }
    Ok(variant)
}

/// The head's task and class count from its tensors, checked against the task it declares.
fn head_of(task: Option<&'static str>, tensors: &[(String, TensorMeta)]) -> Result<(&'static str, usize)> {
    let has_kpts = dims_of(tensors, "model.22.cv4.0.2.bias").is_some();
    let task = task.unwrap_or(if has_kpts { "pose" } else { "detect" });
    if (task == "pose") != has_kpts {
        return Err(fail(format!(
            "a {task} head {} keypoint branch (model.22.cv4)",
            if has_kpts { "with a" } else { "without its" }
        )));
    }
    let nc = dims_of(tensors, "model.22.cv3.0.2.bias")
        .and_then(|d| d.first().copied())
        .ok_or_else(|| fail("no tensor 'model.22.cv3.0.2.bias': not a YOLOv8 detect or pose head"))?
        as usize;
    if nc == 0 || nc > 10_000 {
        return Err(fail(format!(
            "tensor 'model.22.cv3.0.2.bias' gives {nc} classes (expected 1..=10000)"
        )));
    }
    if task == "pose" && nc != 1 {
        return Err(fail(format!(
            "a pose head with {nc} classes (modeldock's pose network has 1)"
        )));
    }
    Ok((task, nc))
}

/// The class labels: the model's `names`, else `person`, COCO's or `class<i>`.
fn labels_of(pk: &Pickle, model: Option<&Value>, task: &str, nc: usize) -> Result<Vec<String>> {
    Ok(match model.and_then(|m| pk.get(m, "names")) {
        Some(names) if *names != Value::None => names_of(pk, names, nc)?,
        _ if task == "pose" => vec!["person".to_string()],
        _ if nc == 80 => crate::models::coco::COCO.iter().map(|s| s.to_string()).collect(),
        _ => (0..nc).map(|i| format!("class{i}")).collect(),
    })
}

/// The tensors read from the archive, and the storage dtypes they came in (in order seen).
type Materialised = (Vec<(String, Tensor)>, Vec<&'static str>);

/// Reads each tensor's storage into a CPU tensor, refusing NaN or infinite floats.
fn materialise<R: Read + Seek>(ar: &mut Archive<R>, tensors: &[(String, TensorMeta)]) -> Result<Materialised> {
    let mut out = Vec::with_capacity(tensors.len());
    let mut stored_as: Vec<&'static str> = Vec::new();
    for (name, meta) in tensors {
        let t = match ar.storage(meta).map_err(|e| e.context(format!("tensor '{name}'")))? {
            Decoded::F32(src) => {
                let v = gather(src, meta).map_err(|e| e.context(format!("tensor '{name}'")))?;
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(fail(format!("tensor '{name}' holds NaN or infinite values")));
                }
                Tensor::from_vec(
                    v,
                    meta.size.iter().map(|&d| d as usize).collect::<Vec<_>>(),
                    &Device::Cpu,
                )?
            }
            Decoded::I64(src) => {
                let v = gather(src, meta).map_err(|e| e.context(format!("tensor '{name}'")))?;
                Tensor::from_vec(
                    v,
                    meta.size.iter().map(|&d| d as usize).collect::<Vec<_>>(),
                    &Device::Cpu,
                )?
            }
        };
        let d = dtype_name(meta.storage.dtype);
        if !stored_as.contains(&d) {
            stored_as.push(d);
        }
        out.push((name.clone(), t));
    }
    Ok((out, stored_as))
}

/// A TOML basic string.
/// A TOML string literal.
pub(crate) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A model id from a file stem: letters, digits, '-', '_', '.'.
pub fn id_of(stem: &str) -> String {
    let id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = id.trim_matches('.').to_string();
    if id.is_empty() {
        "yolov8-import".to_string()
    } else {
        id
    }
}

/// The `model.toml` text for a checkpoint (validated by [`Manifest::parse`]).
pub fn manifest_text(
    ck: &Checkpoint,
    id: &str,
    weights_file: &str,
    size_bytes: u64,
    provenance: &str,
) -> Result<String> {
    let labels = ck.labels.iter().map(|l| toml_str(l)).collect::<Vec<_>>().join(", ");
    let what = format!(
        "YOLOv8{} {}, {} class{}",
        ck.variant,
        ck.task,
        ck.nc(),
        if ck.nc() == 1 { "" } else { "es" }
    );
    let text = format!(
        "# Imported by `modeldock import pt` from {}; review before use.\n\
         id = {}\nname = {}\ntask = {}\narch = \"yolov8\"\nvariant = {}\nweights = {}\ninput_size = {}\n\
         labels = [{labels}]\ndtype = \"f32\"\nkeep_alive = \"5m\"\nconf = 0.25\niou = 0.7\nlicence = {}\n\
         provenance = {}\n\n[options]\nsize_bytes = {size_bytes}\n",
        id,
        toml_str(id),
        toml_str(&format!("{id} ({what})")),
        toml_str(&ck.task),
        toml_str(&ck.variant),
        toml_str(weights_file),
        ck.input_size,
        toml_str(ck.licence.as_deref().unwrap_or("see the checkpoint's source")),
        toml_str(provenance),
    );
    Manifest::parse(&text, "model.toml")?;
    Ok(text)
}

/// Converts `pt` into `out/<stem>.safetensors` (f32) and `out/model.toml`
/// (kept if it exists).
pub fn import(pt: &Path, out: &Path) -> Result<Imported> {
    let ck = read_checkpoint(pt)?;
    let stem = pt.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let id = id_of(stem);
    let weights_file = format!("{id}.safetensors");
    std::fs::create_dir_all(out).map_err(|e| fail(format!("{}: {e}", out.display())))?;
    let wpath = out.join(&weights_file);
    let map = ck.tensor_map();
    candle_core::safetensors::save(&map, &wpath).map_err(|e| Error::from(e).context(wpath.display()))?;
    let weights_bytes = std::fs::metadata(&wpath).map(|m| m.len()).unwrap_or(0);
    let (hash, file_bytes) = {
        let f = std::fs::File::open(pt).map_err(|e| fail(format!("{}: {e}", pt.display())))?;
        let mut h = blake3::Hasher::new();
        h.update_reader(f).map_err(|e| fail(format!("{}: {e}", pt.display())))?;
        (h.finalize(), h.count())
    };
    let provenance = format!(
        "{}{} checkpoint {} ({} bytes, blake3 {}), {} weights stored as {}",
        ck.version
            .as_deref()
            .map(|v| format!("ultralytics {v} "))
            .unwrap_or_default(),
        ck.model_class.as_deref().map(short_class).unwrap_or("state-dict"),
        pt.file_name().and_then(|s| s.to_str()).unwrap_or("?"),
        file_bytes,
        hash.to_hex(),
        ck.tensors.len(),
        ck.stored_as.join("/"),
    );
    let mpath = out.join("model.toml");
    let manifest = if mpath.exists() {
        None
    } else {
        let text = match super::pt_sam::variant(&ck) {
            Some(v) => super::pt_sam::manifest_text(v, &id, &weights_file, weights_bytes, &provenance)?,
            None => manifest_text(&ck, &id, &weights_file, weights_bytes, &provenance)?,
        };
        std::fs::write(&mpath, text).map_err(|e| fail(format!("{}: {e}", mpath.display())))?;
        Some(mpath.clone())
    };
    let f32s = map.values().filter(|t| t.dtype() == DType::F32).count();
    tracing::info!("imported {} tensors ({f32s} f32) into {}", map.len(), wpath.display());
    Ok(Imported {
        weights: wpath,
        manifest,
        manifest_path: mpath,
        tensors: map.len(),
        weights_bytes,
        task: ck.task.clone(),
        variant: ck.variant.clone(),
        classes: ck.nc(),
        input_size: ck.input_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::pickle::Storage;

    fn meta(size: Vec<u64>, stride: Vec<u64>, offset: u64) -> TensorMeta {
        TensorMeta {
            storage: Storage {
                dtype: StorageType::F32,
                key: "0".into(),
                numel: 12,
            },
            offset,
            size,
            stride,
        }
    }

    #[test]
    fn gather_follows_strides_and_refuses_views_past_the_storage() {
        let src: Vec<i32> = (0..12).collect();
        assert_eq!(
            gather(&src, &meta(vec![2, 3], vec![3, 1], 0)).ok(),
            Some(vec![0, 1, 2, 3, 4, 5])
        );
        // A transpose.
        assert_eq!(
            gather(&src, &meta(vec![3, 2], vec![1, 3], 0)).ok(),
            Some(vec![0, 3, 1, 4, 2, 5])
        );
        assert_eq!(gather(&src, &meta(vec![2], vec![1], 10)).ok(), Some(vec![10, 11]));
        assert!(gather(&src, &meta(vec![2], vec![1], 11)).is_err());
        assert!(gather(&src, &meta(vec![4, 4], vec![4, 1], 0)).is_err());
        assert!(gather(&src, &meta(vec![u64::MAX, 2], vec![1, 1], 0)).is_err());
        assert_eq!(gather(&src, &meta(vec![0, 5], vec![5, 1], 99)).ok(), Some(vec![]));
    }

    #[test]
    fn ids_are_sanitised_file_stems() {
        assert_eq!(id_of("yolov8n-random"), "yolov8n-random");
        assert_eq!(id_of("my model (v2)"), "my-model--v2-");
        assert_eq!(id_of(".."), "yolov8-import");
    }
}
