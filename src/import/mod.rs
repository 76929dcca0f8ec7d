//! Importers: other formats (PyTorch `.pt` checkpoints through a bounded
//! pickle reader, TF.js graph models) turned into a model folder of
//! safetensors weights and a `model.toml`.

pub mod onnx;
pub mod pickle;
pub mod pt;
pub mod pt_sam;
pub mod tfjs;
