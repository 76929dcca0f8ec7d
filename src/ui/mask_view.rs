//! Masks in the Viewer and the Live panel: the controls (tint, blur the
//! background, replace it with a colour or a picked image; the threshold)
//! and the composited picture. Compositing (and, for a file, decoding) runs
//! on a background thread, one job at a time, the newest request next; the
//! UI thread only uploads the finished picture.

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use eframe::egui;
use image::RgbImage;

use crate::vision::decode::{decode_bytes, read_file_limited, DecodeLimits};
use crate::vision::mask_overlay::{composite, Background, MaskMode, MaskStyle};
use crate::vision::{Detection, Mask};

/// The accessible label of the threshold slider.
pub const THRESHOLD_LABEL: &str = "Mask threshold";

/// Largest side of a composited file (as the Viewer's textures).
const MAX_SIDE: u32 = 2048;

/// The mask modes as the controls offer them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChoice {
    Tint,
    Blur,
    Colour,
    Image,
}

impl ModeChoice {
    pub const ALL: [ModeChoice; 4] = [
        ModeChoice::Tint,
        ModeChoice::Blur,
        ModeChoice::Colour,
        ModeChoice::Image,
    ];

    /// The button's text (and accessible label).
    pub fn name(self) -> &'static str {
        match self {
            ModeChoice::Tint => "Tint masks",
            ModeChoice::Blur => "Blur background",
            ModeChoice::Colour => "Background colour",
            ModeChoice::Image => "Background image",
        }
    }
}

type Picked = Option<crate::Result<(String, RgbImage)>>;

/// What the user chose; `generation` changes with every choice.
pub struct MaskControls {
    pub choice: ModeChoice,
    pub threshold: f32,
    pub colour: egui::Color32,
    /// The picked background image and its file name.
    pub background: Option<(String, Arc<RgbImage>)>,
    picking: Option<Receiver<Picked>>,
    pub message: Option<String>,
    pub generation: u64,
    /// The choices `generation` was counted for.
    counted: (ModeChoice, f32, egui::Color32),
}

impl Default for MaskControls {
    fn default() -> Self {
        MaskControls {
            choice: ModeChoice::Tint,
            threshold: 0.5,
            colour: egui::Color32::from_rgb(0, 177, 64),
            background: None,
            picking: None,
            message: None,
            generation: 0,
            counted: (ModeChoice::Tint, 0.5, egui::Color32::from_rgb(0, 177, 64)),
        }
    }
}

impl MaskControls {
    /// The style to composite with (a colour until an image is picked).
    pub fn style(&self) -> MaskStyle {
        let c = self.colour;
        let colour = Background::Colour([c.r(), c.g(), c.b()]);
        let mode = match (self.choice, &self.background) {
            (ModeChoice::Tint, _) => MaskMode::Tint,
            (ModeChoice::Blur, _) => MaskMode::Blur,
            (ModeChoice::Image, Some((_, img))) => MaskMode::Replace(Background::Image(img.clone())),
            (ModeChoice::Colour | ModeChoice::Image, _) => MaskMode::Replace(colour),
        };
        MaskStyle {
            mode,
            threshold: self.threshold,
        }
    }

