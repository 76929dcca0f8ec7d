//! Export: annotated PNGs (masks composited as the Viewer shows them) and
//! one JSON per image (the CLI's JSON), written on a background thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{Rgb, RgbImage};

use crate::client::InferResult;
use crate::error::{Error, Result};
use crate::vision::decode::{decode_bytes, DecodeLimits};
use crate::vision::mask_overlay::{composite, MaskStyle};
use crate::vision::overlay::skeleton;

pub struct ExportItem {
    pub name: String,
    pub bytes: Arc<Vec<u8>>,
    pub result: InferResult,
    pub conf: f32,
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, a: [f32; 2], b: [f32; 2], c: Rgb<u8>) {
    let n = ((b[0] - a[0]).abs().max((b[1] - a[1]).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f32 / n as f32;
        put(
            img,
            (a[0] + (b[0] - a[0]) * t).round() as i64,
            (a[1] + (b[1] - a[1]) * t).round() as i64,
            c,
        );
    }
}

/// Draws boxes, keypoints and skeletons into the image.
pub fn annotate(img: &mut RgbImage, r: &InferResult, conf: f32) {
    for d in r.output.detections.iter().filter(|d| d.score > conf) {
        annotate_detection(img, d);
    }
}

/// One detection's box, skeleton and keypoints.
pub fn annotate_detection(img: &mut RgbImage, d: &crate::vision::Detection) {
    let c = Rgb([255, 64, 64]);
    {
        let [x0, y0, x1, y1] = d.bbox;
        for off in 0..2 {
            let o = off as f32;
            line(img, [x0 - o, y0 - o], [x1 + o, y0 - o], c);
            line(img, [x1 + o, y0 - o], [x1 + o, y1 + o], c);
            line(img, [x1 + o, y1 + o], [x0 - o, y1 + o], c);
            line(img, [x0 - o, y1 + o], [x0 - o, y0 - o], c);
        }
        for (i, j) in skeleton(d.keypoints.len()) {
            let (a, b) = (d.keypoints[i], d.keypoints[j]);
            line(img, [a[0], a[1]], [b[0], b[1]], Rgb([64, 200, 255]));
        }
        for k in &d.keypoints {
            for dy in -1..=1 {
                for dx in -1..=1 {
                    put(
                        img,
                        k[0].round() as i64 + dx,
                        k[1].round() as i64 + dy,
                        Rgb([255, 255, 0]),
                    );
                }
            }
        }
    }
}

/// Writes `<stem>.annotated.png` and `<stem>.json` for each item into
/// `dir`, masks tinted (the default [`MaskStyle`]).
pub fn export(items: &[ExportItem], dir: &Path) -> Result<Vec<PathBuf>> {
    export_styled(items, dir, &MaskStyle::default())
}

/// [`export`] with masks composited in `style` (the Viewer's choice).
pub fn export_styled(items: &[ExportItem], dir: &Path, style: &MaskStyle) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::msg(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for it in items {
        let stem = Path::new(&it.name)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "image".into());
        let img = decode_bytes(&it.name, &it.bytes, &DecodeLimits::default())?;
        let out = &it.result.output;
        let mut img = composite(&img, &out.masks, &out.detections, style);
        annotate(&mut img, &it.result, it.conf);
        let png = dir.join(format!("{stem}.annotated.png"));
        img.save(&png)
            .map_err(|e| Error::msg(format!("{}: {e}", png.display())))?;
        let json = dir.join(format!("{stem}.json"));
        std::fs::write(&json, it.result.to_json().to_string())
            .map_err(|e| Error::msg(format!("{}: {e}", json.display())))?;
        written.push(png);
        written.push(json);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::mask_overlay::{Background, MaskMode};
    use crate::vision::{Mask, Output, Timings};

    #[test]
    fn exported_images_show_the_masks_in_the_viewer_s_style() {
        let mut png = std::io::Cursor::new(Vec::new());
        RgbImage::from_pixel(8, 2, Rgb([100, 100, 100]))
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let mask = Mask::new("person", [0.0, 0.0, 8.0, 2.0], 2, 1, vec![255, 0]).unwrap();
        let result = InferResult {
            request_id: 1,
            model: "m".into(),
            image: "a.png".into(),
            output: Output {
                image_size: [8, 2],
                detections: Vec::new(),
                masks: vec![mask],
                cached: false,
                tensors: None,
            },
            timings: Timings::default(),
        };
        let item = ExportItem {
            name: "a.png".into(),
            bytes: Arc::new(png.into_inner()),
            result,
            conf: 0.5,
        };
        let dir = tempfile::tempdir().unwrap();
        let style = MaskStyle {
            mode: MaskMode::Replace(Background::Colour([0, 0, 255])),
            threshold: 0.5,
        };
        export_styled(std::slice::from_ref(&item), dir.path(), &style).unwrap();
        let img = image::open(dir.path().join("a.annotated.png")).unwrap().to_rgb8();
        assert_eq!(
            (*img.get_pixel(0, 0), *img.get_pixel(7, 1)),
            (Rgb([100, 100, 100]), Rgb([0, 0, 255]))
        );
        // The plain export tints instead: the background stays.
        export(&[item], dir.path()).unwrap();
        let img = image::open(dir.path().join("a.annotated.png")).unwrap().to_rgb8();
        assert_eq!(*img.get_pixel(7, 1), Rgb([100, 100, 100]));
        assert_ne!(*img.get_pixel(0, 0), Rgb([100, 100, 100]));
    }
}
