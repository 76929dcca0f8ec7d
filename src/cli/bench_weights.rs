//! `modeldock bench --weights-gib N [--shards K]`: the loader at scale.
//!
//! Writes an N GiB toy model twice (one safetensors file, and K shards with
//! a Hugging Face index), then for each layout times, in this run:
//! streaming the files (a `cat` into a reused buffer: the floor with the
//! page cache warm) and into fresh memory, five warm loads, and a cold read and a cold load with
//! the files' pages dropped from the page cache; and the peak RSS of each
//! load over the weights' bytes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::args::BenchArgs;
use super::bench_cmd::wait_state;
use super::page_cache::drop_file;
use crate::engine::{Engine, ModelState};
use crate::error::{Error, Result};
use crate::telemetry::process;

/// The pause between writing the model and timing it.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Reads every file whole into one reused 1 MiB buffer (what `cat > /dev/null` does).
fn stream(files: &[PathBuf]) -> Result<f64> {
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for p in files {
        let mut f = std::fs::File::open(p).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::msg(format!("{}: {e}", p.display()))),
            }
        }
    }
    Ok(ms_since(t))
}

/// Reads every file whole into memory just handed back to the OS, as a
/// load must (the kernel faults in and zeroes each new page): the floor of
/// a load that allocates its tensors.
fn read_fresh(files: &[PathBuf]) -> Result<f64> {
    let t = Instant::now();
    for p in files {
        super::page_cache::read_into_fresh_memory(p).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
    }
    Ok(ms_since(t))
}

/// One load to resident, timed, with its peak RSS above the RSS before it;
/// then an unload back to available.
fn load_once(engine: &Engine, model: &str) -> Result<(f64, Option<u64>)> {
    crate::engine::allocator::release_free_memory();
    let before = process::rss_bytes();
    let reset = process::reset_peak_rss();
    let t = Instant::now();
    engine.load(model)?;
    wait_state(engine, model, ModelState::Resident)?;
    let took = ms_since(t);
    let peak = process::peak_rss_bytes()
        .filter(|_| reset)
        .zip(before)
        .map(|(p, b)| p.saturating_sub(b));
    engine.unload(model)?;
    wait_state(engine, model, ModelState::Available)?;
    Ok((took, peak))
}

/// The figures of one layout.
fn layout(engine: &Engine, model: &str, files: &[PathBuf], bytes: u64, loads: usize) -> Result<serde_json::Value> {
    stream(files)?; // the page cache warm
    let streams: Vec<f64> = (0..loads).map(|_| stream(files)).collect::<Result<_>>()?;
    let fresh: Vec<f64> = (0..loads).map(|_| read_fresh(files)).collect::<Result<_>>()?;
    let mut times = Vec::new();
    let mut peaks = Vec::new();
    for _ in 0..loads {
        let (t, p) = load_once(engine, model)?;
        times.push(t);
        peaks.extend(p);
    }
    let drop_all = |fs: &[PathBuf]| fs.iter().all(|p| drop_file(p));
    let (mut cold_reads, mut cold_loads) = (Vec::new(), Vec::new());
    if drop_all(files) {
        for _ in 0..2 {
            drop_all(files);
            cold_reads.push(stream(files)?);
            drop_all(files);
            cold_loads.push(load_once(engine, model)?.0);
        }
    }
    let stream_ms = median(&streams);
    let fresh_ms = median(&fresh);
    let load_ms = median(&times);
    let slowest = times.iter().copied().fold(0.0, f64::max);
    let peak = peaks.iter().copied().max();
    let cold = (!cold_reads.is_empty()).then(|| (median(&cold_reads), median(&cold_loads)));
    Ok(json!({
        "model": model,
        "files": files.len(),
        "weights_bytes": bytes,
        "stream_ms": stream_ms,
        "load_ms": times,
        "load_median_ms": load_ms,
        "load_slowest_ms": slowest,
        "load_ratio_warm": load_ms / stream_ms,
        "load_ratio_warm_slowest": slowest / stream_ms,
        "fresh_read_ms": fresh_ms,
        "load_ratio_fresh": load_ms / fresh_ms,
        "cold_read_ms": cold.map(|c| c.0),
        "cold_load_ms": cold.map(|c| c.1),
        "load_ratio_cold": cold.map(|(r, l)| l / r),
        "peak_rss_bytes": peak,
        "peak_rss_ratio": peak.map(|p| p as f64 / bytes as f64),
    }))
}

