//! The desktop app driven headless with egui_kittest, by accessible labels.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::app::step_until;
use common::*;
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use modeldock::catalog::registry::Registry;
use modeldock::client::{Client, LateWake};
use modeldock::engine::{Engine, ModelState};
use modeldock::ui::app::{AppOptions, ModeldockApp};
use modeldock::ui::log_capture::LogBuffer;

#[derive(Debug)]
struct DroppedPath(PathBuf);

impl egui::DroppedFile for DroppedPath {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn only(reg: Registry, ids: &[&str]) -> Registry {
    Registry {
        entries: reg
            .entries
            .into_iter()
            .filter(|e| ids.contains(&e.manifest.id.as_str()))
            .collect(),
        problems: Vec::new(),
    }
}

fn harness(registry: Registry, model: &str) -> Harness<'static, ModeldockApp> {
    harness_sized(registry, model, egui::vec2(1400.0, 900.0))
}

fn harness_sized(registry: Registry, model: &str, size: egui::Vec2) -> Harness<'static, ModeldockApp> {
    harness_with(registry, model, size, config())
}

fn harness_with(
    registry: Registry,
    model: &str,
    size: egui::Vec2,
    cfg: modeldock::engine::EngineConfig,
) -> Harness<'static, ModeldockApp> {
    let model = model.to_string();
    Harness::builder().with_size(size).build_eframe(move |cc| {
        let wake = LateWake::default();
        let engine = Engine::start(registry.clone(), cfg.clone(), Some(wake.as_wake()));
        ModeldockApp::new(
            cc,
            AppOptions {
                client: Client::local(engine),
                wake,
                problems: registry.problems.clone(),
                open: Vec::new(),
                model: Some(model),
                telemetry: false,
                log: LogBuffer::default(),
                live: None,
                exit_after: None,
            },
        )
    })
}

fn has_label_containing(h: &Harness<'static, ModeldockApp>, s: &str) -> bool {
    h.query_by_label_contains(s).is_some()
}

#[test]
fn load_shows_progress_then_resident_and_unload_makes_it_available() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    modeldock::models::toy::write_toy_model(dir.path(), "slowtoy", 2 << 20, "", &[("slow_load_ms", 1500.0)])
        .unwrap_or_else(|e| panic!("{e}"));
    let reg = Registry::discover(&[dir.path().to_path_buf()]);
    let mut h = harness(only(reg, &["slowtoy"]), "slowtoy");
    h.step();
    assert!(h.query_by_label("Available").is_some());
    h.get_by_label("Load").click();
    step_until(&mut h, "a progress bar", |h| {
        h.query_by_role(egui::accesskit::Role::ProgressIndicator).is_some() && has_label_containing(h, "Loading")
    });
    step_until(&mut h, "the row to read Resident", |h| {
        h.query_by_label("Resident").is_some()
    });
    assert!(
        h.query_by_label_contains("Loading").is_none(),
        "the progress bar is gone"
    );
    assert_eq!(h.state().snapshot().models[0].state, ModelState::Resident);
    h.get_by_label("Unload").click();
    step_until(&mut h, "the row to read Available", |h| {
        h.query_by_label("Available").is_some()
    });
    assert_eq!(h.state().snapshot().models[0].state, ModelState::Available);
}

#[test]
fn a_dropped_image_shows_the_same_results_as_the_cli() {
    let mut h = harness(only(Registry::discover(&[]), &["face-detector"]), "face-detector");
    h.step();
    let img = fixture("images/astronaut.png");
    h.input_mut().dropped_files.push(Arc::new(DroppedPath(img.clone())));
    step_until(&mut h, "results for the dropped image", |h| {
        has_label_containing(h, "detections")
    });
    // What the CLI says for the same image.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .args(["infer", "--model", "face-detector", "--json"])
        .arg(&img)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let n = v["detections"].as_array().map(|a| a.len()).unwrap_or(usize::MAX);
    assert!(n >= 1);
    assert!(
        h.query_by_label(&format!("astronaut.png: {n} detections")).is_some(),
        "the viewer shows {n} detections"
    );
    let shown = h.state().viewer.images[0]
        .result
        .as_ref()
        .map(|r| h.state().viewer.visible(r).len());
    assert_eq!(shown, Some(n), "overlays drawn for each detection");
}

