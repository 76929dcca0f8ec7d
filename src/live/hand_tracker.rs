//! Hands tracked between frames of one live stream, as MediaPipe Hands does:
//! each frame's hands give the regions the next frame's landmark network
//! crops (`vision::hand_roi::roi_from_landmarks`), and the palm detector runs
//! only when it is needed. The state belongs to one stream (one
//! [`HandTracker`] per live pipeline); the model, shared by every client,
//! stays stateless: the regions travel with each request as
//! `InferParams::hand_regions`.
//!
//! The palm detector runs on a frame ([`HandTracker::plan`]) when:
//! - no hand is tracked;
//! - a tracked hand was dropped on the previous frame (the model did not
//!   return it, or its presence fell below `min_presence`);
//! - fewer than `max_hands` are tracked and `skip_frames` frames have passed
//!   since the last detection (human's `skipFrames`);
//! - the scene changed: the mean absolute difference of a 32×24 grey
//!   thumbnail against the previous frame's is above `scene_change` (0–1).
//!
//! Which answered hands stay tracked ([`HandTracker::update`]), as MediaPipe
//! does: a hand whose presence is below `min_presence` (MediaPipe's
//! `min_tracking_confidence`, 0.5) is dropped, and of two hands whose
//! regions overlap by IoU `DUPLICATE_IOU` or more (MediaPipe's
//! `AssociationNormRectCalculator`, 0.5) only the higher-scoring one stays.

use image::RgbImage;

use crate::catalog::registry::Registry;
use crate::catalog::Arch;
use crate::client::Snapshot;
use crate::vision::hand_roi::{box_iou, roi_from_landmarks, HandRegion, HandRegions};
use crate::vision::Detection;

/// Side of the thumbnail the scene-change measure compares.
const THUMB_W: u32 = 32;
const THUMB_H: u32 = 24;

/// Two tracked regions overlapping by this IoU (their upright squares) or
/// more are one hand (MediaPipe's `min_similarity_threshold`).
pub const DUPLICATE_IOU: f32 = 0.5;

/// When the palm detector runs while hands are tracked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackOptions {
    /// Hands tracked at most (the hands model caps its answer the same way).
    pub max_hands: usize,
    /// Frames between detections while fewer than `max_hands` are tracked.
    pub skip_frames: u32,
    /// Mean absolute thumbnail difference (0–1) that counts as a new scene.
    pub scene_change: f32,
    /// Hand presence (the answer's `score`) below which a hand is no
    /// longer tracked (MediaPipe's `min_tracking_confidence`).
    pub min_presence: f32,
}

impl Default for TrackOptions {
    fn default() -> Self {
        TrackOptions {
            max_hands: 4,
            skip_frames: 10,
            scene_change: 0.2,
            min_presence: 0.5,
        }
    }
}

/// Tracking for a live stream of `models`: on when one of them is a hands
/// model (by the engine's `snapshot`), with `max_hands` and `skip_frames`
/// from its manifest's options: as the engine's snapshot reports them, else
/// as `registry` has them, else the defaults.
pub fn track_options(snapshot: &Snapshot, registry: Option<&Registry>, models: &[String]) -> Option<TrackOptions> {
    let id = hands_model(snapshot, models)?;
    let status = snapshot.models.iter().find(|m| m.id == id)?;
    let manifest = registry.and_then(|r| r.get(id)).map(|e| &e.manifest.options);
    let option = |key: &str, default: f64| {
        status
            .options
            .get(key)
            .or_else(|| manifest.and_then(|o| o.get(key)))
            .copied()
            .unwrap_or(default)
    };
    let d = TrackOptions::default();
    Some(TrackOptions {
        max_hands: option("max_hands", d.max_hands as f64).round().max(1.0) as usize,
        skip_frames: option("skip_frames", d.skip_frames as f64).round().max(1.0) as u32,
        ..d
    })
}

/// The first of `models` that is a hands model, by the engine's `snapshot`.
pub fn hands_model<'a>(snapshot: &Snapshot, models: &'a [String]) -> Option<&'a str> {
    models
        .iter()
        .find(|id| snapshot.models.iter().any(|m| &m.id == *id && m.arch == Arch::Hands))
        .map(String::as_str)
}

/// What the tracker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackCounts {
    /// Frames planned.
    pub frames: u64,
    /// Frames on which the palm detector ran.
    pub detections: u64,
    /// Hands tracked after the last frame.
    pub tracked: usize,
}

/// One stream's tracked hands.
pub struct HandTracker {
    pub options: TrackOptions,
    regions: Vec<HandRegion>,
    /// Regions sent with the frame in flight and whether it detects.
    sent: usize,
    sent_detect: bool,
    dropped: bool,
    since_detection: u32,
    thumb: Option<Vec<u8>>,
    counts: TrackCounts,
}

