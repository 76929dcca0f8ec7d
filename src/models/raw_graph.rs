//! `raw`: an imported graph (`import onnx --family raw`) served as tensors
//! only. Its inputs and outputs are the graph's, named as in the manifest's
//! `[[inputs]]` and `[[outputs]]`; there is no pre- or post-processing, so
//! other programs can use modeldock as a plain ONNX server.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::Model;
use crate::catalog::Manifest;
use crate::error::{Error, Result};
use crate::graph::executor::Graph;
use crate::v2::named_tensors::NamedTensors;
use crate::v2::Tensor32;
use crate::vision::{Detection, InferParams, ModelTimings};

pub struct RawGraph {
    id: String,
    graph: Graph,
    /// The inputs' names, in the graph's order.
    inputs: Vec<String>,
    /// The manifest's outputs: (name, index in the graph's outputs).
    outputs: Vec<(String, usize)>,
}

impl RawGraph {
    pub fn load(vb: VarBuilder, manifest: &Manifest) -> Result<RawGraph> {
        let id = manifest.id.clone();
        let graph = Graph::load(&vb, &id)?;
        let keys: Vec<&str> = graph.inputs().iter().map(|i| i.key.as_str()).collect();
        let listed: Vec<&str> = manifest.inputs.iter().map(|t| t.name.as_str()).collect();
        if let Some(t) = listed.iter().find(|n| !keys.contains(n)) {
            return Err(Error::msg(format!(
                "{id}: inputs: '{t}' is not an input of the graph (it takes {keys:?})"
            )));
        }
        if let Some(k) = keys.iter().find(|k| !listed.contains(k)) {
            return Err(Error::msg(format!(
                "{id}: the graph's input '{k}' is not listed in [[inputs]]"
            )));
        }
        let out_keys = graph.output_keys();
        let outputs = if manifest.outputs.is_empty() {
            out_keys.iter().enumerate().map(|(i, k)| (k.clone(), i)).collect()
        } else {
            manifest
                .outputs
                .iter()
                .map(|t| {
                    out_keys
                        .iter()
                        .position(|k| *k == t.name)
                        .map(|i| (t.name.clone(), i))
                        .ok_or_else(|| {
                            Error::msg(format!(
                                "{id}: outputs: '{}' is not an output of the graph (it gives {out_keys:?})",
                                t.name
                            ))
                        })
                })
                .collect::<Result<_>>()?
        };
        Ok(RawGraph {
            id,
            inputs: keys.iter().map(|k| k.to_string()).collect(),
            graph,
            outputs,
        })
    }

    /// Runs the graph on `given` (each of its inputs once, by name).
    fn run(&self, given: &NamedTensors) -> Result<NamedTensors> {
        if let Some((n, _)) = given.iter().find(|(n, _)| !self.inputs.contains(n)) {
            return Err(Error::msg(format!(
                "input '{n}' is not one of this model's inputs ({})",
                self.inputs.join(", ")
            )));
        }
        let xs: Vec<Tensor> = self
            .inputs
            .iter()
            .map(|name| {
                let (_, t) = given
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| Error::msg(format!("input '{name}' is missing")))?;
                if Tensor32::elements(&t.shape) != Some(t.data.len()) {
                    return Err(Error::msg(format!("input '{name}': the data does not fill its shape")));
                }
                Ok(Tensor::from_vec(t.data.clone(), t.shape.clone(), &Device::Cpu)?)
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = xs.iter().collect();
        let outs = crate::kernels::host::in_pool(|| self.graph.run_inputs(&refs))?;
        self.outputs
            .iter()
            .map(|(name, i)| {
                let (_, t) = outs
                    .get(*i)
                    .ok_or_else(|| Error::msg(format!("output '{name}' has no value")))?;
                Ok((
                    name.clone(),
                    Tensor32 {
                        shape: t.dims().to_vec(),
                        data: t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                    },
                ))
            })
            .collect()
    }
}

impl Model for RawGraph {
    fn infer(&self, _img: &RgbImage, _params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        Err(Error::msg(format!(
            "{} is a raw-tensor model: send its inputs ({}) as v2 tensors, not an image",
            self.id,
            self.inputs.join(", ")
        )))
    }

    fn macs_done(&self) -> u64 {
        self.graph.macs_done()
    }

    fn run_tensors(&self, inputs: &NamedTensors) -> Option<Result<NamedTensors>> {
        Some(self.run(inputs))
    }
}
