//! A synthetic camera: a real photo moved, scaled and rotated along a known
//! path, so tests can check that detections follow it, and a real hand (a
//! crop with its 21 reference landmarks) moving along a path of its own, so
//! hand tracking and the nail overlay work without a camera.

use image::{Rgb, RgbImage};

use super::source::{Pacer, Source};

static PHOTO: &[u8] = include_bytes!("../../assets/astronaut.png");

/// A hand cropped from face-api's demo image `sample2.png` (see `assets/README.md`).
static HAND: &[u8] = include_bytes!("../../assets/hand_sample2.png");

/// The 21 MediaPipe landmarks `[x, y, z]` of the hand in `assets/hand_sample2.png`,
/// in pixels of that crop (z: depth in the same pixel scale, as the hand
/// model gives it). From the reference hand-landmark output for `sample2.png`
/// (`hands[1].landmarks`), minus the crop's corner (755, 975).
pub const HAND_LANDMARKS: [[f32; 3]; 21] = [
    [156.786, 53.541, 0.000],    // 0 wrist
    [110.616, 82.900, 0.033],    // 1 thumb CMC
    [85.525, 118.604, -3.114],   // 2 thumb MCP
    [73.830, 154.049, -6.038],   // 3 thumb IP
    [69.636, 181.771, -9.662],   // 4 thumb tip
    [88.843, 117.863, -14.705],  // 5 index MCP
    [72.668, 176.796, -20.985],  // 6 index PIP
    [68.369, 212.183, -23.361],  // 7 index DIP
    [65.042, 240.189, -24.608],  // 8 index tip
    [116.522, 114.522, -17.714], // 9 middle MCP
    [105.944, 178.036, -23.459], // 10 middle PIP
    [98.905, 217.026, -25.294],  // 11 middle DIP
    [91.464, 246.169, -26.843],  // 12 middle tip
    [145.424, 111.905, -19.946], // 13 ring MCP
    [147.228, 169.219, -24.741], // 14 ring PIP
    [143.544, 204.124, -26.787], // 15 ring DIP
    [135.996, 231.001, -28.558], // 16 ring tip
    [171.581, 108.499, -21.761], // 17 pinky MCP
    [184.271, 146.050, -26.667], // 18 pinky PIP
    [190.103, 170.990, -28.695], // 19 pinky DIP
    [192.458, 192.995, -30.028], // 20 pinky tip
];

/// The hand's height in the frame, as a fraction of the frame height (at angle 0, mean scale).
pub const HAND_HEIGHT: f32 = 0.3;

/// How far (crop pixels) around the landmarks' bounding box the crop is shown
/// fully; the next fifth of that rounded box fades into the frame.
const HAND_MARGIN: f32 = 18.0;

/// The landmarks' bounding box in the crop: (centre, half size).
fn hand_box() -> ([f32; 2], [f32; 2]) {
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for p in &HAND_LANDMARKS {
        for i in 0..2 {
            lo[i] = lo[i].min(p[i]);
            hi[i] = hi[i].max(p[i]);
        }
    }
    (
        [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0],
        [(hi[0] - lo[0]) / 2.0, (hi[1] - lo[1]) / 2.0],
    )
}

/// Bilinear sample of channel-interleaved RGB at (px, py), inside the image.
fn sample(img: &RgbImage, px: f32, py: f32) -> [f32; 3] {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let (x0, y0) = (px.floor() as usize, py.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (px - x0 as f32, py - y0 as f32);
    let mut out = [0.0; 3];
    for (ch, o) in out.iter_mut().enumerate() {
        let v = |xx: usize, yy: usize| src[(yy * w + xx) * 3 + ch] as f32;
        let top = v(x0, y0) + (v(x1, y0) - v(x0, y0)) * fx;
        let bot = v(x0, y1) + (v(x1, y1) - v(x0, y1)) * fx;
        *o = top + (bot - top) * fy;
    }
    out
}

/// Photo → frame placement of frame `i`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub scale: f32,
    pub angle: f32,
    pub centre: [f32; 2],
}

