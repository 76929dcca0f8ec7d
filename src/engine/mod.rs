//! The engine: owns the device and the resident models, answers requests.
//!
//! Clients (CLI, GUI, tests) hold an [`Engine`] handle: they send
//! [`Command`]s over a bounded channel and receive [`Event`]s. The worker
//! thread runs inference; a loader thread reads weights; [`residency`]
//! decides what is loaded and when.

pub mod allocator;
pub mod arenas;
pub mod cache;
pub mod config;
pub mod event_json;
pub mod lanes;
pub mod loader;
pub mod memory;
pub mod pacer;
pub mod residency;
pub mod scheduler;
pub mod sizes;
pub mod stats;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use crate::catalog::manifest::TensorSpec;
pub use config::EngineConfig;
pub use residency::{KeepAlive, ModelState};
pub use stats::LatencySnapshot;

use crate::catalog::registry::Registry;
use crate::error::{Error, Result};
use crate::vision::{InferParams, Output, Timings};

pub type RequestId = u64;

/// An image to run a model on.
#[derive(Clone, Debug)]
pub enum ImageInput {
    /// A file, read and decoded by the worker.
    Path(PathBuf),
    /// Encoded bytes (a dropped file already read, a download).
    Bytes { name: String, bytes: Arc<Vec<u8>> },
    /// A decoded frame (live sources); never cached.
    Frame { name: String, image: Arc<RgbImage> },
    /// Input tensors by name: a model's raw network (`NETWORK_INPUT`) or a
    /// raw-tensor model's graph runs on them and the answer carries the
    /// outputs (`Output::tensors`). Never cached.
    Tensors {
        name: String,
        tensors: Arc<crate::v2::named_tensors::NamedTensors>,
    },
}

impl ImageInput {
    pub fn name(&self) -> String {
        match self {
            ImageInput::Path(p) => p.display().to_string(),
            ImageInput::Bytes { name, .. } | ImageInput::Frame { name, .. } | ImageInput::Tensors { name, .. } => {
                name.clone()
            }
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InferResult {
    pub request_id: RequestId,
    pub model: String,
    pub image: String,
    pub output: Output,
    pub timings: Timings,
}

impl InferResult {
    /// The JSON object `modeldock infer --json` prints for one image, and the
    /// server's `DETECTIONS` element.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "image": self.image,
            "model": self.model,
            "image_size": self.output.image_size,
            "detections": self.output.detections,
            "cached": self.output.cached,
            "timings_ms": self.timings,
        });
        // Masks only where a model makes them (base64 PNGs: see `vision::mask`).
        if !self.output.masks.is_empty() {
            v["masks"] = serde_json::json!(self.output.masks);
        }
        v
    }

    /// Reads back what [`to_json`](Self::to_json) wrote (HTTP clients).
    pub fn from_json(v: &serde_json::Value, request_id: RequestId) -> Option<InferResult> {
        Some(InferResult {
            request_id,
            model: v.get("model")?.as_str()?.to_string(),
            image: v.get("image")?.as_str()?.to_string(),
            output: Output {
                image_size: serde_json::from_value(v.get("image_size")?.clone()).ok()?,
                detections: serde_json::from_value(v.get("detections")?.clone()).ok()?,
                masks: match v.get("masks") {
                    Some(m) => serde_json::from_value(m.clone()).ok()?,
                    None => Vec::new(),
                },
                cached: v.get("cached").and_then(|c| c.as_bool()).unwrap_or(false),
                tensors: None,
            },
            timings: serde_json::from_value(v.get("timings_ms")?.clone()).ok()?,
        })
    }
}

impl InferError {
    /// Request `request_id`'s failure: `error` is the one line the user reads.
    pub fn new(request_id: RequestId, model: impl Into<String>, image: impl Into<String>, error: String) -> InferError {
        InferError {
            request_id,
            model: model.into(),
            image: image.into(),
            error,
            timed_out: false,
        }
    }

