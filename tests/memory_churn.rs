//! `modeldock serve` after churn: once every model is unloaded, the memory
//! that served them goes back to the OS (scratch buffers, the threads'
//! arenas, the embedded weights' pages), as after a single load and unload.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// (status, JSON body or null); a connection error is status 0.
fn call(url: &str, body: Option<Value>) -> (u16, Value) {
    let r = match body {
        Some(b) => agent()
            .post(url)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        None => agent().get(url).call(),
    };
    match r {
        Ok(mut r) => {
            let s = r.status().as_u16();
            let text = r
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .unwrap_or_default();
            (s, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok());
    kib.unwrap_or_else(|| panic!("no VmRSS for {pid}")) / 1024.0
}

fn serve(models: &std::path::Path) -> (Server, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--budget",
            "24MiB",
            "--models-dir",
        ])
        .arg(models)
        .env_remove("MODELDOCK_MODELS")
        .env_remove("MODELDOCK_PRELOAD")
        .env_remove("MODELDOCK_HOST")
        .env("XDG_CONFIG_HOME", models.join("no-config"))
        .env("XDG_CACHE_HOME", models.join("no-cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Server(child);
    let url = format!("http://127.0.0.1:{port}");
    let end = Instant::now() + Duration::from_secs(60);
    while call(&format!("{url}/v2/health/live"), None).0 != 200 {
        assert!(Instant::now() < end, "modeldock serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (s, url)
}

fn infer(url: &str, model: &str, image: &str, conf: f64) -> u16 {
    let body = json!({
        "inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": [image]}],
        "parameters": {"conf": conf},
    });
    call(&format!("{url}/v2/models/{model}/infer"), Some(body)).0
}

/// Unloads everything and waits until nothing is listed (at most 30 s),
/// then until the engine has handed memory back once more than
/// `hand_backs` (at most 5 s more: the RSS is what the test holds it to);
/// returns the count.
fn unload_all(url: &str, hand_backs: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(30);
    let mut emptied: Option<Instant> = None;
    loop {
        let _ = call(&format!("{url}/api/unload"), Some(json!({"all": true})));
        let (_, ps) = call(&format!("{url}/api/ps"), None);
        let n = ps["memory"]["hand_backs"].as_u64().unwrap_or(0);
        if ps["models"].as_array().is_some_and(|m| m.is_empty()) {
            let since = *emptied.get_or_insert_with(Instant::now);
            if n > hand_backs || since.elapsed() > Duration::from_secs(5) {
                return n;
            }
        }
        assert!(Instant::now() < end, "models still listed after unloading all: {ps}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn memory_comes_back_after_churn_and_unload_all() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (server, url) = serve(dir.path());
    let pid = server.0.id();
    use base64::Engine as _;
    let big = base64::engine::general_purpose::STANDARD.encode(png(1280, 720));
    let small = base64::engine::general_purpose::STANDARD.encode(png(320, 240));

    // One load, one image, one unload: the figure churn is held to.
    assert_eq!(infer(&url, "face-detector", &small, 0.5), 200);
    let hand_backs = unload_all(&url, 0);
    let base = rss_mib(pid);

    // Churn: 4 clients, each a fixed sequence of images on four models
    // (a distinct conf each, so the result cache never answers), loads and
    // unloads, in a budget that holds two or three models at a time.
    let models = ["mtcnn", "face-detector", "selfie", "face-landmarks"];
    let conf = AtomicU64::new(0);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4usize)
            .map(|c| {
                let (url, big, conf) = (&url, &big, &conf);
                s.spawn(move || {
                    (0..6usize)
                        .map(|i| {
                            let model = models[(c + i) % models.len()];
                            match (c + 2 * i) % 5 {
                                3 => call(&format!("{url}/api/load"), Some(json!({"model": model}))).0,
                                4 => call(&format!("{url}/api/unload"), Some(json!({"model": model}))).0,
                                _ => {
                                    let n = conf.fetch_add(1, Ordering::Relaxed);
                                    infer(url, model, big, 0.3 + n as f64 * 1e-3)
                                }
                            }
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    assert_eq!(statuses.len(), 24, "a client failed: {statuses:?}");
    assert!(statuses.iter().all(|s| [200, 422, 503].contains(s)), "{statuses:?}");
    assert!(statuses.iter().filter(|&&s| s == 200).count() >= 12, "{statuses:?}");

    let _ = unload_all(&url, hand_backs);
    let after = rss_mib(pid);
    let (_, ps) = call(&format!("{url}/api/ps"), None);
    let memory = &ps["memory"];
    // The result cache is bounded and reported: it may keep its bytes.
    let cache = memory["cache_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64;
    let slack = 24.0;
    eprintln!("RSS {base:.1} MiB after one load and unload, {after:.1} MiB after churn; {memory}");
    assert!(
        after <= base + cache + slack,
        "RSS {after:.1} MiB after churn and unload, {base:.1} MiB after one load and unload \
         (+ {cache:.1} MiB of cached results, + {slack} MiB): {memory}"
    );
    // Nothing is kept for a model that is not there.
    assert_eq!(memory["scratch_bytes"], 0, "{memory}");
    assert!(memory["hand_backs"].as_u64().unwrap_or(0) >= 2, "{memory}");
}
