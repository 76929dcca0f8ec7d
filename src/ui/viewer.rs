//! Viewer panel: images dropped or opened, the chosen model's results drawn
//! over them. Files are read and decoded on a background thread; the UI
//! thread only uploads textures and draws.

use eframe::egui;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use egui::{Color32, Pos2, Rect, Stroke, Vec2};

use crate::client::Client;
use crate::client::{ImageInput, InferResult, RequestId};
use crate::vision::decode::{decode_bytes, read_file_limited, DecodeLimits};
use crate::vision::overlay::{class_colour, hand_finger, keypoint_visible, skeleton, text_colour_on, ImageToScreen};
use crate::vision::{is_image_name, Detection, InferParams};

use super::mask_view::{MaskControls, MaskJob, MaskView, Picture};
use super::prompt_tool::PromptDraft;

/// Largest side of the texture kept for display (the model sees the full image).
const MAX_TEXTURE: u32 = 2048;

/// Zoom per point of mouse-wheel scroll (a wheel notch is about 50 points).
const WHEEL_ZOOM: f32 = 0.0025;
/// The closest zoom, in screen points per image pixel.
const MAX_SCALE: f32 = 64.0;
/// How much of a panned image stays on the canvas, in points.
const KEEP_VISIBLE: f32 = 48.0;

/// How the selected image sits on the canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ViewMode {
    /// The whole image, centred, as large as the canvas allows.
    Fit,
    /// `scale` screen points per image pixel; `pan` is how far the image
    /// centre sits from the canvas centre.
    Free { scale: f32, pan: Vec2 },
}

impl ViewMode {
    /// Image pixels → screen points for an image of `img` pixels on `canvas`.
    pub fn transform(&self, img: [u32; 2], canvas: Rect) -> ImageToScreen {
        let size = Vec2::new(img[0].max(1) as f32, img[1].max(1) as f32);
        match *self {
            ViewMode::Fit => ImageToScreen::fit(
                [size.x, size.y],
                [canvas.left(), canvas.top(), canvas.width(), canvas.height()],
            ),
            ViewMode::Free { scale, pan } => {
                let origin = canvas.center() + pan - size * scale / 2.0;
                ImageToScreen {
                    origin: [origin.x, origin.y],
                    scale,
                }
            }
        }
    }

    /// The same view as a free one (scale and pan made explicit).
    pub fn to_free(self, img: [u32; 2], canvas: Rect) -> (f32, Vec2) {
        match self {
            ViewMode::Free { scale, pan } => (scale, pan),
            ViewMode::Fit => (self.transform(img, canvas).scale, Vec2::ZERO),
        }
    }

    /// Zooms by `factor` keeping the image point under `cursor` where it is.
    pub fn zoom_at(self, img: [u32; 2], canvas: Rect, cursor: Pos2, factor: f32) -> ViewMode {
        let map = self.transform(img, canvas);
        let scale = map.scale;
        let min_scale = (ViewMode::Fit.transform(img, canvas).scale.min(1.0) * 0.5).max(1e-3);
        let new_scale = (scale * factor).clamp(min_scale, MAX_SCALE.max(min_scale));
        if !new_scale.is_finite() || new_scale <= 0.0 {
            return self;
        }
        let origin = Pos2::new(map.origin[0], map.origin[1]);
        // The image pixel under the cursor stays under it.
        let under = (cursor - origin) / scale;
        let new_origin = cursor - under * new_scale;
        let size = Vec2::new(img[0].max(1) as f32, img[1].max(1) as f32);
        let new_pan = new_origin + size * new_scale / 2.0 - canvas.center();
        ViewMode::Free {
            scale: new_scale,
            pan: clamp_pan(new_pan, size * new_scale, canvas),
        }
    }

    /// Moves the image by `delta` screen points.
    pub fn pan_by(self, img: [u32; 2], canvas: Rect, delta: Vec2) -> ViewMode {
        let (scale, pan) = self.to_free(img, canvas);
        let size = Vec2::new(img[0].max(1) as f32, img[1].max(1) as f32);
        ViewMode::Free {
            scale,
            pan: clamp_pan(pan + delta, size * scale, canvas),
        }
    }

