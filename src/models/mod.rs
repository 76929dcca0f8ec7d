//! The networks, one file each, and the weights backend they load through.

pub mod coco;
pub mod detr;
pub mod face_landmarks;
pub mod hands;
pub mod layers;
pub mod mtcnn;
pub mod objects;
pub mod pose;
pub mod raw_graph;
pub mod remote_net;
#[cfg(feature = "sam")]
pub mod sam;
#[cfg(feature = "sam")]
pub mod sam_decoder;
pub mod sam_prompt;
#[cfg(feature = "sam")]
pub mod sam_random;
pub mod selfie;
pub mod timing;
pub mod tiny_face_detector;
#[cfg(feature = "sam")]
pub mod tiny_vit;
pub mod toy;
pub mod toy_shards;
pub mod weights;
pub mod weights_files;
pub mod yolov8;
pub mod yolov8_head;
pub mod yolov8_masks;

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::catalog::weights_source::WeightsSource;
use crate::catalog::{Arch, Manifest};
use crate::error::{Error, Result};
use crate::v2::named_tensors::NamedTensors;
use crate::vision::{Detection, InferParams, Mask, ModelTimings};
use weights::ProgressFn;

/// A loaded network with its own pre- and post-processing.
pub trait Model: Send + Sync {
    /// Runs the whole pipeline on an RGB image.
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)>;

    /// The whole pipeline with the masks it makes (segmentation models
    /// override this; the others make none).
    fn infer_with_masks(
        &self,
        img: &RgbImage,
        params: &InferParams,
    ) -> Result<(Vec<Detection>, Vec<Mask>, ModelTimings)> {
        let (d, t) = self.infer(img, params)?;
        Ok((d, Vec::new(), t))
    }

    /// Conv multiply-adds this model has run so far (graph models count
    /// them; 0 for the others): with a forward time, its GFLOP/s.
    fn macs_done(&self) -> u64 {
        0
    }

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

    /// A raw-tensor model's graph on its inputs by name, giving its outputs
    /// by name; `None` for the other models (their network, if served, takes
    /// one `NETWORK_INPUT`: [`remote_net::serve_tensors`]).
    fn run_tensors(&self, _inputs: &NamedTensors) -> Option<Result<NamedTensors>> {
        None
    }
}

/// The image's (width, height); an error for an empty image.
pub(crate) fn image_size(img: &RgbImage) -> Result<(usize, usize)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::msg("the image is empty"));
    }
    Ok((w, h))
}

/// Builds a model whose network runs on a server (`manifest.backend`):
/// nothing is read here; the server is asked to load it.
pub fn build_remote(manifest: &Manifest, device: &Device) -> Result<Box<dyn Model>> {
    let m: Box<dyn Model> = match manifest.arch {
        Arch::TinyFaceDetector => Box::new(tiny_face_detector::TinyFaceDetector::remote(manifest, device)?),
        Arch::Yolov8 => Box::new(yolov8::YoloV8::remote(manifest, device)?),
        Arch::Raw => Box::new(remote_net::RawRemote::connect(manifest)?),
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
    build_cancellable(manifest, source, total_bytes, device, progress, None)
}

/// [`build`] that stops reading weights once `cancel` is set (the error is
/// [`weights_files::CANCELLED`]); what was read is dropped.
pub fn build_cancellable(
    manifest: &Manifest,
    source: &WeightsSource,
    total_bytes: u64,
    device: &Device,
    progress: ProgressFn,
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> Result<Box<dyn Model>> {
    let vb = weights::cancellable_var_builder(source, total_bytes, device, progress, cancel)?;
    let m: Box<dyn Model> = match manifest.arch {
        Arch::TinyFaceDetector => Box::new(tiny_face_detector::TinyFaceDetector::load(vb, manifest)?),
        Arch::FaceLandmarks68 => Box::new(face_landmarks::FaceLandmarks::load(vb, manifest)?),
        Arch::Mtcnn => Box::new(mtcnn::Mtcnn::load(vb, manifest)?),
        Arch::Yolov8 => Box::new(yolov8::YoloV8::load(vb, manifest)?),
        Arch::Nanodet => Box::new(objects::Objects::load(vb, manifest)?),
        Arch::Movenet => Box::new(pose::Pose::load(vb, manifest)?),
        Arch::Hands => Box::new(hands::Hands::load(vb, manifest)?),
        Arch::Selfie => Box::new(selfie::Selfie::load(vb, manifest)?),
        Arch::Detr => Box::new(detr::Detr::load(vb, manifest)?),
        #[cfg(feature = "sam")]
        Arch::Sam => Box::new(sam::Sam::load(vb, manifest)?),
        #[cfg(not(feature = "sam"))]
        Arch::Sam => {
            return Err(Error::unavailable(format!(
                "model {}: arch \"sam\" needs the `sam` feature, which this build leaves out",
                manifest.id
            )))
        }
        Arch::Toy => Box::new(toy::Toy::load(vb, manifest)?),
        Arch::Raw => Box::new(raw_graph::RawGraph::load(vb, manifest)?),
    };
    Ok(m)
}
