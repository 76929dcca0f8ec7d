//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[cfg(feature = "gui")]
pub mod app;

use std::path::{Path, PathBuf};
use std::time::Duration;

use modeldock::catalog::registry::Registry;
use modeldock::engine::residency::KeepAlive;
use modeldock::engine::{Engine, EngineConfig};
use modeldock::models::toy::write_toy_model;

pub const WAIT: Duration = Duration::from_secs(60);

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn toy(dir: &Path, id: &str, options: &[(&str, f64)]) -> PathBuf {
    write_toy_model(dir, id, 0, "", options).unwrap_or_else(|e| panic!("writing toy model: {e}"))
}

/// A models folder entry `msam`: MobileSAM on the random weights of seed 7
/// (`models::sam_random`), the weights the SAM fixtures were made from.
#[cfg(feature = "sam")]
pub fn sam_folder(dir: &Path) {
    use modeldock::models::sam::Variant;
    let d = dir.join("msam");
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    let file = modeldock::models::sam_random::write_sam_weights(Variant::VitT, 7, &d, "msam", 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let toml = format!(
        "id = \"msam\"\nname = \"MobileSAM (random)\"\ntask = \"segment\"\narch = \"sam\"\nvariant = \"vit_t\"\n\
         weights = \"{file}\"\ninput_size = 1024\nlabels = [\"object\"]\nlicence = \"test\"\n"
    );
    std::fs::write(d.join("model.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
}

pub fn config() -> EngineConfig {
    EngineConfig {
        budget_bytes: 1 << 30,
        default_keep_alive: KeepAlive::Forever,
        ..Default::default()
    }
}

pub fn engine_for(dir: &Path, config: EngineConfig) -> (Engine, Registry) {
    let reg = Registry::discover(&[dir.to_path_buf()]);
    (Engine::start(reg.clone(), config, None), reg)
}

pub fn state(e: &Engine, id: &str) -> String {
    e.status(id).map(|m| m.state.to_string()).unwrap_or_default()
}

pub fn wait_state(e: &Engine, id: &str, s: &str) {
    let ok = e.wait_for(WAIT, |snap| {
        snap.models.iter().any(|m| m.id == id && m.state.to_string() == s)
    });
    assert!(ok, "{id} never became {s}; it is {:?}", e.status(id));
}

pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, 90]));
    let mut c = std::io::Cursor::new(Vec::new());
    img.write_to(&mut c, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("png: {e}"));
    c.into_inner()
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A `MODELDOCK_HOST` where no server answers, so a CLI run in a test uses an
/// engine of its own whatever else runs on the machine.
pub fn no_server() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Runs the modeldock binary with `env` and none of the caller's
/// `MODELDOCK_HOST`, `MODELDOCK_MODELS`, `MODELDOCK_CA_BUNDLE` or
/// `MODELDOCK_REMOTE_HEADERS`; (exit code, stdout, stderr).
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_modeldock"));
    c.args(args);
    for k in [
        "MODELDOCK_HOST",
        "MODELDOCK_MODELS",
        "MODELDOCK_CA_BUNDLE",
        "MODELDOCK_REMOTE_HEADERS",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap_or_else(|e| panic!("modeldock: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
