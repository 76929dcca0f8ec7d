//! Live panel: a camera (or folder, or synthetic) source through the live
//! pipeline, the newest frame with the newest result's overlay, and camera
//! FPS, inference FPS and end-to-end latency shown apart. AR on top: glasses
//! on faces with landmarks, polish on the nails of each detected hand (a
//! hands model: 21 landmarks per hand), hands smoothed over frames.

use eframe::egui;
use egui::{Color32, Pos2, Stroke};

use crate::camera::frame::Frame;
use crate::camera::source::SourceFactory;
use crate::camera::webcam::CameraInfo;
use crate::client::Client;
use crate::client::WakeFn;
use crate::live::{LiveOptions, LivePipeline};
use crate::vision::nails::{gloss_outline, nail_outline, nails, Nail};
use crate::vision::overlay::{glasses_pose, ImageToScreen};
use crate::vision::{Detection, InferParams};

use super::live_tracking::TrackingChoice;
use super::mask_view::{MaskControls, MaskJob, MaskView, Picture};

/// The polish a new panel starts with: a classic red.
pub const DEFAULT_POLISH: Color32 = Color32::from_rgb(196, 18, 48);

/// Swatches in the polish picker.
pub const POLISH_PRESETS: [(&str, Color32); 8] = [
    ("Classic red", DEFAULT_POLISH),
    ("Cherry", Color32::from_rgb(120, 8, 32)),
    ("Coral", Color32::from_rgb(246, 94, 76)),
    ("Pink", Color32::from_rgb(242, 120, 170)),
    ("Nude", Color32::from_rgb(222, 172, 150)),
    ("Lilac", Color32::from_rgb(168, 140, 214)),
    ("Navy", Color32::from_rgb(28, 40, 96)),
    ("Black", Color32::from_rgb(18, 18, 22)),
];

/// The accessible label of the polish colour button.
pub const POLISH_LABEL: &str = "Nail polish colour";

#[derive(Clone, PartialEq)]
pub enum SourceChoice {
    Synthetic,
    Folder,
    Webcam(u32),
}

pub struct LivePanel {
    /// The model (or `a+b` combo) Live runs on each frame.
    pub model: String,
    pub choice: SourceChoice,
    pub folder: String,
    pub fps: f32,
    pub mirror: bool,
    pub show_landmarks: bool,
    pub show_glasses: bool,
    /// Polish on the nails of each detected hand.
    pub show_nails: bool,
    /// The polish colour (opaque).
    pub polish: Color32,
    /// Draw hands smoothed over frames (`LiveResult::smoothed`) rather than as detected.
    pub smooth: bool,
    /// Show each result on the frame it was computed on (overlays line up;
    /// the picture lags by the inference time) instead of on the newest frame.
    pub in_sync: bool,
    pub pipeline: Option<LivePipeline>,
    cameras: Option<crate::Result<Vec<CameraInfo>>>,
    cameras_rx: Option<crossbeam_channel::Receiver<crate::Result<Vec<CameraInfo>>>>,
    texture: Option<(u64, egui::TextureHandle)>,
    pub message: Option<String>,
    /// A source being opened on a background thread.
    pub opening: Option<Opening>,
    /// Whether the Live model makes masks (its manifest's task; the app sets it).
    pub model_makes_masks: bool,
    pub mask_controls: MaskControls,
    pub masks: MaskView,
    /// Hand tracking's settings when the Live model has a hands model (its
    /// manifest's, until changed; [`LivePanel::follow_model`] keeps them).
    pub tracking: Option<TrackingChoice>,
}

/// A source being opened off the UI thread, and what to start once it is.
pub struct Opening {
    pub spec: String,
    rx: crossbeam_channel::Receiver<crate::Result<SourceFactory>>,
    engine: Client,
    options: LiveOptions,
    wake: Option<WakeFn>,
}

impl Default for LivePanel {
    fn default() -> Self {
        LivePanel {
            model: crate::catalog::builtin::DEFAULT_LIVE_MODEL.to_string(),
            choice: SourceChoice::Synthetic,
            folder: String::new(),
            fps: 30.0,
            mirror: false,
            show_landmarks: true,
            show_glasses: true,
            show_nails: true,
            polish: DEFAULT_POLISH,
            smooth: true,
            in_sync: true,
            pipeline: None,
            cameras: None,
            cameras_rx: None,
            texture: None,
            message: None,
            opening: None,
            model_makes_masks: false,
            mask_controls: MaskControls::default(),
            masks: MaskView::default(),
            tracking: None,
        }
    }
}

