//! The tiny face detector keeps face-api's scores through the JPEG decode:
//! the way the pipeline decodes a JPEG for it (at reduced scale only where
//! its manifest's `decode` allows) moves its scores by at most 0.02 from the
//! full-size decode. Checked on the committed JPEGs and on the committed
//! photos saved as JPEG at a photo's size, where a reduced decode applies.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use common::*;
use modeldock::catalog::registry::{Registry, WeightsResolved};
use modeldock::catalog::Manifest;
use modeldock::engine::{Engine, EngineConfig, ImageInput};
use modeldock::models::tiny_face_detector::TinyFaceDetector;
use modeldock::models::weights::var_builder;
use modeldock::models::Model;
use modeldock::vision::decode::{decode_bytes, DecodeLimits};
use modeldock::vision::jpeg_scaled::decode_reduced;
use modeldock::vision::{Detection, InferParams};

/// How far the pipeline's decode may move a score from the full decode's.
const TOLERANCE: f32 = 0.02;

/// The photos' longer side once saved as JPEG: a phone photo's.
const PHOTO_SIDE: u32 = 1920;

fn face_detector() -> (TinyFaceDetector, Manifest) {
    let reg = Registry::discover(&[]);
    let e = reg
        .get("face-detector")
        .unwrap_or_else(|| panic!("face-detector is built in"));
    let WeightsResolved::Local(src) = &e.weights else {
        panic!("local weights")
    };
    let vb =
        var_builder(src, e.predicted_bytes, &Device::Cpu, Arc::new(|_, _| {})).unwrap_or_else(|err| panic!("{err}"));
    let net = TinyFaceDetector::load(vb, &e.manifest).unwrap_or_else(|err| panic!("{err}"));
    (net, e.manifest.clone())
}

/// Every committed JPEG under `dir`, by its path relative to the fixtures.
fn committed_jpegs(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            committed_jpegs(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg"))
        {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let root = fixture("");
            let rel = p.strip_prefix(&root).unwrap_or(&p);
            out.push((rel.display().to_string(), bytes));
        }
    }
}

/// A committed photo as a JPEG whose longer side is at least [`PHOTO_SIDE`]
/// (upscaled when the photo is smaller), quality 90.
fn photo_jpeg(rel: &str) -> (String, Vec<u8>) {
    let src = image::open(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let long = src.width().max(src.height());
    let k = PHOTO_SIDE.div_ceil(long);
    let big = if k > 1 {
        src.resize_exact(src.width() * k, src.height() * k, image::imageops::FilterType::Triangle)
    } else {
        src
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&big.to_rgb8())
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    (format!("{rel} as JPEG {}x{}", big.width(), big.height()), out)
}

fn jpegs() -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    committed_jpegs(&fixture(""), &mut all);
    for rel in [
        "human-models/images/sample2.png",
        "human-models/images/astronaut.png",
        "human-models/images/chelsea.png",
        "human-models/images/motorcycle_left.png",
        "human-models/images/rocket.png",
        "images/camera.png",
    ] {
        all.push(photo_jpeg(rel));
    }
    all
}

/// The sigmoid scores of every anchor on the 13×13 grid.
fn scores(net: &TinyFaceDetector, img: &image::RgbImage) -> Vec<f32> {
    let x = net
        .preprocess_raw(img)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no raw input"));
    let out: Tensor = net.forward_raw(&x).unwrap_or_else(|e| panic!("{e}"));
    let (_, c, g, g2) = out.dims4().unwrap_or_else(|e| panic!("{e}"));
    let data: Vec<f32> = out
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .unwrap_or_else(|e| panic!("{e}"));
    (0..c / 5)
        .flat_map(|a| data[(a * 5 + 4) * g * g2..(a * 5 + 5) * g * g2].to_vec())
        .map(|v| 1.0 / (1.0 + (-v).exp()))
        .collect()
}