pub fn run(args: &BenchArgs, gib: f64) -> Result<i32> {
    if !(gib > 0.0 && gib <= 1024.0) {
        return Err(Error::usage(format!(
            "--weights-gib {gib}: expected a size above 0 and at most 1024"
        )));
    }
    let shards = args.shards.clamp(1, 1000);
    let bytes = (gib * (1u64 << 30) as f64) as u64;
    let tmp = std::env::temp_dir().join(format!("modeldock-bench-weights-{}", std::process::id()));
    let result = (|| {
        let t = Instant::now();
        let toy = crate::models::toy_shards::write_big_toy(&tmp, "bench-big", bytes, shards)?;
        measure(args, &tmp, toy, ms_since(t), shards)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    print(args, result?)
}

/// `--sam-weights VARIANT`: random SAM weights from a seed, as one file and
/// as `--shards` HF-style shards, loaded like the toy.
#[cfg(feature = "sam")]
pub fn run_sam(args: &BenchArgs, variant: &str) -> Result<i32> {
    use crate::models::sam::Variant;
    let v = Variant::parse(variant).ok_or_else(|| {
        Error::usage(format!(
            "--sam-weights {variant}: expected one of {}",
            Variant::NAMES.join(", ")
        ))
    })?;
    let shards = args.shards.clamp(2, 1000);
    let tmp = std::env::temp_dir().join(format!("modeldock-bench-sam-{}", std::process::id()));
    let result = (|| {
        let t = Instant::now();
        let mut files = Vec::new();
        for (id, k) in [
            (format!("sam-{variant}"), 1),
            (format!("sam-{variant}-sharded"), shards),
        ] {
            let d = tmp.join(&id);
            std::fs::create_dir_all(&d).map_err(|e| Error::msg(format!("{}: {e}", d.display())))?;
            let weights = crate::models::sam_random::write_sam_weights(v, 1, &d, &id, k)?;
            let toml = format!(
                "id = \"{id}\"\nname = \"SAM {variant} (random)\"\ntask = \"segment\"\narch = \"sam\"\n\
                 variant = \"{variant}\"\nweights = \"{weights}\"\ninput_size = 1024\nlicence = \"bench\"\n"
            );
            let p = d.join("model.toml");
            std::fs::write(&p, toml).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&d)
                .map_err(|e| Error::msg(format!("{}: {e}", d.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            paths.sort();
            files.push((id, paths));
        }
        let bytes = files[0]
            .1
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let mut it = files.into_iter();
        let (Some(single), Some(sharded)) = (it.next(), it.next()) else {
            return Err(Error::msg("the SAM weights were not written"));
        };
        let single = (single.0, single.1.into_iter().next().unwrap_or_default());
        let toy = crate::models::toy_shards::BigToy {
            single,
            sharded,
            weights_bytes: bytes,
        };
        measure(args, &tmp, toy, ms_since(t), shards)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    print(args, result?)
}

fn print(args: &BenchArgs, out: serde_json::Value) -> Result<i32> {
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(0)
}

/// Loads both layouts of `toy` (written in `write_ms`) and measures them.
fn measure(
    args: &BenchArgs,
    tmp: &Path,
    toy: crate::models::toy_shards::BigToy,
    write_ms: f64,
    shards: usize,
) -> Result<serde_json::Value> {
    let bytes = toy.weights_bytes;
    // Writing gigabytes leaves the kernel busy for seconds after the last
    // sync (the first load then took 5-15x the others): let it settle.
    std::thread::sleep(SETTLE);
    let mut flags = args.engine.clone();
    flags.catalog.models_dir.push(tmp.to_path_buf());
    let reg = flags.registry();
    let mut cfg = flags.checked_config()?;
    cfg.default_keep_alive = crate::engine::KeepAlive::Forever;
    cfg.budget_bytes = cfg.budget_bytes.max(bytes + (64 << 20));
    let engine = Engine::start(reg, cfg, None);
    let loads = args.runs.clamp(3, 5);
    let single = layout(
        &engine,
        &toy.single.0,
        std::slice::from_ref(&toy.single.1),
        toy.weights_bytes,
        loads,
    );
    let sharded = single
        .as_ref()
        .ok()
        .map(|_| layout(&engine, &toy.sharded.0, &toy.sharded.1, toy.weights_bytes, loads));
    engine.shutdown();
    Ok(json!({
        "weights_bytes": toy.weights_bytes,
        "shards": shards,
        "write_ms": write_ms,
        "threads": rayon::current_num_threads(),
        "single_file": single?,
        "sharded": sharded.transpose()?,
    }))
}
