//! Masks composited onto the image they came from: a tint over what a mask
//! keeps, the rest blurred, or the rest replaced by a colour or another
//! image. Pure functions over `RgbImage`s, shared by `infer --save`, the
//! Viewer and the Live panel.
//!
//! A pixel's weight is how surely a mask keeps it: 0 well below the
//! threshold, 1 well above it, a linear ramp [`SOFT_EDGE`] either side, so
//! edges stay soft. Tint gives each mask its own colour (a detection's mask
//! the detection's colour, as its box has); blur and replace keep what any
//! mask keeps and change the rest, blended by the weight.

use std::sync::Arc;

use image::{Rgb, RgbImage};

use super::overlay::class_colour;
use super::{Detection, Mask};
use crate::error::{Error, Result};

/// Half the width of the ramp around the threshold (in probability).
pub const SOFT_EDGE: f32 = 0.05;

/// How strongly a tint covers what a mask keeps.
pub const TINT_ALPHA: f32 = 0.5;

/// What replaces the background.
#[derive(Debug, Clone, PartialEq)]
pub enum Background {
    Colour([u8; 3]),
    /// Resized to cover the image (the centre kept, the rest cropped).
    Image(Arc<RgbImage>),
}

/// How masks are drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskMode {
    /// Each mask's colour over what it keeps.
    Tint,
    /// What no mask keeps, blurred.
    Blur,
    /// What no mask keeps, replaced.
    Replace(Background),
}

/// A mode and the probability (0–1) from which a mask keeps a pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskStyle {
    pub mode: MaskMode,
    pub threshold: f32,
}

impl Default for MaskStyle {
    fn default() -> Self {
        MaskStyle {
            mode: MaskMode::Tint,
            threshold: 0.5,
        }
    }
}

/// The weight (0–1) of probability `p` (0–255) at `threshold` (0–1).
pub fn weight(p: u8, threshold: f32) -> f32 {
    let p = p as f32 / 255.0;
    ((p - (threshold - SOFT_EDGE)) / (2.0 * SOFT_EDGE)).clamp(0.0, 1.0)
}

/// `img` with `masks` drawn in `style`; `detections` give per-detection
/// masks their colours.
pub fn composite(img: &RgbImage, masks: &[Mask], detections: &[Detection], style: &MaskStyle) -> RgbImage {
    if masks.is_empty() {
        return img.clone();
    }
    match &style.mode {
        MaskMode::Tint => tint(img, masks, detections, style.threshold),
        MaskMode::Blur => {
            let sigma = (img.width().max(img.height()) as f32 / 80.0).clamp(2.0, 24.0);
            let blurred = image::imageops::fast_blur(img, sigma);
            keep_over(img, &blurred, &union_weights(img, masks, style.threshold))
        }
        MaskMode::Replace(bg) => {
            let back = background(bg, img.width(), img.height());
            keep_over(img, &back, &union_weights(img, masks, style.threshold))
        }
    }
}

/// The colour a mask is tinted with: its detection's, else its label's.
pub fn mask_colour(mask: &Mask, detections: &[Detection]) -> [u8; 3] {
    match mask.detection.and_then(|i| detections.get(i as usize)) {
        Some(d) => class_colour(d.class_id, &d.label),
        None => class_colour(None, &mask.label),
    }
}

fn tint(img: &RgbImage, masks: &[Mask], detections: &[Detection], threshold: f32) -> RgbImage {
    let mut out = img.clone();
    for m in masks {
        let c = mask_colour(m, detections);
        let probs = m.to_image(img.width(), img.height());
        for (px, p) in out.pixels_mut().zip(probs) {
            let a = TINT_ALPHA * weight(p, threshold);
            if a > 0.0 {
                *px = blend(*px, Rgb(c), a);
            }
        }
    }
    out
}

/// Per pixel, the largest weight of any mask.
fn union_weights(img: &RgbImage, masks: &[Mask], threshold: f32) -> Vec<f32> {
    let mut w = vec![0f32; img.width() as usize * img.height() as usize];
    for m in masks {
        for (acc, p) in w.iter_mut().zip(m.to_image(img.width(), img.height())) {
            *acc = acc.max(weight(p, threshold));
        }
    }
    w
}

/// `front` where the weight is 1, `back` where it is 0, blended between.
fn keep_over(front: &RgbImage, back: &RgbImage, weights: &[f32]) -> RgbImage {
    let mut out = back.clone();
    for ((o, f), w) in out.pixels_mut().zip(front.pixels()).zip(weights) {
        *o = blend(*o, *f, *w);
    }
    out
}

fn background(bg: &Background, w: u32, h: u32) -> RgbImage {
    match bg {
        Background::Colour(c) => RgbImage::from_pixel(w, h, Rgb(*c)),
        Background::Image(b) => image::DynamicImage::ImageRgb8((**b).clone())
            .resize_to_fill(w, h, image::imageops::FilterType::Triangle)
            .to_rgb8(),
    }
}

/// `a` moved towards `b` by `t` (0: `a`, 1: `b` exactly).
fn blend(a: Rgb<u8>, b: Rgb<u8>, t: f32) -> Rgb<u8> {
    if t >= 1.0 {
        return b;
    }
    let mix = |x: u8, y: u8| (x as f32 + (y as f32 - x as f32) * t).round() as u8;
    Rgb([mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2])])
}

/// Parses a mask style as the CLI spells it: `tint`, `blur`, or
/// `replace:#RRGGBB`.
pub fn parse_mode(s: &str) -> Result<MaskMode> {
    match s {
        "tint" => Ok(MaskMode::Tint),
        "blur" => Ok(MaskMode::Blur),
        _ => match s.strip_prefix("replace:") {
            Some(hex) => parse_hex(hex)
                .map(|c| MaskMode::Replace(Background::Colour(c)))
                .ok_or_else(|| Error::usage(format!("mask style '{s}': the colour is not #RRGGBB"))),
            None => Err(Error::usage(format!(
                "mask style '{s}': expected tint, blur or replace:#RRGGBB"
            ))),
        },
    }
}

