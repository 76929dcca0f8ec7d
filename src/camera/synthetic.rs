//! A synthetic camera: a real photo moved, scaled and rotated along a known
//! path, so tests can check that detections follow it.

use image::{Rgb, RgbImage};

use super::source::{Pacer, Source};

static PHOTO: &[u8] = include_bytes!("../../assets/astronaut.png");

/// Photo → frame placement of frame `i`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub scale: f32,
    pub angle: f32,
    pub centre: [f32; 2],
}

pub struct SyntheticSource {
    photo: RgbImage,
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
        Ok(SyntheticSource {
            photo,
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

    /// Renders frame `index` (bilinear sampling, grey background).
    pub fn render(&self, index: u64) -> RgbImage {
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
}
