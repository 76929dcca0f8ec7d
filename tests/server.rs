//! `modeldock serve` driven over real HTTP on an ephemeral loopback port:
//! the Open Inference Protocol v2 endpoints, the residency API, metrics, the
//! event stream and the server's bounds.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use modeldock::catalog::registry::Registry;
use modeldock::client::HttpClient;
use modeldock::engine::{Engine, EngineConfig, ImageInput};
use modeldock::server::{self, ServerHandle, ServerOptions};
use modeldock::vision::InferParams;
use serde_json::{json, Value};

struct Served {
    handle: Option<ServerHandle>,
    engine: Engine,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.engine.shutdown();
    }
}

fn serve(reg: Registry, cfg: EngineConfig, opts: ServerOptions) -> Served {
    let engine = Engine::start(reg.clone(), cfg, None);
    let listener =
        server::bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("bind: {e}"));
    let handle = server::start(engine.clone(), opts, listener).unwrap_or_else(|e| panic!("start: {e}"));
    let base = format!("http://{}", handle.addr);
    Served {
        handle: Some(handle),
        engine,
        base,
    }
}

fn builtin() -> Registry {
    Registry::discover(&[])
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// (status, headers we care about, body)
fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let s = r.status().as_u16();
    (s, r.body_mut().read_to_string().unwrap_or_default())
}

fn post(url: &str, body: &[u8], headers: &[(&str, String)]) -> (u16, Option<String>, Option<usize>, Vec<u8>) {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let mut r = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let s = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let hl = r
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let b = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_default();
    (s, retry, hl, b)
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

fn image(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("images/{name}"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json_infer_body(images: &[Vec<u8>]) -> Vec<u8> {
    let data: Vec<String> = images
        .iter()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        .collect();
    json!({"inputs": [{"name": "IMAGE", "shape": [images.len()], "datatype": "BYTES", "data": data}]})
        .to_string()
        .into_bytes()
}

fn binary_infer_body(images: &[Vec<u8>], outputs: Value) -> (Vec<u8>, usize) {
    let mut tail = Vec::new();
    for b in images {
        tail.extend_from_slice(&(b.len() as u32).to_le_bytes());
        tail.extend_from_slice(b);
    }
    let head = json!({
        "inputs": [{"name": "IMAGE", "shape": [images.len()], "datatype": "BYTES",
                    "parameters": {"binary_data_size": tail.len()}}],
        "outputs": outputs,
    })
    .to_string();
    let n = head.len();
    let mut body = head.into_bytes();
    body.extend_from_slice(&tail);
    (body, n)
}

fn output<'a>(resp: &'a Value, name: &str) -> &'a Value {
    resp["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no output {name} in {resp}"))
}

fn detections(resp: &Value) -> Vec<Value> {
    output(resp, "DETECTIONS")["data"]
        .as_array()
        .unwrap_or_else(|| panic!("DETECTIONS has no data"))
        .iter()
        .map(|s| serde_json::from_str(s.as_str().unwrap_or("")).unwrap_or(Value::Null))
        .collect()
}

#[test]
fn health_metadata_and_repository_index() {
    let s = serve(builtin(), config(), ServerOptions::default());
    assert_eq!(get(&format!("{}/v2/health/live", s.base)).0, 200);
    assert_eq!(get(&format!("{}/v2/health/ready", s.base)).0, 200);
    let (st, meta) = get(&format!("{}/v2", s.base));
    assert_eq!(st, 200);
    let meta: Value = serde_json::from_str(&meta).unwrap_or_default();
    for ext in ["binary_tensor_data", "model_repository", "statistics"] {
        assert!(
            meta["extensions"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x == ext)),
            "{meta}"
        );
    }
    let (st, m) = get(&format!("{}/v2/models/face-detector", s.base));
    assert_eq!(st, 200);
    let m: Value = serde_json::from_str(&m).unwrap_or_default();
    assert_eq!(m["inputs"][0]["name"], "IMAGE");
    assert_eq!(m["inputs"][0]["datatype"], "BYTES");
    let (_, _, _, idx) = post(&format!("{}/v2/repository/index", s.base), b"{}", &[]);
    let idx = json_of(&idx);
    let fd = idx
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "face-detector"))
        .unwrap_or_else(|| panic!("face-detector not in {idx}"));
    assert_eq!(fd["state"], "UNAVAILABLE");
    // Unknown models and endpoints are 404 with a one-line JSON error.
    let (st, body) = get(&format!("{}/v2/models/nope", s.base));
    assert_eq!(st, 404);
    assert!(body.contains("unknown model 'nope'"), "{body}");
    assert_eq!(get(&format!("{}/v2/nothing", s.base)).0, 404);
}

