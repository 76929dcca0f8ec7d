//! Image inference in the Open Inference Protocol v2: the server parses
//! requests (JSON tensors or the binary extension) and encodes responses;
//! the CLI and the app encode their requests here too. Pure functions over
//! bytes, so they can be fuzzed and tested without a socket.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::body::{self, Data, Encoded, Tensor, Wanted};
use super::head::{bad, shown, Head, Kind, TensorEntry};
use super::prompt_tensors::{self, PromptSet};
use crate::error::{Error, Result};

pub use super::HEADER_LENGTH;

/// What a request asked for, after parsing.
#[derive(Debug, Default)]
pub struct InferRequest {
    pub id: Option<String>,
    /// The encoded image files of the `IMAGE` input.
    pub images: Vec<Vec<u8>>,
    pub conf: Option<f32>,
    pub iou: Option<f32>,
    /// Request parameter `priority` (Triton's: 1 is the highest, 0 the default).
    pub priority: u32,
    /// Request parameter `timeout` (Triton's: microseconds an image may wait
    /// in the queue before it is answered with an error; 0 or none = the
    /// server's default).
    pub timeout_us: Option<u64>,
    /// Request parameter `hand_regions`, as sent (hands tracked from the
    /// previous video frame; read by `vision::hand_roi::HandRegions::parse_param`).
    pub hand_regions: Option<String>,
    /// Names for the images (request parameter `image_names`, a JSON list).
    pub names: Vec<String>,
    /// Segment Anything prompts (`POINTS`, `POINT_LABELS`, `BOXES`): one
    /// mask each, the same for every image; empty when none are sent.
    pub prompts: Vec<super::prompt_tensors::PromptSet>,
    /// Requested outputs and whether each is binary; empty = all, JSON.
    pub outputs: Vec<(String, bool)>,
    /// Request-level `binary_data_output`.
    pub binary_default: bool,
}

/// Most images one request may carry.
pub const MAX_BATCH: usize = 256;

fn param_f32(p: &Map<String, Value>, key: &str) -> Result<Option<f32>> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let f = v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| bad(format!("parameter '{key}': expected a number in 0..1, got {v}")))?;
            if !(0.0..=1.0).contains(&f) {
                return Err(bad(format!("parameter '{key}': {f} is outside 0..1")));
            }
            Ok(Some(f as f32))
        }
    }
}

/// The highest level a request may name (Triton's default max_priority
/// levels are model settings; here any level up to this is accepted).
pub const MAX_PRIORITY: u64 = 1000;

fn param_priority(p: &Map<String, Value>) -> Result<u32> {
    match p.get("priority") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| *n <= MAX_PRIORITY)
            .map(|n| n as u32)
            .ok_or_else(|| {
                bad(format!(
                    "parameter 'priority': expected a whole number in 0..{MAX_PRIORITY} (1 is the highest, 0 the default), got {}",
                    shown(v)
                ))
            }),
    }
}

/// The longest queue timeout a request may ask for (an hour).
const MAX_TIMEOUT_US: u64 = 3_600_000_000;

fn param_timeout(p: &Map<String, Value>) -> Result<Option<u64>> {
    match p.get("timeout") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| *n <= MAX_TIMEOUT_US)
            .map(|n| (n > 0).then_some(n))
            .ok_or_else(|| {
                bad(format!(
                    "parameter 'timeout': expected microseconds as a whole number in 0..{MAX_TIMEOUT_US}, got {}",
                    shown(v)
                ))
            }),
    }
}

fn param_bool(p: Option<&Map<String, Value>>, key: &str) -> bool {
    p.and_then(|p| p.get(key)).and_then(Value::as_bool).unwrap_or(false)
}

/// Splits a body into the JSON header and the binary tail, using the value of
/// `Inference-Header-Content-Length` when the request has one.
pub fn split_body<'a>(body: &'a [u8], header_len: Option<&str>) -> Result<(&'a [u8], &'a [u8])> {
    match header_len {
        None => Ok((body, &[])),
        Some(v) => {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("Inference-Header-Content-Length '{v}' is not a byte count")))?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length {n} is larger than the body ({} bytes)",
                    body.len()
                )));
            }
            Ok(body.split_at(n))
        }
    }
}

