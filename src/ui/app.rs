//! The workbench window: panels over the engine. It sends commands and draws
//! events; it never loads weights, never decodes on this thread, and never
//! waits on a channel.

use eframe::egui;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use serde::{Deserialize, Serialize};
use tracing::Level;

use super::frame_history::FrameHistory;
use super::log_capture::LogBuffer;
use super::viewer::Viewer;
use super::{export, gpu_panel, latency_panel, log_panel, models_panel};
use crate::camera::SourceSpec;
use crate::client::{Client, LateWake};
use crate::client::{Event, ModelState, Snapshot};
use crate::telemetry::sampler::{Sampler, SamplerConfig};

/// Time the UI spends draining engine events per frame.
const EVENT_BUDGET: Duration = Duration::from_millis(4);
/// Width the central panel (Viewer / Live) keeps before side panels get any.
const MIN_CENTRAL: f32 = 520.0;
/// Narrowest a side panel gets before it steps aside.
const SIDE_MIN: f32 = 160.0;

pub struct AppOptions {
    /// The engine the panels steer: in this process or a server's.
    pub client: Client,
    /// Manifests the catalogue refused at discovery, shown at start (the
    /// models themselves come from the engine, through `client`).
    pub problems: Vec<String>,
    /// Images to open at start.
    pub open: Vec<PathBuf>,
    /// The viewer's model (default: the built-in face detector).
    pub model: Option<String>,
    pub telemetry: bool,
    pub log: LogBuffer,
    /// Start the Live panel on this source at start (`synthetic`, `webcam[:N]`, a folder).
    pub live: Option<SourceSpec>,
    /// Close the window after this long and print timing figures (tests, benchmarks).
    pub exit_after: Option<Duration>,
    /// Filled with the window's repaint once it exists; the client was started with it.
    pub wake: LateWake,
}

/// What persists between runs (window layout and sizes persist through egui).
#[derive(Serialize, Deserialize)]
#[serde(default)]
struct Layout {
    show_models: bool,
    show_side: bool,
    show_log: bool,
    side_tab: SideTab,
    central_tab: CentralTab,
    model: Option<String>,
    conf: Option<f32>,
    iou: Option<f32>,
    /// The Live panel's nail polish: on, colour (sRGB), hands smoothed.
    nails: Option<bool>,
    polish: Option<[u8; 3]>,
    smooth: Option<bool>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            show_models: true,
            show_side: true,
            show_log: true,
            side_tab: SideTab::Gpu,
            central_tab: CentralTab::Viewer,
            model: None,
            conf: None,
            iou: None,
            nails: None,
            polish: None,
            smooth: None,
        }
    }
}

#[derive(Serialize, Deserialize, PartialEq, Clone, Copy)]
enum CentralTab {
    Viewer,
    Live,
}

#[derive(Serialize, Deserialize, PartialEq, Clone, Copy)]
enum SideTab {
    Gpu,
    Latency,
}

enum Dialog {
    Open(Vec<PathBuf>),
    Export(Option<PathBuf>),
    Exported(crate::Result<usize>),
    /// A dropped checkpoint, imported (off the UI thread) into a model folder.
    Imported(crate::Result<Box<crate::catalog::registry::Entry>>),
}

pub struct ModeldockApp {
    pub engine: Client,
    snapshot: Snapshot,
    selected_model: Option<String>,
    pub viewer: Viewer,
    pub live: super::live_panel::LivePanel,
    wake: crate::client::WakeFn,
    telemetry: Option<Sampler>,
    log: LogBuffer,
    log_level: Level,
    frames: FrameHistory,
    pub errors: Vec<String>,
    layout: Layout,
    dialogs: (crossbeam_channel::Sender<Dialog>, Receiver<Dialog>),
    started: Instant,
    first_frame: Option<Duration>,
    exit_after: Option<Duration>,
    pending_open: Vec<PathBuf>,
    pending_live: Option<SourceSpec>,
    /// A dropped `.pt` checkpoint or `.onnx` model waiting for the user's yes or no.
    pub pending_import: Option<PathBuf>,
    /// Where imported checkpoints go (`None`: `<config>/models`).
    pub import_root: Option<PathBuf>,
    loading_frames: FrameHistory,
}