    /// `{"image": …, "error": …}`: a failed image's line and `DETECTIONS` element.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"image": self.image, "error": self.error})
    }
}

/// A failed request: which image, which model, what went wrong (one line).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InferError {
    pub request_id: RequestId,
    pub model: String,
    pub image: String,
    pub error: String,
    /// It waited in the queue past its timeout and never started.
    #[serde(default)]
    pub timed_out: bool,
}

pub type Answer = std::result::Result<InferResult, InferError>;

/// Where one answer goes.
pub enum Reply {
    /// A channel the caller waits on.
    Channel(Sender<Answer>),
    /// A function called on the worker thread with the answer (it must not
    /// block: the HTTP server hands the answer to an async task this way).
    Callback(Box<dyn FnOnce(Answer) + Send>),
}

impl Reply {
    pub fn callback(f: impl FnOnce(Answer) + Send + 'static) -> Reply {
        Reply::Callback(Box::new(f))
    }

    fn send(self, a: Answer) {
        match self {
            Reply::Channel(c) => {
                let _ = c.send(a);
            }
            Reply::Callback(f) => f(a),
        }
    }
}

pub enum Command {
    Infer {
        request_id: RequestId,
        model: String,
        input: ImageInput,
        /// Boxed: hand regions make the parameters large beside the other commands.
        params: Box<InferParams>,
        /// Where the answer goes; `None` sends it as an [`Event::Answer`].
        reply: Option<Reply>,
        submitted: Instant,
        /// Who asked and how urgently: the scheduler's input.
        ticket: scheduler::Ticket,
    },
    /// Drops these requests if they have not started (their client went
    /// away); each is answered with an error. Started ones run to the end.
    Cancel(Vec<RequestId>),
    /// What loading this model would do now, changing nothing.
    Plan(String, Sender<Option<residency::LoadPlan>>),
    Load(String),
    Unload(String),
    Pin(String, bool),
    SetKeepAlive(String, Option<KeepAlive>),
    /// Adds a model found after start (an imported checkpoint), or replaces
    /// one that is not loaded.
    Register(Box<crate::catalog::registry::Entry>),
    Shutdown,
}

/// State of one model as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelStatus {
    pub id: String,
    pub name: String,
    pub task: crate::catalog::Task,
    pub arch: crate::catalog::Arch,
    pub state: ModelState,
    pub failed_reason: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub eta_ms: Option<u64>,
    pub predicted_bytes: u64,
    pub measured_bytes: Option<u64>,
    pub device: String,
    pub pinned: bool,
    pub keep_alive: String,
    pub keep_alive_left_ms: Option<u64>,
    pub last_used_ms_ago: Option<u64>,
    pub in_flight: usize,
    pub waiting: usize,
    pub loads: u64,
    pub licence: String,
    pub origin: String,
    /// What the network computes in here, and the weights' stored dtype
    /// when it differs: `f32`, `f32 (bf16 weights)`; `remote` for a
    /// network on a server.
    #[serde(default)]
    pub precision: String,
    /// Why this model cannot load yet: its weights are not on this machine
    /// (a hub model not downloaded); `None` when they are.
    #[serde(default)]
    pub weights_missing: Option<String>,
    /// While Loading: the weights are still downloading (the bytes and ETA
    /// count the download), before the load proper.
    #[serde(default)]
    pub downloading: bool,
    /// Weights missing but downloadable by a load (the build has the `hub`
    /// feature and HF_HUB_OFFLINE is not set): the expected download size in
    /// bytes (the manifest's `size_bytes`, 0 when unknown).
    #[serde(default)]
    pub download_bytes: Option<u64>,
    /// The network runs on a v2 server: which, whether it answers, and the
    /// split of a round trip there.
    #[serde(default)]
    pub remote: Option<RemoteStatus>,
    /// Images for this model the scheduler holds, not started yet.
    #[serde(default)]
    pub queued: usize,
    /// The manifest's default confidence and NMS IoU thresholds.
    #[serde(default)]
    pub conf: Option<f32>,
    #[serde(default)]
    pub iou: Option<f32>,
    /// The manifest's arch options (a hands model's `max_hands`, `skip_frames`, …).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// "tiny_face on http://gpu-box:8000".
    pub backend: String,
    /// "unreachable since 12:01:07 UTC, retrying: …" while the server is down.
    pub unreachable: Option<String>,
    /// Round trip = network + queue + compute, from the server's statistics.
    pub split: Option<crate::backend::RemoteSplit>,
    /// No decoder here: listed, loaded and unloaded, not run on images.
    pub raw: bool,
    /// The model's state in the server's repository index ("READY",
    /// "UNAVAILABLE: unloaded"), when the app watches that server.
    pub server_state: Option<String>,
}

