//! Long random use and a worker that panics outside any request: the engine
//! answers every request exactly once, keeps to its budget, and outlives it.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use modeldock::catalog::registry::Registry;
use modeldock::engine::{Engine, EngineConfig, ImageInput, ModelState};
use modeldock::models::toy::write_toy_model;
use modeldock::vision::InferParams;

fn bytes(name: &str, b: Vec<u8>) -> ImageInput {
    ImageInput::Bytes {
        name: name.into(),
        bytes: Arc::new(b),
    }
}

/// xorshift64*: a fixed, reproducible stream per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn unload_all(engine: &Engine, ids: &[&'static str]) {
    for id in ids {
        let _ = engine.pin(id, false);
        let _ = engine.unload(id);
    }
    assert!(engine.wait_for(WAIT, |s| s
        .models
        .iter()
        .all(|m| m.state != ModelState::Resident && m.state != ModelState::Loading)));
    std::thread::sleep(Duration::from_millis(200));
}

/// 8 threads × `per_thread` random operations; returns (asked, answered, budget overruns seen).
fn workload(engine: &Engine, ids: &[&'static str; 4], budget: u64, per_thread: u64) -> (u64, u64, u64) {
    let ids = *ids;
    let answers = Arc::new(AtomicU64::new(0));
    let asked = Arc::new(AtomicU64::new(0));
    let over_budget = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (e, answers, asked, over, b) = (
                engine.clone(),
                answers.clone(),
                asked.clone(),
                over_budget.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                b.wait();
                for i in 0..per_thread {
                    let id = ids[r.below(4) as usize];
                    match r.below(10) {
                        0 => {
                            let _ = e.load(id);
                        }
                        1 => {
                            let _ = e.unload(id);
                        }
                        2 => {
                            let _ = e.pin(id, r.below(4) == 0);
                        }
                        n => {
                            asked.fetch_add(1, Ordering::Relaxed);
                            let img = if n == 3 {
                                b"not an image at all".to_vec()
                            } else {
                                png(16 + r.below(24) as u32, 16 + (i % 17) as u32)
                            };
                            let a = e.infer_wait(id, bytes(&format!("t{t}-{i}"), img), InferParams::default());
                            answers.fetch_add(1, Ordering::Relaxed);
                            if let Err(err) = &a {
                                assert!(!err.error.contains('\n'), "{}", err.error);
                            }
                        }
                    }
                    let s = e.snapshot();
                    if s.used_bytes > budget {
                        over.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().is_ok(), "a client thread died");
    }
    (
        asked.load(Ordering::Relaxed),
        answers.load(Ordering::Relaxed),
        over_budget.load(Ordering::Relaxed),
    )
}

#[test]
fn ten_thousand_random_operations_from_eight_threads() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Four 4 MiB models against a 10 MiB budget: loads must evict.
    let ids = ["a", "b", "c", "d"];
    for id in ids {
        write_toy_model(dir.path(), id, 1 << 20, "", &[]).unwrap_or_else(|e| panic!("{e}"));
    }
    let reg = Registry::discover(&[dir.path().to_path_buf()]);
    let cfg = EngineConfig {
        budget_bytes: 10 << 20,
        ..config()
    };
    let budget = cfg.budget_bytes;
    let engine = Engine::start(reg, cfg, None);
    let rss = || modeldock::telemetry::process::rss_bytes().unwrap_or(0);
    // Warm the allocator once, then take the starting figure with nothing loaded.
    for id in ids {
        let _ = engine.infer_wait(id, bytes("warm", png(32, 24)), InferParams::default());
    }
    let _ = engine.unload("a");
    for id in ids {
        let _ = engine.unload(id);
    }
    unload_all(&engine, &ids);

    // A short round first, so thread arenas and buffer pools exist when the
    // starting figure is taken: what is measured is growth with use (a leak).
    let _ = workload(&engine, &ids, budget, 100);
    unload_all(&engine, &ids);
    let rss_start = rss();
    let (asked, answers, over_budget) = workload(&engine, &ids, budget, 1250);
    assert_eq!(answers, asked, "one answer each");
    assert!(asked > 5000, "{asked} requests");
    assert_eq!(over_budget, 0, "the budget was exceeded");
    // Still serving, then unload everything and compare memory.
    for id in ids {
        let _ = engine.pin(id, false);
    }
    assert!(engine
        .infer_wait("a", bytes("after", png(20, 20)), InferParams::default())
        .is_ok());
    unload_all(&engine, &ids);
    let rss_end = rss();
    let grown = rss_end.saturating_sub(rss_start) as f64 / rss_start.max(1) as f64;
    println!(
        "soak: {asked} requests; RSS {} MiB before, {} MiB after unload-all",
        rss_start >> 20,
        rss_end >> 20
    );
    assert!(
        grown <= 0.10,
        "RSS {} MiB → {} MiB after unload-all",
        rss_start >> 20,
        rss_end >> 20
    );
    engine.shutdown();
}

#[test]
fn a_panic_outside_any_request_is_survived_and_resident_models_stay() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "fragile", &[("panic_on_drop", 1.0)]);
    toy(dir.path(), "steady", &[]);
    let (engine, _) = engine_for(dir.path(), config());
    let events = engine.subscribe(1024);
    let ask = |id: &str, w: u32| engine.infer_wait(id, bytes("x", png(w, 20)), InferParams::default());
    assert!(ask("steady", 30).is_ok());
    assert!(ask("fragile", 31).is_ok());
    // Unloading runs the fragile model's destructor, which panics on the worker.
    let _ = engine.unload("fragile");
    wait_state(&engine, "fragile", "Available");
    // The engine lives on: the other model is still resident, not reloaded.
    assert!(ask("steady", 32).is_ok(), "the engine still answers");
    let steady = engine.status("steady").unwrap_or_else(|| panic!("steady"));
    assert_eq!(steady.state, ModelState::Resident);
    let steady_loads = events
        .try_iter()
        .filter(|e| matches!(e, modeldock::engine::Event::Loaded { model, .. } if model == "steady"))
        .count();
    assert_eq!(steady_loads, 1, "steady stayed resident, no reload");
    // And the fragile one loads again on demand.
    assert!(ask("fragile", 33).is_ok());
    engine.shutdown();
}
