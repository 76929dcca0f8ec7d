//! Hands tracked between video frames (`live::HandTracker` driving the
//! `hands` model through `InferParams::hand_regions`) against the
//! single-image pipeline on the same frames: the synthetic camera's moving
//! hand, and sample2.png's three hands as a stream (still, shifted, gone);
//! a duplicate or a faint hand in an answer is not tracked.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use image::RgbImage;
use modeldock::camera::synthetic::SyntheticSource;
use modeldock::catalog::registry::Registry;
use modeldock::catalog::weights_source::WeightsSource;
use modeldock::catalog::Manifest;
use modeldock::engine::Engine;
use modeldock::live::{HandTracker, LiveOptions, LivePipeline, TrackOptions};
use modeldock::models::hands::Hands;
use modeldock::models::weights::var_builder;
use modeldock::models::Model;
use modeldock::vision::{Detection, InferParams};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load() -> (Hands, Manifest) {
    let p = root().join("models/hands/model.toml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let m = Manifest::parse(&text, "models/hands/model.toml").unwrap_or_else(|e| panic!("{e}"));
    let w = root().join("models/hands/handdetect.safetensors");
    let bytes = std::fs::metadata(&w).map(|m| m.len()).unwrap_or(0);
    let vb = var_builder(&WeightsSource::File(w), bytes, &Device::Cpu, Arc::new(|_, _| {}))
        .unwrap_or_else(|e| panic!("{e}"));
    (Hands::load(vb, &m).unwrap_or_else(|e| panic!("{e}")), m)
}

fn options(m: &Manifest) -> TrackOptions {
    TrackOptions {
        max_hands: m.option("max_hands", 4.0) as usize,
        skip_frames: m.option("skip_frames", 10.0) as u32,
        ..Default::default()
    }
}

/// The single-image (first-frame) pipeline.
fn first_frame(net: &Hands, img: &RgbImage) -> Vec<Detection> {
    net.infer(img, &InferParams::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// One tracked frame: (hands, whether the palm detector ran).
fn tracked(net: &Hands, t: &mut HandTracker, img: &RgbImage) -> (Vec<Detection>, bool) {
    let before = net.palm_runs();
    let params = InferParams {
        hand_regions: Some(t.plan(img)),
        ..Default::default()
    };
    let dets = net.infer(img, &params).unwrap_or_else(|e| panic!("{e}")).0;
    t.update(&dets);
    (dets, net.palm_runs() > before)
}

/// Mean distance of the finger landmarks (1–20) of two hands, pixels.
fn finger_error(a: &[[f32; 3]], b: &[[f32; 3]]) -> f32 {
    a[1..21]
        .iter()
        .zip(&b[1..21])
        .map(|(p, q)| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt())
        .sum::<f32>()
        / 20.0
}

fn centre(d: &Detection) -> [f32; 2] {
    [(d.bbox[0] + d.bbox[2]) / 2.0, (d.bbox[1] + d.bbox[3]) / 2.0]
}

/// The hand of `among` whose box centre is nearest `d`'s.
fn nearest<'a>(d: &Detection, among: &'a [Detection]) -> &'a Detection {
    let c = centre(d);
    among
        .iter()
        .min_by(|a, b| {
            let da = (centre(a)[0] - c[0]).powi(2) + (centre(a)[1] - c[1]).powi(2);
            let db = (centre(b)[0] - c[0]).powi(2) + (centre(b)[1] - c[1]).powi(2);
            da.total_cmp(&db)
        })
        .unwrap_or_else(|| panic!("no hand to match"))
}

#[test]
fn the_tracked_synthetic_hand_stays_with_the_first_frame_pipeline_and_detects_rarely() {
    let (net, m) = load();
    let src = SyntheticSource::new(640, 480, 20.0).unwrap_or_else(|e| panic!("{e}"));
    let mut t = HandTracker::new(options(&m));
    let frames = 60u64;
    let (mut worst, mut sum, mut worst_path, mut sum_path, mut sum_first_path) = (0f32, 0f32, 0f32, 0f32, 0f32);
    let (mut palm_frames, mut compared) = (Vec::new(), 0usize);
    for i in 0..frames {
        let img = src.render(i);
        let (dets, palm) = tracked(&net, &mut t, &img);
        if palm {
            palm_frames.push(i);
        }
        let reference = first_frame(&net, &img);
        // Tracking never loses the hand; the single-image pipeline's palm
        // detector misses it on the odd frame (frame 35), which is not compared.
        assert_eq!(dets.len(), 1, "frame {i}: {} tracked hands", dets.len());
        let path = src.hand_landmarks(i);
        let err_path = finger_error(&dets[0].keypoints, &path);
        worst_path = worst_path.max(err_path);
        sum_path += err_path;
        let Some(first) = reference.first() else { continue };
        let err = finger_error(&dets[0].keypoints, &first.keypoints);
        worst = worst.max(err);
        sum += err;
        sum_first_path += finger_error(&first.keypoints, &path);
        compared += 1;
    }
    let mean = sum / compared.max(1) as f32;
    let (mean_path, mean_first_path) = (sum_path / frames as f32, sum_first_path / compared.max(1) as f32);
    println!(
        "tracked vs first-frame finger landmarks over {compared} of {frames} frames: mean {mean:.2} px, worst frame \
         {worst:.2} px; vs the known path: tracked mean {mean_path:.2} px (worst frame {worst_path:.2}), first-frame \
         mean {mean_first_path:.2} px; palm detector on frames {palm_frames:?}"
    );
    assert!(
        compared * 10 >= frames as usize * 9,
        "first-frame pipeline found the hand on {compared} of {frames} frames"
    );
    // The hand is ~145 px tall. The tracked crop (MediaPipe's rectangle
    // around the previous landmarks, the crop the landmark network was
    // trained on) and the first-frame crop (human's ×5 palm box) differ in
    // size, centre and angle. Measured: the tracked fingers sit 3.2 px from
    // the known path on average (worst frame 7.9), the first-frame ones 9.9
    // px (worst 16.3), and 11 px (worst frame 18) from each other. A wrong
    // rectangle (mirrored, turned, shifted the wrong way) loses the hand or
    // moves the fingers by tens of px.
    assert!(
        mean <= 14.0,
        "tracked fingers {mean:.1} px from the first-frame ones on average"
    );
    assert!(
        worst <= 24.0,
        "one frame's tracked fingers are {worst:.1} px from the first-frame ones"
    );
    assert!(
        mean_path <= 6.0,
        "tracked fingers {mean_path:.1} px off the known path on average"
    );
    assert!(
        worst_path <= 12.0,
        "one frame's tracked fingers are {worst_path:.1} px off the known path"
    );
    // One hand of max_hands: the palm detector runs on the first frame, then
    // once every skip_frames frames; never on most frames.
    assert_eq!(palm_frames.first(), Some(&0));
    let after_first = palm_frames.len() as u64 - 1;
    assert!(
        after_first * 5 < frames - 1,
        "palm detector on {after_first} of {} tracked frames",
        frames - 1
    );
    // The tracker's own count is what the model ran.
    assert_eq!(t.counts().detections, palm_frames.len() as u64);
    assert_eq!(t.counts().frames, frames);
}

/// `img` moved right by `dx` pixels (the uncovered strip black).
fn shifted(img: &RgbImage, dx: u32) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        if x >= dx {
            *img.get_pixel(x - dx, y)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

#[test]
fn three_tracked_hands_follow_a_shifting_photo_without_duplicates_and_leave_at_once() {
    let (net, m) = load();
    let p = root().join("tests/fixtures/human-models/images/sample2.png");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let photo = modeldock::vision::decode::decode_bytes("sample2", &bytes, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut t = HandTracker::new(options(&m));
    // Five still frames, then ten frames moving 6 px each.
    let stream: Vec<RgbImage> = (0..15u32).map(|i| shifted(&photo, 6 * i.saturating_sub(4))).collect();
    let (mut worst, mut sum, mut n) = (0f32, 0f32, 0usize);
    let mut palm_runs = 0;
    for (i, img) in stream.iter().enumerate() {
        let (dets, palm) = tracked(&net, &mut t, img);
        palm_runs += palm as usize;
        let reference = first_frame(&net, img);
        assert_eq!(reference.len(), 3, "frame {i}: first-frame hands");
        // Every hand tracked, none twice (a palm detection on a tracked hand
        // is dropped as a duplicate).
        assert_eq!(
            dets.len(),
            3,
            "frame {i}: tracked hands {:?}",
            dets.iter().map(centre).collect::<Vec<_>>()
        );
        for d in &dets {
            let err = finger_error(&d.keypoints, &nearest(d, &reference).keypoints);
            worst = worst.max(err);
            sum += err;
            n += 1;
        }
        let cs: Vec<[f32; 2]> = dets.iter().map(centre).collect();
        for (a, ca) in cs.iter().enumerate() {
            for cb in &cs[a + 1..] {
                let dist = ((ca[0] - cb[0]).powi(2) + (ca[1] - cb[1]).powi(2)).sqrt();
                assert!(dist > 50.0, "frame {i}: two tracked hands {dist:.0} px apart");
            }
        }
    }
    let mean = sum / n.max(1) as f32;
    println!(
        "sample2 stream: tracked hands {mean:.2} px from the first-frame ones on average, worst {worst:.2} px; \
         palm detector on {palm_runs} of 15 frames"
    );
    // The hands are 200-300 px tall in this 1920×1367 photo. On still frames
    // the tracked crop settles on MediaPipe's rectangle within 3 frames and
    // the fingers 4-18 px from the first-frame answer (measured: mean 13 px,
    // worst 30 px, the half-hidden hand on the right while moving); the
    // synthetic test above shows which of the two is nearer the truth.
    assert!(
        mean <= 18.0,
        "tracked hands {mean:.1} px from the first-frame ones on average"
    );
    assert!(
        worst <= 40.0,
        "a tracked hand is {worst:.1} px from the first-frame one"
    );
    assert!(
        palm_runs * 5 <= stream.len(),
        "palm detector on {palm_runs} of {} frames",
        stream.len()
    );
    // The hands leave: a blank frame drops them at once, and the next
    // frame has nothing to track.
    let blank = RgbImage::from_pixel(photo.width(), photo.height(), image::Rgb([40, 40, 40]));
    let (dets, _) = tracked(&net, &mut t, &blank);
    assert!(dets.is_empty(), "{} hands on a blank frame", dets.len());
    assert_eq!(t.counts().tracked, 0);
    let (dets, palm) = tracked(&net, &mut t, &blank);
    assert!(
        dets.is_empty() && palm,
        "with no hand tracked the palm detector looks for new ones"
    );
}

#[test]
fn the_live_pipeline_tracks_the_synthetic_hand_through_the_engine() {
    let engine = Engine::start(Registry::discover(&[]), common::config(), None);
    engine.load("hands").unwrap_or_else(|e| panic!("{e}"));
    common::wait_state(&engine, "hands", "Resident");
    let models = vec!["hands".to_string()];
    let track = modeldock::live::hand_tracker::track_options(&engine.snapshot(), None, &models);
    assert!(track.is_some(), "a hands model turns tracking on");
    let none = modeldock::live::hand_tracker::track_options(&engine.snapshot(), None, &["face-detector".to_string()]);
    assert!(none.is_none(), "no hands model, no tracking");
    let src = SyntheticSource::new(640, 480, 20.0).unwrap_or_else(|e| panic!("{e}"));
    let reference = SyntheticSource::new(640, 480, 20.0).unwrap_or_else(|e| panic!("{e}"));
    let options = LiveOptions {
        models,
        params: InferParams::default(),
        mirror: false,
        max_frames: Some(100),
        headless: true,
        track,
    };
    let mut p = LivePipeline::start(
        engine.clone(),
        modeldock::camera::source::SourceFactory::ready(src),
        options,
        None,
    );
    assert!(p.wait(common::WAIT));
    let h = p.history();
    let counts = p.track_counts().unwrap_or_else(|| panic!("no tracking counts"));
    println!(
        "live: {} frames inferred, palm detector on {}, {} tracked at the end",
        h.len(),
        counts.detections,
        counts.tracked
    );
    assert_eq!(counts.frames, h.len() as u64);
    assert!(h.len() >= 5, "{} frames inferred", h.len());
    // Frames the pipeline dropped make the hand jump further between
    // inferred frames; it must still be followed on every one.
    let mut worst = 0f32;
    for (id, dets) in &h {
        assert_eq!(dets.len(), 1, "frame {id}: {} hands", dets.len());
        worst = worst.max(finger_error(&dets[0].keypoints, &reference.hand_landmarks(*id)));
    }
    assert!(
        worst <= 14.0,
        "one frame's fingers are {worst:.1} px off the known path"
    );
    // The first frame detects, then one in skip_frames (10) at most: no
    // frame jump on this path counts as a new scene.
    assert!(
        counts.detections <= 1 + counts.frames / 5,
        "palm detector on {} of {} frames",
        counts.detections,
        counts.frames
    );
    assert_eq!(counts.tracked, 1);
    drop(p);
    engine.shutdown();
}

#[test]
fn two_regions_on_one_hand_give_one_hand() {
    let (net, _) = load();
    let src = SyntheticSource::new(640, 480, 20.0).unwrap_or_else(|e| panic!("{e}"));
    let img = src.render(0);
    let first = first_frame(&net, &img);
    assert_eq!(first.len(), 1);
    let r = modeldock::vision::hand_roi::roi_from_landmarks(&first[0].keypoints).unwrap_or_else(|| panic!("no region"));
    let moved = modeldock::vision::hand_roi::HandRegion {
        center: [r.center[0] + 4.0, r.center[1] - 3.0],
        ..r
    };
    let params = InferParams {
        hand_regions: Some(modeldock::vision::hand_roi::HandRegions::new(&[r, moved], false)),
        ..Default::default()
    };
    let dets = net.infer(&img, &params).unwrap_or_else(|e| panic!("{e}")).0;
    assert_eq!(dets.len(), 1, "{} hands from two regions on one hand", dets.len());
}

/// `d` moved by (`dx`, `dy`) pixels with presence `score`.
fn moved(d: &Detection, dx: f32, dy: f32, score: f32) -> Detection {
    let mut m = d.clone();
    m.score = score;
    for k in &mut m.keypoints {
        k[0] += dx;
        k[1] += dy;
    }
    for (i, v) in m.bbox.iter_mut().enumerate() {
        *v += if i % 2 == 0 { dx } else { dy };
    }
    m
}

#[test]
fn a_ghost_and_a_faint_hand_beside_sample2s_three_are_not_tracked() {
    let (net, m) = load();
    let p = root().join("tests/fixtures/human-models/images/sample2.png");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let photo = modeldock::vision::decode::decode_bytes("sample2", &bytes, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let first = first_frame(&net, &photo);
    assert_eq!(first.len(), 3, "first-frame hands");
    // The answer as the tracker once saw it: a duplicate of the first hand a
    // few pixels off and more confident, and a hand whose presence is under
    // MediaPipe's min_tracking_confidence (0.5) but above the model's bar.
    let ghost = moved(&first[0], 6.0, -4.0, (first[0].score + 1.0) / 2.0);
    let faint = moved(&first[1], 0.0, -400.0, 0.3);
    let mut answer = first.clone();
    answer.push(ghost.clone());
    answer.push(faint);
    let mut t = HandTracker::new(options(&m));
    let plan = t.plan(&photo);
    assert!(plan.detect);
    t.update(&answer);
    assert_eq!(t.counts().tracked, 3, "the ghost and the faint hand are not tracked");
    // The duplicate kept is the more confident one, and the next frame,
    // tracked from these regions, has the three hands.
    let plan = t.plan(&photo);
    let ghost_roi = modeldock::vision::hand_roi::roi_from_landmarks(&ghost.keypoints)
        .unwrap_or_else(|| panic!("no region for the ghost"));
    assert!(
        plan.as_slice().iter().any(|r| r.center == ghost_roi.center),
        "the higher-scoring of two duplicates stays"
    );
    let params = InferParams {
        hand_regions: Some(plan),
        ..Default::default()
    };
    let dets = net.infer(&photo, &params).unwrap_or_else(|e| panic!("{e}")).0;
    t.update(&dets);
    assert_eq!(dets.len(), 3, "tracked hands on the next frame");
    assert_eq!(t.counts().tracked, 3);
}
