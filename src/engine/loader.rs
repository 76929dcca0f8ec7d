//! The loader thread: weights → tensors on the device, with progress.
//! It never touches a model after handing it to the worker.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use crossbeam_channel::{Receiver, Sender};

use crate::catalog::registry::{Entry, WeightsResolved};
use crate::catalog::weights_source::WeightsSource;
use crate::error::{Error, Result};
use crate::models::{self, Model};
use crate::telemetry::process;

pub struct LoadJob {
    pub entry: Entry,
    pub device: Device,
    pub random_weights: bool,
    /// Set by the worker when nothing waits for this load any more.
    pub cancel: Arc<AtomicBool>,
}

/// What the loader thread does, one job after another.
pub enum LoaderJob {
    Load(Box<LoadJob>),
    /// A freed model's device memory: wait (at most [`FREE_WAIT`]) until
    /// NVML sees GPU `gpu`'s memory back (`before` less about `expect`
    /// bytes), so that the loads queued behind it start on a device that
    /// has it, and measure their own size only. The worker goes on serving
    /// meanwhile.
    AwaitFree {
        model: String,
        gpu: usize,
        before: u64,
        expect: u64,
    },
}

/// The longest wait for a freed model's device memory.
pub const FREE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub struct Loaded {
    pub model: Box<dyn Model>,
    pub measured_bytes: Option<u64>,
    pub load_ms: f64,
}

pub enum LoaderMsg {
    Progress {
        model: String,
        done: u64,
        total: u64,
        eta_ms: Option<u64>,
        /// The first phase: the weights are downloading (bytes of the file).
        downloading: bool,
    },
    Done {
        model: String,
        result: Result<Loaded>,
    },
    /// The load was cancelled: skipped, or what it read already dropped.
    Cancelled {
        model: String,
    },
}

/// Minimum time between two progress messages (~20 per second).
const PROGRESS_EVERY_MS: u128 = 50;

/// A load downloads a hub model's missing weights first (the `hub` feature).
pub const CAN_DOWNLOAD: bool = cfg!(feature = "hub");

/// Times an interrupted download resumes within one load.
const DOWNLOAD_RETRIES: usize = 3;

/// Sends rate-limited progress messages for one phase of one load.
struct Reporter {
    tx: Sender<LoaderMsg>,
    model: String,
    start: Instant,
    last: Option<Instant>,
    downloading: bool,
}

impl Reporter {
    fn new(tx: &Sender<LoaderMsg>, model: &str, downloading: bool) -> Reporter {
        Reporter {
            tx: tx.clone(),
            model: model.to_string(),
            start: Instant::now(),
            last: None,
            downloading,
        }
    }

    fn report(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        if let Some(l) = self.last {
            if now.duration_since(l).as_millis() < PROGRESS_EVERY_MS && done < total {
                return;
            }
        }
        self.last = Some(now);
        let el = now.duration_since(self.start).as_secs_f64();
        let eta_ms = (done > 0 && done <= total).then(|| (el / done as f64 * (total - done) as f64 * 1e3) as u64);
        let _ = self.tx.try_send(LoaderMsg::Progress {
            model: self.model.clone(),
            done,
            total,
            eta_ms,
            downloading: self.downloading,
        });
    }
}

impl crate::catalog::hub::PullProgress for Reporter {
    fn start(&mut self, total: u64) {
        // A resumed download counts its ETA from here.
        self.start = Instant::now();
        self.last = None;
        self.report(0, total);
    }

    fn update(&mut self, done: u64, total: u64) {
        self.report(done, total);
    }
}

/// The weights of `e`: for a hub model not in the cache (and a build with
/// the `hub` feature), downloaded first, with progress in the download phase.
fn weights_for(job: &LoadJob, out: &Sender<LoaderMsg>) -> Result<WeightsSource> {
    let e = &job.entry;
    match e.weights_source(job.random_weights) {
        Ok(s) => Ok(s),
        Err(missing) => match &e.weights {
            WeightsResolved::Hub { repo, file, revision } if CAN_DOWNLOAD => {
                let id = &e.manifest.id;
                tracing::info!("{id}: downloading {repo}/{file}@{revision}");
                let mut reporter = Reporter::new(out, id, true);
                if crate::catalog::shards::is_index(file) {
                    let pulled =
                        crate::catalog::hub::pull_shards(repo, file, revision, DOWNLOAD_RETRIES, &mut reporter)?;
                    tracing::info!(
                        "{id}: downloaded {} shards, {} bytes",
                        pulled.shards.len(),
                        pulled.bytes()
                    );
                    return Ok(pulled.source());
                }
                let pulled = crate::catalog::hub::pull(repo, file, revision, DOWNLOAD_RETRIES, &mut reporter)?;
                tracing::info!("{id}: downloaded {} bytes to {}", pulled.bytes, pulled.path.display());
                Ok(WeightsSource::File(pulled.path))
            }
            _ => Err(missing),
        },
    }
}

