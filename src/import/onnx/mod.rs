//! `modeldock import onnx MODEL.onnx --out DIR`: an ONNX model (protobuf,
//! opset 13–22, the default domain) read with bounded sizes, lowered onto
//! the graph executor ([`lower`]) and stored as one safetensors file: the
//! weights plus the lowered topology under [`GRAPH_TENSOR`], like an
//! imported tfjs graph.

pub mod lower;
pub mod proto;
pub mod store;
pub mod tensors;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::graph::executor::{Graph, GraphJson, GRAPH_TENSOR};
use proto::ModelProto;

/// Largest model file read whole (protobuf's own limit is 2 GiB; bigger
/// models keep their weights as external data).
pub const MAX_ONNX_BYTES: u64 = 2 << 30;
/// The default-domain opsets whose ops this build lowers. Before 13,
/// Softmax flattened its input to 2-D around the axis (a different result
/// for any axis but the last, which the import cannot tell without shapes),
/// so older graphs are refused rather than run wrongly.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=22;

/// A parsed ONNX model: its graph lowered, with what it says about itself.
pub struct OnnxModel {
    pub lowered: lower::Lowered,
    pub opset: i64,
    /// `metadata_props` (Ultralytics: names, stride, task, imgsz, ...).
    pub metadata: HashMap<String, String>,
    pub producer: String,
}

/// Whether `path` names an ONNX model (by its extension).
pub fn is_onnx_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Reads and lowers `path`; every refusal names the file.
pub fn read(path: &Path) -> Result<OnnxModel> {
    let ctx = |e: Error| Error::msg(format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_ONNX_BYTES {
        return Err(ctx(Error::msg(format!(
            "{} bytes is over the 2 GiB protobuf limit (store the weights as external data)",
            meta.len()
        ))));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&bytes, dir).map_err(ctx)
}

/// Parses and lowers a model from its bytes (external data under `dir`).
pub fn parse(bytes: &[u8], dir: &Path) -> Result<OnnxModel> {
    let model = ModelProto::decode_bytes(bytes).map_err(|e| Error::msg(format!("not an ONNX model: {e}")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| Error::msg("no default-domain opset_import"))?;
    if !OPSETS.contains(&opset) {
        return Err(Error::msg(format!(
            "opset {opset} is out of the supported range {}..={}",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::msg("the model has no graph"))?;
    let lowered = lower::lower(graph, dir)?;
    let metadata = model
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    Ok(OnnxModel {
        lowered,
        opset,
        metadata,
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
    })
}

impl OnnxModel {
    /// The lowered topology as the executor reads it.
    pub fn graph_json(&self) -> Result<GraphJson> {
        serde_json::from_value(self.lowered.topology.clone()).map_err(|e| Error::msg(format!("lowered topology: {e}")))
    }

    /// Builds the executor's graph straight from memory (f32, CPU).
    pub fn build(&self) -> Result<Graph> {
        let weights: HashMap<&str, &Tensor> = self.lowered.weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Graph::build(&self.graph_json()?, DType::F32, &Device::Cpu, &mut |name, dt| {
            let t = weights
                .get(name)
                .ok_or_else(|| Error::msg(format!("weight '{name}' is missing")))?;
            Ok(t.to_dtype(dt)?)
        })
    }

    /// The tensors of the safetensors file an import writes: the weights
    /// and the topology under [`GRAPH_TENSOR`].
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let json = serde_json::to_vec(&self.lowered.topology).map_err(|e| Error::msg(e.to_string()))?;
        let n = json.len();
        let mut out = self.lowered.weights.clone();
        out.push((GRAPH_TENSOR.to_string(), Tensor::from_vec(json, n, &Device::Cpu)?));
        Ok(out)
    }
}