impl HandTracker {
    pub fn new(options: TrackOptions) -> Self {
        HandTracker {
            options,
            regions: Vec::new(),
            sent: 0,
            sent_detect: false,
            dropped: false,
            since_detection: 0,
            thumb: None,
            counts: TrackCounts::default(),
        }
    }

    pub fn counts(&self) -> TrackCounts {
        TrackCounts {
            tracked: self.regions.len(),
            ..self.counts
        }
    }

    /// The regions to send with `frame`, and whether the palm detector runs.
    pub fn plan(&mut self, frame: &RgbImage) -> HandRegions {
        let thumb = thumbnail(frame);
        let scene = match &self.thumb {
            Some(prev) => mean_abs_diff(prev, &thumb) > self.options.scene_change,
            None => true,
        };
        self.thumb = Some(thumb);
        let room = self.regions.len() < self.options.max_hands;
        let detect = self.regions.is_empty()
            || self.dropped
            || scene
            || (room && self.since_detection + 1 >= self.options.skip_frames);
        self.counts.frames += 1;
        if detect {
            self.counts.detections += 1;
            self.since_detection = 0;
        } else {
            self.since_detection += 1;
        }
        self.sent = self.regions.len();
        self.sent_detect = detect;
        HandRegions::new(&self.regions, detect)
    }

    /// The answer to the planned frame: its hands (detections with 21
    /// keypoints; others are ignored) become the next frame's regions, in
    /// the answer's order, less those below `min_presence` and the
    /// lower-scoring of two that overlap by [`DUPLICATE_IOU`].
    pub fn update(&mut self, detections: &[Detection]) {
        let hands: Vec<(f32, HandRegion)> = detections
            .iter()
            .filter(|d| d.keypoints.len() == 21 && d.score >= self.options.min_presence)
            .filter_map(|d| roi_from_landmarks(&d.keypoints).map(|r| (d.score, r)))
            .collect();
        let mut best_first: Vec<usize> = (0..hands.len()).collect();
        best_first.sort_by(|&a, &b| hands[b].0.total_cmp(&hands[a].0));
        let mut keep: Vec<usize> = Vec::new();
        for i in best_first {
            let square = upright(&hands[i].1);
            if keep.len() < self.options.max_hands
                && keep
                    .iter()
                    .all(|&k| box_iou(&upright(&hands[k].1), &square) < DUPLICATE_IOU)
            {
                keep.push(i);
            }
        }
        keep.sort_unstable();
        self.regions = keep.into_iter().map(|i| hands[i].1).collect();
        self.dropped = !self.sent_detect && hands.len() < self.sent;
    }

    /// The frame failed: forget the hands, detect on the next frame.
    pub fn reset(&mut self) {
        self.regions.clear();
        self.dropped = false;
    }
}

/// A region's upright square `[x0, y0, x1, y1]` (MediaPipe compares
/// tracked rects without their rotation).
fn upright(r: &HandRegion) -> [f32; 4] {
    let h = r.side / 2.0;
    [r.center[0] - h, r.center[1] - h, r.center[0] + h, r.center[1] + h]
}

/// A 32×24 grey thumbnail (box-averaged).
fn thumbnail(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width().max(1), img.height().max(1));
    let mut sums = vec![(0u32, 0u32); (THUMB_W * THUMB_H) as usize];
    for (x, y, p) in img.enumerate_pixels() {
        let (tx, ty) = ((x * THUMB_W / w).min(THUMB_W - 1), (y * THUMB_H / h).min(THUMB_H - 1));
        let grey = (p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114) / 1000;
        let s = &mut sums[(ty * THUMB_W + tx) as usize];
        s.0 += grey;
        s.1 += 1;
    }
    sums.iter().map(|&(s, n)| (s / n.max(1)) as u8).collect()
}