#[test]
fn a_dropped_text_file_shows_an_error_naming_it_and_the_app_keeps_working() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let notes = dir.path().join("shopping-list.txt");
    std::fs::write(&notes, "eggs\nmilk\n").unwrap_or_else(|e| panic!("{e}"));
    let mut h = harness(only(Registry::discover(&[]), &["face-detector"]), "face-detector");
    h.step();
    h.input_mut().dropped_files.push(Arc::new(DroppedPath(notes)));
    step_until(&mut h, "an error message", |h| {
        has_label_containing(h, "shopping-list.txt")
    });
    let e = h.state().errors.join(" | ");
    assert!(e.contains("shopping-list.txt") && e.contains("not an image"), "{e}");
    h.get_by_label("Dismiss").click();
    step_until(&mut h, "the error to go", |h| {
        !has_label_containing(h, "shopping-list.txt")
    });
    h.input_mut()
        .dropped_files
        .push(Arc::new(DroppedPath(fixture("images/camera.png"))));
    step_until(&mut h, "results after the error", |h| {
        has_label_containing(h, "camera.png: 1 detections")
    });
}

#[test]
fn the_live_panel_runs_the_synthetic_source_with_overlays_and_stops() {
    let mut h = harness(only(Registry::discover(&[]), &["face-landmarks"]), "face-landmarks");
    h.step();
    h.get_by_label("Live").click();
    step_until(&mut h, "the Start button", |h| h.query_by_label("Start").is_some());
    h.get_by_label("Start").click();
    step_until(&mut h, "a live result with a face", |h| {
        has_label_containing(h, "detections: 1")
    });
    assert!(has_label_containing(&h, "camera "), "camera fps shown");
    let r = h
        .state()
        .live
        .pipeline
        .as_ref()
        .and_then(|p| p.latest_result())
        .unwrap_or_else(|| panic!("a result"));
    assert_eq!(
        r.detections[0].keypoints.len(),
        68,
        "landmarks for the overlay and the glasses"
    );
    h.get_by_label("Stop").click();
    step_until(&mut h, "the pipeline to stop", |h| {
        h.query_by_label("stopped").is_some()
    });
    assert!(h.state().live.pipeline.is_none());
}

