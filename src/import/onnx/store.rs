//! `import onnx`: the lowered graph written as a model folder
//! (`<id>.safetensors` holding the weights and the topology, and a
//! `model.toml`), with the family read from Ultralytics' `metadata_props`
//! or given with `--family`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::catalog::manifest::Manifest;
use crate::error::{Error, Result};
use crate::import::pt::{id_of, toml_str};

/// What the pre- and post-processing around an imported graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Ultralytics detect: one `[1, 4 + classes, anchors]` output.
    Yolo,
    /// Ultralytics pose: `[1, 4 + 1 + 17·3, anchors]`.
    YoloPose,
    /// Ultralytics segment: `[1, 4 + classes + 32, anchors]` and the mask
    /// prototypes `[1, 32, S/4, S/4]`.
    YoloSeg,
    /// DETR-style (Ultralytics RT-DETR): `[1, queries, 6]` rows `cx, cy,
    /// w, h, score, class` (or `4 + classes`), no NMS.
    Detr,
    /// The graph's tensors only: a v2 model whose inputs and outputs are
    /// the graph's.
    Raw,
}

impl Family {
    /// `--family` (`auto` reads the model's metadata).
    pub fn parse(s: &str) -> Result<Option<Family>> {
        Ok(match s {
            "auto" => None,
            "yolo" => Some(Family::Yolo),
            "yolo-pose" => Some(Family::YoloPose),
            "yolo-seg" => Some(Family::YoloSeg),
            "raw" => Some(Family::Raw),
            "detr" => Some(Family::Detr),
            "classify" => {
                return Err(Error::usage(format!(
                    "--family {s}: not supported by this build yet (yolo, yolo-pose, yolo-seg, detr and raw are)"
                )))
            }
            other => {
                return Err(Error::usage(format!(
                    "--family '{other}': expected auto, yolo, yolo-pose, yolo-seg, detr or raw"
                )))
            }
        })
    }

    fn task(self) -> &'static str {
        match self {
            Family::Yolo => "detect",
            Family::YoloPose => "pose",
            Family::YoloSeg => "segment",
            Family::Detr => "detect",
            Family::Raw => "raw",
        }
    }

    /// The name `--family` takes.
    pub fn name(self) -> &'static str {
        match self {
            Family::Yolo => "yolo",
            Family::YoloPose => "yolo-pose",
            Family::YoloSeg => "yolo-seg",
            Family::Detr => "detr",
            Family::Raw => "raw",
        }
    }
}

/// The family a graph without Ultralytics' `task` metadata has, from its
/// shapes: one `[1, 3, S, S]` input and a `[1, 4 + classes, anchors]`
/// output over strides 8, 16 and 32 is a YOLO detector, plus prototypes
/// `[1, 32, S/4, S/4]` a YOLO segmenter; anything else is `raw`.
fn family_of_shapes(inputs: &[(String, Vec<i64>)], outputs: &[Vec<i64>]) -> Family {
    let s = match inputs {
        [(_, x)] if x.len() == 4 && x[1] == 3 && x[2] > 0 && x[2] == x[3] && x[2] % 32 == 0 => x[2],
        _ => return Family::Raw,
    };
    let anchors = (s / 8) * (s / 8) + (s / 16) * (s / 16) + (s / 32) * (s / 32);
    let head = |o: &Vec<i64>| o.len() == 3 && o[0] == 1 && o[1] > 4 && o[2] == anchors;
    match outputs {
        [o] if head(o) => Family::Yolo,
        [o, p] if head(o) && o[1] > 36 && p.as_slice() == [1, 32, s / 4, s / 4] => Family::YoloSeg,
        _ => Family::Raw,
    }
}

/// The family Ultralytics' `task` metadata names.
fn family_of_task(task: &str) -> Result<Family> {
    match task {
        "detect" => Ok(Family::Yolo),
        "pose" => Ok(Family::YoloPose),
        "segment" => Ok(Family::YoloSeg),
        other => Err(Error::msg(format!(
            "metadata task '{other}' is not supported by this build yet (detect, pose and segment are); \
             pass --family to override"
        ))),
    }
}

