//! `POST /v2/models/{name}/infer`: N encoded images in, one answer per image
//! out. One bad image fails only its own element; a full queue is a 503.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::oneshot;

use super::error::{ApiError, ApiResult};
use super::state::State;
use super::v2::{keypoint_count, makes_masks};
use super::ClientId;
use crate::engine::scheduler::{Class, Ticket};
use crate::engine::{Answer, ImageInput, InferError, Reply};
use crate::v2::body::Encoded;
use crate::v2::head::{Head, Kind};
use crate::v2::image_infer::{self as tensors, OutputTensor, TensorData};
use crate::v2::HEADER_LENGTH;
use crate::vision::hand_roi::HandRegions;
use crate::vision::prompt::Prompts;
use crate::vision::InferParams;

/// Cancels the requests still listed when dropped.
struct CancelOnDrop {
    engine: crate::engine::Engine,
    ids: Vec<crate::engine::residency::RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.engine.cancel(std::mem::take(&mut self.ids));
    }
}

pub async fn infer(
    AxState(state): AxState<State>,
    Path(model): Path<String>,
    Extension(client): Extension<ClientId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let catalog = state.engine.catalog();
    let Some(entry) = catalog.get(&model) else {
        return Err(ApiError::unknown_model(&model));
    };
    let labels = entry.manifest.labels.clone();
    let header_len = match headers.get(HEADER_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("{} is not text", crate::v2::HEADER_LENGTH_NAME)))?,
        ),
        None => None,
    };
    let (head, tail) = tensors::split_body(&body, header_len)?;
    let head = Head::parse(head, Kind::Request)?;
    if let Some(x) = super::network::network_input(&head, tail)? {
        return super::network::infer(state, model, x, header_len.is_some()).await;
    }
    if !entry.manifest.inputs.is_empty() {
        return super::network::infer_raw(state, model, &head, tail, header_len.is_some()).await;
    }
    let mut req = tensors::image_request(head, tail)?;
    let n = req.images.len();
    let (permits, client_permits) = admit(&state, &client.0, &model, n)?;
    let hand_regions = match req.hand_regions.as_deref() {
        Some(t) => Some(HandRegions::parse_param(t).map_err(ApiError::bad_request)?),
        None => None,
    };
    let prompts = Prompts::from_sets(&req.prompts).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if prompts.is_some() && !entry.manifest.arch.takes_prompts() {
        return Err(ApiError::bad_request(format!(
            "model '{model}' (arch {}) takes no prompts: send only 'IMAGE'",
            entry.manifest.arch
        )));
    }
    let params = InferParams {
        conf: req.conf,
        iou: req.iou,
        hand_regions,
        prompts,
    };
    // One image is interactive (a click, a frame); more are a batch.
    let class = if n == 1 { Class::Interactive } else { Class::Bulk };
    let ticket = Ticket::new(client.0, class, req.priority).with_timeout(req.timeout_us.map(|us| us.div_ceil(1000)));
    let started = Instant::now();
    let mut waits = Vec::with_capacity(n);
    // A client that goes away drops this future: its images that have not
    // started are cancelled.
    let mut cancel = CancelOnDrop {
        engine: state.engine.clone(),
        ids: Vec::with_capacity(n),
    };
    for (i, bytes) in std::mem::take(&mut req.images).into_iter().enumerate() {
        let name = req.names.get(i).cloned().unwrap_or_else(|| format!("IMAGE[{i}]"));
        let (tx, rx) = oneshot::channel::<Answer>();
        let input = ImageInput::Bytes {
            name: name.clone(),
            bytes: Arc::new(bytes),
        };
        let reply = Reply::callback(move |a| {
            let _ = tx.send(a);
        });
        match state.engine.try_infer_as(&model, input, params, reply, ticket.clone()) {
            Ok(id) => {
                cancel.ids.push(id);
                waits.push((name, Some(rx)));
            }
            Err((e, _reply)) => {
                waits.push((name.clone(), None));
                tracing::warn!("{model}: {name}: {e}");
            }
        }
    }
    let (answers, results, timed_out) = gather(&state, &model, class, started, waits).await;
    cancel.ids.clear();
    drop(permits);
    drop(client_permits);
    // Nothing started before its queue timeout: the request as a whole is
    // refused, as Triton's queue policy does, so a client can back off.
    if n > 0 && timed_out == n {
        let first = answers
            .iter()
            .find_map(|a| a.as_ref().err())
            .cloned()
            .unwrap_or_default();
        return Err(ApiError::overloaded(first));
    }
    let k = keypoint_count(&state, &model);
    let masks = makes_masks(&state, &model) || results.iter().flatten().any(|r| !r.output.masks.is_empty());
    respond(&model, &req, &answers, &results, &labels, (k, masks))
}