#[test]
fn export_writes_annotated_pngs_and_the_cli_json() {
    let engine = modeldock::engine::Engine::start(only(Registry::discover(&[]), &["face-landmarks"]), config(), None);
    let bytes = std::fs::read(fixture("images/astronaut.png")).unwrap_or_else(|e| panic!("{e}"));
    let r = engine
        .infer_wait(
            "face-landmarks",
            modeldock::engine::ImageInput::Bytes {
                name: "astronaut.png".into(),
                bytes: Arc::new(bytes.clone()),
            },
            Default::default(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    engine.shutdown();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let items = vec![modeldock::ui::export::ExportItem {
        name: "astronaut.png".into(),
        bytes: Arc::new(bytes),
        result: r.clone(),
        conf: 0.5,
    }];
    let written = modeldock::ui::export::export(&items, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written.len(), 2);
    let json = std::fs::read_to_string(dir.path().join("astronaut.json")).unwrap_or_default();
    assert_eq!(json, r.to_json().to_string(), "the CLI's JSON");
    let png = image::open(dir.path().join("astronaut.annotated.png"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_rgb8();
    let orig = image::open(fixture("images/astronaut.png"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_rgb8();
    let b = r.output.detections[0].bbox;
    let (x, y) = (b[0].round() as u32, ((b[1] + b[3]) / 2.0).round() as u32);
    assert_eq!(png.get_pixel(x, y).0, [255, 64, 64], "the box is drawn");
    assert_ne!(png.get_pixel(x, y), orig.get_pixel(x, y));
}

#[test]
fn ctrl_l_and_ctrl_u_load_and_unload_the_selected_model() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "keytoy", &[]);
    let reg = Registry::discover(&[dir.path().to_path_buf()]);
    let mut h = harness(only(reg, &["keytoy"]), "keytoy");
    h.step();
    h.get_by_label("Toy keytoy").click();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::L);
    step_until(&mut h, "Ctrl+L to load it", |h| h.query_by_label("Resident").is_some());
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::U);
    step_until(&mut h, "Ctrl+U to unload it", |h| {
        h.query_by_label("Available").is_some()
    });
}

// ---------------------------------------------------------------------------
// Viewer: fit, 1:1, zoom and pan; side panels give way; no disk on the UI thread.

/// The default window size of the app.
const WINDOW: egui::Vec2 = egui::vec2(1280.0, 800.0);

/// Where the selected image was painted last frame (read from the painted
/// shapes, not from the viewer's own bookkeeping) and the clip rect it was painted with.
fn painted_image(h: &Harness<'static, ModeldockApp>) -> Option<(egui::Rect, egui::Rect)> {
    let v = &h.state().viewer;
    let tex = v.images.get(v.selected)?.texture.id();
    h.output().shapes.iter().find_map(|c| match &c.shape {
        egui::Shape::Mesh(m) if m.texture_id == tex => Some((m.calc_bounds(), c.clip_rect)),
        _ => None,
    })
}

/// Box outlines of the detections painted over the image (2-point strokes clipped to the image view).
fn painted_boxes(h: &Harness<'static, ModeldockApp>, clip: egui::Rect) -> Vec<egui::Rect> {
    h.output()
        .shapes
        .iter()
        .filter(|c| c.clip_rect == clip)
        .filter_map(|c| match &c.shape {
            egui::Shape::Rect(r) if r.stroke.width == 2.0 => Some(r.rect),
            _ => None,
        })
        .collect()
}

fn write_png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let path = dir.join(name);
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]))
        .save(&path)
        .unwrap_or_else(|e| panic!("{e}"));
    path
}

/// A viewer at the default window size with `img` dropped on it and shown.
fn viewer_with(img: PathBuf) -> Harness<'static, ModeldockApp> {
    let mut h = harness_sized(
        only(Registry::discover(&[]), &["face-detector"]),
        "face-detector",
        WINDOW,
    );
    h.step();
    h.input_mut().dropped_files.push(Arc::new(DroppedPath(img)));
    step_until(&mut h, "the image to be shown", |h| painted_image(h).is_some());
    h.step();
    h
}

fn near(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol
}

fn assert_rect_near(a: egui::Rect, b: egui::Rect, tol: f32, what: &str) {
    assert!(
        near(a.min.x, b.min.x, tol)
            && near(a.min.y, b.min.y, tol)
            && near(a.max.x, b.max.x, tol)
            && near(a.max.y, b.max.y, tol),
        "{what}: {a:?} != {b:?}"
    );
}

