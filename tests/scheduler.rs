//! The engine's scheduler end to end, with toy models that take a set time
//! per forward: interactive images overtake a batch, a batch still finishes
//! under a constant interactive load (aging), `priority` reorders as
//! documented, a client that hangs up has its waiting images dropped; and
//! admission explained before it happens (`load --dry-run`). Behaviour only:
//! the order answers arrive in, never timings.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::{unbounded, Receiver, Sender};
use modeldock::engine::scheduler::{Class, Ticket};
use modeldock::engine::{Engine, EngineConfig, ImageInput, Reply};
use modeldock::vision::InferParams;

/// No result cache: every image runs.
fn no_cache() -> EngineConfig {
    EngineConfig {
        cache_entries: 0,
        ..config()
    }
}

/// An engine over toy models `(id, ms per forward)`, all resident, with
/// the default lanes (three on two cores or more).
fn engine(models: &[(&str, f64)]) -> (Engine, tempfile::TempDir) {
    engine_with(models, no_cache())
}

/// The same with one lane: every image runs after the one before.
fn one_lane(models: &[(&str, f64)]) -> (Engine, tempfile::TempDir) {
    engine_with(models, EngineConfig { lanes: 1, ..no_cache() })
}

fn engine_with(models: &[(&str, f64)], cfg: EngineConfig) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (id, ms) in models {
        toy(dir.path(), id, &[("slow_forward_ms", *ms)]);
    }
    let (engine, _) = engine_for(dir.path(), cfg);
    for (id, _) in models {
        engine.load(id).unwrap_or_else(|e| panic!("{e}"));
        wait_state(&engine, id, "Resident");
    }
    (engine, dir)
}

/// Submits one image; its tag arrives on `done` when it is answered.
fn submit(e: &Engine, model: &str, ticket: Ticket, tag: String, done: &Sender<(String, bool)>) {
    let tx = done.clone();
    let t = tag.clone();
    let reply = Reply::callback(move |a| {
        let _ = tx.send((t, a.is_ok()));
    });
    let input = ImageInput::Bytes {
        name: tag,
        bytes: Arc::new(png(16, 16)),
    };
    if let Err((err, _)) = e.try_infer_as(model, input, InferParams::default(), reply, ticket) {
        panic!("submit: {err}");
    }
}

fn next(rx: &Receiver<(String, bool)>) -> String {
    let (tag, ok) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no answer within 60 s"));
    assert!(ok, "{tag} failed");
    tag
}

/// `e` served over HTTP on an ephemeral loopback port (its own catalogue).
fn serve(e: &Engine) -> modeldock::server::ServerHandle {
    serve_with(e, modeldock::server::ServerOptions::default())
}

fn serve_with(e: &Engine, options: modeldock::server::ServerOptions) -> modeldock::server::ServerHandle {
    use modeldock::server;
    let listener =
        server::bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("bind: {e}"));
    server::start(e.clone(), options, listener).unwrap_or_else(|e| panic!("start: {e}"))
}

/// A v2 JSON request of `n` distinct small PNGs; `params` (`"parameters":{…},`)
/// goes first in the object.
fn infer_body(n: u32, params: &str) -> String {
    use base64::Engine as _;
    let data: Vec<String> = (0..n)
        .map(|i| base64::engine::general_purpose::STANDARD.encode(png(8 + i, 8)))
        .collect();
    serde_json::json!({"inputs": [{"name": "IMAGE", "shape": [n], "datatype": "BYTES", "data": data}]})
        .to_string()
        .replacen('{', &format!("{{{params}"), 1)
}