/// The client's and the server's permits for `n` images, or 503 naming the
/// limit that refused them (each image counts as a failure).
fn admit(
    state: &State,
    client: &str,
    model: &str,
    n: usize,
) -> ApiResult<(tokio::sync::OwnedSemaphorePermit, super::state::ClientPermits)> {
    let refuse = |why: String| {
        for _ in 0..n {
            state.metrics.record_fail(model);
        }
        ApiError::overloaded(why)
    };
    let client_permits = super::state::Shared::client_permits(state, client, n).map_err(|held| {
        refuse(format!(
            "this client has {held} images queued and asks for {n} more; one client may have at most {} waiting (--max-queue-per-client); retry when some are answered",
            state.options.max_queue_per_client
        ))
    })?;
    let permits = state.queue.clone().try_acquire_many_owned(n as u32).map_err(|_| {
        refuse(format!(
            "server is busy: {} requests queued (limit {}); retry shortly",
            state.options.max_queue - state.queue.available_permits(),
            state.options.max_queue
        ))
    })?;
    Ok((permits, client_permits))
}

type Waits = Vec<(String, Option<oneshot::Receiver<Answer>>)>;
type Gathered = (
    Vec<Result<Value, String>>,
    Vec<Option<crate::engine::InferResult>>,
    usize,
);

/// Waits for each image's answer (bounded by the server's timeout) and
/// records it: the answers as JSON or an error, the results, and how many
/// timed out in the queue.
async fn gather(state: &State, model: &str, class: Class, started: Instant, waits: Waits) -> Gathered {
    let n = waits.len();
    let deadline = tokio::time::Instant::now() + state.options.timeout;
    let mut answers: Vec<Result<Value, String>> = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut timed_out = 0;
    for (name, rx) in waits {
        let a = match rx {
            None => Err("engine queue is full or stopped; retry".to_string()),
            Some(rx) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(a)) => a.map_err(|e: InferError| {
                    timed_out += usize::from(e.timed_out);
                    e.error
                }),
                Ok(Err(_)) => Err("engine stopped before answering".to_string()),
                Err(_) => Err(format!("no answer within {} s", state.options.timeout.as_secs())),
            },
        };
        match a {
            Ok(r) => {
                state.metrics.record_ok(model, &r.timings, r.output.cached);
                state.metrics.record_queue(class.as_str(), r.timings.queue);
                state.stats_mut(model, |s| s.record_ok(&r.timings, r.output.cached));
                answers.push(Ok(r.to_json()));
                results.push(Some(r));
            }
            Err(e) => {
                state.metrics.record_fail(model);
                let ms = started.elapsed().as_secs_f64() * 1e3;
                state.stats_mut(model, |s| s.record_fail(ms));
                answers.push(Err(e.clone()));
                results.push(None);
                let _ = name;
            }
        }
    }
    (answers, results, timed_out)
}