#[test]
fn at_1280x800_a_wide_and_a_tall_image_are_fitted_inside_the_viewer_panel() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (name, w, hgt) in [("wide.png", 2400, 600), ("tall.png", 500, 2000)] {
        let mut h = viewer_with(write_png(dir.path(), name, w, hgt));
        let (img, clip) = painted_image(&h).unwrap_or_else(|| panic!("{name} painted"));
        // The panel around it, from widgets the user sees: the Viewer tab on the
        // left, the side panel's first tab on the right, the window's bottom.
        let viewer_tab = h.get_by_label("Viewer").rect();
        let side_tab = h.get_by_label("GPU / System").rect();
        let eps = 0.5;
        assert!(
            clip.contains_rect(img.shrink(eps)),
            "{name}: the whole image is visible: {img:?} in {clip:?}"
        );
        assert!(
            img.left() >= viewer_tab.left() - eps,
            "{name}: {img:?} starts left of the panel"
        );
        assert!(
            img.right() <= side_tab.left(),
            "{name}: {img:?} runs under the side panel at {side_tab:?}"
        );
        assert!(
            img.top() >= viewer_tab.bottom(),
            "{name}: {img:?} above the panel's content"
        );
        assert!(img.bottom() <= WINDOW.y, "{name}: {img:?} below the window");
        // Fitted: aspect kept, and as large as the panel allows along one side.
        assert!(
            near(img.width() / img.height(), w as f32 / hgt as f32, 0.02),
            "{name}: aspect {img:?}"
        );
        let fills_w = near(img.width(), clip.width(), 1.0);
        let fills_h = near(img.height(), clip.height(), 1.0);
        assert!(fills_w || fills_h, "{name}: {img:?} fills {clip:?} along one side");
        assert!(
            if w > hgt { fills_w } else { fills_h },
            "{name}: {img:?} limited by its long side in {clip:?}"
        );
        // Nor do the controls above it run under the side panel.
        let iou = h.query_all_by_label("IoU").map(|n| n.rect()).collect::<Vec<_>>();
        assert!(!iou.is_empty(), "the IoU slider is shown");
        for r in iou {
            assert!(
                r.right() <= side_tab.left(),
                "{name}: the IoU slider {r:?} runs under the side panel"
            );
        }
        // The central panel keeps room: at 1280 wide it is not squeezed by the side panels.
        assert!(
            clip.width() >= 480.0,
            "{name}: the image area is only {} wide",
            clip.width()
        );
        h.step();
    }
}

#[test]
fn side_panels_give_way_to_the_viewer_in_a_small_window() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let img = write_png(dir.path(), "square.png", 600, 600);
    for width in [1000.0, 760.0] {
        let mut h = harness_sized(
            only(Registry::discover(&[]), &["face-detector"]),
            "face-detector",
            egui::vec2(width, 700.0),
        );
        h.step();
        h.input_mut().dropped_files.push(Arc::new(DroppedPath(img.clone())));
        step_until(&mut h, "the image to be shown", |h| painted_image(h).is_some());
        // Let a side panel that steps aside finish its slide.
        for _ in 0..30 {
            h.step();
        }
        let (img_rect, clip) = painted_image(&h).unwrap_or_else(|| panic!("painted"));
        assert!(
            clip.width() >= 480.0,
            "window {width}: the image area is only {} wide",
            clip.width()
        );
        assert!(clip.right() <= width, "window {width}: {clip:?}");
        assert!(
            clip.contains_rect(img_rect.shrink(0.5)),
            "window {width}: {img_rect:?} in {clip:?}"
        );
    }
}

#[test]
fn one_to_one_shows_the_image_at_native_size_and_fit_returns() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut h = viewer_with(write_png(dir.path(), "big.png", 900, 700));
    let (fitted, clip) = painted_image(&h).unwrap_or_else(|| panic!("painted"));
    assert!(fitted.width() < 900.0, "fitted, not native: {fitted:?}");
    h.get_by_label("1:1").click();
    h.step();
    h.step();
    let (native, _) = painted_image(&h).unwrap_or_else(|| panic!("painted"));
    assert!(
        near(native.width(), 900.0, 0.5) && near(native.height(), 700.0, 0.5),
        "native size: {native:?}"
    );
    assert!(near(native.center().x, clip.center().x, 0.5) && near(native.center().y, clip.center().y, 0.5));
    h.get_by_label("Fit").click();
    h.step();
    h.step();
    let (back, _) = painted_image(&h).unwrap_or_else(|| panic!("painted"));
    assert_rect_near(back, fitted, 0.5, "Fit returns to the fitted view");
    // The 1:1 button toggles: pressed twice, it is fitted again.
    h.get_by_label("1:1").click();
    h.step();
    h.get_by_label("1:1").click();
    h.step();
    h.step();
    let (again, _) = painted_image(&h).unwrap_or_else(|| panic!("painted"));
    assert_rect_near(again, fitted, 0.5, "1:1 pressed again");
}