/// The largest score difference between `a`'s detections and their twins
/// in `b` (IoU ≥ 0.5; a detection without a twin counts its whole score).
fn detection_diff(a: &[Detection], b: &[Detection]) -> f32 {
    let one_way = |a: &[Detection], b: &[Detection]| {
        a.iter()
            .map(|d| {
                b.iter()
                    .filter(|x| modeldock::vision::nms::iou(&x.bbox, &d.bbox) >= 0.5)
                    .map(|x| (x.score - d.score).abs())
                    .fold(d.score, f32::min)
            })
            .fold(0.0, f32::max)
    };
    one_way(a, b).max(one_way(b, a))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn the_face_detectors_decode_keeps_every_anchor_score_within_0_02_of_the_full_decode() {
    let (net, m) = face_detector();
    let limits = DecodeLimits::default();
    let mut reduced_applies = 0;
    for (name, bytes) in jpegs() {
        let full = match decode_bytes(&name, &bytes, &limits) {
            Ok(img) => img,
            Err(e) => panic!("{name}: {e}"),
        };
        let reference = scores(&net, &full);
        // What a reduced decode would do to this JPEG (the measure of what is at stake) ...
        let reduced = decode_reduced(&bytes, m.input_size * 2, &limits);
        let fast = reduced.as_ref().map(|r| scores(&net, &r.image));
        let fast_detections = reduced.as_ref().map(|r| {
            let run = |img: &image::RgbImage| net.infer(img, &InferParams::default()).map(|(d, _)| d);
            let mut a = run(&r.image).unwrap_or_else(|e| panic!("{e}"));
            let (fx, fy) = r.factor();
            a.iter_mut().for_each(|d| d.scale(fx, fy));
            detection_diff(&a, &run(&full).unwrap_or_else(|e| panic!("{e}")))
        });
        reduced_applies += usize::from(fast.is_some());
        // ... and what the pipeline does, by the manifest.
        let pipeline = m
            .reduced_decode_side()
            .and_then(|side| decode_reduced(&bytes, side, &limits))
            .map(|r| scores(&net, &r.image))
            .unwrap_or_else(|| reference.clone());
        let d = max_abs_diff(&pipeline, &reference);
        let shown = |v: Option<f32>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
        eprintln!(
            "{name}: max |score - full decode's|: fast {} (detections {}), pipeline ({}) {d:.4}",
            shown(fast.map(|f| max_abs_diff(&f, &reference))),
            shown(fast_detections),
            m.decode().name()
        );
        assert!(
            d <= TOLERANCE,
            "{name}: the decode moves a score by {d} (> {TOLERANCE})"
        );
    }
    // The photos are large enough for a reduced decode (else this compares a path with itself).
    assert!(
        reduced_applies >= 6,
        "a reduced decode applied to {reduced_applies} JPEGs"
    );
}

fn detections(e: &Engine, input: ImageInput) -> Vec<Detection> {
    let params = InferParams {
        conf: Some(0.3),
        ..Default::default()
    };
    match e.infer_wait("face-detector", input, params) {
        Ok(r) => r.output.detections,
        Err(err) => panic!("{}", err.error),
    }
}

#[test]
fn the_engine_answers_a_face_jpeg_with_the_full_decodes_scores() {
    let e = Engine::start(
        Registry::discover(&[]),
        EngineConfig {
            cache_entries: 0,
            ..config()
        },
        None,
    );
    let limits = DecodeLimits::default();
    let (name, bytes) = photo_jpeg("human-models/images/sample2.png");
    let full = Arc::new(decode_bytes(&name, &bytes, &limits).unwrap_or_else(|err| panic!("{err}")));
    let bytes = Arc::new(bytes);
    let from_bytes = detections(
        &e,
        ImageInput::Bytes {
            name: "sample2.jpg".into(),
            bytes,
        },
    );
    let from_full = detections(
        &e,
        ImageInput::Frame {
            name: name.clone(),
            image: full,
        },
    );
    assert!(!from_full.is_empty(), "faces in sample2");
    assert_eq!(from_bytes.len(), from_full.len(), "{from_bytes:?} vs {from_full:?}");
    for (a, b) in from_bytes.iter().zip(&from_full) {
        let d = (a.score - b.score).abs();
        assert!(
            d <= TOLERANCE,
            "{name}: score {} vs the full decode's {}",
            a.score,
            b.score
        );
        for k in 0..4 {
            assert!((a.bbox[k] - b.bbox[k]).abs() <= 4.0, "{:?} vs {:?}", a.bbox, b.bbox);
        }
    }
    e.shutdown();
}
