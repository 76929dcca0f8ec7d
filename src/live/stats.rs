//! Live figures: camera FPS, inference FPS and end-to-end latency, kept apart,
//! as running averages over a recent window.

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

const WINDOW: usize = 60;

#[derive(Default)]
pub struct LiveStats {
    captures: VecDeque<Instant>,
    results: VecDeque<Instant>,
    e2e_recent: VecDeque<f64>,
    pub e2e_all: Vec<f64>,
    pub inference_all: Vec<f64>,
    pub frames_captured: u64,
    pub frames_inferred: u64,
    pub first_capture: Option<Instant>,
    pub last_capture: Option<Instant>,
}

fn rate(v: &VecDeque<Instant>) -> f64 {
    match (v.front(), v.back()) {
        (Some(a), Some(b)) if v.len() > 1 && b > a => (v.len() - 1) as f64 / (*b - *a).as_secs_f64(),
        _ => 0.0,
    }
}

fn push<T>(v: &mut VecDeque<T>, x: T) {
    v.push_back(x);
    if v.len() > WINDOW {
        v.pop_front();
    }
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// What panels and the CLI show.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveSummary {
    pub frames_captured: u64,
    pub frames_inferred: u64,
    pub frames_dropped: u64,
    pub camera_fps: f64,
    pub inference_fps: f64,
    pub e2e_latency_avg_ms: f64,
    pub e2e_latency_p50_ms: f64,
    pub e2e_latency_p95_ms: f64,
    pub inference_p50_ms: f64,
    pub max_queue_len: usize,
}

impl LiveStats {
    pub fn captured(&mut self, at: Instant) {
        self.frames_captured += 1;
        self.first_capture.get_or_insert(at);
        self.last_capture = Some(at);
        push(&mut self.captures, at);
    }

    /// A result is ready (`inference_ms` as the engine measured it).
    pub fn inferred(&mut self, at: Instant, inference_ms: f64) {
        self.frames_inferred += 1;
        push(&mut self.results, at);
        self.inference_all.push(inference_ms);
    }

    /// The overlay of a frame captured at `captured` was drawn (or, headless, is ready) at `at`.
    pub fn shown(&mut self, captured: Instant, at: Instant) {
        let ms = at.saturating_duration_since(captured).as_secs_f64() * 1e3;
        push(&mut self.e2e_recent, ms);
        self.e2e_all.push(ms);
    }

    pub fn summary(&self, dropped: u64, max_queue_len: usize) -> LiveSummary {
        LiveSummary {
            frames_captured: self.frames_captured,
            frames_inferred: self.frames_inferred,
            frames_dropped: dropped,
            camera_fps: rate(&self.captures),
            inference_fps: rate(&self.results),
            e2e_latency_avg_ms: if self.e2e_recent.is_empty() {
                0.0
            } else {
                self.e2e_recent.iter().sum::<f64>() / self.e2e_recent.len() as f64
            },
            e2e_latency_p50_ms: percentile(&self.e2e_all, 0.5),
            e2e_latency_p95_ms: percentile(&self.e2e_all, 0.95),
            inference_p50_ms: percentile(&self.inference_all, 0.5),
            max_queue_len,
        }
    }
}
