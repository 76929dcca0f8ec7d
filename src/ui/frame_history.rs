//! UI frame times (CPU time spent in `ui()`), like egui's demo app shows.

use std::collections::VecDeque;

#[derive(Default)]
pub struct FrameHistory {
    times_ms: VecDeque<f32>,
    all_ms: Vec<f32>,
    pub frames: u64,
}

const KEEP: usize = 240;

impl FrameHistory {
    pub fn record(&mut self, ms: f32) {
        self.frames += 1;
        self.times_ms.push_back(ms);
        if self.times_ms.len() > KEEP {
            self.times_ms.pop_front();
        }
        if self.all_ms.len() < 1_000_000 {
            self.all_ms.push(ms);
        }
    }

    pub fn mean_ms(&self) -> f32 {
        if self.times_ms.is_empty() {
            0.0
        } else {
            self.times_ms.iter().sum::<f32>() / self.times_ms.len() as f32
        }
    }

    /// Quantile over the recent window.
    pub fn quantile_ms(&self, q: f32) -> f32 {
        quantile(self.times_ms.iter().copied().collect(), q)
    }

    /// Quantile over every frame since start.
    pub fn quantile_all_ms(&self, q: f32) -> f32 {
        quantile(self.all_ms.clone(), q)
    }
}

fn quantile(mut v: Vec<f32>, q: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f32 * q).round() as usize]
}
