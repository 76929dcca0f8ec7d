//! Remote network backends against real servers nobody here wrote: NVIDIA
//! Triton (the `tritonserver` of PyPI nvidia-pytriton, CPU only) and
//! MLServer, both serving the tiny face detector's network from our own
//! weights (onnxruntime on an ONNX graph `tests/python/face_onnx.py` builds),
//! and modeldock itself. Every server binds 127.0.0.1 on ports the test picks
//! and is killed when the test ends; every wait is bounded.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use modeldock::backend::V2Client;
use modeldock::catalog::registry::Registry;
use modeldock::client::v2_server;
use modeldock::engine::{Answer, Engine, EngineConfig, ImageInput, InferResult, ModelState};
use modeldock::vision::InferParams;

/// How long a server may take to become ready (Triton's Python backend
/// starts a stub process per model).
const START: Duration = Duration::from_secs(180);

fn venv_python(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".ci")
        .join(name)
        .join("bin/python");
    assert!(
        p.is_file(),
        "{} is missing: `bash .ci/deps` creates it (the README's test command runs it first)",
        p.display()
    );
    p
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(name)
}

/// A server process in its own process group, killed (the whole group) on drop.
struct Server {
    child: Option<Child>,
    base: String,
    metrics: String,
    cmd: Vec<String>,
    python: PathBuf,
    /// The server's own output, shown when it fails to start.
    log: tempfile::NamedTempFile,
}

impl Server {
    /// Starts the server on free ports; a port taken by another process
    /// between the pick and the bind (tests run side by side) means new
    /// ports and another try, at most three.
    fn start(python: PathBuf, script_name: &str, repo: &Path, load: &[&str]) -> Server {
        Server::start_with(python, script_name, repo, load, &[])
    }

