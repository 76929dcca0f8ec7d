//! Bad ONNX files get a one-line error naming the file and the problem:
//! each model here is written with the importer's own protobuf messages,
//! then read back from disk as `import onnx` and `verify --onnx` read it.

mod common;

use std::path::Path;

use modeldock::import::onnx::proto::{
    data_type, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto, DATA_EXTERNAL,
};
use prost::Message;

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            dim_value: Some(d),
                            dim_param: None,
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn floats(name: &str, dims: &[i64], n: usize) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: vec![0u8; n * 4],
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: 7,
        ..Default::default()
    }
}

/// x [1,3,8,8] → Conv(W, 4 out, 3×3, pads 1) → Relu → y.
fn good_model() -> ModelProto {
    let mut conv = node("conv", "Conv", &["x", "W"], &["c"]);
    conv.attribute.push(ints_attr("pads", &[1, 1, 1, 1]));
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: vec![conv, node("relu", "Relu", &["c"], &["y"])],
            initializer: vec![floats("W", &[4, 3, 3, 3], 108)],
            input: vec![value("x", &[1, 3, 8, 8])],
            output: vec![value("y", &[1, 4, 8, 8])],
        }),
        ..Default::default()
    }
}

fn graph_mut(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap_or_else(|| panic!("the model has a graph"))
}

/// Writes `m` as `dir/name` and returns the importer's error (the model must be refused).
fn refusal(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    match modeldock::import::onnx::read(&path) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "one line: {msg}");
            assert!(msg.contains(name), "names the file: {msg}");
            msg
        }
    }
}

#[test]
fn the_good_model_is_accepted_so_each_refusal_below_is_the_change_it_makes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("good.onnx");
    std::fs::write(&path, good_model().encode_to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let m = modeldock::import::onnx::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let g = m.build().unwrap_or_else(|e| panic!("{e}"));
    let x = candle_core::Tensor::ones((1, 3, 8, 8), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = g.run(&x).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out[0].0, "y");
    assert_eq!(out[0].1.dims(), &[1, 4, 8, 8]);
}

#[test]
fn bad_bytes_and_opsets_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let msg = refusal(dir.path(), "garbage.onnx", b"\xff\xff\xff\xff not protobuf");
    assert!(msg.contains("not an ONNX model"), "{msg}");
    let mut bytes = good_model().encode_to_vec();
    bytes.truncate(bytes.len() / 2);
    let msg = refusal(dir.path(), "truncated.onnx", &bytes);
    assert!(msg.contains("not an ONNX model"), "{msg}");
    let mut m = good_model();
    m.opset_import[0].version = 5;
    let msg = refusal(dir.path(), "old.onnx", &m.encode_to_vec());
    assert!(msg.contains("opset 5 is out of the supported range"), "{msg}");
    // Before opset 13 Softmax flattened around its axis: refused, not run wrongly.
    m.opset_import[0].version = 12;
    let msg = refusal(dir.path(), "opset12.onnx", &m.encode_to_vec());
    assert!(msg.contains("opset 12 is out of the supported range 13..=22"), "{msg}");
    m.opset_import.clear();
    let msg = refusal(dir.path(), "noopset.onnx", &m.encode_to_vec());
    assert!(msg.contains("opset"), "{msg}");
}

#[test]
fn unknown_ops_and_unsupported_forms_name_the_node() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut m = good_model();
    graph_mut(&mut m).node[1] = node("nms", "NonMaxSuppression", &["c"], &["y"]);
    let msg = refusal(dir.path(), "nms.onnx", &m.encode_to_vec());
    assert!(
        msg.contains("node 'nms' (NonMaxSuppression): op 'NonMaxSuppression' is not supported"),
        "{msg}"
    );
    let mut m = good_model();
    let g = graph_mut(&mut m);
    g.initializer[0] = floats("W", &[4, 1, 3, 3], 36);
    g.node[0].attribute.push(AttributeProto {
        name: "group".into(),
        i: 3,
        r#type: 2,
        ..Default::default()
    });
    let msg = refusal(dir.path(), "groups.onnx", &m.encode_to_vec());
    assert!(msg.contains("node 'conv' (Conv): grouped convs with 3 groups"), "{msg}");
    let mut m = good_model();
    graph_mut(&mut m).node[0].domain = "com.microsoft".into();
    let msg = refusal(dir.path(), "domain.onnx", &m.encode_to_vec());
    assert!(msg.contains("operator domain 'com.microsoft'"), "{msg}");
    let mut m = good_model();
    graph_mut(&mut m).node[1].input[0] = "nowhere".into();
    let msg = refusal(dir.path(), "dangling.onnx", &m.encode_to_vec());
    assert!(msg.contains("input 'nowhere' is not produced by any node"), "{msg}");
    // Several inputs are fine (tests/fixtures/onnx/ops/three_inputs); more
    // than 64 are refused.
    let mut m = good_model();
    for i in 0..64 {
        graph_mut(&mut m).input.push(value(&format!("x{i}"), &[1, 3, 8, 8]));
    }
    let msg = refusal(dir.path(), "many_inputs.onnx", &m.encode_to_vec());
    assert!(msg.contains("the graph has 65 inputs (at most 64)"), "{msg}");
}

