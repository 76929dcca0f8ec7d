//! What every handler shares: the engine handle (and through it the catalogue), the bounded
//! queue, per-model statistics and the event fan-out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, Semaphore};

use super::metrics::Metrics;
use crate::engine::{Engine, Event, ModelStatus};
use crate::vision::Timings;

/// A count and a total duration, as Triton's statistics extension reports them.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Duration64 {
    pub count: u64,
    pub ns: u64,
}

impl Duration64 {
    fn add(&mut self, ms: f64) {
        self.count += 1;
        self.ns += (ms.max(0.0) * 1e6) as u64;
    }
}

/// Per-model counters of the statistics extension.
#[derive(Debug, Clone, Default)]
pub struct ModelStats {
    pub last_inference_ms: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub success: Duration64,
    pub fail: Duration64,
    pub queue: Duration64,
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
    pub compute_output: Duration64,
    pub cache_hit: Duration64,
    pub cache_miss: Duration64,
}

impl ModelStats {
    pub fn record_ok(&mut self, t: &Timings, cached: bool) {
        self.last_inference_ms = now_epoch_ms();
        self.inference_count += 1;
        self.success.add(t.total);
        self.queue.add(t.queue);
        if cached {
            self.cache_hit.add(t.total);
        } else {
            self.execution_count += 1;
            self.cache_miss.add(t.total);
            self.compute_input.add(t.decode + t.preprocess);
            self.compute_infer.add(t.forward);
            self.compute_output.add(t.postprocess);
        }
    }

    pub fn record_fail(&mut self, ms: f64) {
        self.last_inference_ms = now_epoch_ms();
        self.fail.add(ms);
    }
}

pub fn now_epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Options fixed at start.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub max_queue: usize,
    /// Images one client may have waiting at once, so no client holds
    /// every permit of `max_queue`.
    pub max_queue_per_client: usize,
    pub max_body: usize,
    pub timeout: Duration,
    /// Keys, allowed hosts and origins.
    pub access: super::security::Access,
    /// How long shutdown waits for requests in flight.
    pub drain: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_queue: 64,
            max_queue_per_client: 32,
            max_body: 256 << 20,
            timeout: Duration::from_secs(120),
            access: super::security::Access::default(),
            drain: Duration::from_secs(10),
        }
    }
}

impl ServerOptions {
    /// Half of the queue, at least one image.
    pub fn default_per_client(max_queue: usize) -> usize {
        (max_queue / 2).max(1)
    }
}

/// Images each client has waiting; an entry leaves when its count is 0.
#[derive(Default)]
pub struct PerClient(Mutex<std::collections::HashMap<String, usize>>);

/// A client's share of the queue, given back when dropped.
pub struct ClientPermits {
    table: State,
    client: String,
    n: usize,
}

impl PerClient {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl Shared {
    /// Takes `n` of `client`'s share of the queue, or says how many it holds.
    pub fn client_permits(state: &State, client: &str, n: usize) -> Result<ClientPermits, usize> {
        let mut t = state.per_client.lock();
        let held = t.get(client).copied().unwrap_or(0);
        if held + n > state.options.max_queue_per_client {
            return Err(held);
        }
        t.insert(client.to_string(), held + n);
        Ok(ClientPermits {
            table: state.clone(),
            client: client.to_string(),
            n,
        })
    }
}

impl Drop for ClientPermits {
    fn drop(&mut self) {
        let mut t = self.table.per_client.lock();
        if let Some(held) = t.get_mut(&self.client) {
            *held = held.saturating_sub(self.n);
            if *held == 0 {
                t.remove(&self.client);
            }
        }
    }
}

pub struct Shared {
    pub engine: Engine,
    /// The listening address is a loopback one: `Host` is checked.
    pub loopback: bool,
    pub options: ServerOptions,
    /// Permits for images waiting on or in the engine; none left = 503.
    pub queue: Arc<Semaphore>,
    /// Each client's images in `queue`.
    pub per_client: PerClient,
    pub stats: Mutex<BTreeMap<String, ModelStats>>,
    pub metrics: Metrics,
    pub events: broadcast::Sender<Event>,
    /// Set when the server starts shutting down: event streams end at once.
    pub closing: tokio::sync::watch::Sender<bool>,
}

pub type State = Arc<Shared>;

impl Shared {
    pub fn stats_mut<R>(&self, model: &str, f: impl FnOnce(&mut ModelStats) -> R) -> R {
        let mut g = match self.stats.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(g.entry(model.to_string()).or_default())
    }

    pub fn stats_of(&self, model: &str) -> ModelStats {
        self.stats_mut(model, |s| s.clone())
    }

    pub fn status(&self, model: &str) -> Option<ModelStatus> {
        self.engine.status(model)
    }
}
