//! The live pipeline with the synthetic source.

mod common;

use std::time::Duration;

use common::*;
use modeldock::camera::synthetic::SyntheticSource;
use modeldock::catalog::registry::Registry;
use modeldock::engine::Engine;
use modeldock::live::{LiveOptions, LivePipeline};
use modeldock::vision::InferParams;

/// Centre of the astronaut's face in the photo (the detector's box on the original).
const FACE_CENTRE: [f32; 2] = [221.27, 131.15];

fn options(model: &str, frames: u64) -> LiveOptions {
    LiveOptions {
        models: modeldock::live::model_list(model),
        params: InferParams::default(),
        mirror: false,
        max_frames: Some(frames),
        headless: true,
        track: None,
    }
}

#[test]
fn the_detected_face_follows_the_synthetic_path() {
    let engine = Engine::start(Registry::discover(&[]), config(), None);
    let src = SyntheticSource::new(640, 480, 20.0).unwrap_or_else(|e| panic!("{e}"));
    let reference = SyntheticSource::new(640, 480, 20.0).unwrap_or_else(|e| panic!("{e}"));
    let mut p = LivePipeline::start(
        engine.clone(),
        modeldock::camera::source::SourceFactory::ready(src),
        options("face-detector", 60),
        None,
    );
    assert!(p.wait(WAIT));
    let h = p.history();
    assert!(h.len() >= 5, "{} frames inferred", h.len());
    let mut worst = 0f32;
    let mut missed = 0;
    for (id, dets) in &h {
        // The best detection (first); a rare second, weaker box does not count.
        let Some(best) = dets.first() else {
            missed += 1;
            continue;
        };
        assert!(best.score > 0.5, "frame {id}: {dets:?}");
        let b = best.bbox;
        let centre = [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0];
        let want = reference.project(*id, FACE_CENTRE);
        let err = ((centre[0] - want[0]).powi(2) + (centre[1] - want[1]).powi(2)).sqrt();
        worst = worst.max(err);
    }
    println!(
        "worst centre error over {} frames: {worst:.2} px, {missed} without a face",
        h.len()
    );
    assert!(missed * 10 <= h.len(), "{missed} of {} frames without a face", h.len());
    // The face is ~90 px wide; the tiny detector's 13×13 grid moves its box
    // centre by up to ~8 px over the path's scales and rotations (measured
    // over every 3rd frame of 20 s). A wrong mapping is off by tens of px.
    assert!(worst <= 10.0, "box centre off the known path by {worst:.1} px");
    // The path really moves: first and last expected centres differ.
    let (a, b) = (
        reference.project(h[0].0, FACE_CENTRE),
        reference.project(h[h.len() - 1].0, FACE_CENTRE),
    );
    assert!((a[0] - b[0]).abs() + (a[1] - b[1]).abs() > 20.0);
    drop(p);
    engine.shutdown();
}

#[test]
fn a_slow_model_drops_frames_instead_of_queueing_them() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "slow", &[("slow_forward_ms", 80.0)]);
    let (engine, _) = engine_for(dir.path(), config());
    let src = SyntheticSource::new(320, 240, 30.0).unwrap_or_else(|e| panic!("{e}"));
    let start = std::time::Instant::now();
    let mut p = LivePipeline::start(
        engine.clone(),
        modeldock::camera::source::SourceFactory::ready(src),
        options("slow", 90),
        None,
    );
    assert!(p.wait(WAIT));
    let elapsed = start.elapsed().as_secs_f64();
    let s = p.summary();
    println!("{s:?}");
    assert_eq!(s.frames_captured, 90);
    assert_eq!(s.max_queue_len, 1, "never more than one frame waiting");
    assert!(s.frames_dropped > 30, "most frames are dropped: {}", s.frames_dropped);
    assert_eq!(
        s.frames_inferred + s.frames_dropped,
        s.frames_captured,
        "every frame is inferred or dropped"
    );
    // Figures agree with the timestamps.
    assert!((s.camera_fps - 30.0).abs() < 6.0, "camera fps {}", s.camera_fps);
    assert!(
        s.inference_fps < 13.0 && s.inference_fps > 5.0,
        "inference fps {}",
        s.inference_fps
    );
    assert!(s.inference_p50_ms >= 80.0);
    assert!(s.e2e_latency_p50_ms >= s.inference_p50_ms, "{s:?}");
    assert!(
        s.e2e_latency_p50_ms <= s.inference_p50_ms + 1000.0 / 30.0 + 30.0,
        "end-to-end stays within one inference plus one frame: {s:?}"
    );
    let expected = s.frames_captured as f64 / elapsed;
    assert!(
        expected > 20.0,
        "captured {} frames in {elapsed:.1} s",
        s.frames_captured
    );
    // Memory stays flat: no frame queue grows.
    let rss = p.rss_samples();
    let (lo, hi) = (
        rss.iter().min().copied().unwrap_or(0),
        rss.iter().max().copied().unwrap_or(0),
    );
    assert!(hi - lo < 64 << 20, "RSS grew from {lo} to {hi}");
    drop(p);
    engine.shutdown();
}