    /// One image pixel per physical screen pixel.
    pub fn one_to_one(pixels_per_point: f32) -> ViewMode {
        ViewMode::Free {
            scale: 1.0 / pixels_per_point.max(1e-3),
            pan: Vec2::ZERO,
        }
    }

    pub fn is_one_to_one(&self, pixels_per_point: f32) -> bool {
        matches!(*self, ViewMode::Free { scale, .. }
            if (scale * pixels_per_point.max(1e-3) - 1.0).abs() < 1e-4)
    }
}

/// Keeps at least a strip of a panned image of `shown` size on the canvas.
fn clamp_pan(pan: Vec2, shown: Vec2, canvas: Rect) -> Vec2 {
    let lim = |shown: f32, canvas: f32| ((shown + canvas) / 2.0 - KEEP_VISIBLE.min(shown)).max(0.0);
    let (lx, ly) = (lim(shown.x, canvas.width()), lim(shown.y, canvas.height()));
    Vec2::new(pan.x.clamp(-lx, lx), pan.y.clamp(-ly, ly))
}

pub struct ViewerImage {
    pub path: PathBuf,
    pub name: String,
    pub bytes: Arc<Vec<u8>>,
    pub size: [u32; 2],
    pub texture: egui::TextureHandle,
    pub result: Option<InferResult>,
    pub error: Option<String>,
    pub request: Option<RequestId>,
    /// Points and box placed on this image (models that take prompts).
    pub prompt: PromptDraft,
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
    opened_tx: Sender<Opened>,
    opened_rx: Receiver<Opened>,
    /// `open_paths` calls whose files and folders are still being listed.
    pub listing: usize,
    /// Listed files still being read and decoded.
    pub decoding: usize,
    pub status: Option<String>,
    /// How the selected image is shown (back to `Fit` when another is selected).
    pub view: ViewMode,
    view_of: Option<usize>,
    /// Where the image area and the selected image were drawn last frame.
    pub canvas_rect: Option<Rect>,
    pub image_rect: Option<Rect>,
    /// Whether the Viewer's model makes masks (its manifest's task; the app sets it).
    pub model_makes_masks: bool,
    /// Whether the Viewer's model takes prompts (its arch; the app sets it):
    /// clicks then place points instead of only panning.
    pub model_takes_prompts: bool,
    pub mask_controls: MaskControls,
    pub masks: MaskView,
}

/// What the opening thread reports, in order: the files found, then each decoded.
enum Opened {
    Listed { files: usize, errors: Vec<String> },
    Decoded(Box<crate::Result<Decoded>>),
}

impl Viewer {
    pub fn new(model: String, conf: f32, iou: f32) -> Self {
        // A few decoded images ahead of the UI: the opening thread waits
        // for the UI to take them, so a dropped folder never piles up in memory.
        let (opened_tx, opened_rx) = bounded(8);
        Viewer {
            images: Vec::new(),
            selected: 0,
            model,
            conf,
            iou,
            opened_tx,
            opened_rx,
            listing: 0,
            decoding: 0,
            status: None,
            view: ViewMode::Fit,
            view_of: None,
            canvas_rect: None,
            image_rect: None,
            model_makes_masks: false,
            model_takes_prompts: false,
            mask_controls: MaskControls::default(),
            masks: MaskView::default(),
        }
    }

