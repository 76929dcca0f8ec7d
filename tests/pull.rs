//! `modeldock pull` (the real binary, downloading through hf-hub) against a
//! stand-in for the Hugging Face Hub: `tests/python/hub_server.py`, started
//! here on 127.0.0.1 with `HF_ENDPOINT` pointing at it and `HF_HOME` in a
//! temporary folder.
#![cfg(feature = "hub")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const REPO: &str = "lmz/candle-yolo-v8";
const FILE: &str = "yolov8n.safetensors";
const SIZE: usize = 3_000_000;
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Deterministic bytes that do not compress or repeat.
fn payload(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(b: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// The commit the stand-in reports for a repo.
fn commit_of(repo: &str) -> String {
    hex(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("commit:{repo}").as_bytes(),
    )
    .as_ref())
}

struct Hub {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hub {
    /// Serves `REPO/FILE` (SIZE bytes) and `REPO/config.json`, with `flags`
    /// (`--cut`, `--bad-sha`) passed to the server.
    fn start(flags: &[&str]) -> Hub {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = root.path().join(REPO);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join(FILE), payload(SIZE)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("config.json"), b"{\"classes\": 80}\n").unwrap_or_else(|e| panic!("{e}"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/hub_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(root.path())
            .args(["--port", "0", "--max-seconds", "240"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {}: {e}", script.display()));
        let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the stand-in hub did not start: {line:?}")
            });
        Hub {
            child,
            port,
            root,
            home: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests the server has answered (its own log excluded).
    fn requests(&self) -> Vec<Value> {
        let mut r = ureq::get(format!("{}/__requests", self.endpoint()))
            .call()
            .unwrap_or_else(|e| panic!("/__requests: {e}"));
        let s = r.body_mut().read_to_string().unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str::<Vec<Value>>(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    fn repo_dir(&self) -> PathBuf {
        self.home
            .path()
            .join("hub")
            .join(format!("models--{}", REPO.replace('/', "--")))
    }

    fn snapshot_file(&self, file: &str) -> PathBuf {
        self.repo_dir().join("snapshots").join(commit_of(REPO)).join(file)
    }

    fn blobs(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(self.repo_dir().join("blobs"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| {
                        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                        (e.file_name().to_string_lossy().to_string(), len)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn modeldock(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_modeldock"));
        c.args(args)
            .env_remove("MODELDOCK_MODELS")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_TOKEN")
            .env("MODELDOCK_HOST", common::no_server())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("HF_ENDPOINT", self.endpoint())
            .env("HF_HOME", self.home.path());
        for (k, v) in env {
            c.env(k, v);
        }
        run_bounded(c)
    }

    fn pull(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut a = vec!["pull"];
        a.extend_from_slice(args);
        self.modeldock(&a, env)
    }
}

/// Runs a command to its end, killing it after RUN_LIMIT.
fn run_bounded(mut c: Command) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("modeldock: {e}"));
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = reader(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if t0.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("modeldock ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A failed command's stderr ends in exactly one `error:` line; that line.
fn one_line_error(o: &Output) -> String {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "expected a failure; stderr:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{err}");
    assert_eq!(err.lines().last(), Some(errors[0]), "the error ends the output:\n{err}");
    errors[0].to_string()
}

fn ok(o: &Output) -> (String, String) {
    assert!(o.status.success(), "pull failed: {}", text(&o.stderr));
    (text(&o.stdout), text(&o.stderr))
}

#[test]
fn first_pull_downloads_with_byte_progress_into_the_hf_cache_layout() {
    let hub = Hub::start(&[]);
    let (out, err) = ok(&hub.pull(&[REPO, FILE], &[]));
    // Progress in bytes, up to the whole file.
    let progress: Vec<u64> = err
        .lines()
        .filter_map(|l| l.split_once(" bytes ("))
        .filter_map(|(done, _)| done.strip_suffix(&format!("/{SIZE}"))?.parse().ok())
        .collect();
    assert!(progress.len() >= 5, "progress lines:\n{err}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&(SIZE as u64)), "{err}");
    assert!(err.contains("sha256 verified"), "{err}");

    // The Hugging Face layout: snapshot link → blob named by the sha256, ref → commit.
    let snap = hub.snapshot_file(FILE);
    assert_eq!(out.trim(), snap.display().to_string());
    let want = payload(SIZE);
    let link = std::fs::read_link(&snap).unwrap_or_else(|e| panic!("{}: {e}", snap.display()));
    assert_eq!(link, Path::new("../../blobs").join(sha256(&want)));
    assert_eq!(std::fs::read(&snap).unwrap_or_default(), want);
    let main_ref = std::fs::read_to_string(hub.repo_dir().join("refs/main")).unwrap_or_default();
    assert_eq!(main_ref.trim(), commit_of(REPO));
    // Nothing half-written is left behind.
    assert!(
        hub.blobs().iter().all(|(n, _)| !n.ends_with(".part")),
        "{:?}",
        hub.blobs()
    );

    // A small (non-LFS) file is checked against its git blob sha1.
    let (_, err) = ok(&hub.pull(&[REPO, "config.json"], &[]));
    assert!(err.contains("git-sha1 verified"), "{err}");
}

#[test]
fn second_pull_hits_the_cache_and_makes_no_request() {
    let hub = Hub::start(&[]);
    // Before: the hub model says how to get its weights.
    let models = |h: &Hub| -> Value {
        let o = h.modeldock(&["models", "--json"], &[]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v.as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == "yolov8n").cloned())
            .unwrap_or_else(|| panic!("no yolov8n in {v}"))
    };
    let before = models(&hub);
    let hint = before["weights_missing"].as_str().unwrap_or_default();
    assert!(hint.contains("modeldock pull yolov8n"), "{before}");

    // The manifest's hub reference: `pull yolov8n` fetches lmz/candle-yolo-v8 yolov8n.safetensors.
    let (first, _) = ok(&hub.pull(&["yolov8n"], &[]));
    let n = hub.requests().len();
    assert!(n >= 2, "{:?}", hub.requests());
    let (second, err) = ok(&hub.pull(&[REPO, FILE], &[]));
    assert_eq!(first, second);
    assert!(err.contains("already in the cache"), "{err}");
    let (_, _) = ok(&hub.pull(&["yolov8n"], &[]));
    assert_eq!(
        hub.requests().len(),
        n,
        "a cache hit made requests: {:?}",
        hub.requests()
    );

    // The registry now finds the weights where pull put them.
    let after = models(&hub);
    assert!(after["weights_missing"].is_null(), "{after}");
}

#[test]
fn a_cut_download_leaves_only_a_part_file_then_resumes_with_the_right_bytes() {
    let cut = SIZE / 2;
    let hub = Hub::start(&["--cut", &format!("{FILE}:{cut}:1")]);
    let e = one_line_error(&hub.pull(&[REPO, FILE, "--retries", "0"], &[]));
    assert!(e.contains(REPO) && e.contains(FILE), "{e}");
    assert!(e.contains(&format!("{cut} of {SIZE} bytes")), "{e}");
    // Nothing that looks complete: no snapshot entry, no blob under the sha's name.
    let want = payload(SIZE);
    let sha = sha256(&want);
    assert!(!hub.snapshot_file(FILE).exists());
    assert!(!hub.repo_dir().join("blobs").join(&sha).exists());
    assert!(
        hub.blobs().contains(&(format!("{sha}.part"), cut as u64)),
        "{:?}",
        hub.blobs()
    );

    let (out, err) = ok(&hub.pull(&[REPO, FILE, "--retries", "0"], &[]));
    assert!(err.contains(&format!("resuming at {cut}")), "{err}");
    let ranges: Vec<String> = hub
        .requests()
        .iter()
        .filter_map(|r| r["range"].as_str().map(str::to_string))
        .collect();
    assert!(ranges.contains(&format!("bytes={cut}-")), "{ranges:?}");
    let got = std::fs::read(out.trim()).unwrap_or_default();
    assert_eq!(got.len(), SIZE);
    assert_eq!(sha256(&got), sha);
}

#[test]
fn a_cut_download_resumes_within_one_pull() {
    let cut = SIZE / 3;
    let hub = Hub::start(&["--cut", &format!("{FILE}:{cut}:1")]);
    let (out, _) = ok(&hub.pull(&[REPO, FILE], &[]));
    let got = std::fs::read(out.trim()).unwrap_or_default();
    assert_eq!(sha256(&got), sha256(&payload(SIZE)));
    let ranges: Vec<String> = hub
        .requests()
        .iter()
        .filter_map(|r| r["range"].as_str().map(str::to_string))
        .collect();
    assert!(ranges.contains(&format!("bytes={cut}-")), "{ranges:?}");
}

#[test]
fn a_wrong_checksum_is_refused_and_nothing_stays_cached() {
    let hub = Hub::start(&["--bad-sha", FILE]);
    for _ in 0..2 {
        let e = one_line_error(&hub.pull(&[REPO, FILE], &[]));
        assert!(e.contains("checksum mismatch"), "{e}");
        assert!(e.contains(REPO) && e.contains(FILE), "{e}");
        assert!(!hub.snapshot_file(FILE).exists(), "the refused file is still linked");
        assert!(
            hub.blobs().iter().all(|(n, _)| n.ends_with(".lock")),
            "blobs left: {:?}",
            hub.blobs()
        );
    }
}

#[test]
fn a_missing_file_or_revision_is_a_one_line_404() {
    let hub = Hub::start(&[]);
    let o = hub.pull(&[REPO, "yolov9n.safetensors"], &[]);
    let e = one_line_error(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&format!("{REPO}/yolov9n.safetensors@main")) && e.contains("404"),
        "{e}"
    );

    let e = one_line_error(&hub.pull(&[&format!("{REPO}@v9"), FILE], &[]));
    assert!(e.contains(&format!("{REPO}/{FILE}@v9")) && e.contains("404"), "{e}");
    assert!(!hub.repo_dir().join("snapshots").exists());
}

#[test]
fn offline_mode_uses_the_cache_and_never_asks_the_hub() {
    let hub = Hub::start(&[]);
    let off = [("HF_HUB_OFFLINE", "1")];
    // A miss offline: one line, no request.
    let e = one_line_error(&hub.pull(&[REPO, FILE], &off));
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains(FILE), "{e}");
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());

    let (online, _) = ok(&hub.pull(&[REPO, FILE], &[]));
    let n = hub.requests().len();
    let (offline, err) = ok(&hub.pull(&[REPO, FILE], &off));
    assert_eq!(online, offline);
    assert!(err.contains("already in the cache"), "{err}");
    let e = one_line_error(&hub.pull(&[REPO, "config.json"], &off));
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains("config.json"), "{e}");
    assert_eq!(hub.requests().len(), n, "offline made requests: {:?}", hub.requests());
}

#[test]
fn a_whole_part_file_left_by_a_killed_run_restarts_cleanly() {
    let hub = Hub::start(&[]);
    let (out, _) = ok(&hub.pull(&[REPO, FILE], &[]));
    // As if killed after the last byte, before the rename: only `<sha>.part` remains.
    let sha = sha256(&payload(SIZE));
    let blobs = hub.repo_dir().join("blobs");
    std::fs::rename(blobs.join(&sha), blobs.join(format!("{sha}.part"))).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(out.trim()).unwrap_or_else(|e| panic!("{e}"));
    let (again, err) = ok(&hub.pull(&[REPO, FILE], &[]));
    assert_eq!(out, again);
    assert!(err.contains("sha256 verified"), "{err}");
    assert_eq!(sha256(&std::fs::read(again.trim()).unwrap_or_default()), sha);
    assert!(!blobs.join(format!("{sha}.part")).exists());
}

#[test]
fn a_damaged_cached_copy_is_fetched_again() {
    let hub = Hub::start(&[]);
    let (out, _) = ok(&hub.pull(&[REPO, FILE], &[]));
    let mut bytes = payload(SIZE);
    bytes[SIZE / 2] ^= 0xff;
    std::fs::write(out.trim(), &bytes).unwrap_or_else(|e| panic!("{e}"));
    let n = hub.requests().len();
    let (again, err) = ok(&hub.pull(&[REPO, FILE], &[]));
    assert_eq!(out, again);
    assert!(!err.contains("already in the cache"), "{err}");
    assert!(hub.requests().len() > n);
    assert_eq!(
        sha256(&std::fs::read(again.trim()).unwrap_or_default()),
        sha256(&payload(SIZE))
    );
}

#[test]
fn hf_token_and_hf_hub_cache_are_honoured() {
    let hub = Hub::start(&[]);
    let elsewhere = hub.home.path().join("elsewhere");
    let cache = elsewhere.display().to_string();
    let (out, _) = ok(&hub.pull(
        &[REPO, FILE],
        &[("HF_TOKEN", "hf_modeldock_test"), ("HF_HUB_CACHE", &cache)],
    ));
    let want = elsewhere
        .join("models--lmz--candle-yolo-v8/snapshots")
        .join(commit_of(REPO))
        .join(FILE);
    assert_eq!(out.trim(), want.display().to_string());
    assert!(!hub.repo_dir().exists(), "wrote under HF_HOME/hub despite HF_HUB_CACHE");
    let reqs = hub.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r["auth"], "Bearer hf_modeldock_test", "{r}");
    }
    // The LFS file came through the CDN redirect, as from the Hub.
    assert!(
        reqs.iter()
            .any(|r| r["path"].as_str().unwrap_or("").starts_with("/__cdn/")),
        "{reqs:?}"
    );
}

/// A full disk: the part file is a link to `/dev/full`, so every write fails with ENOSPC.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_a_one_line_error() {
    if !Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here; skipped");
        return;
    }
    let hub = Hub::start(&[]);
    let blobs = hub.repo_dir().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("{e}"));
    let sha = sha256(&payload(SIZE));
    std::os::unix::fs::symlink("/dev/full", blobs.join(format!("{sha}.part"))).unwrap_or_else(|e| panic!("{e}"));
    let e = one_line_error(&hub.pull(&[REPO, FILE], &[]));
    assert!(
        e.contains("no space left") && e.contains(&format!("{REPO}/{FILE}@main")),
        "{e}"
    );
    assert!(!hub.snapshot_file(FILE).exists());
    assert!(!blobs.join(&sha).exists());
}

/// The one test in this binary that sets `HF_ENDPOINT` / `HF_HOME` in its own
/// process (the others pass them to a child), for an in-process engine.
fn hub_env(hub: &Hub) {
    std::env::set_var("HF_ENDPOINT", hub.endpoint());
    std::env::set_var("HF_HOME", hub.home.path());
    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HF_HUB_OFFLINE");
}

/// A load progress event: (downloading, bytes done, bytes total).
type Step = (bool, u64, u64);

/// One infer request, with the load progress events of `id` seen meanwhile.
fn infer_watching(engine: &modeldock::engine::Engine, id: &str) -> (Result<(), String>, Vec<Step>) {
    use modeldock::engine::{Event, ImageInput};
    let events = engine.subscribe(100_000);
    let e2 = engine.clone();
    let model = id.to_string();
    let request = std::thread::spawn(move || {
        let input = ImageInput::Bytes {
            name: "x.png".into(),
            bytes: std::sync::Arc::new(common::png(24, 24)),
        };
        e2.infer_wait(&model, input, modeldock::vision::InferParams::default())
            .map(|_| ())
            .map_err(|e| e.error)
    });
    let t0 = Instant::now();
    while !request.is_finished() {
        assert!(t0.elapsed() < common::WAIT, "no answer within {:?}", common::WAIT);
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = request.join().unwrap_or_else(|_| panic!("the request thread panicked"));
    let mut progress = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let Event::LoadProgress {
            model,
            bytes_done,
            bytes_total,
            downloading,
            ..
        } = ev
        {
            if model == id {
                progress.push((downloading, bytes_done, bytes_total));
            }
        }
    }
    (answer, progress)
}

#[test]
fn an_engine_load_downloads_missing_hub_weights_first_then_loads() {
    use modeldock::catalog::registry::Registry;
    use modeldock::engine::Engine;

    let hub = Hub::start(&[]);
    // A real (toy) model's weights, served by the stand-in as org/toy-hub.
    let made = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    modeldock::models::toy::write_toy_model(made.path(), "src", 1 << 20, "", &[]).unwrap_or_else(|e| panic!("{e}"));
    let weights = std::fs::read(made.path().join("src/toy.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let served = hub.root.path().join("org/toy-hub");
    std::fs::create_dir_all(&served).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(served.join("toy.safetensors"), &weights).unwrap_or_else(|e| panic!("{e}"));

    // Two hub manifests: one whose file the hub has, one whose file it lacks (yet).
    let models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let manifest = |id: &str, file: &str| {
        let d = models.path().join(id);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        let toml = format!(
            "id = \"{id}\"\nname = \"Hub toy {id}\"\ntask = \"detect\"\narch = \"toy\"\n\
             weights = {{ repo = \"org/toy-hub\", file = \"{file}\" }}\ninput_size = 32\n\
             labels = [\"toy\"]\nlicence = \"CC0-1.0\"\n\n[options]\npad_elems = {}\nsize_bytes = {}\n",
            1 << 20,
            weights.len()
        );
        std::fs::write(d.join("model.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    };
    manifest("hubtoy", "toy.safetensors");
    manifest("later", "later.safetensors");
    hub_env(&hub);
    let cached = hub
        .home
        .path()
        .join("hub/models--org--toy-hub/snapshots")
        .join(commit_of("org/toy-hub"));

    let reg = Registry::discover(&[models.path().to_path_buf()]);
    assert!(reg.get("hubtoy").is_some(), "{:?}", reg.problems);
    let engine = Engine::start(reg.clone(), common::config(), None);
    let before = engine.status("hubtoy").unwrap_or_else(|| panic!("no hubtoy"));
    assert!(before.weights_missing.is_some(), "{before:?}");
    assert_eq!(before.download_bytes, Some(weights.len() as u64), "{before:?}");

    // An infer request waits through the download and the load.
    let (answer, progress) = infer_watching(&engine, "hubtoy");
    answer.unwrap_or_else(|e| panic!("the request failed: {e}"));
    let first_load = progress.iter().position(|p| !p.0);
    let downloads: Vec<_> = progress.iter().filter(|p| p.0).collect();
    assert!(!downloads.is_empty(), "no download progress: {progress:?}");
    assert!(first_load.is_some(), "no load progress: {progress:?}");
    assert!(
        progress[first_load.unwrap_or(0)..].iter().all(|p| !p.0),
        "download progress after the load began: {progress:?}"
    );
    let last_download = downloads[downloads.len() - 1];
    assert_eq!(
        (last_download.1, last_download.2),
        (weights.len() as u64, weights.len() as u64),
        "{progress:?}"
    );
    let got = std::fs::read(cached.join("toy.safetensors")).unwrap_or_else(|e| panic!("not in the HF cache: {e}"));
    assert!(got == weights, "the cached file differs from the served one");
    let now = engine.status("hubtoy").unwrap_or_else(|| panic!("no hubtoy"));
    assert_eq!(now.state.to_string(), "Resident", "{now:?}");
    assert!(now.weights_missing.is_none() && now.download_bytes.is_none(), "{now:?}");

    // A file the hub lacks: the load fails with the download's one-line 404,
    // and a retry once the hub has it works.
    engine.load("later").unwrap_or_else(|e| panic!("{e}"));
    common::wait_state(&engine, "later", "Failed");
    let reason = engine.status("later").and_then(|m| m.failed_reason).unwrap_or_default();
    assert!(
        reason.contains("org/toy-hub/later.safetensors") && reason.contains("404") && !reason.contains('\n'),
        "{reason}"
    );
    std::fs::write(served.join("later.safetensors"), &weights).unwrap_or_else(|e| panic!("{e}"));
    engine.load("later").unwrap_or_else(|e| panic!("{e}"));
    common::wait_state(&engine, "later", "Resident");
    engine.shutdown();
    drop(engine);

    // A second engine finds the weights local: no download, no request.
    let n = hub.requests().len();
    let engine = Engine::start(
        Registry::discover(&[models.path().to_path_buf()]),
        common::config(),
        None,
    );
    let again = engine.status("hubtoy").unwrap_or_else(|| panic!("no hubtoy"));
    assert!(
        again.weights_missing.is_none() && again.download_bytes.is_none(),
        "{again:?}"
    );
    let (answer, progress) = infer_watching(&engine, "hubtoy");
    answer.unwrap_or_else(|e| panic!("the request failed: {e}"));
    assert!(progress.iter().all(|p| !p.0), "downloaded again: {progress:?}");
    assert_eq!(hub.requests().len(), n, "requests: {:?}", hub.requests());
    engine.shutdown();
}

#[test]
fn a_sharded_checkpoint_pulls_its_index_and_every_shard_with_progress_across_all() {
    let hub = Hub::start(&[]);
    // A toy written as an index and 3 shards, served from the repo's `sharded/` folder.
    let made = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let toy =
        modeldock::models::toy_shards::write_big_toy(made.path(), "t", 3 << 20, 3).unwrap_or_else(|e| panic!("{e}"));
    let served = hub.root.path().join(REPO).join("sharded");
    std::fs::create_dir_all(&served).unwrap_or_else(|e| panic!("{e}"));
    let mut names = vec!["model.safetensors.index.json".to_string()];
    names.extend(
        toy.sharded
            .1
            .iter()
            .map(|p| p.file_name().unwrap_or_default().to_string_lossy().to_string()),
    );
    for n in &names {
        std::fs::copy(made.path().join("t-sharded").join(n), served.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    let shard_bytes: u64 = toy
        .sharded
        .1
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();

    let (out, err) = ok(&hub.pull(&[REPO, "sharded/model.safetensors.index.json"], &[]));
    assert_eq!(
        out.trim(),
        hub.snapshot_file("sharded/model.safetensors.index.json")
            .display()
            .to_string()
    );
    // Every shard is in the cache, byte for byte.
    for n in &names {
        let got = std::fs::read(hub.snapshot_file(&format!("sharded/{n}"))).unwrap_or_default();
        let want = std::fs::read(served.join(n)).unwrap_or_default();
        assert!(!want.is_empty() && got == want, "{n} not pulled whole");
    }
    // Progress counts bytes across all shards: it rises to their sum.
    let progress: Vec<(u64, u64)> = err
        .lines()
        .filter_map(|l| l.split_once(" bytes ("))
        .filter_map(|(d, _)| d.split_once('/'))
        .filter_map(|(d, t)| Some((d.parse().ok()?, t.parse().ok()?)))
        .collect();
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0), "{err}");
    assert_eq!(progress.last().map(|p| p.0), Some(shard_bytes), "{err}");
    assert!(err.contains("3 shards"), "{err}");

    // A second pull makes no request.
    let before = hub.requests().len();
    let (_, err) = ok(&hub.pull(&[REPO, "sharded/model.safetensors.index.json"], &[]));
    assert!(err.contains("already in the cache"), "{err}");
    assert_eq!(hub.requests().len(), before);

    // A shard the hub does not have: one line naming it.
    let hub2 = Hub::start(&[]);
    let served2 = hub2.root.path().join(REPO).join("sharded");
    std::fs::create_dir_all(&served2).unwrap_or_else(|e| panic!("{e}"));
    for n in names.iter().filter(|n| !n.contains("00002-of")) {
        std::fs::copy(served.join(n), served2.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    let o = hub2.pull(&[REPO, "sharded/model.safetensors.index.json"], &[]);
    let msg = one_line_error(&o);
    assert!(msg.contains("model-00002-of-00003.safetensors"), "{msg}");
}

/// A user's ONNX path from the Hub: `pull` an `.onnx` file into the cache,
/// `import onnx` it from there, and the imported model runs as the file
/// does (`verify --onnx` on the cached path against ONNX Runtime's output).
#[test]
fn a_pulled_onnx_file_imports_and_verifies() {
    let hub = Hub::start(&[]);
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/ops/conv_1x1");
    let onnx = std::fs::read(ops.join("model.onnx")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(hub.root.path().join(REPO).join("conv.onnx"), &onnx).unwrap_or_else(|e| panic!("{e}"));
    let (out, _) = ok(&hub.pull(&[REPO, "conv.onnx"], &[]));
    let cached = out.trim().to_string();
    assert_eq!(
        std::fs::read(&cached).unwrap_or_default(),
        onnx,
        "the cached file is the hub's"
    );
    let models = hub.home.path().join("models").join("conv");
    let dir = models.display().to_string();
    let (_, err) = ok(&hub.modeldock(&["import", "onnx", &cached, "--out", &dir, "--id", "conv"], &[]));
    assert!(models.join("model.toml").exists(), "{err}");
    let (input, expected) = (ops.join("input.safetensors"), ops.join("expected.safetensors"));
    let (out, err) = ok(&hub.modeldock(
        &[
            "verify",
            "--onnx",
            &cached,
            "--input",
            &input.display().to_string(),
            "--expected",
            &expected.display().to_string(),
        ],
        &[],
    ));
    assert!(
        out.contains("max abs diff") || err.contains("max abs diff"),
        "{out}{err}"
    );
    // The imported model is listed from its folder.
    let (out, err) = ok(&hub.modeldock(
        &[
            "models",
            "--models-dir",
            &hub.home.path().join("models").display().to_string(),
        ],
        &[],
    ));
    assert!(out.contains("conv"), "{out}{err}");
}
