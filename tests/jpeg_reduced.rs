//! A large JPEG for a model that resizes the whole image decodes at a
//! reduced scale (the IDCT at 1/2…1/8), and the answer is mapped back to the
//! original's pixels: the same detections as from the full-size decode, for
//! a model whose manifest decodes `fast`.

mod common;

use std::sync::Arc;

use common::*;
use modeldock::catalog::registry::Registry;
use modeldock::engine::{Engine, EngineConfig, ImageInput, InferResult};
use modeldock::vision::decode::{decode_bytes, DecodeLimits};
use modeldock::vision::InferParams;

/// sample2 (faces and hands) upscaled to a 1920×1398 photo, as JPEG.
fn big_jpeg() -> Vec<u8> {
    let src = image::open(fixture("human-models/images/sample2.png")).unwrap_or_else(|e| panic!("{e}"));
    let big = src.resize_exact(1920, 1398, image::imageops::FilterType::Triangle);
    let mut out = std::io::Cursor::new(Vec::new());
    big.to_rgb8()
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("{e}"));
    out.into_inner()
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let i = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    i / (area(a) + area(b) - i).max(1e-6)
}

fn run(e: &Engine, model: &str, input: ImageInput) -> InferResult {
    e.infer_wait(model, input, InferParams::default())
        .unwrap_or_else(|e| panic!("{}", e.error))
}

#[test]
fn reduced_jpeg_decoding_gives_the_full_decodes_detections_in_original_pixels() {
    let jpeg = Arc::new(big_jpeg());
    // The reduced path applies to this photo (else the test would compare a path with itself).
    let r = modeldock::vision::jpeg_scaled::decode_reduced(&jpeg, 832, &DecodeLimits::default());
    assert_eq!(r.map(|r| r.image.width()), Some(960));
    let full = Arc::new(decode_bytes("big", &jpeg, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{e}")));
    let e = Engine::start(
        Registry::discover(&[]),
        EngineConfig {
            cache_entries: 0,
            ..config()
        },
        None,
    );
    // A model that decodes fast (the face detector decodes in full: tests/decode_parity.rs).
    let model = "objects";
    let manifest = e.catalog().get(model).map(|m| m.manifest.decode());
    assert_eq!(manifest, Some(modeldock::catalog::Decode::Fast), "{model}");
    let reduced = run(
        &e,
        model,
        ImageInput::Bytes {
            name: "big.jpg".into(),
            bytes: jpeg.clone(),
        },
    );
    let whole = run(
        &e,
        model,
        ImageInput::Frame {
            name: "big".into(),
            image: full.clone(),
        },
    );
    assert_eq!(reduced.output.image_size, [1920, 1398], "{model}");
    let (a, b) = (&reduced.output.detections, &whole.output.detections);
    assert!(!b.is_empty(), "{model} finds something in sample2");
    // Every confident full-size detection has its twin: same label, IoU ≥ 0.85.
    for d in b.iter().filter(|d| d.score >= 0.5) {
        let twin = a
            .iter()
            .filter(|x| x.label == d.label)
            .map(|x| (iou(&x.bbox, &d.bbox), x.score))
            .fold((0f32, 0f32), |m, v| if v.0 > m.0 { v } else { m });
        assert!(
            twin.0 >= 0.85,
            "{model}: {} {:?} has no twin (best IoU {})",
            d.label,
            d.bbox,
            twin.0
        );
        assert!(
            (twin.1 - d.score).abs() <= 0.1,
            "{model}: score {} vs {}",
            twin.1,
            d.score
        );
    }
    let strong = |v: &[modeldock::vision::Detection]| v.iter().filter(|d| d.score >= 0.6).count();
    assert!(
        strong(a).abs_diff(strong(b)) <= 1,
        "{model}: {} vs {} confident detections",
        strong(a),
        strong(b)
    );
    e.shutdown();
}
