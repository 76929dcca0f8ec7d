//! The engine end to end, with toy models the tests write themselves.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use modeldock::engine::{EngineConfig, Event, ImageInput};
use modeldock::vision::InferParams;

fn bytes(name: &str, b: Vec<u8>) -> ImageInput {
    ImageInput::Bytes {
        name: name.into(),
        bytes: Arc::new(b),
    }
}

#[test]
fn thirty_two_concurrent_requests_to_a_cold_model_load_it_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "cold", &[("slow_load_ms", 300.0)]);
    let (engine, _) = engine_for(dir.path(), config());
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let (e, b) = (engine.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                e.infer_wait(
                    "cold",
                    bytes(&format!("img{i}"), png(40 + i, 30)),
                    InferParams::default(),
                )
            })
        })
        .collect();
    let answers: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|_| panic!("thread")))
        .collect();
    assert_eq!(answers.len(), 32);
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(ok, 32, "{:?}", answers.iter().find(|a| a.is_err()));
    let mut ids: Vec<u64> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|r| r.request_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 32, "each request got its own answer");
    assert_eq!(engine.status("cold").map(|m| m.loads), Some(1), "exactly one load");
    engine.shutdown();
}

#[test]
fn a_resident_model_keeps_answering_while_another_loads() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "fast", &[]);
    toy(dir.path(), "slow", &[("slow_load_ms", 3000.0)]);
    let (engine, _) = engine_for(dir.path(), config());
    engine.load("fast").unwrap_or_else(|e| panic!("{e}"));
    wait_state(&engine, "fast", "Resident");
    engine.load("slow").unwrap_or_else(|e| panic!("{e}"));
    wait_state(&engine, "slow", "Loading");
    for i in 0..5 {
        let r = engine.infer_wait("fast", bytes("x", png(20 + i, 20)), InferParams::default());
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(
        state(&engine, "slow"),
        "Loading",
        "answers came while the other load was still running"
    );
    wait_state(&engine, "slow", "Resident");
    engine.shutdown();
}

#[test]
fn progress_events_count_bytes_up_to_the_total() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    modeldock::models::toy::write_toy_model(dir.path(), "big", 4 << 20, "", &[("slow_load_ms", 400.0)])
        .unwrap_or_else(|e| panic!("{e}"));
    let (engine, reg) = engine_for(dir.path(), config());
    let total = reg.get("big").map(|e| e.predicted_bytes).unwrap_or(0);
    assert!(total >= 16 << 20, "predicted size comes from the header: {total}");
    engine.load("big").unwrap_or_else(|e| panic!("{e}"));
    let mut last = 0;
    let mut seen = 0;
    loop {
        match engine.events().recv_timeout(WAIT) {
            Ok(Event::LoadProgress {
                bytes_done,
                bytes_total,
                ..
            }) => {
                assert!(
                    bytes_done >= last && bytes_done <= bytes_total,
                    "{bytes_done}/{bytes_total}"
                );
                assert_eq!(bytes_total, total);
                last = bytes_done;
                seen += 1;
            }
            Ok(Event::Loaded { predicted_bytes, .. }) => {
                assert_eq!(predicted_bytes, total);
                break;
            }
            Ok(Event::LoadFailed { error, .. }) => panic!("{error}"),
            Ok(_) => {}
            Err(e) => panic!("no Loaded event: {e}"),
        }
    }
    assert!(seen >= 2, "several progress events during a slow load, saw {seen}");
    assert_eq!(last, total, "the last progress event reports every byte");
    engine.shutdown();
}

#[test]
fn a_panicking_or_failing_forward_answers_with_an_error_and_the_engine_carries_on() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(
        dir.path(),
        "fragile",
        &[("panic_on_width", 13.0), ("error_on_width", 17.0)],
    );
    toy(dir.path(), "other", &[]);
    let (engine, _) = engine_for(dir.path(), config());
    let r = engine.infer_wait("fragile", bytes("boom.png", png(13, 10)), InferParams::default());
    let e = r.err().map(|e| e.error).unwrap_or_default();
    assert!(e.contains("boom.png") && e.contains("panicked"), "{e}");
    let r = engine.infer_wait("fragile", bytes("bad.png", png(17, 10)), InferParams::default());
    let e = r.err().map(|e| e.error).unwrap_or_default();
    assert!(e.contains("bad.png") && e.contains("forced error"), "{e}");
    assert!(engine
        .infer_wait("fragile", bytes("ok.png", png(20, 10)), InferParams::default())
        .is_ok());
    assert!(engine
        .infer_wait("other", bytes("ok.png", png(20, 10)), InferParams::default())
        .is_ok());
    engine.shutdown();
}

