//! Overlay geometry as plain functions: which keypoints join, which are
//! shown, each class's colour, where an image point lands on screen, and AR
//! anchors computed from landmarks.

/// Polylines of the iBUG 68-point layout: (first, last, closed).
pub const LANDMARK_68_PATHS: &[(usize, usize, bool)] = &[
    (0, 16, false),  // jaw
    (17, 21, false), // right brow
    (22, 26, false), // left brow
    (27, 30, false), // nose bridge
    (31, 35, false), // nostrils
    (36, 41, true),  // right eye
    (42, 47, true),  // left eye
    (48, 59, true),  // outer lip
    (60, 67, true),  // inner lip
];

/// COCO 17-keypoint body skeleton (MoveNet and YOLOv8-pose order: nose,
/// eyes, ears, shoulders, elbows, wrists, hips, knees, ankles; left before right).
pub const COCO_SKELETON: [(usize, usize); 19] = [
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
];

/// MediaPipe's 21 hand connections: 0 wrist, 1-4 thumb, 5-8 index, 9-12
/// middle, 13-16 ring, 17-20 pinky; the palm joins the wrist and the knuckles.
pub const HAND_CONNECTIONS: [(usize, usize); 21] = [
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (0, 5),
    (5, 6),
    (6, 7),
    (7, 8),
    (5, 9),
    (9, 10),
    (10, 11),
    (11, 12),
    (9, 13),
    (13, 14),
    (14, 15),
    (15, 16),
    (13, 17),
    (0, 17),
    (17, 18),
    (18, 19),
    (19, 20),
];

/// Keypoints of a body pose below this score are not drawn, nor their bones.
pub const KEYPOINT_MIN_SCORE: f32 = 0.3;

/// Which finger (0 thumb … 4 pinky) a hand connection belongs to; `None` for the palm.
pub fn hand_finger(connection: (usize, usize)) -> Option<usize> {
    let (a, b) = connection;
    if (a == 0 && b != 1) || (a % 4 == 1 && b % 4 == 1) {
        return None; // wrist to a knuckle, or knuckle to knuckle
    }
    Some((b - 1) / 4)
}

/// Whether keypoint `k` of a detection with `n` keypoints is shown. Hands
/// (21) carry `[x, y, z]`: every point is shown. Otherwise the third value is
/// a score: 17-keypoint bodies need [`KEYPOINT_MIN_SCORE`], the rest (face
/// landmarks, score 1) more than 0.25.
pub fn keypoint_visible(n: usize, k: &[f32; 3]) -> bool {
    match n {
        21 => k[0].is_finite() && k[1].is_finite(),
        17 => k[2] >= KEYPOINT_MIN_SCORE,
        _ => k[2] > 0.25,
    }
}

/// Segments (index pairs) that draw a skeleton for `n` keypoints.
pub fn skeleton(n: usize) -> Vec<(usize, usize)> {
    match n {
        68 => LANDMARK_68_PATHS
            .iter()
            .flat_map(|&(a, b, closed)| {
                let mut v: Vec<(usize, usize)> = (a..b).map(|i| (i, i + 1)).collect();
                if closed {
                    v.push((b, a));
                }
                v
            })
            .collect(),
        17 => COCO_SKELETON.to_vec(),
        21 => HAND_CONNECTIONS.to_vec(),
        _ => Vec::new(),
    }
}

/// The overlay colour of a class (sRGB). A `class_id` is spread round the
/// hue circle by the golden ratio, so neighbouring ids (often related
/// classes) differ by at least 0.38 of a turn, and every third id is a little
/// darker; without one, the label is hashed (FNV-1a, mixed: the same colour on every
/// run and platform). Either way a class keeps its colour from frame to frame.
pub fn class_colour(class_id: Option<u32>, label: &str) -> [u8; 3] {
    let (hue, value) = match class_id {
        Some(id) => (
            (0.12 + id as f32 * 0.618_034).fract(),
            [0.95, 0.8, 0.68][id as usize % 3],
        ),
        None => {
            let mut x: u32 = 0x811c_9dc5;
            for b in label.bytes() {
                x ^= b as u32;
                x = x.wrapping_mul(0x0100_0193);
            }
            // Murmur3's finaliser: FNV alone leaves short labels' hues close.
            x ^= x >> 16;
            x = x.wrapping_mul(0x85eb_ca6b);
            x ^= x >> 13;
            x = x.wrapping_mul(0xc2b2_ae35);
            x ^= x >> 16;
            ((x % 3600) as f32 / 3600.0, 0.92)
        }
    };
    hsv_to_rgb(hue, 0.72, value)
}

