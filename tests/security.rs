//! What a web page, a rebinding DNS name or a key with too little scope can
//! do to the server: each attack is sent over real HTTP to the real server
//! on an ephemeral loopback port, and each case checks the status and that
//! the engine did not change (`/api/ps` before and after). Then keys kept
//! out of the snapshot and the log, and the https transport with a CA of the
//! test's own (`MODELDOCK_CA_BUNDLE`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use modeldock::engine::Engine;
use modeldock::server::security::{Access, Secret};
use modeldock::server::{self, ServerHandle, ServerOptions};
use serde_json::Value;

struct Served {
    handle: Option<ServerHandle>,
    engine: Engine,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.engine.shutdown();
    }
}

/// A server over two toy models, `a` resident (so unloads would show).
fn serve(access: Access) -> Served {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "a", &[]);
    toy(dir.path(), "b", &[]);
    let (engine, _) = engine_for(dir.path(), config());
    let listener =
        server::bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("bind: {e}"));
    let opts = ServerOptions {
        access,
        ..Default::default()
    };
    let handle = server::start(engine.clone(), opts, listener).unwrap_or_else(|e| panic!("start: {e}"));
    let addr = handle.addr.to_string();
    engine.load("a").unwrap_or_else(|e| panic!("{e}"));
    wait_state(&engine, "a", "Resident");
    Served {
        handle: Some(handle),
        engine,
        addr,
        _dir: dir,
    }
}

/// Request headers, as written.
type Headers<'a> = Vec<(&'a str, &'a str)>;

struct Resp {
    status: u16,
    head: String,
    body: String,
}