    /// Files and folders (one level) to open. Everything that touches the disk
    /// (is it a folder, what is in it, reading, decoding) runs on a background
    /// thread; results arrive through [`Viewer::poll`].
    pub fn open_paths(&mut self, paths: Vec<PathBuf>, ctx: &egui::Context) {
        if paths.is_empty() {
            return;
        }
        self.listing += 1;
        let tx = self.opened_tx.clone();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new().name("viewer-open".into()).spawn(move || {
            let (files, errors) = list_images(paths);
            let listed = Opened::Listed {
                files: files.len(),
                errors,
            };
            if tx.send(listed).is_err() {
                return;
            }
            ctx.request_repaint();
            let limits = DecodeLimits::default();
            for path in files {
                let r = decode_for_display(&path, &limits);
                if tx.send(Opened::Decoded(Box::new(r))).is_err() {
                    return;
                }
                ctx.request_repaint();
            }
        });
        if let Err(e) = spawned {
            self.listing -= 1;
            self.status = Some(format!("Open: cannot start a thread: {e}"));
        }
    }

    /// Takes decoded images from the background thread. Returns errors to show.
    pub fn poll(&mut self, ctx: &egui::Context, engine: &Client) -> Vec<String> {
        let mut errors = Vec::new();
        while let Ok(msg) = self.opened_rx.try_recv() {
            let r = match msg {
                Opened::Listed { files, errors: e } => {
                    self.listing = self.listing.saturating_sub(1);
                    self.decoding += files;
                    errors.extend(e);
                    continue;
                }
                Opened::Decoded(r) => *r,
            };
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
                        prompt: PromptDraft::default(),
                    });
                    self.selected = self.images.len() - 1;
                    let i = self.selected;
                    self.submit(i, engine);
                }
                Err(e) => errors.push(e.to_string()),
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
            ..Default::default()
        }
    }

    fn submit(&mut self, i: usize, engine: &Client) {
        let mut params = self.params();
        let model = self.model.clone();
        let takes_prompts = self.model_takes_prompts;
        let Some(img) = self.images.get_mut(i) else { return };
        if takes_prompts {
            params.prompts = img.prompt.prompts();
        }
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

    pub fn resubmit_all(&mut self, engine: &Client) {
        for i in 0..self.images.len() {
            self.submit(i, engine);
        }
    }

    /// An answer from the engine; false if it was not ours.
    pub fn on_answer(&mut self, a: &crate::client::Answer) -> bool {
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
        self.images.iter().filter(|i| i.request.is_some()).count() + self.decoding + self.listing
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, engine: &Client, model_ids: &[String]) {
        self.settings_ui(ui, engine, model_ids);
        self.progress_ui(ui);
        if self.images.is_empty() {
            if self.listing == 0 && self.decoding == 0 {
                ui.centered_and_justified(|ui| {
                    ui.label("Drop images or a folder here, or File > Open (Ctrl+O)");
                });
            }
            return;
        }
        if self.images.len() > 1 {
            self.thumbnails_ui(ui);
        }
        let Some(img) = self.images.get(self.selected) else {
            return;
        };
        result_summary_ui(ui, img, self.conf, &self.model);
        let has_masks = img.result.as_ref().is_some_and(|r| !r.output.masks.is_empty());
        let size = img.size;
        if self.model_makes_masks || has_masks {
            self.mask_controls.ui(ui);
        }
        let ppp = ui.ctx().pixels_per_point();
        if self.view_of != Some(self.selected) {
            self.view = ViewMode::Fit;
            self.view_of = Some(self.selected);
        }
        self.view_buttons_ui(ui, size, ppp);
        if self.model_takes_prompts {
            let cleared = self.prompt_bar_ui(ui);
            let placed = self.canvas_ui(ui);
            if cleared || placed {
                let i = self.selected;
                self.submit(i, engine);
            }
        } else {
            self.canvas_ui(ui);
        }
    }

    /// The prompt hint and the Clear button; true when the prompt was cleared.
    fn prompt_bar_ui(&mut self, ui: &mut egui::Ui) -> bool {
        let mut cleared = false;
        ui.horizontal_wrapped(|ui| {
            ui.weak("click: a point in the object · right click: outside · Shift+drag: a box");
            let Some(img) = self.images.get_mut(self.selected) else {
                return;
            };
            if ui
                .add_enabled(!img.prompt.is_empty(), egui::Button::new("Clear prompt"))
                .clicked()
            {
                img.prompt.clear();
                cleared = true;
            }
        });
        cleared
    }

    /// The model picker and the confidence and IoU sliders; a new model or IoU resubmits every image.
    fn settings_ui(&mut self, ui: &mut egui::Ui, engine: &Client, model_ids: &[String]) {
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
            wrap_unless_fits(ui, slider_width(ui, "Confidence"));
            ui.add(egui::Slider::new(&mut self.conf, 0.0..=1.0).text("Confidence"));
            let iou_before = self.iou;
            wrap_unless_fits(ui, slider_width(ui, "IoU"));
            ui.add(egui::Slider::new(&mut self.iou, 0.05..=1.0).text("IoU"));
            if (self.iou - iou_before).abs() > f32::EPSILON {
                self.resubmit_all(engine);
            }
        });
    }

    /// The batch progress bar, the listing spinner and the status line.
    fn progress_ui(&self, ui: &mut egui::Ui) {
        let total = self.images.len() + self.decoding;
        let pending = self.pending().saturating_sub(self.listing);
        if pending > 0 && total > 1 {
            let done = total.saturating_sub(pending);
            ui.add(egui::ProgressBar::new(done as f32 / total as f32).text(format!("Batch: {done} / {total} images")));
        }
        if self.listing > 0 {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Listing files…");
            });
        }
        if let Some(s) = &self.status {
            ui.label(s);
        }
    }

    /// The strip of thumbnails; clicking one selects its image.
    fn thumbnails_ui(&mut self, ui: &mut egui::Ui) {
        egui::ScrollArea::horizontal().id_salt("thumbs").show(ui, |ui| {
            ui.horizontal(|ui| {
                for (i, img) in self.images.iter().enumerate() {
                    let size = thumb_size(img.size, 64.0);
                    let r = ui.add(
                        egui::Button::image(egui::Image::new((img.texture.id(), size))).selected(i == self.selected),
                    );
                    if r.on_hover_text(&img.name).clicked() {
                        self.selected = i;
                    }
                }
            });
        });
    }

    /// The Fit and 1:1 buttons, the zoom percentage and the mouse hint above the canvas.
    fn view_buttons_ui(&mut self, ui: &mut egui::Ui, size: [u32; 2], ppp: f32) {
        ui.horizontal(|ui| {
            let fit = self.view == ViewMode::Fit;
            if ui
                .add(egui::Button::new("Fit").selected(fit))
                .on_hover_text("Show the whole image (double-click the image)")
                .clicked()
            {
                self.view = ViewMode::Fit;
            }
            let one = self.view.is_one_to_one(ppp);
            if ui
                .add(egui::Button::new("1:1").selected(one))
                .on_hover_text("One image pixel per screen pixel")
                .clicked()
            {
                self.view = if one { ViewMode::Fit } else { ViewMode::one_to_one(ppp) };
            }
            if let Some(r) = self.canvas_rect {
                let scale = self.view.transform(size, r).scale;
                ui.label(format!("{:.0}%", scale * ppp * 100.0));
            }
            ui.weak("wheel: zoom · drag: pan");
        });
    }

    /// The selected image on the canvas (double-click fits, drag pans, wheel
    /// or pinch zooms) with its detections above the confidence drawn over
    /// it; for a model that takes prompts, clicks place points and a
    /// Shift-drag a box. Returns whether the prompt changed.
    fn canvas_ui(&mut self, ui: &mut egui::Ui) -> bool {
        let conf = self.conf;
        let prompting = self.model_takes_prompts;
        let Some(img) = self.images.get_mut(self.selected) else {
            return false;
        };
        // Only what is visible: a header wider than the panel widens the Ui
        // past the panel's clip rect, and an image fitted to that is cropped.
        let canvas = ui.available_rect_before_wrap().intersect(ui.clip_rect());
        if !canvas.is_positive() {
            return false;
        }
        let response = ui.allocate_rect(canvas, egui::Sense::click_and_drag());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Image view"));
        let size = img.size;
        let (mut changed, mut boxing) = (false, false);
        if prompting {
            let shift = ui.input(|i| i.modifiers.shift);
            (changed, boxing) = img
                .prompt
                .handle(&response, &self.view.transform(size, canvas), size, shift);
        }
        if response.double_clicked() && !prompting {
            self.view = ViewMode::Fit;
        } else if response.dragged() && !boxing {
            let d = response.drag_delta();
            if d != Vec2::ZERO {
                self.view = self.view.pan_by(size, canvas, d);
            }
        }
        if response.hovered() {
            let (scroll, zoom, cursor) = ui.input(|i| (i.smooth_scroll_delta(), i.zoom_delta(), i.pointer.hover_pos()));
            let factor = zoom * (scroll.y * WHEEL_ZOOM).exp();
            if let Some(cursor) = cursor {
                if (factor - 1.0).abs() > 1e-4 {
                    self.view = self.view.zoom_at(size, canvas, cursor, factor);
                }
            }
        }
        let map = self.view.transform(size, canvas);
        let top_left = map.point([0.0, 0.0]);
        let bottom_right = map.point([size[0] as f32, size[1] as f32]);
        let img_rect = Rect::from_min_max(
            Pos2::new(top_left[0], top_left[1]),
            Pos2::new(bottom_right[0], bottom_right[1]),
        );
        self.canvas_rect = Some(canvas);
        self.image_rect = Some(img_rect);
        let painter = ui.painter_at(canvas);
        let mut texture = img.texture.id();
        if let Some(r) = img.result.as_ref().filter(|r| !r.output.masks.is_empty()) {
            let job = MaskJob {
                key: r.request_id,
                generation: self.mask_controls.generation,
                picture: Picture::File {
                    name: img.name.clone(),
                    bytes: img.bytes.clone(),
                },
                size,
                masks: r.output.masks.clone(),
                detections: r.output.detections.clone(),
                style: self.mask_controls.style(),
            };
            self.masks.want(job, ui.ctx());
            self.masks.poll(ui.ctx());
            if let Some(t) = self.masks.texture(Some(r.request_id)) {
                texture = t;
            }
        }
        painter.image(
            texture,
            img_rect,
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
        if let Some(r) = &img.result {
            for d in r.output.detections.iter().filter(|d| d.score > conf) {
                draw_detection(&painter, &map, d, detection_colour(d));
            }
        }
        if prompting {
            img.prompt.draw(&painter, &map, response.hover_pos(), size);
        }
        changed
    }
}