/// Ultralytics' `names` metadata, a Python dict literal
/// (`{0: 'person', 1: "it's"}`), as labels in index order.
pub fn parse_names(s: &str) -> Result<Vec<String>> {
    let bad = |why: &str| Error::msg(format!("metadata 'names' is not a dict of labels ({why})"));
    let b = s.trim().as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return Err(bad("no braces"));
    }
    let mut i = 1;
    let mut out: Vec<(usize, String)> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] as char).is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() - 1 {
            break;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let key: usize = s[start..i].parse().map_err(|_| bad("a key is not a number"))?;
        skip_ws(&mut i);
        if b.get(i) != Some(&b':') {
            return Err(bad("expected ':'"));
        }
        i += 1;
        skip_ws(&mut i);
        let q = *b.get(i).ok_or_else(|| bad("a value is missing"))?;
        if q != b'\'' && q != b'"' {
            return Err(bad("a value is not a string"));
        }
        i += 1;
        let mut val = Vec::new();
        loop {
            let c = *b.get(i).ok_or_else(|| bad("an unterminated string"))?;
            i += 1;
            if c == b'\\' {
                val.push(*b.get(i).ok_or_else(|| bad("an unterminated string"))?);
                i += 1;
            } else if c == q {
                break;
            } else {
                val.push(c);
            }
        }
        out.push((key, String::from_utf8_lossy(&val).into_owned()));
        skip_ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return Err(bad("expected ',' or '}'")),
        }
        if out.len() > 100_000 {
            return Err(bad("too many labels"));
        }
    }
    out.sort_by_key(|(k, _)| *k);
    if out.iter().enumerate().any(|(i, (k, _))| i != *k) {
        return Err(bad("keys are not 0..n"));
    }
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// What an import wrote.
pub struct Imported {
    pub weights: PathBuf,
    pub manifest: PathBuf,
    pub id: String,
    pub family: Family,
    pub labels: usize,
    pub input_size: u32,
    pub nodes: usize,
}