    /// [`Server::start`] with more server arguments (after `--`).
    fn start_with(python: PathBuf, script_name: &str, repo: &Path, load: &[&str], extra: &[String]) -> Server {
        let mut why = String::new();
        for _ in 0..3 {
            let mut s = Server::configure(python.clone(), script_name, repo, load);
            if !extra.is_empty() {
                s.cmd.push("--".into());
                s.cmd.extend(extra.iter().cloned());
            }
            match s.try_spawn() {
                Ok(()) => return s,
                Err(e) if e.contains("already in use") || e.contains("in use") => why = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("three tries, every one lost a port race:\n{why}");
    }

    fn configure(python: PathBuf, script_name: &str, repo: &Path, load: &[&str]) -> Server {
        let (http, grpc, metrics) = (free_port(), free_port(), free_port());
        let mut cmd = vec![
            script(script_name).display().to_string(),
            "--repo".into(),
            repo.display().to_string(),
            "--http-port".into(),
            http.to_string(),
            "--grpc-port".into(),
            grpc.to_string(),
            "--metrics-port".into(),
            metrics.to_string(),
        ];
        if !load.is_empty() {
            cmd.push("--load".into());
            cmd.extend(load.iter().map(|s| s.to_string()));
        }
        let s = Server {
            child: None,
            base: format!("http://127.0.0.1:{http}"),
            metrics: format!("http://127.0.0.1:{metrics}/metrics"),
            cmd,
            python,
            log: tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}")),
        };
        s
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let child = Command::new(&self.python)
            .args(&self.cmd)
            .stdin(Stdio::null())
            .stdout(self.log.reopen().map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .stderr(self.log.reopen().map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.cmd[0]));
        self.child = Some(child);
        let r = self.wait_ready();
        if r.is_err() {
            self.kill();
        }
        r
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let end = Instant::now() + START;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "{} exited before it was ready: {st}\n{}",
                    self.cmd[0],
                    self.log_tail()
                ));
            }
            // Triton may log a busy port and stay up without serving.
            let tail = self.log_tail();
            if tail.contains("already in use") {
                return Err(format!("{}: a port is already in use\n{tail}", self.cmd[0]));
            }
            let ok = agent
                .get(format!("{}/v2/health/ready", self.base))
                .call()
                .map(|r| r.status().as_u16() == 200)
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!("{} not ready after {START:?}\n{}", self.base, self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the whole process group and waits for it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The server is its process group's leader (process_group(0)):
            // the group is the server and its backend stubs, nothing else.
            if let Ok(pgid) = i32::try_from(c.id()) {
                if pgid > 1 {
                    // SAFETY: kill(2) with a negative pid signals that process group only.
                    unsafe {
                        libc::kill(-pgid, libc::SIGKILL);
                    }
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports (after [`Server::kill`]), without
    /// any model loaded.
    fn restart_empty(&mut self) {
        if let Some(i) = self.cmd.iter().position(|a| a == "--load") {
            self.cmd.truncate(i);
        }
        let end = Instant::now() + Duration::from_secs(30);
        // The ports are free again once the killed process is reaped.
        while std::net::TcpListener::bind(self.base.trim_start_matches("http://")).is_err() {
            assert!(Instant::now() < end, "port of {} never freed", self.base);
            std::thread::sleep(Duration::from_millis(100));
        }
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn triton(repo: &Path, load: &[&str]) -> Server {
    Server::start(venv_python("venv-triton"), "triton_serve.py", repo, load)
}

/// A Triton whose shared-memory, repository, statistics, trace and logging
/// APIs want `triton-access-token: TOKEN`: the arguments PyTriton 0.7's
/// `TritonSecurityConfig(access_token=TOKEN)` gives tritonserver (its
/// default restricted endpoints, over HTTP and gRPC).
fn triton_with_token(repo: &Path, load: &[&str], token: &str) -> Server {
    let value = format!("shared-memory,model-repository,statistics,trace,logging:triton-access-token={token}");
    let extra = [
        format!("--http-restricted-api={value}"),
        format!("--grpc-restricted-protocol={value}"),
    ];
    Server::start_with(venv_python("venv-triton"), "triton_serve.py", repo, load, &extra)
}

fn mlserver(repo: &Path, load: &[&str]) -> Server {
    Server::start(venv_python("venv-mlserver"), "mlserver_serve.py", repo, load)
}

/// A models folder with `id`: the built-in face detector's manifest with
/// its network on `base` as `tiny_face`.
fn remote_face_manifest(dir: &Path, id: &str, base: &str) {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    let toml = format!(
        "id = \"{id}\"\nname = \"Tiny face detector on a v2 server\"\ntask = \"detect\"\narch = \"tiny_face_detector\"\n\
         input_size = 416\nlabels = [\"face\"]\nconf = 0.5\niou = 0.4\nlicence = \"MIT\"\n\
         backend = {{ url = \"{base}\", model = \"tiny_face\", input = \"input\", output = \"output\", timeout = \"20s\" }}\n"
    );
    std::fs::write(d.join("model.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
}

fn no_cache() -> EngineConfig {
    EngineConfig {
        cache_entries: 0,
        ..config()
    }
}

fn images() -> Vec<PathBuf> {
    [
        "images/astronaut.png",
        "images/camera.png",
        "human-models/images/sample2.png",
    ]
    .iter()
    .map(|r| fixture(r))
    .filter(|p| p.is_file())
    .collect()
}

fn run(e: &Engine, model: &str, img: &Path) -> Answer {
    e.infer_wait(model, ImageInput::Path(img.to_path_buf()), InferParams::default())
}

fn ok(a: Answer) -> InferResult {
    a.unwrap_or_else(|e| panic!("{}: {}", e.model, e.error))
}

/// Same detections: count, score within 1e-3, box within 0.1 px.
fn assert_same(local: &InferResult, remote: &InferResult) {
    let (a, b) = (&local.output.detections, &remote.output.detections);
    assert_eq!(a.len(), b.len(), "{}: {a:?} vs {b:?}", local.image);
    for (x, y) in a.iter().zip(b) {
        assert!((x.score - y.score).abs() <= 1e-3, "score {} vs {}", x.score, y.score);
        for k in 0..4 {
            assert!((x.bbox[k] - y.bbox[k]).abs() <= 0.1, "box {:?} vs {:?}", x.bbox, y.bbox);
        }
    }
}

fn index_state(base: &str, model: &str) -> String {
    let c = V2Client::shared(base, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    c.index()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|r| r.name == model)
        .map(|r| r.state)
        .unwrap_or_else(|| panic!("{model} is not in {base}'s index"))
}

fn wait_index(base: &str, model: &str, ready: bool) {
    let end = Instant::now() + WAIT;
    loop {
        let s = index_state(base, model);
        if s.eq_ignore_ascii_case("READY") == ready {
            return;
        }
        assert!(Instant::now() < end, "{model} on {base} stayed {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn triton_runs_the_face_detectors_network_with_the_same_detections_and_follows_load_and_unload() {
    let repo = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = triton(repo.path(), &[]);
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    remote_face_manifest(models.path(), "face-triton", &server.base);
    let reg = Registry::discover(&[models.path().to_path_buf()]);
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let e = Engine::start(reg, no_cache(), None);
    // Nothing is loaded on the server until modeldock loads it.
    assert!(!index_state(&server.base, "tiny_face").eq_ignore_ascii_case("READY"));

    let imgs = images();
    assert!(imgs.len() >= 2);
    let mut faces = 0;
    for img in &imgs {
        let local = ok(run(&e, "face-detector", img));
        let remote = ok(run(&e, "face-triton", img));
        assert_same(&local, &remote);
        faces += remote.output.detections.len();
    }
    assert!(faces > 0, "the images have faces");
    wait_index(&server.base, "tiny_face", true);

    // Its memory is the server's: nothing is charged here.
    let st = e.status("face-triton").unwrap_or_else(|| panic!("no status"));
    assert_eq!(st.state, ModelState::Resident);
    assert_eq!((st.predicted_bytes, st.measured_bytes), (0, Some(0)));
    let remote = st.remote.unwrap_or_else(|| panic!("no remote status"));
    assert!(
        remote.backend.contains("tiny_face on http://127.0.0.1:"),
        "{}",
        remote.backend
    );
    assert_eq!(remote.unreachable, None);

    // Unload in modeldock unloads it on Triton; load loads it again.
    e.unload("face-triton").unwrap_or_else(|e| panic!("{e}"));
    wait_state(&e, "face-triton", "Available");
    wait_index(&server.base, "tiny_face", false);
    e.load("face-triton").unwrap_or_else(|e| panic!("{e}"));
    wait_state(&e, "face-triton", "Resident");
    wait_index(&server.base, "tiny_face", true);

    // The round trip splits into network / queue / compute from the
    // server's statistics (read by the client's health thread).
    for img in &imgs {
        ok(run(&e, "face-triton", img));
    }
    let split = e.wait_for(WAIT, |s| {
        s.models
            .iter()
            .any(|m| m.id == "face-triton" && m.remote.as_ref().is_some_and(|r| r.split.is_some()))
    });
    assert!(split, "no round-trip split for face-triton");
    let sp = e
        .status("face-triton")
        .and_then(|m| m.remote)
        .and_then(|r| r.split)
        .unwrap_or_else(|| panic!("no split"));
    assert!(sp.compute_ms > 0.0 && sp.round_trip_ms >= sp.compute_ms, "{sp:?}");
    e.shutdown();
}

#[test]
fn a_triton_that_stops_gives_clean_errors_and_an_unreachable_state_then_modeldock_recovers_by_itself() {
    let repo = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut server = triton(repo.path(), &["tiny_face"]);
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    remote_face_manifest(models.path(), "face-triton", &server.base);
    let (e, _) = engine_for(models.path(), no_cache());
    let img = fixture("images/astronaut.png");
    let before = ok(run(&e, "face-triton", &img));
    assert!(!before.output.detections.is_empty());

    server.kill();
    // Each request fails on its own, with a one-line error naming the server.
    for _ in 0..3 {
        let err = run(&e, "face-triton", &img)
            .err()
            .unwrap_or_else(|| panic!("an answer from a stopped server"));
        assert!(err.error.contains("unreachable since"), "{}", err.error);
        assert!(!err.error.contains('\n'), "{}", err.error);
    }
    // Other models keep being served meanwhile.
    ok(run(&e, "face-detector", &img));
    let shown = e.wait_for(WAIT, |s| {
        s.models.iter().any(|m| {
            m.id == "face-triton"
                && m.remote
                    .as_ref()
                    .and_then(|r| r.unreachable.as_deref())
                    .is_some_and(|u| u.contains("retrying"))
        })
    });
    assert!(
        shown,
        "the panel state never said unreachable: {:?}",
        e.status("face-triton")
    );
    assert_eq!(e.status("face-triton").map(|m| m.state), Some(ModelState::Resident));

    // Back, without the model loaded: the health check clears the state, and
    // the next request loads it there again and is answered.
    server.restart_empty();
    let cleared = e.wait_for(WAIT, |s| {
        s.models
            .iter()
            .any(|m| m.id == "face-triton" && m.remote.as_ref().is_some_and(|r| r.unreachable.is_none()))
    });
    assert!(cleared, "still unreachable: {:?}", e.status("face-triton"));
    let after = ok(run(&e, "face-triton", &img));
    assert_same(&before, &after);
    assert!(index_state(&server.base, "tiny_face").eq_ignore_ascii_case("READY"));
    e.shutdown();
}

#[test]
fn attached_to_triton_its_index_is_the_registry_raw_models_load_but_are_not_run_on_images() {
    let repo = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = triton(repo.path(), &["tiny_face"]);
    assert_eq!(
        v2_server::probe(&server.base).unwrap_or_else(|e| panic!("{e}")),
        v2_server::ServerKind::Other("triton".into())
    );
    // A local manifest names tiny_face on this server: it keeps its decoder.
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    remote_face_manifest(models.path(), "face-triton", &server.base);
    let local = Registry::discover(&[models.path().to_path_buf()]);
    let a = v2_server::attach(&server.base, "triton", &local, Some(server.metrics.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<(&str, &str)> = a
        .registry
        .entries
        .iter()
        .map(|e| (e.manifest.id.as_str(), e.manifest.arch.name()))
        .collect();
    assert!(ids.contains(&("face-triton", "tiny_face_detector")), "{ids:?}");
    assert!(ids.contains(&("raw_identity", "raw")), "{ids:?}");
    assert_eq!(a.registry.entries.len(), 2, "{ids:?}");

    let e = Engine::start(a.registry.clone(), no_cache(), None);
    // The server's own states show, from its index.
    let shown = e.wait_for(WAIT, |s| {
        s.models.iter().any(|m| {
            m.id == "face-triton" && m.remote.as_ref().and_then(|r| r.server_state.as_deref()) == Some("READY")
        })
    });
    assert!(shown, "{:?}", e.status("face-triton"));
    assert!(e.status("raw_identity").and_then(|m| m.remote).is_some_and(|r| r.raw));

    e.load("raw_identity").unwrap_or_else(|e| panic!("{e}"));
    wait_state(&e, "raw_identity", "Resident");
    wait_index(&server.base, "raw_identity", true);
    let err = run(&e, "raw_identity", &fixture("images/astronaut.png"))
        .err()
        .unwrap_or_else(|| panic!("a raw model ran on an image"));
    assert!(err.error.contains("raw-tensor model"), "{}", err.error);
    e.unload("raw_identity").unwrap_or_else(|e| panic!("{e}"));
    wait_index(&server.base, "raw_identity", false);

    // A CPU-only Triton's metrics have no GPU gauges: read, and none.
    let end = Instant::now() + WAIT;
    while a.client.gpu_metrics().is_none() {
        assert!(Instant::now() < end, "the metrics were never read");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(a.client.gpu_metrics(), Some(None));
    let text = a
        .client
        .metrics_text(Some(&server.metrics))
        .unwrap_or_else(|| panic!("no metrics at {}", server.metrics));
    assert!(text.contains("nv_inference_count"), "not Triton's metrics");
    e.shutdown();
}

#[test]
fn mlserver_runs_the_network_over_json_tensors_with_the_same_detections() {
    let repo = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = mlserver(repo.path(), &[]);
    let c = V2Client::shared(&server.base, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.binary_tensors(), "MLServer advertises no binary tensor extension");
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    remote_face_manifest(models.path(), "face-mlserver", &server.base);
    let (e, _) = engine_for(models.path(), no_cache());
    for img in images() {
        let local = ok(run(&e, "face-detector", &img));
        let remote = ok(run(&e, "face-mlserver", &img));
        assert_same(&local, &remote);
    }
    wait_index(&server.base, "tiny_face", true);
    e.unload("face-mlserver").unwrap_or_else(|e| panic!("{e}"));
    wait_index(&server.base, "tiny_face", false);
    e.shutdown();
}

/// Runs the modeldock binary; (exit code, stdout, stderr).
fn modeldock(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    cli(args, env)
}

#[test]
fn the_cli_on_a_triton_lists_its_index_loads_unloads_and_infers_through_it() {
    let repo = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = triton(repo.path(), &[]);
    let host = server.base.as_str();
    let env = [("MODELDOCK_HOST", host)];
    let (code, out, err) = modeldock(&["ps"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("triton at") && out.contains("raw_identity") && out.contains("tiny_face"),
        "{out}"
    );

    let (code, _, err) = modeldock(&["load", "raw_identity"], &env);
    assert_eq!(code, 0, "{err}");
    wait_index(host, "raw_identity", true);
    let (code, _, err) = modeldock(&["unload", "raw_identity"], &env);
    assert_eq!(code, 0, "{err}");
    wait_index(host, "raw_identity", false);
    let (code, _, err) = modeldock(&["pin", "raw_identity"], &env);
    assert_ne!(code, 0);
    assert!(err.contains("triton"), "{err}");

    // infer: pre/post here, the network on Triton; the same JSON as local.
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    remote_face_manifest(models.path(), "face-triton", host);
    let img = fixture("images/astronaut.png");
    let img = img.to_string_lossy();
    let dir = models.path().to_string_lossy();
    let (code, remote, err) = modeldock(
        &["infer", "--model", "face-triton", "--json", "--models-dir", &dir, &img],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the network there"), "{err}");
    let (code, local, err) = modeldock(&["infer", "--local", "--model", "face-detector", "--json", &img], &[]);
    assert_eq!(code, 0, "{err}");
    let dets = |s: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(s.lines().next().unwrap_or("")).unwrap_or_default();
        v["detections"].clone()
    };
    let (a, b) = (dets(&local), dets(&remote));
    let (a, b) = (
        a.as_array().cloned().unwrap_or_default(),
        b.as_array().cloned().unwrap_or_default(),
    );
    assert!(!a.is_empty() && a.len() == b.len(), "{local} vs {remote}");
    for (x, y) in a.iter().zip(&b) {
        let ds = (x["score"].as_f64().unwrap_or(0.0) - y["score"].as_f64().unwrap_or(9.0)).abs();
        assert!(ds <= 1e-3, "{x} vs {y}");
    }
}

#[test]
fn a_triton_with_an_access_token_is_read_with_remote_headers_and_its_refusal_names_the_header() {
    let repo = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let token = "tok-3b9e51c7";
    let server = triton_with_token(repo.path(), &["tiny_face"], token);
    let host = server.base.as_str();
    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let empty_dir = empty.path().to_string_lossy().to_string();

    // Without the header: one line that names the header Triton asks for.
    let (code, out, err) = modeldock(
        &["models", "--json", "--models-dir", &empty_dir],
        &[("MODELDOCK_HOST", host)],
    );
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("triton-access-token") && err.contains("403"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // With it (the variable, then the flag): the repository is read.
    let hdr = format!("triton-access-token={token}");
    for (args, env) in [
        (
            vec!["models", "--json"],
            vec![("MODELDOCK_HOST", host), ("MODELDOCK_REMOTE_HEADERS", hdr.as_str())],
        ),
        (
            vec!["models", "--json", "--remote-header", hdr.as_str()],
            vec![("MODELDOCK_HOST", host)],
        ),
    ] {
        let (code, out, err) = modeldock(&args, &env);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let names: Vec<&str> = v["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["model"].as_str())
            .collect();
        assert!(names.contains(&"tiny_face") && names.contains(&"raw_identity"), "{out}");
        assert!(!err.contains(token) && !out.contains(token), "the token is printed");
    }
    let ready = ureq::get(format!("{host}/v2/models/tiny_face/ready"))
        .header("triton-access-token", token)
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(ready, 200);

    // Refused index, local manifests name models there: listed from them.
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    remote_face_manifest(models.path(), "face-triton", host);
    let dir = models.path().to_string_lossy().to_string();
    let (code, out, err) = modeldock(&["models", "--json", "--models-dir", &dir], &[("MODELDOCK_HOST", host)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("local backend manifests") && err.contains("triton-access-token"),
        "{err}"
    );
    assert!(out.contains("tiny_face") && out.contains("READY"), "{out}");

    // A backend manifest with `headers` loads (repository API) and infers.
    let secured = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = secured.path().join("face-token");
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    let toml = format!(
        "id = \"face-token\"\nname = \"Tiny face detector behind a token\"\ntask = \"detect\"\narch = \"tiny_face_detector\"\n\
         input_size = 416\nlabels = [\"face\"]\nconf = 0.5\niou = 0.4\nlicence = \"MIT\"\n\
         backend = {{ url = \"{host}\", model = \"tiny_face\", input = \"input\", output = \"output\", timeout = \"20s\", \
         headers = {{ \"triton-access-token\" = \"${{TRITON_TOKEN}}\" }} }}\n"
    );
    std::fs::write(d.join("model.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let sdir = secured.path().to_string_lossy().to_string();
    let img = fixture("images/astronaut.png");
    let img = img.to_string_lossy().to_string();
    let args = [
        "infer",
        "--local",
        "--model",
        "face-token",
        "--json",
        "--models-dir",
        &sdir,
        &img,
    ];
    let none = no_server();
    let (code, out, err) = modeldock(&args, &[("MODELDOCK_HOST", none.as_str()), ("TRITON_TOKEN", token)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"detections\""), "{out}");
    let (code, _, err) = modeldock(&args, &[("MODELDOCK_HOST", none.as_str())]);
    assert_ne!(code, 0);
    assert!(err.contains("TRITON_TOKEN"), "{err}");
}

#[test]
fn a_modeldock_server_is_the_remote_of_another_modeldock_with_identical_results() {
    let port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .env_remove("MODELDOCK_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("serve: {e}"));
    let base = format!("http://127.0.0.1:{port}");
    let end = Instant::now() + WAIT;
    while !modeldock::client::HttpClient::new(&base).is_live() {
        assert!(Instant::now() < end, "modeldock serve never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        v2_server::probe(&base).unwrap_or_else(|e| panic!("{e}")),
        v2_server::ServerKind::Modeldock
    );
    let img = fixture("images/astronaut.png");
    let img = img.to_string_lossy();
    let (c1, remote, e1) = modeldock(
        &["infer", "--model", "objects", "--json", &img],
        &[("MODELDOCK_HOST", &base)],
    );
    let (c2, local, e2) = modeldock(&["infer", "--local", "--model", "objects", "--json", &img], &[]);
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!((c1, c2), (0, 0), "{e1} / {e2}");
    let strip = |s: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(s.lines().next().unwrap_or("")).unwrap_or_default();
        v["detections"].clone()
    };
    assert!(strip(&local).as_array().is_some_and(|a| !a.is_empty()), "{local}");
    assert_eq!(strip(&local), strip(&remote));
}

/// `modeldock serve` with `dir`'s models on a free port; killed on drop.
struct Serve(Child, String);

impl Serve {
    fn start(dir: &Path) -> Serve {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_modeldock"))
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--models-dir",
            ])
            .arg(dir)
            .env_remove("MODELDOCK_HOST")
            .env_remove("MODELDOCK_MODELS")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("serve: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let s = Serve(child, base);
        let end = Instant::now() + WAIT;
        while !modeldock::client::HttpClient::new(&s.1).is_live() {
            assert!(Instant::now() < end, "modeldock serve never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_manifest(dir: &Path, id: &str, body: &str) {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        d.join("model.toml"),
        format!("id = \"{id}\"\nname = \"{id}\"\nlicence = \"MIT\"\n{body}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_modeldock_server_is_the_network_backend_of_another_modeldock_with_identical_results() {
    // The serving side: YOLOv8n (the fixture's random weights) next to the built-in face detector.
    let served = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let yolo = "task = \"detect\"\narch = \"yolov8\"\nvariant = \"n\"\ninput_size = 640\nconf = 0.6\n";
    write_manifest(
        served.path(),
        "yolo-served",
        &format!("{yolo}weights = \"weights.safetensors\"\n"),
    );
    std::fs::copy(
        fixture("yolov8n-random/weights.safetensors"),
        served.path().join("yolo-served/weights.safetensors"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let server = Serve::start(served.path());

    // This side: the same models run here, and with their networks there.
    let here = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_manifest(
        here.path(),
        "yolo-local",
        &format!("{yolo}weights = \"weights.safetensors\"\n"),
    );
    std::fs::copy(
        fixture("yolov8n-random/weights.safetensors"),
        here.path().join("yolo-local/weights.safetensors"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let backend = |model: &str| {
        format!(
            "backend = {{ url = \"{}\", model = \"{model}\", input = \"NETWORK_INPUT\", output = \"NETWORK_OUTPUT\" }}\n",
            server.1
        )
    };
    write_manifest(here.path(), "yolo-remote", &format!("{yolo}{}", backend("yolo-served")));
    write_manifest(
        here.path(),
        "face-remote",
        &format!(
            "task = \"detect\"\narch = \"tiny_face_detector\"\ninput_size = 416\nlabels = [\"face\"]\nconf = 0.5\niou = 0.4\n{}",
            backend("face-detector")
        ),
    );
    let reg = Registry::discover(&[here.path().to_path_buf()]);
    assert!(reg.problems.is_empty(), "{:?}", reg.problems);
    let e = Engine::start(reg, no_cache(), None);
    let json = |r: &InferResult| serde_json::to_value(&r.output.detections).unwrap_or_default();
    let mut objects = 0;
    for img in images() {
        let (a, b) = (ok(run(&e, "face-detector", &img)), ok(run(&e, "face-remote", &img)));
        assert_eq!(json(&a), json(&b), "{}", img.display());
        let (a, b) = (ok(run(&e, "yolo-local", &img)), ok(run(&e, "yolo-remote", &img)));
        assert_eq!(json(&a), json(&b), "{}", img.display());
        objects += a.output.detections.len();
    }
    assert!(objects > 0, "the random YOLO finds something to compare");
    // The serving side holds the networks; this side holds none of them.
    let st = e.status("yolo-remote").unwrap_or_else(|| panic!("no status"));
    assert_eq!((st.state, st.predicted_bytes), (ModelState::Resident, 0));
    // A wrong input shape is refused there with a one-line error.
    let c = V2Client::shared(&server.1, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let x = modeldock::v2::Tensor32 {
        shape: vec![1, 3, 8, 8],
        data: vec![0.0; 192],
    };
    let err = c
        .infer("face-detector", "NETWORK_INPUT", &x, "NETWORK_OUTPUT")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("this model takes [1, 3, 416, 416]"), "{err}");
    e.shutdown();
}

#[cfg(feature = "gui")]
mod app {
    use super::common::app::step_until;
    use super::*;
    use eframe::egui;
    use egui_kittest::kittest::Queryable;
    use egui_kittest::Harness;
    use modeldock::client::{Client, LateWake};
    use modeldock::ui::app::{AppOptions, ModeldockApp};
    use modeldock::ui::log_capture::LogBuffer;

    #[test]
    fn the_app_with_remote_shows_a_tritons_index_with_its_states_and_why_raw_models_are_not_offered() {
        let repo = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let server = triton(repo.path(), &["tiny_face"]);
        let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        remote_face_manifest(models.path(), "face-triton", &server.base);
        let local = Registry::discover(&[models.path().to_path_buf()]);
        let a = v2_server::attach(&server.base, "triton", &local, Some(server.metrics.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let base = server.base.clone();
        let mut h = Harness::builder()
            .with_size(egui::vec2(1500.0, 900.0))
            .build_eframe(move |cc| {
                let wake = LateWake::default();
                let engine = Engine::start(a.registry.clone(), no_cache(), Some(wake.as_wake()));
                ModeldockApp::new(
                    cc,
                    AppOptions {
                        client: Client::attached(engine, std::sync::Arc::new(a)),
                        wake,
                        problems: Vec::new(),
                        open: Vec::new(),
                        model: Some("face-triton".into()),
                        telemetry: false,
                        log: LogBuffer::default(),
                        live: None,
                        exit_after: None,
                    },
                )
            });
        step_until(&mut h, "the server's models", |h| {
            h.query_by_label("raw_identity").is_some() && h.query_by_label("server: READY").is_some()
        });
        assert!(
            h.query_by_label_contains(&format!("triton at {base}")).is_some(),
            "the status bar names the server"
        );
        assert!(h.query_by_label("raw tensors: not offered for images").is_some());
        assert!(h.query_by_label_contains("tiny_face on http://127.0.0.1:").is_some());
        drop(h);
    }
}