/// The selected image's error, its detection count and timings, or a spinner while it runs.
fn result_summary_ui(ui: &mut egui::Ui, img: &ViewerImage, conf: f32, model: &str) {
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
                ui.label(format!("{}: running {}…", img.name, model));
            });
        }
    }
}

/// In a `horizontal_wrapped` Ui, starts a new row unless `width` fits in
/// this one. A slider (rail, value and label) is one widget whose width egui
/// learns only after drawing it, so it would overflow the panel instead of wrapping.
pub fn wrap_unless_fits(ui: &mut egui::Ui, width: f32) {
    if ui.available_size_before_wrap().x < width && ui.cursor().left() > ui.max_rect().left() + 1.0 {
        ui.end_row();
    }
}

/// About how wide a slider with a value box and `label` is.
pub fn slider_width(ui: &egui::Ui, label: &str) -> f32 {
    let s = ui.spacing();
    s.slider_width + s.interact_size.x + 3.0 * s.item_spacing.x + 8.0 * label.chars().count() as f32
}

pub fn thumb_size(size: [u32; 2], side: f32) -> egui::Vec2 {
    let s = side / size[0].max(size[1]).max(1) as f32;
    egui::vec2(size[0] as f32 * s, size[1] as f32 * s)
}

/// A detection's overlay colour: its class's (by `class_id`, else by label),
/// the same in every frame and every image.
pub fn detection_colour(d: &Detection) -> Color32 {
    let [r, g, b] = class_colour(d.class_id, &d.label);
    Color32::from_rgb(r, g, b)
}

