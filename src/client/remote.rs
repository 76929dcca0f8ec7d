//! An engine on the other side of HTTP, behind the same calls as the local
//! one: commands go to a small pool of threads (the caller never waits on the
//! network), answers and changes come back as [`Event`]s, and the snapshot is
//! refreshed by a poller thread and by the server's event stream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::http::HttpClient;
use crate::engine::{Answer, Event, ImageInput, InferError, InferResult, KeepAlive, RequestId, Snapshot, WakeFn};
use crate::vision::InferParams;

/// Requests and commands waiting for the three job threads; past that an
/// image is answered with an error at once.
const JOB_QUEUE: usize = 1024;

pub(super) enum Job {
    Infer {
        id: RequestId,
        model: String,
        input: ImageInput,
        /// Boxed: prompts make the parameters large beside the other jobs.
        params: Box<InferParams>,
        reply: Option<Sender<Answer>>,
    },
    Load(String),
    Unload(String),
    Pin(String, bool),
    KeepAlive(String, Option<KeepAlive>),
}

struct Inner {
    http: HttpClient,
    snapshot: Mutex<Snapshot>,
    /// Why the server cannot be reached, and since when.
    unreachable: Mutex<Option<(Instant, String)>>,
    stop: AtomicBool,
    events: Sender<Event>,
    wake: Mutex<Option<WakeFn>>,
}

#[derive(Clone)]
pub struct RemoteEngine {
    inner: Arc<Inner>,
    jobs: Sender<Job>,
    pub(super) events: Receiver<Event>,
    next_id: Arc<AtomicU64>,
}

fn encode_frame(image: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let _ = image.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}