/// Sends a JSON infer request for `model` on a connection of its own and
/// returns the connection unread: dropping it hangs up.
fn send_unread(addr: &str, model: &str, body: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    let req = format!(
        "POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    c
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

#[test]
fn a_single_image_behind_a_20_image_batch_of_another_model_is_answered_before_its_third_image() {
    let (e, _dir) = engine(&[("batchy", 40.0), ("quick", 5.0)]);
    let (tx, rx) = unbounded();
    for i in 0..20 {
        submit(
            &e,
            "batchy",
            Ticket::new("batch", Class::Bulk, 0),
            format!("bulk{i}"),
            &tx,
        );
    }
    submit(
        &e,
        "quick",
        Ticket::new("viewer", Class::Interactive, 0),
        "click".into(),
        &tx,
    );
    let order: Vec<String> = (0..21).map(|_| next(&rx)).collect();
    let click = order.iter().position(|t| t == "click").unwrap_or(usize::MAX);
    assert!(
        click < 2,
        "the click was answered after {click} batch images: {order:?}"
    );
    // The batch itself still runs in its own order: two bulk lanes run
    // images in pairs, so each is answered near its turn (a slow one can be
    // overtaken by its partner lane's next image too on a loaded machine:
    // two places at most; a reordered queue would be far off).
    let bulk: Vec<usize> = order
        .iter()
        .filter_map(|t| t.strip_prefix("bulk"))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(bulk.len(), 20, "{order:?}");
    for (at, &i) in bulk.iter().enumerate() {
        assert!(at.abs_diff(i) <= 2, "bulk{i} answered {at}th: {order:?}");
    }
    e.shutdown();
}

#[test]
fn a_batch_still_finishes_under_a_constant_stream_of_interactive_requests() {
    let (e, _dir) = engine(&[("batchy", 10.0), ("live", 10.0)]);
    let (tx, rx) = unbounded();
    for i in 0..5 {
        submit(
            &e,
            "batchy",
            Ticket::new("batch", Class::Bulk, 0),
            format!("bulk{i}"),
            &tx,
        );
    }
    // Two interactive frames always waiting: a new one for each answered,
    // 300 in all (bounded), from one client.
    let total = 300;
    let mut sent = 0;
    for _ in 0..2 {
        submit(
            &e,
            "live",
            Ticket::new("live", Class::Interactive, 0),
            format!("frame{sent}"),
            &tx,
        );
        sent += 1;
    }
    let end = Instant::now() + Duration::from_secs(120);
    let (mut frames_done, mut bulk_done, mut frames_when_bulk_done) = (0, 0, None);
    while (frames_done < total || bulk_done < 5) && Instant::now() < end {
        let tag = next(&rx);
        if tag.starts_with("bulk") {
            bulk_done += 1;
            if bulk_done == 5 {
                frames_when_bulk_done = Some(frames_done);
            }
        } else {
            frames_done += 1;
            if sent < total {
                submit(
                    &e,
                    "live",
                    Ticket::new("live", Class::Interactive, 0),
                    format!("frame{sent}"),
                    &tx,
                );
                sent += 1;
            }
        }
    }
    let at = frames_when_bulk_done.unwrap_or_else(|| panic!("the batch did not finish: {bulk_done} of 5"));
    assert!(
        at < total / 2,
        "the batch finished only after {at} of {total} frames: aging should let it through early"
    );
    e.shutdown();
}

#[test]
fn priority_one_is_highest_and_zero_is_the_class_default() {
    // One lane, so everything after the first image waits and is ordered.
    let (e, _dir) = one_lane(&[("m", 30.0)]);
    let (tx, rx) = unbounded();
    // Something running, so the rest wait together and are ordered.
    submit(&e, "m", Ticket::new("x", Class::Bulk, 0), "first".into(), &tx);
    std::thread::sleep(Duration::from_millis(10));
    submit(&e, "m", Ticket::new("a", Class::Interactive, 3), "p3".into(), &tx);
    submit(&e, "m", Ticket::new("a", Class::Bulk, 0), "bulk-default".into(), &tx);
    submit(&e, "m", Ticket::new("a", Class::Bulk, 1), "bulk-p1".into(), &tx);
    submit(
        &e,
        "m",
        Ticket::new("a", Class::Interactive, 0),
        "interactive-default".into(),
        &tx,
    );
    let order: Vec<String> = (0..5).map(|_| next(&rx)).collect();
    assert_eq!(
        order,
        ["first", "bulk-p1", "interactive-default", "bulk-default", "p3"],
        "levels: p1 = interactive default = 1, bulk default = 2, p3 = 3; ties in arrival order"
    );
    e.shutdown();
}

#[test]
fn over_http_one_image_is_interactive_several_are_bulk_and_priority_is_read_and_checked() {
    let (e, _dir) = engine(&[("m", 5.0)]);
    let handle = serve(&e);
    let base = format!("http://{}", handle.addr);
    let agent = agent();
    let post = |b: String| {
        let mut r = agent
            .post(format!("{base}/v2/models/m/infer"))
            .header("Content-Type", "application/json")
            .send(b)
            .unwrap_or_else(|e| panic!("{e}"));
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    };
    assert_eq!(post(infer_body(4, "")).0, 200);
    assert_eq!(post(infer_body(1, r#""parameters":{"priority":1},"#)).0, 200);
    let (st, text) = post(infer_body(1, r#""parameters":{"priority":"high"},"#));
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("parameter 'priority'"), "{text}");
    let metrics = agent
        .get(format!("{base}/metrics"))
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .unwrap_or_default();
    let count = |class: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("modeldock_queue_requests") && l.contains(&format!("class=\"{class}\"")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!((count("bulk"), count("interactive")), (4.0, 1.0), "{metrics}");
    assert!(metrics.contains("nv_inference_pending_request_count"), "{metrics}");
    handle.shutdown();
    e.shutdown();
}

#[test]
fn a_client_that_disconnects_has_its_waiting_images_dropped_and_others_are_still_answered() {
    let (e, _dir) = engine(&[("m", 100.0)]);
    let handle = serve(&e);
    let addr = handle.addr.to_string();
    // Client A: 8 images (800 ms of work), then it hangs up after 250 ms.
    let a = send_unread(&addr, "m", &infer_body(8, ""));
    std::thread::sleep(Duration::from_millis(250));
    drop(a);
    // Client B is served.
    let st = agent()
        .post(format!("http://{addr}/v2/models/m/infer"))
        .header("Content-Type", "application/json")
        .send(infer_body(1, ""))
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(st, 200);
    let idle = e.wait_for(Duration::from_secs(30), |s| {
        s.models.iter().all(|m| m.queued == 0 && m.in_flight == 0)
    });
    assert!(idle, "the engine never went idle");
    let ran = e
        .snapshot()
        .latency
        .iter()
        .find(|l| l.model == "m")
        .map(|l| l.count)
        .unwrap_or(0);
    assert!(
        ran < 9,
        "all {ran} images ran: the hung-up client's waiting images were not dropped"
    );
    assert!(ran >= 2, "{ran}: client B and at least A's first image ran");
    handle.shutdown();
    e.shutdown();
}

#[test]
fn dry_run_names_what_a_load_would_evict_or_why_it_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for id in ["a", "b", "c"] {
        toy(dir.path(), id, &[]);
    }
    // Room for two toys, not three.
    let cfg = EngineConfig {
        budget_bytes: 2500,
        ..config()
    };
    let (e, _) = engine_for(dir.path(), cfg);
    for id in ["a", "b"] {
        e.load(id).unwrap_or_else(|err| panic!("{err}"));
        wait_state(&e, id, "Resident");
        std::thread::sleep(Duration::from_millis(20));
    }
    let handle = serve(&e);
    let host = format!("http://{}", handle.addr);
    let ps = || -> Vec<(String, String, bool)> {
        let mut v: Vec<_> = e
            .snapshot()
            .models
            .iter()
            .map(|m| (m.id.clone(), m.state.to_string(), m.pinned))
            .collect();
        v.sort();
        v
    };
    let cli = |args: &[&str]| cli(args, &[("MODELDOCK_HOST", host.as_str())]);
    let before = ps();
    let (code, out, err) = cli(&["load", "c", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would load after evicting") && out.contains("  a "),
        "{out}"
    );
    assert!(!out.contains("  b "), "b was used last, a goes first: {out}");
    let (code, out, err) = cli(&["load", "c", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["fits"], true);
    assert_eq!(v["evict"][0]["id"], "a");
    assert!(v["evict"][0]["bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(ps(), before, "a dry run changed the engine");
    // Both pinned: refused, with the reason, exit 1.
    for id in ["a", "b"] {
        e.pin(id, true).unwrap_or_else(|err| panic!("{err}"));
    }
    assert!(e.wait_for(Duration::from_secs(30), |s| s
        .models
        .iter()
        .filter(|m| m.pinned)
        .count()
        == 2));
    let before = ps();
    let (code, out, err) = cli(&["load", "c", "--dry-run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("would be refused") && out.contains("pinned"), "{out}");
    assert_eq!(ps(), before);
    // Already resident.
    let (code, out, _) = cli(&["load", "a", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("already resident"), "{out}");
    // Thrashing counted: c evicts a, then a comes back within 60 s.
    for id in ["a", "b"] {
        e.pin(id, false).unwrap_or_else(|err| panic!("{err}"));
    }
    for id in ["c", "a"] {
        e.load(id).unwrap_or_else(|err| panic!("{err}"));
        wait_state(&e, id, "Resident");
    }
    assert!(e.wait_for(Duration::from_secs(30), |s| s.reloads_after_eviction == 1));
    let metrics = ureq::get(format!("{host}/metrics"))
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .unwrap_or_default();
    assert!(
        metrics.contains("modeldock_reloads_after_eviction_total 1"),
        "{metrics}"
    );
    handle.shutdown();
    e.shutdown();
}

/// Submits a 3-image batch of `slow` (300 ms each) and, once the first has
/// started, one image of `quick`: the tags in the order they are answered.
fn click_during_a_batch(e: &Engine) -> Vec<String> {
    let (tx, rx) = unbounded();
    for i in 0..3 {
        submit(e, "slow", Ticket::new("batch", Class::Bulk, 0), format!("bulk{i}"), &tx);
    }
    assert!(e.wait_for(Duration::from_secs(30), |s| s
        .models
        .iter()
        .any(|m| m.id == "slow" && m.in_flight > 0)));
    submit(
        e,
        "quick",
        Ticket::new("viewer", Class::Interactive, 0),
        "click".into(),
        &tx,
    );
    (0..4).map(|_| next(&rx)).collect()
}

#[test]
fn with_two_lanes_a_single_image_does_not_wait_for_the_batch_image_that_is_running() {
    let (e, _dir) = engine_with(
        &[("slow", 300.0), ("quick", 5.0)],
        EngineConfig { lanes: 2, ..no_cache() },
    );
    assert_eq!(e.snapshot().lanes, 2);
    let order = click_during_a_batch(&e);
    assert_eq!(order[0], "click", "{order:?}");
    // Bulk work kept to its own lane: the batch still runs in order.
    assert_eq!(&order[1..], ["bulk0", "bulk1", "bulk2"]);
    e.shutdown();
    // One lane: the click waits for the running image (and only that one).
    let (e, _dir) = one_lane(&[("slow", 300.0), ("quick", 5.0)]);
    assert_eq!(click_during_a_batch(&e), ["bulk0", "click", "bulk1", "bulk2"]);
    e.shutdown();
}

#[test]
fn unloading_a_model_while_it_runs_in_a_lane_answers_the_request_then_frees_it() {
    let (e, _dir) = engine(&[("slow", 300.0)]);
    let (tx, rx) = unbounded();
    submit(
        &e,
        "slow",
        Ticket::new("a", Class::Interactive, 0),
        "running".into(),
        &tx,
    );
    assert!(e.wait_for(Duration::from_secs(30), |s| s
        .models
        .iter()
        .any(|m| m.id == "slow" && m.in_flight > 0)));
    e.unload("slow").unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(next(&rx), "running");
    wait_state(&e, "slow", "Available");
    e.shutdown();
}

#[test]
fn an_image_that_waits_past_its_queue_timeout_is_answered_with_an_error_and_over_http_with_503() {
    let (e, _dir) = one_lane(&[("m", 400.0)]);
    let (tx, rx) = unbounded();
    submit(&e, "m", Ticket::new("a", Class::Interactive, 0), "long".into(), &tx);
    assert!(e.wait_for(Duration::from_secs(30), |s| s
        .models
        .iter()
        .any(|m| m.id == "m" && m.in_flight > 0)));
    // Waits behind "long" (400 ms) with 50 ms to start.
    let (ttx, trx) = unbounded();
    let reply = Reply::callback(move |a| {
        let _ = ttx.send(a);
    });
    let input = ImageInput::Bytes {
        name: "impatient".into(),
        bytes: Arc::new(png(16, 16)),
    };
    let ticket = Ticket::new("b", Class::Interactive, 0).with_timeout(Some(50));
    if let Err((err, _)) = e.try_infer_as("m", input, InferParams::default(), reply, ticket) {
        panic!("submit: {err}");
    }
    let a = trx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no answer"));
    let err = a.err().unwrap_or_else(|| panic!("the impatient image ran"));
    assert!(err.timed_out && err.error.contains("timeout"), "{err:?}");
    assert_eq!(next(&rx), "long", "the running image is unaffected");
    // The snapshot may still show that image in flight: wait until it does
    // not, so the in-flight image seen below is the HTTP one.
    assert!(e.wait_for(Duration::from_secs(30), |s| s
        .models
        .iter()
        .any(|m| m.id == "m" && m.in_flight == 0)));
    // Over HTTP: Triton's `timeout` parameter (microseconds) → 503.
    let handle = serve(&e);
    let base = format!("http://{}", handle.addr);
    let busy = {
        let base = base.clone();
        std::thread::spawn(move || {
            agent()
                .post(format!("{base}/v2/models/m/infer"))
                .header("Content-Type", "application/json")
                .send(infer_body(1, ""))
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    assert!(e.wait_for(Duration::from_secs(30), |s| s
        .models
        .iter()
        .any(|m| m.id == "m" && m.in_flight > 0)));
    let mut r = agent()
        .post(format!("{base}/v2/models/m/infer"))
        .header("Content-Type", "application/json")
        .send(infer_body(1, r#""parameters":{"timeout":50000},"#))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = r.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(r.status().as_u16(), 503, "{text}");
    assert!(text.contains("past its timeout"), "{text}");
    assert_eq!(busy.join().unwrap_or(0), 200);
    handle.shutdown();
    e.shutdown();
}

#[test]
fn one_client_cannot_hold_more_than_its_share_of_the_queue() {
    let (e, _dir) = engine(&[("m", 5.0)]);
    let options = modeldock::server::ServerOptions {
        max_queue: 8,
        max_queue_per_client: 3,
        ..Default::default()
    };
    let handle = serve_with(&e, options);
    let base = format!("http://{}", handle.addr);
    let post = |n: u32| {
        let mut r = agent()
            .post(format!("{base}/v2/models/m/infer"))
            .header("Content-Type", "application/json")
            .send(infer_body(n, ""))
            .unwrap_or_else(|e| panic!("{e}"));
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    };
    let (st, text) = post(4);
    assert_eq!(st, 503, "{text}");
    assert!(text.contains("--max-queue-per-client"), "{text}");
    let (st, text) = post(3);
    assert_eq!(st, 200, "{text}");
    // The share is given back: the same size again is served.
    assert_eq!(post(3).0, 200);
    handle.shutdown();
    e.shutdown();
}

#[test]
fn a_load_that_only_a_hung_up_client_waited_for_is_cancelled_and_its_memory_released() {
    use modeldock::engine::Event;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // 32 MiB of weights, read over 2 s.
    modeldock::models::toy::write_toy_model(dir.path(), "cold", 8 << 20, "", &[("slow_load_ms", 2000.0)])
        .unwrap_or_else(|e| panic!("{e}"));
    let (e, _) = engine_for(dir.path(), no_cache());
    let events = e.subscribe(256);
    let handle = serve(&e);
    let addr = handle.addr.to_string();
    let a = send_unread(&addr, "cold", &infer_body(1, ""));
    wait_state(&e, "cold", "Loading");
    assert!(
        e.snapshot().used_bytes >= 32 << 20,
        "the load holds its predicted bytes"
    );
    drop(a);
    // The load ends without the model becoming resident, and the budget is free.
    let freed = std::iter::from_fn(|| events.recv_timeout(Duration::from_secs(30)).ok()).find_map(|ev| match ev {
        Event::Freed { model, reason } if model == "cold" => Some(reason.to_string()),
        _ => None,
    });
    let reason = freed.unwrap_or_else(|| panic!("no Freed event for the cancelled load"));
    assert!(reason.contains("cancelled"), "{reason}");
    // The snapshot is published after the event.
    let freed = e.wait_for(Duration::from_secs(30), |s| {
        s.used_bytes == 0
            && s.models
                .iter()
                .any(|m| m.id == "cold" && m.state.to_string() == "Available")
    });
    let s = e.snapshot();
    assert!(freed, "the budget was not given back: {} bytes used", s.used_bytes);
    assert_eq!(s.models.iter().find(|m| m.id == "cold").map(|m| m.loads), Some(1));
    // The next request loads it afresh and is answered.
    let st = agent()
        .post(format!("http://{addr}/v2/models/cold/infer"))
        .header("Content-Type", "application/json")
        .send(infer_body(1, ""))
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(st, 200);
    wait_state(&e, "cold", "Resident");
    handle.shutdown();
    e.shutdown();
}

#[test]
fn live_sends_its_frames_to_the_shared_server_when_one_answers() {
    let (e, _dir) = engine(&[("toy-live", 1.0)]);
    let handle = serve(&e);
    let addr = handle.addr.to_string();
    let (code, out, err) = cli(
        &[
            "live",
            "--server",
            &addr,
            "--source",
            "synthetic",
            "--model",
            "toy-live",
            "--frames",
            "12",
            "--fps",
            "30",
            "--size",
            "160x120",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|x| panic!("{x}: {out}"));
    let inferred = v["frames_inferred"].as_u64().unwrap_or(0);
    assert!(inferred > 0, "{out}");
    // The server's engine ran them (the live process loaded nothing itself).
    let ran = e
        .snapshot()
        .latency
        .iter()
        .find(|l| l.model == "toy-live")
        .map(|l| l.count)
        .unwrap_or(0);
    assert!(ran >= inferred, "the server ran {ran} of {inferred} frames");
    handle.shutdown();
    e.shutdown();
}

/// Interactive images `click` answered while a 12-image batch of `batch`
/// (40 ms each, two bulk lanes) runs, sent one after the other as each is
/// answered, with interactive work held to `share` of a core.
fn clicks_during_a_batch(share: f64) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cfg = EngineConfig {
        lanes: 3,
        interactive_share: share,
        ..no_cache()
    };
    let (e, _dir) = engine_with(&[("batch", 40.0), ("click", 20.0)], cfg);
    let bulk_done = Arc::new(AtomicUsize::new(0));
    for i in 0..12 {
        let done = Arc::clone(&bulk_done);
        let reply = Reply::callback(move |_| {
            done.fetch_add(1, Ordering::SeqCst);
        });
        let input = ImageInput::Bytes {
            name: format!("bulk{i}"),
            bytes: Arc::new(png(16, 16)),
        };
        let ticket = Ticket::new("folder", Class::Bulk, 0);
        if let Err((err, _)) = e.try_infer_as("batch", input, InferParams::default(), reply, ticket) {
            panic!("submit: {err}");
        }
    }
    let (tx, rx) = unbounded();
    let mut answered = 0;
    // Bounded: at most 200 clicks (the batch takes well under that).
    for i in 0..200 {
        submit(
            &e,
            "click",
            Ticket::new("viewer", Class::Interactive, 0),
            format!("click{i}"),
            &tx,
        );
        next(&rx);
        if bulk_done.load(Ordering::SeqCst) == 12 {
            break;
        }
        answered += 1;
    }
    e.shutdown();
    answered
}

#[test]
fn a_client_sending_single_images_back_to_back_beside_a_batch_is_held_to_its_share() {
    // Unpaced, a 20 ms click is answered about every 20 ms while the batch
    // (12 × 40 ms over two lanes, ~240 ms) runs.
    let free = clicks_during_a_batch(1.0);
    // At 5 % of a core, clicks start at most every 20 / 0.05 = 400 ms once
    // the first has measured their cost: the batch is done by the second.
    let paced = clicks_during_a_batch(0.05);
    assert!(free >= 4, "unpaced clicks answered during the batch: {free}");
    assert!(
        paced <= 2,
        "paced clicks answered during the batch: {paced} (unpaced: {free})"
    );
}
