//! `modeldock bench [--model ID] [--random-weights] [--image PATH] [--json]`
//!
//! Load, concurrency, inference, cache and memory figures of one model. With
//! no `--model`, a 64 MiB toy model is written to a temporary folder so the
//! load figures mean something. Every figure is measured in this run.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;

use super::args::BenchArgs;
use crate::catalog::registry::WeightsResolved;
use crate::catalog::weights_source::WeightsSource;
use crate::engine::{Engine, ImageInput, ModelState};
use crate::error::{Error, Result};
use crate::telemetry::process;
use crate::vision::InferParams;

const WAIT: Duration = Duration::from_secs(600);

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn mb(b: Option<u64>) -> f64 {
    b.map(|b| b as f64 / 1048576.0).unwrap_or(0.0)
}

/// A 512×512 test card with soft gradients, PNG-encoded.
pub fn test_card_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(512, 512, |x, y| {
        image::Rgb([(x / 2) as u8, (y / 2) as u8, ((x + y) / 4) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    let _ = img.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}

fn wait_state(engine: &Engine, model: &str, state: ModelState) -> Result<()> {
    let ok = engine.wait_for(WAIT, |s| {
        s.models.iter().any(|m| {
            m.id == model && (m.state == state || (m.state == ModelState::Failed && state != ModelState::Failed))
        })
    });
    match engine.status(model) {
        Some(m) if ok && m.state == state => Ok(()),
        Some(m) => Err(Error::msg(format!(
            "bench: {model} is {} ({})",
            m.state,
            m.failed_reason.unwrap_or_default()
        ))),
        None => Err(Error::msg(format!("bench: unknown model '{model}'"))),
    }
}

pub fn run(args: &BenchArgs) -> Result<i32> {
    let runs = args.runs.max(3);
    let tmp = std::env::temp_dir().join(format!("modeldock-bench-{}", std::process::id()));
    let mut flags = args.engine.clone();
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            crate::models::toy::write_toy_model(&tmp, "bench-toy", 16 << 20, "keep_alive = \"-1\"", &[])?;
            flags.catalog.models_dir.push(tmp.clone());
            "bench-toy".to_string()
        }
    };
    let reg = flags.registry();
    let mut cfg = flags.config()?;
    let device_label = cfg.device.label();
    cfg.random_weights = args.random_weights;
    cfg.default_keep_alive = crate::engine::KeepAlive::Forever;
    let entry = reg
        .get(&model)
        .cloned()
        .ok_or_else(|| Error::msg(format!("bench: unknown model '{model}'")))?;
    let image = match &args.image {
        Some(p) => std::fs::read(p).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?,
        None => test_card_png(),
    };
    if args.http {
        return super::bench_http::run(&reg, &cfg, &model, image, runs, args.json);
    }
    let image = Arc::new(image);

    let device_choice = cfg.device;
    let rss_idle = process::rss_bytes();
    let engine = Engine::start(reg, cfg, None);

    // Raw read of the weights (the floor for a cold load).
    let mut raw = Vec::new();
    let weights_kind = if args.random_weights { "random" } else { "real" };
    for _ in 0..5 {
        let t = Instant::now();
        let n = match &entry.weights {
            WeightsResolved::Local(WeightsSource::File(p)) => std::fs::read(p)
                .map_err(|e| Error::msg(format!("{}: {e}", p.display())))?
                .len(),
            WeightsResolved::Local(WeightsSource::Embedded { bytes, .. }) => bytes.to_vec().len(),
            _ => 0,
        };
        std::hint::black_box(n);
        raw.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let weights_file = match (&entry.weights, args.random_weights) {
        (WeightsResolved::Local(WeightsSource::File(p)), false) => Some(p.clone()),
        _ => None,
    };

    // The same into fresh memory (handed back to the OS first, as after an
    // unload): the raw read above reuses the buffer the allocator keeps, a
    // load after an unload cannot, and pays the kernel's zeroing of new pages.
    let mut raw_fresh = Vec::new();
    if let Some(p) = &weights_file {
        for _ in 0..5 {
            let t = Instant::now();
            let n = super::page_cache::read_into_fresh_memory(p)
                .map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
            std::hint::black_box(n);
            raw_fresh.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    // The same with the file's pages dropped from the page cache first.
    let mut raw_cold = Vec::new();
    let mut load_cold = Vec::new();
    if let Some(p) = weights_file.as_ref().filter(|p| super::page_cache::drop_file(p)) {
        for _ in 0..3 {
            super::page_cache::drop_file(p);
            let t = Instant::now();
            let n = std::fs::read(p).map(|b| b.len()).unwrap_or(0);
            std::hint::black_box(n);
            raw_cold.push(t.elapsed().as_secs_f64() * 1e3);
            super::page_cache::drop_file(p);
            let t = Instant::now();
            engine.load(&model)?;
            wait_state(&engine, &model, ModelState::Resident)?;
            load_cold.push(t.elapsed().as_secs_f64() * 1e3);
            engine.unload(&model)?;
            wait_state(&engine, &model, ModelState::Available)?;
        }
    }

    // Cold loads and unloads (the page cache warm).
    let mut cold = Vec::new();
    let mut rss_loaded = None;
    let mut rss_unloaded = None;
    for _ in 0..5 {
        let t = Instant::now();
        engine.load(&model)?;
        wait_state(&engine, &model, ModelState::Resident)?;
        cold.push(t.elapsed().as_secs_f64() * 1e3);
        rss_loaded = process::rss_bytes();
        engine.unload(&model)?;
        wait_state(&engine, &model, ModelState::Available)?;
        rss_unloaded = process::rss_bytes();
    }

    // 32 concurrent requests to the cold model.
    let loads_before = engine.status(&model).map(|m| m.loads).unwrap_or(0);
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (e, b, m, img) = (engine.clone(), barrier.clone(), model.clone(), image.clone());
            std::thread::spawn(move || {
                b.wait();
                // Distinct params per thread keep the result cache out of this figure.
                let p = InferParams {
                    conf: Some(0.001 * i as f32),
                    iou: None,
                };
                e.infer_wait(
                    &m,
                    ImageInput::Bytes {
                        name: "bench".into(),
                        bytes: img,
                    },
                    p,
                )
                .is_ok()
            })
        })
        .collect();
    let answers = handles
        .into_iter()
        .filter_map(|h| h.join().ok())
        .filter(|ok| *ok)
        .count();
    let loads = engine.status(&model).map(|m| m.loads).unwrap_or(0) - loads_before;

    // Warm inference on decoded frames (never cached).
    let decoded = Arc::new(crate::vision::decode::decode_bytes(
        "bench image",
        &image,
        &Default::default(),
    )?);
    let mut warm = Vec::new();
    let mut forward = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = engine
            .infer_wait(
                &model,
                ImageInput::Frame {
                    name: "bench".into(),
                    image: decoded.clone(),
                },
                InferParams::default(),
            )
            .map_err(|e| Error::msg(e.error))?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        forward.push(r.timings.forward);
    }

    // End to end from the encoded bytes (decode included), uncached: each
    // request's confidence differs by 1e-7, which no detection notices.
    let mut e2e = Vec::new();
    let mut phases: [Vec<f64>; 5] = Default::default();
    let mut detections = 0;
    for i in 0..runs {
        let t = Instant::now();
        let r = engine
            .infer_wait(
                &model,
                ImageInput::Bytes {
                    name: "bench".into(),
                    bytes: image.clone(),
                },
                InferParams {
                    conf: entry
                        .manifest
                        .conf
                        .map(|c| c + 1e-7 * (i + 1) as f32)
                        .or(Some(1e-7 * (i + 1) as f32)),
                    iou: None,
                },
            )
            .map_err(|e| Error::msg(e.error))?;
        e2e.push(t.elapsed().as_secs_f64() * 1e3);
        let tm = &r.timings;
        for (v, x) in phases
            .iter_mut()
            .zip([tm.queue, tm.decode, tm.preprocess, tm.forward, tm.postprocess])
        {
            v.push(x);
        }
        detections = r.output.detections.len();
    }
    let [mut p_queue, mut p_decode, mut p_pre, mut p_fwd, mut p_post] = phases;

    // Cache hits: the same bytes and parameters again.
    let _ = engine.infer_wait(
        &model,
        ImageInput::Bytes {
            name: "bench".into(),
            bytes: image.clone(),
        },
        InferParams::default(),
    );
    let mut hits = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = engine
            .infer_wait(
                &model,
                ImageInput::Bytes {
                    name: "bench".into(),
                    bytes: image.clone(),
                },
                InferParams::default(),
            )
            .map_err(|e| Error::msg(e.error))?;
        if r.output.cached {
            hits.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    // The network alone, back to back on the same input tensor (how
    // bench/pytorch_vs_modeldock.py times PyTorch): no engine hop, no
    // pre/post-processing between runs.
    let forward_loop = (|| -> Result<Vec<f64>> {
        let source = entry.weights_source(args.random_weights)?;
        let device = device_choice.open()?;
        let net = crate::models::build(
            &entry.manifest,
            &source,
            entry.predicted_bytes,
            &device,
            Arc::new(|_, _| {}),
        )?;
        let mut times = Vec::new();
        if let Some(x) = net.preprocess_raw(&decoded)? {
            for _ in 0..3 {
                net.forward_raw(&x)?;
            }
            for _ in 0..runs {
                let t = Instant::now();
                net.forward_raw(&x)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(times)
    })();
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&tmp);
    let (forward_loop, forward_loop_error) = match forward_loop {
        Ok(t) => (t, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };

    let raw_ms = pct(&mut raw, 0.5);
    let cold_ms = pct(&mut cold, 0.5);
    // Random, embedded or hub weights have no file to read here: no ratio to report.
    let file_backed = weights_file.is_some();
    let raw_cold_ms = (!raw_cold.is_empty()).then(|| pct(&mut raw_cold, 0.5));
    let raw_fresh_ms = (!raw_fresh.is_empty()).then(|| pct(&mut raw_fresh, 0.5));
    let load_cold_ms = (!load_cold.is_empty()).then(|| pct(&mut load_cold, 0.5));
    let out = json!({
        "model": model,
        "weights": weights_kind,
        "device": device_label,
        "predicted_bytes": entry.predicted_in_memory(device_choice == crate::engine::config::DeviceChoice::Cpu),
        "raw_read_ms": file_backed.then_some(raw_ms),
        "cold_load_ms": cold_ms,
        "load_ratio": (file_backed && raw_ms > 0.0).then(|| cold_ms / raw_ms),
        "load_ratio_warm": (file_backed && raw_ms > 0.0).then(|| cold_ms / raw_ms),
        "raw_read_fresh_memory_ms": raw_fresh_ms,
        "load_ratio_warm_fresh_memory": raw_fresh_ms.filter(|r| *r > 0.0).map(|r| cold_ms / r),
        "raw_read_cold_cache_ms": raw_cold_ms,
        "cold_load_cold_cache_ms": load_cold_ms,
        "load_ratio_cold": raw_cold_ms.zip(load_cold_ms).filter(|(r, _)| *r > 0.0).map(|(r, l)| l / r),
        "loads_under_32_concurrent": loads,
        "answers_under_32_concurrent": answers,
        "warm_p50_ms": pct(&mut warm.clone(), 0.5),
        "warm_p95_ms": pct(&mut warm, 0.95),
        "forward_p50_ms": pct(&mut forward, 0.5),
        "forward_loop_p50_ms": (!forward_loop.is_empty()).then(|| pct(&mut forward_loop.clone(), 0.5)),
        "forward_loop_error": forward_loop_error,
        "e2e_p50_ms": pct(&mut e2e, 0.5),
        "e2e_phases_p50_ms": {
            "queue": pct(&mut p_queue, 0.5),
            "decode": pct(&mut p_decode, 0.5),
            "preprocess": pct(&mut p_pre, 0.5),
            "forward": pct(&mut p_fwd, 0.5),
            "postprocess": pct(&mut p_post, 0.5),
        },
        "detections": detections,
        "threads": rayon::current_num_threads(),
        "cache_hit_p50_ms": pct(&mut hits.clone(), 0.5),
        "cache_hits": hits.len(),
        "rss_idle_mb": mb(rss_idle),
        "rss_loaded_mb": mb(rss_loaded),
        "rss_after_unload_mb": mb(rss_unloaded),
        "runs": runs,
    });
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(0)
}
