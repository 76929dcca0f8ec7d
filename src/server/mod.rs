//! `modeldock serve`: the engine over HTTP, so every process on the machine
//! shares one resident copy of each model. This room only translates: HTTP
//! requests become engine commands, engine events become responses. Policy
//! stays in the engine's residency.
//!
//! Speaks the Open Inference Protocol v2 (KServe v2 / Triton HTTP, with the
//! binary tensor, model repository and statistics extensions), modeldock's
//! residency API (`/api/*`) and Prometheus metrics (`/metrics`).

pub mod api;
pub mod error;
pub mod events;
pub mod infer;
pub mod masks;
pub mod metrics;
pub mod network;
pub mod security;
pub mod state;
pub mod v2;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State as AxState};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{broadcast, oneshot, Semaphore};

use crate::engine::Engine;
use crate::error::{Error, Result};
use error::ApiError;
pub use state::ServerOptions;
use state::{Shared, State};

/// modeldock's default port: not Triton's (8000–8002), not Ollama's (11434).
pub use crate::setup::DEFAULT_PORT;

/// The routes, over shared state.
pub fn router(state: State) -> Router {
    let max_body = state.options.max_body;
    Router::new()
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/stats", get(v2::all_stats))
        .route("/v2/models/{model}", get(v2::model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(v2_versioned_metadata))
        .route("/v2/models/{model}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(v2_versioned_infer))
        .route("/v2/models/{model}/stats", get(v2::model_stats))
        .route("/v2/repository/index", post(v2::repository_index))
        .route("/v2/repository/models/{model}/load", post(v2::repository_load))
        .route("/v2/repository/models/{model}/unload", post(v2::repository_unload))
        .route("/api/ps", get(api::ps))
        .route("/api/snapshot", get(api::snapshot))
        .route("/api/load", post(api::load))
        .route("/api/unload", post(api::unload))
        .route("/api/pin", post(api::pin))
        .route("/api/events", get(api::events_stream))
        .route("/metrics", get(api::metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn v2_versioned_metadata(
    st: AxState<State>,
    axum::extract::Path((model, _v)): axum::extract::Path<(String, String)>,
) -> impl IntoResponse {
    v2::model_metadata(st, axum::extract::Path(model)).await
}

async fn v2_versioned_infer(
    st: AxState<State>,
    axum::extract::Path((model, _v)): axum::extract::Path<(String, String)>,
    client: axum::extract::Extension<ClientId>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    infer::infer(st, axum::extract::Path(model), client, headers, body).await
}

/// Who sent a request, for the scheduler's fair share: the connection's
/// address (`guard` sets it on every request).
#[derive(Debug, Clone)]
pub struct ClientId(pub String);

/// Every request: the `Host` and `Origin` checks, the body's media type,
/// the API key and its scope when keys are set, and a time limit for the
/// whole exchange (a slow client that never finishes its body gets 408). The
/// event stream is exempt from the time limit. A refusal changes nothing.
async fn guard(AxState(state): AxState<State>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "http".to_string());
    req.extensions_mut().insert(ClientId(peer));
    let access = &state.options.access;
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if state.loopback && !security::host_allowed(host, &access.allowed_hosts) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host '{}' is not this server's name (a loopback server answers to localhost, 127.0.0.1 and [::1]; add names with MODELDOCK_ALLOWED_HOSTS)",
                host.unwrap_or_default()
            ),
        )
        .into_response();
    }
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(o)) if security::origin_allowed(o, &access.allowed_origins) => Some(o.to_string()),
        Some(o) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Origin '{}' is not allowed (loopback pages only; add origins with MODELDOCK_ORIGINS)",
                    o.unwrap_or("?")
                ),
            )
            .into_response()
        }
    };
    if req.method() == axum::http::Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Some(o) = &origin {
            security::cors_headers(r.headers_mut(), o, true);
        }
        return r;
    }
    if let Err(e) = security::body_type_ok(req.method(), headers)
        .and_then(|_| security::authorise(access, headers, security::scope_of(req.method(), req.uri().path())))
    {
        return e.into_response();
    }
    let mut r = if req.uri().path() == "/api/events" {
        next.run(req).await
    } else {
        let limit = state.options.timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("request not completed within {} s", limit.as_secs()),
            )
            .into_response(),
        }
    };
    if let Some(o) = &origin {
        security::cors_headers(r.headers_mut(), o, false);
    }
    r
}

fn shared(engine: Engine, options: ServerOptions, loopback: bool) -> State {
    let (events, _) = broadcast::channel(1024);
    let state = Arc::new(Shared {
        loopback,
        queue: Arc::new(Semaphore::new(options.max_queue)),
        per_client: Default::default(),
        engine,
        options,
        stats: Mutex::new(BTreeMap::new()),
        metrics: metrics::Metrics::new(),
        events,
        closing: tokio::sync::watch::channel(false).0,
    });
    events::spawn_forwarder(state.clone());
    state
}

/// A server running on its own thread (the app, tests).
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Stops accepting, lets requests in flight finish (bounded), and joins.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("modeldock-http")
        // Idle HTTP threads leave a block of their arena, so the engine
        // hands that arena's free top back with its own (`engine::arenas`).
        .on_thread_park(crate::engine::arenas::arm)
        .enable_all()
        .build()
        .map_err(|e| Error::msg(format!("cannot start the HTTP runtime: {e}")))
}

/// Binds `addr`, naming the address and the likely cause when it is taken.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            Error::unavailable(format!(
                "{addr} is in use (is another modeldock serving? try `modeldock ps`); pick another with --port"
            ))
        } else {
            Error::msg(format!("cannot listen on {addr}: {e}"))
        }
    })?;
    l.set_nonblocking(true)
        .map_err(|e| Error::msg(format!("cannot listen on {addr}: {e}")))?;
    Ok(l)
}

/// Serves `engine` on `listener` from a background thread.
pub fn start(engine: Engine, options: ServerOptions, listener: std::net::TcpListener) -> Result<ServerHandle> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::msg(format!("cannot read the listening address: {e}")))?;
    let rt = runtime()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("modeldock-server".into())
        .spawn(move || {
            let drain = options.drain;
            let state = shared(engine, options, addr.ip().is_loopback());
            rt.block_on(async move {
                if let Err(e) = serve_until(
                    listener,
                    state,
                    async {
                        let _ = stop_rx.await;
                    },
                    drain,
                )
                .await
                {
                    tracing::error!("server on {addr}: {e}");
                }
            });
        })
        .map_err(|e| Error::msg(format!("cannot start the server thread: {e}")))?;
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn serve_until(
    listener: std::net::TcpListener,
    state: State,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<()> {
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| Error::msg(format!("cannot listen: {e}")))?;
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    let app = router(state.clone());
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop.await;
        let _ = state.closing.send(true);
        let _ = drained_tx.send(());
    });
    let server = async move { server.await.map_err(|e| Error::msg(format!("server: {e}"))) };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        _ = async {
            let _ = drained_rx.await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!("requests still in flight after {} s; stopping anyway", drain.as_secs());
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {},
                    _ = t.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves on this thread until SIGINT / SIGTERM, then lets requests in
/// flight finish (bounded by `options.drain`) and stops the engine.
pub fn run_until_signal(engine: Engine, options: ServerOptions, listener: std::net::TcpListener) -> Result<()> {
    let rt = runtime()?;
    let drain = options.drain;
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let state = shared(engine.clone(), options, loopback);
    let r = rt.block_on(serve_until(listener, state, shutdown_signal(), drain));
    engine.shutdown();
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}