pub fn spawn(jobs: Receiver<LoaderJob>, out: Sender<LoaderMsg>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("modeldock-loader".into())
        .spawn(move || {
            for job in jobs {
                let job = match job {
                    LoaderJob::Load(job) => *job,
                    LoaderJob::AwaitFree {
                        model,
                        gpu,
                        before,
                        expect,
                    } => {
                        if !crate::telemetry::nvml::wait_released(gpu, before, expect, FREE_WAIT) {
                            tracing::warn!("{model}: device memory not released within {} s", FREE_WAIT.as_secs());
                        }
                        continue;
                    }
                };
                let id = job.entry.manifest.id.clone();
                let msg = if job.cancel.load(Ordering::Acquire) {
                    LoaderMsg::Cancelled { model: id }
                } else {
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| load_one(&job, &out)))
                        .unwrap_or_else(|p| Err(Error::msg(format!("{id}: loader panicked: {}", panic_text(&p)))));
                    match result {
                        // Cancelled while it loaded: its memory goes back now.
                        Ok(loaded) if job.cancel.load(Ordering::Acquire) => {
                            drop(loaded);
                            super::allocator::release_free_memory();
                            LoaderMsg::Cancelled { model: id }
                        }
                        // Stopped part-way: what was read is already dropped. (A
                        // load wanted again meanwhile starts afresh.)
                        Err(e) if e.to_string().ends_with(models::weights_files::CANCELLED) => {
                            super::allocator::release_free_memory();
                            LoaderMsg::Cancelled { model: id }
                        }
                        result => LoaderMsg::Done { model: id, result },
                    }
                };
                if out.send(msg).is_err() {
                    break;
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the loader thread: {e}"))
}

pub fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

fn load_one(job: &LoadJob, out: &Sender<LoaderMsg>) -> Result<Loaded> {
    let e = &job.entry;
    let id = e.manifest.id.clone();
    if e.manifest.backend.is_some() {
        return load_remote(job, out);
    }
    let source = weights_for(job, out)?;
    let start = Instant::now();
    let rss_before = process::rss_bytes();
    let gpu_index = cuda_index(&job.device);
    let gpu_before = gpu_index.and_then(crate::telemetry::nvml::own_used_memory);
    let total = match &source {
        WeightsSource::File(_) | WeightsSource::Shards { .. } => source
            .header()
            .ok()
            .flatten()
            .map(|h| h.data_bytes)
            .unwrap_or(e.predicted_bytes),
        _ => e.predicted_bytes,
    };
    let reporter = std::sync::Mutex::new(Reporter::new(out, &id, false));
    let progress: models::weights::ProgressFn = Arc::new(move |done, total| {
        match reporter.lock() {
            Ok(mut r) => r.report(done, total),
            Err(p) => p.into_inner().report(done, total),
        };
    });
    let cancel = Some(job.cancel.clone());
    let model =
        models::build_cancellable(&e.manifest, &source, total, &job.device, progress, cancel).map_err(|err| {
            let s = err.to_string();
            if s.contains(&id) || s.contains(&source.describe()) {
                err
            } else {
                err.context(format!("{id} ({})", source.describe()))
            }
        })?;
    let measured = match (&job.device, rss_before, process::rss_bytes()) {
        (Device::Cpu, Some(a), Some(b)) => Some(b.saturating_sub(a)),
        (Device::Cpu, _, _) => None,
        // On CUDA, the device memory delta of this process, from NVML.
        _ => match (gpu_before, gpu_index.and_then(crate::telemetry::nvml::own_used_memory)) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
    };
    Ok(Loaded {
        model,
        measured_bytes: measured,
        load_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// One whole request on a plain grey image, run by the worker (the thread
/// requests run on) as a model arrives, so the first real request finds the
/// thread pool started and that thread's kernel scratch and allocator arena
/// already grown for pre-processing and the network (a process's first
/// forward was 2-3x a warm one). Only models with one network input (their
/// input size known); a failure is logged, never fails the load (a request
/// would report it).
pub(super) fn warm_up(id: &str, model: &dyn Model) {
    let Some(shape) = model.raw_input_shape() else {
        return;
    };
    let t = Instant::now();
    let (w, h) = match shape.as_slice() {
        [.., h, w] => (*w as u32, *h as u32),
        _ => return,
    };
    // Landscape, so letterboxing pads as it does for most photos.
    let img = image::RgbImage::from_pixel(w * 3 / 2, h, image::Rgb([114, 114, 114]));
    let run = model.infer(&img, &crate::vision::InferParams::default());
    match run {
        Ok(_) => tracing::debug!("{id}: warmed up in {:.1} ms", t.elapsed().as_secs_f64() * 1e3),
        Err(e) => tracing::warn!("{id}: warm-up pass failed: {e}"),
    }
}

/// A model whose network runs on a server: the server loads it (repository
/// extension); its memory is the server's, so nothing is charged here.
fn load_remote(job: &LoadJob, out: &Sender<LoaderMsg>) -> Result<Loaded> {
    let m = &job.entry.manifest;
    let start = Instant::now();
    let mut reporter = Reporter::new(out, &m.id, false);
    reporter.report(0, 1);
    let model = models::build_remote(m, &job.device)?;
    reporter.report(1, 1);
    Ok(Loaded {
        model,
        measured_bytes: Some(0),
        load_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// The CUDA ordinal of `device`, if it is a CUDA device.
pub fn cuda_index(device: &Device) -> Option<usize> {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => Some(gpu_id),
        _ => None,
    }
}
