//! The headless face of the engine: every GUI action has a CLI twin.

pub mod args;
pub mod bench_cmd;
pub mod gpu_cmd;
pub mod import_cmd;
pub mod infer_cmd;
pub mod live_cmd;
pub mod models_cmd;
pub mod setup;
pub mod verify_cmd;

use crate::error::Result;

pub const USAGE: &str = "\
modeldock — run vision models on a local GPU or CPU

USAGE:
  modeldock [ENGINE FLAGS] [--open IMAGE]... [--model ID] [--live SOURCE] [--exit-after SECS] [--no-telemetry]
                                               open the desktop app
  modeldock models [--json]                    every registered model, its state and size
  modeldock infer --model ID [--conf F] [--iou F] [--json] IMAGE...
  modeldock bench [--model ID] [--random-weights] [--image PATH] [--runs N] [--json]
  modeldock import tfjs MANIFEST.json --out DIR [--add PREFIX=MANIFEST.json]
  modeldock live --source webcam[:N]|DIR|synthetic --model ID [--frames N] [--fps F] [--size WxH] [--mirror] [--json]
  modeldock verify --arch yolov8 --variant n --task detect --weights W --input I --expected O [--tol F] [--rtol F] [--json]
  modeldock gpu [--json] [--watch] [--interval SECS] [--count N]   (MODELDOCK_NVML_LIB picks libnvidia-ml)

ENGINE FLAGS (models, infer, bench, app):";

fn init_tracing(default: &str) {
    let level = std::env::var("MODELDOCK_LOG").unwrap_or_else(|_| default.to_string());
    let filter = match level.to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        _ => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(filter)
        .with_target(false)
        .try_init();
}

/// When the process started (first thing `main` does), for start-up figures.
pub static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    PROCESS_START.get_or_init(std::time::Instant::now);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match argv.split_first() {
        Some((c, r)) if !c.starts_with("--") => (c.as_str(), r.to_vec()),
        _ => ("app", argv.clone()),
    };
    if cmd != "app" {
        // Commands print their own one-line errors; MODELDOCK_LOG shows the engine's log.
        init_tracing("off");
    }
    let r: Result<i32> = match cmd {
        "models" => models_cmd::run(&rest),
        "infer" => infer_cmd::run(&rest),
        "bench" => bench_cmd::run(&rest),
        "import" => import_cmd::run(&rest),
        "gpu" => gpu_cmd::run(&rest),
        "live" => live_cmd::run(&rest),
        "verify" => verify_cmd::run(&rest),
        "help" | "-h" => {
            println!("{USAGE}\n{}", setup::ENGINE_HELP);
            Ok(0)
        }
        "app" => {
            if rest.iter().any(|a| a == "--help" || a == "-h") {
                println!("{USAGE}\n{}", setup::ENGINE_HELP);
                Ok(0)
            } else {
                app(&rest)
            }
        }
        other => Err(crate::error::Error::msg(format!(
            "unknown command '{other}' (try `modeldock help`)"
        ))),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn app(argv: &[String]) -> Result<i32> {
    crate::ui::run(argv)
}
