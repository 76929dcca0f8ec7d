//! Engine events for HTTP: one thread forwards the engine's event stream into
//! a broadcast channel (counting loads for the metrics on the way); handlers
//! wait on it for loads and unloads, and `/api/events` streams it as SSE.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::state::State;
use crate::engine::event_json::describe;
use crate::engine::{Event, ModelState, ModelStatus};

/// Starts the forwarding thread; it ends when the engine stops.
pub fn spawn_forwarder(state: State) {
    let rx = state.engine.subscribe(4096);
    let spawned = std::thread::Builder::new()
        .name("modeldock-http-events".into())
        .spawn(move || {
            while let Ok(ev) = rx.recv() {
                if let Event::Loaded { model, load_ms, .. } = &ev {
                    state.metrics.record_load(model, *load_ms);
                }
                // No receivers is fine: nobody is listening right now.
                let _ = state.events.send(ev);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the HTTP event thread: {e}");
    }
}

/// `GET /api/events`: Server-Sent Events until the client goes away.
pub fn sse(state: &State) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = state.events.subscribe();
    let closing = state.closing.subscribe();
    let stream = futures_util::stream::unfold((rx, closing), |(mut rx, mut closing)| async move {
        loop {
            if *closing.borrow() {
                return None;
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if let Some((name, body)) = describe(&ev) {
                            let e = SseEvent::default().event(name).data(body.to_string());
                            return Some((Ok(e), (rx, closing)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = closing.changed() => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// How a wait for a model ended.
pub enum Waited {
    Done(ModelStatus),
    Failed(String),
    TimedOut(Option<ModelStatus>),
}

/// Sends `command` and waits until `done` holds for the model's status, or a
/// `LoadFailed` for it arrives, or `timeout` passes. Subscribes before
/// sending, so no event is missed.
pub async fn command_and_wait(
    state: &State,
    model: &str,
    command: impl FnOnce() -> crate::error::Result<()>,
    done: impl Fn(&ModelStatus) -> bool,
    watch_failures: bool,
    timeout: Duration,
) -> crate::error::Result<Waited> {
    let mut rx = state.events.subscribe();
    command()?;
    let end = Instant::now() + timeout;
    loop {
        let status = state.status(model);
        if let Some(s) = &status {
            if done(s) {
                return Ok(Waited::Done(s.clone()));
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Waited::TimedOut(status));
        }
        match tokio::time::timeout(left.min(Duration::from_millis(50)), rx.recv()).await {
            Ok(Ok(Event::LoadFailed { model: m, error })) if watch_failures && m == model => {
                return Ok(Waited::Failed(error));
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err(crate::error::Error::unavailable("engine has stopped"));
            }
            _ => {}
        }
    }
}

pub fn is_resident(s: &ModelStatus) -> bool {
    s.state == ModelState::Resident
}

pub fn is_out(s: &ModelStatus) -> bool {
    matches!(s.state, ModelState::Available | ModelState::Failed)
}
