//! The sampler thread: reads GPUs and the system at a fixed rate and keeps
//! bounded history that clients read as snapshots. Never runs on the UI thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::gpu::{GpuProbe, GpuSample};
use super::system::{SystemProbe, SystemSample};

#[derive(Debug, Clone, Copy)]
pub struct SamplerConfig {
    pub rate_hz: f64,
    pub history: Duration,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            rate_hz: 2.0,
            history: Duration::from_secs(600),
        }
    }
}

impl SamplerConfig {
    pub fn capacity(&self) -> usize {
        ((self.history.as_secs_f64() * self.rate_hz).ceil() as usize).max(1)
    }
}

/// One point of history: seconds since the sampler started, and the readings.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t: f64,
    pub system: SystemSample,
    pub gpus: Vec<GpuSample>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TelemetrySnapshot {
    /// "ok", or "unavailable: <reason>".
    pub nvml: String,
    pub history: VecDeque<Point>,
    pub samples_taken: u64,
}

impl TelemetrySnapshot {
    pub fn latest(&self) -> Option<&Point> {
        self.history.back()
    }
}

pub struct Sampler {
    shared: Arc<Mutex<TelemetrySnapshot>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts the sampler thread; `wake` is called after each sample.
    pub fn start(config: SamplerConfig, wake: Option<Arc<dyn Fn() + Send + Sync>>) -> Sampler {
        let shared = Arc::new(Mutex::new(TelemetrySnapshot::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (shared.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("modeldock-telemetry".into())
            .spawn(move || {
                let gpu = GpuProbe::open();
                if !gpu.available() {
                    tracing::info!("GPU telemetry: NVML {}; showing CPU and RAM only", gpu.status);
                }
                let mut sys = SystemProbe::open();
                let start = Instant::now();
                let period = Duration::from_secs_f64(1.0 / config.rate_hz.max(0.01));
                let cap = config.capacity();
                while !stop2.load(Ordering::Relaxed) {
                    let p = Point {
                        t: start.elapsed().as_secs_f64(),
                        system: sys.sample(),
                        gpus: gpu.sample(),
                    };
                    {
                        let mut s = match s2.lock() {
                            Ok(s) => s,
                            Err(e) => e.into_inner(),
                        };
                        s.nvml = gpu.status.clone();
                        s.history.push_back(p);
                        while s.history.len() > cap {
                            s.history.pop_front();
                        }
                        s.samples_taken += 1;
                    }
                    if let Some(w) = &wake {
                        w();
                    }
                    // Sleep in small steps so stop is quick.
                    let until = Instant::now() + period;
                    while Instant::now() < until && !stop2.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20).min(period));
                    }
                }
            })
            .ok();
        Sampler { shared, stop, handle }
    }

    pub fn snapshot(&self) -> TelemetrySnapshot {
        match self.shared.lock() {
            Ok(s) => s.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// Runs `f` on the shared snapshot without cloning the history.
    pub fn with<R>(&self, f: impl FnOnce(&TelemetrySnapshot) -> R) -> R {
        match self.shared.lock() {
            Ok(s) => f(&s),
            Err(e) => f(&e.into_inner()),
        }
    }

    pub fn wait_for_samples(&self, n: u64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.with(|s| s.samples_taken) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
