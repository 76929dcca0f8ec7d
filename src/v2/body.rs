//! The body of every v2 message, both ways: a JSON head whose `inputs` or
//! `outputs` list names the tensors, then, in the binary tensor extension,
//! each binary tensor's bytes in list order. One writer ([`encode`]) and one
//! reader ([`take_binary`], [`f32_from_le`], [`decode_bytes_elements`]) for
//! requests and replies, image and tensor alike.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// A tensor's values, borrowed for writing.
#[derive(Clone, Copy)]
pub enum Data<'a> {
    /// BYTES elements (image files, JSON strings).
    Bytes(&'a [Vec<u8>]),
    F32(&'a [f32]),
    I32(&'a [i32]),
    /// UINT8 values (masks, p·255).
    U8(&'a [u8]),
}

impl Data<'_> {
    pub fn datatype(&self) -> &'static str {
        match self {
            Data::Bytes(_) => "BYTES",
            Data::F32(_) => "FP32",
            Data::I32(_) => "INT32",
            Data::U8(_) => "UINT8",
        }
    }

    /// The binary extension's bytes: little-endian numbers, or each BYTES
    /// element as a little-endian u32 length and its bytes.
    fn write_binary(&self, out: &mut Vec<u8>) {
        match self {
            Data::Bytes(items) => write_bytes_elements(items, out),
            Data::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Data::U8(v) => out.extend_from_slice(v),
        }
    }

    fn binary_len(&self) -> usize {
        match self {
            Data::Bytes(items) => items.iter().map(|i| i.len() + 4).sum(),
            Data::F32(v) => v.len() * 4,
            Data::I32(v) => v.len() * 4,
            Data::U8(v) => v.len(),
        }
    }

    /// JSON `data`: numbers, or BYTES elements as (lossy UTF-8) strings.
    fn json(&self) -> Value {
        match self {
            Data::Bytes(items) => Value::Array(
                items
                    .iter()
                    .map(|x| Value::String(String::from_utf8_lossy(x).into_owned()))
                    .collect(),
            ),
            Data::F32(v) => json!(v),
            Data::I32(v) => json!(v),
            Data::U8(v) => json!(v),
        }
    }
}

/// One tensor of a message: its entry in the head and its values, written
/// as JSON `data` or, with `binary`, after the head.
pub struct Tensor<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: Data<'a>,
    pub binary: bool,
}

/// An output the caller asks for (in a request's `outputs` list).
pub struct Wanted<'a> {
    pub name: &'a str,
    pub binary: bool,
}

/// An encoded message: the body and, when a binary part follows the JSON
/// head, the head's length (`Inference-Header-Content-Length`).
pub struct Encoded {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

impl Encoded {
    /// `application/octet-stream` with a binary part, else JSON.
    pub fn content_type(&self) -> &'static str {
        match self.header_length {
            Some(_) => "application/octet-stream",
            None => "application/json",
        }
    }
}

/// Writes a message: `head` (a JSON object) with `key` ("inputs" or
/// "outputs") set to `tensors`, `wanted` (when given) as the `outputs` a
/// request asks for, and the binary tensors' bytes after the head.
pub fn encode(mut head: Map<String, Value>, key: &str, tensors: &[Tensor], wanted: Option<&[Wanted]>) -> Encoded {
    let mut tail = Vec::with_capacity(tensors.iter().filter(|t| t.binary).map(|t| t.data.binary_len()).sum());
    let mut list = Vec::with_capacity(tensors.len());
    for t in tensors {
        let mut o = json!({"name": t.name, "datatype": t.data.datatype(), "shape": t.shape});
        if t.binary {
            let before = tail.len();
            t.data.write_binary(&mut tail);
            o["parameters"] = json!({ (super::BINARY_DATA_SIZE): tail.len() - before });
        } else {
            o["data"] = t.data.json();
        }
        list.push(o);
    }
    head.insert(key.to_string(), Value::Array(list));
    if let Some(w) = wanted {
        let outs = w
            .iter()
            .map(|w| json!({"name": w.name, "parameters": {"binary_data": w.binary}}))
            .collect();
        head.insert("outputs".into(), Value::Array(outs));
    }
    let mut body = serde_json::to_vec(&Value::Object(head)).unwrap_or_default();
    if tail.is_empty() {
        return Encoded {
            body,
            header_length: None,
        };
    }
    let n = body.len();
    body.extend_from_slice(&tail);
    Encoded {
        body,
        header_length: Some(n),
    }
}

/// The `binary_data_size` in a tensor entry's `parameters`, when it has
/// one, or why it is not a byte count. `what` names the tensor in messages
/// (`input 'IMAGE'`).
pub fn binary_size(parameters: &Map<String, Value>, what: &str) -> Result<Option<usize>> {
    let Some(v) = parameters.get(super::BINARY_DATA_SIZE) else {
        return Ok(None);
    };
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| Error::usage(format!("{what}: binary_data_size is not a byte count")))
}

