//! Nail AR geometry: where a polish overlay goes on each fingertip of a hand
//! given as 21 MediaPipe landmarks (0 wrist, 1-4 thumb, 5-8 index, 9-12
//! middle, 13-16 ring, 17-20 pinky), in image pixels. Pure functions; the UI
//! maps the outlines to the screen and fills them.
//!
//! Choices (the unit tests hold them):
//! - **Placement.** One nail per finger on the distal phalanx, the segment
//!   from the last joint to the fingertip landmark (3→4, 7→8, 11→12, 15→16,
//!   19→20). The fingertip landmark is the end of the finger, and a nail
//!   covers the outer two thirds of the phalanx, so the nail's centre sits
//!   [`CENTRE_ALONG`] = 0.68 of the way from the joint to the tip: on the
//!   segment, toward the tip. It points along the segment, joint to tip.
//! - **Width.** Fingers side by side at the knuckles are about as wide as the
//!   spacing of neighbouring knuckles (5-9, 9-13, 13-17), which foreshortens
//!   with the hand the way the fingers do. A nail plate is about half to
//!   two thirds of that: [`WIDTH_OF_SPACING`] per finger (thumb widest, pinky
//!   narrowest), applied to the mean of the three spacings.
//! - **Length.** [`LENGTH_OF_SEGMENT`] of the distal segment (it shortens when
//!   the finger points at the camera, as a real nail does), kept between
//!   [`MIN_LENGTH_OF_WIDTH`] and [`MAX_LENGTH_OF_WIDTH`] times the nail's width
//!   so a foreshortened or a stretched finger still gets a nail-like shape.
//!   With the defaults a nail spans about 0.35 to 1.0 of the segment.
//! - **Occlusion.** A nail is marked `occluded` when another finger's bone
//!   passes over it (within [`OCCLUDE_RADIUS`] knuckle spacings of its
//!   centre) and is nearer the camera there by more than [`OCCLUDE_DEPTH`]
//!   spacings (landmark z, smaller is nearer). A thumb tucked under the
//!   fingers gets no nail painted on top of the index finger.
//!   Not handled: a palm turned to the camera (nails are then on the far
//!   side); that needs the palm's orientation and reliable handedness.

/// The distal segments (joint, fingertip), thumb to pinky.
pub const FINGERTIP_SEGMENTS: [(usize, usize); 5] = [(3, 4), (7, 8), (11, 12), (15, 16), (19, 20)];

/// The finger knuckles (MCP joints) of index, middle, ring and pinky.
pub const KNUCKLES: [usize; 4] = [5, 9, 13, 17];

/// Where the nail's centre sits along its distal segment: 0 the joint, 1 the fingertip.
pub const CENTRE_ALONG: f32 = 0.68;

/// Nail length as a fraction of the distal segment.
pub const LENGTH_OF_SEGMENT: f32 = 0.66;

/// Nail length bounds as multiples of the nail's width.
pub const MIN_LENGTH_OF_WIDTH: f32 = 0.8;
pub const MAX_LENGTH_OF_WIDTH: f32 = 1.8;

/// Nail width per finger (thumb … pinky) as a fraction of the mean knuckle spacing.
pub const WIDTH_OF_SPACING: [f32; 5] = [0.6, 0.48, 0.5, 0.46, 0.38];

/// How near (in knuckle spacings) another finger's bone must pass to hide a nail.
pub const OCCLUDE_RADIUS: f32 = 0.4;

/// How much nearer (in knuckle spacings of z) that bone must be.
pub const OCCLUDE_DEPTH: f32 = 0.25;

/// Each finger's bones, thumb to pinky, as landmark pairs.
pub const FINGER_BONES: [[(usize, usize); 3]; 5] = [
    [(1, 2), (2, 3), (3, 4)],
    [(5, 6), (6, 7), (7, 8)],
    [(9, 10), (10, 11), (11, 12)],
    [(13, 14), (14, 15), (15, 16)],
    [(17, 18), (18, 19), (19, 20)],
];

/// One nail in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nail {
    /// 0 thumb, 1 index, 2 middle, 3 ring, 4 pinky.
    pub finger: usize,
    pub centre: [f32; 2],
    /// Direction from the joint toward the fingertip, radians, `atan2(dy, dx)`
    /// in image coordinates (y down).
    pub angle: f32,
    /// Along the finger.
    pub length: f32,
    /// Across the finger.
    pub width: f32,
    /// Landmark z at the centre (smaller is nearer the camera).
    pub depth: f32,
    /// Another finger covers it: not to be painted.
    pub occluded: bool,
}

impl Nail {
    /// The image point at `u` along the nail (toward the tip) and `v` across
    /// it, both in pixels from its centre.
    pub fn at(&self, u: f32, v: f32) -> [f32; 2] {
        let (c, s) = (self.angle.cos(), self.angle.sin());
        [self.centre[0] + c * u - s * v, self.centre[1] + s * u + c * v]
    }
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt()
}