/// Everything a panel needs, published by the worker after each change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub device: String,
    pub budget_bytes: u64,
    pub used_bytes: u64,
    pub max_resident: usize,
    pub models: Vec<ModelStatus>,
    pub latency: Vec<LatencySnapshot>,
    pub cache_entries: usize,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Queue time by scheduling class.
    #[serde(default)]
    pub queue: Vec<stats::QueueSnapshot>,
    /// Models loaded again within 60 s of their eviction (thrashing).
    #[serde(default)]
    pub reloads_after_eviction: u64,
    /// Images waiting their turn, by class.
    #[serde(default)]
    pub queued_interactive: usize,
    #[serde(default)]
    pub queued_bulk: usize,
    /// Lanes (requests that may run side by side) and how many are busy.
    #[serde(default)]
    pub lanes: usize,
    #[serde(default)]
    pub lanes_busy: usize,
    /// The result cache's bytes and limits (`memory::report` adds the rest).
    #[serde(default)]
    pub cache_memory: memory::CacheMemory,
    /// Times memory went back to the OS because no model was left.
    #[serde(default)]
    pub hand_backs: u64,
}

#[derive(Clone, Debug)]
pub enum Event {
    LoadStarted {
        model: String,
        bytes_total: u64,
    },
    /// Bytes of a load's current phase: the download of its weights
    /// (`downloading`, a hub model not yet in the cache), then the load.
    LoadProgress {
        model: String,
        bytes_done: u64,
        bytes_total: u64,
        eta_ms: Option<u64>,
        downloading: bool,
    },
    Loaded {
        model: String,
        predicted_bytes: u64,
        measured_bytes: Option<u64>,
        load_ms: f64,
    },
    Freed {
        model: String,
        reason: residency::FreeReason,
    },
    LoadFailed {
        model: String,
        error: String,
    },
    Answer(Answer),
    /// The shared snapshot changed.
    Changed,
}

/// The client handle. Cheap to clone; every clone talks to the same worker.
#[derive(Clone)]
pub struct Engine {
    tx: Sender<Command>,
    events: Receiver<Event>,
    subscribers: Subscribers,
    snapshot: Arc<Mutex<Snapshot>>,
    catalog: Catalog,
    next_id: Arc<AtomicU64>,
    worker: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// The one catalogue of an engine: the worker owns it and swaps in a new
/// one when a model is registered; the server, the app and the CLI read it
/// through [`Engine::catalog`], never through copies of their own.
pub type Catalog = Arc<RwLock<Arc<Registry>>>;

pub type WakeFn = Arc<dyn Fn() + Send + Sync>;

/// Something that answers one request and waits for it: the engine, or a
/// client of one. The live pipeline runs on any of them.
pub trait InferWait: Send + Sync + 'static {
    fn infer_wait(&self, model: &str, input: ImageInput, params: InferParams) -> Answer;
}

impl InferWait for Engine {
    fn infer_wait(&self, model: &str, input: ImageInput, params: InferParams) -> Answer {
        Engine::infer_wait(self, model, input, params)
    }
}