pub struct SyntheticSource {
    photo: RgbImage,
    hand: RgbImage,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pacer: Pacer,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32, fps: f64) -> crate::error::Result<Self> {
        let photo = image::load_from_memory(PHOTO)
            .map_err(|e| crate::error::Error::msg(format!("synthetic source photo: {e}")))?
            .to_rgb8();
        let hand = image::load_from_memory(HAND)
            .map_err(|e| crate::error::Error::msg(format!("synthetic source hand: {e}")))?
            .to_rgb8();
        Ok(SyntheticSource {
            photo,
            hand,
            width,
            height,
            fps,
            pacer: Pacer::new(fps),
        })
    }

    /// The path: slow sines in scale, angle and position (t in seconds).
    pub fn pose(&self, index: u64) -> Pose {
        let t = index as f32 / self.fps as f32;
        let tau = std::f32::consts::TAU;
        let (w, h) = (self.width as f32, self.height as f32);
        Pose {
            scale: 0.8 + 0.1 * (tau * t / 7.0).sin(),
            angle: 0.1 * (tau * t / 5.0).sin(),
            centre: [
                w / 2.0 + 0.18 * w * (tau * t / 6.0).sin(),
                h / 2.0 + 0.1 * h * (tau * t / 4.0).sin(),
            ],
        }
    }

    /// Where a photo pixel lands in frame `index`.
    pub fn project(&self, index: u64, p: [f32; 2]) -> [f32; 2] {
        let pose = self.pose(index);
        let (c, s) = (pose.angle.cos(), pose.angle.sin());
        let half = [self.photo.width() as f32 / 2.0, self.photo.height() as f32 / 2.0];
        let (dx, dy) = ((p[0] - half[0]) * pose.scale, (p[1] - half[1]) * pose.scale);
        [pose.centre[0] + c * dx - s * dy, pose.centre[1] + s * dx + c * dy]
    }

    /// The hand's path: crop → frame placement of frame `index`. The centre
    /// of the landmarks' bounding box goes to `centre`; the hand is
    /// [`HAND_HEIGHT`] of the frame tall (±6 %), turns ±15° and moves up and
    /// down through the middle of the frame's right-hand side, clear of the
    /// astronaut's face (which stays left of about 0.71 of the width).
    pub fn hand_pose(&self, index: u64) -> Pose {
        let t = index as f32 / self.fps as f32;
        let tau = std::f32::consts::TAU;
        let (w, h) = (self.width as f32, self.height as f32);
        let (_, half) = hand_box();
        Pose {
            scale: HAND_HEIGHT * h / (2.0 * half[1]) * (1.0 + 0.06 * (tau * t / 6.5).sin()),
            angle: 0.26 * (tau * t / 4.5).sin(),
            centre: [
                w * (0.84 + 0.03 * (tau * t / 5.0 + 0.7).sin()),
                h * (0.55 + 0.12 * (tau * t / 3.7).sin()),
            ],
        }
    }

    /// Where a point of the hand crop (pixels) lands in frame `index`.
    pub fn hand_project(&self, index: u64, p: [f32; 2]) -> [f32; 2] {
        let pose = self.hand_pose(index);
        let (anchor, _) = hand_box();
        let (c, s) = (pose.angle.cos(), pose.angle.sin());
        let (dx, dy) = ((p[0] - anchor[0]) * pose.scale, (p[1] - anchor[1]) * pose.scale);
        [pose.centre[0] + c * dx - s * dy, pose.centre[1] + s * dx + c * dy]
    }

    /// The known path of the hand: where each of the 21 reference landmarks
    /// ([`HAND_LANDMARKS`], MediaPipe order) lands in frame `index`, as
    /// `[x, y, z]` in frame pixels (z scaled with the hand), the way a hand
    /// model reports them. Frames are not mirrored here: compare with
    /// unmirrored live frames.
    pub fn hand_landmarks(&self, index: u64) -> [[f32; 3]; 21] {
        let scale = self.hand_pose(index).scale;
        HAND_LANDMARKS.map(|p| {
            let q = self.hand_project(index, [p[0], p[1]]);
            [q[0], q[1], p[2] * scale]
        })
    }

    /// How much of the crop shows at crop point (x, y): 1 within
    /// [`HAND_MARGIN`] of the landmarks' box (a rounded box, superellipse of
    /// exponent 4), fading smoothly to 0 a fifth further out, so the hand
    /// brings a little of its own surroundings and has no hard edge.
    fn hand_alpha(x: f32, y: f32) -> f32 {
        let (c, half) = hand_box();
        let (a, b) = (half[0] + HAND_MARGIN, half[1] + HAND_MARGIN);
        let r = (((x - c[0]) / a).powi(4) + ((y - c[1]) / b).powi(4)).powf(0.25);
        let t = ((1.2 - r) / 0.2).clamp(0.0, 1.0);
        t * t * (3.0 - 2.0 * t)
    }

    /// Composites the hand of frame `index` into `out`.
    fn draw_hand(&self, index: u64, out: &mut RgbImage) {
        let pose = self.hand_pose(index);
        let (anchor, _) = hand_box();
        let (c, s) = (pose.angle.cos(), pose.angle.sin());
        let (hw, hh) = (self.hand.width() as f32, self.hand.height() as f32);
        // The crop's corners in the frame bound the pixels to visit.
        let corners = [[0.0, 0.0], [hw, 0.0], [0.0, hh], [hw, hh]].map(|p| self.hand_project(index, p));
        let lo = |i: usize| corners.iter().map(|p| p[i]).fold(f32::MAX, f32::min).floor().max(0.0) as u32;
        let hi =
            |i: usize, n: u32| (corners.iter().map(|p| p[i]).fold(f32::MIN, f32::max).ceil().max(0.0) as u32).min(n);
        let (x0, x1, y0, y1) = (lo(0), hi(0, self.width), lo(1), hi(1, self.height));
        let width = self.width as usize;
        let buf: &mut [u8] = out;
        for y in y0..y1 {
            for x in x0..x1 {
                let (qx, qy) = (x as f32 - pose.centre[0], y as f32 - pose.centre[1]);
                let px = (c * qx + s * qy) / pose.scale + anchor[0];
                let py = (-s * qx + c * qy) / pose.scale + anchor[1];
                if px < 0.0 || py < 0.0 || px > hw - 1.0 || py > hh - 1.0 {
                    continue;
                }
                let a = Self::hand_alpha(px, py);
                if a <= 0.0 {
                    continue;
                }
                let v = sample(&self.hand, px, py);
                let o = (y as usize * width + x as usize) * 3;
                for ch in 0..3 {
                    let bg = buf[o + ch] as f32;
                    buf[o + ch] = (bg + (v[ch] - bg) * a).round() as u8;
                }
            }
        }
    }

    /// Renders frame `index`: the photo (bilinear sampling, grey background),
    /// then the hand over it.
    pub fn render(&self, index: u64) -> RgbImage {
        let mut out = self.render_photo(index);
        self.draw_hand(index, &mut out);
        out
    }

    fn render_photo(&self, index: u64) -> RgbImage {
        let pose = self.pose(index);
        let (c, s) = (pose.angle.cos(), pose.angle.sin());
        let (pw, ph) = (self.photo.width() as f32, self.photo.height() as f32);
        let src = self.photo.as_raw();
        let stride = self.photo.width() as usize * 3;
        let mut out = RgbImage::from_pixel(self.width, self.height, Rgb([48, 52, 60]));
        let buf: &mut [u8] = &mut out;
        for y in 0..self.height {
            for x in 0..self.width {
                let (qx, qy) = (x as f32 - pose.centre[0], y as f32 - pose.centre[1]);
                // Inverse rotation and scale back into the photo.
                let px = (c * qx + s * qy) / pose.scale + pw / 2.0;
                let py = (-s * qx + c * qy) / pose.scale + ph / 2.0;
                if px < 0.0 || py < 0.0 || px > pw - 1.0 || py > ph - 1.0 {
                    continue;
                }
                let (x0, y0) = (px.floor() as usize, py.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(pw as usize - 1), (y0 + 1).min(ph as usize - 1));
                let (fx, fy) = (px - x0 as f32, py - y0 as f32);
                let o = (y as usize * self.width as usize + x as usize) * 3;
                for ch in 0..3 {
                    let v = |xx: usize, yy: usize| src[yy * stride + xx * 3 + ch] as f32;
                    let top = v(x0, y0) + (v(x1, y0) - v(x0, y0)) * fx;
                    let bot = v(x0, y1) + (v(x1, y1) - v(x0, y1)) * fx;
                    buf[o + ch] = (top + (bot - top) * fy).round() as u8;
                }
            }
        }
        out
    }
}