#[test]
fn repository_load_and_unload_change_readiness_and_ps_counts_loads() {
    let s = serve(builtin(), config(), ServerOptions::default());
    let ready = |b: &str| get(&format!("{b}/v2/models/face-detector/ready")).0;
    assert_ne!(ready(&s.base), 200);
    let (st, ..) = post(&format!("{}/v2/repository/models/face-detector/load", s.base), b"", &[]);
    assert_eq!(st, 200);
    assert_eq!(ready(&s.base), 200);
    let ps = HttpClient::new(&s.base).ps().unwrap_or_else(|e| panic!("{e}"));
    let row = &ps["models"][0];
    assert_eq!(row["id"], "face-detector");
    assert_eq!(row["state"], "Resident");
    assert_eq!(row["loads"], 1);
    for key in [
        "predicted_bytes",
        "measured_bytes",
        "pinned",
        "keep_alive",
        "expires_at",
        "in_flight",
    ] {
        assert!(row.get(key).is_some(), "/api/ps row lacks {key}: {row}");
    }
    let (st, ..) = post(
        &format!("{}/v2/repository/models/face-detector/unload", s.base),
        b"",
        &[],
    );
    assert_eq!(st, 200);
    assert_ne!(ready(&s.base), 200);
    let ps = HttpClient::new(&s.base).ps().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ps["models"].as_array().map(Vec::len), Some(0), "{ps}");
    let (st, _, _, b) = post(&format!("{}/v2/repository/models/nope/load", s.base), b"", &[]);
    assert_eq!(st, 404, "{}", String::from_utf8_lossy(&b));
}

#[test]
fn infer_with_json_and_binary_tensors_matches_the_engine() {
    let s = serve(builtin(), config(), ServerOptions::default());
    let img = image("astronaut.png");
    let local = s
        .engine
        .infer_wait(
            "face-detector",
            ImageInput::Bytes {
                name: "a".into(),
                bytes: Arc::new(img.clone()),
            },
            InferParams::default(),
        )
        .unwrap_or_else(|e| panic!("{}", e.error));
    assert!(!local.output.detections.is_empty());
    let want = serde_json::to_value(&local.output.detections).unwrap_or_default();

    let url = format!("{}/v2/models/face-detector/infer", s.base);
    let (st, _, hl, body) = post(
        &url,
        &json_infer_body(std::slice::from_ref(&img)),
        &[("Content-Type", "application/json".into())],
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hl, None);
    let resp = json_of(&body);
    assert_eq!(detections(&resp)[0]["detections"], want);
    assert_eq!(output(&resp, "COUNTS")["data"], json!([local.output.detections.len()]));
    let scores = output(&resp, "SCORES");
    assert_eq!(scores["shape"], json!([1, local.output.detections.len()]));
    let s0 = scores["data"][0].as_f64().unwrap_or(-1.0) as f32;
    assert!((s0 - local.output.detections[0].score).abs() < 1e-6);

    // Binary: the images in the tail, BOXES asked for in binary.
    let (body, n) = binary_infer_body(
        std::slice::from_ref(&img),
        json!([{"name": "DETECTIONS"}, {"name": "BOXES", "parameters": {"binary_data": true}}]),
    );
    let (st, _, hl, resp) = post(
        &url,
        &body,
        &[
            ("Content-Type", "application/octet-stream".into()),
            ("Inference-Header-Content-Length", n.to_string()),
        ],
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&resp));
    let hl = hl.unwrap_or_else(|| panic!("binary output without Inference-Header-Content-Length"));
    let head = json_of(&resp[..hl]);
    assert_eq!(detections(&head)[0]["detections"], want);
    let boxes = output(&head, "BOXES");
    assert_eq!(boxes["parameters"]["binary_data_size"], resp.len() - hl);
    let first: Vec<f32> = resp[hl..hl + 16]
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(first, local.output.detections[0].bbox.to_vec());
}