/// Black or white, whichever reads better on `bg` (sRGB).
pub fn text_colour_on(bg: [u8; 3]) -> [u8; 3] {
    let l = 0.299 * bg[0] as f32 + 0.587 * bg[1] as f32 + 0.114 * bg[2] as f32;
    if l > 150.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

/// HSV (each 0..=1, hue in turns) to 8-bit RGB.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [u8; 3] {
    let h = h.rem_euclid(1.0) * 6.0;
    let i = h.floor();
    let f = h - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match i as u32 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    let c = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(r), c(g), c(b)]
}

/// Maps image pixels into a screen rectangle showing the whole image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageToScreen {
    pub origin: [f32; 2],
    pub scale: f32,
}

impl ImageToScreen {
    /// Fit an image of `img` size into `area` (`[x, y, w, h]`), centred, aspect kept.
    pub fn fit(img: [f32; 2], area: [f32; 4]) -> Self {
        let scale = (area[2] / img[0]).min(area[3] / img[1]).max(0.0);
        let (w, h) = (img[0] * scale, img[1] * scale);
        ImageToScreen {
            origin: [area[0] + (area[2] - w) / 2.0, area[1] + (area[3] - h) / 2.0],
            scale,
        }
    }

    pub fn point(&self, p: [f32; 2]) -> [f32; 2] {
        [self.origin[0] + p[0] * self.scale, self.origin[1] + p[1] * self.scale]
    }
}

/// Where AR glasses go: centre, width and rotation (radians) from the outer eye corners.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlassesPose {
    pub centre: [f32; 2],
    /// Distance between the outer eye corners.
    pub eye_distance: f32,
    /// Angle of the eye line, radians, positive clockwise in image coordinates.
    pub angle: f32,
}