#[test]
fn cache_hits_answer_without_the_model_and_params_change_the_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "t", &[]);
    let (engine, _) = engine_for(dir.path(), config());
    let img = png(64, 48);
    let a = engine
        .infer_wait("t", bytes("a", img.clone()), InferParams::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!a.output.cached);
    let b = engine
        .infer_wait("t", bytes("a", img.clone()), InferParams::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(b.output.cached);
    assert_eq!(a.output.detections, b.output.detections);
    let p = InferParams {
        conf: Some(0.99),
        iou: None,
        ..Default::default()
    };
    let c = engine
        .infer_wait("t", bytes("a", img), p)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!c.output.cached, "other params miss the cache");
    engine.shutdown();
}

#[test]
fn unload_frees_and_the_next_request_loads_again() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "t", &[]);
    let (engine, _) = engine_for(dir.path(), config());
    assert!(engine
        .infer_wait("t", bytes("a", png(10, 10)), InferParams::default())
        .is_ok());
    engine.unload("t").unwrap_or_else(|e| panic!("{e}"));
    wait_state(&engine, "t", "Available");
    assert!(engine
        .infer_wait("t", bytes("b", png(11, 10)), InferParams::default())
        .is_ok());
    assert_eq!(engine.status("t").map(|m| m.loads), Some(2));
    engine.shutdown();
}

#[test]
fn keep_alive_zero_unloads_after_each_request() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    modeldock::models::toy::write_toy_model(dir.path(), "brief", 0, "keep_alive = \"0\"", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let (engine, _) = engine_for(dir.path(), config());
    assert!(engine
        .infer_wait("brief", bytes("a", png(10, 10)), InferParams::default())
        .is_ok());
    wait_state(&engine, "brief", "Available");
    engine.shutdown();
}

#[test]
fn preload_starts_in_the_background() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    modeldock::models::toy::write_toy_model(dir.path(), "eager", 0, "preload = true", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "lazy", &[]);
    let (engine, _) = engine_for(dir.path(), config());
    wait_state(&engine, "eager", "Resident");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        state(&engine, "lazy"),
        "Available",
        "only manifests are read for the others"
    );
    engine.shutdown();
}

#[test]
fn a_model_over_budget_fails_with_a_clear_message_and_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "small", &[]);
    modeldock::models::toy::write_toy_model(dir.path(), "huge", 1 << 20, "", &[]).unwrap_or_else(|e| panic!("{e}"));
    let mut c = config();
    c.budget_bytes = 2 << 20;
    let (engine, _) = engine_for(dir.path(), c);
    engine.pin("small", true).unwrap_or_else(|e| panic!("{e}"));
    assert!(engine
        .infer_wait("small", bytes("a", png(10, 10)), InferParams::default())
        .is_ok());
    let e = engine
        .infer_wait("huge", bytes("a", png(10, 10)), InferParams::default())
        .err()
        .map(|e| e.error)
        .unwrap_or_default();
    assert!(e.contains("huge needs 4 MiB") && e.contains("budget"), "{e}");
    assert!(engine
        .infer_wait("small", bytes("b", png(12, 10)), InferParams::default())
        .is_ok());
    engine.shutdown();
}

#[test]
fn a_measured_size_is_remembered_across_restarts_and_admits_the_next_load() {
    use modeldock::engine::sizes::SizeBook;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let models = dir.path().join("models");
    modeldock::models::toy::write_toy_model(&models, "big", 8 << 20, "", &[]).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("cache").join("measured-sizes.json");
    let cfg = || EngineConfig {
        sizes_file: Some(file.clone()),
        ..config()
    };
    let (engine, reg) = engine_for(&models, cfg());
    let predicted = reg.get("big").map(|e| e.predicted_bytes).unwrap_or(0);
    assert_eq!(
        engine.plan_load("big").map(|p| p.predicted_bytes).ok(),
        Some(predicted),
        "first run: the header's prediction"
    );
    engine.load("big").unwrap_or_else(|e| panic!("{e}"));
    wait_state(&engine, "big", "Resident");
    let measured = engine.status("big").and_then(|m| m.measured_bytes).unwrap_or(0);
    engine.shutdown();
    assert!(measured > 0, "32 MiB of weights measured as {measured} bytes");
    let book = SizeBook::open(Some(file.clone()));
    assert_eq!(book.len(), 1, "one measurement remembered in {}", file.display());

    // The next run admits the load at the measured size.
    let (engine, _) = engine_for(&models, cfg());
    let admitted = engine.plan_load("big").map(|p| p.predicted_bytes).unwrap_or(0);
    assert_eq!(admitted, measured.clamp(predicted / 2, predicted * 2));
    engine.shutdown();

    // A corrupt file is ignored: the prediction again.
    std::fs::write(&file, "{\"format\": 7").unwrap_or_else(|e| panic!("{e}"));
    let (engine, _) = engine_for(&models, cfg());
    assert_eq!(engine.plan_load("big").map(|p| p.predicted_bytes).ok(), Some(predicted));
    engine.shutdown();
}