pub use super::body::decode_bytes_elements;

/// Encodes `images` (name, encoded file) as `IMAGE`, BYTES `[N]` in the
/// binary part, asks for `DETECTIONS` as JSON, and sends `parameters` plus
/// `image_names`, and `prompts` as `POINTS`/`POINT_LABELS`/`BOXES` (JSON).
pub fn encode_image_request(
    images: &[(String, Vec<u8>)],
    mut parameters: Map<String, Value>,
    prompts: &[PromptSet],
) -> Result<Encoded> {
    let names: Vec<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
    parameters.insert(
        "image_names".into(),
        json!(serde_json::to_string(&names).unwrap_or_default()),
    );
    let files: Vec<Vec<u8>> = images.iter().map(|(_, b)| b.clone()).collect();
    let image = Tensor {
        name: "IMAGE",
        shape: &[images.len()],
        data: Data::Bytes(&files),
        binary: true,
    };
    let wanted = [Wanted {
        name: "DETECTIONS",
        binary: false,
    }];
    let prompt_values = prompt_tensors::prompt_tensors(prompts)?;
    let mut point_shape = Vec::new();
    let mut inputs = vec![image];
    inputs.extend(prompt_tensors::as_tensors(&prompt_values, &mut point_shape));
    let mut head = Map::new();
    head.insert("parameters".into(), Value::Object(parameters));
    Ok(body::encode(head, "inputs", &inputs, Some(&wanted)))
}

/// The `DETECTIONS` elements of an image response, each parsed as JSON.
pub fn decode_detections(v: &Value) -> Result<Vec<Value>> {
    let data = v["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "DETECTIONS"))
        .and_then(|t| t["data"].as_array())
        .ok_or_else(|| Error::msg("the reply has no DETECTIONS output"))?;
    data.iter()
        .map(|s| {
            s.as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| Error::msg("a DETECTIONS element is not JSON"))
        })
        .collect()
}

/// The `MASKS` output of an image reply: `[N, M, H, W]` (images, masks per
/// image, the image's rows and columns), p·255 per pixel, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct MasksTensor {
    pub shape: [usize; 4],
    pub data: Vec<u8>,
}

impl MasksTensor {
    /// Mask `m` of image `i`: its `H`×`W` values (empty when out of range).
    pub fn plane(&self, i: usize, m: usize) -> &[u8] {
        let [n, k, h, w] = self.shape;
        if i >= n || m >= k {
            return &[];
        }
        let at = (i * k + m) * h * w;
        &self.data[at..at + h * w]
    }
}

/// Reads output `MASKS` (UINT8 `[N, M, H, W]`, binary or JSON) of an image
/// reply whose head is `header_length` bytes long (`None`: all JSON); `None`
/// when the reply has no `MASKS`.
pub fn decode_masks(body: &[u8], header_length: Option<usize>) -> Result<Option<MasksTensor>> {
    let head_len = header_length.unwrap_or(body.len());
    if head_len > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length {head_len} is larger than the reply ({} bytes)",
            body.len()
        )));
    }
    let head = Head::parse(&body[..head_len], Kind::Reply)?;
    let (parts, _) = head.binary_parts(&body[head_len..])?;
    let Some((t, part)) = head.tensors.iter().zip(parts).find(|(t, _)| t.name == "MASKS") else {
        return Ok(None);
    };
    if t.datatype != "UINT8" {
        return Err(bad(format!("output 'MASKS': datatype {} (expected UINT8)", t.datatype)));
    }
    let shape: [usize; 4] = match t.shape.as_slice() {
        [n, m, h, w] if [n, m, h, w].iter().all(|d| **d >= 0) => [*n as usize, *m as usize, *h as usize, *w as usize],
        s => return Err(bad(format!("output 'MASKS': shape {s:?} (expected [N, M, H, W])"))),
    };
    let count = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
    let data = match (part, &t.data) {
        (Some(p), _) => p.to_vec(),
        (None, Some(Value::Array(items))) => items
            .iter()
            .map(|v| v.as_u64().filter(|x| *x <= 255).map(|x| x as u8))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad("output 'MASKS': data holds a value that is not a whole number in 0..255"))?,
        (None, _) => return Err(bad("output 'MASKS': no data (neither 'data' nor binary_data_size)")),
    };
    if count != Some(data.len()) {
        return Err(bad(format!(
            "output 'MASKS': shape {shape:?} but {} values",
            data.len()
        )));
    }
    Ok(Some(MasksTensor { shape, data }))
}

