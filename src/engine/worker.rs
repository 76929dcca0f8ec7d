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

use super::cache::{self, ResultCache};
use super::lanes::{Finished, Lanes};
use super::loader::{self, LoadJob, LoaderMsg};
use super::residency::{Action, Phase, Residency};
use super::scheduler::{lane_for, Class, Scheduler};
use super::stats::Stats;
use super::{
    Answer, Command, EngineConfig, Event, ImageInput, InferError, InferResult, ModelStatus, RemoteStatus, Reply,
    RequestId, Snapshot, Subscribers, WakeFn,
};
use crate::models::registry::Registry;
use crate::models::registry::WeightsResolved;
use crate::models::Model;
use crate::vision::decode::{decode_bytes, read_file_limited};
use crate::vision::{Detection, InferParams, ModelTimings, Output, Timings};

/// Requests the scheduler holds at most; the command channel holds the rest.
const MAX_STAGED: usize = 1024;

/// A load this soon after the model's eviction counts as thrashing.
const THRASH_MS: u64 = 60_000;

/// What a request runs on.
enum Work {
    Image(Arc<RgbImage>),
    /// A network input tensor: the raw network only.
    Tensor(Arc<crate::backend::Tensor32>),
}

/// An image decoded at a reduced scale: original pixels per decoded pixel
/// (x, y) and the original size, to map the answer back.
type Unscale = ((f32, f32), (u32, u32));

/// What a model run hands back: detections, timings, a raw output tensor.
type RunOutput = (Vec<Detection>, ModelTimings, Option<Arc<crate::backend::Tensor32>>);

