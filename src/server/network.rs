//! `POST /v2/models/{name}/infer` with a `NETWORK_INPUT` tensor: the model's
//! raw network on one FP32 input, its raw output back. This is what makes a
//! modeldock server the remote backend of another modeldock (which keeps
//! decoding, pre- and post-processing), the way a Triton would be.

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use tokio::sync::oneshot;

use super::error::{ApiError, ApiResult};
use super::state::State;
use crate::engine::{Answer, ImageInput, InferError, Reply};
use crate::v2::head::Head;
use crate::v2::{tensor_infer as wire, Tensor32};
use crate::vision::InferParams;

pub const NETWORK_INPUT: &str = "NETWORK_INPUT";
pub const NETWORK_OUTPUT: &str = "NETWORK_OUTPUT";

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
    let Ok(permit) = state.queue.clone().try_acquire_owned() else {
        state.metrics.record_fail(&model);
        return Err(ApiError::overloaded(format!(
            "server is busy: {} requests queued; retry shortly",
            state.options.max_queue
        )));
    };
    let started = Instant::now();
    let (tx, rx) = oneshot::channel::<Answer>();
    let input = ImageInput::Tensor {
        name: NETWORK_INPUT.to_string(),
        tensor: Arc::new(x),
    };
    let reply = Reply::callback(move |a| {
        let _ = tx.send(a);
    });
    if let Err((e, _)) = state.engine.try_infer(&model, input, InferParams::default(), reply) {
        state.metrics.record_fail(&model);
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
            state.metrics.record_fail(&model);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            state.stats_mut(&model, |s| s.record_fail(ms));
            return Err(ApiError::bad_request(e));
        }
    };
    state.metrics.record_ok(&model, &r.timings, false);
    state.stats_mut(&model, |s| s.record_ok(&r.timings, false));
    let Some(y) = r.output.tensor.as_ref() else {
        return Err(ApiError::bad_request(format!("{model}: the network gave no tensor")));
    };
    Ok(super::infer::encoded_response(wire::encode_reply(
        &model,
        NETWORK_OUTPUT,
        y,
        binary,
    )))
}
