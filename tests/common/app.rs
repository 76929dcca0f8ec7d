//! Driving the app in `egui_kittest` tests.

use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use modeldock::catalog::registry::Registry;
use modeldock::client::{Client, LateWake};
use modeldock::engine::Engine;
use modeldock::ui::app::{AppOptions, ModeldockApp};
use modeldock::ui::log_capture::LogBuffer;

/// The app on its own engine over `registry` (the tests' `config()`), with
/// `model` picked, `open` opened in the Viewer and a `size` window; no
/// telemetry.
pub fn app_on(
    registry: Registry,
    open: Vec<std::path::PathBuf>,
    model: &str,
    size: egui::Vec2,
) -> Harness<'static, ModeldockApp> {
    let model = model.to_string();
    Harness::builder().with_size(size).build_eframe(move |cc| {
        let wake = LateWake::default();
        let engine = Engine::start(registry.clone(), super::config(), Some(wake.as_wake()));
        ModeldockApp::new(
            cc,
            AppOptions {
                client: Client::local(engine),
                wake,
                problems: Vec::new(),
                open: open.clone(),
                model: Some(model.clone()),
                telemetry: false,
                log: LogBuffer::default(),
                live: None,
                exit_after: None,
            },
        )
    })
}

/// Steps the app until `pred` holds, or panics naming `what` after [`super::WAIT`].
pub fn step_until(
    h: &mut Harness<'static, ModeldockApp>,
    what: &str,
    pred: impl Fn(&Harness<'static, ModeldockApp>) -> bool,
) {
    let end = Instant::now() + super::WAIT;
    while Instant::now() < end {
        h.step();
        if pred(h) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}
