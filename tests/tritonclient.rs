//! `modeldock serve` checked with a client nobody here wrote: NVIDIA's
//! tritonclient[http] (PyPI), run from `.ci/venv-client` (made by `bash .ci/deps`)
//! on tests/python/test_tritonclient.py, and on test_tritonclient_masks.py
//! for output MASKS of a segment model. The server runs on a free loopback
//! port and is killed whatever happens.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::fixture;

const START_LIMIT: Duration = Duration::from_secs(60);
const SCRIPT_LIMIT: Duration = Duration::from_secs(600);

/// Kills (and reaps) the child when dropped: no server outlives the test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> PathBuf {
    let p = match std::env::var_os("MODELDOCK_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv-client/bin/python"),
    };
    assert!(
        p.exists(),
        "no Python with tritonclient at {}: run `bash .ci/deps` (it creates .ci/venv-client), \
         or set MODELDOCK_TEST_PYTHON to a python that has tritonclient[http] and numpy",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
    l.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

/// Status code of a minimal HTTP/1.1 GET, or None when nothing answers.
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]).to_string();
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).to_string()
}

/// Waits for the child, killing it after `limit`; None on time-out.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Same isolated environment for the server and for the CLI runs a script
/// makes: no user config, and no MODELDOCK_* from the caller (a
/// MODELDOCK_PRELOAD, _API_KEY, _MODELS or _HOST would change the answers).
fn isolate(c: &mut Command, d: &Path) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MODELDOCK_") {
            c.env_remove(k);
        }
    }
    c.env("XDG_CONFIG_HOME", d.join("config"))
        .env("XDG_CACHE_HOME", d.join("cache"))
        .env("XDG_DATA_HOME", d.join("data"));
}

/// `modeldock serve` on a free port, answering, with its logs in `d`.
struct Serving {
    _server: Killed,
    port: u16,
    out: PathBuf,
    err: PathBuf,
}

impl Serving {
    fn logs(&self) -> String {
        format!(
            "--- server stdout ---\n{}\n--- server stderr ---\n{}",
            read_lossy(&self.out),
            read_lossy(&self.err)
        )
    }
}

fn start_serve(d: &Path, extra: &[&str]) -> Serving {
    let bin = env!("CARGO_BIN_EXE_modeldock");
    let port = free_port();
    let (out, err) = (d.join("server.stdout"), d.join("server.stderr"));
    let mut cmd = Command::new(bin);
    isolate(&mut cmd, d);
    cmd.args(["serve", "--port", &port.to_string()])
        .args(extra)
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap_or_else(|e| panic!("{e}")))
        .stderr(File::create(&err).unwrap_or_else(|e| panic!("{e}")));
    let mut server = Killed(cmd.spawn().unwrap_or_else(|e| panic!("spawning {bin} serve: {e}")));
    let logs = || {
        format!(
            "--- server stdout ---\n{}\n--- server stderr ---\n{}",
            read_lossy(&out),
            read_lossy(&err)
        )
    };
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = server.0.try_wait() {
            panic!(
                "`modeldock serve --port {port}` exited ({st}) before answering\n{}",
                logs()
            );
        }
        if http_get_status(port, "/v2/health/live") == Some(200) {
            break;
        }
        assert!(
            start.elapsed() < START_LIMIT,
            "GET /v2/health/live on 127.0.0.1:{port} did not answer 200 within {START_LIMIT:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Serving {
        _server: server,
        port,
        out,
        err,
    }
}

/// Runs `tests/python/<script>` with `args` against `serving`; panics with
/// both sides' output when it fails or runs past the limit.
fn run_script(d: &Path, serving: &Serving, script: &str, args: &[&OsStr]) {
    let python = python();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let (py_out, py_err) = (d.join("python.stdout"), d.join("python.stderr"));
    let mut cmd = Command::new(&python);
    isolate(&mut cmd, d);
    cmd.arg(&path)
        .args(["--url", &format!("127.0.0.1:{}", serving.port)])
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&py_out).unwrap_or_else(|e| panic!("{e}")))
        .stderr(File::create(&py_err).unwrap_or_else(|e| panic!("{e}")));
    let mut py = Killed(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display())),
    );
    let status = wait_bounded(&mut py.0, SCRIPT_LIMIT);
    let report = format!(
        "--- {script} stdout ---\n{}\n--- {script} stderr ---\n{}\n{}",
        read_lossy(&py_out),
        read_lossy(&py_err),
        serving.logs()
    );
    match status {
        None => panic!("{script} still running after {SCRIPT_LIMIT:?}; killed\n{report}"),
        Some(st) if !st.success() => panic!("{script} failed ({st})\n{report}"),
        Some(_) => println!("{report}"),
    }
}

