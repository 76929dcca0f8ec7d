//! `infer --save DIR`: an annotated copy of each image (boxes, labels, scores,
//! keypoints, drawn with imageproc) plus one JSON file per image, the habit of
//! Ultralytics' `save=True`.

use std::path::{Path, PathBuf};

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_circle_mut, draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut};
use imageproc::rect::Rect;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::vision::decode::{decode_bytes, DecodeLimits};
use crate::vision::Detection;

const PALETTE: [[u8; 3]; 8] = [
    [255, 56, 56],
    [255, 157, 151],
    [255, 112, 31],
    [255, 178, 29],
    [72, 249, 10],
    [26, 147, 52],
    [0, 194, 255],
    [132, 56, 255],
];

fn colour(label: &str) -> Rgb<u8> {
    let h = label
        .bytes()
        .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
    Rgb(PALETTE[h % PALETTE.len()])
}

/// Draws `dets` onto `img`.
pub fn annotate(img: &mut RgbImage, dets: &[Detection]) {
    let font = FontRef::try_from_slice(epaint_default_fonts::HACK_REGULAR).ok();
    let (w, h) = img.dimensions();
    let thick = ((w.max(h) as f32) / 400.0).clamp(1.0, 6.0) as i32;
    let scale = PxScale::from(((w.max(h) as f32) / 45.0).clamp(12.0, 40.0));
    for d in dets {
        let c = colour(&d.label);
        let [x0, y0, x1, y1] = d.bbox.map(|v| if v.is_finite() { v } else { 0.0 });
        for t in 0..thick {
            let (x, y) = (x0 as i32 - t, y0 as i32 - t);
            let (bw, bh) = ((x1 - x0) as i32 + 2 * t, (y1 - y0) as i32 + 2 * t);
            if bw > 0 && bh > 0 {
                draw_hollow_rect_mut(img, Rect::at(x, y).of_size(bw as u32, bh as u32), c);
            }
        }
        for kp in &d.keypoints {
            if kp[2] > 0.0 && kp[0].is_finite() && kp[1].is_finite() {
                draw_filled_circle_mut(img, (kp[0] as i32, kp[1] as i32), thick + 1, Rgb([0, 255, 255]));
            }
        }
        if let Some(font) = &font {
            let text = format!("{} {:.2}", d.label, d.score);
            let th = scale.y as u32 + 4;
            let tw = (text.chars().count() as f32 * scale.x * 0.6) as u32 + 6;
            let ty = (y0 as i32 - th as i32).max(0);
            draw_filled_rect_mut(img, Rect::at(x0 as i32, ty).of_size(tw, th), c);
            draw_text_mut(img, Rgb([255, 255, 255]), x0 as i32 + 3, ty + 2, scale, font, &text);
        }
    }
}

/// A file name in `dir` for `image` that no earlier input of this run took.
fn target(dir: &Path, image: &str, ext: &str, taken: &mut Vec<PathBuf>) -> PathBuf {
    let stem = Path::new(image)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".to_string());
    let mut p = dir.join(format!("{stem}.{ext}"));
    let mut i = 2;
    while taken.contains(&p) {
        p = dir.join(format!("{stem}_{i}.{ext}"));
        i += 1;
    }
    taken.push(p.clone());
    p
}

/// Writes `<stem>.jpg|png` (annotated) and `<stem>.json` for one answered image.
pub fn save(dir: &Path, image_path: &Path, result: &Value, taken: &mut Vec<PathBuf>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::msg(format!("{}: cannot create: {e}", dir.display())))?;
    let name = image_path.display().to_string();
    let bytes = std::fs::read(image_path).map_err(|e| Error::msg(format!("{name}: {e}")))?;
    let mut img = decode_bytes(&name, &bytes, &DecodeLimits::default()).map_err(|e| Error::msg(e.to_string()))?;
    let dets: Vec<Detection> = serde_json::from_value(result["detections"].clone()).unwrap_or_default();
    annotate(&mut img, &dets);
    let is_png = image_path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let out = target(dir, &name, if is_png { "png" } else { "jpg" }, taken);
    img.save(&out)
        .map_err(|e| Error::msg(format!("{}: cannot write: {e}", out.display())))?;
    let json = out.with_extension("json");
    std::fs::write(&json, format!("{result}\n"))
        .map_err(|e| Error::msg(format!("{}: cannot write: {e}", json.display())))?;
    Ok(out)
}
