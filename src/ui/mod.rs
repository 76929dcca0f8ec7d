//! The desktop app: a client of the engine, drawn with egui.

use eframe::egui;
pub mod app;
pub mod export;
pub mod frame_history;
pub mod gpu_panel;
pub mod latency_panel;
pub mod live_panel;
pub mod live_tracking;
pub mod log_capture;
pub mod log_panel;
pub mod mask_view;
pub mod models_panel;
pub mod prompt_tool;
pub mod viewer;

pub use app::AppOptions;
use app::ModeldockApp;

/// Opens the window over `opts.client` and runs until it closes.
pub fn run(opts: AppOptions) -> crate::Result<()> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("modeldock")
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        persist_window: true,
        ..Default::default()
    };
    eframe::run_native(
        "modeldock",
        native,
        Box::new(move |cc| Ok(Box::new(ModeldockApp::new(cc, opts)))),
    )
    .map_err(|e| crate::Error::unavailable(format!("cannot open the window: {e}")))
}
