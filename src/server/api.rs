//! modeldock's own residency API beside v2 (in the spirit of Ollama's
//! `/api/ps`): what is in memory, load / unload / pin, the full snapshot for
//! the app, and the event stream.

use std::time::{Duration, SystemTime};

use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::events::{self, command_and_wait, is_out, is_resident, Waited};
use super::state::State;
use crate::engine::ModelStatus;
use crate::units::KeepAlive;

fn expires_at(m: &ModelStatus) -> Option<String> {
    let left = m.keep_alive_left_ms?;
    let t = SystemTime::now() + Duration::from_millis(left);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// One `/api/ps` row.
pub fn ps_row(m: &ModelStatus) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "state": m.state,
        "predicted_bytes": m.predicted_bytes,
        "measured_bytes": m.measured_bytes,
        "bytes_done": m.bytes_done,
        "bytes_total": m.bytes_total,
        "device": m.device,
        "pinned": m.pinned,
        "keep_alive": m.keep_alive,
        "expires_at": expires_at(m),
        "in_flight": m.in_flight,
        "waiting": m.waiting,
        "loads": m.loads,
    })
}

/// `GET /api/ps`: loading and resident models, and where the process's
/// memory is beside them (`memory`: the cache, scratch buffers, the heap, RSS).
pub async fn ps(AxState(state): AxState<State>) -> Json<Value> {
    let snap = state.engine.snapshot();
    let models: Vec<Value> = snap.models.iter().filter(|m| m.state.in_memory()).map(ps_row).collect();
    let memory = crate::engine::memory::report(&snap);
    Json(json!({"models": models, "budget_bytes": snap.budget_bytes, "used_bytes": snap.used_bytes, "memory": memory}))
}

/// `GET /api/snapshot`: everything the app's panels draw.
pub async fn snapshot(AxState(state): AxState<State>) -> Json<crate::engine::Snapshot> {
    Json(state.engine.snapshot())
}

#[derive(Deserialize)]
pub struct LoadBody {
    pub model: String,
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub pin: Option<bool>,
    /// Answer once the model is resident (default) or at once.
    #[serde(default)]
    pub wait: Option<bool>,
    /// Say what the load would do, changing nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

fn known(state: &State, model: &str) -> ApiResult<()> {
    state
        .engine
        .catalog()
        .get(model)
        .map(|_| ())
        .ok_or_else(|| ApiError::unknown_model(model))
}

/// `POST /api/load {"model", "keep_alive"?, "pin"?, "wait"?}`.
pub async fn load(AxState(state): AxState<State>, body: axum::body::Bytes) -> ApiResult<Response> {
    let b: LoadBody = parse_body(&body)?;
    known(&state, &b.model)?;
    if b.dry_run {
        if b.keep_alive.is_some() || b.pin.is_some() {
            return Err(ApiError::bad_request(
                "dry_run changes nothing: drop keep_alive and pin",
            ));
        }
        let engine = state.engine.clone();
        let model = b.model.clone();
        let plan = tokio::task::spawn_blocking(move || engine.plan_load(&model))
            .await
            .map_err(|e| ApiError::unavailable(format!("dry run: {e}")))??;
        return Ok(Json(plan).into_response());
    }
    if let Some(ka) = &b.keep_alive {
        let text = match ka {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "keep_alive: expected a duration, got {other}"
                )))
            }
        };
        let k = KeepAlive::parse(&text)
            .ok_or_else(|| ApiError::bad_request(format!("keep_alive '{text}': expected 5m, 30s, 0 or -1")))?;
        state.engine.set_keep_alive(&b.model, Some(k))?;
    }
    if let Some(p) = b.pin {
        state.engine.pin(&b.model, p)?;
    }
    if b.wait == Some(false) {
        state.engine.load(&b.model)?;
        return Ok(Json(json!({"model": b.model, "state": "Loading"})).into_response());
    }
    let engine = state.engine.clone();
    let m = b.model.clone();
    let timeout = state.options.timeout.max(Duration::from_secs(600));
    match command_and_wait(&state, &b.model, move || engine.load(&m), is_resident, true, timeout).await? {
        Waited::Done(s) => Ok(Json(ps_row(&s)).into_response()),
        Waited::Failed(e) => Err(ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, e)),
        Waited::TimedOut(_) => Err(ApiError::unavailable(format!("'{}' is still loading", b.model))),
    }
}

#[derive(Deserialize)]
pub struct UnloadBody {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub all: bool,
}

/// `POST /api/unload {"model"}` or `{"all": true}`.
pub async fn unload(AxState(state): AxState<State>, body: axum::body::Bytes) -> ApiResult<Json<Value>> {
    let b: UnloadBody = parse_body(&body)?;
    let ids: Vec<String> = match (&b.model, b.all) {
        (Some(m), false) => {
            known(&state, m)?;
            vec![m.clone()]
        }
        (None, true) => state
            .engine
            .snapshot()
            .models
            .iter()
            .filter(|m| m.state.in_memory())
            .map(|m| m.id.clone())
            .collect(),
        _ => return Err(ApiError::bad_request("give either \"model\" or \"all\": true")),
    };
    let mut done = Vec::new();
    for id in ids {
        let engine = state.engine.clone();
        let m = id.clone();
        let w = command_and_wait(
            &state,
            &id,
            move || engine.unload(&m),
            is_out,
            false,
            state.options.timeout,
        )
        .await?;
        let left = matches!(w, Waited::Done(_));
        done.push(json!({"model": id, "unloaded": left}));
    }
    Ok(Json(json!({"models": done})))
}

#[derive(Deserialize)]
pub struct PinBody {
    pub model: String,
    #[serde(default = "yes")]
    pub pinned: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/pin {"model", "pinned"?}` (pinned defaults to true).
pub async fn pin(AxState(state): AxState<State>, body: axum::body::Bytes) -> ApiResult<Json<Value>> {
    let b: PinBody = parse_body(&body)?;
    known(&state, &b.model)?;
    state.engine.pin(&b.model, b.pinned)?;
    Ok(Json(json!({"model": b.model, "pinned": b.pinned})))
}

/// `GET /api/events`.
pub async fn events_stream(AxState(state): AxState<State>) -> impl IntoResponse {
    events::sse(&state)
}

/// `GET /metrics`.
pub async fn metrics(AxState(state): AxState<State>) -> Response {
    let text = state.metrics.encode(&state.engine.snapshot());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