#[test]
fn a_batch_with_one_bad_image_answers_every_image() {
    let s = serve(builtin(), config(), ServerOptions::default());
    let imgs = vec![
        image("astronaut.png"),
        b"definitely not an image".to_vec(),
        image("camera.png"),
    ];
    let (st, _, _, body) = post(
        &format!("{}/v2/models/face-detector/infer", s.base),
        &json_infer_body(&imgs),
        &[("Content-Type", "application/json".into())],
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let resp = json_of(&body);
    let d = detections(&resp);
    assert_eq!(d.len(), 3);
    assert!(d[0]["detections"].is_array() && d[2]["detections"].is_array());
    let err = d[1]["error"].as_str().unwrap_or_default();
    assert!(err.contains("IMAGE[1]") && !err.contains('\n'), "{err}");
    let counts = output(&resp, "COUNTS")["data"].clone();
    let n0 = d[0]["detections"].as_array().map(Vec::len).unwrap_or(0);
    let n2 = d[2]["detections"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(counts, json!([n0, 0, n2]));
    let dmax = n0.max(n2);
    assert_eq!(output(&resp, "BOXES")["shape"], json!([3, dmax, 4]));
    assert_eq!(output(&resp, "CLASS_IDS")["shape"], json!([3, dmax]));
}

#[test]
fn bad_requests_are_400_with_one_line_errors_and_large_bodies_413() {
    let s = serve(
        builtin(),
        config(),
        ServerOptions {
            max_body: 64 << 10,
            ..Default::default()
        },
    );
    let url = format!("{}/v2/models/face-detector/infer", s.base);
    for body in [
        &b"not json"[..],
        br#"{"inputs":[]}"#,
        br#"{"inputs":[{"name":"IMAGE","shape":[2],"datatype":"BYTES","data":["aGVsbG8="]}]}"#,
        br#"{"inputs":[{"name":"IMAGE","shape":[1],"datatype":"BYTES","data":["aGVsbG8="]}],"parameters":{"conf":7}}"#,
    ] {
        let (st, _, _, b) = post(&url, body, &[("Content-Type", "application/json".into())]);
        assert_eq!(st, 400, "{}", String::from_utf8_lossy(body));
        let e = json_of(&b)["error"].as_str().unwrap_or_default().to_string();
        assert!(!e.is_empty() && !e.contains('\n'), "{e}");
    }
    let (st, ..) = post(
        &url,
        br#"{"inputs":[]}"#,
        &[("Inference-Header-Content-Length", "999".into())],
    );
    assert_eq!(st, 400);
    // The server answers 413 once the limit is passed and closes the
    // connection; a client still writing the rest may see the connection
    // reset before it reads that answer (a TCP race on the client's side).
    // So: a few tries, and the first answer read must be 413.
    let big = vec![b' '; 200 << 10];
    let st = (0..5)
        .find_map(|_| {
            agent()
                .post(&url)
                .header("Content-Type", "application/json")
                .send(&big[..])
                .ok()
                .map(|r| r.status().as_u16())
        })
        .unwrap_or(0);
    assert_eq!(st, 413);
    // The server still answers after all that.
    assert_eq!(get(&format!("{}/v2/health/live", s.base)).0, 200);
}

#[test]
fn stats_and_metrics_move_with_requests() {
    let s = serve(builtin(), config(), ServerOptions::default());
    let metric = |name: &str| -> f64 {
        let (_, text) = get(&format!("{}/metrics", s.base));
        text.lines()
            .find(|l| l.starts_with(name) && l.contains("face-detector"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(metric("nv_inference_request_success"), 0.0);
    let url = format!("{}/v2/models/face-detector/infer", s.base);
    let imgs = vec![image("astronaut.png"), b"bad".to_vec()];
    let (st, ..) = post(&url, &json_infer_body(&imgs), &[]);
    assert_eq!(st, 200);
    assert_eq!(metric("nv_inference_request_success"), 1.0);
    assert_eq!(metric("nv_inference_request_failure"), 1.0);
    assert_eq!(metric("modeldock_loads"), 1.0);
    assert!(metric("nv_inference_compute_infer_duration_us") > 0.0);
    let (st, text) = get(&format!("{}/metrics", s.base));
    assert_eq!(st, 200);
    assert!(text.contains("modeldock_budget_bytes"), "{text}");
    let (_, stats) = get(&format!("{}/v2/models/face-detector/stats", s.base));
    let stats: Value = serde_json::from_str(&stats).unwrap_or_default();
    let st = &stats["model_stats"][0];
    assert_eq!(st["inference_count"], 1);
    assert_eq!(st["inference_stats"]["success"]["count"], 1);
    assert_eq!(st["inference_stats"]["fail"]["count"], 1);
    assert!(
        st["inference_stats"]["compute_infer"]["ns"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
}

#[test]
fn events_stream_the_progress_of_a_slow_load() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "slow", &[("slow_load_ms", 800.0)]);
    let s = serve(
        Registry::discover(&[dir.path().to_path_buf()]),
        config(),
        ServerOptions::default(),
    );
    let client = HttpClient::new(&s.base);
    let (tx, rx) = crossbeam_channel::unbounded::<(String, Value)>();
    let follower = {
        let c = client.clone();
        std::thread::spawn(move || {
            let _ = c.follow_events(|name, v| {
                let _ = tx.send((name.to_string(), v.clone()));
                name != "loaded" && name != "failed"
            });
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let r = client
        .load("slow", Some("-1".into()), true, true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r["state"], "Resident");
    assert_eq!(r["pinned"], true);
    let _ = follower.join();
    let events: Vec<(String, Value)> = rx.try_iter().collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"progress"), "{names:?}");
    assert_eq!(names.last(), Some(&"loaded"), "{names:?}");
    let last_progress = events
        .iter()
        .rfind(|(n, _)| n == "progress")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        last_progress["bytes_total"].as_u64().unwrap_or(0) > 0,
        "{last_progress}"
    );
    // Unload through the API; pinned models still leave when asked.
    let u = client.unload(Some("slow")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(u["models"][0]["unloaded"], true, "{u}");
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "slow", &[("slow_forward_ms", 700.0)]);
    let s = serve(
        Registry::discover(&[dir.path().to_path_buf()]),
        config(),
        ServerOptions {
            max_queue: 1,
            ..Default::default()
        },
    );
    let url = format!("{}/v2/models/slow/infer", s.base);
    let body = json_infer_body(&[png(40, 30)]);
    let first = {
        let (url, body) = (url.clone(), body.clone());
        std::thread::spawn(move || post(&url, &body, &[]).0)
    };
    std::thread::sleep(Duration::from_millis(250));
    let (st, retry, _, b) = post(&url, &json_infer_body(&[png(41, 30)]), &[]);
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&b));
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(first.join().unwrap_or(0), 200);
}

#[test]
fn shutdown_lets_a_request_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "slow", &[("slow_forward_ms", 600.0)]);
    let mut s = serve(
        Registry::discover(&[dir.path().to_path_buf()]),
        config(),
        ServerOptions::default(),
    );
    let url = format!("{}/v2/models/slow/infer", s.base);
    let inflight = {
        let url = url.clone();
        std::thread::spawn(move || post(&url, &json_infer_body(&[png(40, 30)]), &[]))
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    if let Some(h) = s.handle.take() {
        h.shutdown();
    }
    let (st, _, _, body) = inflight.join().unwrap_or_else(|_| panic!("client thread"));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert!(detections(&json_of(&body))[0]["detections"].is_array());
    assert!(t.elapsed() < Duration::from_secs(10));
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(s.base.trim_start_matches("http://")).is_err());
}

#[test]
fn eight_clients_two_hundred_requests_each_get_one_answer() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "t", &[("slow_forward_ms", 2.0)]);
    let s = serve(
        Registry::discover(&[dir.path().to_path_buf()]),
        config(),
        ServerOptions {
            max_queue: 4,
            ..Default::default()
        },
    );
    let rss = || modeldock::telemetry::process::rss_bytes().unwrap_or(0);
    let before = rss();
    let url = format!("{}/v2/models/t/infer", s.base);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (url, b) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                let mut codes = Vec::new();
                for i in 0..25u32 {
                    let body = json_infer_body(&[png(32 + t, 20 + i)]);
                    codes.push(post(&url, &body, &[]).0);
                }
                codes
            })
        })
        .collect();
    let codes: Vec<u16> = threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect();
    assert_eq!(codes.len(), 200, "every request answered exactly once");
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert!(codes.contains(&200));
    assert_eq!(get(&format!("{}/v2/health/live", s.base)).0, 200);
    let grown = rss().saturating_sub(before);
    assert!(grown < 512 << 20, "RSS grew by {} MiB", grown >> 20);
}