/// A JSON BYTES element holding an image: base64 (standard or URL-safe, with
/// or without padding), optionally as a `data:` URL.
fn image_from_json(v: &Value, i: usize) -> Result<Vec<u8>> {
    let s = v.as_str().ok_or_else(|| {
        bad(format!(
            "input 'IMAGE': element {i} is not a string (send base64-encoded image files)"
        ))
    })?;
    let s = match s.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, d)| d).unwrap_or(rest),
        None => s,
    };
    let s = s.trim();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for e in engines {
        if let Ok(b) = e.decode(s) {
            return Ok(b);
        }
    }
    Err(bad(format!(
        "input 'IMAGE': element {i} is not base64 (JSON tensors carry image files base64-encoded; or use the binary tensor extension)"
    )))
}

/// Parses an infer request: the JSON header and the binary tail.
pub fn parse_infer(header: &[u8], binary: &[u8]) -> Result<InferRequest> {
    image_request(Head::parse(header, Kind::Request)?, binary)
}

/// The image request a parsed head and its binary tail make.
pub fn image_request(head: Head, binary: &[u8]) -> Result<InferRequest> {
    let mut req = InferRequest {
        id: head.id.clone().map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        }),
        ..Default::default()
    };
    if let Some(p) = &head.parameters {
        read_parameters(p, &mut req)?;
    }
    req.binary_default = param_bool(head.parameters.as_ref(), "binary_data_output");
    let (parts, unclaimed) = head.binary_parts(binary)?;
    let mut found = false;
    let mut prompts = Vec::new();
    for (input, part) in head.tensors.iter().zip(parts) {
        if prompt_tensors::is_prompt_input(&input.name) {
            if prompts.iter().any(|(e, _): &(&TensorEntry, _)| e.name == input.name) {
                return Err(bad(format!("input '{}' is given twice", input.name)));
            }
            prompts.push((input, part));
            continue;
        }
        if input.name != "IMAGE" {
            return Err(bad(format!(
                "unknown input '{}' (this model takes 'IMAGE', and prompts as 'POINTS', 'POINT_LABELS', 'BOXES')",
                input.name
            )));
        }
        if found {
            return Err(bad("input 'IMAGE' is given twice"));
        }
        found = true;
        req.images = image_input(input, part)?;
    }
    req.prompts = prompt_tensors::read_prompts(&prompts)?;
    if !found {
        return Err(bad("missing input 'IMAGE' (BYTES [N]: encoded image files)"));
    }
    if unclaimed > 0 {
        return Err(bad(format!("{unclaimed} bytes of binary data no input claims")));
    }
    if let Some(outs) = head.wanted {
        for o in outs {
            if !OUTPUT_NAMES.contains(&o.name.as_str()) {
                return Err(bad(format!(
                    "unknown output '{}' (outputs: {})",
                    o.name,
                    OUTPUT_NAMES.join(", ")
                )));
            }
            let binary = match o.parameters.as_ref().and_then(|p| p.get("binary_data")) {
                Some(v) => v.as_bool().unwrap_or(false),
                None => req.binary_default,
            };
            req.outputs.push((o.name, binary));
        }
    }
    Ok(req)
}

