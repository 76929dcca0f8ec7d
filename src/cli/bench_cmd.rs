//! `modeldock bench [--model ID] [--random-weights] [--image PATH] [--json]`
//!
//! Load, concurrency, inference, cache and memory figures of one model. With
//! no `--model`, a 64 MiB toy model is written to a temporary folder so the
//! load figures mean something. Every figure is measured in this run.

use std::path::Path;
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

pub(super) fn wait_state(engine: &Engine, model: &str, state: ModelState) -> Result<()> {
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
    if let Some(gib) = args.weights_gib {
        return super::bench_weights::run(args, gib);
    }
    if let Some(v) = &args.sam_weights {
        #[cfg(feature = "sam")]
        return super::bench_weights::run_sam(args, v);
        #[cfg(not(feature = "sam"))]
        return Err(Error::usage(format!(
            "--sam-weights {v}: this build leaves out SAM (the `sam` feature)"
        )));
    }
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
    let mut cfg = flags.checked_config()?;
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

    let weights_kind = if args.random_weights { "random" } else { "real" };
    let weights_file = match (&entry.weights, args.random_weights) {
        (WeightsResolved::Local(WeightsSource::File(p)), false) => Some(p.clone()),
        _ => None,
    };
    let (mut raw, raw_fresh) = raw_reads(&entry, weights_file.as_deref())?;
    let (raw_cold, load_cold) = cold_cache_loads(&engine, &model, weights_file.as_deref())?;
    let (mut cold, rss_loaded, rss_unloaded) = load_unload_cycles(&engine, &model)?;
    let (answers, loads) = concurrent_cold_requests(&engine, &model, &image);
    let decoded = Arc::new(crate::vision::decode::decode_bytes(
        "bench image",
        &image,
        &Default::default(),
    )?);
    let (mut warm, mut forward) = warm_frames(&engine, &model, &decoded, runs)?;
    let conf = entry.manifest.conf;
    let (mut e2e, phases, detections) = end_to_end(&engine, &model, &image, conf, runs)?;
    let [mut p_queue, mut p_decode, mut p_pre, mut p_fwd, mut p_post] = phases;
    let hits = cache_hits(&engine, &model, &image, runs)?;
    let forward_loop = forward_loop(&entry, args.random_weights, device_choice, &decoded, runs);
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&tmp);
    let (forward_loop, macs, prompt_times, forward_loop_error) = match forward_loop {
        Ok(f) => (f.times, Some(f.macs), f.prompt_times, None),
        Err(e) => (Vec::new(), None, Vec::new(), Some(e.to_string())),
    };
    // GFLOP/s over the pipeline's forward time (graph models count their
    // convs' multiply-adds; 2 FLOPs each).
    let gflop = macs.filter(|m| *m > 0).map(|m| 2.0 * m as f64 / 1e9);
    let gflop_s = gflop
        .map(|g| g / (pct(&mut forward.clone(), 0.5) / 1e3))
        .filter(|v| v.is_finite());

    let raw_ms = pct(&mut raw, 0.5);
    let cold_ms = pct(&mut cold, 0.5);
    // Random, embedded or hub weights have no file to read here: no ratio to report.
    let file_backed = weights_file.is_some();
    let median = |v: Vec<f64>| (!v.is_empty()).then(|| pct(&mut v.clone(), 0.5));
    let raw_cold_ms = median(raw_cold);
    let raw_fresh_ms = median(raw_fresh);
    let load_cold_ms = median(load_cold);
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
        "prompt_p50_ms": (!prompt_times.is_empty()).then(|| pct(&mut prompt_times.clone(), 0.5)),
        "forward_loop_error": forward_loop_error,
        "conv_gflop_per_image": gflop,
        "conv_gflop_s": gflop_s,
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

