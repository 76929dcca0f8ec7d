//! The worker thread: the only place that runs models. It feeds the
//! residency state machine and carries out its actions.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;
use crossbeam_channel::{bounded, select, Receiver, Sender};
use image::RgbImage;

mod hand_back;
mod publish;
mod requests;

use super::cache::{self, ResultCache};
use super::lanes::Lanes;
use super::loader::{self, LoadJob, LoaderJob, LoaderMsg};
use super::pacer::Pacer;
use super::residency::{Action, Phase, Residency};
use super::scheduler::{Class, Scheduler};
use super::stats::Stats;
use super::{
    Answer, Command, EngineConfig, Event, ImageInput, InferError, Reply, RequestId, Snapshot, Subscribers, WakeFn,
};
use crate::catalog::registry::Registry;
use crate::models::Model;
use crate::vision::{Detection, InferParams, ModelTimings};

/// Requests the scheduler holds at most; the command channel holds the rest.
const MAX_STAGED: usize = 1024;

/// A load this soon after the model's eviction counts as thrashing.
const THRASH_MS: u64 = 60_000;

/// What a request runs on.
enum Work {
    Image(Arc<RgbImage>),
    /// Input tensors by name: the raw network or graph only.
    Tensors(Arc<crate::v2::named_tensors::NamedTensors>),
}

/// An image decoded at a reduced scale: original pixels per decoded pixel
/// (x, y) and the original size, to map the answer back.
type Unscale = ((f32, f32), (u32, u32));

/// What a run gives back: detections, masks, the model's timings, and the
/// output tensors of a tensor request.
type RunOutput = (
    Vec<Detection>,
    Vec<crate::vision::Mask>,
    ModelTimings,
    Option<Arc<crate::v2::named_tensors::NamedTensors>>,
);

/// What a lane hands back to the worker.
enum LaneOut {
    Decoded {
        image: crate::Result<(Arc<RgbImage>, Option<Unscale>)>,
        decode_ms: f64,
    },
    Ran {
        result: crate::Result<RunOutput>,
        started: Instant,
    },
}

/// A request whose image a lane is decoding.
struct Decoding {
    class: Class,
    model: String,
    image_name: String,
    params: InferParams,
    reply: Option<Reply>,
    submitted: Instant,
    cache_key: Option<cache::Key>,
}

/// A request the scheduler holds until its turn: nothing read or decoded yet.
struct Staged {
    class: Class,
    model: String,
    input: ImageInput,
    params: InferParams,
    reply: Option<Reply>,
    submitted: Instant,
    /// Answered with an error if it has not started by then.
    deadline: Option<Instant>,
}

struct Pending {
    class: Class,
    model: String,
    image_name: String,
    work: Work,
    params: InferParams,
    reply: Option<Reply>,
    submitted: Instant,
    decode_ms: f64,
    cache_key: Option<cache::Key>,
    /// The image was decoded at a reduced scale (see [`Unscale`]).
    unscale: Option<Unscale>,
}

struct Worker {
    registry: Registry,
    config: EngineConfig,
    device: crate::Result<Device>,
    residency: Residency,
    models: HashMap<String, Arc<dyn Model>>,
    /// Requests parked with the residency or waiting for a lane to run in.
    requests: HashMap<RequestId, Pending>,
    /// Where images are decoded and models run.
    lanes: Lanes<LaneOut>,
    decoding: HashMap<RequestId, Decoding>,
    running: HashMap<RequestId, Pending>,
    /// Requests the residency let run that wait for a free lane.
    runnable: VecDeque<(String, RequestId)>,
    cache: ResultCache,
    stats: Stats,
    events: Sender<Event>,
    subscribers: Subscribers,
    snapshot: Arc<Mutex<Snapshot>>,
    /// The catalogue readers see (`Engine::catalog`), swapped on register.
    catalog: super::Catalog,
    wake: Option<WakeFn>,
    load_tx: Sender<LoaderJob>,
    clock: Instant,
    actions: VecDeque<Action>,
    /// Requests not started yet, and the order they start in.
    scheduler: Scheduler,
    /// How close together interactive images start beside bulk work.
    pacer: Pacer,
    /// When each model was last evicted, to count reloads soon after.
    evicted_at: HashMap<String, u64>,
    /// Loads that started within [`THRASH_MS`] of the model's eviction.
    reloads_after_eviction: u64,
    staged: HashMap<RequestId, Staged>,
    load_progress: HashMap<String, Option<u64>>,
    /// The cancel flag of each model's load in progress.
    load_cancels: HashMap<String, Arc<AtomicBool>>,
    /// Measured sizes remembered across restarts.
    sizes: super::sizes::SizeBook,
    dirty: bool,
    /// The remote servers' states at the last publish.
    remote_seen: Vec<crate::backend::ServerView>,
    /// The last model left: hand memory back once the lanes are idle.
    hand_back: bool,
    /// Times memory was handed back so (published).
    hand_backs: u64,
}