impl LivePanel {
    /// Follows the Live model `model`: the tracking row shows its hands
    /// model's manifest values, kept while that model stays selected.
    pub fn follow_model(&mut self, snapshot: &crate::client::Snapshot, model: &str) {
        self.tracking = TrackingChoice::follow(self.tracking.take(), snapshot, model);
    }

    /// Lists cameras on a background thread (it can take a while).
    fn poll_cameras(&mut self) {
        if self.cameras.is_none() && self.cameras_rx.is_none() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            std::thread::spawn(move || {
                let _ = tx.send(crate::camera::webcam::list());
            });
            self.cameras_rx = Some(rx);
        }
        if let Some(rx) = &self.cameras_rx {
            if let Ok(r) = rx.try_recv() {
                self.cameras = Some(r);
                self.cameras_rx = None;
            }
        }
    }

    /// Opens the chosen source on a background thread (listing cameras,
    /// reading a folder) and starts the pipeline when it is ready; see
    /// [`LivePanel::poll_opening`]. Never waits on the device here.
    pub fn start(&mut self, engine: &Client, model: &str, wake: Option<WakeFn>) {
        self.stop();
        let spec = match &self.choice {
            SourceChoice::Synthetic => "synthetic".to_string(),
            SourceChoice::Folder => self.folder.clone(),
            SourceChoice::Webcam(i) => format!("webcam:{i}"),
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let fps = self.fps as f64;
        let (thread_spec, thread_wake) = (spec.clone(), wake.clone());
        let spawned = std::thread::Builder::new().name("live-open".into()).spawn(move || {
            let r = crate::camera::open_source(&thread_spec, 640, 480, fps);
            // Nobody listening (Stop was pressed): the source is dropped here.
            let _ = tx.send(r);
            if let Some(w) = thread_wake {
                w();
            }
        });
        if let Err(e) = spawned {
            self.message = Some(format!("{spec}: cannot start a thread: {e} (press Start to retry)"));
            return;
        }
        self.message = Some(format!("opening {spec}…"));
        let models = crate::live::model_list(model);
        let snapshot = engine.snapshot();
        self.follow_model(&snapshot, model);
        let track = crate::live::hand_tracker::track_options(&snapshot, None, &models)
            .map(|o| self.tracking.as_ref().map_or(o, |t| t.apply(o)));
        self.opening = Some(Opening {
            spec,
            rx,
            engine: engine.clone(),
            options: LiveOptions {
                models,
                params: InferParams::default(),
                mirror: self.mirror,
                max_frames: None,
                headless: false,
                track,
            },
            wake,
        });
    }

    /// Starts the pipeline once the source is open, or shows why it is not.
    /// Returns true while a source is still being opened.
    pub fn poll_opening(&mut self) -> bool {
        let Some(o) = &self.opening else { return false };
        let r = match o.rx.try_recv() {
            Ok(r) => r,
            Err(crossbeam_channel::TryRecvError::Empty) => return true,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                Err(crate::Error::msg(format!("{}: the opening thread stopped", o.spec)))
            }
        };
        let Some(o) = self.opening.take() else { return false };
        match r {
            Ok(src) => {
                self.message = None;
                self.pipeline = Some(LivePipeline::start(o.engine, src, o.options, o.wake));
            }
            Err(e) => self.message = Some(format!("{e} (press Start to retry)")),
        }
        false
    }

    /// Stops the pipeline (its threads are joined on a background thread,
    /// since the capture thread may be waiting on the camera) or cancels an open.
    pub fn stop(&mut self) {
        if self.opening.take().is_some() {
            self.message = Some("stopped".into());
        }
        if let Some(p) = self.pipeline.take() {
            self.message = Some("stopped".into());
            let joined = std::thread::Builder::new()
                .name("live-stop".into())
                .spawn(move || drop(p));
            if let Err(e) = joined {
                tracing::warn!("live: cannot start a thread to stop the pipeline: {e}");
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, engine: &Client, model: &str, wake: Option<WakeFn>) {
        self.poll_cameras();
        if self.poll_opening() {
            // The opening thread wakes the UI when it is done; this is a fallback.
            ui.ctx().request_repaint_after(std::time::Duration::from_millis(200));
        }
        self.controls_ui(ui, engine, model, wake);
        if let Some(t) = &mut self.tracking {
            t.ui(ui);
        }
        let result_masks = self
            .pipeline
            .as_ref()
            .and_then(|p| p.latest_result())
            .is_some_and(|r| !r.masks.is_empty());
        if self.model_makes_masks || result_masks {
            self.mask_controls.ui(ui);
        }
        if let Some(m) = &self.message {
            ui.horizontal(|ui| {
                if self.opening.is_some() {
                    ui.spinner();
                }
                ui.label(m);
            });
        }
        if self.opening.is_some() {
            return;
        }
        let Some(p) = &self.pipeline else {
            ui.label(format!("Model: {model}. Press Start to run it on the live source."));
            return;
        };
        ui.label(p.status());
        let s = p.summary();
        ui.label(format!(
            "camera {:.1} fps | inference {:.1} fps | end-to-end {:.0} ms (avg) | dropped {}",
            s.camera_fps, s.inference_fps, s.e2e_latency_avg_ms, s.frames_dropped
        ));
        let Some(frame) = p.latest_frame() else {
            ui.spinner();
            return;
        };
        let result = p.latest_result();
        if let Some(r) = &result {
            ui.label(format!(
                "detections: {} (result from frame {}, {} frames / {:.0} ms old)",
                r.detections.len(),
                r.frame_id,
                frame.id.saturating_sub(r.frame_id),
                frame.captured.saturating_duration_since(r.captured).as_secs_f64() * 1e3
            ));
        }
        let frame = match (&result, self.in_sync) {
            (Some(r), true) => r.frame.clone(),
            _ => frame,
        };
        upload_frame(&mut self.texture, ui.ctx(), &frame);
        let Some((_, tex)) = &self.texture else { return };
        let mut tex = tex.id();
        if let Some(r) = result.as_ref().filter(|r| !r.masks.is_empty()) {
            let job = MaskJob {
                key: r.frame_id,
                generation: self.mask_controls.generation,
                picture: Picture::Pixels(r.frame.image.clone()),
                size: r.image_size,
                masks: r.masks.clone(),
                detections: r.detections.clone(),
                style: self.mask_controls.style(),
            };
            self.masks.want(job, ui.ctx());
            self.masks.poll(ui.ctx());
            // The result's frame with its masks (a frame behind while the next is composited).
            if let Some(t) = self.masks.texture(None) {
                tex = t;
            }
        }
        let (rect, _) = ui.allocate_exact_size(ui.available_size(), egui::Sense::hover());
        let size = [frame.image.width() as f32, frame.image.height() as f32];
        let map = ImageToScreen::fit(size, [rect.left(), rect.top(), rect.width(), rect.height()]);
        let a = map.point([0.0, 0.0]);
        let b = map.point(size);
        let painter = ui.painter_at(rect);
        painter.image(
            tex,
            egui::Rect::from_min_max(Pos2::new(a[0], a[1]), Pos2::new(b[0], b[1])),
            egui::Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
        if let Some(r) = &result {
            let dets = if self.smooth { &r.smoothed } else { &r.detections };
            self.draw_overlay(&painter, &map, dets);
            p.mark_shown(r);
        }
        ui.ctx().request_repaint();
    }

    /// The row above the picture: Start / Stop, Snapshot, the source picker,
    /// FPS and the overlay switches.
    fn controls_ui(&mut self, ui: &mut egui::Ui, engine: &Client, model: &str, wake: Option<WakeFn>) {
        ui.horizontal_wrapped(|ui| {
            if self.pipeline.is_some() || self.opening.is_some() {
                if ui.button("Stop").clicked() {
                    self.stop();
                }
            } else if ui.button("Start").clicked() {
                self.start(engine, model, wake.clone());
            }
            if ui.button("Snapshot").clicked() {
                self.snapshot();
            }
            self.source_picker(ui);
            super::viewer::wrap_unless_fits(ui, super::viewer::slider_width(ui, "FPS"));
            ui.add(egui::Slider::new(&mut self.fps, 1.0..=60.0).text("FPS"));
            ui.checkbox(&mut self.mirror, "Mirror");
            ui.checkbox(&mut self.show_landmarks, "Landmarks");
            ui.checkbox(&mut self.show_glasses, "Glasses");
            ui.checkbox(&mut self.show_nails, "Nails")
                .on_hover_text("Polish on the nails of each hand (needs a hands model)");
            self.polish_button(ui);
            ui.checkbox(&mut self.smooth, "Smooth")
                .on_hover_text("Smooth hand landmarks over frames (One Euro filter)");
            ui.checkbox(&mut self.in_sync, "In sync").on_hover_text(
                "Show each result on the frame it was computed on: overlays line up, \
                 the picture lags by the inference time. Off: the newest frame, with the newest result",
            );
        });
    }

    /// The Source combo box (synthetic, folder or one of the cameras found),
    /// and the folder's path box when the folder is chosen.
    fn source_picker(&mut self, ui: &mut egui::Ui) {
        let label = match &self.choice {
            SourceChoice::Synthetic => "Synthetic".to_string(),
            SourceChoice::Folder => "Folder".to_string(),
            SourceChoice::Webcam(i) => format!("Webcam {i}"),
        };
        egui::ComboBox::from_label("Source")
            .selected_text(label)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut self.choice, SourceChoice::Synthetic, "Synthetic");
                ui.selectable_value(&mut self.choice, SourceChoice::Folder, "Folder");
                match &self.cameras {
                    Some(Ok(cams)) => {
                        for c in cams {
                            ui.selectable_value(
                                &mut self.choice,
                                SourceChoice::Webcam(c.index),
                                format!("Webcam {} — {}", c.index, c.name),
                            );
                        }
                        if cams.is_empty() {
                            ui.label("No cameras found");
                        }
                    }
                    Some(Err(e)) => {
                        ui.label(format!("Cameras: {e}"));
                    }
                    None => {
                        ui.label("Looking for cameras…");
                    }
                }
            });
        if self.choice == SourceChoice::Folder {
            ui.add(
                egui::TextEdit::singleline(&mut self.folder)
                    .hint_text("folder of images")
                    .desired_width(180.0),
            );
        }
    }

    /// The polish colour button, named [`POLISH_LABEL`] for screen readers
    /// and tests. A click opens the picker: polish swatches and hue,
    /// saturation and brightness sliders. (egui's own picker has a 📋 button
    /// that the bundled fonts cannot draw.)
    fn polish_button(&mut self, ui: &mut egui::Ui) {
        let hex = |c: Color32| format!("#{:02x}{:02x}{:02x}", c.r(), c.g(), c.b());
        let c = self.polish;
        let button = ui
            .add(egui::Button::new("").fill(c).min_size(egui::vec2(
                ui.spacing().interact_size.x * 0.8,
                ui.spacing().interact_size.y,
            )))
            .on_hover_text(POLISH_LABEL);
        button.widget_info(|| {
            let mut info = egui::WidgetInfo::labeled(egui::Role::ColorWell, true, POLISH_LABEL);
            info.current_text_value = Some(hex(c));
            info
        });
        egui::Popup::menu(&button)
            .id(ui.make_persistent_id("polish-picker"))
            .close_behavior(egui::PopupCloseBehavior::CloseOnClickOutside)
            .show(|ui| {
                ui.label("Nail polish");
                ui.horizontal_wrapped(|ui| {
                    for (name, colour) in POLISH_PRESETS {
                        let size = egui::vec2(ui.spacing().interact_size.y * 1.4, ui.spacing().interact_size.y);
                        let r = ui
                            .add(
                                egui::Button::new("")
                                    .fill(colour)
                                    .min_size(size)
                                    .selected(self.polish == colour),
                            )
                            .on_hover_text(name);
                        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, name));
                        if r.clicked() {
                            self.polish = colour;
                        }
                    }
                });
                let mut hsva = egui::ecolor::Hsva::from(self.polish);
                let mut changed = false;
                changed |= ui.add(egui::Slider::new(&mut hsva.h, 0.0..=1.0).text("Hue")).changed();
                changed |= ui
                    .add(egui::Slider::new(&mut hsva.s, 0.0..=1.0).text("Saturation"))
                    .changed();
                changed |= ui
                    .add(egui::Slider::new(&mut hsva.v, 0.0..=1.0).text("Brightness"))
                    .changed();
                if changed {
                    hsva.a = 1.0;
                    self.polish = Color32::from(hsva);
                }
            });
    }

    /// Boxes, labels, landmarks, glasses and nails of `detections` (image
    /// pixels) over an image drawn through `map`, as the panel's toggles say.
    pub fn draw_overlay(&self, painter: &egui::Painter, map: &ImageToScreen, detections: &[Detection]) {
        for d in detections {
            let mut shown = d.clone();
            if !self.show_landmarks {
                shown.keypoints.clear();
            }
            super::viewer::draw_detection(painter, map, &shown, super::viewer::detection_colour(d));
            if self.show_glasses {
                if let Some(g) = glasses_pose(&d.keypoints) {
                    draw_glasses(painter, map, &g);
                }
            }
            if self.show_nails {
                for n in nails(&d.keypoints).iter().filter(|n| !n.occluded) {
                    draw_nail(painter, map, n, self.polish);
                }
            }
        }
    }

    /// Saves the newest frame with its overlay as a PNG in the pictures folder.
    fn snapshot(&mut self) {
        let Some(p) = &self.pipeline else {
            self.message = Some("Snapshot: start a source first".into());
            return;
        };
        let (Some(frame), result) = (p.latest_frame(), p.latest_result()) else {
            return;
        };
        let dir = directories::UserDirs::new()
            .and_then(|u| u.picture_dir().map(|d| d.to_path_buf()))
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("modeldock-live-{}.png", frame.id));
        let mut img = (*frame.image).clone();
        if let Some(r) = result {
            for d in &r.detections {
                super::export::annotate_detection(&mut img, d);
            }
        }
        self.message = Some(match img.save(&path) {
            Ok(()) => format!("Saved {}", path.display()),
            Err(e) => format!("Snapshot: {}: {e}", path.display()),
        });
    }
}

