//! The catalogue: what models exist (manifests, the built-in ones, imported
//! folders, the hub cache) and where their weights are, read without loading
//! a single tensor.

pub mod arch;
pub mod builtin;
pub mod hub;
pub mod manifest;
pub mod registry;
pub mod safetensors_header;
pub mod shards;
pub mod weights_source;

pub use arch::{Arch, Decode, Task};
pub use manifest::Manifest;