#[test]
fn the_wheel_zooms_around_the_cursor_dragging_pans_and_boxes_follow() {
    let mut h = viewer_with(fixture("images/astronaut.png"));
    step_until(&mut h, "the detections", |h| has_label_containing(h, "detections"));
    h.step();
    let (before, clip) = painted_image(&h).unwrap_or_else(|| panic!("painted"));
    let result = h.state().viewer.images[0]
        .result
        .clone()
        .unwrap_or_else(|| panic!("a result"));
    let dets: Vec<_> = h.state().viewer.visible(&result).into_iter().cloned().collect();
    assert!(!dets.is_empty(), "the astronaut has a face");
    let iw = result.output.image_size[0] as f32;
    // Where each box should be for an image painted at `img`.
    let expected = |img: egui::Rect| -> Vec<egui::Rect> {
        let s = img.width() / iw;
        dets.iter()
            .map(|d| {
                egui::Rect::from_min_max(
                    img.min + egui::vec2(d.bbox[0], d.bbox[1]) * s,
                    img.min + egui::vec2(d.bbox[2], d.bbox[3]) * s,
                )
            })
            .collect()
    };
    let check_boxes = |h: &Harness<'static, ModeldockApp>, img: egui::Rect, what: &str| {
        let boxes = painted_boxes(h, clip);
        assert_eq!(boxes.len(), dets.len(), "{what}: one box per detection");
        for (b, e) in boxes.iter().zip(expected(img)) {
            assert_rect_near(*b, e, 1.0, what);
        }
    };
    check_boxes(&h, before, "fitted");

    // Wheel up with the cursor off-centre, over the image.
    let cursor = before.min + before.size() * egui::vec2(0.3, 0.4);
    h.hover_at(cursor);
    h.step();
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Line,
        delta: egui::vec2(0.0, 3.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers: egui::Modifiers::NONE,
    });
    for _ in 0..40 {
        h.step();
    }
    let (zoomed, _) = painted_image(&h).unwrap_or_else(|| panic!("painted"));
    assert!(
        zoomed.width() > before.width() * 1.2,
        "zoomed in: {before:?} -> {zoomed:?}"
    );
    assert!(near(zoomed.width() / zoomed.height(), 1.0, 0.01), "aspect kept");
    // The image point under the cursor stayed under it.
    let at = |r: egui::Rect| (cursor - r.min) / r.width();
    assert!(
        (at(zoomed) - at(before)).length() < 0.002,
        "zoom around the cursor: {:?} vs {:?}",
        at(before),
        at(zoomed)
    );
    check_boxes(&h, zoomed, "zoomed");

    // Drag pans by the pointer's movement.
    let d = egui::vec2(-60.0, 35.0);
    h.drag_at(cursor);
    h.step();
    h.hover_at(cursor + d * 0.5);
    h.step();
    h.hover_at(cursor + d);
    h.step();
    h.drop_at(cursor + d);
    h.step();
    h.step();
    let (panned, _) = painted_image(&h).unwrap_or_else(|| panic!("painted"));
    assert!(near(panned.width(), zoomed.width(), 0.01), "panning keeps the scale");
    assert!(
        (panned.min - zoomed.min - d).length() < 1.0,
        "moved by {d:?}: {zoomed:?} -> {panned:?}"
    );
    check_boxes(&h, panned, "panned");
}

#[test]
fn opening_a_folder_lists_it_off_the_ui_thread() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for n in ["b.png", "a.png", "c.png"] {
        write_png(dir.path(), n, 64, 48);
    }
    std::fs::write(dir.path().join("readme.txt"), "not an image").unwrap_or_else(|e| panic!("{e}"));
    let mut h = harness(only(Registry::discover(&[]), &["face-detector"]), "face-detector");
    h.step();
    h.input_mut()
        .dropped_files
        .push(Arc::new(DroppedPath(dir.path().to_path_buf())));
    h.step();
    // The frame that took the drop did not read the folder: nothing is known yet.
    let v = &h.state().viewer;
    assert_eq!(
        (v.listing, v.decoding, v.images.len()),
        (1, 0, 0),
        "the folder is listed on another thread"
    );
    assert!(
        has_label_containing(&h, "Listing files"),
        "the user sees it is being listed"
    );
    step_until(&mut h, "the folder's images via poll", |h| {
        h.state().viewer.images.len() == 3
    });
    let names: Vec<&str> = h.state().viewer.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a.png", "b.png", "c.png"], "images only, in name order");
    assert_eq!(h.state().viewer.listing, 0);
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
}

