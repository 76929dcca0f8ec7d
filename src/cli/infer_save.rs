//! `infer --save DIR`: an annotated copy of each image (masks composited in
//! the `--mask-style`, then boxes, labels, scores and keypoints, drawn with
//! imageproc) plus one JSON file per image (masks included), the habit of
//! Ultralytics' `save=True`.

use std::path::{Path, PathBuf};

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_circle_mut, draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut};
use imageproc::rect::Rect;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::vision::decode::{decode_bytes, DecodeLimits};
use crate::vision::mask_overlay::{composite, MaskStyle};
use crate::vision::{Detection, Mask};

/// A detection's colour: the one the app's overlays and the masks' tint use.
fn colour(d: &Detection) -> Rgb<u8> {
    Rgb(crate::vision::overlay::class_colour(d.class_id, &d.label))
}

/// Draws `dets` onto `img`.
pub fn annotate(img: &mut RgbImage, dets: &[Detection]) {
    let font = FontRef::try_from_slice(epaint_default_fonts::HACK_REGULAR).ok();
    let (w, h) = img.dimensions();
    let thick = ((w.max(h) as f32) / 400.0).clamp(1.0, 6.0) as i32;
    let scale = PxScale::from(((w.max(h) as f32) / 45.0).clamp(12.0, 40.0));
    for d in dets {
        let c = colour(d);
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

/// The masks of an answer's JSON (none when it has no `masks`).
fn masks_of(name: &str, result: &Value) -> Result<Vec<Mask>> {
    match result.get("masks") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(m) => serde_json::from_value(m.clone()).map_err(|e| Error::msg(format!("{name}: masks: {e}"))),
    }
}

/// `img` with the answer `result`'s masks composited in `style`, then its
/// detections drawn.
pub fn render(name: &str, img: &RgbImage, result: &Value, style: &MaskStyle) -> Result<RgbImage> {
    let dets: Vec<Detection> = serde_json::from_value(result["detections"].clone()).unwrap_or_default();
    let mut out = composite(img, &masks_of(name, result)?, &dets, style);
    annotate(&mut out, &dets);
    Ok(out)
}

/// Writes `<stem>.jpg|png` (annotated) and `<stem>.json` for one answered image.
pub fn save(
    dir: &Path,
    image_path: &Path,
    result: &Value,
    style: &MaskStyle,
    taken: &mut Vec<PathBuf>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::msg(format!("{}: cannot create: {e}", dir.display())))?;
    let name = image_path.display().to_string();
    let bytes = std::fs::read(image_path).map_err(|e| Error::msg(format!("{name}: {e}")))?;
    let img = decode_bytes(&name, &bytes, &DecodeLimits::default()).map_err(|e| Error::msg(e.to_string()))?;
    let img = render(&name, &img, result, style)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::mask_overlay::{Background, MaskMode};

    fn answer(masks: &[Mask]) -> Value {
        serde_json::json!({"image": "a.png", "detections": [], "masks": masks})
    }

    #[test]
    fn saved_images_carry_the_masks_in_the_chosen_style_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.png");
        RgbImage::from_pixel(8, 4, Rgb([100, 100, 100])).save(&src).unwrap();
        // The left half is kept, the right half is background.
        let m = Mask::new("person", [0.0, 0.0, 8.0, 4.0], 2, 1, vec![255, 0]).unwrap();
        let style = MaskStyle {
            mode: MaskMode::Replace(Background::Colour([0, 200, 0])),
            ..Default::default()
        };
        let out = save(
            &dir.path().join("out"),
            &src,
            &answer(std::slice::from_ref(&m)),
            &style,
            &mut Vec::new(),
        )
        .unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        assert_eq!(*img.get_pixel(0, 0), Rgb([100, 100, 100]));
        assert_eq!(*img.get_pixel(7, 3), Rgb([0, 200, 0]));
        let json: Value = serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
        let back: Vec<Mask> = serde_json::from_value(json["masks"].clone()).unwrap();
        assert_eq!(back, vec![m.clone()]);
        // The default tint changes the kept half only.
        let tinted = render(
            "a.png",
            &RgbImage::from_pixel(8, 4, Rgb([100, 100, 100])),
            &answer(&[m]),
            &MaskStyle::default(),
        )
        .unwrap();
        assert_ne!(*tinted.get_pixel(0, 0), Rgb([100, 100, 100]));
        assert_eq!(*tinted.get_pixel(7, 0), Rgb([100, 100, 100]));
    }

    #[test]
    fn a_broken_mask_is_one_line_naming_the_image() {
        let bad = serde_json::json!({"detections": [], "masks": [{"label": "p", "region": [0, 0, 1, 1], "width": 1, "height": 1, "png": "!!"}]});
        let e = render("a.png", &RgbImage::new(2, 2), &bad, &MaskStyle::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("a.png: masks: ") && !e.contains('\n'), "{e}");
    }
}
