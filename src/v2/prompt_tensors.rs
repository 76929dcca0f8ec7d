//! Segment Anything's prompt inputs on the wire, beside `IMAGE`:
//! `POINTS` FP32 `[N, P, 2]` (x, y in image pixels), `POINT_LABELS` INT32
//! `[N, P]` (1 in the object, 0 outside it, -1 a padding point to skip) and
//! `BOXES` FP32 `[N, 4]` (x0, y0, x1, y1). N prompts ask for N masks.
//! Pure functions over bytes: the server turns [`PromptSet`]s into
//! `vision::prompt::Prompts`, the client writes them with [`prompt_tensors`].

use super::body::{self, Data, Tensor};
use super::head::{bad, TensorEntry};
use super::tensor_infer::json_data;
use crate::error::Result;

pub const POINTS: &str = "POINTS";
pub const POINT_LABELS: &str = "POINT_LABELS";
pub const BOXES: &str = "BOXES";

/// Most prompts (N) and points per prompt (P) a request may carry.
pub const MAX_SETS: usize = 64;
pub const MAX_POINTS: usize = 64;

/// Whether `name` is one of the prompt inputs.
pub fn is_prompt_input(name: &str) -> bool {
    [POINTS, POINT_LABELS, BOXES].contains(&name)
}

/// One prompt as sent: points with their labels, and a box.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptSet {
    /// (x, y, label): label 1 in the object, 0 outside it.
    pub points: Vec<(f32, f32, i32)>,
    pub bbox: Option<[f32; 4]>,
}

/// A prompt input's values and shape, as floats.
struct Numbers {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn numbers(entry: &TensorEntry, part: Option<&[u8]>, types: &[&str]) -> Result<Numbers> {
    let name = format!("input '{}'", entry.name);
    if !types.contains(&entry.datatype.as_str()) {
        return Err(bad(format!(
            "{name}: datatype {:?}, expected {}",
            entry.datatype,
            types.join(" or ")
        )));
    }
    let shape: Vec<usize> = entry
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d <= MAX_SETS * MAX_POINTS * 4))
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("{name}: shape {:?} is not a list of small sizes", entry.shape)))?;
    let n: usize = shape.iter().product();
    let values = match part {
        Some(bytes) if bytes.len() != n * 4 => {
            return Err(bad(format!(
                "{name}: {} bytes for shape {shape:?} ({} expected)",
                bytes.len(),
                n * 4
            )))
        }
        Some(bytes) if entry.datatype == "INT32" => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        Some(bytes) => body::f32_from_le(bytes),
        None => json_data(entry.data.as_ref(), &name)?,
    };
    if values.len() != n {
        return Err(bad(format!(
            "{name}: {} values for shape {shape:?} ({n} expected)",
            values.len()
        )));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(bad(format!("{name}: value {v} is not finite")));
    }
    Ok(Numbers { shape, values })
}

