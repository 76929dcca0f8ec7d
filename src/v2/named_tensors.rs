//! Requests and replies of raw-tensor models: several FP32 tensors in, each
//! under its own name, and several out, each binary or JSON as the client
//! asked. Pure functions over bytes.

use serde_json::{json, Map, Value};

use super::body::{self, Data, Encoded, Tensor};
use super::head::{bad, Head};
use super::tensor_infer::{fp32_tensor, Tensor32};
use crate::error::Result;

/// The one input of a modeldock model's network served on its own (another
/// modeldock using this one as its backend).
pub const NETWORK_INPUT: &str = "NETWORK_INPUT";
/// The one output of that network.
pub const NETWORK_OUTPUT: &str = "NETWORK_OUTPUT";

/// Tensors under their names, in order.
pub type NamedTensors = Vec<(String, Tensor32)>;

/// A raw-tensor request: its inputs, and the outputs it asks for (empty:
/// all) with whether each travels binary.
#[derive(Debug)]
pub struct TensorsRequest {
    pub inputs: NamedTensors,
    pub outputs: Vec<(String, bool)>,
    /// Request-level `binary_data_output`: how outputs not listed travel.
    pub binary_default: bool,
}

/// Reads every input of a parsed request head as FP32 (binary parts from
/// `tail`, in list order). A name given twice or binary bytes no input
/// claims are refused.
pub fn tensors_request(head: &Head, tail: &[u8]) -> Result<TensorsRequest> {
    let (parts, unclaimed) = head.binary_parts(tail)?;
    if unclaimed > 0 {
        return Err(bad(format!("{unclaimed} bytes of binary data no input claims")));
    }
    let mut inputs: NamedTensors = Vec::with_capacity(head.tensors.len());
    for (entry, part) in head.tensors.iter().zip(parts) {
        if inputs.iter().any(|(n, _)| *n == entry.name) {
            return Err(bad(format!("input '{}' is given twice", entry.name)));
        }
        inputs.push((entry.name.clone(), fp32_tensor(entry, part, "input")?));
    }
    let binary_default = flag(head.parameters.as_ref(), "binary_data_output");
    let mut outputs = Vec::new();
    for o in head.wanted.iter().flatten() {
        let binary = match o.parameters.as_ref().and_then(|p| p.get("binary_data")) {
            Some(v) => v.as_bool().unwrap_or(false),
            None => binary_default,
        };
        outputs.push((o.name.clone(), binary));
    }
    Ok(TensorsRequest {
        inputs,
        outputs,
        binary_default,
    })
}

fn flag(p: Option<&Map<String, Value>>, key: &str) -> bool {
    p.and_then(|p| p.get(key)).and_then(Value::as_bool).unwrap_or(false)
}

/// The infer reply of `model` carrying `outs`: (name, tensor, binary).
pub fn encode_tensors_reply(model: &str, outs: &[(&str, &Tensor32, bool)]) -> Encoded {
    let mut head = Map::new();
    head.insert("model_name".into(), json!(model));
    head.insert("model_version".into(), json!("1"));
    let list: Vec<Tensor> = outs
        .iter()
        .map(|(name, t, binary)| Tensor {
            name,
            shape: &t.shape,
            data: Data::F32(&t.data),
            binary: *binary,
        })
        .collect();
    body::encode(head, "outputs", &list, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::head::Kind;
    use crate::v2::tensor_infer::decode_reply;

    #[test]
    fn two_inputs_one_binary_one_json_read_back_by_name() {
        let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let head = json!({"inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
            {"name": "b", "datatype": "FP32", "shape": [1, 1], "data": [3.5]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": true}}, {"name": "z"}]})
        .to_string();
        let parsed = Head::parse(head.as_bytes(), Kind::Request).map_err(|e| e.to_string());
        let req = parsed.and_then(|h| tensors_request(&h, &a).map_err(|e| e.to_string()));
        let req = match req {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(req.inputs[0].0, "a");
        assert_eq!(req.inputs[0].1.data, vec![1.0, 2.0]);
        assert_eq!(req.inputs[1].1.shape, vec![1, 1]);
        assert_eq!(req.outputs, vec![("y".to_string(), true), ("z".to_string(), false)]);
    }

    #[test]
    fn a_repeated_name_or_stray_bytes_are_refused() {
        let twice = json!({"inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0]},
            {"name": "a", "datatype": "FP32", "shape": [1], "data": [2.0]}]})
        .to_string();
        let h = Head::parse(twice.as_bytes(), Kind::Request).map_err(|e| e.to_string());
        let e = h.and_then(|h| tensors_request(&h, &[]).map(|_| ()).map_err(|e| e.to_string()));
        assert!(e.as_ref().is_err_and(|e| e.contains("'a' is given twice")), "{e:?}");
        let one = json!({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).to_string();
        let h = Head::parse(one.as_bytes(), Kind::Request).map_err(|e| e.to_string());
        let e = h.and_then(|h| {
            tensors_request(&h, &[0, 0, 0, 0])
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        assert!(e.as_ref().is_err_and(|e| e.contains("4 bytes")), "{e:?}");
    }

    #[test]
    fn a_reply_with_a_binary_and_a_json_output_decodes_each() {
        let y = Tensor32 {
            shape: vec![2],
            data: vec![0.25, -4.0],
        };
        let z = Tensor32 {
            shape: vec![1],
            data: vec![7.0],
        };
        let e = encode_tensors_reply("m", &[("y", &y, true), ("z", &z, false)]);
        assert_eq!(decode_reply(&e.body, e.header_length, "y"), Ok(y));
        assert_eq!(decode_reply(&e.body, e.header_length, "z"), Ok(z));
    }
}
