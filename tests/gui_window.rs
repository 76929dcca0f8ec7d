//! The real window under Xvfb (Mesa on the CPU): start the binary on the
//! default face models with an image to open, take a screenshot, check it is
//! not blank and the process is alive. Needs `Xvfb` and ImageMagick's
//! `import` (`.ci/test` installs them).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, free_port};

struct Xvfb(Child, String);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_xvfb() -> Xvfb {
    for n in 0..50 {
        let d = 90 + (std::process::id() as usize + n) % 400;
        if std::path::Path::new(&format!("/tmp/.X11-unix/X{d}")).exists() {
            continue;
        }
        let mut child = Command::new("Xvfb")
            .args([
                format!(":{d}").as_str(),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("this test needs Xvfb (apt-get install xvfb; see .ci/test): {e}"));
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if std::path::Path::new(&format!("/tmp/.X11-unix/X{d}")).exists() {
                return Xvfb(child, format!(":{d}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("Xvfb did not start");
}

#[test]
fn the_window_opens_an_image_with_the_default_model_and_draws_it() {
    let x = start_xvfb();
    let runtime = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The app serves its engine on this port while it runs.
    let host = format!("127.0.0.1:{}", free_port());
    let mut app = Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .args(["--model", "face-landmarks", "--exit-after", "5", "--open"])
        .arg(fixture("images/astronaut.png"))
        .env("DISPLAY", &x.1)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("XDG_CONFIG_HOME", config.path())
        .env("XDG_DATA_HOME", config.path())
        .env("MODELDOCK_LOG", "info")
        .env("MODELDOCK_HOST", &host)
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = app.stderr.take().unwrap_or_else(|| panic!("stderr"));
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    let mut shown = false;
    while Instant::now() < end && !shown {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            shown = l.contains("viewer: result for astronaut.png");
            log.push(l);
        }
    }
    assert!(shown, "no result shown; log:\n{}", log.join("\n"));
    // `modeldock ps` in a terminal sees what the app holds.
    let ps = Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .args(["ps", "--json"])
        .env("MODELDOCK_HOST", &host)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ps.status.success(), "{}", String::from_utf8_lossy(&ps.stderr));
    let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap_or_default();
    assert!(
        ps["models"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["id"] == "face-landmarks" && m["state"] == "Resident")),
        "{ps}"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(app.try_wait().ok().flatten().is_none(), "the app is still running");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let shot = dir.join("modeldock-window.png");
    let st = Command::new("import")
        .args(["-display", &x.1, "-window", "root"])
        .arg(&shot)
        .status()
        .unwrap_or_else(|e| panic!("this test needs ImageMagick's import (see .ci/test): {e}"));
    assert!(st.success());
    println!("screenshot: {}", shot.display());
    let img = image::open(&shot).unwrap_or_else(|e| panic!("{e}")).to_rgb8();
    let mut colours = std::collections::HashSet::new();
    for p in img.pixels().step_by(7) {
        colours.insert(p.0);
    }
    assert!(
        colours.len() > 500,
        "the screenshot looks blank ({} colours)",
        colours.len()
    );
    // The photo is on screen: its orange spacesuit is a colour no UI theme uses.
    let orange = img
        .pixels()
        .filter(|p| p.0[0] > 180 && p.0[1] > 60 && p.0[1] < 140 && p.0[2] < 80)
        .count();
    assert!(orange > 5000, "the image is drawn ({orange} orange pixels)");
    let out = app.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .find_map(|l| l.strip_prefix("modeldock-ui-report "))
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    println!("ui report: {report}");
    let v: serde_json::Value = serde_json::from_str(report).unwrap_or_else(|e| panic!("{e}"));
    assert!(v["first_frame_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(v["frames"].as_u64().unwrap_or(0) > 10);
    assert!(out.status.success(), "clean exit");
}