#[test]
fn a_missing_webcam_or_folder_is_a_clear_error() {
    let e = modeldock::camera::open_source("webcam:7", 640, 480, 30.0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("webcam 7") || e.contains("webcam"), "{e}");
    let e = modeldock::camera::open_source("/no/such/folder", 640, 480, 30.0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("/no/such/folder"), "{e}");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let e = modeldock::camera::open_source(&dir.path().display().to_string(), 640, 480, 30.0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("no images"), "{e}");
}

#[test]
fn a_folder_source_plays_its_images() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for name in ["astronaut.png", "camera.png"] {
        std::fs::copy(fixture(&format!("images/{name}")), dir.path().join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
    let engine = Engine::start(Registry::discover(&[]), config(), None);
    let src =
        modeldock::camera::open_source(&dir.path().display().to_string(), 0, 0, 10.0).unwrap_or_else(|e| panic!("{e}"));
    let mut p = LivePipeline::start(engine.clone(), src, options("face-detector", 6), None);
    assert!(p.wait(WAIT));
    assert_eq!(p.summary().frames_captured, 6);
    assert!(p.history().iter().all(|(_, d)| d.len() == 1));
    drop(p);
    engine.shutdown();
    let _ = Duration::ZERO;
}

#[test]
fn the_detected_hand_follows_the_synthetic_path() {
    // The synthetic source composites a real hand (from sample2.png) that moves
    // and turns along a known path; the hands model must find it on every frame
    // it runs on, with its 21 landmarks where the path puts the reference ones.
    let engine = Engine::start(Registry::discover(&[]), config(), None);
    let src = SyntheticSource::new(640, 480, 20.0).unwrap_or_else(|e| panic!("{e}"));
    let reference = SyntheticSource::new(640, 480, 20.0).unwrap_or_else(|e| panic!("{e}"));
    let mut p = LivePipeline::start(
        engine.clone(),
        modeldock::camera::source::SourceFactory::ready(src),
        options("hands", 100),
        None,
    );
    assert!(p.wait(WAIT));
    let h = p.history();
    assert!(h.len() >= 5, "{} frames inferred", h.len());
    let mut missed = 0;
    let mut worst_mean = 0f32;
    let mut sum = 0f32;
    let mut n = 0usize;
    for (id, dets) in &h {
        let Some(hand) = dets.iter().find(|d| d.keypoints.len() == 21) else {
            missed += 1;
            continue;
        };
        let want = reference.hand_landmarks(*id);
        // The fingers (landmarks 1-20, which the nails sit on). The wrist is
        // left out: the composited crop cuts the forearm off, and without it
        // the network puts the wrist 40-80 px from where it sat in sample2.
        let mean = hand.keypoints[1..]
            .iter()
            .zip(&want[1..])
            .map(|(a, b)| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt())
            .sum::<f32>()
            / 20.0;
        worst_mean = worst_mean.max(mean);
        sum += mean;
        n += 1;
    }
    println!(
        "hand landmarks over {} frames: mean error {:.2} px, worst frame {worst_mean:.2} px, {missed} frames without a hand",
        h.len(),
        sum / n.max(1) as f32
    );
    assert!(missed * 10 <= h.len(), "{missed} of {} frames without a hand", h.len());
    // The hand is ~145 px tall (0.3 of 480), upscaled ~1.6x from sample2. The
    // reference landmarks are the model's own on sample2, carried along the
    // path; on the upscaled composite the network places the fingers 7-15 px
    // from them (measured: mean 8-9 px, worst frame 13-16 px over 27-41 frames). A
    // wrong mapping (mirrored, rotated, scaled or shifted crop) is off by tens
    // of px, and a lost hand counts as missed.
    let mean = sum / n.max(1) as f32;
    assert!(
        mean <= 11.0,
        "finger landmarks off the known path by {mean:.1} px on average"
    );
    assert!(
        worst_mean <= 22.0,
        "one frame's finger landmarks are off by {worst_mean:.1} px on average"
    );
    drop(p);
    engine.shutdown();
}