/// Imports `path` into `out` (created if missing; an existing `model.toml`
/// there is replaced).
pub fn import(path: &Path, out: &Path, id: Option<&str>, family: Option<Family>) -> Result<Imported> {
    let model = super::read(path)?;
    let name = path.display().to_string();
    let meta = &model.metadata;
    let family = match family {
        Some(f) => f,
        None => match meta.get("task") {
            // Ultralytics names RT-DETR's head in the metadata.
            Some(t) if t == "detect" && meta.get("head").is_some_and(|h| h.contains("DETR")) => Family::Detr,
            Some(t) => family_of_task(t).map_err(|e| e.context(&name))?,
            None => family_of_shapes(&model.lowered.inputs, &model.lowered.output_shapes),
        },
    };
    let input_size = match (family, model.lowered.inputs.as_slice()) {
        (Family::Raw, inputs) => inputs
            .first()
            .and_then(|(_, s)| s.last())
            .and_then(|d| u32::try_from(*d).ok())
            .filter(|d| (1..=2048).contains(d))
            .unwrap_or(1),
        (_, [(_, shape)]) if shape.len() == 4 && shape[1] == 3 && shape[2] > 0 && shape[2] == shape[3] => {
            shape[2] as u32
        }
        (_, inputs) => {
            let shapes: Vec<String> = inputs.iter().map(|(n, s)| format!("'{n}' {s:?}")).collect();
            return Err(Error::msg(format!(
                "{name}: inputs {}; a YOLO graph takes one [1, 3, S, S] (import it with --family raw)",
                shapes.join(", ")
            )));
        }
    };
    if family != Family::Raw {
        let declared = model.lowered.output_shapes.first().zip(model.lowered.outputs.first());
        if let Some((shape, (out_name, _))) = declared.filter(|(s, _)| !s.is_empty()) {
            let rows = if family == Family::Detr {
                shape.get(2)
            } else {
                shape.get(1)
            };
            if family == Family::Detr && (shape.len() != 3 || rows.is_some_and(|r| (0..5).contains(r))) {
                return Err(Error::msg(format!(
                    "{name}: output '{out_name}' has shape {shape:?}; a DETR graph gives [1, queries, 4 + scores] \
                     (import it with --family raw)"
                )));
            }
            if family != Family::Detr && (shape.len() != 3 || shape[0] != 1 || (shape[1] >= 0 && shape[1] <= 4)) {
                return Err(Error::msg(format!(
                    "{name}: output '{out_name}' has shape {shape:?}; a YOLO graph gives [1, 4 + classes, anchors] \
                     (import it with --family raw)"
                )));
            }
        }
    }
    let labels = match (meta.get("names"), family) {
        (Some(n), _) => parse_names(n).map_err(|e| e.context(&name))?,
        (None, Family::Raw) => Vec::new(),
        (None, Family::YoloPose) => vec!["person".to_string()],
        (None, Family::Yolo | Family::YoloSeg | Family::Detr) => {
            crate::models::coco::COCO.iter().map(|s| s.to_string()).collect()
        }
    };
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let id = id_of(id.unwrap_or(stem));
    std::fs::create_dir_all(out).map_err(|e| Error::msg(format!("{}: {e}", out.display())))?;
    let weights_file = format!("{id}.safetensors");
    let wpath = out.join(&weights_file);
    let map: HashMap<String, Tensor> = model.tensors()?.into_iter().collect();
    candle_core::safetensors::save(&map, &wpath).map_err(|e| Error::from(e).context(wpath.display()))?;
    let size_bytes = std::fs::metadata(&wpath).map(|m| m.len()).unwrap_or(0);
    let (hash, file_bytes) = {
        let f = std::fs::File::open(path).map_err(|e| Error::msg(format!("{name}: {e}")))?;
        let mut h = blake3::Hasher::new();
        h.update_reader(f).map_err(|e| Error::msg(format!("{name}: {e}")))?;
        (h.finalize(), h.count())
    };
    let provenance = format!(
        "ONNX {} ({file_bytes} bytes, blake3 {}), opset {}, from {}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("?"),
        hash.to_hex(),
        model.opset,
        if model.producer.is_empty() {
            "an unnamed producer"
        } else {
            &model.producer
        },
    );
    let label_list = labels.iter().map(|l| toml_str(l)).collect::<Vec<_>>().join(", ");
    let licence = meta
        .get("license")
        .cloned()
        .unwrap_or_else(|| "see the model's source".to_string());
    let (arch, title, thresholds) = match family {
        Family::Raw => ("raw", format!("{id} (ONNX, raw tensors)"), String::new()),
        Family::Detr => (
            "detr",
            format!("{id} (ONNX detr, {} classes)", labels.len()),
            "conf = 0.25\n".to_string(),
        ),
        _ => (
            "yolov8",
            format!("{id} (ONNX {}, {} classes)", family.name(), labels.len()),
            "conf = 0.25\niou = 0.7\n".to_string(),
        ),
    };
    let mut text = format!(
        "# Imported by `modeldock import onnx` from {}; review before use.\n\
         id = {}\nname = {}\ntask = {}\narch = \"{arch}\"\nvariant = \"onnx\"\nweights = {}\ninput_size = {input_size}\n\
         labels = [{label_list}]\ndtype = \"f32\"\nkeep_alive = \"5m\"\n{thresholds}licence = {}\n\
         provenance = {}\n\n[options]\nsize_bytes = {size_bytes}\n",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("?"),
        toml_str(&id),
        toml_str(&title),
        toml_str(family.task()),
        toml_str(&weights_file),
        toml_str(&licence),
        toml_str(&provenance),
    );
    if family == Family::Raw {
        let outputs: Vec<(String, Vec<i64>)> = model
            .lowered
            .outputs
            .iter()
            .map(|(n, _)| n.clone())
            .zip(model.lowered.output_shapes.iter().cloned())
            .collect();
        for (table, list) in [("inputs", &model.lowered.inputs), ("outputs", &outputs)] {
            for (n, shape) in list {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                text.push_str(&format!(
                    "\n[[{table}]]\nname = {}\nshape = [{}]\n",
                    toml_str(n),
                    dims.join(", ")
                ));
            }
        }
    }
    Manifest::parse(&text, "model.toml")?;
    let mpath = out.join("model.toml");
    std::fs::write(&mpath, text).map_err(|e| Error::msg(format!("{}: {e}", mpath.display())))?;
    Ok(Imported {
        weights: wpath,
        manifest: mpath,
        id,
        family,
        labels: labels.len(),
        input_size,
        nodes: model.lowered.topology["modelTopology"]["node"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_of_a_graph_without_metadata_comes_from_its_shapes() {
        let x = |s: i64| vec![("images".to_string(), vec![1, 3, s, s])];
        // 320: 40² + 20² + 10² = 2100 anchors.
        assert_eq!(family_of_shapes(&x(320), &[vec![1, 84, 2100]]), Family::Yolo);
        assert_eq!(
            family_of_shapes(&x(320), &[vec![1, 116, 2100], vec![1, 32, 80, 80]]),
            Family::YoloSeg
        );
        assert_eq!(family_of_shapes(&x(320), &[vec![1, 84, 2000]]), Family::Raw);
        assert_eq!(family_of_shapes(&x(320), &[vec![1, 1000]]), Family::Raw);
        assert_eq!(family_of_shapes(&x(100), &[vec![1, 84, 2100]]), Family::Raw);
        let two = vec![("a".to_string(), vec![1, 3, 320, 320]), ("b".to_string(), vec![1])];
        assert_eq!(family_of_shapes(&two, &[vec![1, 84, 2100]]), Family::Raw);
    }

    #[test]
    fn names_read_as_a_python_dict() {
        assert_eq!(
            parse_names("{0: 'person', 1: \"it's\", 2: 'a, b'}").unwrap(),
            vec!["person", "it's", "a, b"]
        );
        assert!(parse_names("{1: 'x'}").is_err());
        assert!(parse_names("[0, 1]").is_err());
        assert!(parse_names("{0: 'x'").is_err());
        assert_eq!(parse_names("{}").unwrap(), Vec::<String>::new());
    }
}
