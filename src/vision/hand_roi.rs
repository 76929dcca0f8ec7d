//! Hand regions for tracking between video frames, as MediaPipe's
//! `hand_landmark_landmarks_to_roi` graph derives them: the rotated rectangle
//! around one frame's 21 landmarks that the next frame's landmark network
//! crops ([`roi_from_landmarks`]), and the list of such regions a request
//! carries ([`HandRegions`], part of `InferParams`).
//!
//! The rectangle (`HandLandmarksToRectCalculator`, then
//! `RectTransformationCalculator` with `scale 2.0`, `shift_y -0.1`,
//! `square_long`): the rotation points from the wrist (0) to the mean of the
//! index, middle and ring finger bases (5, 9, 13: `((5 + 13) / 2 + 9) / 2`);
//! the box is the extent of the palm and lower finger joints (0–3, 5, 6, 9,
//! 10, 13, 14, 17, 18) in the rotated frame; it moves by a tenth of its height
//! towards the fingers, becomes a square on its longer side and doubles.

use serde::{Deserialize, Serialize};

/// At most this many regions travel with one request.
pub const MAX_REGIONS: usize = 8;
/// MediaPipe's `RectTransformationCalculator` options for hands.
pub const ROI_SCALE: f64 = 2.0;
pub const ROI_SHIFT_Y: f64 = -0.1;
/// The landmarks MediaPipe's hand rectangle is built from (palm and lower joints).
const ROI_LANDMARKS: [usize; 12] = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18];
const WRIST: usize = 0;
const INDEX_BASE: usize = 5;
const MIDDLE_BASE: usize = 9;
const RING_BASE: usize = 13;

/// A rotated square in image pixels: the landmark network's crop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HandRegion {
    pub center: [f32; 2],
    /// Side of the square, pixels.
    pub side: f32,
    /// Radians; 0 when the fingers point up (the palm detector's convention).
    pub angle: f32,
}

impl HandRegion {
    /// Axis-aligned `[x0, y0, x1, y1]` of the square before rotation.
    pub fn crop_box(&self) -> [f64; 4] {
        let (cx, cy, h) = (self.center[0] as f64, self.center[1] as f64, self.side as f64 / 2.0);
        [cx - h, cy - h, cx + h, cy + h]
    }

    /// True when every value is finite and the side positive.
    pub fn is_valid(&self) -> bool {
        self.center.iter().all(|v| v.is_finite()) && self.angle.is_finite() && self.side.is_finite() && self.side > 0.0
    }
}

/// The hand regions a tracking request carries (at most [`MAX_REGIONS`]):
/// a hands model runs its landmark network on each region instead of its
/// palm detector, and runs the palm detector as well when `detect` is set.
/// `Copy`, so `InferParams` stays `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HandRegions {
    regions: [HandRegion; MAX_REGIONS],
    len: u8,
    /// Run the palm detector too (new hands are added, duplicates dropped).
    pub detect: bool,
}

impl HandRegions {
    /// The first [`MAX_REGIONS`] of `regions`.
    pub fn new(regions: &[HandRegion], detect: bool) -> Self {
        let mut out = HandRegions {
            detect,
            ..Default::default()
        };
        for r in regions.iter().take(MAX_REGIONS) {
            out.regions[out.len as usize] = *r;
            out.len += 1;
        }
        out
    }

    pub fn as_slice(&self) -> &[HandRegion] {
        &self.regions[..self.len as usize]
    }

    /// The request parameter `hand_regions` as it travels over HTTP:
    /// `detect` (`1` or `0`), then `;cx,cy,side,angle` per region.
    pub fn to_param(&self) -> String {
        let mut s = String::from(if self.detect { "1" } else { "0" });
        for r in self.as_slice() {
            s.push_str(&format!(";{},{},{},{}", r.center[0], r.center[1], r.side, r.angle));
        }
        s
    }

