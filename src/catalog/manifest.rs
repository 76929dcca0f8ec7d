//! `model.toml`: what a model is, where its weights live, how to run it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::arch::{Arch, Decode, Task};
use crate::error::{Error, Result};
use crate::units::KeepAlive;

/// Where the weights come from: a path relative to the manifest's folder, or
/// a hub reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WeightsRef {
    /// A safetensors file, or a sharded checkpoint's `*.safetensors.index.json`.
    Path(String),
    /// Safetensors shards, read as one set of tensors.
    Files(Vec<String>),
    Hub {
        repo: String,
        file: String,
        #[serde(default = "main_rev")]
        revision: String,
    },
}

fn main_rev() -> String {
    "main".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: String,
    pub name: String,
    pub task: Task,
    pub arch: Arch,
    #[serde(default)]
    pub variant: String,
    /// Not needed when the network runs on a server (`backend`).
    #[serde(default = "no_weights")]
    pub weights: WeightsRef,
    pub input_size: u32,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default = "f32_name")]
    pub dtype: String,
    #[serde(default)]
    pub preload: bool,
    #[serde(default)]
    pub pinned: bool,
    /// "5m", "30s", "0" (unload after each request), "-1" (never). Empty: the global default.
    #[serde(default)]
    pub keep_alive: Option<String>,
    pub licence: String,
    /// Default confidence threshold.
    #[serde(default)]
    pub conf: Option<f32>,
    /// Default NMS IoU threshold.
    #[serde(default)]
    pub iou: Option<f32>,
    /// Free-form architecture options (numbers).
    #[serde(default)]
    pub options: BTreeMap<String, f64>,
    /// Where the weights came from (package, version, file, sha256).
    #[serde(default)]
    pub provenance: Option<String>,
    /// The network runs on a v2 server; decoding, pre- and post-processing
    /// stay here.
    #[serde(default)]
    pub backend: Option<crate::backend::BackendSpec>,
    /// How a JPEG is decoded for this model (`full` or `fast`); unset: the
    /// arch's default ([`Arch::default_decode`]).
    #[serde(default)]
    pub decode: Option<Decode>,
    /// A raw-tensor model's inputs (`[[inputs]]`: name and shape, -1 where
    /// any size goes), as v2 clients send them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<TensorSpec>,
    /// A raw-tensor model's outputs (`[[outputs]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<TensorSpec>,
}

/// One named FP32 tensor of a raw-tensor model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    /// Each dimension's size; -1 where any size goes; empty when unknown.
    #[serde(default)]
    pub shape: Vec<i64>,
}

/// The most `[[inputs]]` or `[[outputs]]` a manifest may list.
pub const MAX_TENSORS: usize = 64;

/// Checks the `[[inputs]]` or `[[outputs]]` (`what`) of a manifest.
fn check_specs(what: &str, specs: &[TensorSpec]) -> Result<()> {
    if specs.len() > MAX_TENSORS {
        return Err(Error::msg(format!(
            "{what}: {} tensors (at most {MAX_TENSORS})",
            specs.len()
        )));
    }
    for (i, t) in specs.iter().enumerate() {
        if t.name.is_empty() || t.name.len() > 256 || t.name.chars().any(char::is_control) {
            return Err(Error::msg(format!(
                "{what}[{i}].name {:?}: expected 1 to 256 printable characters",
                t.name
            )));
        }
        if specs[..i].iter().any(|o| o.name == t.name) {
            return Err(Error::msg(format!("{what}[{i}].name '{}' is listed twice", t.name)));
        }
        if t.shape.len() > 8 || t.shape.iter().any(|d| *d < -1 || *d > i64::from(u32::MAX)) {
            return Err(Error::msg(format!(
                "{what}[{i}].shape {:?}: expected at most 8 sizes, each -1 or 0..=4294967295",
                t.shape
            )));
        }
    }
    Ok(())
}

fn no_weights() -> WeightsRef {
    WeightsRef::Path(String::new())
}

fn f32_name() -> String {
    "f32".to_string()
}

pub const ID_CHARS: &str = "letters, digits, '-', '_' and '.'";