/// Glasses anchored on 68-point landmarks: outer eye corners 36 and 45.
pub fn glasses_pose(points: &[[f32; 3]]) -> Option<GlassesPose> {
    if points.len() != 68 {
        return None;
    }
    let (a, b) = (points[36], points[45]);
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let d = (dx * dx + dy * dy).sqrt();
    if d < 1e-3 {
        return None;
    }
    Some(GlassesPose {
        centre: [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0],
        eye_distance: d,
        angle: dy.atan2(dx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_centres_and_keeps_aspect() {
        let m = ImageToScreen::fit([200.0, 100.0], [10.0, 20.0, 400.0, 400.0]);
        assert_eq!(m.scale, 2.0);
        assert_eq!(m.origin, [10.0, 120.0]);
        assert_eq!(m.point([100.0, 50.0]), [210.0, 220.0]);
    }

    #[test]
    fn skeleton_of_68_points_covers_every_point() {
        let s = skeleton(68);
        let mut seen = [false; 68];
        for (a, b) in &s {
            seen[*a] = true;
            seen[*b] = true;
        }
        assert!(seen.iter().all(|&x| x));
        assert!(s.contains(&(41, 36)), "eyes are closed loops");
        assert!(skeleton(5).is_empty());
    }

    #[test]
    fn the_hand_skeleton_is_mediapipes() {
        let s = skeleton(21);
        assert_eq!(s.len(), 21);
        let mut degree = [0usize; 21];
        for &(a, b) in &s {
            degree[a] += 1;
            degree[b] += 1;
        }
        // Every point joined; the fingertips end a chain; the wrist joins
        // the thumb, the index and the pinky knuckles.
        assert!(degree.iter().all(|&d| d >= 1));
        for tip in [4, 8, 12, 16, 20] {
            assert_eq!(degree[tip], 1, "tip {tip}");
        }
        for (a, b) in [(0, 1), (0, 5), (0, 17), (5, 9), (9, 13), (13, 17), (3, 4), (19, 20)] {
            assert!(s.contains(&(a, b)), "({a}, {b})");
        }
        // Fingers are chains k, k+1, k+2, k+3 from each knuckle.
        for f in 0..5 {
            let base = 1 + 4 * f;
            for j in base..base + 3 {
                assert!(s.contains(&(j, j + 1)));
                assert_eq!(hand_finger((j, j + 1)), Some(f));
            }
        }
        assert_eq!(hand_finger((0, 1)), Some(0));
        for palm in [(0, 5), (0, 17), (5, 9), (9, 13), (13, 17)] {
            assert_eq!(hand_finger(palm), None, "{palm:?}");
        }
    }

    #[test]
    fn the_body_skeleton_is_cocos_and_low_scores_are_hidden() {
        let s = skeleton(17);
        assert_eq!(s.len(), 19);
        for (a, b) in [
            (5, 6),
            (11, 12),
            (5, 7),
            (7, 9),
            (6, 8),
            (8, 10),
            (11, 13),
            (13, 15),
            (12, 14),
            (14, 16),
        ] {
            assert!(s.contains(&(a, b)) || s.contains(&(b, a)), "({a}, {b})");
        }
        assert!(keypoint_visible(17, &[1.0, 1.0, 0.3]));
        assert!(!keypoint_visible(17, &[1.0, 1.0, 0.29]));
        // Hands carry z, not a score: negative z is still a point.
        assert!(keypoint_visible(21, &[1.0, 1.0, -25.0]));
        assert!(keypoint_visible(68, &[1.0, 1.0, 1.0]));
    }

    #[test]
    fn class_colours_are_stable_and_neighbours_differ() {
        let dist = |a: [u8; 3], b: [u8; 3]| {
            a.iter()
                .zip(&b)
                .map(|(&x, &y)| (x as f32 - y as f32).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        for id in 0..80u32 {
            let c = class_colour(Some(id), "whatever");
            assert_eq!(c, class_colour(Some(id), "other label"), "the id decides");
            let next = class_colour(Some(id + 1), "");
            assert!(dist(c, next) > 80.0, "{id}: {c:?} vs {next:?}");
        }
        assert_eq!(class_colour(None, "face"), class_colour(None, "face"));
        // Labels without ids that appear together get different colours.
        for (a, b) in [("left", "right"), ("face", "person"), ("person", "left")] {
            let (ca, cb) = (class_colour(None, a), class_colour(None, b));
            assert!(dist(ca, cb) > 60.0, "{a} {ca:?} vs {b} {cb:?}");
        }
        assert_eq!(hsv_to_rgb(0.0, 1.0, 1.0), [255, 0, 0]);
        assert_eq!(hsv_to_rgb(1.0 / 3.0, 1.0, 1.0), [0, 255, 0]);
        assert_eq!(text_colour_on([250, 250, 120]), [0, 0, 0]);
        assert_eq!(text_colour_on([20, 40, 160]), [255, 255, 255]);
    }

    #[test]
    fn glasses_follow_the_eye_line() {
        let mut pts = vec![[0.0f32, 0.0, 1.0]; 68];
        pts[36] = [100.0, 100.0, 1.0];
        pts[45] = [160.0, 160.0, 1.0];
        let g = glasses_pose(&pts).unwrap_or_else(|| panic!("pose"));
        assert_eq!(g.centre, [130.0, 130.0]);
        assert!((g.eye_distance - 84.85281).abs() < 1e-3);
        assert!((g.angle - std::f32::consts::FRAC_PI_4).abs() < 1e-6);
        assert!(glasses_pose(&pts[..5]).is_none());
    }
}
