//! `modeldock serve` checked with a client nobody here wrote: NVIDIA's
//! tritonclient[http] (PyPI), run from `.ci/venv-client` (made by `bash .ci/deps`)
//! on tests/python/test_tritonclient.py. The server runs on a free loopback
//! port and is killed whatever happens.

mod common;

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

#[test]
fn tritonclient_drives_modeldock_serve() {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_tritonclient.py");
    let bin = env!("CARGO_BIN_EXE_modeldock");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let (astronaut, camera) = (fixture("images/astronaut.png"), fixture("images/camera.png"));
    let bad = d.join("notes.jpg");
    std::fs::write(&bad, b"these are my notes, not a picture\n").unwrap_or_else(|e| panic!("{e}"));

    // Same isolated environment for the server and for the CLI runs the
    // script makes: no user config, and no MODELDOCK_* from the caller (a
    // MODELDOCK_PRELOAD, _API_KEY, _MODELS or _HOST would change the answers).
    let isolate = |c: &mut Command| {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MODELDOCK_") {
                c.env_remove(k);
            }
        }
        c.env("XDG_CONFIG_HOME", d.join("config"))
            .env("XDG_CACHE_HOME", d.join("cache"))
            .env("XDG_DATA_HOME", d.join("data"));
    };

    let port = free_port();
    let (server_out, server_err) = (d.join("server.stdout"), d.join("server.stderr"));
    let mut cmd = Command::new(bin);
    isolate(&mut cmd);
    cmd.args(["serve", "--port", &port.to_string()])
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(File::create(&server_out).unwrap_or_else(|e| panic!("{e}")))
        .stderr(File::create(&server_err).unwrap_or_else(|e| panic!("{e}")));
    let mut server = Killed(cmd.spawn().unwrap_or_else(|e| panic!("spawning {bin} serve: {e}")));
    let server_logs = || {
        format!(
            "--- server stdout ---\n{}\n--- server stderr ---\n{}",
            read_lossy(&server_out),
            read_lossy(&server_err)
        )
    };

    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = server.0.try_wait() {
            panic!(
                "`modeldock serve --port {port}` exited ({st}) before answering\n{}",
                server_logs()
            );
        }
        if http_get_status(port, "/v2/health/live") == Some(200) {
            break;
        }
        assert!(
            start.elapsed() < START_LIMIT,
            "GET /v2/health/live on 127.0.0.1:{port} did not answer 200 within {START_LIMIT:?}\n{}",
            server_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (py_out, py_err) = (d.join("python.stdout"), d.join("python.stderr"));
    let mut cmd = Command::new(&python);
    isolate(&mut cmd);
    cmd.arg(&script)
        .args(["--url", &format!("127.0.0.1:{port}"), "--modeldock", bin, "--images"])
        .args([&astronaut, &camera])
        .arg("--bad")
        .arg(&bad)
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
        "--- test_tritonclient.py stdout ---\n{}\n--- test_tritonclient.py stderr ---\n{}\n{}",
        read_lossy(&py_out),
        read_lossy(&py_err),
        server_logs()
    );
    match status {
        None => panic!("test_tritonclient.py still running after {SCRIPT_LIMIT:?}; killed\n{report}"),
        Some(st) if !st.success() => panic!("test_tritonclient.py failed ({st})\n{report}"),
        Some(_) => println!("{report}"),
    }
    drop(server);
}
