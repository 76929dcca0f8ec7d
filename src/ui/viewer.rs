//! Viewer panel: images dropped or opened, the chosen model's results drawn
//! over them. Files are read and decoded on a background thread; the UI
//! thread only uploads textures and draws.

use eframe::egui;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver, Sender};
use egui::{Color32, Pos2, Stroke};

use crate::engine::{Engine, ImageInput, InferResult, RequestId};
use crate::vision::decode::{decode_bytes, read_file_limited, DecodeLimits};
use crate::vision::overlay::{skeleton, ImageToScreen};
use crate::vision::{Detection, InferParams};

pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];

/// Largest side of the texture kept for display (the model sees the full image).
const MAX_TEXTURE: u32 = 2048;

pub struct ViewerImage {
    pub path: PathBuf,
    pub name: String,
    pub bytes: Arc<Vec<u8>>,
    pub size: [u32; 2],
    pub texture: egui::TextureHandle,
    pub result: Option<InferResult>,
    pub error: Option<String>,
    pub request: Option<RequestId>,
}

struct Decoded {
    path: PathBuf,
    bytes: Arc<Vec<u8>>,
    size: [u32; 2],
    display: egui::ColorImage,
}

pub struct Viewer {
    pub images: Vec<ViewerImage>,
    pub selected: usize,
    pub model: String,
    pub conf: f32,
    pub iou: f32,
    decoded_tx: Sender<Result<Decoded, String>>,
    decoded_rx: Receiver<Result<Decoded, String>>,
    pub decoding: usize,
    pub status: Option<String>,
}

impl Viewer {
    pub fn new(model: String, conf: f32, iou: f32) -> Self {
        let (decoded_tx, decoded_rx) = unbounded();
        Viewer {
            images: Vec::new(),
            selected: 0,
            model,
            conf,
            iou,
            decoded_tx,
            decoded_rx,
            decoding: 0,
            status: None,
        }
    }