impl Inner {
    fn wake(&self) {
        let w = match self.wake.lock() {
            Ok(w) => w.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(w) = w {
            w();
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.try_send(e);
        self.wake();
    }

    fn refresh(&self) {
        match self.http.snapshot() {
            Ok(s) => {
                if let Ok(mut g) = self.snapshot.lock() {
                    *g = s;
                }
                if let Ok(mut u) = self.unreachable.lock() {
                    *u = None;
                }
            }
            Err(e) => {
                if let Ok(mut u) = self.unreachable.lock() {
                    if u.is_none() {
                        *u = Some((Instant::now(), e.to_string()));
                    }
                }
            }
        }
        self.emit(Event::Changed);
    }

    fn run(&self, job: Job) {
        match job {
            Job::Infer {
                id,
                model,
                input,
                params,
                reply,
            } => {
                let name = input.name();
                let fail = |error: String| InferError::new(id, model.clone(), name.clone(), error);
                let bytes = match &input {
                    ImageInput::Path(p) => std::fs::read(p).map_err(|e| format!("{name}: {e}")),
                    ImageInput::Bytes { bytes, .. } => Ok(bytes.to_vec()),
                    ImageInput::Frame { image, .. } => Ok(encode_frame(image)),
                    ImageInput::Tensors { .. } => Err(format!(
                        "{name}: tensors go to a server in a tensor request, not as an image"
                    )),
                };
                let answer: Answer = match bytes {
                    Err(e) => Err(fail(e)),
                    Ok(b) => match self.http.infer(&model, &[(name.clone(), b)], *params) {
                        Err(e) => Err(fail(e.to_string())),
                        Ok(mut v) => match v.pop() {
                            Some(v) => match v.get("error").and_then(|e| e.as_str()) {
                                Some(e) => Err(fail(e.to_string())),
                                None => InferResult::from_json(&v, id)
                                    .ok_or_else(|| fail("the server's answer has an unexpected shape".into())),
                            },
                            None => Err(fail("the server sent no answer".into())),
                        },
                    },
                };
                match reply {
                    Some(r) => {
                        let _ = r.send(answer);
                        self.wake();
                    }
                    None => self.emit(Event::Answer(answer)),
                }
            }
            Job::Load(m) => {
                if let Err(e) = self.http.load(&m, None, false, false) {
                    self.emit(Event::LoadFailed {
                        model: m,
                        error: e.to_string(),
                    });
                }
                self.refresh();
            }
            Job::Unload(m) => {
                if let Err(e) = self.http.unload(Some(&m)) {
                    self.emit(Event::LoadFailed {
                        model: m,
                        error: e.to_string(),
                    });
                }
                self.refresh();
            }
            Job::Pin(m, p) => {
                let _ = self.http.pin(&m, p);
                self.refresh();
            }
            Job::KeepAlive(m, k) => {
                let ka = k.map(|k| match k {
                    KeepAlive::Forever => "-1".to_string(),
                    other => other.to_string(),
                });
                if ka.is_some() {
                    let _ = self.http.load(&m, ka, false, false);
                }
                self.refresh();
            }
        }
    }
}

impl RemoteEngine {
    /// Starts the pool, the poller and the event follower for `http`.
    pub fn start(http: HttpClient, wake: Option<WakeFn>) -> RemoteEngine {
        let (etx, erx) = bounded(4096);
        let inner = Arc::new(Inner {
            http,
            snapshot: Mutex::new(Snapshot::default()),
            unreachable: Mutex::new(None),
            stop: AtomicBool::new(false),
            events: etx,
            wake: Mutex::new(wake),
        });
        inner.refresh();
        let (jtx, jrx) = bounded::<Job>(JOB_QUEUE);
        for i in 0..3 {
            let inner = inner.clone();
            let jrx = jrx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("modeldock-remote-{i}"))
                .spawn(move || {
                    while let Ok(j) = jrx.recv() {
                        inner.run(j);
                    }
                });
        }
        {
            let inner = inner.clone();
            let _ = std::thread::Builder::new()
                .name("modeldock-remote-poll".into())
                .spawn(move || {
                    while !inner.stop.load(Ordering::Relaxed) {
                        inner.refresh();
                        std::thread::sleep(Duration::from_millis(500));
                    }
                });
        }
        {
            let inner = inner.clone();
            let _ = std::thread::Builder::new()
                .name("modeldock-remote-events".into())
                .spawn(move || {
                    while !inner.stop.load(Ordering::Relaxed) {
                        let _ = inner.http.follow_events(|name, v| {
                            if let Some(e) = crate::engine::event_json::read(name, v) {
                                inner.emit(e);
                            }
                            inner.refresh();
                            !inner.stop.load(Ordering::Relaxed)
                        });
                        std::thread::sleep(Duration::from_secs(1));
                    }
                });
        }
        RemoteEngine {
            inner,
            jobs: jtx,
            events: erx,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    pub fn base(&self) -> &str {
        &self.inner.http.base
    }

    pub fn set_wake(&self, wake: WakeFn) {
        if let Ok(mut w) = self.inner.wake.lock() {
            *w = Some(wake);
        }
    }

    /// "unreachable since 12:01:07: …" while the server does not answer.
    pub fn unreachable(&self) -> Option<String> {
        let g = self.inner.unreachable.lock().ok()?;
        let (since, why) = g.as_ref()?;
        Some(format!(
            "unreachable for {} s, retrying: {why}",
            since.elapsed().as_secs()
        ))
    }

    /// Queues an image; its answer goes to `reply`, or out as
    /// [`Event::Answer`] without one.
    pub(super) fn send_infer(
        &self,
        model: &str,
        input: ImageInput,
        params: InferParams,
        reply: Option<Sender<Answer>>,
    ) -> RequestId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Job::Infer {
            id,
            model: model.to_string(),
            input,
            params: Box::new(params),
            reply,
        };
        if let Err(e) = self.jobs.try_send(job) {
            // Full (or no job thread left): the request is answered now, not lost.
            if let Job::Infer {
                id,
                model,
                input,
                reply,
                ..
            } = e.into_inner()
            {
                let why = format!("{JOB_QUEUE} requests already wait for the server; try again");
                let answer: Answer = Err(InferError::new(id, model, input.name(), why));
                match reply {
                    Some(r) => {
                        let _ = r.send(answer);
                        self.inner.wake();
                    }
                    None => self.inner.emit(Event::Answer(answer)),
                }
            }
        }
        id
    }

    /// Queues a command, or says that the queue is full (the user can ask again).
    pub(super) fn command(&self, job: Job) -> crate::Result<()> {
        self.jobs
            .try_send(job)
            .map_err(|_| crate::Error::unavailable(format!("{JOB_QUEUE} jobs already wait for the server; try again")))
    }

    /// The server's last snapshot, as the poller read it.
    pub(super) fn latest_snapshot(&self) -> Snapshot {
        match self.inner.snapshot.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Stops the job threads, the poller and the event follower.
    pub(super) fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }
}
