//! A model's network on a v2 server ([`crate::backend`]): candle tensors to
//! plain numbers and back, and `raw`, a server's model modeldock has no
//! decoder for (listed, loaded and unloaded, never run on images).

use candle_core::{DType, Tensor};
use image::RgbImage;

use super::{Manifest, Model};
use crate::backend::RemoteNet;
use crate::error::{Error, Result};
use crate::v2::named_tensors::{NamedTensors, NETWORK_INPUT, NETWORK_OUTPUT};
use crate::v2::Tensor32;
use crate::vision::{Detection, InferParams, ModelTimings};

/// Where a model's network runs.
pub enum Net<L> {
    Local(L),
    Remote(RemoteNet),
}

/// Connects `m`'s backend (loading the model on the server); errors name the model.
pub fn connect(m: &Manifest) -> Result<RemoteNet> {
    RemoteNet::connect(spec_of(m)?).map_err(|e| Error::msg(format!("{}: {e}", m.id)))
}

fn spec_of(m: &Manifest) -> Result<&crate::backend::BackendSpec> {
    m.backend
        .as_ref()
        .ok_or_else(|| Error::msg(format!("{}: no backend in the manifest", m.id)))
}

/// Runs `x` through the remote network; the output lands on `x`'s device.
pub fn run(net: &RemoteNet, x: &Tensor) -> Result<Tensor> {
    let shape = x.dims().to_vec();
    let data: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let y = net.run(&Tensor32 { shape, data })?;
    let out = Tensor::from_vec(y.data, y.shape, x.device())?;
    Ok(if x.dtype() == DType::F32 {
        out
    } else {
        out.to_dtype(x.dtype())?
    })
}

/// Runs `m`'s raw network on a network input sent by another modeldock (this
/// one is its remote backend). The shape must be the one `m` takes.
pub fn serve_raw(m: &dyn Model, x: &Tensor32, device: &candle_core::Device) -> Result<Tensor32> {
    let want = m
        .raw_input_shape()
        .ok_or_else(|| Error::msg("this model's network cannot be served on its own (no single input tensor)"))?;
    if x.shape != want {
        return Err(Error::msg(format!(
            "network input shape {:?}; this model takes {want:?}",
            x.shape
        )));
    }
    if Tensor32::elements(&x.shape) != Some(x.data.len()) {
        return Err(Error::msg("network input: the data does not fill its shape"));
    }
    let t = Tensor::from_vec(x.data.clone(), x.shape.clone(), device)?;
    let y = m.forward_raw(&t)?;
    Ok(Tensor32 {
        shape: y.dims().to_vec(),
        data: y.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
    })
}

/// Runs `m` on the tensors of a tensor request: a raw-tensor model's graph
/// on its named inputs, or another model's raw network on its one
/// `NETWORK_INPUT` (answered as `NETWORK_OUTPUT`).
pub fn serve_tensors(m: &dyn Model, xs: &NamedTensors, device: &candle_core::Device) -> Result<NamedTensors> {
    if let Some(r) = m.run_tensors(xs) {
        return r;
    }
    match xs.as_slice() {
        [(name, x)] if name == NETWORK_INPUT => Ok(vec![(NETWORK_OUTPUT.to_string(), serve_raw(m, x, device)?)]),
        _ => {
            let names: Vec<&str> = xs.iter().map(|(n, _)| n.as_str()).collect();
            Err(Error::msg(format!(
                "inputs {names:?}: this model's network takes one '{NETWORK_INPUT}'"
            )))
        }
    }
}

/// A server's model with no decoder here.
pub struct RawRemote {
    net: RemoteNet,
}

impl RawRemote {
    pub fn connect(m: &Manifest) -> Result<RawRemote> {
        let net = RemoteNet::attach(spec_of(m)?).map_err(|e| Error::msg(format!("{}: {e}", m.id)))?;
        Ok(RawRemote { net })
    }
}

impl Model for RawRemote {
    fn infer(&self, _img: &RgbImage, _params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        Err(Error::msg(no_decoder(&self.net.spec().describe())))
    }
}

/// Why a raw model is not offered for images.
pub fn no_decoder(what: &str) -> String {
    format!("{what} is a raw-tensor model: modeldock has no pre/post-processing for it, so it can be loaded and unloaded but not run on images")
}