#[test]
fn a_client_that_never_finishes_its_body_times_out() {
    use std::io::{Read, Write};
    let s = serve(
        builtin(),
        config(),
        ServerOptions {
            timeout: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("{e}"));
    let head = format!(
        "POST /v2/models/face-detector/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"inputs\""
    );
    conn.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let mut buf = [0u8; 512];
    let n = conn.read(&mut buf).unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(15));
    // Other clients are served meanwhile and after.
    assert_eq!(get(&format!("{}/v2/health/live", s.base)).0, 200);
}

#[test]
fn with_an_api_key_every_request_needs_the_bearer_token() {
    let s = serve(
        builtin(),
        config(),
        ServerOptions {
            access: modeldock::server::security::Access {
                admin_key: modeldock::server::security::Secret::new(Some("s3cret".into())),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let url = format!("{}/api/ps", s.base);
    let (st, body) = get(&url);
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("API key"), "{body}");
    let wrong = agent()
        .get(&url)
        .header("Authorization", "Bearer nope")
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(wrong, 401);
    let right = agent()
        .get(&url)
        .header("Authorization", "Bearer s3cret")
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(right, 200);
}

/// One catalogue: a model registered with the engine while its server runs
/// (an import in the app) is known to the server at once, with no copy of
/// the registry to go stale.
#[test]
fn a_model_registered_while_serving_is_served_at_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "first", &[]);
    let s = serve(
        Registry::discover(&[dir.path().to_path_buf()]),
        config(),
        ServerOptions::default(),
    );
    let (status, _) = get(&format!("{}/v2/models/later", s.base));
    assert_eq!(status, 404, "not registered yet");
    let more = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(more.path(), "later", &[]);
    let found = Registry::discover(&[more.path().to_path_buf()]);
    let entry = found
        .get("later")
        .cloned()
        .unwrap_or_else(|| panic!("no manifest for 'later': {:?}", found.problems));
    s.engine.register(entry).unwrap_or_else(|e| panic!("register: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = 0;
    while Instant::now() < deadline {
        last = get(&format!("{}/v2/models/later", s.base)).0;
        if last == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(last, 200, "the server does not know the registered model");
    assert!(s.engine.catalog().get("later").is_some());
    // It loads through the same door as the models found at start.
    let (code, body) = {
        let r = post(
            &format!("{}/api/load", s.base),
            br#"{"model":"later"}"#,
            &[("content-type", "application/json".into())],
        );
        (r.0, String::from_utf8_lossy(&r.3).to_string())
    };
    assert_eq!(code, 200, "{body}");
    let (status, body) = get(&format!("{}/v2/models/later/ready", s.base));
    assert_eq!(status, 200, "a registered model, once loaded, is ready: {body}");
}