    /// The row of mask controls.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.poll_pick(ui.ctx());
        ui.horizontal_wrapped(|ui| {
            ui.label("Masks:");
            for c in ModeChoice::ALL {
                ui.selectable_value(&mut self.choice, c, c.name());
            }
            super::viewer::wrap_unless_fits(ui, super::viewer::slider_width(ui, THRESHOLD_LABEL));
            ui.add(egui::Slider::new(&mut self.threshold, 0.05..=0.95).text(THRESHOLD_LABEL))
                .on_hover_text("The probability from which a mask keeps a pixel");
            match self.choice {
                ModeChoice::Colour => {
                    ui.color_edit_button_srgba(&mut self.colour);
                }
                ModeChoice::Image => {
                    let busy = self.picking.is_some();
                    if ui.add_enabled(!busy, egui::Button::new("Pick image…")).clicked() {
                        self.pick(ui.ctx());
                    }
                    if let Some((name, _)) = &self.background {
                        ui.label(name);
                    }
                }
                _ => {}
            }
        });
        if let Some(m) = &self.message {
            ui.colored_label(ui.visuals().error_fg_color, m);
        }
        self.count_changes();
    }

    /// Bumps `generation` when a choice changed since it was last counted
    /// (here or by a caller that set a field).
    pub fn count_changes(&mut self) {
        let now = (self.choice, self.threshold, self.colour);
        if now != self.counted {
            self.counted = now;
            self.generation += 1;
        }
    }

    /// Opens the file dialog and reads the image on a background thread.
    fn pick(&mut self, ctx: &egui::Context) {
        let (tx, rx) = bounded(1);
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("mask-background".into())
            .spawn(move || {
                let picked = rfd::FileDialog::new()
                    .add_filter("Images", crate::vision::IMAGE_EXTENSIONS)
                    .pick_file()
                    .map(|p| read_background(&p));
                let _ = tx.send(picked);
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => self.picking = Some(rx),
            Err(e) => self.message = Some(format!("Background image: cannot start a thread: {e}")),
        }
    }

    fn poll_pick(&mut self, ctx: &egui::Context) {
        let Some(rx) = &self.picking else { return };
        match rx.try_recv() {
            Ok(picked) => {
                self.picking = None;
                match picked {
                    Some(Ok((name, img))) => self.set_background(name, img),
                    Some(Err(e)) => self.message = Some(e.to_string()),
                    None => {}
                }
            }
            Err(crossbeam_channel::TryRecvError::Empty) => {
                ctx.request_repaint_after(std::time::Duration::from_millis(200))
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => self.picking = None,
        }
    }

    /// Uses `img` as the background (chosen in the dialog, or by a caller).
    pub fn set_background(&mut self, name: String, img: RgbImage) {
        self.background = Some((name, Arc::new(img)));
        self.choice = ModeChoice::Image;
        self.message = None;
        self.generation += 1;
    }
}

fn read_background(path: &std::path::Path) -> crate::Result<(String, RgbImage)> {
    let limits = DecodeLimits::default();
    let name = path.display().to_string();
    let bytes = read_file_limited(path, &limits)?;
    let img = decode_bytes(&name, &bytes, &limits)?;
    let short = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(name);
    Ok((short, img))
}

/// The picture masks are drawn on.
#[derive(Clone)]
pub enum Picture {
    /// Pixels already decoded (a live frame).
    Pixels(Arc<RgbImage>),
    /// An encoded file, decoded (and shrunk for display) off the UI thread.
    File { name: String, bytes: Arc<Vec<u8>> },
}

/// One composite to make: `key` names the picture and its answer.
pub struct MaskJob {
    pub key: u64,
    pub generation: u64,
    pub picture: Picture,
    /// The image size the masks' coordinates refer to.
    pub size: [u32; 2],
    pub masks: Vec<Mask>,
    pub detections: Vec<Detection>,
    pub style: MaskStyle,
}

impl MaskJob {
    fn run(self) -> crate::Result<RgbImage> {
        let img = match self.picture {
            Picture::Pixels(p) => p,
            Picture::File { name, bytes } => {
                let img = decode_bytes(&name, &bytes, &DecodeLimits::default())?;
                let (w, h) = img.dimensions();
                let s = (MAX_SIDE as f32 / w.max(h) as f32).min(1.0);
                let (tw, th) = (((w as f32 * s) as u32).max(1), ((h as f32 * s) as u32).max(1));
                Arc::new(if s < 1.0 {
                    image::imageops::thumbnail(&img, tw, th)
                } else {
                    img
                })
            }
        };
        let fx = img.width() as f32 / self.size[0].max(1) as f32;
        let fy = img.height() as f32 / self.size[1].max(1) as f32;
        let masks: Vec<Mask> = self
            .masks
            .into_iter()
            .map(|mut m| {
                m.scale(fx, fy);
                m
            })
            .collect();
        Ok(composite(&img, &masks, &self.detections, &self.style))
    }
}

type Done = (u64, u64, crate::Result<RgbImage>);

/// The newest composite and the job that makes the next one.
pub struct MaskView {
    tx: Sender<Done>,
    rx: Receiver<Done>,
    busy: bool,
    next: Option<MaskJob>,
    /// The (key, generation) asked for last.
    asked: Option<(u64, u64)>,
    /// The finished composite: its (key, generation) and pixels.
    pub composite: Option<((u64, u64), Arc<RgbImage>)>,
    texture: Option<egui::TextureHandle>,
    pub error: Option<String>,
}

impl Default for MaskView {
    fn default() -> Self {
        let (tx, rx) = bounded(1);
        MaskView {
            tx,
            rx,
            busy: false,
            next: None,
            asked: None,
            composite: None,
            texture: None,
            error: None,
        }
    }
}

impl MaskView {
    /// Asks for `job`'s composite unless it is the one asked for last.
    pub fn want(&mut self, job: MaskJob, ctx: &egui::Context) {
        if self.asked == Some((job.key, job.generation)) {
            return;
        }
        self.asked = Some((job.key, job.generation));
        self.next = Some(job);
        self.start_next(ctx);
    }

    fn start_next(&mut self, ctx: &egui::Context) {
        if self.busy {
            return;
        }
        let Some(job) = self.next.take() else { return };
        let (tx, ctx2) = (self.tx.clone(), ctx.clone());
        let spawned = std::thread::Builder::new()
            .name("mask-composite".into())
            .spawn(move || {
                let (key, generation) = (job.key, job.generation);
                let _ = tx.send((key, generation, job.run()));
                ctx2.request_repaint();
            });
        match spawned {
            Ok(_) => self.busy = true,
            Err(e) => self.error = Some(format!("Masks: cannot start a thread: {e}")),
        }
    }

    /// Takes a finished composite, uploads it and starts the next job.
    pub fn poll(&mut self, ctx: &egui::Context) {
        while let Ok((key, generation, r)) = self.rx.try_recv() {
            self.busy = false;
            match r {
                Ok(img) => {
                    let size = [img.width() as usize, img.height() as usize];
                    let colour = egui::ColorImage::from_rgb(size, img.as_raw());
                    match &mut self.texture {
                        Some(t) => t.set(colour, egui::TextureOptions::LINEAR),
                        None => self.texture = Some(ctx.load_texture("masks", colour, egui::TextureOptions::LINEAR)),
                    }
                    self.composite = Some(((key, generation), Arc::new(img)));
                    self.error = None;
                }
                Err(e) => self.error = Some(e.to_string()),
            }
        }
        self.start_next(ctx);
        if self.busy {
            ctx.request_repaint_after(std::time::Duration::from_millis(30));
        }
    }

    /// The composite's texture when it shows picture `key` (`None`: any).
    pub fn texture(&self, key: Option<u64>) -> Option<egui::TextureId> {
        let ((k, _), _) = self.composite.as_ref()?;
        if key.is_some_and(|want| want != *k) {
            return None;
        }
        self.texture.as_ref().map(|t| t.id())
    }
}
