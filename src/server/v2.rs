//! The Open Inference Protocol v2 endpoints other than infer: health, server
//! and model metadata, the model repository extension and the statistics
//! extension.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::events::{command_and_wait, is_out, is_resident, Waited};
use super::state::{ModelStats, State};
use crate::engine::{ModelState, ModelStatus};

pub const EXTENSIONS: [&str; 4] = ["binary_tensor_data", "model_repository", "statistics", "parameters"];

pub async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

pub async fn ready(AxState(state): AxState<State>) -> Response {
    if state.engine.snapshot().models.is_empty() && !state.engine.catalog().entries.is_empty() {
        return ApiError::unavailable("engine is starting").into_response();
    }
    Json(json!({"ready": true})).into_response()
}

pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "modeldock",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

/// Keypoints per detection a model gives (0 = none).
pub fn keypoint_count(state: &State, model: &str) -> usize {
    let catalog = state.engine.catalog();
    let Some(e) = catalog.get(model) else { return 0 };
    let m = &e.manifest;
    m.arch.keypoints(m.task)
}

/// Whether a model's task makes masks (output `MASKS`).
pub fn makes_masks(state: &State, model: &str) -> bool {
    let catalog = state.engine.catalog();
    catalog.get(model).is_some_and(|e| e.manifest.task.makes_masks())
}

fn known(state: &State, model: &str) -> ApiResult<()> {
    match state.engine.catalog().get(model) {
        Some(_) => Ok(()),
        None => Err(ApiError::unknown_model(model)),
    }
}

pub async fn model_metadata(AxState(state): AxState<State>, Path(model): Path<String>) -> ApiResult<Json<Value>> {
    known(&state, &model)?;
    // A raw-tensor model: the graph's own inputs and outputs.
    if let Some(m) = state
        .engine
        .catalog()
        .get(&model)
        .map(|e| &e.manifest)
        .filter(|m| !m.inputs.is_empty())
    {
        let specs = |ts: &[crate::engine::TensorSpec]| -> Vec<Value> {
            ts.iter()
                .map(|t| json!({"name": t.name, "datatype": "FP32", "shape": t.shape}))
                .collect()
        };
        return Ok(Json(json!({
            "name": model,
            "versions": ["1"],
            "platform": "modeldock",
            "inputs": specs(&m.inputs),
            "outputs": specs(&m.outputs),
        })));
    }
    let k = keypoint_count(&state, &model);
    let mut outputs = vec![
        json!({"name": "DETECTIONS", "datatype": "BYTES", "shape": [-1]}),
        json!({"name": "BOXES", "datatype": "FP32", "shape": [-1, -1, 4]}),
        json!({"name": "SCORES", "datatype": "FP32", "shape": [-1, -1]}),
        json!({"name": "CLASS_IDS", "datatype": "INT32", "shape": [-1, -1]}),
        json!({"name": "COUNTS", "datatype": "INT32", "shape": [-1]}),
    ];
    if k > 0 {
        outputs.push(json!({"name": "KEYPOINTS", "datatype": "FP32", "shape": [-1, -1, k, 3]}));
    }
    if makes_masks(&state, &model) {
        outputs.push(json!({"name": "MASKS", "datatype": "UINT8", "shape": [-1, -1, -1, -1]}));
    }
    let labels = state
        .engine
        .catalog()
        .get(&model)
        .map(|e| e.manifest.labels.clone())
        .unwrap_or_default();
    let mut inputs = vec![json!({"name": "IMAGE", "datatype": "BYTES", "shape": [-1]})];
    // The raw network too, for another modeldock using this one as its backend.
    if let Some(e) = state
        .engine
        .catalog()
        .get(&model)
        .filter(|e| e.manifest.arch.serves_network())
    {
        let s = e.manifest.input_size;
        inputs.push(json!({"name": super::network::NETWORK_INPUT, "datatype": "FP32", "shape": [1, 3, s, s]}));
        outputs.push(json!({"name": super::network::NETWORK_OUTPUT, "datatype": "FP32", "shape": [-1]}));
    }
    Ok(Json(json!({
        "name": model,
        "versions": ["1"],
        "platform": "modeldock",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"labels": labels.join(",")},
    })))
}