/// A TOML error as one line: the file, the line, the key it concerns and
/// what was expected there, in words rather than Rust types.
fn malformed(text: &str, origin: &str, e: &toml::de::Error) -> Error {
    let mut msg = e.message().trim().to_string();
    if msg.contains("untagged enum WeightsRef") {
        msg = "expected a file name (a string), a list of shard file names, or a hub reference { repo = \"…\", file = \"…\" }".to_string();
    }
    for (rust, words) in [
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        if let Some(head) = msg.strip_suffix(rust) {
            msg = format!("{head}{words}");
        }
    }
    // A missing field has no line of its own (toml points at the whole table).
    let span = e.span().filter(|_| !msg.starts_with("missing field"));
    let Some(span) = span else {
        return Error::msg(format!("{origin}: malformed manifest: {msg}"));
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !k.contains(char::is_whitespace));
    let at = match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k} (line {line_no})"),
        (None, Some(k)) => format!("{k} (line {line_no})"),
        _ => format!("line {line_no}"),
    };
    Error::msg(format!("{origin}: malformed manifest: {at}: {msg}"))
}

impl Manifest {
    /// Parses and validates a manifest; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text).map_err(|e| malformed(text, origin, &e))?;
        m.validate().map_err(|e| e.context(origin))?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(Error::msg(format!(
                "id '{}' must be non-empty and use only {ID_CHARS}",
                self.id
            )));
        }
        let (lo, hi, step) = self.arch.input_size_range();
        if self.input_size < lo || self.input_size > hi || !self.input_size.is_multiple_of(step) {
            return Err(Error::msg(format!(
                "input_size = {}: out of range for arch {} ({lo}..={hi}{})",
                self.input_size,
                self.arch,
                if step > 1 {
                    format!(", a multiple of {step}")
                } else {
                    String::new()
                }
            )));
        }
        for (key, v) in &self.options {
            if !v.is_finite() {
                return Err(Error::msg(format!("options.{key} = {v}: not a finite number")));
            }
            if let Some((lo, hi)) = self.arch.option_range(key) {
                if *v < lo || *v > hi {
                    return Err(Error::msg(format!("options.{key} = {v}: out of range ({lo}..={hi})")));
                }
            }
        }
        if self.dtype != "f32" && self.dtype != "f16" && self.dtype != "bf16" {
            return Err(Error::msg(format!(
                "dtype '{}' is not one of f32, f16, bf16",
                self.dtype
            )));
        }
        if let Some(ka) = &self.keep_alive {
            if KeepAlive::parse(ka).is_none() {
                return Err(Error::msg(format!(
                    "keep_alive '{ka}' is not a duration like 5m, 30s, 0 or -1"
                )));
            }
        }
        for (k, v) in [("conf", self.conf), ("iou", self.iou)] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(Error::msg(format!("{k} = {v}: out of range (0..=1)")));
                }
            }
        }
        if self.decode == Some(Decode::Fast) && !self.arch.decodes_reduced() {
            return Err(Error::msg(format!(
                "decode = \"fast\": arch {} looks at full-resolution crops (fast applies to: {})",
                self.arch,
                Arch::reduced_names()
            )));
        }
        check_specs("inputs", &self.inputs)?;
        check_specs("outputs", &self.outputs)?;
        if let Some(b) = &self.backend {
            b.validate()?;
            if !self.arch.runs_remotely() {
                return Err(Error::msg(format!(
                    "backend: arch {} cannot run its network remotely (these can: {})",
                    self.arch,
                    Arch::remote_names()
                )));
            }
        } else if self.arch == Arch::Raw && self.inputs.is_empty() {
            return Err(Error::msg(
                "arch raw needs a backend = { url, model, … }, or weights with [[inputs]] (a graph from `import onnx --family raw`)",
            ));
        } else if let WeightsRef::Path(p) = &self.weights {
            if p.is_empty() {
                return Err(Error::msg(
                    "weights = \"\": empty path (expected a file name relative to the manifest's folder)",
                ));
            }
        } else if let WeightsRef::Files(files) = &self.weights {
            if files.is_empty() || files.iter().any(String::is_empty) {
                return Err(Error::msg(
                    "weights = [...]: expected one or more shard file names relative to the manifest's folder",
                ));
            }
        }
        Ok(())
    }

    pub fn keep_alive(&self) -> Option<KeepAlive> {
        self.keep_alive.as_deref().and_then(KeepAlive::parse)
    }

    /// How this model's JPEGs are decoded: the manifest's `decode`, else the arch's default.
    pub fn decode(&self) -> Decode {
        self.decode.unwrap_or(self.arch.default_decode())
    }

    /// The longer side a JPEG may be decoded down to for this model (twice
    /// the input size, so the model's own resize still has the detail it
    /// expects); `None` when it is decoded at full size (`decode = "full"`,
    /// or an arch that looks at full-resolution crops).
    pub fn reduced_decode_side(&self) -> Option<u32> {
        (self.decode() == Decode::Fast && self.arch.decodes_reduced()).then_some(self.input_size.saturating_mul(2))
    }

    pub fn option(&self, key: &str, default: f64) -> f64 {
        self.options.get(key).copied().unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "id = \"m\"\nname = \"m\"\ntask = \"detect\"\ninput_size = 416\nlicence = \"x\"\nweights = \"w.safetensors\"\n";

    fn parse(arch: &str, extra: &str) -> Result<Manifest> {
        Manifest::parse(&format!("{BASE}arch = \"{arch}\"\n{extra}"), "m/model.toml")
    }

    fn ok(arch: &str, extra: &str) -> Manifest {
        parse(arch, extra).unwrap_or_else(|e| panic!("{arch} {extra}: {e}"))
    }

    #[test]
    fn a_raw_graph_lists_its_tensors_and_bad_lists_are_one_line() {
        let tensors = "[[inputs]]\nname = \"x\"\nshape = [1, -1, 8]\n[[outputs]]\nname = \"y\"\n";
        let m = ok("raw", tensors);
        assert_eq!(m.inputs[0].shape, vec![1, -1, 8]);
        assert_eq!((m.outputs[0].name.as_str(), m.outputs[0].shape.len()), ("y", 0));
        let e = parse("raw", "").map(|_| ()).map_err(|e| e.to_string());
        assert!(e.as_ref().is_err_and(|e| e.contains("[[inputs]]")), "{e:?}");
        for (extra, words) in [
            ("[[inputs]]\nname = \"x\"\nshape = [1, -2]\n", "inputs[0].shape"),
            (
                "[[inputs]]\nname = \"x\"\n[[inputs]]\nname = \"x\"\n",
                "inputs[1].name 'x' is listed twice",
            ),
            ("[[inputs]]\nname = \"\"\n", "inputs[0].name"),
            (
                "[[inputs]]\nname = \"x\"\n[[outputs]]\nname = \"y\"\nshape = [1,1,1,1,1,1,1,1,1]\n",
                "outputs[0].shape",
            ),
        ] {
            let e = match parse("raw", extra) {
                Ok(_) => panic!("{extra} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.starts_with("m/model.toml: ") && e.contains(words) && !e.contains('\n'),
                "{e}"
            );
        }
    }

    #[test]
    fn decode_is_read_and_defaults_to_the_archs() {
        let face = ok("tiny_face_detector", "");
        assert_eq!((face.decode, face.decode()), (None, Decode::Full));
        assert_eq!(face.reduced_decode_side(), None);
        let fast = ok("tiny_face_detector", "decode = \"fast\"\n");
        assert_eq!((fast.decode, fast.decode()), (Some(Decode::Fast), Decode::Fast));
        assert_eq!(fast.reduced_decode_side(), Some(832));
        let yolo = ok("yolov8", "");
        assert_eq!((yolo.decode(), yolo.reduced_decode_side()), (Decode::Fast, Some(832)));
        let full = ok("yolov8", "decode = \"full\"\n");
        assert_eq!((full.decode(), full.reduced_decode_side()), (Decode::Full, None));
        let hands = ok("hands", "decode = \"full\"\n");
        assert_eq!(hands.reduced_decode_side(), None);
    }

    #[test]
    fn a_bad_decode_is_one_line_naming_the_field_and_the_file() {
        for (arch, extra, words) in [
            ("yolov8", "decode = \"medium\"\n", "medium"),
            ("yolov8", "decode = 2\n", "decode"),
            ("hands", "decode = \"fast\"\n", "full-resolution"),
        ] {
            let e = match parse(arch, extra) {
                Ok(_) => panic!("{extra} was accepted for {arch}"),
                Err(e) => e.to_string(),
            };
            assert!(e.starts_with("m/model.toml: "), "{e}");
            assert!(e.contains("decode") && e.contains(words), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_builtin_face_detector_decodes_in_full_and_the_others_as_their_arch() {
        for (text, _, _) in crate::catalog::builtin::MODELS {
            let m = Manifest::parse(text, "builtin").unwrap_or_else(|e| panic!("{e}"));
            let want = if m.arch == Arch::TinyFaceDetector {
                Decode::Full
            } else {
                m.arch.default_decode()
            };
            assert_eq!(m.decode(), want, "{}", m.id);
        }
    }
}
