//! The live pipeline: a capture thread feeds a one-slot hand-off; an
//! inference thread always takes the newest frame. Stale frames are dropped
//! and counted, never queued.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::hand_tracker::{HandTracker, TrackCounts, TrackOptions};
use super::stats::{LiveStats, LiveSummary};
use crate::camera::frame::{Frame, LatestSlot};
use crate::camera::source::SourceFactory;
use crate::client::{ImageInput, InferWait, WakeFn};
use crate::vision::one_euro::{HandSmoother, HAND_SMOOTHING};
use crate::vision::{Detection, InferParams};

#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// The models run on every frame, in order; their detections merge.
    pub models: Vec<String>,
    pub params: InferParams,
    /// Flip frames left-right before inference (a selfie view).
    pub mirror: bool,
    /// Stop after this many captured frames.
    pub max_frames: Option<u64>,
    /// No window: a result counts as shown when it is ready.
    pub headless: bool,
    /// Track hands between frames (see `live::hand_tracker`): each frame's
    /// hands are the next frame's crops and the palm detector runs only when
    /// needed. `None` runs every model's single-image pipeline on every frame.
    pub track: Option<TrackOptions>,
}

#[derive(Clone, Debug)]
pub struct LiveResult {
    pub frame_id: u64,
    /// The frame these detections were computed on (overlays drawn on it
    /// line up whatever the inference time).
    pub frame: Frame,
    pub captured: Instant,
    pub ready: Instant,
    /// The model's detections, as they came.
    pub detections: Vec<Detection>,
    /// The same detections with each hand's landmarks smoothed over frames
    /// (One Euro filter, one track per hand, frame capture times as the
    /// clock; see `vision::one_euro`), for overlays that should not jitter.
    /// Other detections are as in `detections`.
    pub smoothed: Vec<Detection>,
    /// The masks the model made (segmentation models), in image pixels.
    pub masks: Vec<crate::vision::Mask>,
    pub image_size: [u32; 2],
    pub inference_ms: f64,
}

#[derive(Default)]
struct Shared {
    latest_frame: Option<Frame>,
    latest_result: Option<LiveResult>,
    stats: LiveStats,
    status: String,
    capture_done: bool,
    infer_done: bool,
    shown_up_to: Option<u64>,
    history: VecDeque<(u64, Vec<Detection>)>,
    rss: Vec<u64>,
    track: Option<TrackCounts>,
}

const HISTORY: usize = 10_000;

pub struct LivePipeline {
    slot: Arc<LatestSlot>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub options: LiveOptions,
    pub source_name: String,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The capture thread: opens the source, then puts each frame (mirrored if
/// asked) in the slot until stopped, out of frames or failing.
fn capture_frames(
    source: SourceFactory,
    s: Arc<LatestSlot>,
    sh: Arc<Mutex<Shared>>,
    st: Arc<AtomicBool>,
    w: Option<WakeFn>,
    opts: LiveOptions,
) {
    let mut source = match (source.make)() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("live: {e}");
            let mut g = lock(&sh);
            g.status = format!("camera error: {e} (press Start to retry)");
            g.capture_done = true;
            s.close();
            return;
        }
    };
    let mut id = 0u64;
    while !st.load(Ordering::Relaxed) && opts.max_frames.is_none_or(|m| id < m) {
        match source.next() {
            Ok(mut img) => {
                if opts.mirror {
                    image::imageops::flip_horizontal_in_place(&mut img);
                }
                let f = Frame {
                    id,
                    captured: Instant::now(),
                    image: Arc::new(img),
                };
                {
                    let mut g = lock(&sh);
                    g.stats.captured(f.captured);
                    g.latest_frame = Some(f.clone());
                    if id.is_multiple_of(10) {
                        if let Some(r) = crate::telemetry::process::rss_bytes() {
                            g.rss.push(r);
                        }
                    }
                }
                s.put(f);
                id += 1;
            }
            Err(e) => {
                tracing::error!("live: {e}");
                lock(&sh).status = format!("camera error: {e} (press Start to retry)");
                break;
            }
        }
        if let Some(w) = &w {
            w();
        }
    }
    lock(&sh).capture_done = true;
    s.close();
}