/// What a lane hands back to the worker.
enum LaneOut {
    Decoded {
        image: Result<(Arc<RgbImage>, Option<Unscale>), String>,
        decode_ms: f64,
    },
    Ran {
        result: Result<RunOutput, String>,
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
    device: Result<Device, String>,
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
    wake: Option<WakeFn>,
    load_tx: Sender<LoadJob>,
    clock: Instant,
    actions: VecDeque<Action>,
    /// Requests not started yet, and the order they start in.
    scheduler: Scheduler,
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
}

pub(super) fn spawn(
    registry: Registry,
    config: EngineConfig,
    rx: Receiver<Command>,
    (events, subscribers): (Sender<Event>, Subscribers),
    snapshot: Arc<Mutex<Snapshot>>,
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
            let device = config.device.open().map_err(|e| e.to_string());
            if let Err(e) = &device {
                tracing::error!("{e}");
            }
            let mut w = Worker {
                cache: ResultCache::new(config.cache_entries, config.cache_bytes),
                lanes: Lanes::new(config.lanes, config.lane_threads),
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
                wake,
                load_tx,
                clock: Instant::now(),
                actions: VecDeque::new(),
                scheduler: Scheduler::default(),
                evicted_at: HashMap::new(),
                reloads_after_eviction: 0,
                staged: HashMap::new(),
                load_progress: HashMap::new(),
                load_cancels: HashMap::new(),
                sizes,
                dirty: true,
                remote_seen: Vec::new(),
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
            self.stats.record_error(&st.model);
            let e = InferError {
                request_id: id,
                model: st.model.clone(),
                image: st.input.name(),
                error: format!(
                    "{}: {}: the engine failed while this request waited ({why}); retry it",
                    st.input.name(),
                    st.model
                ),
                timed_out: false,
            };
            self.answer(st.reply, Err(e));
        }
        let pending: Vec<RequestId> = self.requests.keys().copied().collect();
        for id in pending {
            if let Some(p) = self.requests.remove(&id) {
                self.stats.record_error(&p.model);
                let e = InferError {
                    request_id: id,
                    model: p.model.clone(),
                    image: p.image_name.clone(),
                    error: format!(
                        "{}: {}: the engine failed while this request was in hand ({why}); retry it",
                        p.image_name, p.model
                    ),
                    timed_out: false,
                };
                self.answer(p.reply, Err(e));
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
            self.publish();
            let now = self.now();
            let mut wait = self
                .residency
                .next_deadline()
                .map(|d| d.saturating_sub(now).clamp(1, 1000))
                .unwrap_or(1000);
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
                    params,
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
    fn on_register(&mut self, mut e: crate::models::registry::Entry) {
        let id = e.manifest.id.clone();
        let busy = self.models.contains_key(&id)
            || self
                .residency
                .slot(&id)
                .is_some_and(|s| matches!(s.phase, Phase::Loading { .. } | Phase::Resident { .. }));
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

    /// Answers the requests among `ids` that have not started with an
    /// error, and forgets them: waiting in the scheduler, being decoded, or
    /// parked behind their model's load (a load nothing else waits for is
    /// cancelled). A request already running is left to finish.
    fn cancel(&mut self, ids: Vec<RequestId>) {
        for id in ids {
            let (model, image) = if self.scheduler.remove(id) {
                match self.staged.remove(&id) {
                    Some(st) => {
                        let (m, i) = (st.model.clone(), st.input.name());
                        self.answer_cancelled(id, st.reply, m.clone(), i.clone());
                        (m, i)
                    }
                    None => continue,
                }
            } else if let Some(d) = self.decoding.remove(&id) {
                // The lane's decoded image is dropped when it comes back.
                self.answer_cancelled(id, d.reply, d.model.clone(), d.image_name.clone());
                (d.model, d.image_name)
            } else if let Some(p) = self.requests.remove(&id) {
                let now = self.now();
                let a = match self.runnable.iter().position(|(_, r)| *r == id) {
                    // Let run but waiting for a lane.
                    Some(at) => {
                        self.runnable.remove(at);
                        self.residency.request_finished(&p.model, id, now)
                    }
                    None => self.residency.withdraw(&p.model, id),
                };
                self.actions.extend(a);
                self.answer_cancelled(id, p.reply, p.model.clone(), p.image_name.clone());
                (p.model, p.image_name)
            } else {
                continue;
            };
            tracing::debug!("{image}: {model}: cancelled before it started");
            self.dirty = true;
        }
    }

    fn answer_cancelled(&mut self, id: RequestId, reply: Option<Reply>, model: String, image: String) {
        let e = InferError {
            request_id: id,
            error: format!("{image}: {model}: cancelled before it started"),
            model,
            image,
            timed_out: false,
        };
        self.answer(reply, Err(e));
    }

    /// Starts the request whose turn it is, if a lane may take it; false
    /// when nothing could start.
    fn start_next(&mut self) -> bool {
        let now = self.now();
        let busy = self.lanes.busy().to_vec();
        // A bulk request whose image is decoded and waits for a lane goes
        // before more bulk images are decoded (memory stays bounded).
        let bulk_ready = self
            .runnable
            .iter()
            .any(|(_, id)| self.requests.get(id).is_some_and(|p| p.class == Class::Bulk));
        let Some(id) = self.scheduler.pop_if(now, |c| {
            lane_for(&busy, c).is_some() && !(c == Class::Bulk && bulk_ready)
        }) else {
            return false;
        };
        if let Some(st) = self.staged.remove(&id) {
            self.on_infer(id, st.class, st.model, st.input, st.params, st.reply, st.submitted);
        }
        true
    }

    /// Starts the first request that is ready to run (its model resident)
    /// and may take a free lane: interactive ones first.
    fn start_runnable(&mut self) -> bool {
        let class_of = |id: &RequestId| self.requests.get(id).map(|p| p.class).unwrap_or_default();
        let pick = [Class::Interactive, Class::Bulk].into_iter().find_map(|c| {
            let lane = lane_for(self.lanes.busy(), c)?;
            let at = self.runnable.iter().position(|(_, id)| class_of(id) == c)?;
            Some((at, lane))
        });
        let Some((at, lane)) = pick else { return false };
        let Some((model, id)) = self.runnable.remove(at) else {
            return false;
        };
        self.run_in_lane(lane, model, id);
        true
    }

    /// Answers the waiting requests whose queue timeout has passed.
    fn expire_waiting(&mut self) {
        let now = Instant::now();
        let staged = &self.staged;
        let late = self
            .scheduler
            .expire(|id, _| staged.get(&id).and_then(|s| s.deadline).is_some_and(|d| d <= now));
        for id in late {
            let Some(st) = self.staged.remove(&id) else { continue };
            self.stats.record_error(&st.model);
            let waited = ms(st.submitted.elapsed());
            let e = InferError {
                request_id: id,
                model: st.model.clone(),
                image: st.input.name(),
                error: format!(
                    "{}: {}: waited {waited:.0} ms in the queue without starting, past its timeout; retry later or raise the timeout",
                    st.input.name(),
                    st.model
                ),
                timed_out: true,
            };
            self.answer(st.reply, Err(e));
        }
    }

    /// The earliest queue deadline among waiting requests.
    fn next_expiry(&self) -> Option<Instant> {
        self.staged.values().filter_map(|s| s.deadline).min()
    }

    #[allow(clippy::too_many_arguments)]
    fn on_infer(
        &mut self,
        id: RequestId,
        class: Class,
        model: String,
        input: ImageInput,
        params: InferParams,
        reply: Option<Reply>,
        submitted: Instant,
    ) {
        let name = input.name();
        let fail = |error: String| InferError {
            request_id: id,
            model: model.clone(),
            image: name.clone(),
            error,
            timed_out: false,
        };
        if self.registry.get(&model).is_none() {
            let e = fail(format!("unknown model '{model}'"));
            self.answer(reply, Err(e));
            return;
        }
        let t0 = Instant::now();
        let limits = self.config.decode_limits;
        // Bytes first: a cache hit must not pay for decoding.
        let (bytes, frame): (Option<Arc<Vec<u8>>>, Option<Arc<RgbImage>>) = match input {
            ImageInput::Path(p) => match read_file_limited(&p, &limits) {
                Ok(b) => (Some(Arc::new(b)), None),
                Err(e) => {
                    self.stats.record_error(&model);
                    self.answer(reply, Err(fail(e.to_string())));
                    return;
                }
            },
            ImageInput::Bytes { bytes, .. } => (Some(bytes), None),
            ImageInput::Frame { image, .. } => (None, Some(image)),
            ImageInput::Tensor { tensor, .. } => {
                self.queue_request(
                    id,
                    Pending {
                        class,
                        model: model.clone(),
                        image_name: name,
                        work: Work::Tensor(tensor),
                        params,
                        reply,
                        submitted,
                        decode_ms: 0.0,
                        cache_key: None,
                        unscale: None,
                    },
                );
                return;
            }
        };
        let cache_key = bytes
            .as_ref()
            .map(|b| cache::key(blake3::hash(b).as_bytes(), &model, &params));
        if let Some(k) = &cache_key {
            if let Some(mut out) = self.cache.get(k) {
                out.cached = true;
                let total = ms(submitted.elapsed());
                let timings = Timings {
                    queue: total,
                    total,
                    ..Default::default()
                };
                self.stats.record(&model, &timings, true);
                self.stats.record_queue(class.as_str(), timings.queue);
                let r = InferResult {
                    request_id: id,
                    model,
                    image: name,
                    output: out,
                    timings,
                };
                self.answer(reply, Ok(r));
                return;
            }
        }
        let bytes = match (frame, bytes) {
            (Some(image), _) => {
                let p = Pending {
                    class,
                    model: model.clone(),
                    image_name: name,
                    work: Work::Image(image),
                    params,
                    reply,
                    submitted,
                    decode_ms: ms(t0.elapsed()),
                    cache_key,
                    unscale: None,
                };
                self.queue_request(id, p);
                return;
            }
            (None, Some(b)) => b,
            (None, None) => {
                self.stats.record_error(&model);
                self.answer(reply, Err(fail(format!("{name}: no image data"))));
                return;
            }
        };
        // Decoding is as costly as a small model: it runs in a lane.
        let reduced = self.reduced_side(&model);
        let job_name = name.clone();
        let job = move || {
            let t = Instant::now();
            let image = match reduced.and_then(|side| crate::vision::jpeg_scaled::decode_reduced(&bytes, side, &limits))
            {
                Some(r) => {
                    let unscale = (r.factor(), r.original);
                    Ok((Arc::new(r.image), Some(unscale)))
                }
                None => decode_bytes(&job_name, &bytes, &limits)
                    .map(|i| (Arc::new(i), None))
                    .map_err(|e| e.to_string()),
            };
            LaneOut::Decoded {
                image,
                decode_ms: ms(t.elapsed()),
            }
        };
        let d = Decoding {
            class,
            model,
            image_name: name,
            params,
            reply,
            submitted,
            cache_key,
        };
        self.decoding.insert(id, d);
        match lane_for(self.lanes.busy(), class) {
            Some(lane) => self.lanes.spawn(lane, class, id, job),
            // Not reached (a request starts only when a lane may take it);
            // decoding here keeps the request's answer if it were.
            None => {
                let out = job();
                self.on_decoded(id, out);
            }
        }
    }

    /// A lane finished a job: the request goes on (decoded → parked with the
    /// residency) or is answered (ran), and the lane takes the next job.
    fn on_finished(&mut self, f: Finished<LaneOut>) {
        self.dirty = true;
        self.lanes.release(f.lane);
        match f.value {
            Ok(out) => self.on_decoded(f.id, out),
            Err(panic) => {
                if let Some(d) = self.decoding.remove(&f.id) {
                    let error = format!("{}: decoding panicked: {panic}", d.image_name);
                    self.fail_decoding(f.id, d, error);
                } else if let Some(p) = self.running.remove(&f.id) {
                    let error = format!("{}: {} panicked during inference: {panic}", p.image_name, p.model);
                    self.finish_run(f.id, p, Err(error), Instant::now());
                }
            }
        }
    }

    fn fail_decoding(&mut self, id: RequestId, d: Decoding, error: String) {
        self.stats.record_error(&d.model);
        let e = InferError {
            request_id: id,
            model: d.model,
            image: d.image_name,
            error,
            timed_out: false,
        };
        self.answer(d.reply, Err(e));
    }

    fn on_decoded(&mut self, id: RequestId, out: LaneOut) {
        match out {
            LaneOut::Decoded { image, decode_ms } => {
                let Some(d) = self.decoding.remove(&id) else { return };
                match image {
                    Ok((image, unscale)) => {
                        let p = Pending {
                            class: d.class,
                            model: d.model,
                            image_name: d.image_name,
                            work: Work::Image(image),
                            params: d.params,
                            reply: d.reply,
                            submitted: d.submitted,
                            decode_ms,
                            cache_key: d.cache_key,
                            unscale,
                        };
                        self.queue_request(id, p);
                    }
                    Err(e) => self.fail_decoding(id, d, e),
                }
            }
            LaneOut::Ran { result, started } => {
                if let Some(p) = self.running.remove(&id) {
                    self.finish_run(id, p, result, started);
                }
            }
        }
    }

    /// For a model that resizes the whole image to its input size, the
    /// longer side a JPEG may be decoded down to (twice the input size, so
    /// the model's own resize still has the detail it expects); `None` for
    /// models that look at full-resolution crops (landmarks, MTCNN, hands).
    fn reduced_side(&self, model: &str) -> Option<u32> {
        let m = &self.registry.get(model)?.manifest;
        matches!(m.arch.as_str(), "tiny_face_detector" | "yolov8" | "nanodet" | "movenet")
            .then_some(m.input_size.saturating_mul(2))
    }

    /// Parks a request with the residency: it runs once its model is resident.
    fn queue_request(&mut self, id: RequestId, p: Pending) {
        let model = p.model.clone();
        self.requests.insert(id, p);
        let now = self.now();
        let a = self.residency.request(&model, id, now);
        self.actions.extend(a);
    }

    fn apply(&mut self, a: Action) {
        self.dirty = true;
        match a {
            Action::StartLoad { model } => self.start_load(model),
            Action::Run { model, request } => self.run_request(model, request),
            Action::Reject { request, error } => {
                if let Some(p) = self.requests.remove(&request) {
                    self.stats.record_error(&p.model);
                    let e = InferError {
                        request_id: request,
                        model: p.model,
                        image: p.image_name,
                        error,
                        timed_out: false,
                    };
                    self.answer(p.reply, Err(e));
                }
            }
            Action::Free { model, reason } => {
                let cuda = self.device.as_ref().ok().and_then(loader::cuda_index);
                let before = cuda.and_then(crate::telemetry::nvml::own_used_memory);
                if self.models.remove(&model).is_some() {
                    super::allocator::release_free_memory();
                    // On a GPU, trust the budget only once the memory is back.
                    if let (Some(i), Some(b)) = (cuda, before) {
                        let expect = self.registry.get(&model).map(|e| e.predicted_bytes).unwrap_or(0);
                        if !crate::telemetry::nvml::wait_released(i, b, expect, Duration::from_secs(3)) {
                            tracing::warn!("{model}: device memory not released within 3 s");
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
                self.emit(Event::Freed {
                    model,
                    reason: reason.to_string(),
                });
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
        if self.load_tx.send(job).is_err() {
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
                        if let (Some(bytes), Some(key)) = (
                            l.measured_bytes,
                            self.registry
                                .get(&model)
                                .and_then(|e| super::sizes::key_of(e, &self.config)),
                        ) {
                            self.sizes.record(key, bytes);
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
                        let a = self.residency.load_finished(&model, Err(e), now);
                        self.actions.extend(a);
                    }
                }
            }
        }
    }

    /// The residency let request `id` run: in a free lane, or once one is.
    fn run_request(&mut self, model: String, id: RequestId) {
        let Some(class) = self.requests.get(&id).map(|p| p.class) else {
            let now = self.now();
            let a = self.residency.request_finished(&model, id, now);
            self.actions.extend(a);
            return;
        };
        // Ready requests keep their order: a new one never passes a waiting one.
        let waiting_same = self
            .runnable
            .iter()
            .any(|(_, r)| self.requests.get(r).is_some_and(|p| p.class == class));
        match lane_for(self.lanes.busy(), class) {
            Some(lane) if !waiting_same => self.run_in_lane(lane, model, id),
            _ => self.runnable.push_back((model, id)),
        }
    }

    fn run_in_lane(&mut self, lane: usize, model: String, id: RequestId) {
        let Some(p) = self.requests.remove(&id) else {
            let now = self.now();
            let a = self.residency.request_finished(&model, id, now);
            self.actions.extend(a);
            return;
        };
        let Some(m) = self.models.get(&model).cloned() else {
            let error = format!("{model}: not resident (internal state mismatch)");
            self.finish_run(id, p, Err(error), Instant::now());
            return;
        };
        let device = self.device.clone().unwrap_or(Device::Cpu);
        let work = match &p.work {
            Work::Image(i) => Work::Image(Arc::clone(i)),
            Work::Tensor(t) => Work::Tensor(Arc::clone(t)),
        };
        let params = p.params;
        let image_name = p.image_name.clone();
        let class = p.class;
        let job = move || {
            let started = Instant::now();
            let result = match &work {
                Work::Image(img) => m.infer(img, &params).map(|(d, t)| (d, t, None)),
                Work::Tensor(x) => crate::models::remote_net::serve_raw(m.as_ref(), x, &device).map(|y| {
                    let t = ModelTimings {
                        forward: ms(started.elapsed()),
                        ..Default::default()
                    };
                    (Vec::new(), t, Some(Arc::new(y)))
                }),
            };
            // The model is let go before the worker hears of the end, so an
            // unload that waited for this request frees its memory.
            drop(m);
            LaneOut::Ran {
                result: result.map_err(|e| format!("{image_name}: {model}: {e}")),
                started,
            }
        };
        self.running.insert(id, p);
        self.lanes.spawn(lane, class, id, job);
    }

    /// Answers a request that ran (or failed to) and tells the residency.
    fn finish_run(&mut self, id: RequestId, p: Pending, result: Result<RunOutput, String>, started: Instant) {
        let model = p.model.clone();
        let total = ms(p.submitted.elapsed());
        let answer = match result {
            Ok((mut detections, mt, tensor)) => {
                let before = detections.len();
                detections.retain(|d| {
                    d.score.is_finite()
                        && d.bbox.iter().all(|v| v.is_finite())
                        && d.keypoints.iter().all(|k| k.iter().all(|v| v.is_finite()))
                });
                if detections.len() < before {
                    tracing::warn!(
                        "{model}: {}: dropped {} detection(s) with non-finite values",
                        p.image_name,
                        before - detections.len()
                    );
                }
                let timings = Timings {
                    queue: (ms(started.saturating_duration_since(p.submitted)) - p.decode_ms).max(0.0),
                    decode: p.decode_ms,
                    preprocess: mt.preprocess,
                    forward: mt.forward,
                    postprocess: mt.postprocess,
                    total,
                };
                let image_size = match (&p.work, p.unscale) {
                    (_, Some((f, original))) => {
                        for d in &mut detections {
                            d.scale(f.0, f.1);
                        }
                        [original.0, original.1]
                    }
                    (Work::Image(i), None) => [i.width(), i.height()],
                    (Work::Tensor(_), None) => [0, 0],
                };
                let output = Output {
                    image_size,
                    detections,
                    cached: false,
                    tensor,
                };
                if let Some(k) = p.cache_key {
                    self.cache.put(k, output.clone());
                }
                self.stats.record(&model, &timings, false);
                self.stats.record_queue(p.class.as_str(), timings.queue);
                Ok(InferResult {
                    request_id: id,
                    model: model.clone(),
                    image: p.image_name,
                    output,
                    timings,
                })
            }
            Err(error) => {
                tracing::error!("{error}");
                self.stats.record_error(&model);
                Err(InferError {
                    request_id: id,
                    model: model.clone(),
                    image: p.image_name,
                    error,
                    timed_out: false,
                })
            }
        };
        self.answer(p.reply, answer);
        let now = self.now();
        let a = self.residency.request_finished(&model, id, now);
        self.actions.extend(a);
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

    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let now = self.now();
        let device = self.config.device.label();
        let mut queued: HashMap<&str, usize> = HashMap::new();
        for st in self.staged.values() {
            *queued.entry(st.model.as_str()).or_default() += 1;
        }
        let models = self
            .registry
            .entries
            .iter()
            .filter_map(|e| {
                let id = &e.manifest.id;
                let s = self.residency.slot(id)?;
                let (bytes_done, bytes_total, downloading) = match s.phase {
                    Phase::Loading {
                        bytes_done,
                        bytes_total,
                        downloading,
                    } => (bytes_done, bytes_total, downloading),
                    _ => (0, 0, false),
                };
                let weights_missing = match &e.weights {
                    WeightsResolved::Hub { .. } => e.weights_source(false).err().map(|err| err.to_string()),
                    WeightsResolved::Local(_) | WeightsResolved::Remote => None,
                };
                let held = matches!(s.phase, Phase::Resident { .. });
                Some(ModelStatus {
                    id: id.clone(),
                    name: e.manifest.name.clone(),
                    task: e.manifest.task.clone(),
                    arch: e.manifest.arch.clone(),
                    state: s.phase.state(),
                    failed_reason: match &s.phase {
                        Phase::Failed { reason } => Some(reason.clone()),
                        _ => None,
                    },
                    bytes_done,
                    bytes_total,
                    eta_ms: self.load_progress.get(id).copied().flatten(),
                    predicted_bytes: e.predicted_bytes,
                    measured_bytes: match s.phase {
                        Phase::Resident { measured } => measured,
                        _ => None,
                    },
                    device: if held { device.clone() } else { String::new() },
                    pinned: s.pinned,
                    keep_alive: s.keep_alive.unwrap_or(self.residency.default_keep_alive).to_string(),
                    keep_alive_left_ms: self.residency.keep_alive_left(id, now),
                    last_used_ms_ago: (s.loads_started > 0).then(|| now.saturating_sub(s.last_used)),
                    in_flight: s.in_flight.len(),
                    waiting: s.parked.len() + s.after_unload.len(),
                    loads: s.loads_started,
                    licence: e.manifest.licence.clone(),
                    origin: e.origin.clone(),
                    download_bytes: (weights_missing.is_some()
                        && loader::CAN_DOWNLOAD
                        && !crate::models::hub::offline())
                    .then(|| e.manifest.option("size_bytes", 0.0) as u64),
                    weights_missing,
                    downloading,
                    queued: queued.get(id.as_str()).copied().unwrap_or(0),
                    remote: e.manifest.backend.as_ref().map(|b| {
                        let v = crate::backend::status(b);
                        RemoteStatus {
                            backend: b.describe(),
                            unreachable: v.unreachable,
                            split: v.split,
                            raw: e.manifest.arch == crate::models::manifest::RAW_ARCH,
                            server_state: v.index,
                        }
                    }),
                })
            })
            .collect();
        let snap = Snapshot {
            device,
            budget_bytes: self.residency.budget,
            used_bytes: self.residency.used_bytes(),
            max_resident: self.residency.max_resident,
            models,
            latency: self.stats.snapshot(),
            queue: self.stats.queue_snapshot(),
            cache_entries: self.cache.len(),
            cache_hits: self.cache.hits,
            cache_misses: self.cache.misses,
            reloads_after_eviction: self.reloads_after_eviction,
            queued_interactive: self.scheduler.waiting(Class::Interactive),
            queued_bulk: self.scheduler.waiting(Class::Bulk),
            lanes: self.lanes.count(),
            lanes_busy: self.lanes.busy().iter().filter(|b| b.is_some()).count(),
        };
        match self.snapshot.lock() {
            Ok(mut s) => *s = snap,
            Err(p) => *p.into_inner() = snap,
        }
        self.emit(Event::Changed);
    }
}

fn loader_msg(m: Result<LoaderMsg, crossbeam_channel::RecvError>) -> Result<LoaderMsg, ()> {
    m.map_err(|_| ())
}