/// The mean spacing of neighbouring knuckles (5-9, 9-13, 13-17), in pixels:
/// about a finger's width at the knuckles. `None` unless 21 landmarks.
pub fn knuckle_spacing(landmarks: &[[f32; 3]]) -> Option<f32> {
    if landmarks.len() != 21 {
        return None;
    }
    let s = KNUCKLES
        .windows(2)
        .map(|w| dist(landmarks[w[0]], landmarks[w[1]]))
        .sum::<f32>()
        / (KNUCKLES.len() - 1) as f32;
    (s.is_finite() && s > 0.0).then_some(s)
}

/// One nail per finger whose distal segment is not degenerate (shorter than
/// half a pixel); none unless there are 21 landmarks.
pub fn nails(landmarks: &[[f32; 3]]) -> Vec<Nail> {
    let Some(spacing) = knuckle_spacing(landmarks) else {
        return Vec::new();
    };
    FINGERTIP_SEGMENTS
        .iter()
        .enumerate()
        .filter_map(|(finger, &(j, t))| {
            let (a, b) = (landmarks[j], landmarks[t]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let seg = (dx * dx + dy * dy).sqrt();
            if seg.is_nan() || seg < 0.5 {
                return None;
            }
            let width = WIDTH_OF_SPACING[finger] * spacing;
            let length = (LENGTH_OF_SEGMENT * seg).clamp(MIN_LENGTH_OF_WIDTH * width, MAX_LENGTH_OF_WIDTH * width);
            let centre = [a[0] + CENTRE_ALONG * dx, a[1] + CENTRE_ALONG * dy];
            let depth = a[2] + CENTRE_ALONG * (b[2] - a[2]);
            Some(Nail {
                finger,
                centre,
                angle: dy.atan2(dx),
                length,
                width,
                depth,
                occluded: covered(landmarks, finger, centre, depth, spacing),
            })
        })
        .collect()
}

/// Whether a bone of a finger other than `finger` passes over the point
/// `at` (depth `z`) nearer the camera; see the module notes.
fn covered(landmarks: &[[f32; 3]], finger: usize, at: [f32; 2], z: f32, spacing: f32) -> bool {
    FINGER_BONES
        .iter()
        .enumerate()
        .filter(|&(f, _)| f != finger)
        .flat_map(|(_, bones)| bones.iter())
        .any(|&(i, j)| {
            let (p, q) = (landmarks[i], landmarks[j]);
            let (dx, dy) = (q[0] - p[0], q[1] - p[1]);
            let len2 = dx * dx + dy * dy;
            let u = if len2 > 0.0 {
                (((at[0] - p[0]) * dx + (at[1] - p[1]) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (cx, cy) = (p[0] + u * dx, p[1] + u * dy);
            let d = ((at[0] - cx).powi(2) + (at[1] - cy).powi(2)).sqrt();
            let bone_z = p[2] + u * (q[2] - p[2]);
            d < OCCLUDE_RADIUS * spacing && bone_z < z - OCCLUDE_DEPTH * spacing
        })
}

/// The nail's outline, `points` image points going round it: an ellipse's
/// half at the free edge (toward the tip) and a squarer half at the cuticle
/// (a superellipse of exponent 3). It spans `length` along the nail and
/// `width` across, and is convex.
pub fn nail_outline(n: &Nail, points: usize) -> Vec<[f32; 2]> {
    let (hl, hw) = (n.length / 2.0, n.width / 2.0);
    (0..points.max(8))
        .map(|k| {
            let t = k as f32 / points.max(8) as f32 * std::f32::consts::TAU;
            let (c, s) = (t.cos(), t.sin());
            if c >= 0.0 {
                n.at(hl * c, hw * s)
            } else {
                let e = 2.0 / 3.0;
                n.at(-hl * c.abs().powf(e), hw * s.signum() * s.abs().powf(e))
            }
        })
        .collect()
}

/// The gloss highlight: a thin ellipse along the nail, toward the tip and to
/// one side, inside the outline.
pub fn gloss_outline(n: &Nail, points: usize) -> Vec<[f32; 2]> {
    let (cu, cv) = (0.12 * n.length, -0.2 * n.width);
    let (au, av) = (0.25 * n.length, 0.1 * n.width);
    (0..points.max(8))
        .map(|k| {
            let t = k as f32 / points.max(8) as f32 * std::f32::consts::TAU;
            n.at(cu + au * t.cos(), cv + av * t.sin())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A right hand, fingers up (−y), wrist at the origin, with the distal
    /// segments bent away from the rest of each finger, so a nail following
    /// the whole finger instead of its last segment would be caught.
    fn canonical_hand() -> Vec<[f32; 3]> {
        let mut p = vec![[0.0f32, 0.0, 0.0]; 21];
        // (knuckle, direction of the first two segments, direction of the last, lengths)
        let fingers: [([f32; 2], f32, f32, [f32; 3]); 5] = [
            ([-30.0, -25.0], -2.2, -1.9, [22.0, 18.0, 16.0]), // thumb from its CMC
            ([-24.0, -80.0], -1.72, -1.45, [36.0, 24.0, 20.0]),
            ([-4.0, -84.0], -1.6, -1.75, [40.0, 26.0, 21.0]),
            ([15.0, -80.0], -1.5, -1.3, [37.0, 24.0, 20.0]),
            ([32.0, -72.0], -1.35, -1.6, [30.0, 19.0, 17.0]),
        ];
        for (f, (k, a0, a1, len)) in fingers.iter().enumerate() {
            let base = 1 + 4 * f;
            p[base] = [k[0], k[1], -5.0];
            let mut at = *k;
            for (j, l) in len.iter().enumerate() {
                let a = if j == 2 { *a1 } else { *a0 };
                at = [at[0] + l * a.cos(), at[1] + l * a.sin()];
                p[base + 1 + j] = [at[0], at[1], -10.0 - j as f32];
            }
        }
        p
    }

    fn transform(p: &[[f32; 3]], angle: f32, scale: f32, shift: [f32; 2]) -> Vec<[f32; 3]> {
        let (c, s) = (angle.cos(), angle.sin());
        p.iter()
            .map(|q| {
                [
                    shift[0] + scale * (c * q[0] - s * q[1]),
                    shift[1] + scale * (s * q[0] + c * q[1]),
                    q[2] * scale,
                ]
            })
            .collect()
    }

    fn angle_diff(a: f32, b: f32) -> f32 {
        let d = (a - b).rem_euclid(std::f32::consts::TAU);
        d.min(std::f32::consts::TAU - d)
    }

    #[test]
    fn each_nail_sits_on_its_fingertip_segment_and_follows_it_at_any_rotation() {
        let hand = canonical_hand();
        for deg in [0.0f32, 17.0, 90.0, 135.0, 180.0, 233.0, -75.0] {
            for scale in [0.6f32, 2.5] {
                let lm = transform(&hand, deg.to_radians(), scale, [320.0, 240.0]);
                let ns = nails(&lm);
                assert_eq!(ns.len(), 5, "{deg}°");
                let spacing = knuckle_spacing(&lm).unwrap_or(0.0);
                for (n, &(j, t)) in ns.iter().zip(&FINGERTIP_SEGMENTS) {
                    let (a, b) = (lm[j], lm[t]);
                    let seg = [b[0] - a[0], b[1] - a[1]];
                    let len = (seg[0] * seg[0] + seg[1] * seg[1]).sqrt();
                    // Centred on the segment, 0.68 of the way to the tip.
                    assert_eq!(CENTRE_ALONG, 0.68);
                    let want = [a[0] + 0.68 * seg[0], a[1] + 0.68 * seg[1]];
                    let err = ((n.centre[0] - want[0]).powi(2) + (n.centre[1] - want[1]).powi(2)).sqrt();
                    assert!(err < 1e-3 * scale.max(1.0), "{deg}° finger {}: {err}", n.finger);
                    // On the segment: no distance across it.
                    let off = ((n.centre[0] - a[0]) * seg[1] - (n.centre[1] - a[1]) * seg[0]) / len;
                    assert!(off.abs() < 1e-3 * scale.max(1.0), "{deg}°: {off} px off the segment");
                    // Oriented along it, joint to tip, within 2°.
                    let d = angle_diff(n.angle, seg[1].atan2(seg[0])).to_degrees();
                    assert!(d < 2.0, "{deg}° finger {}: {d:.3}° off", n.finger);
                    // Scaled by the knuckle spacing, which scales with the hand.
                    assert!((n.width - WIDTH_OF_SPACING[n.finger] * spacing).abs() < 1e-3 * scale);
                    assert!(n.length >= MIN_LENGTH_OF_WIDTH * n.width - 1e-4);
                    assert!(n.length <= MAX_LENGTH_OF_WIDTH * n.width + 1e-4);
                    assert!(!n.occluded, "{deg}° finger {}: the fingers are spread", n.finger);
                }
            }
        }
    }

    #[test]
    fn the_nail_width_follows_the_knuckle_spacing_and_the_thumb_is_widest() {
        let lm = canonical_hand();
        let s = knuckle_spacing(&lm).unwrap_or(0.0);
        // |5-9|, |9-13|, |13-17| of the canonical hand.
        let want = ((20.0f32.powi(2) + 4.0f32.powi(2)).sqrt()
            + (19.0f32.powi(2) + 4.0f32.powi(2)).sqrt()
            + (17.0f32.powi(2) + 8.0f32.powi(2)).sqrt())
            / 3.0;
        assert!((s - want).abs() < 1e-4, "{s} vs {want}");
        let ns = nails(&lm);
        let w: Vec<f32> = ns.iter().map(|n| n.width).collect();
        assert!(w[0] > w[1] && w[1] > w[4] && w[2] > w[4], "{w:?}");
        let big = nails(&transform(&lm, 0.0, 2.0, [0.0, 0.0]));
        assert!((big[1].width - 2.0 * ns[1].width).abs() < 1e-3);
    }

    #[test]
    fn no_nails_without_a_hand_and_none_on_a_degenerate_finger() {
        assert!(nails(&[[0.0, 0.0, 0.0]; 17]).is_empty());
        assert!(nails(&[]).is_empty());
        let mut lm = canonical_hand();
        lm[8] = lm[7];
        let ns = nails(&lm);
        assert_eq!(ns.len(), 4);
        assert!(ns.iter().all(|n| n.finger != 1));
        // All knuckles in one place: no width, no nails.
        let mut lm = canonical_hand();
        for k in KNUCKLES {
            lm[k] = [5.0, 5.0, 0.0];
        }
        assert!(nails(&lm).is_empty());
    }

    #[test]
    fn a_thumb_tucked_under_the_fingers_has_its_nail_hidden() {
        let mut lm = canonical_hand();
        // The thumb's last two joints under the index finger's middle
        // phalanx, further from the camera than it.
        let (p, q) = (lm[6], lm[7]);
        lm[3] = [p[0] + 2.0, p[1] + 4.0, -2.0];
        lm[4] = [q[0] - 2.0, q[1] + 3.0, -4.0];
        let ns = nails(&lm);
        assert_eq!(ns.len(), 5);
        assert!(ns[0].occluded, "{:?}", ns[0]);
        assert!(ns[1..].iter().all(|n| !n.occluded), "{ns:?}");
        // The same thumb in front of the finger shows.
        lm[3][2] = -30.0;
        lm[4][2] = -32.0;
        let ns = nails(&lm);
        assert!(ns.iter().all(|n| !n.occluded), "{ns:?}");
    }

    /// Whether `p` is inside the convex polygon `poly` (either winding).
    fn inside(poly: &[[f32; 2]], p: [f32; 2]) -> bool {
        let mut sign = 0.0f32;
        for i in 0..poly.len() {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            let c = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
            if c.abs() < 1e-6 {
                continue;
            }
            if sign == 0.0 {
                sign = c.signum();
            } else if c.signum() != sign {
                return false;
            }
        }
        true
    }

    #[test]
    fn the_outline_is_a_convex_nail_and_the_gloss_sits_inside_toward_the_tip() {
        let n = Nail {
            finger: 1,
            centre: [100.0, 50.0],
            angle: 0.7,
            length: 30.0,
            width: 18.0,
            depth: 0.0,
            occluded: false,
        };
        let o = nail_outline(&n, 40);
        assert_eq!(o.len(), 40);
        // Convex: every turn the same way.
        let turns: Vec<f32> = (0..o.len())
            .map(|i| {
                let (a, b, c) = (o[i], o[(i + 1) % o.len()], o[(i + 2) % o.len()]);
                (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
            })
            .collect();
        assert!(turns.iter().all(|&t| t >= -1e-3) || turns.iter().all(|&t| t <= 1e-3));
        // Its extent in the nail's frame is length × width, centred.
        let (c, s) = (n.angle.cos(), n.angle.sin());
        let local: Vec<[f32; 2]> = o
            .iter()
            .map(|p| {
                let (dx, dy) = (p[0] - n.centre[0], p[1] - n.centre[1]);
                [c * dx + s * dy, -s * dx + c * dy]
            })
            .collect();
        let max_u = local.iter().map(|p| p[0]).fold(f32::MIN, f32::max);
        let min_u = local.iter().map(|p| p[0]).fold(f32::MAX, f32::min);
        let max_v = local.iter().map(|p| p[1].abs()).fold(0.0, f32::max);
        assert!(
            (max_u - 15.0).abs() < 1e-3 && (min_u + 15.0).abs() < 1e-3,
            "{min_u} {max_u}"
        );
        assert!((max_v - 9.0).abs() < 0.05, "{max_v}");
        let g = gloss_outline(&n, 24);
        assert!(g.iter().all(|&p| inside(&o, p)), "gloss inside the nail");
        let gc = g
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0] / 24.0, a[1] + p[1] / 24.0]);
        let along = c * (gc[0] - n.centre[0]) + s * (gc[1] - n.centre[1]);
        assert!(along > 0.0, "the highlight is toward the tip");
    }
}