/// Hand bones by finger, thumb to pinky (MediaPipe's drawing colours).
const FINGER_COLOURS: [Color32; 5] = [
    Color32::from_rgb(255, 208, 48),
    Color32::from_rgb(128, 64, 128),
    Color32::from_rgb(255, 204, 0),
    Color32::from_rgb(48, 255, 48),
    Color32::from_rgb(21, 101, 192),
];

/// Box, label and score, keypoints and their skeleton: a body's COCO
/// skeleton (points below the score floor and their bones left out), a
/// hand's 21-point skeleton coloured by finger, face landmarks' outlines.
pub fn draw_detection(painter: &egui::Painter, map: &ImageToScreen, d: &Detection, color: Color32) {
    let a = map.point([d.bbox[0], d.bbox[1]]);
    let b = map.point([d.bbox[2], d.bbox[3]]);
    let r = egui::Rect::from_min_max(Pos2::new(a[0], a[1]), Pos2::new(b[0], b[1]));
    painter.rect_stroke(r, 2.0, Stroke::new(2.0, color), egui::StrokeKind::Outside);
    let text = format!("{} {:.2}", d.label, d.score);
    let [tr, tg, tb] = text_colour_on([color.r(), color.g(), color.b()]);
    let text_colour = Color32::from_rgb(tr, tg, tb);
    let galley = painter.layout_no_wrap(text, egui::FontId::proportional(13.0), text_colour);
    let bg = egui::Rect::from_min_size(
        r.left_top() - egui::vec2(0.0, galley.size().y + 2.0),
        galley.size() + egui::vec2(6.0, 2.0),
    );
    painter.rect_filled(bg, 2.0, color);
    painter.galley(bg.left_top() + egui::vec2(3.0, 1.0), galley, text_colour);
    let n = d.keypoints.len();
    let pts: Vec<Pos2> = d
        .keypoints
        .iter()
        .map(|k| {
            let p = map.point([k[0], k[1]]);
            Pos2::new(p[0], p[1])
        })
        .collect();
    let hand = n == 21;
    for (i, j) in skeleton(n) {
        if keypoint_visible(n, &d.keypoints[i]) && keypoint_visible(n, &d.keypoints[j]) {
            let c = match hand.then(|| hand_finger((i, j))).flatten() {
                Some(f) => FINGER_COLOURS[f],
                None if hand => Color32::from_gray(235),
                None => color.gamma_multiply(0.8),
            };
            painter.line_segment([pts[i], pts[j]], Stroke::new(if hand { 2.0 } else { 1.5 }, c));
        }
    }
    for (p, k) in pts.iter().zip(&d.keypoints) {
        if keypoint_visible(n, k) {
            if hand {
                painter.circle(
                    *p,
                    2.5,
                    Color32::from_rgb(224, 32, 48),
                    Stroke::new(1.0, Color32::WHITE),
                );
            } else {
                painter.circle_filled(*p, 2.0, Color32::from_rgb(255, 255, 0));
            }
        }
    }
}

/// The files to open for `paths`: files as given, folders (one level) as
/// their images in name order. Runs on the opening thread.
fn list_images(paths: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if !p.is_dir() {
            files.push(p);
            continue;
        }
        match std::fs::read_dir(&p) {
            Ok(rd) => {
                let mut inner: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|f| is_image_name(f))
                    .collect();
                if inner.is_empty() {
                    errors.push(format!("{}: no images in this folder", p.display()));
                }
                inner.sort();
                files.extend(inner);
            }
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    (files, errors)
}

fn decode_for_display(path: &Path, limits: &DecodeLimits) -> crate::Result<Decoded> {
    let bytes = read_file_limited(path, limits)?;
    let img = decode_bytes(&path.display().to_string(), &bytes, limits)?;
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
