//! What every model shares: decoding with limits, resizing and normalising,
//! NMS, the output types and overlay geometry.

pub mod decode;
pub mod letterbox;
pub mod nms;
pub mod output;
pub mod overlay;
pub mod preprocess;

pub use output::{Detection, InferParams, ModelTimings, Output, Timings};