fn parse_hex(s: &str) -> Option<[u8; 3]> {
    let h = s.strip_prefix('#').unwrap_or(s);
    if h.len() != 6 || !h.is_ascii() {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkerboard, so a blur changes every pixel away from flat areas.
    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if (x / 2 + y / 2) % 2 == 0 {
                Rgb([230, 40, 10])
            } else {
                Rgb([10, 60, 220])
            }
        })
    }

    /// A mask on the image's own grid: p = `f(x)` (0–255).
    fn mask_by_column(w: u32, h: u32, f: impl Fn(u32) -> u8) -> Mask {
        let data = (0..h).flat_map(|_| (0..w).map(&f)).collect();
        Mask::new("person", [0.0, 0.0, w as f32, h as f32], w, h, data).unwrap()
    }

    fn half_mask(w: u32, h: u32) -> Mask {
        mask_by_column(w, h, |x| if x < w / 2 { 255 } else { 0 })
    }

    fn columns_equal(a: &RgbImage, b: &RgbImage, x: u32) -> bool {
        (0..a.height()).all(|y| a.get_pixel(x, y) == b.get_pixel(x, y))
    }

    #[test]
    fn blur_keeps_the_masked_half_exactly_and_blurs_the_rest() {
        let img = checker(40, 20);
        let style = MaskStyle {
            mode: MaskMode::Blur,
            threshold: 0.5,
        };
        let out = composite(&img, &[half_mask(40, 20)], &[], &style);
        assert!((0..20).all(|x| columns_equal(&out, &img, x)), "left half kept");
        assert!((20..40).all(|x| !columns_equal(&out, &img, x)), "right half blurred");
    }

    #[test]
    fn replace_fills_the_rest_with_a_colour_or_an_image() {
        let img = checker(40, 20);
        let style = MaskStyle {
            mode: MaskMode::Replace(Background::Colour([1, 2, 3])),
            threshold: 0.5,
        };
        let out = composite(&img, &[half_mask(40, 20)], &[], &style);
        assert!((0..20).all(|x| columns_equal(&out, &img, x)));
        assert!(out
            .enumerate_pixels()
            .filter(|(x, _, _)| *x >= 20)
            .all(|(_, _, p)| *p == Rgb([1, 2, 3])));
        // An image of another size and shape is resized to cover.
        let back = Arc::new(RgbImage::from_pixel(7, 30, Rgb([9, 200, 9])));
        let style = MaskStyle {
            mode: MaskMode::Replace(Background::Image(back)),
            threshold: 0.5,
        };
        let out = composite(&img, &[half_mask(40, 20)], &[], &style);
        assert_eq!(out.dimensions(), (40, 20));
        assert_eq!(*out.get_pixel(39, 19), Rgb([9, 200, 9]));
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(0, 0));
    }

    #[test]
    fn the_threshold_moves_the_boundary() {
        let img = checker(100, 4);
        // p rises from 0 at the left to 255 at the right.
        let ramp = mask_by_column(100, 4, |x| (x * 255 / 99) as u8);
        let replaced = |t: f32| {
            let style = MaskStyle {
                mode: MaskMode::Replace(Background::Colour([0, 0, 0])),
                threshold: t,
            };
            let out = composite(&img, std::slice::from_ref(&ramp), &[], &style);
            (0..100).filter(|x| columns_equal(&out, &img, *x)).count()
        };
        let (low, high) = (replaced(0.3), replaced(0.7));
        // Kept exactly where p ≥ t + SOFT_EDGE: about (1 − t − 0.05)·100 columns.
        assert!((60..=70).contains(&low), "{low}");
        assert!((20..=30).contains(&high), "{high}");
    }

    #[test]
    fn tint_colours_what_a_mask_keeps_with_its_detection_s_colour() {
        let img = RgbImage::from_pixel(10, 10, Rgb([128, 128, 128]));
        let mut m = half_mask(10, 10);
        m.detection = Some(1);
        let dets: Vec<Detection> = ["cat", "dog"]
            .iter()
            .map(|l| Detection {
                label: l.to_string(),
                class_id: None,
                score: 0.9,
                bbox: [0.0, 0.0, 5.0, 10.0],
                keypoints: Vec::new(),
            })
            .collect();
        let out = composite(&img, &[m.clone()], &dets, &MaskStyle::default());
        let dog = class_colour(None, "dog");
        let want = blend(Rgb([128, 128, 128]), Rgb(dog), TINT_ALPHA);
        assert_eq!(*out.get_pixel(1, 1), want);
        assert_eq!(*out.get_pixel(8, 1), Rgb([128, 128, 128]), "right half untouched");
        assert_eq!(mask_colour(&m, &dets), dog);
        m.detection = None;
        assert_eq!(mask_colour(&m, &dets), class_colour(None, "person"));
    }

    #[test]
    fn mask_styles_parse_as_the_cli_spells_them() {
        assert_eq!(parse_mode("tint").ok(), Some(MaskMode::Tint));
        assert_eq!(parse_mode("blur").ok(), Some(MaskMode::Blur));
        assert_eq!(
            parse_mode("replace:#00ff7F").ok(),
            Some(MaskMode::Replace(Background::Colour([0, 255, 127])))
        );
        assert!(parse_mode("replace:#00ff").is_err_and(|e| e.to_string().contains("#RRGGBB")));
        assert!(parse_mode("sepia").is_err_and(|e| e.to_string().starts_with("mask style 'sepia'")));
    }
}