#[test]
fn starting_a_live_source_opens_it_off_the_ui_thread_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("no-such-folder");
    let mut h = harness(only(Registry::discover(&[]), &["face-landmarks"]), "face-landmarks");
    h.step();
    h.get_by_label("Live").click();
    step_until(&mut h, "the Start button", |h| h.query_by_label("Start").is_some());
    h.state_mut().live.choice = modeldock::ui::live_panel::SourceChoice::Folder;
    h.state_mut().live.folder = missing.display().to_string();
    h.step();
    h.get_by_label("Start").click();
    h.step();
    // The frame that pressed Start did not open the source.
    assert!(h.state().live.opening.is_some(), "opening on another thread");
    assert!(has_label_containing(&h, "opening"), "an opening… status");
    assert!(h.state().live.pipeline.is_none());
    step_until(&mut h, "the error", |h| has_label_containing(h, "press Start to retry"));
    let msg = h.state().live.message.clone().unwrap_or_default();
    assert!(msg.contains("no-such-folder"), "{msg}");
    assert!(h.state().live.opening.is_none() && h.state().live.pipeline.is_none());
}

/// Drops `file` on the window, answers the import question with yes, and
/// waits until the engine lists model `id` and answers an image with it.
fn drop_import_and_run(file: &str, id: &str) -> (Harness<'static, ModeldockApp>, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut h = harness(only(Registry::discover(&[]), &["face-detector"]), "face-detector");
    h.state_mut().import_root = Some(root.path().to_path_buf());
    h.step();
    h.input_mut().dropped_files.push(Arc::new(DroppedPath(fixture(file))));
    let name = file.rsplit('/').next().unwrap_or(file).to_string();
    step_until(&mut h, "the import question", |h| {
        has_label_containing(h, &format!("Import {name} as a modeldock model?"))
    });
    // Nothing is written before the user says yes.
    assert!(!root.path().join(id).exists());
    h.get_by_label("Import").click();
    step_until(&mut h, "the imported model selected", |h| h.state().viewer.model == id);
    assert!(root.path().join(id).join("model.toml").is_file());
    // The engine registers it on its own thread.
    step_until(&mut h, "the engine to list the imported model", |h| {
        h.state().engine.snapshot().models.iter().any(|m| m.id == id)
    });
    // It runs like any other model.
    let bytes = std::fs::read(fixture("images/astronaut.png")).unwrap_or_else(|e| panic!("{e}"));
    let r = modeldock::engine::InferWait::infer_wait(
        &h.state().engine,
        id,
        modeldock::engine::ImageInput::Bytes {
            name: "astronaut.png".into(),
            bytes: Arc::new(bytes),
        },
        Default::default(),
    );
    assert!(r.is_ok(), "{:?}", r.err());
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    (h, root)
}

#[test]
fn a_dropped_checkpoint_is_imported_after_asking_and_runs() {
    let (h, _root) = drop_import_and_run("yolov8n-pt/yolov8n-random.pt", "yolov8n-random");
    let snap = h.state().engine.snapshot();
    let st = snap
        .models
        .iter()
        .find(|m| m.id == "yolov8n-random")
        .unwrap_or_else(|| panic!("the engine knows the imported model"));
    assert_eq!(st.arch, modeldock::catalog::Arch::Yolov8);
}

