//! Per-model latency statistics: an HDR histogram of total latency, the last
//! request's stage split, and a short history for plots.

use std::collections::{BTreeMap, VecDeque};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::vision::Timings;

const HISTORY: usize = 300;

struct ModelStats {
    hist: Histogram<u64>,
    last: Timings,
    history: VecDeque<f64>,
    errors: u64,
    cache_hits: u64,
}

/// What clients see.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencySnapshot {
    pub model: String,
    pub count: u64,
    pub errors: u64,
    pub cache_hits: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub last: Timings,
    pub history_ms: Vec<f64>,
}

/// Queue time of one scheduling class (interactive, bulk).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub class: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

#[derive(Default)]
pub struct Stats {
    models: BTreeMap<String, ModelStats>,
    queue: BTreeMap<&'static str, Histogram<u64>>,
}

impl Stats {
    fn entry(&mut self, model: &str) -> &mut ModelStats {
        self.models.entry(model.to_string()).or_insert_with(|| ModelStats {
            hist: histogram(),
            last: Timings::default(),
            history: VecDeque::new(),
            errors: 0,
            cache_hits: 0,
        })
    }

    pub fn record(&mut self, model: &str, t: &Timings, cached: bool) {
        let s = self.entry(model);
        let us = (t.total * 1000.0).round().max(1.0) as u64;
        s.hist.saturating_record(us);
        s.last = *t;
        if cached {
            s.cache_hits += 1;
        }
        s.history.push_back(t.total);
        if s.history.len() > HISTORY {
            s.history.pop_front();
        }
    }

    /// How long an image of `class` waited before it started.
    pub fn record_queue(&mut self, class: &'static str, queue_ms: f64) {
        let us = (queue_ms * 1000.0).round().max(1.0) as u64;
        self.queue.entry(class).or_insert_with(histogram).saturating_record(us);
    }

    pub fn queue_snapshot(&self) -> Vec<QueueSnapshot> {
        self.queue
            .iter()
            .map(|(c, h)| QueueSnapshot {
                class: c.to_string(),
                count: h.len(),
                p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms: h.max() as f64 / 1000.0,
            })
            .collect()
    }

    pub fn record_error(&mut self, model: &str) {
        self.entry(model).errors += 1;
    }

    pub fn snapshot(&self) -> Vec<LatencySnapshot> {
        self.models
            .iter()
            .map(|(m, s)| {
                let q = |p: f64| s.hist.value_at_quantile(p) as f64 / 1000.0;
                LatencySnapshot {
                    model: m.clone(),
                    count: s.hist.len(),
                    errors: s.errors,
                    cache_hits: s.cache_hits,
                    p50_ms: q(0.5),
                    p95_ms: q(0.95),
                    p99_ms: q(0.99),
                    max_ms: s.hist.max() as f64 / 1000.0,
                    last: s.last,
                    history_ms: s.history.iter().copied().collect(),
                }
            })
            .collect()
    }
}
