//! How the CLI and the app reach an engine: in this process, or a modeldock
//! server over HTTP (`MODELDOCK_HOST`). Panels hold a [`Client`] and never
//! know which one they have.

pub mod http;
pub mod remote;
pub mod v2_server;

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};

pub use http::{base_url, HttpClient};
pub use remote::RemoteEngine;

use crate::engine::{Answer, Engine, Event, ImageInput, InferError, KeepAlive, RequestId, Snapshot, WakeFn};
use crate::error::Result;
use crate::vision::InferParams;

#[derive(Clone)]
pub enum Client {
    Local(Engine),
    Remote(RemoteEngine),
    /// A local engine whose models run their networks on a v2 server that
    /// is not modeldock (Triton, KServe, MLServer): `--remote URL`.
    Attached(Engine, Arc<v2_server::Attached>),
}

impl Client {
    /// Sends a request whose answer arrives as [`Event::Answer`].
    pub fn infer(&self, model: &str, input: ImageInput, params: InferParams) -> Result<RequestId> {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.infer(model, input, params),
            Client::Remote(r) => Ok(r.infer(model, input, params, None)),
        }
    }

    pub fn load(&self, model: &str) -> Result<()> {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.load(model),
            Client::Remote(r) => {
                r.load(model);
                Ok(())
            }
        }
    }

    pub fn unload(&self, model: &str) -> Result<()> {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.unload(model),
            Client::Remote(r) => {
                r.unload(model);
                Ok(())
            }
        }
    }

    /// Registers a model found after start (an imported checkpoint). A
    /// server reads its model folders when it starts.
    pub fn register(&self, entry: crate::catalog::registry::Entry) -> Result<()> {
        match self {
            Client::Local(e) => e.register(entry),
            Client::Attached(..) => Err(crate::error::Error::unavailable(format!(
                "{} was written to {}; the app is attached to a v2 server and lists that server's models",
                entry.manifest.id, entry.origin
            ))),
            Client::Remote(_) => Err(crate::error::Error::unavailable(format!(
                "{} was written to {}; the server reads its model folders when it starts: restart it to serve this model",
                entry.manifest.id, entry.origin
            ))),
        }
    }

    pub fn pin(&self, model: &str, pinned: bool) -> Result<()> {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.pin(model, pinned),
            Client::Remote(r) => {
                r.pin(model, pinned);
                Ok(())
            }
        }
    }

    pub fn set_keep_alive(&self, model: &str, ka: Option<KeepAlive>) -> Result<()> {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.set_keep_alive(model, ka),
            Client::Remote(r) => {
                r.set_keep_alive(model, ka);
                Ok(())
            }
        }
    }

    pub fn events(&self) -> &Receiver<Event> {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.events(),
            Client::Remote(r) => r.events(),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.snapshot(),
            Client::Remote(r) => r.snapshot(),
        }
    }

    /// Where the engine is, for the status bar: `in this process` or the server's URL.
    pub fn location(&self) -> String {
        match self {
            Client::Local(_) => "in this process".to_string(),
            Client::Attached(_, a) => match a.client.unreachable() {
                Some(why) => format!("{} at {} — {why}", a.server_name, a.client.base()),
                None => format!("{} at {}", a.server_name, a.client.base()),
            },
            Client::Remote(r) => match r.unreachable() {
                Some(why) => format!("{} — {why}", r.base()),
                None => r.base().to_string(),
            },
        }
    }

    pub fn shutdown(&self) {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.shutdown(),
            Client::Remote(r) => r.shutdown(),
        }
    }
}

impl crate::engine::InferWait for Client {
    fn infer_wait(&self, model: &str, input: ImageInput, params: InferParams) -> Answer {
        match self {
            Client::Local(e) | Client::Attached(e, _) => e.infer_wait(model, input, params),
            Client::Remote(r) => {
                let (tx, rx) = bounded(1);
                let image = input.name();
                let id = r.infer(model, input, params, Some(tx));
                rx.recv().unwrap_or_else(|_| {
                    Err(InferError {
                        request_id: id,
                        model: model.to_string(),
                        image,
                        error: "the connection to the server ended before an answer".to_string(),
                        timed_out: false,
                    })
                })
            }
        }
    }
}

/// A wake function that can be filled in later (the window's repaint, once it exists).
#[derive(Clone, Default)]
pub struct LateWake(std::sync::Arc<std::sync::OnceLock<WakeFn>>);

impl LateWake {
    pub fn set(&self, f: WakeFn) {
        let _ = self.0.set(f);
    }

    pub fn as_wake(&self) -> WakeFn {
        let slot = self.0.clone();
        std::sync::Arc::new(move || {
            if let Some(f) = slot.get() {
                f();
            }
        })
    }
}