/// The request parameters an image request reads: `conf`, `iou`,
/// `priority`, `timeout`, `hand_regions` and `image_names`.
fn read_parameters(p: &Map<String, Value>, req: &mut InferRequest) -> Result<()> {
    req.hand_regions = match p.get("hand_regions") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            return Err(bad(format!(
                "parameter 'hand_regions': expected a string, got {}",
                shown(v)
            )))
        }
    };
    req.conf = param_f32(p, "conf")?;
    req.iou = param_f32(p, "iou")?;
    req.priority = param_priority(p)?;
    req.timeout_us = param_timeout(p)?;
    match p.get("image_names") {
        None | Some(Value::Null) => {}
        Some(Value::String(n)) => {
            req.names = serde_json::from_str(n).map_err(|_| {
                bad(format!(
                    "parameter 'image_names': expected a JSON list of strings, got {}",
                    shown(&Value::String(n.clone()))
                ))
            })?
        }
        Some(v) => {
            return Err(bad(format!(
                "parameter 'image_names': expected a string holding a JSON list of strings, got {}",
                shown(v)
            )))
        }
    }
    Ok(())
}

/// The image files of input `IMAGE`: BYTES `[N]` (or `[1, N]`), from its
/// binary part or its JSON `data` (base64 strings).
fn image_input(input: &TensorEntry, part: Option<&[u8]>) -> Result<Vec<Vec<u8>>> {
    if input.datatype != "BYTES" {
        return Err(bad(format!(
            "input 'IMAGE': datatype {} (expected BYTES)",
            input.datatype
        )));
    }
    let n = match input.shape.as_slice() {
        [n] if *n >= 1 => *n as usize,
        [1, n] if *n >= 1 => *n as usize,
        s => return Err(bad(format!("input 'IMAGE': shape {s:?} (expected [N], N ≥ 1)"))),
    };
    if n > MAX_BATCH {
        return Err(bad(format!(
            "input 'IMAGE': {n} images; at most {MAX_BATCH} per request"
        )));
    }
    match (part, &input.data) {
        (Some(c), _) => decode_bytes_elements(c, n, "input 'IMAGE'"),
        (None, Some(Value::Array(items))) => {
            let flat: Vec<&Value> = items
                .iter()
                .flat_map(|v| match v {
                    Value::Array(inner) => inner.iter().collect::<Vec<_>>(),
                    other => vec![other],
                })
                .collect();
            if flat.len() != n {
                return Err(bad(format!(
                    "input 'IMAGE': shape says {n} elements, data holds {}",
                    flat.len()
                )));
            }
            flat.iter().enumerate().map(|(i, v)| image_from_json(v, i)).collect()
        }
        (None, _) => Err(bad("input 'IMAGE': no data (give 'data' or binary_data_size)")),
    }
}

pub const OUTPUT_NAMES: [&str; 7] = [
    "DETECTIONS",
    "BOXES",
    "SCORES",
    "CLASS_IDS",
    "COUNTS",
    "KEYPOINTS",
    "MASKS",
];

/// One output tensor, ready to encode.
pub enum TensorData {
    Bytes(Vec<Vec<u8>>),
    F32(Vec<f32>),
    I32(Vec<i32>),
    U8(Vec<u8>),
}

pub struct OutputTensor {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl OutputTensor {
    fn data(&self) -> Data<'_> {
        match &self.data {
            TensorData::Bytes(b) => Data::Bytes(b),
            TensorData::F32(v) => Data::F32(v),
            TensorData::I32(v) => Data::I32(v),
            TensorData::U8(v) => Data::U8(v),
        }
    }
}

