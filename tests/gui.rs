//! The desktop app driven headless with egui_kittest, by accessible labels.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use modeldock::models::registry::Registry;
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
    let model = model.to_string();
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |cc| {
            ModeldockApp::new(
                cc,
                AppOptions {
                    registry,
                    config: config(),
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

/// Steps frames until `pred` holds (the engine works on other threads).
fn step_until(
    h: &mut Harness<'static, ModeldockApp>,
    what: &str,
    pred: impl Fn(&Harness<'static, ModeldockApp>) -> bool,
) {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        h.step();
        if pred(h) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
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
    assert_eq!(h.state().snapshot().models[0].state, "Resident");
    h.get_by_label("Unload").click();
    step_until(&mut h, "the row to read Available", |h| {
        h.query_by_label("Available").is_some()
    });
    assert_eq!(h.state().snapshot().models[0].state, "Available");
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
    assert_eq!(
        json,
        modeldock::cli::infer_cmd::result_json(&r).to_string(),
        "the CLI's JSON"
    );
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
