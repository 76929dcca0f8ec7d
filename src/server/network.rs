//! `POST /v2/models/{name}/infer` with tensors instead of images: a model's
//! raw network on one FP32 `NETWORK_INPUT`, its raw output back as
//! `NETWORK_OUTPUT` (this is what makes a modeldock server the remote
//! backend of another modeldock, which keeps decoding, pre- and
//! post-processing, the way a Triton would be), and a raw-tensor model's
//! graph on its named inputs, its named outputs back.

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use tokio::sync::oneshot;

use super::error::{ApiError, ApiResult};
use super::state::State;
use crate::engine::{Answer, ImageInput, InferError, Reply};
use crate::v2::head::Head;
use crate::v2::named_tensors::{encode_tensors_reply, tensors_request, NamedTensors};
pub use crate::v2::named_tensors::{NETWORK_INPUT, NETWORK_OUTPUT};
use crate::v2::{tensor_infer as wire, Tensor32};
use crate::vision::InferParams;

/// The request's `NETWORK_INPUT`, when it has one.
pub fn network_input(head: &Head, tail: &[u8]) -> crate::Result<Option<Tensor32>> {
    wire::named_tensor(head, NETWORK_INPUT, tail)
}

/// Runs the raw network through the engine (residency, queue and statistics
/// as for images) and answers `NETWORK_OUTPUT`, binary when the request was.
pub async fn infer(state: State, model: String, x: Tensor32, binary: bool) -> ApiResult<Response> {
    let arch = state.engine.catalog().get(&model).map(|e| e.manifest.arch);
    if !arch.is_some_and(|a| a.serves_network()) {
        let arch = arch.map(|a| a.name()).unwrap_or_default();
        return Err(ApiError::bad_request(format!(
            "{model}: its network ({arch}) is not served on its own; send IMAGE"
        )));
    }
    let outs = run(&state, &model, vec![(NETWORK_INPUT.to_string(), x)]).await?;
    let Some((_, y)) = outs.iter().find(|(n, _)| n == NETWORK_OUTPUT) else {
        return Err(ApiError::bad_request(format!("{model}: the network gave no tensor")));
    };
    Ok(super::infer::encoded_response(wire::encode_reply(
        &model,
        NETWORK_OUTPUT,
        y,
        binary,
    )))
}

/// A raw-tensor model's request: every input the manifest lists, by name,
/// and the outputs asked for (all when none are), binary as asked (or as
/// the request was, when it says nothing).
pub async fn infer_raw(state: State, model: String, head: &Head, tail: &[u8], binary: bool) -> ApiResult<Response> {
    let Some(manifest) = state.engine.catalog().get(&model).map(|e| e.manifest.clone()) else {
        return Err(ApiError::unknown_model(&model));
    };
    let spec = |t: &crate::engine::TensorSpec| format!("'{}' FP32 {:?}", t.name, t.shape);
    let takes = manifest.inputs.iter().map(spec).collect::<Vec<_>>().join(", ");
    let req = tensors_request(head, tail)?;
    for (name, x) in &req.inputs {
        let Some(want) = manifest.inputs.iter().find(|t| t.name == *name) else {
            return Err(ApiError::bad_request(format!(
                "{model}: unknown input '{name}' (this model takes {takes})"
            )));
        };
        let fits = want.shape.is_empty()
            || (want.shape.len() == x.shape.len()
                && want
                    .shape
                    .iter()
                    .zip(&x.shape)
                    .all(|(w, d)| *w < 0 || *w as usize == *d));
        if !fits {
            return Err(ApiError::bad_request(format!(
                "{model}: input '{name}' has shape {:?}; this model takes {:?}",
                x.shape, want.shape
            )));
        }
    }
    if let Some(t) = manifest
        .inputs
        .iter()
        .find(|t| !req.inputs.iter().any(|(n, _)| *n == t.name))
    {
        return Err(ApiError::bad_request(format!(
            "{model}: input '{}' is missing (this model takes {takes})",
            t.name
        )));
    }
    let gives: Vec<&str> = manifest.outputs.iter().map(|t| t.name.as_str()).collect();
    if let Some((o, _)) = req
        .outputs
        .iter()
        .find(|(o, _)| !gives.is_empty() && !gives.contains(&o.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "{model}: unknown output '{o}' (outputs: {})",
            gives.join(", ")
        )));
    }
    let outs = run(&state, &model, req.inputs).await?;
    let default = req.binary_default || binary;
    let chosen: Vec<(&str, &Tensor32, bool)> = if req.outputs.is_empty() {
        outs.iter().map(|(n, t)| (n.as_str(), t, default)).collect()
    } else {
        req.outputs
            .iter()
            .filter_map(|(o, b)| outs.iter().find(|(n, _)| n == o).map(|(n, t)| (n.as_str(), t, *b)))
            .collect()
    };
    Ok(super::infer::encoded_response(encode_tensors_reply(&model, &chosen)))
}

/// Runs `inputs` through the engine (residency, queue and statistics as for
/// images) and gives the outputs.
async fn run(state: &State, model: &str, inputs: NamedTensors) -> ApiResult<Arc<NamedTensors>> {
    let Ok(permit) = state.queue.clone().try_acquire_owned() else {
        state.metrics.record_fail(model);
        return Err(ApiError::overloaded(format!(
            "server is busy: {} requests queued; retry shortly",
            state.options.max_queue
        )));
    };
    let started = Instant::now();
    let (tx, rx) = oneshot::channel::<Answer>();
    let name = inputs.first().map(|(n, _)| n.clone()).unwrap_or_default();
    let input = ImageInput::Tensors {
        name,
        tensors: Arc::new(inputs),
    };
    let reply = Reply::callback(move |a| {
        let _ = tx.send(a);
    });
    if let Err((e, _)) = state.engine.try_infer(model, input, InferParams::default(), reply) {
        state.metrics.record_fail(model);
        return Err(ApiError::overloaded(e.to_string()));
    }
    let answer = match tokio::time::timeout(state.options.timeout, rx).await {
        Ok(Ok(a)) => a.map_err(|e: InferError| e.error),
        Ok(Err(_)) => Err("engine stopped before answering".to_string()),
        Err(_) => Err(format!("no answer within {} s", state.options.timeout.as_secs())),
    };
    drop(permit);
    let r = match answer {
        Ok(r) => r,
        Err(e) => {
            state.metrics.record_fail(model);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            state.stats_mut(model, |s| s.record_fail(ms));
            return Err(ApiError::bad_request(e));
        }
    };
    state.metrics.record_ok(model, &r.timings, false);
    state.stats_mut(model, |s| s.record_ok(&r.timings, false));
    r.output
        .tensors
        .clone()
        .ok_or_else(|| ApiError::bad_request(format!("{model}: the model gave no tensors")))
}