/// Encodes the response: the outputs the request named (all when it named
/// none), each as JSON or binary as asked.
pub fn encode_response(
    model: &str,
    id: Option<&str>,
    tensors: Vec<OutputTensor>,
    wanted: &[(String, bool)],
    binary_default: bool,
) -> Encoded {
    let selected: Vec<(&OutputTensor, bool)> = if wanted.is_empty() {
        tensors.iter().map(|t| (t, binary_default)).collect()
    } else {
        let mut taken = vec![false; tensors.len()];
        let mut out = Vec::new();
        for (name, bin) in wanted {
            if let Some(i) = (0..tensors.len()).find(|&i| !taken[i] && tensors[i].name == name) {
                taken[i] = true;
                out.push((&tensors[i], *bin));
            }
        }
        out
    };
    let list: Vec<Tensor> = selected
        .iter()
        .map(|(t, bin)| Tensor {
            name: t.name,
            shape: &t.shape,
            data: t.data(),
            binary: *bin,
        })
        .collect();
    let mut head = Map::new();
    head.insert("model_name".into(), json!(model));
    head.insert("model_version".into(), json!("1"));
    if let Some(id) = id {
        head.insert("id".into(), json!(id));
    }
    body::encode(head, "outputs", &list, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_bytes_elements(items: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        body::write_bytes_elements(items, &mut out);
        out
    }

    #[test]
    fn prompts_round_trip_through_a_request_padded_to_the_longest() {
        let sets = vec![
            PromptSet {
                points: vec![(1.0, 2.0, 1)],
                bbox: Some([0.0, 0.0, 4.0, 4.0]),
            },
            PromptSet {
                points: vec![(3.0, 4.0, 1), (5.0, 6.0, 0)],
                bbox: Some([1.0, 1.0, 8.0, 9.0]),
            },
        ];
        let e = encode_image_request(&[("a".into(), b"img".to_vec())], Map::new(), &sets).unwrap();
        let (head, tail) = split_body(&e.body, e.header_length.map(|n| n.to_string()).as_deref()).unwrap();
        let r = parse_infer(head, tail).unwrap();
        assert_eq!(r.prompts, sets);
        assert!(String::from_utf8_lossy(head).contains(r#""shape":[2,2,2]"#));
        let none = encode_image_request(&[("a".into(), b"img".to_vec())], Map::new(), &[]).unwrap();
        let (head, tail) = split_body(&none.body, none.header_length.map(|n| n.to_string()).as_deref()).unwrap();
        assert!(parse_infer(head, tail).unwrap().prompts.is_empty());
        // One set with a box and one without: BOXES [N, 4] cannot say so.
        let mixed = [
            sets[0].clone(),
            PromptSet {
                points: vec![(1.0, 1.0, 1)],
                bbox: None,
            },
        ];
        let err = encode_image_request(&[("a".into(), b"img".to_vec())], Map::new(), &mixed)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("1 of 2 prompt sets have a box"), "{err}");
    }

    #[test]
    fn parses_binary_and_json_requests() {
        let img = b"\x89PNG fake".to_vec();
        let tail = encode_bytes_elements(std::slice::from_ref(&img));
        let head = format!(
            r#"{{"inputs":[{{"name":"IMAGE","shape":[1],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}],
                "parameters":{{"conf":0.25}},"outputs":[{{"name":"SCORES","parameters":{{"binary_data":true}}}}]}}"#,
            tail.len()
        );
        let r = parse_infer(head.as_bytes(), &tail).unwrap_or_default();
        assert_eq!(r.images, vec![img.clone()]);
        assert_eq!(r.conf, Some(0.25));
        assert_eq!(r.priority, 0);
        assert_eq!(r.outputs, vec![("SCORES".to_string(), true)]);
        let with_priority = head.replace(r#""conf":0.25"#, r#""conf":0.25,"priority":"2""#);
        assert_eq!(parse_infer(with_priority.as_bytes(), &tail).map(|r| r.priority), Ok(2));
        let with_timeout = head.replace(r#""conf":0.25"#, r#""conf":0.25,"timeout":250000"#);
        assert_eq!(
            parse_infer(with_timeout.as_bytes(), &tail).map(|r| r.timeout_us),
            Ok(Some(250_000))
        );
        let bad_timeout = head.replace(r#""conf":0.25"#, r#""conf":0.25,"timeout":-5"#);
        let e = parse_infer(bad_timeout.as_bytes(), &tail)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("parameter 'timeout'"), "{e}");
        let with_regions = head.replace(r#""conf":0.25"#, r#""conf":0.25,"hand_regions":"1;10,20,30,0""#);
        assert_eq!(
            parse_infer(with_regions.as_bytes(), &tail).map(|r| r.hand_regions),
            Ok(Some("1;10,20,30,0".to_string()))
        );
        let bad_regions = head.replace(r#""conf":0.25"#, r#""conf":0.25,"hand_regions":3"#);
        let e = parse_infer(bad_regions.as_bytes(), &tail)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("parameter 'hand_regions': expected a string"), "{e}");

        let b64 = base64::engine::general_purpose::STANDARD.encode(&img);
        let head = format!(r#"{{"inputs":[{{"name":"IMAGE","shape":[1],"datatype":"BYTES","data":["{b64}"]}}]}}"#);
        let r = parse_infer(head.as_bytes(), &[]).unwrap_or_default();
        assert_eq!(r.images, vec![img]);
    }

    #[test]
    fn refuses_malformed_requests_with_one_line_errors_naming_the_field() {
        const IMG: &str = r#"{"name":"IMAGE","shape":[1],"datatype":"BYTES","data":["aGk="]}"#;
        let with = |rest: &str| format!(r#"{{"inputs":[{IMG}],{rest}}}"#);
        for (head, tail, want) in [
            (r#"{"inputs":[]}"#.to_string(), &b""[..], "missing input 'IMAGE' (BYTES [N]: encoded image files)"),
            (
                r#"{"inputs":[{"name":"X","shape":[1],"datatype":"BYTES","data":["aa=="]}]}"#.into(),
                b"",
                "unknown input 'X' (this model takes 'IMAGE', and prompts as 'POINTS', 'POINT_LABELS', 'BOXES')",
            ),
            (
                r#"{"inputs":[{"name":"IMAGE","shape":[2],"datatype":"BYTES","data":["aa=="]}]}"#.into(),
                b"",
                "input 'IMAGE': shape says 2 elements, data holds 1",
            ),
            (
                r#"{"inputs":[{"name":"IMAGE","shape":[1],"datatype":"FP32","data":[1.0]}]}"#.into(),
                b"",
                "input 'IMAGE': datatype FP32 (expected BYTES)",
            ),
            (
                r#"{"inputs":[{"name":"IMAGE","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":99}}]}"#
                    .into(),
                b"abc",
                "input 'IMAGE': binary_data_size 99 is past the end of the body (3 bytes left)",
            ),
            (
                r#"{"inputs":[{"name":"IMAGE","shape":[1],"datatype":"BYTES","data":["!!"]}]}"#.into(),
                b"",
                "input 'IMAGE': element 0 is not base64 (JSON tensors carry image files base64-encoded; or use the binary tensor extension)",
            ),
            (with(r#""parameters":{"conf":3}"#), b"", "parameter 'conf': 3 is outside 0..1"),
            (
                with(r#""parameters":{"priority":-1}"#),
                b"",
                "parameter 'priority': expected a whole number in 0..1000 (1 is the highest, 0 the default), got -1",
            ),
            (
                with(r#""outputs":[{"name":"NOPE"}]"#),
                b"",
                "unknown output 'NOPE' (outputs: DETECTIONS, BOXES, SCORES, CLASS_IDS, COUNTS, KEYPOINTS, MASKS)",
            ),
            (
                "not json".into(),
                b"",
                "request body is not a v2 inference request: expected ident at line 1 column 2",
            ),
            ("[]".into(), b"", "request body: expected a JSON object (a v2 inference request), got []"),
            (r#"{"inputs":{}}"#.into(), b"", "inputs: expected a list of input tensors, got {}"),
            (r#"{"id":"x"}"#.into(), b"", "inputs: missing (expected a list of input tensors)"),
            (
                r#"{"inputs":["x"]}"#.into(),
                b"",
                r#"inputs[0]: expected an object (name, shape, datatype, data), got "x""#,
            ),
            (
                r#"{"inputs":[{"name":"IMAGE","shape":"3","datatype":"BYTES"}]}"#.into(),
                b"",
                r#"inputs[0].shape: expected a list of integers, got "3""#,
            ),
            (
                r#"{"inputs":[{"name":"IMAGE","shape":[1.5],"datatype":"BYTES"}]}"#.into(),
                b"",
                "inputs[0].shape: expected a list of integers, got 1.5",
            ),
            (
                r#"{"inputs":[{"name":"IMAGE","shape":[1]}]}"#.into(),
                b"",
                "inputs[0].datatype: missing (expected a string)",
            ),
            (
                r#"{"inputs":[{"name":7,"shape":[1],"datatype":"BYTES"}]}"#.into(),
                b"",
                "inputs[0].name: expected a string, got 7",
            ),
            (
                r#"{"inputs":[{"name":"IMAGE","shape":[1],"datatype":"BYTES","parameters":"p"}]}"#.into(),
                b"",
                r#"inputs[0].parameters: expected an object, got "p""#,
            ),
            (with(r#""parameters":3"#), b"", "parameters: expected an object, got 3"),
            (with(r#""outputs":[{"nme":"x"}]"#), b"", "outputs[0].name: missing (expected a string)"),
            (
                with(r#""parameters":{"image_names":["a"]}"#),
                b"",
                r#"parameter 'image_names': expected a string holding a JSON list of strings, got ["a"]"#,
            ),
        ] {
            let e = parse_infer(head.as_bytes(), tail).err().map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(e, want, "{head}");
        }
    }

    #[test]
    fn encodes_binary_outputs_after_the_json_header() {
        let t = vec![OutputTensor {
            name: "COUNTS",
            shape: vec![2],
            data: TensorData::I32(vec![3, 4]),
        }];
        let r = encode_response("m", None, t, &[("COUNTS".into(), true)], false);
        let n = r.header_length.unwrap_or(0);
        assert_eq!(&r.body[n..], &[3, 0, 0, 0, 4, 0, 0, 0]);
        let head: Value = serde_json::from_slice(&r.body[..n]).unwrap_or_default();
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    }

    fn masks_reply(binary: bool) -> Encoded {
        let t = vec![
            OutputTensor {
                name: "COUNTS",
                shape: vec![2],
                data: TensorData::I32(vec![0, 0]),
            },
            OutputTensor {
                name: "MASKS",
                shape: vec![2, 1, 2, 3],
                data: TensorData::U8(vec![0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255]),
            },
        ];
        let wanted = [("COUNTS".to_string(), binary), ("MASKS".to_string(), binary)];
        encode_response("m", None, t, &wanted, false)
    }

    #[test]
    fn masks_read_back_from_binary_and_json_replies() {
        for binary in [true, false] {
            let r = masks_reply(binary);
            let m = decode_masks(&r.body, r.header_length).ok().flatten();
            let m = m.unwrap_or(MasksTensor {
                shape: [0; 4],
                data: Vec::new(),
            });
            assert_eq!(m.shape, [2, 1, 2, 3], "binary {binary}");
            assert_eq!(m.plane(1, 0), &[250, 251, 252, 253, 254, 255]);
            assert_eq!(m.plane(0, 0), &[0, 1, 2, 3, 4, 5]);
            assert!(m.plane(2, 0).is_empty() && m.plane(0, 1).is_empty());
        }
        let r = masks_reply(true);
        let n = r.header_length.unwrap_or(0);
        let head: Value = serde_json::from_slice(&r.body[..n]).unwrap_or_default();
        assert_eq!(head["outputs"][1]["datatype"], "UINT8");
        assert_eq!(head["outputs"][1]["parameters"]["binary_data_size"], 12);
        assert_eq!(&r.body[n + 8..], &[0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255]);
    }

    #[test]
    fn a_masks_output_that_does_not_add_up_is_refused_naming_it() {
        let no_masks = encode_response("m", None, Vec::new(), &[], false);
        assert_eq!(decode_masks(&no_masks.body, None).ok(), Some(None));
        for (entry, want) in [
            (
                r#"{"name":"MASKS","datatype":"UINT8","shape":[1,1,2,2],"data":[1,2,3]}"#,
                "shape [1, 1, 2, 2] but 3 values",
            ),
            (
                r#"{"name":"MASKS","datatype":"FP32","shape":[1,1,1,1],"data":[1]}"#,
                "datatype FP32 (expected UINT8)",
            ),
            (
                r#"{"name":"MASKS","datatype":"UINT8","shape":[1,1],"data":[1]}"#,
                "shape [1, 1] (expected [N, M, H, W])",
            ),
            (
                r#"{"name":"MASKS","datatype":"UINT8","shape":[1,1,1,1],"data":[256]}"#,
                "not a whole number in 0..255",
            ),
        ] {
            let body = format!(r#"{{"outputs":[{entry}]}}"#);
            let e = decode_masks(body.as_bytes(), None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("output 'MASKS': ") && e.contains(want), "{e}");
        }
    }
}