/// The v2 response: DETECTIONS (one JSON per image, or its error), the
/// numeric tensors and, with `masks`, MASKS when the request wants it
/// (binary when asked); `shape` is the keypoint count and whether the
/// model's answers carry masks.
fn respond(
    model: &str,
    req: &tensors::InferRequest,
    answers: &[Result<Value, String>],
    results: &[Option<crate::engine::InferResult>],
    labels: &[String],
    (k, masks): (usize, bool),
) -> ApiResult<Response> {
    let detections: Vec<Vec<u8>> = answers
        .iter()
        .zip(results)
        .enumerate()
        .map(|(i, (a, _))| {
            let v = match a {
                Ok(v) => v.clone(),
                Err(e) => serde_json::json!({
                    "image": req.names.get(i).cloned().unwrap_or_else(|| format!("IMAGE[{i}]")),
                    "error": e
                }),
            };
            v.to_string().into_bytes()
        })
        .collect();
    let mut tensors = numeric_outputs(detections, results, labels, k);
    let wants_masks = req.outputs.is_empty() || req.outputs.iter().any(|(n, _)| n == "MASKS");
    if masks && wants_masks {
        tensors.push(super::masks::masks_output(results).map_err(ApiError::bad_request)?);
    }
    Ok(encoded_response(tensors::encode_response(
        model,
        req.id.as_deref(),
        tensors,
        &req.outputs,
        req.binary_default,
    )))
}

/// A v2 message as an HTTP response: its content type and, with a binary
/// part, `Inference-Header-Content-Length`.
pub(super) fn encoded_response(enc: Encoded) -> Response {
    let content_type = enc.content_type();
    let mut resp = enc.body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(len) = enc.header_length {
        h.insert(HEADER_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// The tensors of one batch: DETECTIONS, then BOXES [N,D,4], SCORES [N,D],
/// CLASS_IDS [N,D], COUNTS [N] and, for keypoint models, KEYPOINTS [N,D,K,3];
/// D is the largest detection count, padding is zeros.
fn numeric_outputs(
    detections: Vec<Vec<u8>>,
    results: &[Option<crate::engine::InferResult>],
    labels: &[String],
    k: usize,
) -> Vec<OutputTensor> {
    let n = results.len();
    let d = results
        .iter()
        .map(|r| r.as_ref().map(|r| r.output.detections.len()).unwrap_or(0))
        .max()
        .unwrap_or(0);
    let mut boxes = vec![0f32; n * d * 4];
    let mut scores = vec![0f32; n * d];
    let mut class_ids = vec![0i32; n * d];
    let mut counts = vec![0i32; n];
    let mut kps = vec![0f32; n * d * k * 3];
    for (i, r) in results.iter().enumerate() {
        let Some(r) = r else { continue };
        counts[i] = r.output.detections.len() as i32;
        for (j, det) in r.output.detections.iter().enumerate() {
            let at = i * d + j;
            boxes[at * 4..at * 4 + 4].copy_from_slice(&det.bbox);
            scores[at] = det.score;
            class_ids[at] = labels
                .iter()
                .position(|l| *l == det.label)
                .map(|p| p as i32)
                .unwrap_or(-1);
            for (p, kp) in det.keypoints.iter().take(k).enumerate() {
                let o = (at * k + p) * 3;
                kps[o..o + 3].copy_from_slice(kp);
            }
        }
    }
    let mut out = vec![
        OutputTensor {
            name: "DETECTIONS",
            shape: vec![n],
            data: TensorData::Bytes(detections),
        },
        OutputTensor {
            name: "BOXES",
            shape: vec![n, d, 4],
            data: TensorData::F32(boxes),
        },
        OutputTensor {
            name: "SCORES",
            shape: vec![n, d],
            data: TensorData::F32(scores),
        },
        OutputTensor {
            name: "CLASS_IDS",
            shape: vec![n, d],
            data: TensorData::I32(class_ids),
        },
        OutputTensor {
            name: "COUNTS",
            shape: vec![n],
            data: TensorData::I32(counts),
        },
    ];
    if k > 0 {
        out.push(OutputTensor {
            name: "KEYPOINTS",
            shape: vec![n, d, k, 3],
            data: TensorData::F32(kps),
        });
    }
    out
}
