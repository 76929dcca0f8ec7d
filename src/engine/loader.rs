//! The loader thread: weights → tensors on the device, with progress.
//! It never touches a model after handing it to the worker.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use crossbeam_channel::{Receiver, Sender};

use crate::models::registry::Entry;
use crate::models::weights::WeightsSource;
use crate::models::{self, Model};
use crate::telemetry::process;

pub struct LoadJob {
    pub entry: Entry,
    pub device: Device,
    pub random_weights: bool,
}

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
    },
    Done {
        model: String,
        result: Result<Loaded, String>,
    },
}

/// Minimum time between two progress messages (~20 per second).
const PROGRESS_EVERY_MS: u128 = 50;

pub fn spawn(jobs: Receiver<LoadJob>, out: Sender<LoaderMsg>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("modeldock-loader".into())
        .spawn(move || {
            for job in jobs {
                let id = job.entry.manifest.id.clone();
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| load_one(&job, &out)))
                    .unwrap_or_else(|p| Err(format!("{id}: loader panicked: {}", panic_text(&p))));
                if out.send(LoaderMsg::Done { model: id, result }).is_err() {
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

fn load_one(job: &LoadJob, out: &Sender<LoaderMsg>) -> Result<Loaded, String> {
    let e = &job.entry;
    let id = e.manifest.id.clone();
    let source = e.weights_source(job.random_weights).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let rss_before = process::rss_bytes();
    let gpu_index = cuda_index(&job.device);
    let gpu_before = gpu_index.and_then(crate::telemetry::nvml::own_used_memory);
    let total = match &source {
        WeightsSource::File(p) => crate::models::weights::read_header(p)
            .map(|h| h.data_bytes)
            .unwrap_or(e.predicted_bytes),
        _ => e.predicted_bytes,
    };
    let last = Arc::new(std::sync::Mutex::new(
        Instant::now() - std::time::Duration::from_secs(1),
    ));
    let (tx, model_id) = (out.clone(), id.clone());
    let progress: models::weights::ProgressFn = Arc::new(move |done, total| {
        let now = Instant::now();
        let mut l = match last.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if now.duration_since(*l).as_millis() < PROGRESS_EVERY_MS && done < total {
            return;
        }
        *l = now;
        let el = now.duration_since(start).as_secs_f64();
        let eta_ms = (done > 0 && done <= total).then(|| (el / done as f64 * (total - done) as f64 * 1e3) as u64);
        let _ = tx.try_send(LoaderMsg::Progress {
            model: model_id.clone(),
            done,
            total,
            eta_ms,
        });
    });
    let model = models::build(&e.manifest, &source, total, &job.device, progress).map_err(|err| {
        let s = err.to_string();
        if s.contains(&id) || s.contains(&source.describe()) {
            s
        } else {
            format!("{id} ({}): {s}", source.describe())
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

/// The CUDA ordinal of `device`, if it is a CUDA device.
pub fn cuda_index(device: &Device) -> Option<usize> {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => Some(gpu_id),
        _ => None,
    }
}