/// Reads of the weights file: into a reused buffer (the floor for a load
/// with the page cache warm), then into fresh memory handed back to the OS
/// first, as after an unload (a load then pays the kernel's zeroing of new
/// pages); the second is empty without a file.
fn raw_reads(entry: &crate::catalog::registry::Entry, file: Option<&Path>) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut raw = Vec::new();
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
        raw.push(ms_since(t));
    }
    let mut fresh = Vec::new();
    if let Some(p) = file {
        for _ in 0..5 {
            let t = Instant::now();
            let n = super::page_cache::read_into_fresh_memory(p)
                .map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
            std::hint::black_box(n);
            fresh.push(ms_since(t));
        }
    }
    Ok((raw, fresh))
}

/// The read and the load with the file's pages dropped from the page cache
/// first (empty where they cannot be dropped).
fn cold_cache_loads(engine: &Engine, model: &str, file: Option<&Path>) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut raw, mut load) = (Vec::new(), Vec::new());
    if let Some(p) = file.filter(|p| super::page_cache::drop_file(p)) {
        for _ in 0..3 {
            super::page_cache::drop_file(p);
            let t = Instant::now();
            let n = std::fs::read(p).map(|b| b.len()).unwrap_or(0);
            std::hint::black_box(n);
            raw.push(ms_since(t));
            super::page_cache::drop_file(p);
            let t = Instant::now();
            engine.load(model)?;
            wait_state(engine, model, ModelState::Resident)?;
            load.push(ms_since(t));
            engine.unload(model)?;
            wait_state(engine, model, ModelState::Available)?;
        }
    }
    Ok((raw, load))
}

/// Five loads and unloads with the page cache warm: their times, and the
/// RSS after the last load and after the last unload.
fn load_unload_cycles(engine: &Engine, model: &str) -> Result<(Vec<f64>, Option<u64>, Option<u64>)> {
    let mut cold = Vec::new();
    let (mut loaded, mut unloaded) = (None, None);
    for _ in 0..5 {
        let t = Instant::now();
        engine.load(model)?;
        wait_state(engine, model, ModelState::Resident)?;
        cold.push(ms_since(t));
        loaded = process::rss_bytes();
        engine.unload(model)?;
        wait_state(engine, model, ModelState::Available)?;
        unloaded = process::rss_bytes();
    }
    Ok((cold, loaded, unloaded))
}

/// 32 concurrent requests to the cold model: how many were answered, and
/// how many loads they caused (one, if the engine reads a model once).
fn concurrent_cold_requests(engine: &Engine, model: &str, image: &Arc<Vec<u8>>) -> (usize, u64) {
    let loads_before = engine.status(model).map(|m| m.loads).unwrap_or(0);
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (e, b, m, img) = (engine.clone(), barrier.clone(), model.to_string(), image.clone());
            std::thread::spawn(move || {
                b.wait();
                // Distinct params per thread keep the result cache out of this figure.
                let p = InferParams {
                    conf: Some(0.001 * i as f32),
                    iou: None,
                    ..Default::default()
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
    let loads = engine.status(model).map(|m| m.loads).unwrap_or(0) - loads_before;
    (answers, loads)
}

/// Warm inference on a decoded frame (never cached): round trips and the
/// forward pass inside them.
fn warm_frames(
    engine: &Engine,
    model: &str,
    decoded: &Arc<image::RgbImage>,
    runs: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut warm, mut forward) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let r = engine
            .infer_wait(
                model,
                ImageInput::Frame {
                    name: "bench".into(),
                    image: decoded.clone(),
                },
                InferParams::default(),
            )
            .map_err(|e| Error::msg(e.error))?;
        warm.push(ms_since(t));
        forward.push(r.timings.forward);
    }
    Ok((warm, forward))
}

/// End to end from the encoded bytes (decode included), uncached: each
/// request's confidence differs by 1e-7, which no detection notices. The
/// times, each phase's times (queue, decode, pre, forward, post) and the
/// detections of the last run.
fn end_to_end(
    engine: &Engine,
    model: &str,
    image: &Arc<Vec<u8>>,
    conf: Option<f32>,
    runs: usize,
) -> Result<(Vec<f64>, [Vec<f64>; 5], usize)> {
    let mut e2e = Vec::new();
    let mut phases: [Vec<f64>; 5] = Default::default();
    let mut detections = 0;
    for i in 0..runs {
        let t = Instant::now();
        let nudge = 1e-7 * (i + 1) as f32;
        let r = engine
            .infer_wait(
                model,
                ImageInput::Bytes {
                    name: "bench".into(),
                    bytes: image.clone(),
                },
                InferParams {
                    conf: conf.map(|c| c + nudge).or(Some(nudge)),
                    iou: None,
                    ..Default::default()
                },
            )
            .map_err(|e| Error::msg(e.error))?;
        e2e.push(ms_since(t));
        let tm = &r.timings;
        for (v, x) in phases
            .iter_mut()
            .zip([tm.queue, tm.decode, tm.preprocess, tm.forward, tm.postprocess])
        {
            v.push(x);
        }
        detections = r.output.detections.len();
    }
    Ok((e2e, phases, detections))
}

/// Cache hits: the same bytes and parameters again, after one miss.
fn cache_hits(engine: &Engine, model: &str, image: &Arc<Vec<u8>>, runs: usize) -> Result<Vec<f64>> {
    let ask = || {
        engine.infer_wait(
            model,
            ImageInput::Bytes {
                name: "bench".into(),
                bytes: image.clone(),
            },
            InferParams::default(),
        )
    };
    let _ = ask();
    let mut hits = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = ask().map_err(|e| Error::msg(e.error))?;
        if r.output.cached {
            hits.push(ms_since(t));
        }
    }
    Ok(hits)
}