/// One request written by hand, so `Host`, `Origin` and `Content-Type` are
/// exactly what a browser (or an attacker) would send.
fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Resp {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// What `/api/ps` says is in memory: ids, states and pins.
fn ps(addr: &str, key: Option<&str>) -> Vec<(String, String, bool)> {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h = vec![];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    let r = send(addr, "GET", "/api/ps", &h, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    let mut rows: Vec<(String, String, bool)> = v["models"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or("").to_string(),
                m["state"].as_str().unwrap_or("").to_string(),
                m["pinned"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Every route that changes the engine, with a body that would work.
fn mutating_routes() -> Vec<(&'static str, String)> {
    let png = png(32, 32);
    let b64 = base64_encode(&png);
    vec![
        ("/api/load", r#"{"model":"b"}"#.to_string()),
        ("/api/unload", r#"{"all":true}"#.to_string()),
        ("/api/pin", r#"{"model":"a"}"#.to_string()),
        ("/v2/repository/models/b/load", "{}".to_string()),
        ("/v2/repository/models/a/unload", "{}".to_string()),
        (
            "/v2/models/b/infer",
            format!(r#"{{"inputs":[{{"name":"IMAGE","shape":[1],"datatype":"BYTES","data":["{b64}"]}}]}}"#),
        ),
    ]
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn browser_requests_from_foreign_origins_hosts_and_simple_bodies_are_refused_and_change_nothing() {
    let s = serve(Access::default());
    let before = ps(&s.addr, None);
    assert_eq!(before.len(), 1, "{before:?}");
    let json = ("Content-Type", "application/json");
    for (path, body) in mutating_routes() {
        let cases: [(&str, Headers, u16); 5] = [
            ("foreign Origin", vec![json, ("Origin", "http://evil.example")], 403),
            ("foreign Host", vec![json, ("Host", "evil.example:8765")], 403),
            ("rebinding Host", vec![json, ("Host", "127.0.0.1.evil.example")], 403),
            ("text/plain body", vec![("Content-Type", "text/plain")], 415),
            (
                "form body",
                vec![("Content-Type", "application/x-www-form-urlencoded")],
                415,
            ),
        ];
        for (what, headers, want) in cases {
            let r = send(&s.addr, "POST", path, &headers, &body);
            assert_eq!(r.status, want, "{what} on {path}: {}", r.body);
            assert!(r.body.contains("\"error\""), "{what} on {path}: {}", r.body);
            assert!(!r.head.contains("access-control-allow-origin"), "{what} on {path}");
            assert_eq!(ps(&s.addr, None), before, "{what} on {path} changed the engine");
        }
    }
    // Reading is refused to a foreign Host too (DNS rebinding reads answers).
    for path in ["/api/ps", "/api/snapshot", "/metrics", "/v2/models/a"] {
        let r = send(&s.addr, "GET", path, &[("Host", "attacker.example")], "");
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.body.contains("MODELDOCK_ALLOWED_HOSTS"), "{}", r.body);
    }
    // The same requests from loopback pages and from programs are served.
    let r = send(
        &s.addr,
        "POST",
        "/api/load",
        &[json, ("Origin", "http://localhost:3000")],
        r#"{"model":"b"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.head.contains("access-control-allow-origin: http://localhost:3000"),
        "{}",
        r.head
    );
    let r = send(
        &s.addr,
        "POST",
        "/api/pin",
        &[("Host", "localhost:1")],
        r#"{"model":"b"}"#,
    );
    assert_eq!(
        r.status, 200,
        "an untyped JSON body (tritonclient's) is accepted: {}",
        r.body
    );
    assert_eq!(ps(&s.addr, None).len(), 2);
}

#[test]
fn preflight_answers_allowed_origins_only_and_binary_bodies_need_their_header() {
    let s = serve(Access::default());
    let before = ps(&s.addr, None);
    let pre = |origin: &str| {
        send(
            &s.addr,
            "OPTIONS",
            "/api/unload",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            "",
        )
    };
    let ok = pre("http://127.0.0.1:5173");
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert!(
        ok.head.contains("access-control-allow-origin: http://127.0.0.1:5173"),
        "{}",
        ok.head
    );
    assert!(ok.head.contains("access-control-allow-headers"), "{}", ok.head);
    let refused = pre("https://evil.example");
    assert_eq!(refused.status, 403);
    assert!(
        !refused.head.contains("access-control-allow-origin"),
        "{}",
        refused.head
    );
    // octet-stream without the binary extension's header, and a binary body
    // labelled as something else.
    let r = send(
        &s.addr,
        "POST",
        "/v2/models/b/infer",
        &[("Content-Type", "application/octet-stream")],
        "x",
    );
    assert_eq!(r.status, 415, "{}", r.body);
    let r = send(
        &s.addr,
        "POST",
        "/v2/models/b/infer",
        &[("Content-Type", "text/plain"), ("Inference-Header-Content-Length", "1")],
        "{",
    );
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(ps(&s.addr, None), before);
}

#[test]
fn the_infer_key_runs_inference_and_reads_but_cannot_load_unload_or_pin() {
    let s = serve(Access {
        admin_key: Secret::new(Some("admin-key-7f3a".into())),
        infer_key: Secret::new(Some("infer-key-91c2".into())),
        ..Access::default()
    });
    let before = ps(&s.addr, Some("admin-key-7f3a"));
    let infer = ("Authorization", "Bearer infer-key-91c2");
    let json = ("Content-Type", "application/json");
    for (path, body) in mutating_routes() {
        if path.ends_with("/infer") {
            continue;
        }
        let r = send(&s.addr, "POST", path, &[infer, json], &body);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.body.contains("admin key"), "{}", r.body);
        assert!(!r.body.contains("infer-key-91c2"), "{}", r.body);
        assert_eq!(ps(&s.addr, Some("admin-key-7f3a")), before, "{path}");
    }
    assert_eq!(
        ps(&s.addr, Some("infer-key-91c2")),
        before,
        "the infer key reads /api/ps"
    );
    let png = base64_encode(&png(32, 32));
    let body = format!(r#"{{"inputs":[{{"name":"IMAGE","shape":[1],"datatype":"BYTES","data":["{png}"]}}]}}"#);
    let r = send(&s.addr, "POST", "/v2/models/a/infer", &[infer, json], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    for (k, want) in [("Bearer wrong", 401), ("Basic admin-key-7f3a", 401)] {
        let r = send(&s.addr, "GET", "/api/ps", &[("Authorization", k)], "");
        assert_eq!(r.status, want, "{k}");
    }
    let r = send(
        &s.addr,
        "POST",
        "/api/pin",
        &[("Authorization", "Bearer admin-key-7f3a"), json],
        r#"{"model":"a"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `modeldock serve` as a process; its stderr kept for the log check.
struct ServeProcess {
    child: Child,
    addr: String,
    log: Arc<std::sync::Mutex<String>>,
}

impl ServeProcess {
    fn start(env: &[(&str, &str)]) -> ServeProcess {
        let mut c = Command::new(env!("CARGO_BIN_EXE_modeldock"));
        c.args(["serve", "--port", "0"])
            .env_remove("MODELDOCK_HOST")
            .env_remove("MODELDOCK_MODELS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("modeldock serve: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("http://").nth(1) {
                    let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_string());
                }
                if let Ok(mut g) = l.lock() {
                    g.push_str(&line);
                    g.push('\n');
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("serve did not say where it listens"));
        ServeProcess { child, addr, log }
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        self.log.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

#[test]
fn origins_hosts_and_keys_from_the_environment_and_keys_never_in_the_snapshot_or_the_log() {
    let (admin, infer) = ("adm-0d6e2b9f4c1a", "inf-5e8b7a3c2d10");
    let s = ServeProcess::start(&[
        ("MODELDOCK_ORIGINS", "https://*.example.com, app://modeldock"),
        ("MODELDOCK_ALLOWED_HOSTS", "proxy.lan"),
        ("MODELDOCK_API_KEY", admin),
        ("MODELDOCK_INFER_KEY", infer),
        ("MODELDOCK_LOG", "debug"),
    ]);
    let a = format!("Bearer {admin}");
    let auth = ("Authorization", a.as_str());
    let get = |headers: &[(&str, &str)]| send(&s.addr, "GET", "/api/ps", headers, "").status;
    assert_eq!(get(&[auth, ("Origin", "https://app.example.com")]), 200);
    assert_eq!(get(&[auth, ("Origin", "app://modeldock")]), 200);
    assert_eq!(get(&[auth, ("Origin", "https://example.com.evil.org")]), 403);
    assert_eq!(get(&[auth, ("Host", "proxy.lan:80")]), 200);
    assert_eq!(get(&[auth, ("Host", "other.lan")]), 403);
    assert_eq!(
        get(&[("Origin", "https://app.example.com")]),
        401,
        "origins do not replace keys"
    );
    // Wrong keys and refused requests, so the log has something to say.
    send(
        &s.addr,
        "POST",
        "/api/unload",
        &[("Authorization", &format!("Bearer {infer}"))],
        "{}",
    );
    send(&s.addr, "GET", "/api/ps", &[("Authorization", "Bearer wrong")], "");
    // The CLI with only the infer key: reads, but cannot unload.
    let host = format!("http://{}", s.addr);
    let (code, out, err) = cli(
        &["ps", "--json"],
        &[("MODELDOCK_HOST", &host), ("MODELDOCK_INFER_KEY", infer)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("models"), "{out}");
    let (code, _, err) = cli(
        &["unload", "--all"],
        &[("MODELDOCK_HOST", &host), ("MODELDOCK_INFER_KEY", infer)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("admin key") && !err.contains(infer), "{err}");
    let snap = send(&s.addr, "GET", "/api/snapshot", &[auth], "");
    assert_eq!(snap.status, 200);
    for k in [admin, infer] {
        assert!(!snap.body.contains(k), "a key in the snapshot");
    }
    let log = s.stop();
    assert!(log.contains("serving"), "{log}");
    for k in [admin, infer] {
        assert!(!log.contains(k), "a key in the log:\n{log}");
    }
}

// --- https with a CA of our own -------------------------------------------

struct Tls {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

/// A CA and a `localhost` / 127.0.0.1 certificate it signed.
fn tls() -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "modeldock test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap_or_else(|e| panic!("{e}"));
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap_or_else(|e| panic!("{e}"))
        .signed_by(&key, &issuer)
        .unwrap_or_else(|e| panic!("{e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    Tls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    }
}

/// Copies both ways between a TLS client and the plain server, until either
/// side closes (bounded: a minute per connection).
fn pump(mut tls: rustls::StreamOwned<rustls::ServerConnection, TcpStream>, mut up: TcpStream) {
    let tick = Some(Duration::from_millis(5));
    if tls.sock.set_read_timeout(tick).is_err() || up.set_read_timeout(tick).is_err() {
        return;
    }
    let idle = |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
    let mut buf = vec![0u8; 64 << 10];
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if up.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        match up.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|_| tls.flush()).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
    }
}

/// An https front on 127.0.0.1 for the plain server at `upstream`.
fn https_front(cfg: Arc<rustls::ServerConfig>, upstream: String) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for conn in l.incoming().take(64) {
            let (Ok(c), Ok(up)) = (conn, TcpStream::connect(&upstream)) else {
                continue;
            };
            let Ok(sc) = rustls::ServerConnection::new(cfg.clone()) else {
                continue;
            };
            std::thread::spawn(move || pump(rustls::StreamOwned::new(sc, c), up));
        }
    });
    port
}

#[test]
fn an_https_server_signed_by_an_unknown_ca_is_refused_until_modeldock_ca_bundle_names_it() {
    let s = serve(Access::default());
    let t = tls();
    let port = https_front(t.config.clone(), s.addr.clone());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &t.ca_pem).unwrap_or_else(|e| panic!("{e}"));
    let garbage = dir.path().join("not-a-ca.pem");
    std::fs::write(&garbage, "hello").unwrap_or_else(|e| panic!("{e}"));
    let host = format!("https://localhost:{port}");
    let ca_s = ca.display().to_string();
    let garbage_s = garbage.display().to_string();

    let (code, out, err) = cli(&["ps", "--json"], &[("MODELDOCK_HOST", &host)]);
    assert_ne!(code, 0, "{out}");
    assert!(err.to_ascii_lowercase().contains("certificate"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (code, out, err) = cli(
        &["ps", "--json"],
        &[("MODELDOCK_HOST", &host), ("MODELDOCK_CA_BUNDLE", &ca_s)],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(out.contains("\"a\""), "{v}");

    let (code, _, err) = cli(
        &["ps"],
        &[("MODELDOCK_HOST", &host), ("MODELDOCK_CA_BUNDLE", &garbage_s)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("MODELDOCK_CA_BUNDLE") && err.contains("not-a-ca.pem"),
        "{err}"
    );
}
