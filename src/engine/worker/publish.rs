//! The published [`Snapshot`]: what the UI, `/api/ps` and the metrics read.

use std::collections::HashMap;

use super::Worker;
use crate::catalog::registry::WeightsResolved;
use crate::engine::loader;
use crate::engine::memory::CacheMemory;
use crate::engine::residency::Phase;
use crate::engine::scheduler::Class;
use crate::engine::{Event, ModelStatus, RemoteStatus, Snapshot};

impl Worker {
    pub(super) fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let now = self.now();
        let device = match &self.config.device_note {
            Some(note) => format!("{} ({note})", self.config.device.label()),
            None => self.config.device.label(),
        };
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
                let held = s.phase.holds_weights();
                Some(ModelStatus {
                    id: id.clone(),
                    name: e.manifest.name.clone(),
                    task: e.manifest.task,
                    arch: e.manifest.arch,
                    state: s.phase.state(),
                    failed_reason: match &s.phase {
                        Phase::Failed { reason } => Some(reason.clone()),
                        _ => None,
                    },
                    bytes_done,
                    bytes_total,
                    eta_ms: self.load_progress.get(id).copied().flatten(),
                    predicted_bytes: e.predicted_bytes,
                    measured_bytes: s.phase.measured(),
                    device: if held { device.clone() } else { String::new() },
                    pinned: s.pinned,
                    keep_alive: s.keep_alive.unwrap_or(self.residency.default_keep_alive).to_string(),
                    keep_alive_left_ms: self.residency.keep_alive_left(id, now),
                    last_used_ms_ago: (s.loads_started > 0).then(|| now.saturating_sub(s.last_used)),
                    in_flight: s.in_flight.len(),
                    waiting: s.parked.len() + s.after_unload.len(),
                    loads: s.loads_started,
                    licence: e.manifest.licence.clone(),
                    precision: precision(e),
                    conf: e.manifest.conf,
                    iou: e.manifest.iou,
                    options: e.manifest.options.clone(),
                    origin: e.origin.clone(),
                    download_bytes: (weights_missing.is_some()
                        && loader::CAN_DOWNLOAD
                        && !crate::catalog::hub::offline())
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
                            raw: e.manifest.arch == crate::catalog::Arch::Raw,
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
            cache_memory: CacheMemory {
                bytes: self.cache.bytes() as u64,
                limit_bytes: self.config.cache_bytes as u64,
                limit_entries: self.config.cache_entries,
            },
            hand_backs: self.hand_backs,
        };
        match self.snapshot.lock() {
            Ok(mut s) => *s = snap,
            Err(p) => *p.into_inner() = snap,
        }
        self.emit(Event::Changed);
    }
}

/// What `e`'s network computes in here: every local network runs in f32
/// (f16/bf16 weights are widened as they load, on every device), so the
/// weights' stored dtype is named when it differs.
fn precision(e: &crate::catalog::registry::Entry) -> String {
    if e.manifest.backend.is_some() {
        return "remote".to_string();
    }
    let stored = e.weights_dtype.as_deref().unwrap_or(e.manifest.dtype.as_str());
    match stored {
        "f32" | "" => "f32".to_string(),
        d => format!("f32 ({d} weights)"),
    }
}
