//! The model zoo: manifests, weights, and one file per network.

pub mod builtin;
pub mod coco;
pub mod face_landmarks;
pub mod hands;
pub mod hub;
pub mod keep_alive;
pub mod layers;
pub mod manifest;
pub mod mtcnn;
pub mod objects;
pub mod pickle;
pub mod pose;
pub mod pt_import;
pub mod registry;
pub mod remote_net;
pub mod tf_graph;
pub mod tf_ops;
pub mod tfjs_import;
pub mod timing;
pub mod tiny_face_detector;
pub mod toy;
pub mod weights;
pub mod yolov8;
pub mod yolov8_head;

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::vision::{Detection, InferParams, ModelTimings};
pub use manifest::Manifest;
use weights::{var_builder, ProgressFn, WeightsSource};

/// A loaded network with its own pre- and post-processing.
pub trait Model: Send + Sync {
    /// Runs the whole pipeline on an RGB image.
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)>;

    /// The raw network on a preprocessed input tensor (parity checks).
    fn forward_raw(&self, _x: &Tensor) -> Result<Tensor> {
        Err(Error::msg("this model has no raw forward"))
    }

    /// The shape of the tensor [`Model::forward_raw`] takes, for models whose
    /// network can be served on its own (to another modeldock); `None` else.
    fn raw_input_shape(&self) -> Option<Vec<usize>> {
        None
    }

    /// The tensor [`Model::forward_raw`] takes for `img` (the first stage of
    /// [`Model::infer`]); `None` for models with no single network input.
    fn preprocess_raw(&self, _img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Architectures this build knows.
pub const ARCHES: &[&str] = &[
    "tiny_face_detector",
    "face_landmarks_68",
    "mtcnn",
    "yolov8",
    "nanodet",
    "movenet",
    "hands",
    "toy",
    manifest::RAW_ARCH,
];

/// Builds a model whose network runs on a server (`manifest.backend`):
/// nothing is read here; the server is asked to load it.
pub fn build_remote(manifest: &Manifest, device: &Device) -> Result<Box<dyn Model>> {
    let m: Box<dyn Model> = match manifest.arch.as_str() {
        "tiny_face_detector" => Box::new(tiny_face_detector::TinyFaceDetector::remote(manifest, device)?),
        "yolov8" => Box::new(yolov8::YoloV8::remote(manifest, device)?),
        manifest::RAW_ARCH => Box::new(remote_net::RawRemote::connect(manifest)?),
        other => {
            return Err(Error::msg(format!(
                "{}: arch {other} cannot run its network remotely",
                manifest.id
            )))
        }
    };
    Ok(m)
}

/// Builds the network for `manifest` from `source`, reporting progress.
pub fn build(
    manifest: &Manifest,
    source: &WeightsSource,
    total_bytes: u64,
    device: &Device,
    progress: ProgressFn,
) -> Result<Box<dyn Model>> {
    let vb = var_builder(source, total_bytes, device, progress)?;
    let m: Box<dyn Model> = match manifest.arch.as_str() {
        "tiny_face_detector" => Box::new(tiny_face_detector::TinyFaceDetector::load(vb, manifest)?),
        "face_landmarks_68" => Box::new(face_landmarks::FaceLandmarks::load(vb, manifest)?),
        "mtcnn" => Box::new(mtcnn::Mtcnn::load(vb, manifest)?),
        "yolov8" => Box::new(yolov8::YoloV8::load(vb, manifest)?),
        "nanodet" => Box::new(objects::Objects::load(vb, manifest)?),
        "movenet" => Box::new(pose::Pose::load(vb, manifest)?),
        "hands" => Box::new(hands::Hands::load(vb, manifest)?),
        "toy" => Box::new(toy::Toy::load(vb, manifest)?),
        other => {
            return Err(Error::msg(format!(
                "unknown arch '{other}' (this build knows: {})",
                ARCHES.join(", ")
            )))
        }
    };
    Ok(m)
}