/// The network alone, back to back on the same input tensor (how
/// bench/pytorch_vs_modeldock.py times PyTorch): no engine hop, no
/// pre/post-processing between runs.
fn forward_loop(
    entry: &crate::catalog::registry::Entry,
    random: bool,
    device: crate::engine::config::DeviceChoice,
    decoded: &image::RgbImage,
    runs: usize,
) -> Result<ForwardLoop> {
    let source = entry.weights_source(random)?;
    let device = device.open()?;
    let net = crate::models::build(
        &entry.manifest,
        &source,
        entry.predicted_bytes,
        &device,
        Arc::new(|_, _| {}),
    )?;
    let mut times = Vec::new();
    // One whole pipeline first: the multiply-adds of one image.
    let before = net.macs_done();
    net.infer_with_masks(decoded, &Default::default())?;
    let macs = net.macs_done() - before;
    if let Some(x) = net.preprocess_raw(decoded)? {
        for _ in 0..3 {
            net.forward_raw(&x)?;
        }
        for _ in 0..runs {
            let t = Instant::now();
            net.forward_raw(&x)?;
            times.push(ms_since(t));
        }
    }
    // A model that takes prompts: one click on the image it has encoded.
    let mut prompt_times = Vec::new();
    if entry.manifest.arch.takes_prompts() {
        let (w, h) = (decoded.width() as f32, decoded.height() as f32);
        let point = crate::vision::prompt::PromptPoint {
            x: w / 2.0,
            y: h / 2.0,
            positive: true,
        };
        let params = InferParams {
            prompts: Some(crate::vision::prompt::Prompts::new(&[
                crate::vision::prompt::Prompt::new(&[point], None)?,
            ])?),
            ..Default::default()
        };
        for i in 0..runs + 2 {
            let t = Instant::now();
            net.infer_with_masks(decoded, &params)?;
            if i >= 2 {
                prompt_times.push(ms_since(t));
            }
        }
    }
    Ok(ForwardLoop {
        times,
        macs,
        prompt_times,
    })
}

/// What [`forward_loop`] measured: the raw network's times, and the conv
/// multiply-adds of one whole pipeline.
struct ForwardLoop {
    times: Vec<f64>,
    macs: u64,
    /// Promptable models: one point prompt on an image already encoded
    /// (prompt encoder, mask decoder and the mask).
    prompt_times: Vec<f64>,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
