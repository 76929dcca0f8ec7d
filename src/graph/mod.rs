//! Graph models: the nodes an importer stored, the ops they name, and the
//! executor that runs them on the kernels.

pub mod executor;
mod fuse;
pub mod node;
mod onnx_host_ops;
mod onnx_ops;
pub mod ops;
mod planar;
