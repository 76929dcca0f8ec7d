//! How the CLI and the app reach an engine: in this process, or a modeldock
//! server over HTTP (`MODELDOCK_HOST`). Panels hold a [`Client`] and never
//! know which one they have.

pub mod choose;
pub mod http;
pub mod remote;
pub mod v2_server;

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};

/// The engine's types a door's callers see (the app, the CLI, live): they
/// reach the engine only through this room.
pub use crate::engine::residency::LoadPlan;
pub use crate::engine::{
    Answer, Event, ImageInput, InferError, InferResult, InferWait, KeepAlive, ModelState, ModelStatus, RemoteStatus,
    RequestId, Snapshot, WakeFn,
};
pub use choose::{choose, open, Door};
pub use http::{base_url, HttpClient};
pub use remote::RemoteEngine;

use crate::catalog::registry::Entry;
use crate::engine::Engine;
use crate::error::Result;
use crate::vision::InferParams;

/// What every door to an engine offers the app, the CLI and the live
/// pipeline: the in-process [`Engine`], a modeldock server over HTTP
/// ([`RemoteEngine`]), or a local engine whose networks run on another v2
/// server ([`AttachedEngine`]). Callers hold a [`Client`] and never ask
/// which one they have.
pub trait EngineApi: Send + Sync {
    /// Sends a request whose answer arrives as [`Event::Answer`].
    fn infer(&self, model: &str, input: ImageInput, params: InferParams) -> Result<RequestId>;
    /// Sends a request and waits for its answer.
    fn infer_wait(&self, model: &str, input: ImageInput, params: InferParams) -> Answer;
    fn load(&self, model: &str) -> Result<()>;
    fn unload(&self, model: &str) -> Result<()>;
    /// Registers a model found after start (an imported checkpoint).
    fn register(&self, entry: Entry) -> Result<()>;
    fn pin(&self, model: &str, pinned: bool) -> Result<()>;
    fn set_keep_alive(&self, model: &str, ka: Option<KeepAlive>) -> Result<()>;
    fn events(&self) -> &Receiver<Event>;
    fn snapshot(&self) -> Snapshot;
    /// Where the engine is, for the status bar: `in this process` or the server's URL.
    fn location(&self) -> String;
    fn shutdown(&self);
}

impl EngineApi for Engine {
    fn infer(&self, model: &str, input: ImageInput, params: InferParams) -> Result<RequestId> {
        Engine::infer(self, model, input, params)
    }
    fn infer_wait(&self, model: &str, input: ImageInput, params: InferParams) -> Answer {
        Engine::infer_wait(self, model, input, params)
    }
    fn load(&self, model: &str) -> Result<()> {
        Engine::load(self, model)
    }
    fn unload(&self, model: &str) -> Result<()> {
        Engine::unload(self, model)
    }
    fn register(&self, entry: Entry) -> Result<()> {
        Engine::register(self, entry)
    }
    fn pin(&self, model: &str, pinned: bool) -> Result<()> {
        Engine::pin(self, model, pinned)
    }
    fn set_keep_alive(&self, model: &str, ka: Option<KeepAlive>) -> Result<()> {
        Engine::set_keep_alive(self, model, ka)
    }
    fn events(&self) -> &Receiver<Event> {
        Engine::events(self)
    }
    fn snapshot(&self) -> Snapshot {
        Engine::snapshot(self)
    }
    fn location(&self) -> String {
        "in this process".to_string()
    }
    fn shutdown(&self) {
        Engine::shutdown(self)
    }
}

impl EngineApi for RemoteEngine {
    fn infer(&self, model: &str, input: ImageInput, params: InferParams) -> Result<RequestId> {
        Ok(self.send_infer(model, input, params, None))
    }
    fn infer_wait(&self, model: &str, input: ImageInput, params: InferParams) -> Answer {
        let (tx, rx) = bounded(1);
        let image = input.name();
        let id = self.send_infer(model, input, params, Some(tx));
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
    fn load(&self, model: &str) -> Result<()> {
        self.command(remote::Job::Load(model.to_string()))
    }
    fn unload(&self, model: &str) -> Result<()> {
        self.command(remote::Job::Unload(model.to_string()))
    }
    fn register(&self, entry: Entry) -> Result<()> {
        Err(crate::error::Error::unavailable(format!(
            "{} was written to {}; the server reads its model folders when it starts: restart it to serve this model",
            entry.manifest.id, entry.origin
        )))
    }
    fn pin(&self, model: &str, pinned: bool) -> Result<()> {
        self.command(remote::Job::Pin(model.to_string(), pinned))
    }
    fn set_keep_alive(&self, model: &str, ka: Option<KeepAlive>) -> Result<()> {
        self.command(remote::Job::KeepAlive(model.to_string(), ka))
    }
    fn events(&self) -> &Receiver<Event> {
        &self.events
    }
    fn snapshot(&self) -> Snapshot {
        self.latest_snapshot()
    }
    fn location(&self) -> String {
        match self.unreachable() {
            Some(why) => format!("{} — {why}", self.base()),
            None => self.base().to_string(),
        }
    }
    fn shutdown(&self) {
        self.stop();
    }
}

/// The door the app, the CLI and the live pipeline hold: one engine, in
/// this process or not. Cheap to clone; every clone reaches the same engine.
#[derive(Clone)]
pub struct Client {
    engine: Arc<dyn EngineApi>,
    /// The v2 server (not modeldock) whose networks a local engine runs on:
    /// its index is the model list, and it is where the engine is.
    attached: Option<Arc<v2_server::Attached>>,
}

impl Client {
    /// The engine in this process.
    pub fn local(engine: Engine) -> Client {
        Client {
            engine: Arc::new(engine),
            attached: None,
        }
    }

    /// A modeldock server over HTTP.
    pub fn remote(engine: RemoteEngine) -> Client {
        Client {
            engine: Arc::new(engine),
            attached: None,
        }
    }

    /// A local engine (decoding, pre- and post-processing here) whose
    /// networks run on a v2 server that is not modeldock (Triton, KServe,
    /// MLServer).
    pub fn attached(engine: Engine, server: Arc<v2_server::Attached>) -> Client {
        Client {
            engine: Arc::new(engine),
            attached: Some(server),
        }
    }

    /// The v2 server this engine's networks run on, when attached to one.
    pub fn attached_server(&self) -> Option<&v2_server::Attached> {
        self.attached.as_deref()
    }

    /// Where the engine is, for the status bar: `in this process`, the
    /// server's URL, or the attached server's name and URL.
    pub fn location(&self) -> String {
        let Some(a) = &self.attached else {
            return self.engine.location();
        };
        match a.client.unreachable() {
            Some(why) => format!("{} at {} — {why}", a.server_name, a.client.base()),
            None => format!("{} at {}", a.server_name, a.client.base()),
        }
    }

    /// Registers a model found after start (an imported checkpoint); an
    /// attached engine lists its server's models only.
    pub fn register(&self, entry: Entry) -> Result<()> {
        if self.attached.is_some() {
            return Err(crate::error::Error::unavailable(format!(
                "{} was written to {}; the app is attached to a v2 server and lists that server's models",
                entry.manifest.id, entry.origin
            )));
        }
        self.engine.register(entry)
    }
}

impl std::ops::Deref for Client {
    type Target = dyn EngineApi;

    fn deref(&self) -> &Self::Target {
        self.engine.as_ref()
    }
}

impl crate::engine::InferWait for Client {
    fn infer_wait(&self, model: &str, input: ImageInput, params: InferParams) -> Answer {
        self.engine.infer_wait(model, input, params)
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
