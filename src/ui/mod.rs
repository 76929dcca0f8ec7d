//! The desktop app: a client of the engine, drawn with egui.

use eframe::egui;
pub mod app;
pub mod export;
pub mod frame_history;
pub mod gpu_panel;
pub mod latency_panel;
pub mod live_panel;
pub mod log_capture;
pub mod log_panel;
pub mod models_panel;
pub mod viewer;

use std::path::PathBuf;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::cli::args::Args;
use crate::cli::setup;
use crate::error::{Error, Result};
use app::{AppOptions, ModeldockApp};
use log_capture::{CaptureLayer, LogBuffer};

/// `modeldock [ENGINE FLAGS] [--open IMAGE]... [--model ID] [--live SOURCE] [--exit-after SECS]`
pub fn run(argv: &[String]) -> Result<i32> {
    let mut flags = vec!["open", "model", "exit-after", "live"];
    flags.extend_from_slice(setup::ENGINE_FLAGS);
    let args = Args::parse(argv, &flags, &["no-telemetry"])?;
    let log = LogBuffer::default();
    let stderr_level = match std::env::var("MODELDOCK_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::WARN,
    };
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::from_level(stderr_level)),
        )
        .with(CaptureLayer(log.clone()).with_filter(tracing_subscriber::filter::LevelFilter::DEBUG))
        .try_init();
    let mut open: Vec<PathBuf> = args.values("open").into_iter().map(PathBuf::from).collect();
    open.extend(args.positional.iter().map(PathBuf::from));
    let exit_after = match args.value("exit-after") {
        Some(v) => Some(Duration::from_secs_f64(
            v.parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0 && x.is_finite())
                .ok_or_else(|| Error::msg(format!("--exit-after '{v}' is not a positive number of seconds")))?,
        )),
        None => None,
    };
    let opts = AppOptions {
        registry: setup::registry(&args),
        config: setup::config(&args)?,
        open,
        model: args.value("model").map(|s| s.to_string()),
        telemetry: !args.has("no-telemetry"),
        log,
        live: args.value("live").map(|s| s.to_string()),
        exit_after,
    };
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
    .map_err(|e| Error::msg(format!("cannot open the window: {e}")))?;
    Ok(0)
}
