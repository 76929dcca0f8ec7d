//! One FP32 tensor out, one FP32 tensor back, in the Open Inference Protocol
//! v2: the request body (binary tensor extension or JSON) and the reply
//! (either, whichever the server chose). Pure functions over bytes.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::body::{self, Data, Encoded, Tensor, Wanted};
use super::head::{bad, Head, Kind, TensorEntry};
use crate::error::{Error, Result};

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor32 {
    pub fn elements(shape: &[usize]) -> Option<usize> {
        shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// The infer request for `input` named `input_name`, asking for `output_name`.
/// With `binary`, the tensor travels as raw little-endian bytes after the
/// JSON header and the output is asked for in binary too.
pub fn encode_request(input_name: &str, x: &Tensor32, output_name: &str, binary: bool) -> Encoded {
    let input = Tensor {
        name: input_name,
        shape: &x.shape,
        data: Data::F32(&x.data),
        binary,
    };
    let wanted = Wanted {
        name: output_name,
        binary,
    };
    body::encode(Map::new(), "inputs", &[input], Some(&[wanted]))
}

/// The tensor `output_name` of an infer reply. `header_length` is the
/// reply's `Inference-Header-Content-Length`, when it has one. `null` fields
/// and extra `parameters` are accepted (servers differ there).
pub fn decode_reply(body: &[u8], header_length: Option<usize>, output_name: &str) -> Result<Tensor32> {
    let head_len = header_length.unwrap_or(body.len());
    if head_len > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length {head_len} is larger than the reply ({} bytes)",
            body.len()
        )));
    }
    let head = Head::parse(&body[..head_len], Kind::Reply)?;
    match named_tensor(&head, output_name, &body[head_len..])? {
        Some(t) => Ok(t),
        None => {
            let names: Vec<&str> = head.tensors.iter().map(|t| t.name.as_str()).collect();
            Err(Error::msg(format!(
                "the reply has no output '{output_name}' (it has {names:?})"
            )))
        }
    }
}

/// The infer reply carrying `t` as output `name` (binary or JSON).
pub fn encode_reply(model: &str, name: &str, t: &Tensor32, binary: bool) -> Encoded {
    let mut head = Map::new();
    head.insert("model_name".into(), json!(model));
    head.insert("model_version".into(), json!("1"));
    let out = Tensor {
        name,
        shape: &t.shape,
        data: Data::F32(&t.data),
        binary,
    };
    body::encode(head, "outputs", &[out], None)
}

/// The FP32 tensor `name` of a parsed head (a request's input, a reply's
/// output) whose binary tensors follow in `tail` in list order; `None` when
/// it has no such tensor.
pub fn named_tensor(head: &Head, name: &str, tail: &[u8]) -> Result<Option<Tensor32>> {
    let Some(i) = head.tensors.iter().position(|t| t.name == name) else {
        return Ok(None);
    };
    let (parts, _) = head.binary_parts(tail)?;
    fp32_tensor(&head.tensors[i], parts[i], head.kind.noun()).map(Some)
}

/// An FP32 tensor from its entry and its binary part (or its JSON `data`).
pub(super) fn fp32_tensor(entry: &TensorEntry, part: Option<&[u8]>, noun: &str) -> Result<Tensor32> {
    let name = &format!("{noun} '{}'", entry.name);
    if entry.datatype != "FP32" {
        return Err(bad(format!("{name}: datatype {:?}, expected FP32", entry.datatype)));
    }
    let shape: Vec<usize> = entry
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("{name}: the shape is not a list of sizes")))?;
    let n = Tensor32::elements(&shape).ok_or_else(|| bad(format!("{name}: shape {shape:?} overflows")))?;
    let data = match part {
        Some(bytes) => {
            if bytes.len() != n.saturating_mul(4) {
                return Err(bad(format!(
                    "{name}: {} bytes for shape {shape:?} ({} expected)",
                    bytes.len(),
                    n.saturating_mul(4)
                )));
            }
            body::f32_from_le(bytes)
        }
        None => json_data(entry.data.as_ref(), name)?,
    };
    if data.len() != n {
        return Err(bad(format!(
            "{name}: {} values for shape {shape:?} ({n} expected)",
            data.len()
        )));
    }
    Ok(Tensor32 { shape, data })
}