/// The prompts of a request from its prompt inputs (entry, binary part);
/// empty when it has none. Every shape is checked against the others and
/// each error names the input.
pub fn read_prompts(inputs: &[(&TensorEntry, Option<&[u8]>)]) -> Result<Vec<PromptSet>> {
    let find = |n: &str| inputs.iter().find(|(e, _)| e.name == n);
    let points = find(POINTS).map(|(e, p)| numbers(e, *p, &["FP32"])).transpose()?;
    let labels = find(POINT_LABELS)
        .map(|(e, p)| numbers(e, *p, &["INT32", "FP32"]))
        .transpose()?;
    let boxes = find(BOXES).map(|(e, p)| numbers(e, *p, &["FP32"])).transpose()?;
    let mut sets: Vec<PromptSet> = Vec::new();
    match (&points, &labels) {
        (Some(p), Some(l)) => {
            let [n, k, 2] = p.shape[..] else {
                return Err(bad(format!("input 'POINTS': shape {:?}, expected [N, P, 2]", p.shape)));
            };
            if l.shape != [n, k] {
                return Err(bad(format!(
                    "input 'POINT_LABELS': shape {:?}, expected [{n}, {k}] as 'POINTS' is [{n}, {k}, 2]",
                    l.shape
                )));
            }
            if n == 0 || n > MAX_SETS || k > MAX_POINTS {
                return Err(bad(format!(
                    "input 'POINTS': {n} prompts of {k} points (1 to {MAX_SETS} prompts, at most {MAX_POINTS} points)"
                )));
            }
            for i in 0..n {
                let mut set = PromptSet::default();
                for j in 0..k {
                    let label = l.values[i * k + j];
                    let (x, y) = (p.values[(i * k + j) * 2], p.values[(i * k + j) * 2 + 1]);
                    match label {
                        -1.0 => continue,
                        0.0 | 1.0 => set.points.push((x, y, label as i32)),
                        other => {
                            return Err(bad(format!(
                                "input 'POINT_LABELS': [{i}, {j}] is {other}, expected 1 (in), 0 (out) or -1 (padding)"
                            )))
                        }
                    }
                }
                sets.push(set);
            }
        }
        (Some(_), None) => return Err(bad("input 'POINTS' needs 'POINT_LABELS' (INT32 [N, P])")),
        (None, Some(_)) => return Err(bad("input 'POINT_LABELS' needs 'POINTS' (FP32 [N, P, 2])")),
        (None, None) => {}
    }
    if let Some(b) = &boxes {
        let [n, 4] = b.shape[..] else {
            return Err(bad(format!("input 'BOXES': shape {:?}, expected [N, 4]", b.shape)));
        };
        if n == 0 || n > MAX_SETS {
            return Err(bad(format!("input 'BOXES': {n} boxes (1 to {MAX_SETS})")));
        }
        if sets.is_empty() {
            sets = vec![PromptSet::default(); n];
        } else if sets.len() != n {
            return Err(bad(format!(
                "input 'BOXES': {n} boxes for {} point prompts (N must agree)",
                sets.len()
            )));
        }
        for (i, set) in sets.iter_mut().enumerate() {
            let v = &b.values[i * 4..i * 4 + 4];
            set.bbox = Some([v[0], v[1], v[2], v[3]]);
        }
    }
    Ok(sets)
}

/// Owned prompt tensors for a request: (name, shape, values), ready for
/// [`as_tensors`]. Sets with fewer points are padded with label -1.
pub struct PromptTensors {
    points: Option<(Vec<usize>, Vec<f32>, Vec<i32>)>,
    boxes: Option<(Vec<usize>, Vec<f32>)>,
}

/// The tensors that carry `sets` (none for no sets): points when any set has
/// some (padded), boxes when every set has one. `BOXES` has one row per set,
/// so sets where some have a box and some not cannot be sent together: that
/// is an error, not a request that silently drops the boxes.
pub fn prompt_tensors(sets: &[PromptSet]) -> Result<PromptTensors> {
    let with_box = sets.iter().filter(|s| s.bbox.is_some()).count();
    if with_box != 0 && with_box != sets.len() {
        return Err(crate::error::Error::usage(format!(
            "prompts: {with_box} of {} prompt sets have a box; over v2 every set has one or none does (send them as separate requests)",
            sets.len()
        )));
    }
    let k = sets.iter().map(|s| s.points.len()).max().unwrap_or(0);
    let points = (k > 0).then(|| {
        let mut xy = Vec::with_capacity(sets.len() * k * 2);
        let mut labels = Vec::with_capacity(sets.len() * k);
        for s in sets {
            for j in 0..k {
                match s.points.get(j) {
                    Some(&(x, y, l)) => {
                        xy.extend([x, y]);
                        labels.push(l);
                    }
                    None => {
                        xy.extend([0.0, 0.0]);
                        labels.push(-1);
                    }
                }
            }
        }
        (vec![sets.len(), k], xy, labels)
    });
    let boxes = (with_box > 0).then(|| {
        let v = sets.iter().flat_map(|s| s.bbox.unwrap_or_default()).collect();
        (vec![sets.len(), 4], v)
    });
    Ok(PromptTensors { points, boxes })
}

/// Borrowed tensors (JSON data) for [`body::encode`].
pub fn as_tensors<'a>(t: &'a PromptTensors, point_shape: &'a mut Vec<usize>) -> Vec<Tensor<'a>> {
    let mut out = Vec::new();
    if let Some((shape, xy, labels)) = &t.points {
        *point_shape = vec![shape[0], shape[1], 2];
        out.push(Tensor {
            name: POINTS,
            shape: point_shape,
            data: Data::F32(xy),
            binary: false,
        });
        out.push(Tensor {
            name: POINT_LABELS,
            shape,
            data: Data::I32(labels),
            binary: false,
        });
    }
    if let Some((shape, v)) = &t.boxes {
        out.push(Tensor {
            name: BOXES,
            shape,
            data: Data::F32(v),
            binary: false,
        });
    }
    out
}
