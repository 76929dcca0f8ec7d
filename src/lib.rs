//! modeldock: a desktop workbench that runs vision models on a local GPU or
//! CPU. A model is read once, only when needed, never on the UI thread, and
//! leaves memory when a budget, an idle timer or the user says so — once per
//! machine: whichever modeldock process starts first serves the engine over
//! the Open Inference Protocol v2, and every other process is its client.

#[cfg(feature = "gui")]
pub mod app_launch;
pub mod backend;
pub mod camera;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod engine;
pub mod error;
pub mod graph;
pub mod import;
pub mod kernels;
pub mod live;
pub mod logging;
pub mod models;
pub mod server;
pub mod setup;
pub mod telemetry;
#[cfg(feature = "gui")]
pub mod ui;
pub mod units;
pub mod v2;
pub mod vision;

pub use error::{Error, Result};

/// When the process started (first thing `main` does), for start-up figures.
pub static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
