//! Frames and the one-slot, latest-wins hand-off between threads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub id: u64,
    pub captured: Instant,
    pub image: Arc<RgbImage>,
}

/// A one-slot hand-off: `put` replaces a waiting frame (which is then counted
/// as dropped); `take` empties the slot. Nothing ever queues behind it, so
/// memory and latency stay flat however slow the consumer is.
#[derive(Default)]
pub struct LatestSlot {
    slot: Mutex<Option<Frame>>,
    ready: Condvar,
    dropped: AtomicU64,
    put: AtomicU64,
    max_len: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

impl LatestSlot {
    pub fn new() -> Arc<Self> {
        Arc::new(LatestSlot::default())
    }

    pub fn put(&self, f: Frame) {
        let mut s = match self.slot.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if s.replace(f).is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.put.fetch_add(1, Ordering::Relaxed);
        self.max_len.fetch_max(s.iter().count(), Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for a frame.
    pub fn take(&self, timeout: Duration) -> Option<Frame> {
        let end = Instant::now() + timeout;
        let mut s = match self.slot.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        loop {
            if let Some(f) = s.take() {
                return Some(f);
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            s = match self.ready.wait_timeout(s, end - now) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_all();
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Most frames ever waiting at once (1 by construction; measured, not assumed).
    pub fn max_len(&self) -> usize {
        self.max_len.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        match self.slot.lock() {
            Ok(s) => s.iter().count(),
            Err(p) => p.into_inner().iter().count(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u64) -> Frame {
        Frame {
            id,
            captured: Instant::now(),
            image: Arc::new(RgbImage::new(1, 1)),
        }
    }

    #[test]
    fn latest_frame_wins_and_stale_ones_are_counted() {
        let s = LatestSlot::new();
        for i in 0..5 {
            s.put(frame(i));
        }
        assert_eq!(s.len(), 1);
        assert_eq!(s.dropped(), 4);
        assert_eq!(s.take(Duration::ZERO).map(|f| f.id), Some(4));
        assert!(s.take(Duration::from_millis(1)).is_none());
        assert_eq!(s.max_len(), 1);
    }
}