#[test]
fn a_dropped_onnx_model_is_imported_after_asking_registered_and_selected() {
    // The committed Ultralytics export (its conv weights zeroed): it runs all the same.
    let (h, _root) = drop_import_and_run("onnx/yolo11n-320.onnx", "yolo11n-320");
    let snap = h.state().engine.snapshot();
    let st = snap
        .models
        .iter()
        .find(|m| m.id == "yolo11n-320")
        .unwrap_or_else(|| panic!("the engine knows the imported model"));
    assert_eq!(st.task, modeldock::catalog::Task::Detect);
}

#[test]
fn a_hub_model_without_local_weights_offers_download_with_its_size() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path().join("hubonly");
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    // A repo no hub cache holds, so the weights are missing wherever this runs.
    std::fs::write(
        d.join("model.toml"),
        "id = \"hubonly\"\nname = \"Hub only\"\ntask = \"detect\"\narch = \"toy\"\n\
         weights = { repo = \"modeldock-tests/never-downloaded\", file = \"absent.safetensors\" }\n\
         input_size = 32\nlabels = [\"toy\"]\nlicence = \"CC0-1.0\"\n\n[options]\nsize_bytes = 12800000\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let reg = Registry::discover(&[dir.path().to_path_buf()]);
    assert!(reg.get("hubonly").is_some(), "{:?}", reg.problems);
    let mut h = harness(only(reg, &["hubonly"]), "hubonly");
    h.step();
    step_until(&mut h, "the hub model's row", |h| {
        h.state().snapshot().models.iter().any(|m| m.id == "hubonly")
    });
    h.step();
    let m = &h.state().snapshot().models[0];
    assert!(m.weights_missing.is_some(), "{m:?}");
    if modeldock::catalog::hub::offline() {
        // HF_HUB_OFFLINE: nothing to download; the row says so.
        assert!(has_label_containing(&h, "no weights"));
        return;
    }
    assert!(
        h.query_by_label("Download (12.2 MiB)").is_some(),
        "no Download button; the row is {m:?}"
    );
    assert!(h.query_by_label("Load").is_none(), "Load shows instead of Download");
    assert!(!has_label_containing(&h, "no weights"));
}

/// `--device cuda` where no GPU opens (this build has no CUDA): the app
/// runs on the CPU and its status bar says why.
#[test]
fn a_gpu_that_cannot_open_leaves_the_app_on_the_cpu_with_a_note() {
    let flags = modeldock::setup::EngineFlags {
        device: Some(modeldock::engine::config::DeviceChoice::Cuda(0)),
        ..Default::default()
    };
    if modeldock::engine::config::DeviceChoice::Cuda(0).open().is_ok() {
        // A CUDA build on a machine with a GPU: nothing to fall back from.
        return;
    }
    let cfg = flags.config_or_cpu().unwrap_or_else(|e| panic!("{e}"));
    let reg = only(Registry::discover(&[]), &["face-detector"]);
    let mut h = harness_with(reg, "face-detector", egui::vec2(1400.0, 900.0), cfg);
    step_until(&mut h, "the status bar's device note", |h| {
        has_label_containing(h, "Device: cpu (cuda") && has_label_containing(h, "on the CPU instead")
    });
}

#[test]
fn the_models_panel_says_when_weights_are_stored_in_half_precision() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "halftoy", &[]);
    let p = dir.path().join("halftoy/toy.safetensors");
    let dev = candle_core::Device::Cpu;
    let ts = candle_core::safetensors::load(&p, &dev).unwrap_or_else(|e| panic!("{e}"));
    let ts: std::collections::HashMap<String, candle_core::Tensor> = ts
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                t.to_dtype(candle_core::DType::BF16).unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .collect();
    candle_core::safetensors::save(&ts, &p).unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "fulltoy", &[]);
    let reg = Registry::discover(&[dir.path().to_path_buf()]);
    let mut h = harness(only(reg, &["halftoy", "fulltoy"]), "halftoy");
    h.step();
    // One model stores bf16: one label says so; the f32 one adds none.
    assert_eq!(h.query_all_by_label("f32 (bf16 weights)").count(), 1);
}
