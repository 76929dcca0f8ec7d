//! What every model shares: decoding with limits, resizing and normalising,
//! NMS, the output types (detections, masks), segmentation prompts, overlay and nail geometry, landmark smoothing.

pub mod decode;
pub mod hand_roi;
pub mod image_files;
pub mod jpeg_scaled;
pub mod letterbox;
pub mod mask;
pub mod mask_overlay;
pub mod nails;
pub mod nms;
pub mod one_euro;
pub mod output;
pub mod overlay;
pub mod preprocess;
pub mod prompt;
pub mod warp;

pub use image_files::{is_image_name, IMAGE_EXTENSIONS};
pub use mask::Mask;
pub use output::{Detection, InferParams, ModelTimings, Output, Timings};
