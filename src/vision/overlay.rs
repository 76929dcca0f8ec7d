//! Overlay geometry as plain functions: which keypoints join, where an image
//! point lands on screen, and AR anchors computed from landmarks.

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
        // COCO 17-keypoint body skeleton (YOLOv8-pose order).
        17 => vec![
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
        ],
        _ => Vec::new(),
    }
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