/// Extra listeners for engine events (the HTTP server's event stream). Each
/// gets every event except answers that have their own reply; a listener that
/// falls behind loses events rather than slowing the worker.
pub(crate) type Subscribers = Arc<Mutex<Vec<Sender<Event>>>>;

impl Engine {
    /// Starts the worker and loader threads. Models marked `preload` (and
    /// `config.preload`) start loading in the background at once.
    pub fn start(mut registry: Registry, config: EngineConfig, wake: Option<WakeFn>) -> Engine {
        allocator::keep_freed_memory_for_reuse();
        config.kernels.apply();
        if config.kernels != crate::kernels::Kernels::Fast {
            tracing::info!("kernels: {} (candle's ops on every device)", config.kernels);
        }
        // f16 weights are converted to f32 once at load on the CPU (GPUs keep
        // f16): the prediction follows the dtype in memory, not on disk.
        let cpu = config.device == config::DeviceChoice::Cpu;
        for e in &mut registry.entries {
            e.predicted_bytes = e.predicted_in_memory(cpu);
        }
        let (tx, rx) = bounded(1024);
        let (etx, erx) = bounded(4096);
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let catalog: Catalog = Arc::new(RwLock::new(Arc::new(registry.clone())));
        let (ready_tx, ready_rx) = bounded(1);
        let subscribers: Subscribers = Arc::new(Mutex::new(Vec::new()));
        let handle = worker::spawn(
            registry,
            config,
            rx,
            (etx, subscribers.clone()),
            (snapshot.clone(), catalog.clone()),
            wake,
            ready_tx,
        );
        // The first snapshot is published before any client looks.
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        Engine {
            tx,
            events: erx,
            subscribers,
            snapshot,
            catalog,
            next_id: Arc::new(AtomicU64::new(1)),
            worker: Arc::new(Mutex::new(Some(handle))),
        }
    }