pub(super) fn spawn(
    registry: Registry,
    config: EngineConfig,
    rx: Receiver<Command>,
    (events, subscribers): (Sender<Event>, Subscribers),
    (snapshot, catalog): (Arc<Mutex<Snapshot>>, super::Catalog),
    wake: Option<WakeFn>,
    ready: Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("modeldock-worker".into())
        .spawn(move || {
            let (load_tx, load_rx) = bounded(64);
            let (msg_tx, msg_rx) = bounded(1024);
            let loader = loader::spawn(load_rx, msg_tx);
            let mut residency = Residency::new(config.budget_bytes, config.max_resident, config.default_keep_alive);
            let sizes = super::sizes::SizeBook::open(config.sizes_file.clone());
            for e in &registry.entries {
                residency.register(
                    &e.manifest.id,
                    super::sizes::admission_bytes(e, &config, &sizes),
                    e.manifest.pinned,
                    e.manifest.keep_alive(),
                );
            }
            let device = config.device.open();
            if let Err(e) = &device {
                tracing::error!("{e}");
            }
            let pacer = Pacer::new(config.interactive_share);
            let mut w = Worker {
                cache: ResultCache::new(config.cache_entries, config.cache_bytes),
                lanes: Lanes::new(config.lanes, config.lane_threads, config.bulk_nice),
                decoding: HashMap::new(),
                running: HashMap::new(),
                runnable: VecDeque::new(),
                registry,
                config,
                device,
                residency,
                models: HashMap::new(),
                requests: HashMap::new(),
                stats: Stats::default(),
                events,
                subscribers,
                snapshot,
                catalog,
                wake,
                load_tx,
                clock: Instant::now(),
                actions: VecDeque::new(),
                scheduler: Scheduler::default(),
                pacer,
                evicted_at: HashMap::new(),
                reloads_after_eviction: 0,
                staged: HashMap::new(),
                load_progress: HashMap::new(),
                load_cancels: HashMap::new(),
                sizes,
                dirty: true,
                remote_seen: Vec::new(),
                hand_back: false,
                hand_backs: 0,
            };
            w.preload();
            w.publish();
            let _ = ready.send(());
            // The supervisor: a panic that escapes the per-request guards
            // (a model's destructor, a bug in the worker itself) costs the
            // requests in hand their answers — an error each — not the engine.
            loop {
                match std::panic::catch_unwind(AssertUnwindSafe(|| w.run(&rx, &msg_rx))) {
                    Ok(()) => break,
                    Err(p) => {
                        let why = loader::panic_text(&p);
                        tracing::error!("engine worker failed ({why}); recovering");
                        w.recover(&why);
                    }
                }
            }
            drop(w);
            let _ = loader.join();
        })
        .unwrap_or_else(|e| panic!("cannot start the engine worker thread: {e}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Worker {
    fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// The same clock in microseconds (the pacer's spacing is a few ms).
    fn now_us(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }

    /// Whether bulk work runs in a lane or waits to start: interactive
    /// starts are then paced.
    fn bulk_present(&self) -> bool {
        self.lanes.runs_bulk()
            || self.scheduler.has(Class::Bulk)
            || self
                .runnable
                .iter()
                .any(|(_, id)| self.requests.get(id).is_some_and(|p| p.class == Class::Bulk))
    }

    /// How long the next interactive image must wait for its pace, in ms
    /// (rounded up); `None` when none waits or none has to.
    fn pace_wait(&self) -> Option<u64> {
        if !self.scheduler.has(Class::Interactive) {
            return None;
        }
        let us = self.pacer.wait(self.now_us(), self.bulk_present());
        (us > 0).then(|| us.div_ceil(1000))
    }

    fn preload(&mut self) {
        let mut ids: Vec<String> = self
            .registry
            .entries
            .iter()
            .filter(|e| e.manifest.preload)
            .map(|e| e.manifest.id.clone())
            .collect();
        for p in self.config.preload.clone() {
            if self.registry.get(&p).is_none() {
                tracing::warn!("preload: unknown model '{p}'");
            } else if !ids.contains(&p) {
                ids.push(p);
            }
        }
        for id in ids {
            tracing::info!("preloading {id} in the background");
            let now = self.now();
            let a = self.residency.load(&id, now);
            self.actions.extend(a);
        }
    }

    /// After a panic escaped [`run`](Self::run): every request in hand gets an
    /// error, the residency is rebuilt from the models still held (they stay
    /// resident and usable), and the loop starts again. Requests still queued
    /// on the channel are served normally afterwards.
    fn recover(&mut self, why: &str) {
        self.scheduler.drain();
        for (id, st) in std::mem::take(&mut self.staged) {
            let (image, model) = (st.input.name(), st.model);
            let error = format!("{image}: {model}: the engine failed while this request waited ({why}); retry it");
            self.answer_failed(InferError::new(id, model, image, error), st.reply);
        }
        let pending: Vec<RequestId> = self.requests.keys().copied().collect();
        for id in pending {
            if let Some(p) = self.requests.remove(&id) {
                let (image, model) = (p.image_name, p.model);
                let error =
                    format!("{image}: {model}: the engine failed while this request was in hand ({why}); retry it");
                self.answer_failed(InferError::new(id, model, image, error), p.reply);
            }
        }
        // Jobs in the lanes finish and are answered as usual.
        self.runnable.clear();
        self.actions.clear();
        self.load_progress.clear();
        self.load_cancels.clear();
        let now = self.now();
        let mut residency = Residency::new(
            self.config.budget_bytes,
            self.config.max_resident,
            self.config.default_keep_alive,
        );
        for e in &self.registry.entries {
            let id = &e.manifest.id;
            let (pinned, keep_alive) = match self.residency.slot(id) {
                Some(s) => (s.pinned, s.keep_alive),
                None => (e.manifest.pinned, e.manifest.keep_alive()),
            };
            residency.register(
                id,
                super::sizes::admission_bytes(e, &self.config, &self.sizes),
                pinned,
                keep_alive,
            );
            if self.models.contains_key(id) {
                let _ = residency.load(id, now);
                let _ = residency.load_finished(id, Ok(None), now);
            }
        }
        self.residency = residency;
        self.dirty = true;
        self.emit(Event::Changed);
        self.publish();
    }

    fn run(&mut self, rx: &Receiver<Command>, loader: &Receiver<LoaderMsg>) {
        let finished = self.lanes.finished().clone();
        loop {
            // Lanes that finished first: each frees a lane for what waits.
            while let Ok(f) = finished.try_recv() {
                self.on_finished(f);
            }
            // Work queued by the state machine goes next, one action at a
            // time, with a non-blocking look at the channels in between.
            if let Some(a) = self.actions.pop_front() {
                self.apply(a);
                while let Ok(m) = loader.try_recv() {
                    self.on_loader(m);
                }
                if let Ok(c) = rx.try_recv() {
                    if !self.on_command(c) {
                        return self.finish_lanes();
                    }
                }
                continue;
            }
            // Everything already sent, so the scheduler chooses among all
            // of it. At most MAX_STAGED held here: past that, senders wait
            // on the bounded channel.
            while self.staged.len() < MAX_STAGED {
                let Ok(c) = rx.try_recv() else { break };
                if !self.on_command(c) {
                    return self.finish_lanes();
                }
            }
            while let Ok(m) = loader.try_recv() {
                self.on_loader(m);
            }
            if !self.actions.is_empty() {
                continue;
            }
            self.expire_waiting();
            // Requests ready to run go before new ones are decoded.
            if self.start_runnable() || self.start_next() {
                continue;
            }
            if self.remote_changed() {
                self.dirty = true;
            }
            self.hand_back_memory();
            self.publish();
            let now = self.now();
            let mut wait = self
                .residency
                .next_deadline()
                .map(|d| d.saturating_sub(now).clamp(1, 1000))
                .unwrap_or(1000);
            if let Some(p) = self.pace_wait() {
                wait = wait.min(p);
            }
            if let Some(d) = self.next_expiry() {
                wait = wait.min(d.saturating_duration_since(Instant::now()).as_millis() as u64 + 1);
            }
            let never = crossbeam_channel::never();
            let commands = if self.staged.len() < MAX_STAGED { rx } else { &never };
            select! {
                recv(commands) -> c => match c {
                    Ok(c) => if !self.on_command(c) { return self.finish_lanes(); },
                    Err(_) => return self.finish_lanes(),
                },
                recv(loader) -> m => if let Ok(m) = loader_msg(m) { self.on_loader(m) },
                recv(finished) -> f => if let Ok(f) = f { self.on_finished(f) },
                default(Duration::from_millis(wait)) => {}
            }
            let now = self.now();
            let a = self.residency.tick(now);
            self.actions.extend(a);
        }
    }

    /// On shutdown: the jobs in the lanes finish and are answered (bounded:
    /// a job still running after 60 s is left to the process's exit).
    fn finish_lanes(&mut self) {
        let limit = Instant::now() + Duration::from_secs(60);
        while !self.lanes.is_idle() {
            let left = limit.saturating_duration_since(Instant::now());
            match self.lanes.finished().recv_timeout(left) {
                Ok(f) => self.on_finished(f),
                Err(_) => break,
            }
        }
    }

    fn emit(&self, e: Event) {
        if !matches!(e, Event::Answer(_)) {
            let mut subs = match self.subscribers.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            subs.retain(|s| {
                !matches!(
                    s.try_send(e.clone()),
                    Err(crossbeam_channel::TrySendError::Disconnected(_))
                )
            });
        }
        match e {
            // Answers must never be lost.
            Event::Answer(_) => {
                let _ = self.events.send(e);
            }
            _ => {
                let _ = self.events.try_send(e);
            }
        }
        if let Some(w) = &self.wake {
            w();
        }
    }

    /// Returns false on shutdown.
    fn on_command(&mut self, c: Command) -> bool {
        let now = self.now();
        self.dirty = true;
        match c {
            Command::Shutdown => return false,
            Command::Infer {
                request_id,
                model,
                input,
                params,
                reply,
                submitted,
                ticket,
            } => {
                let class = ticket.class;
                let timeout = ticket.timeout_ms.or(self.config.queue_timeout_ms);
                self.scheduler.push(request_id, ticket, now);
                let st = Staged {
                    class,
                    model,
                    input,
                    params: *params,
                    reply,
                    submitted,
                    deadline: timeout.map(|t| submitted + Duration::from_millis(t)),
                };
                self.staged.insert(request_id, st);
            }
            Command::Cancel(ids) => self.cancel(ids),
            Command::Plan(m, reply) => {
                let _ = reply.try_send(self.residency.plan(&m, now));
            }
            Command::Load(m) => {
                if self.registry.get(&m).is_none() {
                    self.emit(Event::LoadFailed {
                        error: format!("unknown model '{m}'"),
                        model: m,
                    });
                } else {
                    let a = self.residency.load(&m, now);
                    self.actions.extend(a);
                }
            }
            Command::Unload(m) => {
                let a = self.residency.unload(&m, now);
                self.actions.extend(a);
            }
            Command::Pin(m, p) => {
                self.residency.set_pinned(&m, p);
            }
            Command::SetKeepAlive(m, ka) => self.residency.set_keep_alive(&m, ka),
            Command::Register(e) => self.on_register(*e),
        }
        true
    }

    /// A model found after start joins the registry and the residency
    /// table; one that is loaded or loading is left as it is.
    fn on_register(&mut self, mut e: crate::catalog::registry::Entry) {
        let id = e.manifest.id.clone();
        let busy = self.models.contains_key(&id) || self.residency.slot(&id).is_some_and(|s| s.phase.holds_memory());
        if busy {
            let error = format!("{id}: is loaded; unload it before replacing it with {}", e.origin);
            tracing::warn!("{error}");
            self.emit(Event::LoadFailed { model: id, error });
            return;
        }
        e.predicted_bytes = e.predicted_in_memory(self.config.device == super::config::DeviceChoice::Cpu);
        self.residency.register(
            &id,
            super::sizes::admission_bytes(&e, &self.config, &self.sizes),
            e.manifest.pinned,
            e.manifest.keep_alive(),
        );
        tracing::info!("{id}: registered from {}", e.origin);
        self.registry.upsert(e);
        let published = Arc::new(self.registry.clone());
        match self.catalog.write() {
            Ok(mut c) => *c = published,
            Err(p) => *p.into_inner() = published,
        }
        self.dirty = true;
    }

    /// Answers a request that failed, and counts the error.
    fn answer_failed(&mut self, e: InferError, reply: Option<Reply>) {
        self.stats.record_error(&e.model);
        self.answer(reply, Err(e));
    }

    fn answer(&mut self, reply: Option<Reply>, a: Answer) {
        match reply {
            Some(r) => {
                r.send(a);
                if let Some(w) = &self.wake {
                    w();
                }
            }
            None => self.emit(Event::Answer(a)),
        }
    }

    fn apply(&mut self, a: Action) {
        self.dirty = true;
        match a {
            Action::StartLoad { model } => self.start_load(model),
            Action::Run { model, request } => self.run_request(model, request),
            Action::Reject { request, error } => {
                if let Some(p) = self.requests.remove(&request) {
                    self.answer_failed(InferError::new(request, p.model, p.image_name, error), p.reply);
                }
            }
            Action::Free { model, reason } => {
                let cuda = self.device.as_ref().ok().and_then(loader::cuda_index);
                let before = cuda.and_then(crate::telemetry::nvml::own_used_memory);
                // The model's blocks belong to the loader thread's arena:
                // dropped with the window open, that arena's top goes back too.
                let window = super::arenas::TrimWindow::open();
                let dropped = self.models.remove(&model).is_some();
                drop(window);
                if dropped {
                    super::allocator::release_free_memory();
                    self.hand_back = self.models.is_empty();
                    // On a GPU, the loads queued after this free start once
                    // the memory is back; the loader waits, not this thread.
                    if let (Some(gpu), Some(before)) = (cuda, before) {
                        let expect = self.registry.get(&model).map(|e| e.predicted_bytes).unwrap_or(0);
                        let job = LoaderJob::AwaitFree {
                            model: model.clone(),
                            gpu,
                            before,
                            expect,
                        };
                        if self.load_tx.try_send(job).is_err() {
                            tracing::warn!("{model}: the loader is busy; its device memory is not awaited");
                        }
                    }
                }
                tracing::info!("{model}: {reason}");
                // Its next load is admitted at its measured size, once known.
                if let Some(e) = self.registry.get(&model) {
                    let bytes = super::sizes::admission_bytes(e, &self.config, &self.sizes);
                    self.residency.set_size(&model, bytes);
                }
                if matches!(reason, super::residency::FreeReason::Evicted { .. }) {
                    let now = self.now();
                    self.evicted_at.insert(model.clone(), now);
                }
                self.emit(Event::Freed { model, reason });
            }
            Action::CancelLoad { model } => {
                tracing::info!("{model}: cancelling its load (nothing waits for it)");
                if let Some(c) = self.load_cancels.get(&model) {
                    c.store(true, Ordering::Release);
                }
            }
            Action::ResumeLoad { model } => {
                if let Some(c) = self.load_cancels.get(&model) {
                    c.store(false, Ordering::Release);
                }
            }
            Action::LoadFailed { model, error } => {
                tracing::error!("load failed: {error}");
                self.emit(Event::LoadFailed { model, error });
            }
        }
    }

    fn start_load(&mut self, model: String) {
        let Some(entry) = self.registry.get(&model).cloned() else {
            return;
        };
        let now = self.now();
        if let Some(at) = self.evicted_at.remove(&model) {
            if now.saturating_sub(at) <= THRASH_MS {
                self.reloads_after_eviction += 1;
                tracing::warn!(
                    "{model}: loaded again {} ms after its eviction (the budget is too small for this mix)",
                    now - at
                );
            }
        }
        let device = match &self.device {
            Ok(d) => d.clone(),
            Err(e) => {
                let now = self.now();
                let a = self.residency.load_finished(&model, Err(format!("{model}: {e}")), now);
                self.actions.extend(a);
                return;
            }
        };
        tracing::info!("{model}: load started ({} bytes predicted)", entry.predicted_bytes);
        self.emit(Event::LoadStarted {
            model: model.clone(),
            bytes_total: entry.predicted_bytes,
        });
        let cancel = Arc::new(AtomicBool::new(false));
        self.load_cancels.insert(model.clone(), Arc::clone(&cancel));
        let job = LoadJob {
            entry,
            device,
            random_weights: self.config.random_weights,
            cancel,
        };
        if self.load_tx.send(LoaderJob::Load(Box::new(job))).is_err() {
            let now = self.now();
            let a = self
                .residency
                .load_finished(&model, Err(format!("{model}: the loader has stopped")), now);
            self.actions.extend(a);
        }
    }

    fn on_loader(&mut self, m: LoaderMsg) {
        self.dirty = true;
        let now = self.now();
        match m {
            LoaderMsg::Progress {
                model,
                done,
                total,
                eta_ms,
                downloading,
            } => {
                self.residency.progress(&model, done, total, downloading);
                self.load_progress.insert(model.clone(), eta_ms);
                self.emit(Event::LoadProgress {
                    model,
                    bytes_done: done,
                    bytes_total: total,
                    eta_ms,
                    downloading,
                });
                self.publish();
            }
            LoaderMsg::Cancelled { model } => {
                self.load_progress.remove(&model);
                self.load_cancels.remove(&model);
                let a = self.residency.load_cancelled(&model, now);
                self.actions.extend(a);
            }
            LoaderMsg::Done { model, result } => {
                self.load_progress.remove(&model);
                self.load_cancels.remove(&model);
                match result {
                    Ok(l) => {
                        let predicted = self.registry.get(&model).map(|e| e.predicted_bytes).unwrap_or(0);
                        let still_loading = matches!(
                            self.residency.slot(&model).map(|s| &s.phase),
                            Some(Phase::Loading { .. })
                        );
                        if still_loading {
                            // A remote network's first request costs the server, not us.
                            let local = self.registry.get(&model).is_some_and(|e| e.manifest.backend.is_none());
                            let m: Arc<dyn Model> = Arc::from(l.model);
                            if local {
                                // On the threads of the lane requests run in first.
                                self.lanes.install(0, || loader::warm_up(&model, m.as_ref()));
                            }
                            self.models.insert(model.clone(), m);
                        }
                        tracing::info!("{model}: loaded in {:.1} ms", l.load_ms);
                        if let (Some(bytes), Some(e)) = (l.measured_bytes, self.registry.get(&model)) {
                            super::sizes::remember(&mut self.sizes, e, &self.config, bytes);
                        }
                        self.emit(Event::Loaded {
                            model: model.clone(),
                            predicted_bytes: predicted,
                            measured_bytes: l.measured_bytes,
                            load_ms: l.load_ms,
                        });
                        let a = self.residency.load_finished(&model, Ok(l.measured_bytes), now);
                        self.actions.extend(a);
                    }
                    Err(e) => {
                        let a = self.residency.load_finished(&model, Err(e.to_string()), now);
                        self.actions.extend(a);
                    }
                }
            }
        }
    }

    /// Whether a remote server's state or round-trip split changed since the
    /// last look (those change without any command).
    fn remote_changed(&mut self) -> bool {
        let now: Vec<_> = self
            .registry
            .entries
            .iter()
            .filter_map(|e| e.manifest.backend.as_ref())
            .map(crate::backend::status)
            .collect();
        if now == self.remote_seen {
            return false;
        }
        self.remote_seen = now;
        true
    }
}

fn loader_msg(m: Result<LoaderMsg, crossbeam_channel::RecvError>) -> Result<LoaderMsg, ()> {
    m.map_err(|_| ())
}
