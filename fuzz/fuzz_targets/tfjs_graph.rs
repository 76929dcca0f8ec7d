//! A tfjs graph model (`model.json` with `modelTopology`) plus shard bytes →
//! `read_graph_text` (the importer) and `Graph::build` (topology parsing,
//! op compilation, conv weight conversion): the whole load path of a graph
//! model minus the folder. The graph is not run (an arbitrary graph may ask
//! for any amount of work); building it must never panic.
//!
//! Input: the model.json text, a NUL byte, then the shard bytes. Every shard
//! path reads those same bytes (at most 16 MiB served in all per input).
#![no_main]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use libfuzzer_sys::fuzz_target;
use modeldock::error::{Error, Result};
use modeldock::graph::executor::{Graph, GraphJson, GRAPH_TENSOR};
use modeldock::import::tfjs::{read_graph_text, Shards};

struct MemShards<'a> {
    blob: &'a [u8],
    served: usize,
}

impl Shards for MemShards<'_> {
    fn size(&mut self, _rel: &str) -> Result<u64> {
        Ok(self.blob.len() as u64)
    }

    fn read(&mut self, rel: &str) -> Result<Vec<u8>> {
        self.served += self.blob.len();
        if self.served > 16 << 20 {
            return Err(Error::msg(format!("shard '{rel}': fuzz harness limit")));
        }
        Ok(self.blob.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, blob) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let mut shards = MemShards { blob, served: 0 };
    let Ok(tensors) = read_graph_text("fuzz", text, &mut shards) else { return };
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    let Some(bytes) = map.get(GRAPH_TENSOR).and_then(|t| t.to_vec1::<u8>().ok()) else {
        panic!("an imported graph model has no {GRAPH_TENSOR} tensor");
    };
    let Ok(json) = serde_json::from_slice::<GraphJson>(&bytes) else { return };
    let mut weight = |name: &str, dt: DType| -> Result<Tensor> {
        let t = map.get(name).ok_or_else(|| Error::msg(format!("missing tensor '{name}'")))?;
        Ok(t.to_dtype(dt)?)
    };
    let _ = Graph::build(&json, DType::F32, &Device::Cpu, &mut weight);
});