/// One nail: the outline filled with `polish`, edged a little darker, and a
/// gloss highlight (a lighter, smaller ellipse toward the tip).
pub fn draw_nail(painter: &egui::Painter, map: &ImageToScreen, n: &Nail, polish: Color32) {
    let to_screen = |p: [f32; 2]| {
        let q = map.point(p);
        Pos2::new(q[0], q[1])
    };
    let outline: Vec<Pos2> = nail_outline(n, 32).into_iter().map(to_screen).collect();
    let edge = Stroke::new(
        (0.06 * n.width * map.scale).clamp(0.5, 2.0),
        Color32::from_rgb(
            (polish.r() as f32 * 0.55) as u8,
            (polish.g() as f32 * 0.55) as u8,
            (polish.b() as f32 * 0.55) as u8,
        ),
    );
    painter.add(egui::Shape::convex_polygon(outline, polish, edge));
    let gloss: Vec<Pos2> = gloss_outline(n, 20).into_iter().map(to_screen).collect();
    let light = polish.lerp_to_gamma(Color32::WHITE, 0.7);
    painter.add(egui::Shape::convex_polygon(
        gloss,
        Color32::from_rgba_unmultiplied(light.r(), light.g(), light.b(), 170),
        Stroke::NONE,
    ));
}

/// Glasses anchored on the eye corners: two lenses, a bridge and temples,
/// scaled by the eye distance and rotated with the eye line.
pub fn draw_glasses(painter: &egui::Painter, map: &ImageToScreen, g: &crate::vision::overlay::GlassesPose) {
    let (c, s) = (g.angle.cos(), g.angle.sin());
    let d = g.eye_distance;
    let at = |u: f32, v: f32| {
        let p = map.point([g.centre[0] + c * u * d - s * v * d, g.centre[1] + s * u * d + c * v * d]);
        Pos2::new(p[0], p[1])
    };
    let stroke = Stroke::new((0.06 * d * map.scale).max(1.5), Color32::from_rgb(20, 20, 28));
    for side in [-1.0f32, 1.0] {
        let pts: Vec<Pos2> = (0..=32)
            .map(|k| {
                let t = k as f32 / 32.0 * std::f32::consts::TAU;
                at(side * 0.27 + 0.2 * t.cos(), 0.03 + 0.15 * t.sin())
            })
            .collect();
        painter.add(egui::Shape::convex_polygon(
            pts.clone(),
            Color32::from_rgba_unmultiplied(40, 60, 90, 90),
            Stroke::NONE,
        ));
        painter.add(egui::Shape::closed_line(pts, stroke));
        painter.line_segment([at(side * 0.47, 0.0), at(side * 0.62, -0.05)], stroke);
    }
    painter.line_segment([at(-0.07, -0.02), at(0.07, -0.02)], stroke);
}

/// Uploads `frame` to the panel's texture unless that frame is already on it.
fn upload_frame(texture: &mut Option<(u64, egui::TextureHandle)>, ctx: &egui::Context, frame: &Frame) {
    let need_upload = texture.as_ref().is_none_or(|(id, _)| *id != frame.id);
    if need_upload {
        let img = egui::ColorImage::from_rgb(
            [frame.image.width() as usize, frame.image.height() as usize],
            frame.image.as_raw(),
        );
        match texture {
            Some((id, t)) => {
                t.set(img, egui::TextureOptions::LINEAR);
                *id = frame.id;
            }
            None => *texture = Some((frame.id, ctx.load_texture("live", img, egui::TextureOptions::LINEAR))),
        }
    }
}
