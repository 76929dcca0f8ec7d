//! Random-initialised SAM weights from a seed, for parity fixtures and the
//! big-model benchmark: no trained weights are involved.
//!
//! Every tensor the network asks for is made from its name, its shape and
//! the seed alone (a splitmix64 counter per element), so the same seed
//! always gives the same bytes, on any machine, without a list of names:
//! building the network through [`RandomWeights`] records what it needs.
//! Values keep activations near unit scale: matrices and filters uniform in
//! ±√(3 / fan-in) (fan-in: every size after the first); norm scales and
//! running variances near 1; biases and means near 0; positional tables
//! small. `tests/python/sam_reference.py` loads the written file into Meta's
//! PyTorch code for the reference outputs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::sam::{Sam, Variant};
use crate::error::{Error, Result};

/// A backend that makes each asked tensor from the seed and remembers it.
pub struct RandomWeights {
    seed: u64,
    made: Mutex<HashMap<String, Tensor>>,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a name: each tensor's own stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The values of tensor `name` of `dims` for `seed`.
pub fn values(name: &str, dims: &[usize], seed: u64) -> Vec<f32> {
    let n: usize = dims.iter().product();
    let base = splitmix(seed ^ name_hash(name));
    // Uniform in [-1, 1): the top 24 bits of each counter's hash.
    let u = |i: usize| (splitmix(base.wrapping_add(i as u64)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let (centre, spread) = if leaf == "running_var" {
        (1.0, 0.1)
    } else if leaf == "running_mean" || leaf == "bias" {
        (0.0, 0.1)
    } else if dims.len() == 1 {
        (1.0, 0.1)
    } else if leaf == "pos_embed" || leaf.starts_with("rel_pos") {
        (0.0, 0.02)
    } else if leaf == "positional_encoding_gaussian_matrix" {
        (0.0, 1.0)
    } else {
        let fan_in: usize = dims[1..].iter().product::<usize>().max(1);
        (0.0, (3.0 / fan_in as f32).sqrt())
    };
    (0..n).map(|i| centre + spread * u(i)).collect()
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        RandomWeights {
            seed,
            made: Mutex::new(HashMap::new()),
        }
    }

    /// Every tensor made so far, by name.
    pub fn into_tensors(self) -> HashMap<String, Tensor> {
        self.made.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut made = self
            .made
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
        if let Some(t) = made.get(name) {
            if t.dims() != s.dims() {
                candle_core::bail!("{name}: asked as {s:?} and as {:?}", t.shape());
            }
            return t.to_dtype(dtype);
        }
        let t = Tensor::from_vec(values(name, s.dims(), self.seed), s, dev)?;
        made.insert(name.to_string(), t.clone());
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: random weights need a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// The random weights of a SAM `variant` for `seed`, by name.
pub fn sam_weights(variant: Variant, seed: u64) -> Result<HashMap<String, Tensor>> {
    let backend = std::sync::Arc::new(RandomWeights::new(seed));
    {
        let vb = VarBuilder::from_backend(Box::new(Shared(backend.clone())), DType::F32, Device::Cpu);
        Sam::build(vb, variant, "object".into())?;
    }
    let backend = std::sync::Arc::try_unwrap(backend).map_err(|_| Error::msg("the random weights are still in use"))?;
    Ok(backend.into_tensors())
}

/// A shared handle, so the tensors can be taken back after the build.
struct Shared(std::sync::Arc<RandomWeights>);

impl SimpleBackend for Shared {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// Writes the random weights of `variant` for `seed` into `dir`: one
/// `<stem>.safetensors`, or with `shards > 1` the Hugging Face layout
/// (`<stem>-0000i-of-0000k.safetensors` plus `<stem>.safetensors.index.json`).
/// Returns the file a manifest's `weights` names.
pub fn write_sam_weights(variant: Variant, seed: u64, dir: &Path, stem: &str, shards: usize) -> Result<String> {
    let tensors = sam_weights(variant, seed)?;
    let shards = shards.max(1);
    if shards == 1 {
        let file = format!("{stem}.safetensors");
        candle_core::safetensors::save(&tensors, dir.join(&file))
            .map_err(|e| Error::msg(format!("{}: {e}", dir.join(&file).display())))?;
        return Ok(file);
    }
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let total: usize = tensors.values().map(|t| t.elem_count() * 4).sum();
    let per = total.div_ceil(shards);
    let mut parts: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); shards];
    let (mut part, mut filled) = (0, 0);
    for n in names {
        let t = &tensors[n];
        if filled >= per && part + 1 < shards {
            part += 1;
            filled = 0;
        }
        filled += t.elem_count() * 4;
        parts[part].insert(n.clone(), t.clone());
    }
    let mut map = serde_json::Map::new();
    for (i, p) in parts.iter().enumerate() {
        let file = format!("{stem}-{:05}-of-{shards:05}.safetensors", i + 1);
        candle_core::safetensors::save(p, dir.join(&file))
            .map_err(|e| Error::msg(format!("{}: {e}", dir.join(&file).display())))?;
        for n in p.keys() {
            map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = format!("{stem}.safetensors.index.json");
    let body = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
    std::fs::write(dir.join(&index), body.to_string())
        .map_err(|e| Error::msg(format!("{}: {e}", dir.join(&index).display())))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_depend_on_name_and_seed_only_and_follow_the_rules() {
        let a = values("x.weight", &[4, 8], 1);
        assert_eq!(a, values("x.weight", &[4, 8], 1));
        assert_ne!(a, values("x.weight", &[4, 8], 2));
        assert_ne!(a, values("y.weight", &[4, 8], 1));
        let bound = (3.0f32 / 8.0).sqrt();
        assert!(a.iter().all(|v| v.abs() <= bound));
        assert!(values("n.running_var", &[16], 1).iter().all(|v| *v >= 0.9 && *v <= 1.1));
        assert!(values("n.bias", &[16], 1).iter().all(|v| v.abs() <= 0.1));
        assert!(values("n.weight", &[16], 1).iter().all(|v| (v - 1.0).abs() <= 0.1));
    }
}
