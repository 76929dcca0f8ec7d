//! Starting the desktop app from its flags: `main`'s half for the window.
//!
//! If a modeldock server answers (at `MODELDOCK_HOST` or the default address,
//! or `--remote`), the app attaches to it and its panels steer that engine.
//! Otherwise it starts its own engine and, unless `--no-serve`, serves the
//! same API on loopback while it runs, so `modeldock ps` in a terminal shows
//! what the app holds.

use std::net::SocketAddr;
use std::time::Duration;

use tracing_subscriber::Layer;

use crate::cli::args::AppArgs;
use crate::client::{self, Client, Door, LateWake};
use crate::engine::Engine;
use crate::error::Result;
use crate::server::{self, ServerOptions};
use crate::ui::log_capture::{CaptureLayer, LogBuffer};
use crate::ui::AppOptions;

/// Runs the app; returns the exit code.
pub fn run(a: AppArgs) -> i32 {
    match launch(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn loopback_addr(base: &str) -> Option<SocketAddr> {
    let hostport = base.split_once("://").map(|(_, r)| r).unwrap_or(base);
    let addr: SocketAddr = hostport.parse().ok()?;
    addr.ip().is_loopback().then_some(addr)
}

fn launch(a: AppArgs) -> Result<i32> {
    let log = LogBuffer::default();
    crate::logging::init(
        "warn",
        Some(CaptureLayer(log.clone()).with_filter(tracing_subscriber::filter::LevelFilter::DEBUG)),
    );
    let wake = LateWake::default();
    let registry = a.engine.registry();
    a.server.apply_remote_headers(a.remote.as_deref())?;
    let mut server_handle = None;
    let door = match &a.remote {
        Some(url) => client::choose(Some(url), true)?,
        None => client::choose(a.server.server.as_deref(), false)?,
    };
    let client = match door {
        Door::Own { base } => {
            let engine = Engine::start(registry.clone(), a.engine.config_or_cpu()?, Some(wake.as_wake()));
            if !a.no_serve {
                server_handle = serve_in_background(&engine, &base);
            }
            Client::local(engine)
        }
        door => {
            if let Door::Modeldock(http) = &door {
                tracing::info!("attached to the modeldock server at {}", http.base);
            }
            client::open(door, &a.engine, Some(wake.as_wake()), a.remote_metrics.clone())?
        }
    };
    let problems = match client.attached_server() {
        Some(a) => a.registry.problems.clone(),
        None => registry.problems.clone(),
    };
    let opts = AppOptions {
        client: client.clone(),
        problems,
        open: a.open.clone(),
        model: a.model.clone(),
        telemetry: !a.no_telemetry,
        log,
        live: a.live.clone(),
        exit_after: a.exit_after.map(Duration::from_secs_f64),
        wake,
    };
    let r = crate::ui::run(opts);
    if let Some(h) = server_handle {
        h.shutdown();
    }
    client.shutdown();
    r.map(|_| 0)
}

/// Serves the app's engine on `base` when it is a loopback address that is free.
fn serve_in_background(engine: &Engine, base: &str) -> Option<server::ServerHandle> {
    let addr = loopback_addr(base)?;
    let options = ServerOptions {
        access: server::security::Access::from_env(),
        ..ServerOptions::default()
    };
    match server::bind(addr).and_then(|l| server::start(engine.clone(), options, l)) {
        Ok(h) => {
            tracing::info!("serving this app's engine on http://{}", h.addr);
            Some(h)
        }
        Err(e) => {
            tracing::warn!("not serving the engine's API: {e}");
            None
        }
    }
}