#[test]
fn tritonclient_drives_modeldock_serve() {
    let bin = env!("CARGO_BIN_EXE_modeldock");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let (astronaut, camera) = (fixture("images/astronaut.png"), fixture("images/camera.png"));
    let bad = d.join("notes.jpg");
    std::fs::write(&bad, b"these are my notes, not a picture\n").unwrap_or_else(|e| panic!("{e}"));
    let serving = start_serve(d, &[]);
    let args = [
        OsStr::new("--modeldock"),
        OsStr::new(bin),
        OsStr::new("--images"),
        astronaut.as_os_str(),
        camera.as_os_str(),
        OsStr::new("--bad"),
        bad.as_os_str(),
    ];
    run_script(d, &serving, "test_tritonclient.py", &args);
}

/// A PNG, red in its top-left quadrant and green elsewhere: what the toy
/// model's `mask_red` mask keeps.
fn quadrant_png(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if x < w / 2 && y < h / 2 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 255, 0])
        }
    });
    img.save(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn tritonclient_reads_masks_from_a_segment_model() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let models = d.join("models");
    let seg = common::toy(&models, "seg", &[("mask_red", 1.0)]);
    let toml = seg.join("model.toml");
    let text = std::fs::read_to_string(&toml).unwrap_or_default();
    std::fs::write(&toml, text.replace("task = \"detect\"", "task = \"segment\"")).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    quadrant_png(&a, 96, 64);
    quadrant_png(&b, 40, 72);
    let serving = start_serve(d, &["--models-dir", &models.to_string_lossy()]);
    let args = [
        OsStr::new("--model"),
        OsStr::new("seg"),
        OsStr::new("--images"),
        a.as_os_str(),
        b.as_os_str(),
    ];
    run_script(d, &serving, "test_tritonclient_masks.py", &args);
}

/// The built-in person segmentation model (`selfie`) through tritonclient:
/// MASKS at each photo's resolution, binary and JSON alike, and not empty
/// on photos of a person.
#[test]
fn tritonclient_reads_selfie_masks() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let (astronaut, camera) = (fixture("images/astronaut.png"), fixture("images/camera.png"));
    let serving = start_serve(d, &[]);
    let args = [
        OsStr::new("--model"),
        OsStr::new("selfie"),
        OsStr::new("--images"),
        astronaut.as_os_str(),
        camera.as_os_str(),
    ];
    run_script(d, &serving, "test_tritonclient_masks.py", &args);
}

/// ONNX graphs imported as raw-tensor models (`import onnx`; a graph with
/// no Ultralytics metadata and no YOLO shapes is `raw`): tritonclient sends
/// the graph's inputs by name and reads its outputs, as from any ONNX
/// server, compared with ONNX Runtime's (the committed op cases: three
/// inputs and two outputs, and a conv).
#[test]
fn tritonclient_drives_imported_raw_onnx_graphs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let models = d.join("models");
    let cases = [("three_inputs", "auto"), ("conv_pads_stride", "raw")];
    for (case, family) in cases {
        let onnx = fixture(&format!("onnx/ops/{case}/model.onnx")).display().to_string();
        let out = models.join(case).display().to_string();
        let (code, stdout, stderr) = common::cli(
            &["import", "onnx", &onnx, "--out", &out, "--id", case, "--family", family],
            &[],
        );
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("family raw"), "{stdout}");
    }
    let serving = start_serve(d, &["--models-dir", &models.to_string_lossy()]);
    for (case, _) in cases {
        let folder = fixture(&format!("onnx/ops/{case}"));
        let args = [
            OsStr::new("--model"),
            OsStr::new(case),
            OsStr::new("--case"),
            folder.as_os_str(),
        ];
        run_script(d, &serving, "test_tritonclient_raw.py", &args);
    }
}