pub async fn model_ready(AxState(state): AxState<State>, Path(model): Path<String>) -> Response {
    if let Err(e) = known(&state, &model) {
        return e.into_response();
    }
    match state.status(&model) {
        Some(s) if s.state == ModelState::Resident => Json(json!({"name": model, "ready": true})).into_response(),
        Some(s) => ApiError::unavailable(format!("model '{model}' is not ready ({})", s.state)).into_response(),
        None => ApiError::unavailable(format!("model '{model}' is not ready")).into_response(),
    }
}

fn triton_state(s: &ModelStatus) -> (&'static str, String) {
    match s.state {
        ModelState::Resident => ("READY", String::new()),
        ModelState::Loading => ("LOADING", String::new()),
        ModelState::Unloading => ("UNLOADING", String::new()),
        ModelState::Available => ("UNAVAILABLE", "unloaded".to_string()),
        ModelState::Failed => ("UNAVAILABLE", s.failed_reason.clone().unwrap_or_default()),
    }
}

/// `POST /v2/repository/index` (body optional: `{"ready": true}` lists only ready models).
pub async fn repository_index(AxState(state): AxState<State>, body: axum::body::Bytes) -> ApiResult<Json<Value>> {
    let only_ready = if body.is_empty() {
        false
    } else {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("repository index body is not JSON: {e}")))?;
        v.get("ready").and_then(Value::as_bool).unwrap_or(false)
    };
    let snap = state.engine.snapshot();
    let list: Vec<Value> = snap
        .models
        .iter()
        .filter(|m| !only_ready || m.state == ModelState::Resident)
        .map(|m| {
            let (st, reason) = triton_state(m);
            json!({"name": m.id, "version": "1", "state": st, "reason": reason})
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `POST /v2/repository/models/{name}/load`: answers once the model is resident.
pub async fn repository_load(AxState(state): AxState<State>, Path(model): Path<String>) -> ApiResult<Response> {
    known(&state, &model)?;
    let engine = state.engine.clone();
    let m = model.clone();
    let timeout = state.options.timeout;
    match command_and_wait(&state, &model, move || engine.load(&m), is_resident, true, timeout).await? {
        Waited::Done(_) => Ok(StatusCode::OK.into_response()),
        Waited::Failed(e) => Err(ApiError::bad_request(format!("failed to load '{model}': {e}"))),
        Waited::TimedOut(_) => Err(ApiError::unavailable(format!(
            "'{model}' is still loading after {} s",
            timeout.as_secs()
        ))),
    }
}

/// `POST /v2/repository/models/{name}/unload`: answers once it has left memory
/// (a model with requests in flight leaves when they finish).
pub async fn repository_unload(AxState(state): AxState<State>, Path(model): Path<String>) -> ApiResult<Response> {
    known(&state, &model)?;
    let engine = state.engine.clone();
    let m = model.clone();
    let timeout = state.options.timeout;
    match command_and_wait(&state, &model, move || engine.unload(&m), is_out, false, timeout).await? {
        Waited::Done(_) => Ok(StatusCode::OK.into_response()),
        Waited::Failed(e) => Err(ApiError::bad_request(e)),
        Waited::TimedOut(_) => Err(ApiError::unavailable(format!(
            "'{model}' is still busy after {} s; it will leave when its requests finish",
            timeout.as_secs()
        ))),
    }
}

fn stats_json(model: &str, s: &ModelStats) -> Value {
    json!({
        "name": model,
        "version": "1",
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": s.success,
            "fail": s.fail,
            "queue": s.queue,
            "compute_input": s.compute_input,
            "compute_infer": s.compute_infer,
            "compute_output": s.compute_output,
            "cache_hit": s.cache_hit,
            "cache_miss": s.cache_miss,
        },
        "batch_stats": [],
    })
}

/// `GET /v2/models/{name}/stats`.
pub async fn model_stats(AxState(state): AxState<State>, Path(model): Path<String>) -> ApiResult<Json<Value>> {
    known(&state, &model)?;
    let s = state.stats_of(&model);
    Ok(Json(json!({"model_stats": [stats_json(&model, &s)]})))
}

/// `GET /v2/models/stats`: every model.
pub async fn all_stats(AxState(state): AxState<State>) -> Json<Value> {
    let list: Vec<Value> = state
        .engine
        .catalog()
        .entries
        .iter()
        .map(|e| stats_json(&e.manifest.id, &state.stats_of(&e.manifest.id)))
        .collect();
    Json(json!({"model_stats": list}))
}
