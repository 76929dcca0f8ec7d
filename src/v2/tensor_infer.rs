//! One FP32 tensor out, one FP32 tensor back, in the Open Inference Protocol
//! v2: the request body (binary tensor extension or JSON) and the reply
//! (either, whichever the server chose). Pure functions over bytes.

use base64::Engine as _;
use serde_json::{json, Map, Value};

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

/// A request body and its headers.
pub struct Encoded {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// `Inference-Header-Content-Length` (binary extension only).
    pub header_length: Option<usize>,
}

/// The infer request for `input` named `input_name`, asking for `output_name`.
/// With `binary`, the tensor travels as raw little-endian bytes after the
/// JSON header and the output is asked for in binary too.
pub fn encode_request(input_name: &str, x: &Tensor32, output_name: &str, binary: bool) -> Encoded {
    if binary {
        let head = json!({
            "inputs": [{"name": input_name, "shape": x.shape, "datatype": "FP32",
                        "parameters": {"binary_data_size": x.data.len() * 4}}],
            "outputs": [{"name": output_name, "parameters": {"binary_data": true}}],
        });
        binary_body(&head, &x.data)
    } else {
        json_body(&json!({
            "inputs": [{"name": input_name, "shape": x.shape, "datatype": "FP32", "data": x.data}],
            "outputs": [{"name": output_name}],
        }))
    }
}

/// The JSON header, then the values as little-endian bytes (binary extension).
fn binary_body(head: &Value, data: &[f32]) -> Encoded {
    let head = head.to_string();
    let mut body = Vec::with_capacity(head.len() + data.len() * 4);
    body.extend_from_slice(head.as_bytes());
    for v in data {
        body.extend_from_slice(&v.to_le_bytes());
    }
    Encoded {
        body,
        content_type: "application/octet-stream",
        header_length: Some(head.len()),
    }
}

fn json_body(v: &Value) -> Encoded {
    Encoded {
        body: v.to_string().into_bytes(),
        content_type: "application/json",
        header_length: None,
    }
}

/// The tensor `output_name` of an infer reply. `header_length` is the
/// reply's `Inference-Header-Content-Length`, when it has one. `null` fields
/// and extra `parameters` are accepted (servers differ there).
pub fn decode_reply(body: &[u8], header_length: Option<usize>, output_name: &str) -> Result<Tensor32, String> {
    let head_len = header_length.unwrap_or(body.len());
    if head_len > body.len() {
        return Err(format!(
            "Inference-Header-Content-Length {head_len} is larger than the reply ({} bytes)",
            body.len()
        ));
    }
    let head: Value =
        serde_json::from_slice(&body[..head_len]).map_err(|e| format!("the reply is not v2 JSON: {e}"))?;
    match find_tensor(&head, "outputs", output_name, &body[head_len..])? {
        Some(t) => Ok(t),
        None => Err(format!(
            "the reply has no output '{output_name}' (it has {:?})",
            names(&head, "outputs")
        )),
    }
}

/// The FP32 input `name` of a request whose JSON header is `head` and whose
/// binary tensors follow in `tail`; `None` when it has no such input.
pub fn decode_request_input(head: &[u8], tail: &[u8], name: &str) -> Result<Option<Tensor32>, String> {
    let head: Value = serde_json::from_slice(head).map_err(|e| format!("the request is not v2 JSON: {e}"))?;
    find_tensor(&head, "inputs", name, tail)
}

/// The infer reply carrying `t` as output `name` (binary or JSON).
pub fn encode_reply(model: &str, name: &str, t: &Tensor32, binary: bool) -> Encoded {
    if binary {
        let head = json!({"model_name": model, "model_version": "1",
            "outputs": [{"name": name, "datatype": "FP32", "shape": t.shape,
                         "parameters": {"binary_data_size": t.data.len() * 4}}]});
        binary_body(&head, &t.data)
    } else {
        json_body(&json!({"model_name": model, "model_version": "1",
            "outputs": [{"name": name, "datatype": "FP32", "shape": t.shape, "data": t.data}]}))
    }
}

fn names<'a>(head: &'a Value, key: &str) -> Vec<&'a str> {
    head.get(key)
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|o| o.get("name").and_then(Value::as_str)).collect())
        .unwrap_or_default()
}

/// The tensor `name` of `head[key]` ("inputs" or "outputs"); binary tensors
/// follow in `tail` in the order of the list.
fn find_tensor(head: &Value, key: &str, name: &str, tail: &[u8]) -> Result<Option<Tensor32>, String> {
    let list = head
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no '{key}' list"))?;
    let mut offset = 0usize;
    for o in list {
        let size = o
            .get("parameters")
            .and_then(|p| p.get(super::BINARY_DATA_SIZE))
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        if o.get("name").and_then(Value::as_str) != Some(name) {
            if let Some(n) = size {
                offset = offset.saturating_add(n);
            }
            continue;
        }
        return output_tensor(o, size.map(|n| (offset, n)), tail, name).map(Some);
    }
    Ok(None)
}