/// Mean absolute difference of two thumbnails, 0–1.
fn mean_abs_diff(a: &[u8], b: &[u8]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 1.0;
    }
    let total: u64 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
    total as f32 / (a.len() as f32 * 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upright hand of 21 points around `at`.
    fn hand(at: [f32; 2]) -> Detection {
        let mut kp = vec![[at[0], at[1], 0.0]; 21];
        for (f, x) in [(1usize, -30.0f32), (5, -15.0), (9, 0.0), (13, 15.0), (17, 30.0)] {
            for j in 0..4 {
                kp[f + j] = [at[0] + x, at[1] - 40.0 - 20.0 * j as f32, 0.0];
            }
        }
        Detection {
            label: "left".into(),
            class_id: None,
            score: 0.9,
            bbox: [at[0] - 30.0, at[1] - 100.0, at[0] + 30.0, at[1]],
            keypoints: kp,
        }
    }

    fn frame(v: u8) -> RgbImage {
        RgbImage::from_pixel(64, 48, image::Rgb([v, v, v]))
    }

    #[test]
    fn detects_first_then_tracks_and_detects_every_skip_frames() {
        let mut t = HandTracker::new(TrackOptions {
            max_hands: 2,
            skip_frames: 5,
            scene_change: 0.2,
            ..Default::default()
        });
        let f = frame(100);
        let mut detected = Vec::new();
        for _ in 0..20 {
            let r = t.plan(&f);
            detected.push(r.detect);
            t.update(&[hand([30.0, 40.0])]);
        }
        // First frame, then every 5th while only one of two hands is tracked.
        let at: Vec<usize> = (0..20).filter(|&i| detected[i]).collect();
        assert_eq!(at, [0, 5, 10, 15]);
        assert_eq!(t.counts().detections, 4);
        assert_eq!(t.counts().tracked, 1);
    }

    #[test]
    fn a_full_house_does_not_detect_until_a_hand_is_dropped() {
        let mut t = HandTracker::new(TrackOptions {
            max_hands: 1,
            skip_frames: 3,
            scene_change: 0.2,
            ..Default::default()
        });
        let f = frame(100);
        assert!(t.plan(&f).detect);
        t.update(&[hand([30.0, 40.0])]);
        for _ in 0..10 {
            let r = t.plan(&f);
            assert!(!r.detect);
            assert_eq!(r.as_slice().len(), 1);
            t.update(&[hand([30.0, 40.0])]);
        }
        // The hand is not returned: dropped, and the next frame detects.
        assert!(!t.plan(&f).detect);
        t.update(&[]);
        assert_eq!(t.counts().tracked, 0);
        assert!(t.plan(&f).detect);
    }

    #[test]
    fn a_scene_change_detects() {
        let mut t = HandTracker::new(TrackOptions {
            max_hands: 1,
            skip_frames: 100,
            scene_change: 0.2,
            ..Default::default()
        });
        assert!(t.plan(&frame(100)).detect);
        t.update(&[hand([30.0, 40.0])]);
        // A small change is the same scene ...
        assert!(!t.plan(&frame(110)).detect);
        t.update(&[hand([30.0, 40.0])]);
        // ... a large one is not.
        assert!(t.plan(&frame(200)).detect);
    }

    fn scored(at: [f32; 2], score: f32) -> Detection {
        Detection { score, ..hand(at) }
    }

    #[test]
    fn a_hand_whose_presence_falls_below_min_presence_is_dropped() {
        let mut t = HandTracker::new(TrackOptions {
            max_hands: 2,
            skip_frames: 100,
            ..Default::default()
        });
        let f = frame(100);
        assert!(t.plan(&f).detect);
        t.update(&[scored([30.0, 40.0], 0.9), scored([200.0, 40.0], 0.9)]);
        assert_eq!(t.counts().tracked, 2);
        assert!(!t.plan(&f).detect);
        // The model still returns the second hand (its presence is above the
        // model's own bar), but below MediaPipe's tracking confidence.
        t.update(&[scored([30.0, 40.0], 0.9), scored([200.0, 40.0], 0.3)]);
        assert_eq!(t.counts().tracked, 1);
        let r = t.plan(&f);
        assert!(r.detect, "a dropped hand makes the next frame detect");
        assert_eq!(r.as_slice().len(), 1);
        assert!((r.as_slice()[0].center[0] - 30.0).abs() < 20.0);
    }

    #[test]
    fn two_hands_whose_regions_overlap_are_one_the_higher_scoring() {
        let mut t = HandTracker::new(TrackOptions::default());
        let f = frame(100);
        t.plan(&f);
        let (low, high, other) = (
            scored([30.0, 40.0], 0.7),
            scored([36.0, 44.0], 0.95),
            scored([300.0, 40.0], 0.8),
        );
        t.update(&[low, high.clone(), other.clone()]);
        assert_eq!(t.counts().tracked, 2);
        let want = |d: &Detection| roi_from_landmarks(&d.keypoints).map(|r| r.center);
        let centres: Vec<[f32; 2]> = t.regions.iter().map(|r| r.center).collect();
        assert_eq!(
            centres,
            [want(&high), want(&other)].into_iter().flatten().collect::<Vec<_>>()
        );
        // Hands apart stay apart.
        assert!(box_iou(&upright(&t.regions[0]), &upright(&t.regions[1])) < DUPLICATE_IOU);
    }

    #[test]
    fn thumbnails_differ_by_their_mean() {
        let a = thumbnail(&frame(0));
        let b = thumbnail(&frame(255));
        assert_eq!(a.len(), (THUMB_W * THUMB_H) as usize);
        assert!((mean_abs_diff(&a, &b) - 1.0).abs() < 1e-6);
        assert_eq!(mean_abs_diff(&a, &a), 0.0);
    }
}