    /// Reads [`HandRegions::to_param`]'s text; a one-line error naming the
    /// parameter and what is wrong.
    pub fn parse_param(text: &str) -> Result<Self, String> {
        let bad = |why: String| format!("parameter 'hand_regions': {why}");
        let mut parts = text.split(';');
        let detect = match parts.next().map(str::trim) {
            Some("1") => true,
            Some("0") => false,
            other => return Err(bad(format!("starts with {other:?}, expected 1 or 0 (detect)"))),
        };
        let mut regions = Vec::new();
        for (i, part) in parts.enumerate() {
            if i >= MAX_REGIONS {
                return Err(bad(format!("more than {MAX_REGIONS} regions")));
            }
            let v: Vec<f32> = part
                .split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad(format!("region {i} '{part}' is not four numbers cx,cy,side,angle")))?;
            let [cx, cy, side, angle] = v[..] else {
                return Err(bad(format!("region {i} '{part}' is not four numbers cx,cy,side,angle")));
            };
            let r = HandRegion {
                center: [cx, cy],
                side,
                angle,
            };
            if !r.is_valid() {
                return Err(bad(format!(
                    "region {i} '{part}' needs finite values and a positive side"
                )));
            }
            regions.push(r);
        }
        Ok(HandRegions::new(&regions, detect))
    }

    /// Stable bytes for cache keys.
    pub fn key_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.detect as u8, self.len];
        for r in self.as_slice() {
            for v in [r.center[0], r.center[1], r.side, r.angle] {
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        out
    }
}

/// `a` wrapped to [-π, π).
fn normalize_radians(a: f64) -> f64 {
    use std::f64::consts::PI;
    a - 2.0 * PI * ((a + PI) / (2.0 * PI)).floor()
}

/// The region the next frame crops for a hand whose 21 landmarks (`[x, y, _]`,
/// image pixels) are `landmarks`; `None` for fewer than 21 points or
/// non-finite ones.
pub fn roi_from_landmarks(landmarks: &[[f32; 3]]) -> Option<HandRegion> {
    if landmarks.len() < 21 || landmarks.iter().any(|p| !p[0].is_finite() || !p[1].is_finite()) {
        return None;
    }
    let p = |i: usize| [landmarks[i][0] as f64, landmarks[i][1] as f64];
    let (w, i, m, r) = (p(WRIST), p(INDEX_BASE), p(MIDDLE_BASE), p(RING_BASE));
    let x1 = ((i[0] + r[0]) / 2.0 + m[0]) / 2.0;
    let y1 = ((i[1] + r[1]) / 2.0 + m[1]) / 2.0;
    let rotation = normalize_radians(std::f64::consts::FRAC_PI_2 - (-(y1 - w[1])).atan2(x1 - w[0]));
    let pts: Vec<[f64; 2]> = ROI_LANDMARKS.iter().map(|&k| p(k)).collect();
    let (lo, hi) = extent(pts.iter().copied());
    let aa = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    // The extent in the frame rotated by -rotation about the axis-aligned centre.
    let (s, c) = (-rotation).sin_cos();
    let (plo, phi) = extent(pts.iter().map(|q| {
        let (dx, dy) = (q[0] - aa[0], q[1] - aa[1]);
        [dx * c - dy * s, dx * s + dy * c]
    }));
    let pc = [(plo[0] + phi[0]) / 2.0, (plo[1] + phi[1]) / 2.0];
    let (s, c) = rotation.sin_cos();
    let mut center = [pc[0] * c - pc[1] * s + aa[0], pc[0] * s + pc[1] * c + aa[1]];
    let (width, height) = (phi[0] - plo[0], phi[1] - plo[1]);
    // Shift along the rectangle's own y axis (-sin, cos), in its height.
    center[0] += -height * ROI_SHIFT_Y * s;
    center[1] += height * ROI_SHIFT_Y * c;
    let side = width.max(height) * ROI_SCALE;
    let region = HandRegion {
        center: [center[0] as f32, center[1] as f32],
        side: side as f32,
        angle: rotation as f32,
    };
    region.is_valid().then_some(region)
}