/// Takes the next `size` bytes of the binary part `tail` (tensors' bytes
/// follow the head in list order), or says that they run past its end.
pub fn take_binary<'a>(tail: &mut &'a [u8], size: usize, what: &str) -> Result<&'a [u8]> {
    if size > tail.len() {
        return Err(Error::usage(format!(
            "{what}: binary_data_size {size} is past the end of the body ({} bytes left)",
            tail.len()
        )));
    }
    let (part, rest) = tail.split_at(size);
    *tail = rest;
    Ok(part)
}

/// Little-endian FP32 values (whole values only; a trailing partial one is
/// the caller's to refuse).
pub fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Writes BYTES elements in the binary encoding: each a little-endian u32
/// length followed by its bytes.
pub fn write_bytes_elements(items: &[Vec<u8>], out: &mut Vec<u8>) {
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_le_bytes());
        out.extend_from_slice(i);
    }
}

/// Reads the binary BYTES encoding: each element is a little-endian u32
/// length followed by that many bytes; exactly `expected` elements.
pub fn decode_bytes_elements(mut data: &[u8], expected: usize, what: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(expected.min(super::image_infer::MAX_BATCH));
    while !data.is_empty() {
        if data.len() < 4 {
            return Err(Error::usage(format!("{what}: truncated element length")));
        }
        let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        data = &data[4..];
        if n > data.len() {
            return Err(Error::usage(format!(
                "{what}: element {} says {n} bytes but only {} remain",
                out.len(),
                data.len()
            )));
        }
        out.push(data[..n].to_vec());
        data = &data[n..];
        if out.len() > expected {
            return Err(Error::usage(format!(
                "{what}: more elements than its shape [{expected}] says"
            )));
        }
    }
    if out.len() != expected {
        return Err(Error::usage(format!(
            "{what}: shape says {expected} elements, the data holds {}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_tensors_follow_the_head_in_list_order_and_read_back() {
        let imgs = vec![b"abc".to_vec(), Vec::new()];
        let ts = [
            Tensor {
                name: "A",
                shape: &[2],
                data: Data::Bytes(&imgs),
                binary: true,
            },
            Tensor {
                name: "B",
                shape: &[1],
                data: Data::I32(&[7]),
                binary: false,
            },
            Tensor {
                name: "C",
                shape: &[2],
                data: Data::F32(&[0.5, -2.0]),
                binary: true,
            },
        ];
        let enc = encode(Map::new(), "outputs", &ts, None);
        let n = enc.header_length.unwrap_or(0);
        assert_eq!(enc.content_type(), "application/octet-stream");
        let head: Value = serde_json::from_slice(&enc.body[..n]).unwrap_or_default();
        let mut tail = &enc.body[n..];
        let list = head["outputs"].as_array().cloned().unwrap_or_default();
        assert_eq!(list[1]["data"], json!([7]));
        let sizes: Vec<Option<usize>> = list
            .iter()
            .map(|o| match o.get("parameters").and_then(Value::as_object) {
                Some(p) => binary_size(p, "t").unwrap_or(None),
                None => None,
            })
            .collect();
        assert_eq!(sizes, vec![Some(11), None, Some(8)]);
        let a = take_binary(&mut tail, 11, "A").unwrap_or_default();
        assert_eq!(decode_bytes_elements(a, 2, "A").ok(), Some(imgs));
        let c = take_binary(&mut tail, 8, "C").unwrap_or_default();
        assert_eq!(f32_from_le(c), vec![0.5, -2.0]);
        assert!(tail.is_empty());
        assert!(take_binary(&mut tail, 1, "D").is_err_and(|e| e.message().contains("past the end")));
    }

    #[test]
    fn json_only_messages_have_no_header_length() {
        let enc = encode(
            Map::new(),
            "inputs",
            &[],
            Some(&[Wanted {
                name: "Y",
                binary: false,
            }]),
        );
        assert_eq!((enc.header_length, enc.content_type()), (None, "application/json"));
        let v: Value = serde_json::from_slice(&enc.body).unwrap_or_default();
        assert_eq!(v["outputs"][0]["name"], "Y");
    }

    #[test]
    fn bytes_elements_are_bounded_by_their_shape() {
        let items = vec![b"abc".to_vec(), Vec::new(), vec![0u8; 5]];
        let mut enc = Vec::new();
        Data::Bytes(&items).write_binary(&mut enc);
        assert_eq!(decode_bytes_elements(&enc, 3, "x").ok(), Some(items));
        assert!(decode_bytes_elements(&enc, 2, "x").is_err());
        assert!(decode_bytes_elements(&enc[..enc.len() - 1], 3, "x").is_err());
        assert!(decode_bytes_elements(&[255, 255, 255, 255], 1, "x").is_err());
    }
}