/// `data` as a flat list of numbers (nested lists are flattened), or a
/// base64 string of raw bytes as some servers send.
pub(super) fn json_data(data: Option<&Value>, name: &str) -> Result<Vec<f32>> {
    fn flatten(v: &Value, out: &mut Vec<f32>) -> bool {
        match v {
            Value::Number(n) => n.as_f64().map(|f| out.push(f as f32)).is_some(),
            Value::Array(a) => a.iter().all(|x| flatten(x, out)),
            _ => false,
        }
    }
    match data {
        None | Some(Value::Null) => Err(bad(format!("{name}: no data"))),
        Some(Value::String(s)) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| bad(format!("{name}: data is neither numbers nor base64: {e}")))?;
            if raw.len() % 4 != 0 {
                return Err(bad(format!(
                    "{name}: {} bytes is not a whole number of FP32",
                    raw.len()
                )));
            }
            Ok(body::f32_from_le(&raw))
        }
        Some(v) => {
            let mut out = Vec::new();
            if flatten(v, &mut out) {
                Ok(out)
            } else {
                Err(bad(format!("{name}: data holds something other than numbers")))
            }
        }
    }
}

pub use super::error_body::error_message;

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Tensor32 {
        Tensor32 {
            shape: vec![1, 2, 2],
            data: vec![0.5, -1.0, 3.25, 1e-3],
        }
    }

    #[test]
    fn a_binary_request_round_trips_through_a_binary_reply() {
        let e = encode_request("input", &t(), "output", true);
        let n = e.header_length.unwrap_or(0);
        let head: Value = serde_json::from_slice(&e.body[..n]).unwrap_or(Value::Null);
        assert_eq!(head["inputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(e.content_type(), "application/octet-stream");
        // A server's reply: same bytes as output, with nulls and extra parameters.
        let reply_head = json!({"model_name": "m", "model_version": null, "id": null, "parameters": {"x": 1},
            "outputs": [{"name": "other", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
                        {"name": "output", "datatype": "FP32", "shape": [1, 2, 2],
                         "parameters": {"binary_data_size": 16, "sequence": null}}]})
        .to_string();
        let mut body = reply_head.clone().into_bytes();
        body.extend_from_slice(&9f32.to_le_bytes());
        body.extend_from_slice(&e.body[n..]);
        let out = decode_reply(&body, Some(reply_head.len()), "output");
        assert_eq!(out, Ok(t()));
    }

    #[test]
    fn json_replies_with_nested_or_base64_data_decode() {
        let nested = json!({"outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 2, 2],
                             "data": [[[0.5, -1.0], [3.25, 0.001]]], "parameters": null}]});
        assert_eq!(decode_reply(nested.to_string().as_bytes(), None, "output"), Ok(t()));
        let bytes: Vec<u8> = t().data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let r = json!({"outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 2, 2], "data": b64}]});
        assert_eq!(decode_reply(r.to_string().as_bytes(), None, "output"), Ok(t()));
    }

    #[test]
    fn bad_replies_say_what_is_wrong() {
        let short = json!({"outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 2, 2], "data": [1.0]}]});
        let e = decode_reply(short.to_string().as_bytes(), None, "output").unwrap_err();
        assert!(e.message().contains("1 values for shape [1, 2, 2]"), "{e}");
        let missing = json!({"outputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]});
        let e = decode_reply(missing.to_string().as_bytes(), None, "output").unwrap_err();
        assert!(e.message().contains("no output 'output'"), "{e}");
        let int = json!({"outputs": [{"name": "output", "datatype": "INT64", "shape": [1], "data": [1]}]});
        assert!(decode_reply(int.to_string().as_bytes(), None, "output").is_err());
        let past = json!({"outputs": [{"name": "output", "datatype": "FP32", "shape": [1],
                           "parameters": {"binary_data_size": 4}}]})
        .to_string();
        let e = decode_reply(past.as_bytes(), Some(past.len()), "output").unwrap_err();
        assert!(e.message().contains("past the end"), "{e}");
        assert!(decode_reply(b"{}", Some(99), "output").is_err());
        assert!(decode_reply(b"not json", None, "output").is_err());
    }

    #[test]
    fn a_json_request_carries_the_numbers() {
        let e = encode_request("in", &t(), "out", false);
        let v: Value = serde_json::from_slice(&e.body).unwrap_or(Value::Null);
        assert_eq!(v["inputs"][0]["data"][2], 3.25);
        assert_eq!(v["inputs"][0]["shape"], json!([1, 2, 2]));
        assert_eq!(e.header_length, None);
    }
}