impl Source for SyntheticSource {
    fn describe(&self) -> String {
        format!("synthetic {}x{} @ {} fps", self.width, self.height, self.fps)
    }

    fn next(&mut self) -> crate::error::Result<RgbImage> {
        let i = self.pacer.wait();
        Ok(self.render(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_matches_rendering() {
        let s = SyntheticSource::new(1280, 960, 30.0).unwrap_or_else(|e| panic!("{e}"));
        let f = s.render(17);
        // The photo's centre pixel lands where `project` says.
        let p = s.project(17, [256.0, 256.0]);
        let px = f.get_pixel(p[0].round() as u32, p[1].round() as u32).0;
        let bg = [48u8, 52, 60];
        assert_ne!(px, bg, "photo content at the projected centre");
        // A point far outside the photo stays background.
        assert_eq!(f.get_pixel(0, 0).0, bg);
        assert_ne!(s.pose(0), s.pose(30), "the pose moves over time");
    }

    #[test]
    fn the_hand_lands_where_its_path_says_and_stays_in_the_frame() {
        let s = SyntheticSource::new(640, 480, 30.0).unwrap_or_else(|e| panic!("{e}"));
        let hand = image::load_from_memory(HAND)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_rgb8();
        let mut heights = Vec::new();
        for i in (0..900).step_by(7) {
            let f = s.render(i);
            let lm = s.hand_landmarks(i);
            // Every landmark inside the frame, and the fingertips, wrist and
            // knuckles show the crop's pixels there (within a pixel's blur).
            for (k, p) in lm.iter().enumerate() {
                assert!(
                    p[0] >= 2.0 && p[1] >= 2.0 && p[0] < 638.0 && p[1] < 478.0,
                    "frame {i}: landmark {k} at {p:?}"
                );
            }
            for k in [0usize, 4, 5, 8, 12, 16, 17, 20] {
                let want = sample(&hand, HAND_LANDMARKS[k][0], HAND_LANDMARKS[k][1]);
                let (x, y) = (lm[k][0].round() as u32, lm[k][1].round() as u32);
                // The best match in the 3×3 around the point (bilinear resampling).
                let best = (x - 1..=x + 1)
                    .flat_map(|xx| (y - 1..=y + 1).map(move |yy| (xx, yy)))
                    .map(|(xx, yy)| {
                        let got = f.get_pixel(xx, yy).0;
                        (0..3).map(|c| (got[c] as f32 - want[c]).abs()).fold(0.0, f32::max)
                    })
                    .fold(f32::MAX, f32::min);
                assert!(best <= 40.0, "frame {i} landmark {k}: off by {best} levels");
            }
            let (lo, hi) = lm
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), p| (l.min(p[1]), h.max(p[1])));
            heights.push(hi - lo);
            // The crop projects like the landmarks do.
            assert_eq!(
                s.hand_project(i, [HAND_LANDMARKS[3][0], HAND_LANDMARKS[3][1]]),
                [lm[3][0], lm[3][1]]
            );
        }
        // About a third of the frame tall, and the path moves and turns.
        let mean = heights.iter().sum::<f32>() / heights.len() as f32;
        assert!((mean / 480.0 - HAND_HEIGHT).abs() < 0.04, "hand height {mean} px");
        let (a, b) = (s.hand_pose(0), s.hand_pose(40));
        assert!((a.centre[1] - b.centre[1]).abs() > 20.0 && (a.angle - b.angle).abs() > 0.1);
        // Outside the hand's rounded box the photo shows unchanged.
        assert_eq!(s.render(5).get_pixel(5, 5).0, s.render_photo(5).get_pixel(5, 5).0);
    }

    #[test]
    fn the_synthetic_hands_thumb_is_tucked_under_so_four_nails_show() {
        let s = SyntheticSource::new(640, 480, 30.0).unwrap_or_else(|e| panic!("{e}"));
        for i in [0, 37, 100] {
            let ns = crate::vision::nails::nails(&s.hand_landmarks(i));
            let shown: Vec<usize> = ns.iter().filter(|n| !n.occluded).map(|n| n.finger).collect();
            assert_eq!(shown, vec![1, 2, 3, 4], "frame {i}");
        }
    }

    #[test]
    fn the_hand_keeps_clear_of_the_astronauts_face() {
        // The face box in the photo (the detector's, see tests/live.rs) grown by a third.
        let (fc, fh) = ([221.27f32, 131.15], 60.0f32);
        for (w, h) in [(640u32, 480u32), (800, 600), (1280, 960)] {
            let s = SyntheticSource::new(w, h, 20.0).unwrap_or_else(|e| panic!("{e}"));
            for i in (0..2400).step_by(5) {
                let f = s.project(i, fc);
                let r = fh * s.pose(i).scale;
                for p in s.hand_landmarks(i) {
                    let d = ((p[0] - f[0]).powi(2) + (p[1] - f[1]).powi(2)).sqrt();
                    assert!(d > r, "{w}x{h} frame {i}: landmark {p:?} on the face at {f:?}");
                }
            }
        }
    }
}