fn output_tensor(o: &Value, binary: Option<(usize, usize)>, body: &[u8], name: &str) -> Result<Tensor32, String> {
    let name = &format!("'{name}'");
    let dt = o.get("datatype").and_then(Value::as_str).unwrap_or("");
    if dt != "FP32" {
        return Err(format!("tensor {name}: datatype {dt:?}, expected FP32"));
    }
    let shape: Vec<usize> = o
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("tensor {name}: no shape"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("tensor {name}: the shape is not a list of sizes"))?;
    let n = Tensor32::elements(&shape).ok_or_else(|| format!("tensor {name}: shape {shape:?} overflows"))?;
    let data = match binary {
        Some((at, len)) => {
            let end = at
                .checked_add(len)
                .filter(|&e| e <= body.len())
                .ok_or_else(|| format!("tensor {name}: binary_data_size {len} runs past the end of the body"))?;
            if len != n.saturating_mul(4) {
                return Err(format!(
                    "tensor {name}: {len} bytes for shape {shape:?} ({} expected)",
                    n.saturating_mul(4)
                ));
            }
            body[at..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        None => json_data(o.get("data"), name)?,
    };
    if data.len() != n {
        return Err(format!(
            "tensor {name}: {} values for shape {shape:?} ({n} expected)",
            data.len()
        ));
    }
    Ok(Tensor32 { shape, data })
}

/// `data` as a flat list of numbers (nested lists are flattened), or a
/// base64 string of raw bytes as some servers send.
fn json_data(data: Option<&Value>, name: &str) -> Result<Vec<f32>, String> {
    fn flatten(v: &Value, out: &mut Vec<f32>) -> bool {
        match v {
            Value::Number(n) => n.as_f64().map(|f| out.push(f as f32)).is_some(),
            Value::Array(a) => a.iter().all(|x| flatten(x, out)),
            _ => false,
        }
    }
    match data {
        None | Some(Value::Null) => Err(format!("tensor {name}: no data")),
        Some(Value::String(s)) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("tensor {name}: data is neither numbers nor base64: {e}"))?;
            if raw.len() % 4 != 0 {
                return Err(format!(
                    "tensor {name}: {} bytes is not a whole number of FP32",
                    raw.len()
                ));
            }
            Ok(raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
        Some(v) => {
            let mut out = Vec::new();
            if flatten(v, &mut out) {
                Ok(out)
            } else {
                Err(format!("tensor {name}: data holds something other than numbers"))
            }
        }
    }
}

/// The one-line message of an error reply: `{"error": "…"}` (Triton, KServe,
/// modeldock), `{"detail": …}` (MLServer, FastAPI), else the status.
pub fn error_message(status: u16, body: &[u8]) -> String {
    let v: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let msg = v.as_ref().and_then(|m| {
        for key in ["error", "detail", "message"] {
            match m.get(key) {
                Some(Value::String(s)) => return Some(s.clone()),
                Some(Value::Null) | None => {}
                Some(other) => return Some(other.to_string()),
            }
        }
        None
    });
    match msg {
        Some(m) => format!("HTTP {status}: {}", m.lines().next().unwrap_or("").trim()),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {}", text.lines().next().unwrap_or(""))
            }
        }
    }
}

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
        assert_eq!(e.content_type, "application/octet-stream");
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
        assert!(e.contains("1 values for shape [1, 2, 2]"), "{e}");
        let missing = json!({"outputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]});
        let e = decode_reply(missing.to_string().as_bytes(), None, "output").unwrap_err();
        assert!(e.contains("no output 'output'"), "{e}");
        let int = json!({"outputs": [{"name": "output", "datatype": "INT64", "shape": [1], "data": [1]}]});
        assert!(decode_reply(int.to_string().as_bytes(), None, "output").is_err());
        let past = json!({"outputs": [{"name": "output", "datatype": "FP32", "shape": [1],
                           "parameters": {"binary_data_size": 4}}]})
        .to_string();
        let e = decode_reply(past.as_bytes(), Some(past.len()), "output").unwrap_err();
        assert!(e.contains("past the end"), "{e}");
        assert!(decode_reply(b"{}", Some(99), "output").is_err());
        assert!(decode_reply(b"not json", None, "output").is_err());
    }

    #[test]
    fn error_bodies_become_one_line() {
        assert_eq!(
            error_message(400, br#"{"error":"Request for unknown model: 'x' is not found"}"#),
            "HTTP 400: Request for unknown model: 'x' is not found"
        );
        assert_eq!(error_message(500, br#"{"detail":"boom\nmore"}"#), "HTTP 500: boom");
        assert_eq!(error_message(502, b""), "HTTP 502");
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
