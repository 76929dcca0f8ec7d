//! modeldock: a desktop workbench that runs vision models on a local GPU or
//! CPU. A model is read once, only when needed, never on the UI thread, and
//! leaves memory when a budget, an idle timer or the user says so.

pub mod camera;
pub mod cli;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod models;
pub mod telemetry;
pub mod ui;
pub mod vision;

pub use error::{Error, Result};