#[test]
fn tensors_that_claim_more_than_they_hold_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut m = good_model();
    graph_mut(&mut m).initializer[0] = floats("W", &[4, 3, 3, 3], 100);
    let msg = refusal(dir.path(), "short.onnx", &m.encode_to_vec());
    assert!(
        msg.contains("tensor 'W': 400 bytes of data for shape [4, 3, 3, 3] (432 expected)"),
        "{msg}"
    );
    let mut m = good_model();
    graph_mut(&mut m).initializer[0] = floats("W", &[i64::MAX, 4, 3, 3], 1);
    let msg = refusal(dir.path(), "overflow.onnx", &m.encode_to_vec());
    assert!(
        msg.contains("tensor 'W': shape") && msg.contains("invalid or too large"),
        "{msg}"
    );
    // Empty, but its strides would overflow (found by the fuzzer).
    let mut m = good_model();
    graph_mut(&mut m).initializer[0] = floats("W", &[0, 1 << 40, 1 << 40], 0);
    let msg = refusal(dir.path(), "empty_huge.onnx", &m.encode_to_vec());
    assert!(msg.contains("invalid or too large"), "{msg}");
    let mut m = good_model();
    graph_mut(&mut m).initializer[0] = floats("W", &[4, -3, 3, 3], 1);
    let msg = refusal(dir.path(), "negative.onnx", &m.encode_to_vec());
    assert!(msg.contains("invalid or too large"), "{msg}");
}

#[test]
fn external_data_must_stay_in_the_models_folder_and_fit_its_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ext = |loc: &str, length: Option<&str>| {
        let mut m = good_model();
        let w = &mut graph_mut(&mut m).initializer[0];
        w.raw_data.clear();
        w.data_location = DATA_EXTERNAL;
        w.external_data.push(StringStringEntryProto {
            key: "location".into(),
            value: loc.into(),
        });
        if let Some(l) = length {
            w.external_data.push(StringStringEntryProto {
                key: "length".into(),
                value: l.into(),
            });
        }
        m.encode_to_vec()
    };
    let msg = refusal(dir.path(), "escape.onnx", &ext("../secret.bin", None));
    assert!(
        msg.contains("external data '../secret.bin' must be a file inside the model's folder"),
        "{msg}"
    );
    let msg = refusal(dir.path(), "absolute.onnx", &ext("/etc/passwd", None));
    assert!(msg.contains("must be a file inside the model's folder"), "{msg}");
    std::fs::write(dir.path().join("w.bin"), [0u8; 100]).unwrap_or_else(|e| panic!("{e}"));
    let msg = refusal(dir.path(), "small.onnx", &ext("w.bin", None));
    assert!(
        msg.contains("external data 'w.bin' has 100 bytes, the tensor needs 432 from offset 0"),
        "{msg}"
    );
    let msg = refusal(dir.path(), "length.onnx", &ext("w.bin", Some("8")));
    assert!(msg.contains("length 8 does not match its shape (432 bytes)"), "{msg}");
    // The same external data, big enough, loads.
    std::fs::write(dir.path().join("w.bin"), [0u8; 432]).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("ok.onnx");
    std::fs::write(&path, ext("w.bin", None)).unwrap_or_else(|e| panic!("{e}"));
    modeldock::import::onnx::read(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn import_onnx_on_a_bad_file_exits_nonzero_with_one_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("broken.onnx");
    std::fs::write(&bad, b"\x08\x07\x12").unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let bad_s = bad.display().to_string();
    let out_s = out.display().to_string();
    let (code, stdout, stderr) = common::cli(&["import", "onnx", &bad_s, "--out", &out_s], &[]);
    assert_ne!(code, 0, "{stdout}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(line.contains("broken.onnx"), "{stderr}");
    // A model with neither metadata nor YOLO shapes is raw tensors; as
    // YOLO it is refused, naming its output.
    let good = dir.path().join("plain.onnx");
    std::fs::write(&good, good_model().encode_to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let good_s = good.display().to_string();
    let (code, stdout, stderr) = common::cli(&["import", "onnx", &good_s, "--out", &out_s], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("family raw"), "{stdout}");
    let toml = std::fs::read_to_string(out.join("model.toml")).unwrap_or_default();
    assert!(toml.contains("arch = \"raw\"") && toml.contains("[[inputs]]"), "{toml}");
    let (code, _, stderr) = common::cli(&["import", "onnx", &good_s, "--out", &out_s, "--family", "yolo"], &[]);
    assert_ne!(code, 0);
    let line = stderr.trim();
    assert!(
        line.contains("plain.onnx: output 'y' has shape") && line.contains("--family raw") && line.lines().count() == 1,
        "{stderr}"
    );
}