impl ModeldockApp {
    pub fn new(cc: &eframe::CreationContext<'_>, opts: AppOptions) -> Self {
        let started = *crate::PROCESS_START.get_or_init(Instant::now);
        let ctx = cc.egui_ctx.clone();
        let wake: crate::client::WakeFn = std::sync::Arc::new(move || ctx.request_repaint());
        let layout: Layout = cc
            .storage
            .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
            .unwrap_or_default();
        // The engine's catalogue, whichever door it is behind.
        let first = opts.client.snapshot();
        let status = |m: &str| first.models.iter().find(|s| s.id == m);
        let default_model = opts
            .model
            .clone()
            .or(layout.model.clone())
            .filter(|m| status(m).is_some())
            .or_else(|| status(crate::catalog::builtin::DEFAULT_MODEL).map(|s| s.id.clone()))
            .or_else(|| first.models.first().map(|s| s.id.clone()))
            .unwrap_or_default();
        let chosen = status(&default_model);
        let conf = layout.conf.or(chosen.and_then(|s| s.conf)).unwrap_or(0.5);
        let iou = layout.iou.or(chosen.and_then(|s| s.iou)).unwrap_or(0.45);
        let mut errors: Vec<String> = opts.problems.clone();
        opts.wake.set(wake.clone());
        let engine = opts.client;
        let telemetry = opts
            .telemetry
            .then(|| Sampler::start(SamplerConfig::default(), Some(wake.clone())));
        errors.retain(|e| !e.is_empty());
        let mut live = super::live_panel::LivePanel::default();
        if let Some(m) = opts.model.clone().filter(|_| opts.live.is_some()) {
            live.model = m;
        }
        // The hands + faces combo needs both models; otherwise Live starts on the viewer's model.
        if !live.model.split('+').all(|id| status(id).is_some()) {
            live.model = default_model.clone();
        }
        live.show_nails = layout.nails.unwrap_or(live.show_nails);
        live.smooth = layout.smooth.unwrap_or(live.smooth);
        if let Some([r, g, b]) = layout.polish {
            live.polish = egui::Color32::from_rgb(r, g, b);
        }
        ModeldockApp {
            snapshot: engine.snapshot(),
            engine,
            selected_model: Some(default_model.clone()),
            viewer: Viewer::new(default_model, conf, iou),
            live,
            wake,
            telemetry,
            log: opts.log,
            log_level: Level::INFO,
            frames: FrameHistory::default(),
            errors,
            layout,
            // Senders are background threads (dialogs, imports, exports).
            dialogs: bounded(16),
            started,
            first_frame: None,
            exit_after: opts.exit_after,
            pending_open: opts.open,
            pending_live: opts.live,
            pending_import: None,
            import_root: None,
            loading_frames: FrameHistory::default(),
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn drain_events(&mut self, ctx: &egui::Context) {
        let start = Instant::now();
        let mut changed = false;
        while start.elapsed() < EVENT_BUDGET {
            let Ok(ev) = self.engine.events().try_recv() else { break };
            match ev {
                Event::Changed => changed = true,
                Event::Answer(a) => {
                    if !self.viewer.on_answer(&a) {
                        if let Err(e) = a {
                            self.errors.push(e.error);
                        }
                    }
                }
                Event::LoadFailed { error, .. } => self.errors.push(error),
                Event::LoadProgress { .. } | Event::LoadStarted { .. } => changed = true,
                Event::Loaded { .. } | Event::Freed { .. } => changed = true,
            }
        }
        if !self.engine.events().is_empty() {
            ctx.request_repaint();
        }
        if changed {
            self.snapshot = self.engine.snapshot();
        }
    }

    fn poll_dialogs(&mut self, ctx: &egui::Context) {
        while let Ok(d) = self.dialogs.1.try_recv() {
            match d {
                Dialog::Open(paths) => self.viewer.open_paths(paths, ctx),
                Dialog::Export(Some(dir)) => self.export_to(dir),
                Dialog::Export(None) => {}
                Dialog::Exported(Ok(n)) => self.viewer.status = Some(format!("Exported {n} files")),
                Dialog::Exported(Err(e)) => self.errors.push(e.to_string()),
                Dialog::Imported(Ok(entry)) => {
                    let id = entry.manifest.id.clone();
                    match self.engine.register(*entry) {
                        Ok(()) => {
                            self.viewer.model = id.clone();
                            self.viewer.status = Some(format!("Imported {id}: drop an image to run it"));
                        }
                        Err(e) => self.errors.push(e.to_string()),
                    }
                }
                Dialog::Imported(Err(e)) => self.errors.push(e.to_string()),
            }
        }
    }

    pub fn open_dialog(&self) {
        let tx = self.dialogs.0.clone();
        std::thread::spawn(move || {
            let files = rfd::FileDialog::new()
                .add_filter("images", crate::vision::IMAGE_EXTENSIONS)
                .pick_files()
                .unwrap_or_default();
            let _ = tx.send(Dialog::Open(files));
        });
    }

    fn export_dialog(&self) {
        let tx = self.dialogs.0.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Dialog::Export(rfd::FileDialog::new().pick_folder()));
        });
    }

    /// Writes annotated PNGs and JSONs of every answered image into `dir`, off the UI thread.
    pub fn export_to(&mut self, dir: PathBuf) {
        let items: Vec<export::ExportItem> = self
            .viewer
            .images
            .iter()
            .filter_map(|i| {
                Some(export::ExportItem {
                    name: i.name.clone(),
                    bytes: i.bytes.clone(),
                    result: i.result.clone()?,
                    conf: self.viewer.conf,
                })
            })
            .collect();
        if items.is_empty() {
            self.errors.push("Export: no results to export yet".into());
            return;
        }
        self.viewer.status = Some(format!("Exporting {} images to {}…", items.len(), dir.display()));
        let tx = self.dialogs.0.clone();
        let style = self.viewer.mask_controls.style();
        std::thread::spawn(move || {
            let r = export::export_styled(&items, &dir, &style).map(|w| w.len());
            let _ = tx.send(Dialog::Exported(r));
        });
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        use egui::{Key, Modifiers};
        let (open, export, load, unload) = ctx.input_mut(|i| {
            (
                i.consume_key(Modifiers::COMMAND, Key::O),
                i.consume_key(Modifiers::COMMAND, Key::E),
                i.consume_key(Modifiers::COMMAND, Key::L),
                i.consume_key(Modifiers::COMMAND, Key::U),
            )
        });
        if open {
            self.open_dialog();
        }
        if export {
            self.export_dialog();
        }
        if let Some(m) = self.selected_model.clone() {
            if load {
                let _ = self.engine.load(&m);
            }
            if unload {
                let _ = self.engine.unload(&m);
            }
        }
    }

    fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        let (checkpoints, images): (Vec<PathBuf>, Vec<PathBuf>) = dropped
            .into_iter()
            .partition(|p| crate::import::pt::is_checkpoint_path(p) || crate::import::onnx::is_onnx_path(p));
        if let Some(p) = checkpoints.into_iter().next() {
            self.pending_import = Some(p);
        }
        if !images.is_empty() {
            self.viewer.open_paths(images, ctx);
        }
    }

    /// Where a dropped checkpoint becomes a model: `<config>/models/<id>/`
    /// (the folder the registry reads at start).
    fn import_dir(&self, pt: &std::path::Path) -> Option<PathBuf> {
        let stem = pt.file_stem()?.to_str()?;
        let root = match &self.import_root {
            Some(r) => r.clone(),
            None => directories::ProjectDirs::from("", "", "modeldock")?
                .config_dir()
                .join("models"),
        };
        Some(root.join(crate::import::pt::id_of(stem)))
    }

    /// Asks whether to import a dropped `.pt` or `.onnx`, and imports it off the UI thread.
    fn import_prompt(&mut self, ctx: &egui::Context) {
        let Some(pt) = self.pending_import.clone() else { return };
        let name = pt
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let target = self.import_dir(&pt);
        let mut answer = None;
        egui::Window::new("Import model")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| {
                ui.label(format!("Import {name} as a modeldock model?"));
                match &target {
                    Some(t) => ui.label(format!(
                        "It is read without running any code and written to {}.",
                        t.display()
                    )),
                    None => ui.label("There is no configuration folder to write it to."),
                };
                ui.horizontal(|ui| {
                    if ui.add_enabled(target.is_some(), egui::Button::new("Import")).clicked() {
                        answer = Some(true);
                    }
                    if ui.button("Cancel").clicked() {
                        answer = Some(false);
                    }
                });
            });
        match (answer, target) {
            (Some(true), Some(dir)) => {
                self.pending_import = None;
                self.viewer.status = Some(format!("Importing {name}…"));
                let tx = self.dialogs.0.clone();
                let ctx = ctx.clone();
                std::thread::spawn(move || {
                    let manifest = if crate::import::onnx::is_onnx_path(&pt) {
                        crate::import::onnx::store::import(&pt, &dir, None, None).map(|w| w.manifest)
                    } else {
                        crate::import::pt::import(&pt, &dir).map(|w| w.manifest_path)
                    };
                    let r = manifest
                        .and_then(|m| crate::catalog::registry::load_manifest_file(&m))
                        .map(Box::new);
                    let _ = tx.send(Dialog::Imported(r));
                    ctx.request_repaint();
                });
            }
            (Some(_), _) => self.pending_import = None,
            (None, _) => {}
        }
    }

    fn menu(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open… (Ctrl+O)").clicked() {
                    self.open_dialog();
                }
                if ui.button("Export… (Ctrl+E)").clicked() {
                    self.export_dialog();
                }
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                ui.checkbox(&mut self.layout.show_models, "Models");
                ui.checkbox(&mut self.layout.show_side, "GPU / Latency");
                ui.checkbox(&mut self.layout.show_log, "Log");
            });
            ui.menu_button("Model", |ui| {
                let sel = self.selected_model.clone().unwrap_or_default();
                if ui.button(format!("Load {sel} (Ctrl+L)")).clicked() {
                    let _ = self.engine.load(&sel);
                }
                if ui.button(format!("Unload {sel} (Ctrl+U)")).clicked() {
                    let _ = self.engine.unload(&sel);
                }
            });
        });
    }

    fn error_banner(&mut self, ui: &mut egui::Ui) {
        let mut dismiss = None;
        for (i, e) in self.errors.iter().enumerate() {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
                if ui.small_button("Dismiss").clicked() {
                    dismiss = Some(i);
                }
            });
        }
        if let Some(i) = dismiss {
            self.errors.remove(i);
        }
    }

    fn status_bar(&self, ui: &mut egui::Ui) {
        let s = &self.snapshot;
        let resident: Vec<&str> = s
            .models
            .iter()
            .filter(|m| m.state == ModelState::Resident)
            .map(|m| m.id.as_str())
            .collect();
        ui.horizontal(|ui| {
            ui.label(format!("Engine: {}", self.engine.location()));
            ui.separator();
            ui.label(format!("Device: {}", s.device));
            ui.separator();
            ui.label(format!(
                "Resident: {}",
                if resident.is_empty() {
                    "none".to_string()
                } else {
                    resident.join(", ")
                }
            ));
            ui.separator();
            ui.label(format!(
                "Budget: {} / {}",
                crate::units::human_bytes(s.used_bytes),
                crate::units::human_bytes(s.budget_bytes)
            ));
            ui.separator();
            ui.label(format!(
                "UI frame: {:.2} ms mean, {:.2} ms p99",
                self.frames.mean_ms(),
                self.frames.quantile_ms(0.99)
            ));
        });
    }

    fn report_and_maybe_exit(&mut self, ctx: &egui::Context) {
        let Some(limit) = self.exit_after else { return };
        let since_first = self
            .first_frame
            .map(|f| self.started.elapsed().saturating_sub(f))
            .unwrap_or_default();
        if since_first < limit {
            ctx.request_repaint_after(Duration::from_millis(100));
            return;
        }
        self.exit_after = None;
        let report = serde_json::json!({
            "first_frame_ms": self.first_frame.map(|d| d.as_secs_f64() * 1e3),
            "frames": self.frames.frames,
            "frame_p50_ms": self.frames.quantile_all_ms(0.5),
            "frame_p99_ms": self.frames.quantile_all_ms(0.99),
            "frames_during_load": self.loading_frames.frames,
            "frame_p99_during_load_ms": self.loading_frames.quantile_all_ms(0.99),
            "rss_mb": crate::telemetry::process::rss_bytes().map(|b| b as f64 / 1048576.0),
        });
        println!("modeldock-ui-report {report}");
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
    }

    /// The whole window (called by eframe each frame, and by tests).
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        let t0 = Instant::now();
        let ctx = ui.ctx().clone();
        if self.first_frame.is_none() {
            let d = self.started.elapsed();
            self.first_frame = Some(d);
            tracing::info!("ui: first frame {:.0} ms after start", d.as_secs_f64() * 1e3);
        }
        self.open_pending(&ctx);
        self.drain_events(&ctx);
        self.poll_dialogs(&ctx);
        self.import_prompt(&ctx);
        let errs = self.viewer.poll(&ctx, &self.engine);
        self.errors.extend(errs);
        self.dropped_files(&ctx);
        self.shortcuts(&ctx);
        let loading = self.snapshot.models.iter().any(|m| m.state == ModelState::Loading);
        if loading || self.snapshot.models.iter().any(|m| m.keep_alive_left_ms.is_some()) {
            ctx.request_repaint_after(Duration::from_millis(250));
        }

        egui::Panel::top("menu").show(ui, |ui| self.menu(ui));
        if !self.errors.is_empty() {
            egui::Panel::top("errors").show(ui, |ui| self.error_banner(ui));
        }
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        if self.layout.show_log {
            egui::Panel::bottom("log")
                .resizable(true)
                .default_size(140.0)
                .show(ui, |ui| {
                    log_panel::ui(ui, &self.log, &mut self.log_level);
                });
        }
        self.side_panels(ui);
        self.central_panel(ui);
        self.remember_layout();
        let ms = t0.elapsed().as_secs_f32() * 1e3;
        self.frames.record(ms);
        if loading {
            self.loading_frames.record(ms);
        }
        self.report_and_maybe_exit(&ctx);
    }

    /// Opens the paths and starts the live source asked for before this frame
    /// (command line, menu or drop).
    fn open_pending(&mut self, ctx: &egui::Context) {
        if !self.pending_open.is_empty() {
            let p = std::mem::take(&mut self.pending_open);
            self.viewer.open_paths(p, ctx);
        }
        if let Some(spec) = self.pending_live.take() {
            self.layout.central_tab = CentralTab::Live;
            self.live.choice = match spec {
                SourceSpec::Synthetic => super::live_panel::SourceChoice::Synthetic,
                SourceSpec::Webcam(i) => super::live_panel::SourceChoice::Webcam(i),
                SourceSpec::Folder(p) => {
                    self.live.folder = p.display().to_string();
                    super::live_panel::SourceChoice::Folder
                }
            };
            let model = self.live.model.clone();
            self.live.start(&self.engine, &model, Some(self.wake.clone()));
        }
    }

    /// The models panel on the left and the GPU / latency panel on the right.
    fn side_panels(&mut self, ui: &mut egui::Ui) {
        // The central panel keeps MIN_CENTRAL points; the side panels share the
        // rest, get narrower with the window, and step aside when it is too small.
        // Dragging a panel's edge past its minimum (or double-clicking it) collapses it.
        let spare = (ui.available_width() - MIN_CENTRAL).max(0.0);
        let models_fits = self.layout.show_models && spare >= SIDE_MIN;
        let side_fits = self.layout.show_side && spare >= SIDE_MIN * if models_fits { 2.0 } else { 1.0 };
        let mut open = models_fits;
        egui::Panel::left("models")
            .resizable(true)
            .default_size(480.0)
            .min_size(SIDE_MIN)
            .max_size(if side_fits { spare - SIDE_MIN } else { spare }.max(SIDE_MIN))
            .show_collapsible(ui, &mut open, |ui| {
                models_panel::ui(ui, &self.engine, &self.snapshot, &mut self.selected_model);
            });
        if open != models_fits {
            self.layout.show_models = open;
        }
        let mut open = side_fits;
        egui::Panel::right("side")
            .resizable(true)
            .default_size(320.0)
            .min_size(SIDE_MIN)
            .max_size((ui.available_width() - MIN_CENTRAL).max(SIDE_MIN))
            .show_collapsible(ui, &mut open, |ui| self.side_tabs(ui));
        if open != side_fits {
            self.layout.show_side = open;
        }
    }

    /// The right panel's contents: its tab bar, then GPU / system or latency.
    fn side_tabs(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.layout.side_tab, SideTab::Gpu, "GPU / System");
            ui.selectable_value(&mut self.layout.side_tab, SideTab::Latency, "Latency");
        });
        ui.separator();
        egui::ScrollArea::both().show(ui, |ui| match self.layout.side_tab {
            SideTab::Gpu => {
                if let Some(a) = self.engine.attached_server() {
                    gpu_panel::server_ui(ui, &a.server_name, a.client.base(), a.client.gpu_metrics());
                    ui.separator();
                }
                match &self.telemetry {
                    Some(t) => t.with(|snap| gpu_panel::ui(ui, snap)),
                    None => {
                        ui.label("Telemetry is off.");
                    }
                }
            }
            SideTab::Latency => latency_panel::ui(ui, &self.snapshot),
        });
    }

    /// The central panel: the Viewer / Live tab bar and the chosen tab.
    fn central_panel(&mut self, ui: &mut egui::Ui) {
        // Raw-tensor models on a server have no decoder: not offered for images.
        let ids: Vec<String> = self
            .snapshot
            .models
            .iter()
            .filter(|m| m.arch != crate::catalog::Arch::Raw)
            .map(|m| m.id.clone())
            .collect();
        egui::CentralPanel::default_margins().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.layout.central_tab, CentralTab::Viewer, "Viewer");
                ui.selectable_value(&mut self.layout.central_tab, CentralTab::Live, "Live");
            });
            ui.separator();
            match self.layout.central_tab {
                CentralTab::Viewer => {
                    self.viewer.model_makes_masks = self.makes_masks(std::slice::from_ref(&self.viewer.model));
                    self.viewer.model_takes_prompts = self
                        .snapshot
                        .models
                        .iter()
                        .any(|m| m.id == self.viewer.model && m.arch.takes_prompts());
                    self.viewer.ui(ui, &self.engine, &ids)
                }
                CentralTab::Live => {
                    self.live_model_picker(ui, &ids);
                    self.live.model_makes_masks = self.makes_masks(&crate::live::model_list(&self.live.model));
                    let model = self.live.model.clone();
                    self.live.follow_model(&self.snapshot, &model);
                    self.live.ui(ui, &self.engine, &model, Some(self.wake.clone()));
                }
            }
        });
    }

    /// Whether any of the models `ids` makes masks (its manifest's task).
    fn makes_masks(&self, ids: &[String]) -> bool {
        self.snapshot
            .models
            .iter()
            .any(|m| ids.contains(&m.id) && m.task.makes_masks())
    }

    /// The "Live model:" row: hands + faces together, or one of `ids`.
    fn live_model_picker(&mut self, ui: &mut egui::Ui, ids: &[String]) {
        ui.horizontal(|ui| {
            ui.label("Live model:");
            let combo = crate::catalog::builtin::DEFAULT_LIVE_MODEL;
            let shown = if self.live.model == combo {
                "hands + faces"
            } else {
                self.live.model.as_str()
            };
            egui::ComboBox::from_id_salt("live-model")
                .selected_text(shown.to_string())
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.live.model, combo.to_string(), "hands + faces")
                        .on_hover_text("Both models on every frame: nails on hands, glasses on faces");
                    for id in ids {
                        ui.selectable_value(&mut self.live.model, id.clone(), id);
                    }
                });
        });
    }

    /// Copies the viewer's and the live panel's settings into the saved layout.
    fn remember_layout(&mut self) {
        self.layout.model = Some(self.viewer.model.clone());
        self.layout.conf = Some(self.viewer.conf);
        self.layout.iou = Some(self.viewer.iou);
        self.layout.nails = Some(self.live.show_nails);
        self.layout.smooth = Some(self.live.smooth);
        let p = self.live.polish;
        self.layout.polish = Some([p.r(), p.g(), p.b()]);
    }
}

impl eframe::App for ModeldockApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.layout);
    }
}

impl Drop for ModeldockApp {
    fn drop(&mut self) {
        self.live.stop();
        self.engine.shutdown();
    }
}