    pub fn next_request_id(&self) -> RequestId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, c: Command) -> Result<()> {
        self.tx.send(c).map_err(|_| Error::unavailable("engine has stopped"))
    }

    /// A new stream of events (progress, loads, frees, failures) for one more
    /// listener, bounded to `capacity` events.
    pub fn subscribe(&self, capacity: usize) -> Receiver<Event> {
        let (tx, rx) = bounded(capacity.max(1));
        match self.subscribers.lock() {
            Ok(mut s) => s.push(tx),
            Err(p) => p.into_inner().push(tx),
        }
        rx
    }

    /// Sends a request whose answer goes to `reply`, without waiting when the
    /// engine's queue is full (the caller answers "overloaded" instead).
    pub fn try_infer(
        &self,
        model: &str,
        input: ImageInput,
        params: InferParams,
        reply: Reply,
    ) -> std::result::Result<RequestId, (Error, Reply)> {
        self.try_infer_as(model, input, params, reply, scheduler::Ticket::default())
    }

    /// [`Engine::try_infer`] for a client, class and priority (the scheduler
    /// picks the next image by them; see [`scheduler`]).
    pub fn try_infer_as(
        &self,
        model: &str,
        input: ImageInput,
        params: InferParams,
        reply: Reply,
        ticket: scheduler::Ticket,
    ) -> std::result::Result<RequestId, (Error, Reply)> {
        let id = self.next_request_id();
        let cmd = Command::Infer {
            request_id: id,
            model: model.to_string(),
            input,
            params: Box::new(params),
            reply: Some(reply),
            submitted: Instant::now(),
            ticket,
        };
        match self.tx.try_send(cmd) {
            Ok(()) => Ok(id),
            Err(e) => {
                let full = e.is_full();
                let reply = match e.into_inner() {
                    Command::Infer { reply: Some(r), .. } => r,
                    _ => return Err((Error::unavailable("engine has stopped"), Reply::callback(|_| {}))),
                };
                let err = if full {
                    Error::unavailable("engine queue is full")
                } else {
                    Error::unavailable("engine has stopped")
                };
                Err((err, reply))
            }
        }
    }

    /// Sends a request whose answer arrives as [`Event::Answer`].
    pub fn infer(&self, model: &str, input: ImageInput, params: InferParams) -> Result<RequestId> {
        let id = self.next_request_id();
        self.send(Command::Infer {
            request_id: id,
            model: model.to_string(),
            input,
            params: Box::new(params),
            reply: None,
            submitted: Instant::now(),
            ticket: scheduler::Ticket::default(),
        })?;
        Ok(id)
    }

    /// Sends a request and waits for its answer.
    pub fn infer_wait(&self, model: &str, input: ImageInput, params: InferParams) -> Answer {
        let (rtx, rrx) = bounded(1);
        let id = self.next_request_id();
        let image = input.name();
        let fail = |e: String| InferError::new(id, model.to_string(), image.clone(), e);
        self.send(Command::Infer {
            request_id: id,
            model: model.to_string(),
            input,
            params: Box::new(params),
            reply: Some(Reply::Channel(rtx)),
            submitted: Instant::now(),
            ticket: scheduler::Ticket::default(),
        })
        .map_err(|e| fail(e.to_string()))?;
        rrx.recv()
            .map_err(|_| fail("engine stopped before answering".to_string()))?
    }

    /// Cancels requests that have not started yet; never blocks (a full
    /// queue leaves them to run).
    pub fn cancel(&self, ids: Vec<RequestId>) {
        if !ids.is_empty() {
            let _ = self.tx.try_send(Command::Cancel(ids));
        }
    }

    /// What loading `model` would do now (evictions, headroom, or the
    /// refusal), changing nothing: `load --dry-run`.
    pub fn plan_load(&self, model: &str) -> Result<residency::LoadPlan> {
        let (tx, rx) = bounded(1);
        self.send(Command::Plan(model.to_string(), tx))?;
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(Error::not_found(format!("unknown model '{model}'"))),
            Err(_) => Err(Error::unavailable("the engine did not answer within 10 s")),
        }
    }

    pub fn load(&self, model: &str) -> Result<()> {
        self.send(Command::Load(model.to_string()))
    }

    pub fn unload(&self, model: &str) -> Result<()> {
        self.send(Command::Unload(model.to_string()))
    }

    pub fn pin(&self, model: &str, pinned: bool) -> Result<()> {
        self.send(Command::Pin(model.to_string(), pinned))
    }

    pub fn set_keep_alive(&self, model: &str, ka: Option<KeepAlive>) -> Result<()> {
        self.send(Command::SetKeepAlive(model.to_string(), ka))
    }

    /// The models this engine knows, as of the last registration: every
    /// reader sees a model registered while the process runs at once.
    pub fn catalog(&self) -> Arc<Registry> {
        match self.catalog.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Registers a model found after start (see [`Command::Register`]).
    pub fn register(&self, entry: crate::catalog::registry::Entry) -> Result<()> {
        self.send(Command::Register(Box::new(entry)))
    }

    /// Events from the worker (progress, loads, answers without a reply channel).
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// The latest published state. Never blocks for long: the worker holds the
    /// lock only to swap in a new value.
    pub fn snapshot(&self) -> Snapshot {
        match self.snapshot.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Status of one model.
    pub fn status(&self, model: &str) -> Option<ModelStatus> {
        self.snapshot().models.into_iter().find(|m| m.id == model)
    }

    /// Waits until `pred` holds for the snapshot, or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Snapshot) -> bool) -> bool {
        let end = Instant::now() + timeout;
        // Woken by the worker's events rather than polling, so a waiter sees
        // a change as soon as it is published; the short timeout only covers
        // events dropped from a full stream.
        let changes = self.subscribe(64);
        loop {
            if pred(&self.snapshot()) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            let _ = changes.recv_timeout((end - now).min(Duration::from_millis(20)));
        }
    }

    /// Stops the worker and waits for it.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
        let handle = match self.worker.lock() {
            Ok(mut h) => h.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
