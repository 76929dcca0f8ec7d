//! The `modeldock serve` binary with separate client processes: one resident
//! copy per machine, and a clean exit on SIGTERM.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn modeldock() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modeldock"));
    c.env_remove("MODELDOCK_MODELS")
        .env_remove("MODELDOCK_PRELOAD")
        .env("XDG_CONFIG_HOME", std::env::temp_dir().join("modeldock-no-config"));
    c
}

fn get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent.get(url).call().ok()?.body_mut().read_to_string().ok()
}

fn start_server(models: &std::path::Path, host: &str) -> Server {
    let port = host.rsplit(':').next().unwrap_or("0").to_string();
    let child = modeldock()
        .args(["serve", "--port", &port, "--models-dir"])
        .arg(models)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Server(child);
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if get(&format!("http://{host}/v2/health/live")).is_some() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("modeldock serve did not come up on {host}");
}

#[test]
fn three_client_processes_share_one_load_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "cold", &[("slow_load_ms", 1500.0)]);
    let img = dir.path().join("img.png");
    std::fs::write(&img, png(64, 48)).unwrap_or_else(|e| panic!("{e}"));
    let host = format!("127.0.0.1:{}", free_port());
    let mut server = start_server(dir.path(), &host);

    // Three processes ask for the same cold model at the same moment.
    let clients: Vec<Child> = (0..3)
        .map(|_| {
            modeldock()
                .args(["infer", "--model", "cold", "--json"])
                .arg(&img)
                .env("MODELDOCK_HOST", &host)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    for c in clients {
        let out = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert_eq!(lines.len(), 1, "{stdout}");
        assert!(lines[0]["detections"].is_array(), "{stdout}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("running in this process"),
            "the client used the server"
        );
    }
    let ps: Value =
        serde_json::from_str(&get(&format!("http://{host}/api/ps")).unwrap_or_default()).unwrap_or_default();
    assert_eq!(ps["models"][0]["id"], "cold", "{ps}");
    assert_eq!(ps["models"][0]["loads"], 1, "{ps}");
    let metrics = get(&format!("http://{host}/metrics")).unwrap_or_default();
    let loads = metrics
        .lines()
        .find(|l| l.starts_with("modeldock_loads_total{") && l.contains("\"cold\""))
        .unwrap_or_else(|| panic!("no load counter in {metrics}"));
    assert!(loads.ends_with(" 1"), "{loads}");
    let succ = metrics
        .lines()
        .find(|l| l.starts_with("nv_inference_request_success{"))
        .unwrap_or_default();
    assert!(succ.ends_with(" 3"), "{succ}");

    // `modeldock ps` and `unload` talk to it too.
    let out = modeldock()
        .args(["unload", "cold"])
        .env("MODELDOCK_HOST", &host)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // SIGTERM: stop accepting, exit 0.
    let pid = server.0.id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success());
    let end = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Ok(Some(s)) = server.0.try_wait() {
            break s.code();
        }
        assert!(Instant::now() < end, "serve did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = server.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn client_commands_without_a_server_say_how_to_start_one() {
    let out = modeldock()
        .args(["ps"])
        .env("MODELDOCK_HOST", no_server())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no modeldock server is running") && err.contains("modeldock serve"),
        "{err}"
    );
    // Serving beyond loopback needs a key.
    let out = modeldock()
        .args(["serve", "--host", "0.0.0.0", "--port", "1"])
        .env_remove("MODELDOCK_API_KEY")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MODELDOCK_API_KEY"));
}
