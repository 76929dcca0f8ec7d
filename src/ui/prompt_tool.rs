//! The Viewer's prompt tool, for models that take prompts (Segment
//! Anything): a click puts a point in the object, a right click a point
//! outside it, and a Shift-drag draws a box. Each change asks for the mask
//! again; the model keeps the image's embedding, so only the prompt encoder
//! and the mask decoder run. Points and the box are in image pixels, per
//! image.

use eframe::egui;
use egui::{Color32, Pos2, Rect, Response, Stroke};

use crate::vision::overlay::ImageToScreen;
use crate::vision::prompt::{Prompt, PromptPoint, Prompts, MAX_POINTS};

/// One image's points and box.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptDraft {
    pub points: Vec<PromptPoint>,
    pub bbox: Option<[f32; 4]>,
    /// Where a Shift-drag started (image pixels), while it lasts.
    drag_from: Option<[f32; 2]>,
}

impl PromptDraft {
    /// The request's prompts; `None` when nothing is placed.
    pub fn prompts(&self) -> Option<Prompts> {
        let keep = self.points.len().saturating_sub(MAX_POINTS);
        let p = Prompt::new(&self.points[keep..], self.bbox).ok()?;
        Prompts::new(&[p]).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.bbox.is_none()
    }

    pub fn clear(&mut self) {
        *self = PromptDraft::default();
    }

    /// A point at image pixel `at` (in the object when `positive`); the
    /// oldest goes past [`MAX_POINTS`].
    pub fn add_point(&mut self, at: [f32; 2], positive: bool) {
        if self.points.len() >= MAX_POINTS {
            self.points.remove(0);
        }
        self.points.push(PromptPoint {
            x: at[0],
            y: at[1],
            positive,
        });
    }

    /// Reads the canvas `response` (the image mapped by `map`, `size`
    /// pixels): clicks add points, a Shift-drag draws the box. Returns
    /// whether the prompt changed (ask again), and whether the pointer is
    /// drawing a box (so the canvas does not pan).
    pub fn handle(&mut self, response: &Response, map: &ImageToScreen, size: [u32; 2], shift: bool) -> (bool, bool) {
        let to_image = |p: Pos2| -> Option<[f32; 2]> {
            let s = map.scale.max(1e-6);
            let (x, y) = ((p.x - map.origin[0]) / s, (p.y - map.origin[1]) / s);
            let inside = x >= 0.0 && y >= 0.0 && x < size[0] as f32 && y < size[1] as f32;
            inside.then_some([x, y])
        };
        let at = response.interact_pointer_pos().and_then(to_image);
        if response.drag_started() && shift {
            self.drag_from = at;
        }
        if let Some(from) = self.drag_from {
            if response.drag_stopped() {
                self.drag_from = None;
                let to = response
                    .interact_pointer_pos()
                    .map(|p| clamp_to(p, map, size))
                    .unwrap_or(from);
                let b = [
                    from[0].min(to[0]),
                    from[1].min(to[1]),
                    from[0].max(to[0]),
                    from[1].max(to[1]),
                ];
                if b[2] - b[0] >= 2.0 && b[3] - b[1] >= 2.0 {
                    self.bbox = Some(b);
                    return (true, false);
                }
                return (false, false);
            }
            return (false, true);
        }
        match at {
            Some(p) if response.clicked() => {
                self.add_point(p, true);
                (true, false)
            }
            Some(p) if response.secondary_clicked() => {
                self.add_point(p, false);
                (true, false)
            }
            _ => (false, false),
        }
    }

    /// Draws the points (green in, red out), the box and a box being drawn.
    pub fn draw(&self, painter: &egui::Painter, map: &ImageToScreen, hover: Option<Pos2>, size: [u32; 2]) {
        for p in &self.points {
            let c = map.point([p.x, p.y]);
            let colour = if p.positive {
                Color32::from_rgb(40, 220, 80)
            } else {
                Color32::from_rgb(230, 50, 50)
            };
            painter.circle(Pos2::new(c[0], c[1]), 5.0, colour, Stroke::new(1.5, Color32::WHITE));
        }
        let boxed = |b: [f32; 4]| {
            let (a, z) = (map.point([b[0], b[1]]), map.point([b[2], b[3]]));
            Rect::from_min_max(Pos2::new(a[0], a[1]), Pos2::new(z[0], z[1]))
        };
        let stroke = Stroke::new(2.0, Color32::from_rgb(80, 160, 255));
        if let Some(b) = self.bbox {
            painter.rect_stroke(boxed(b), 0.0, stroke, egui::StrokeKind::Middle);
        }
        if let (Some(from), Some(h)) = (self.drag_from, hover) {
            let to = clamp_to(h, map, size);
            let b = [
                from[0].min(to[0]),
                from[1].min(to[1]),
                from[0].max(to[0]),
                from[1].max(to[1]),
            ];
            painter.rect_stroke(boxed(b), 0.0, stroke, egui::StrokeKind::Middle);
        }
    }
}

/// A screen point as image pixels, clamped to the image.
fn clamp_to(p: Pos2, map: &ImageToScreen, size: [u32; 2]) -> [f32; 2] {
    let s = map.scale.max(1e-6);
    [
        ((p.x - map.origin[0]) / s).clamp(0.0, size[0] as f32),
        ((p.y - map.origin[1]) / s).clamp(0.0, size[1] as f32),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_keeps_the_newest_points_and_becomes_one_prompt() {
        let mut d = PromptDraft::default();
        assert!(d.prompts().is_none());
        for i in 0..MAX_POINTS + 3 {
            d.add_point([i as f32, 1.0], i % 2 == 0);
        }
        assert_eq!(d.points.len(), MAX_POINTS);
        assert_eq!(d.points[0].x, 3.0);
        d.bbox = Some([0.0, 0.0, 5.0, 5.0]);
        let p = d.prompts().unwrap();
        assert_eq!(p.as_slice().len(), 1);
        assert_eq!(p.as_slice()[0].points().len(), MAX_POINTS);
        assert_eq!(p.as_slice()[0].bbox(), Some([0.0, 0.0, 5.0, 5.0]));
        d.clear();
        assert!(d.is_empty());
    }
}