fn extent(pts: impl Iterator<Item = [f64; 2]>) -> ([f64; 2], [f64; 2]) {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in pts {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    (lo, hi)
}

/// IoU of two `[x0, y0, x1, y1]` boxes (0 when either is empty).
pub fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upright hand: wrist at the bottom, finger bases in a row above it.
    fn upright(at: [f32; 2], scale: f32) -> Vec<[f32; 3]> {
        let mut kp = vec![[0.0f32; 3]; 21];
        kp[0] = [0.0, 0.0, 0.0];
        for (f, x) in [(1usize, -3.0f32), (5, -1.5), (9, 0.0), (13, 1.5), (17, 3.0)] {
            for j in 0..4 {
                kp[f + j] = [x, -4.0 - 2.0 * j as f32, 0.0];
            }
        }
        kp[1] = [-2.0, -1.0, 0.0];
        kp.iter()
            .map(|p| [at[0] + p[0] * scale, at[1] + p[1] * scale, 0.0])
            .collect()
    }

    #[test]
    fn an_upright_hand_gets_an_unrotated_doubled_square_shifted_up() {
        let kp = upright([100.0, 200.0], 10.0);
        let r = roi_from_landmarks(&kp).unwrap();
        assert!(r.angle.abs() < 1e-6, "{r:?}");
        // Extent of the ROI landmarks: x -30..30, y -80..0 (the thumb's joint 3
        // is the highest): a 60×80 box, squared on 80 and doubled.
        assert!((r.side - 160.0).abs() < 1e-3, "{r:?}");
        // Centre y: -40 (box) - 8 (a tenth of the height towards the fingers).
        assert!(
            (r.center[0] - 100.0).abs() < 1e-3 && (r.center[1] - 152.0).abs() < 1e-3,
            "{r:?}"
        );
    }

    #[test]
    fn a_quarter_turned_hand_turns_its_region() {
        // Rotate the upright hand by +90° (fingers pointing right).
        let kp: Vec<[f32; 3]> = upright([0.0, 0.0], 10.0).iter().map(|p| [-p[1], p[0], 0.0]).collect();
        let r = roi_from_landmarks(&kp).unwrap();
        assert!((r.angle as f64 - std::f64::consts::FRAC_PI_2).abs() < 1e-5, "{r:?}");
        assert!((r.side - 160.0).abs() < 1e-3, "{r:?}");
        // The shift points along the fingers: to the right.
        assert!((r.center[0] - 48.0).abs() < 1e-3 && r.center[1].abs() < 1e-3, "{r:?}");
    }

    #[test]
    fn too_few_or_broken_landmarks_give_no_region() {
        assert!(roi_from_landmarks(&[[0.0; 3]; 5]).is_none());
        let mut kp = upright([0.0, 0.0], 10.0);
        kp[3][0] = f32::NAN;
        assert!(roi_from_landmarks(&kp).is_none());
        // All points in one place: no size.
        assert!(roi_from_landmarks(&[[1.0; 3]; 21]).is_none());
    }

    #[test]
    fn regions_keep_at_most_the_cap_and_key_on_their_values() {
        let r = HandRegion {
            center: [1.0, 2.0],
            side: 3.0,
            angle: 0.5,
        };
        let many = HandRegions::new(&[r; 12], false);
        assert_eq!(many.as_slice().len(), MAX_REGIONS);
        let one = HandRegions::new(&[r], false);
        assert_ne!(one.key_bytes(), HandRegions::new(&[r], true).key_bytes());
        let moved = HandRegion { side: 4.0, ..r };
        assert_ne!(one.key_bytes(), HandRegions::new(&[moved], false).key_bytes());
    }

    #[test]
    fn regions_travel_as_text_and_bad_text_is_refused() {
        let r = HandRegion {
            center: [320.5, 240.25],
            side: 181.0,
            angle: -0.3,
        };
        let rs = HandRegions::new(&[r, HandRegion { side: 90.0, ..r }], true);
        assert_eq!(HandRegions::parse_param(&rs.to_param()), Ok(rs));
        let none = HandRegions::new(&[], false);
        assert_eq!(none.to_param(), "0");
        assert_eq!(HandRegions::parse_param("0"), Ok(none));
        for bad in ["", "2", "1;1,2,3", "1;1,2,3,x", "1;1,2,-3,0", "1;1,2,inf,0"] {
            let e = HandRegions::parse_param(bad).unwrap_err();
            assert!(e.starts_with("parameter 'hand_regions': "), "{bad}: {e}");
        }
        let many = format!("1{}", ";1,2,3,0".repeat(MAX_REGIONS + 1));
        assert!(HandRegions::parse_param(&many).is_err());
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(box_iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert!((box_iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 5.0, 10.0, 15.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(box_iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(box_iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }
}