/// The inference thread: runs the models on the newest frame in the slot,
/// smooths the hands and publishes each result, until capture is done or stopped.
fn infer_frames<E: InferWait>(
    engine: E,
    s: Arc<LatestSlot>,
    sh: Arc<Mutex<Shared>>,
    st: Arc<AtomicBool>,
    wake: Option<WakeFn>,
    opts: LiveOptions,
    epoch: Instant,
) {
    let mut smoother = HandSmoother::new(HAND_SMOOTHING);
    let mut tracker = opts.track.map(HandTracker::new);
    loop {
        let Some(f) = s.take(Duration::from_millis(100)) else {
            if lock(&sh).capture_done || st.load(Ordering::Relaxed) {
                break;
            }
            continue;
        };
        let input = ImageInput::Frame {
            name: format!("frame {}", f.id),
            image: f.image.clone(),
        };
        let mut params = opts.params;
        if let Some(t) = tracker.as_mut() {
            params.hand_regions = Some(t.plan(&f.image));
        }
        let answer = super::infer_each(&engine, &opts.models, input, params);
        let now = Instant::now();
        if let Some(t) = tracker.as_mut() {
            match &answer {
                Ok(r) => t.update(&r.output.detections),
                Err(_) => t.reset(),
            }
        }
        let smoothed = answer.as_ref().ok().map(|r| {
            let t = f.captured.saturating_duration_since(epoch).as_secs_f64();
            smoother.smooth(&r.output.detections, t)
        });
        {
            let mut g = lock(&sh);
            g.track = tracker.as_ref().map(HandTracker::counts);
            match answer {
                Ok(r) => {
                    g.stats.inferred(now, r.timings.total);
                    if opts.headless {
                        g.stats.shown(f.captured, now);
                    }
                    g.history.push_back((f.id, r.output.detections.clone()));
                    if g.history.len() > HISTORY {
                        g.history.pop_front();
                    }
                    g.latest_result = Some(LiveResult {
                        frame_id: f.id,
                        frame: f.clone(),
                        captured: f.captured,
                        ready: now,
                        smoothed: smoothed.unwrap_or_else(|| r.output.detections.clone()),
                        detections: r.output.detections,
                        masks: r.output.masks,
                        image_size: r.output.image_size,
                        inference_ms: r.timings.total,
                    });
                }
                Err(e) => g.status = format!("inference error: {}", e.error),
            }
        }
        if let Some(w) = &wake {
            w();
        }
    }
    lock(&sh).infer_done = true;
}

impl LivePipeline {
    pub fn start<E: InferWait>(engine: E, source: SourceFactory, options: LiveOptions, wake: Option<WakeFn>) -> Self {
        let slot = LatestSlot::new();
        let shared = Arc::new(Mutex::new(Shared {
            status: format!("running: {}", source.name),
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let source_name = source.name.clone();
        let mut threads = Vec::new();

        let (s, sh, st, w, opts) = (
            slot.clone(),
            shared.clone(),
            stop.clone(),
            wake.clone(),
            options.clone(),
        );
        threads.push(std::thread::spawn(move || capture_frames(source, s, sh, st, w, opts)));

        let (s, sh, st, opts) = (slot.clone(), shared.clone(), stop.clone(), options.clone());
        let epoch = Instant::now();
        threads.push(std::thread::spawn(move || {
            infer_frames(engine, s, sh, st, wake, opts, epoch)
        }));
        LivePipeline {
            slot,
            shared,
            stop,
            threads,
            options,
            source_name,
        }
    }

    pub fn latest_frame(&self) -> Option<Frame> {
        lock(&self.shared).latest_frame.clone()
    }

    pub fn latest_result(&self) -> Option<LiveResult> {
        lock(&self.shared).latest_result.clone()
    }

    /// The window drew the overlay of `result`: counts its end-to-end latency once.
    pub fn mark_shown(&self, result: &LiveResult) {
        let mut g = lock(&self.shared);
        if g.shown_up_to.is_some_and(|s| s >= result.frame_id) {
            return;
        }
        g.shown_up_to = Some(result.frame_id);
        g.stats.shown(result.captured, Instant::now());
    }

    pub fn summary(&self) -> LiveSummary {
        lock(&self.shared)
            .stats
            .summary(self.slot.dropped(), self.slot.max_len())
    }

    pub fn status(&self) -> String {
        lock(&self.shared).status.clone()
    }

    pub fn finished(&self) -> bool {
        let g = lock(&self.shared);
        g.capture_done && g.infer_done
    }

    /// (frame id, detections) of every inferred frame, oldest first.
    pub fn history(&self) -> Vec<(u64, Vec<Detection>)> {
        lock(&self.shared).history.iter().cloned().collect()
    }

    /// What the hand tracker has done (frames, palm detections, hands now
    /// tracked); `None` without tracking.
    pub fn track_counts(&self) -> Option<TrackCounts> {
        lock(&self.shared).track
    }

    /// Process RSS sampled every 10 captured frames.
    pub fn rss_samples(&self) -> Vec<u64> {
        lock(&self.shared).rss.clone()
    }

    /// Waits for the source to end (max_frames) and the last frame to be inferred.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while !self.finished() {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        true
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.slot.close();
        lock(&self.shared).status = "stopped".into();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for LivePipeline {
    fn drop(&mut self) {
        self.stop();
    }
}