    /// Files and folders (one level) to open; read and decoded off the UI thread.
    pub fn open_paths(&mut self, paths: Vec<PathBuf>, ctx: &egui::Context) {
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut inner: Vec<PathBuf> = std::fs::read_dir(&p)
                    .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                    .unwrap_or_default();
                inner.retain(|f| is_image_name(f));
                inner.sort();
                files.extend(inner);
            } else {
                files.push(p);
            }
        }
        if files.is_empty() {
            return;
        }
        self.decoding += files.len();
        let tx = self.decoded_tx.clone();
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let limits = DecodeLimits::default();
            for path in files {
                let r = decode_for_display(&path, &limits);
                if tx.send(r).is_err() {
                    return;
                }
                ctx.request_repaint();
            }
        });
    }

    /// Takes decoded images from the background thread. Returns errors to show.
    pub fn poll(&mut self, ctx: &egui::Context, engine: &Engine) -> Vec<String> {
        let mut errors = Vec::new();
        while let Ok(r) = self.decoded_rx.try_recv() {
            self.decoding = self.decoding.saturating_sub(1);
            match r {
                Ok(d) => {
                    let name = d
                        .path
                        .file_name()
                        .map(|s| s.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let texture = ctx.load_texture(&name, d.display, egui::TextureOptions::LINEAR);
                    self.images.push(ViewerImage {
                        path: d.path,
                        name,
                        bytes: d.bytes,
                        size: d.size,
                        texture,
                        result: None,
                        error: None,
                        request: None,
                    });
                    self.selected = self.images.len() - 1;
                    let i = self.selected;
                    self.submit(i, engine);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// What the engine is asked for: the confidence floor is applied here, so
    /// moving the confidence slider only re-filters (NMS keeps the same boxes
    /// above any threshold); the IoU slider re-runs post-processing.
    fn params(&self) -> InferParams {
        InferParams {
            conf: Some(self.conf.min(0.05)),
            iou: Some(self.iou),
        }
    }

    fn submit(&mut self, i: usize, engine: &Engine) {
        let params = self.params();
        let model = self.model.clone();
        let Some(img) = self.images.get_mut(i) else { return };
        let input = ImageInput::Bytes {
            name: img.path.display().to_string(),
            bytes: img.bytes.clone(),
        };
        match engine.infer(&model, input, params) {
            Ok(id) => {
                img.request = Some(id);
                img.error = None;
            }
            Err(e) => img.error = Some(e.to_string()),
        }
    }

    pub fn resubmit_all(&mut self, engine: &Engine) {
        for i in 0..self.images.len() {
            self.submit(i, engine);
        }
    }

    /// An answer from the engine; false if it was not ours.
    pub fn on_answer(&mut self, a: &crate::engine::Answer) -> bool {
        let id = match a {
            Ok(r) => r.request_id,
            Err(e) => e.request_id,
        };
        let Some(img) = self.images.iter_mut().find(|i| i.request == Some(id)) else {
            return false;
        };
        img.request = None;
        match a {
            Ok(r) => {
                tracing::info!(
                    "viewer: result for {} ({} detections above {:.2})",
                    img.name,
                    r.output.detections.iter().filter(|d| d.score > self.conf).count(),
                    self.conf
                );
                img.result = Some(r.clone());
                img.error = None;
            }
            Err(e) => img.error = Some(e.error.clone()),
        }
        true
    }

    /// Detections above the confidence slider.
    pub fn visible<'a>(&self, r: &'a InferResult) -> Vec<&'a Detection> {
        r.output.detections.iter().filter(|d| d.score > self.conf).collect()
    }

    pub fn pending(&self) -> usize {
        self.images.iter().filter(|i| i.request.is_some()).count() + self.decoding
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, engine: &Engine, model_ids: &[String]) {
        ui.horizontal_wrapped(|ui| {
            let before = self.model.clone();
            egui::ComboBox::from_label("Model")
                .selected_text(self.model.clone())
                .show_ui(ui, |ui| {
                    for id in model_ids {
                        ui.selectable_value(&mut self.model, id.clone(), id);
                    }
                });
            if self.model != before {
                self.resubmit_all(engine);
            }
            ui.add(egui::Slider::new(&mut self.conf, 0.0..=1.0).text("Confidence"));
            let iou_before = self.iou;
            ui.add(egui::Slider::new(&mut self.iou, 0.05..=1.0).text("IoU"));
            if (self.iou - iou_before).abs() > f32::EPSILON {
                self.resubmit_all(engine);
            }
        });
        let total = self.images.len() + self.decoding;
        let pending = self.pending();
        if pending > 0 && total > 1 {
            let done = total - pending;
            ui.add(egui::ProgressBar::new(done as f32 / total as f32).text(format!("Batch: {done} / {total} images")));
        }
        if let Some(s) = &self.status {
            ui.label(s);
        }
        if self.images.is_empty() {
            ui.centered_and_justified(|ui| {
                ui.label("Drop images or a folder here, or File > Open (Ctrl+O)");
            });
            return;
        }
        if self.images.len() > 1 {
            egui::ScrollArea::horizontal().id_salt("thumbs").show(ui, |ui| {
                ui.horizontal(|ui| {
                    for (i, img) in self.images.iter().enumerate() {
                        let size = thumb_size(img.size, 64.0);
                        let r = ui.add(
                            egui::Button::image(egui::Image::new((img.texture.id(), size)))
                                .selected(i == self.selected),
                        );
                        if r.on_hover_text(&img.name).clicked() {
                            self.selected = i;
                        }
                    }
                });
            });
        }
        let conf = self.conf;
        let Some(img) = self.images.get(self.selected) else {
            return;
        };
        match (&img.result, &img.error) {
            (_, Some(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            (Some(r), None) => {
                let n = r.output.detections.iter().filter(|d| d.score > conf).count();
                let t = &r.timings;
                ui.label(format!("{}: {n} detections", img.name));
                ui.label(format!(
                    "total {:.1} ms — queue {:.1} · decode {:.1} · preprocess {:.1} · forward {:.1} · postprocess {:.1}{}",
                    t.total,
                    t.queue,
                    t.decode,
                    t.preprocess,
                    t.forward,
                    t.postprocess,
                    if r.output.cached { " (cached)" } else { "" }
                ));
            }
            (None, None) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("{}: running {}…", img.name, self.model));
                });
            }
        }
        let avail = ui.available_size();
        let (rect, _) = ui.allocate_exact_size(avail, egui::Sense::hover());
        let map = ImageToScreen::fit(
            [img.size[0] as f32, img.size[1] as f32],
            [rect.left(), rect.top(), rect.width(), rect.height()],
        );
        let top_left = map.point([0.0, 0.0]);
        let bottom_right = map.point([img.size[0] as f32, img.size[1] as f32]);
        let img_rect = egui::Rect::from_min_max(
            Pos2::new(top_left[0], top_left[1]),
            Pos2::new(bottom_right[0], bottom_right[1]),
        );
        let painter = ui.painter_at(rect);
        painter.image(
            img.texture.id(),
            img_rect,
            egui::Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
        if let Some(r) = &img.result {
            for (k, d) in r.output.detections.iter().filter(|d| d.score > conf).enumerate() {
                draw_detection(&painter, &map, d, super::models_panel::palette(k + 3));
            }
        }
    }
}

pub fn thumb_size(size: [u32; 2], side: f32) -> egui::Vec2 {
    let s = side / size[0].max(size[1]).max(1) as f32;
    egui::vec2(size[0] as f32 * s, size[1] as f32 * s)
}

/// Box, label and score, keypoints and their skeleton.
pub fn draw_detection(painter: &egui::Painter, map: &ImageToScreen, d: &Detection, color: Color32) {
    let a = map.point([d.bbox[0], d.bbox[1]]);
    let b = map.point([d.bbox[2], d.bbox[3]]);
    let r = egui::Rect::from_min_max(Pos2::new(a[0], a[1]), Pos2::new(b[0], b[1]));
    painter.rect_stroke(r, 2.0, Stroke::new(2.0, color), egui::StrokeKind::Outside);
    let text = format!("{} {:.2}", d.label, d.score);
    let galley = painter.layout_no_wrap(text, egui::FontId::proportional(13.0), Color32::WHITE);
    let bg = egui::Rect::from_min_size(
        r.left_top() - egui::vec2(0.0, galley.size().y + 2.0),
        galley.size() + egui::vec2(6.0, 2.0),
    );
    painter.rect_filled(bg, 2.0, color);
    painter.galley(bg.left_top() + egui::vec2(3.0, 1.0), galley, Color32::WHITE);
    let pts: Vec<Pos2> = d
        .keypoints
        .iter()
        .map(|k| {
            let p = map.point([k[0], k[1]]);
            Pos2::new(p[0], p[1])
        })
        .collect();
    for (i, j) in skeleton(pts.len()) {
        if d.keypoints[i][2] > 0.25 && d.keypoints[j][2] > 0.25 {
            painter.line_segment([pts[i], pts[j]], Stroke::new(1.5, color.gamma_multiply(0.8)));
        }
    }
    for (p, k) in pts.iter().zip(&d.keypoints) {
        if k[2] > 0.25 {
            painter.circle_filled(*p, 2.0, Color32::from_rgb(255, 255, 0));
        }
    }
}

pub fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn decode_for_display(path: &Path, limits: &DecodeLimits) -> Result<Decoded, String> {
    let bytes = read_file_limited(path, limits).map_err(|e| e.to_string())?;
    let img = decode_bytes(&path.display().to_string(), &bytes, limits).map_err(|e| e.to_string())?;
    let size = [img.width(), img.height()];
    let shown = if size[0].max(size[1]) > MAX_TEXTURE {
        let s = MAX_TEXTURE as f32 / size[0].max(size[1]) as f32;
        image::imageops::thumbnail(
            &img,
            ((size[0] as f32 * s) as u32).max(1),
            ((size[1] as f32 * s) as u32).max(1),
        )
    } else {
        img
    };
    let display = egui::ColorImage::from_rgb([shown.width() as usize, shown.height() as usize], shown.as_raw());
    Ok(Decoded {
        path: path.to_path_buf(),
        bytes: Arc::new(bytes),
        size,
        display,
    })
}
