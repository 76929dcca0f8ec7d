//! The loader on sharded safetensors (a Hugging Face index, or a list of
//! files in the manifest) and half-precision files: the same tensors as one
//! file, one-line errors naming the bad shard, and the peak memory of a
//! 1 GiB load measured (not timed) by `modeldock bench --weights-gib`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use modeldock::catalog::registry::load_manifest_file;
use modeldock::models::toy_shards::write_big_toy;
use modeldock::models::weights::var_builder;

/// Every tensor of the toy, read through the model loader's VarBuilder.
fn tensors(manifest: &Path, names: &[String]) -> HashMap<String, Vec<f32>> {
    let e = load_manifest_file(manifest).unwrap_or_else(|e| panic!("{e}"));
    let src = e.weights_source(false).unwrap_or_else(|e| panic!("{e}"));
    let vb = var_builder(&src, e.predicted_bytes, &Device::Cpu, Arc::new(|_, _| {})).unwrap_or_else(|e| panic!("{e}"));
    names
        .iter()
        .map(|n| {
            let t = vb.get_unchecked(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            (
                n.clone(),
                t.flatten_all().and_then(|t| t.to_vec1::<f32>()).unwrap_or_default(),
            )
        })
        .collect()
}

fn names(shards: usize) -> Vec<String> {
    let mut v: Vec<String> = ["conv.weight", "conv.bias", "head.weight", "head.bias"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend((0..shards).map(|i| format!("pad.{i}")));
    v
}

#[test]
fn sharded_and_single_file_give_bit_identical_tensors() {
    let dir = tempfile::tempdir().unwrap();
    // 12 MiB in 3 shards: each pad tensor is above the size read in parallel.
    let toy = write_big_toy(dir.path(), "t", 12 << 20, 3).unwrap();
    assert_eq!(toy.sharded.1.len(), 3);
    let n = names(3);
    let one = tensors(&dir.path().join("t/model.toml"), &n);
    let many = tensors(&dir.path().join("t-sharded/model.toml"), &n);
    let mut total = 0;
    for k in &n {
        let (a, b) = (&one[k], &many[k]);
        assert!(!a.is_empty(), "{k} is empty");
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len(),
            "{k} differs"
        );
        total += a.len() * 4;
    }
    assert_eq!(total as u64, toy.weights_bytes);
    // The predicted size is the headers' sum, for both layouts.
    for m in ["t", "t-sharded"] {
        let e = load_manifest_file(&dir.path().join(m).join("model.toml")).unwrap();
        assert_eq!(e.predicted_bytes, toy.weights_bytes, "{m}");
    }
}

#[test]
fn a_manifest_may_list_its_shards() {
    let dir = tempfile::tempdir().unwrap();
    write_big_toy(dir.path(), "t", 1 << 20, 2).unwrap();
    let m = dir.path().join("t-sharded/model.toml");
    let text = std::fs::read_to_string(&m).unwrap().replace(
        "weights = \"model.safetensors.index.json\"",
        "weights = [\"model-00001-of-00002.safetensors\", \"model-00002-of-00002.safetensors\"]",
    );
    std::fs::write(&m, text).unwrap();
    let n = names(2);
    let listed = tensors(&m, &n);
    let one = tensors(&dir.path().join("t/model.toml"), &n);
    assert_eq!(listed, one);
}

/// The registration error of the sharded toy after `damage`, as one line.
fn refused(damage: impl Fn(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_big_toy(dir.path(), "t", 1 << 20, 2).unwrap();
    let sdir = dir.path().join("t-sharded");
    damage(&sdir);
    let msg = match load_manifest_file(&sdir.join("model.toml")) {
        Ok(_) => panic!("the damaged shards were accepted"),
        Err(e) => e.to_string(),
    };
    assert_eq!(msg.lines().count(), 1, "{msg}");
    msg
}

#[test]
fn a_missing_shard_is_named() {
    let msg = refused(|d| std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap());
    assert!(
        msg.contains("model-00002-of-00002.safetensors") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn a_truncated_shard_is_named() {
    let msg = refused(|d| {
        let p = d.join("model-00002-of-00002.safetensors");
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
    });
    assert!(
        msg.contains("model-00002-of-00002.safetensors") && msg.contains("past the end"),
        "{msg}"
    );
}

#[test]
fn a_shard_whose_header_disagrees_with_the_index_is_named() {
    // The index places pad.1 in the first shard; its header does not hold it.
    let msg = refused(|d| {
        let p = d.join("model.safetensors.index.json");
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "\"pad.1\":\"model-00002-of-00002.safetensors\"",
            "\"pad.1\":\"model-00001-of-00002.safetensors\"",
        );
        assert!(text.contains("\"pad.1\":\"model-00001"), "{text}");
        std::fs::write(p, text).unwrap();
    });
    // The shard the index now names lacks it.
    assert!(
        msg.contains("model-00001-of-00002.safetensors: has no tensor 'pad.1'"),
        "{msg}"
    );
    // A tensor the index names that no shard holds.
    let msg = refused(|d| {
        let p = d.join("model.safetensors.index.json");
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "\"weight_map\":{",
            "\"weight_map\":{\"ghost\":\"model-00001-of-00002.safetensors\",",
        );
        std::fs::write(p, text).unwrap();
    });
    assert!(
        msg.contains("model-00001-of-00002.safetensors") && msg.contains("ghost"),
        "{msg}"
    );
}

#[test]
fn an_index_cannot_name_files_outside_its_folder() {
    let msg = refused(|d| {
        let p = d.join("model.safetensors.index.json");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"pad.1\":\"model-00002", "\"pad.1\":\"../t/model-00002");
        std::fs::write(p, text).unwrap();
    });
    assert!(
        msg.contains("model.safetensors.index.json") && msg.contains("plain file name"),
        "{msg}"
    );
}

#[test]
fn a_shard_truncated_after_registration_fails_the_load_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_big_toy(dir.path(), "t", 8 << 20, 2).unwrap();
    let e = load_manifest_file(&dir.path().join("t-sharded/model.toml")).unwrap();
    let src = e.weights_source(false).unwrap();
    let p = dir.path().join("t-sharded/model-00002-of-00002.safetensors");
    let len = std::fs::metadata(&p).unwrap().len();
    // Registered whole; cut before the load reads it. The header still
    // promises the bytes, so the read itself must notice.
    let vb = var_builder(&src, e.predicted_bytes, &Device::Cpu, Arc::new(|_, _| {}));
    let vb = match vb {
        Ok(vb) => vb,
        Err(e) => panic!("{e}"),
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    let err = vb.get_unchecked("pad.1").map(|_| ()).unwrap_err().to_string();
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("pad.1"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn half_precision_files_widen_to_the_same_f32_values() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    // Above the parallel-read size, with values that need rounding in f16.
    let n = 3 << 20;
    let vals: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.000_37).sin() * 300.0).collect();
    let base = Tensor::from_vec(vals, n, &dev).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let half = base.to_dtype(dtype).unwrap();
        let mut m = HashMap::new();
        m.insert("w".to_string(), half.clone());
        let p = dir.path().join(format!("{dtype:?}.safetensors"));
        candle_core::safetensors::save(&m, &p).unwrap();
        let src = modeldock::catalog::weights_source::WeightsSource::File(p);
        let vb = var_builder(&src, 0, &dev, Arc::new(|_, _| {})).unwrap_or_else(|e| panic!("{e}"));
        let got = vb.get(n, "w").unwrap().to_vec1::<f32>().unwrap();
        let want = half.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{dtype:?}: widened values differ from candle's conversion");
    }
}

#[test]
fn a_one_gib_sharded_load_peaks_near_its_weights() {
    let (code, out, err) = common::cli(
        &["bench", "--weights-gib", "1", "--shards", "4", "--runs", "3", "--json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON: {out}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    for layout in ["single_file", "sharded"] {
        let ratio = v[layout]["peak_rss_ratio"]
            .as_f64()
            .unwrap_or_else(|| panic!("{layout}: no peak_rss_ratio in {line}"));
        // The weights themselves are 1.0; 1.25 leaves room for the process.
        assert!(ratio <= 1.25, "{layout}: peak RSS {ratio:.3}x the weights");
        assert!(
            ratio >= 0.9,
            "{layout}: peak RSS {ratio:.3}x: the load did not hold the weights"
        );
    }
    assert_eq!(v["sharded"]["files"], 4);
}

#[test]
fn a_cancelled_load_stops_reading_and_frees_what_it_read() {
    use modeldock::engine::{Event, ImageInput};
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB of padding, read after a 2 s pause among the small tensors: the
    // cancel arrives before it.
    modeldock::models::toy::write_toy_model(dir.path(), "slowbig", 16 << 20, "", &[("slow_load_ms", 2000.0)]).unwrap();
    let (engine, _) = common::engine_for(dir.path(), common::config());
    let events = engine.subscribe(4096);
    let input = ImageInput::Bytes {
        name: "x.png".into(),
        bytes: Arc::new(common::png(32, 32)),
    };
    let id = engine
        .infer("slowbig", input, Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut started, mut freed, mut loaded) = (false, None, false);
    let mut most = 0u64;
    let mut total = 0u64;
    while std::time::Instant::now() < deadline && freed.is_none() && !loaded {
        let Ok(ev) = events.recv_timeout(std::time::Duration::from_millis(200)) else {
            continue;
        };
        match ev {
            Event::LoadStarted { model, bytes_total } if model == "slowbig" => {
                started = true;
                total = bytes_total;
                // Nothing waits for the load once its one request is cancelled.
                engine.cancel(vec![id]);
            }
            Event::LoadProgress { model, bytes_done, .. } if model == "slowbig" => most = most.max(bytes_done),
            Event::Freed { model, reason } if model == "slowbig" => freed = Some(format!("{reason:?}")),
            Event::Loaded { model, .. } if model == "slowbig" => loaded = true,
            _ => {}
        }
    }
    assert!(started, "the load never started");
    assert!(!loaded, "the cancelled load ran to the end");
    let reason = freed.unwrap_or_else(|| panic!("no Freed event within 60 s"));
    assert!(reason.contains("Cancelled"), "{reason}");
    assert!(
        total >= 64 << 20 && most < total / 2,
        "read {most} of {total} bytes before stopping"
    );
    common::wait_state(&engine, "slowbig", "Available");
    engine.shutdown();
}

#[test]
fn bf16_weights_load_and_models_says_what_they_run_in() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    for id in ["plain", "half"] {
        modeldock::models::toy::write_toy_model(dir.path(), id, 4096, "", &[]).unwrap();
    }
    // `half`: the same toy with every tensor stored as bf16.
    let p = dir.path().join("half/toy.safetensors");
    let ts = candle_core::safetensors::load(&p, &dev).unwrap();
    let ts: HashMap<String, Tensor> = ts
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::BF16).unwrap()))
        .collect();
    candle_core::safetensors::save(&ts, &p).unwrap();

    let d = dir.path().to_string_lossy().to_string();
    let (code, out, err) = common::cli(
        &["models", "--json", "--models-dir", &d],
        &[("MODELDOCK_HOST", &common::no_server())],
    );
    assert_eq!(code, 0, "{err}");
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let field = |id: &str, k: &str| {
        v.iter()
            .find(|m| m["id"] == id)
            .map(|m| m[k].clone())
            .unwrap_or_default()
    };
    assert_eq!(field("plain", "precision"), "f32");
    assert_eq!(field("half", "precision"), "f32 (bf16 weights)");
    // Widened to f32 in memory: predicted at twice its tensors' bytes on disk,
    // as much as the f32 toy.
    let (plain, half) = (field("plain", "predicted_bytes"), field("half", "predicted_bytes"));
    assert!(plain.as_u64().is_some_and(|b| b > 16384), "{plain}");
    assert_eq!(plain, half);
    let on_disk = |id: &str| {
        std::fs::metadata(dir.path().join(id).join("toy.safetensors"))
            .unwrap()
            .len()
    };
    assert!(on_disk("half") < on_disk("plain") * 6 / 10);

    // It loads and answers like the f32 one, within bf16's rounding.
    let png = dir.path().join("x.png");
    std::fs::write(&png, common::png(32, 32)).unwrap();
    let png = png.to_string_lossy().to_string();
    let scores: Vec<f64> = ["plain", "half"]
        .iter()
        .map(|id| {
            let args = ["infer", "--local", "--models-dir", &d, "--model", id, "--json", &png];
            let (code, out, err) = common::cli(&args, &[]);
            assert_eq!(code, 0, "{id}: {err}");
            let v: serde_json::Value =
                serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"));
            v.pointer("/detections/0/score")
                .and_then(|s| s.as_f64())
                .unwrap_or_else(|| panic!("{id}: no score in {out}"))
        })
        .collect();
    assert!((scores[0] - scores[1]).abs() < 0.02, "{scores:?}");
}

#[test]
fn a_big_load_evicts_what_it_must_while_the_face_detector_keeps_answering() {
    use modeldock::engine::{Event, ImageInput};
    use modeldock::models::toy_shards::write_big_toy_file;
    let dir = tempfile::tempdir().unwrap();
    // 600 MiB resident first, then 1 GiB (its read stretched by a 1 s pause
    // among its small tensors) under a 1.5 GiB budget: only the 600 MiB one
    // must go; the face detector stays and answers throughout.
    write_big_toy_file(dir.path(), "mid", 600 << 20, "").unwrap();
    write_big_toy_file(dir.path(), "big", 1 << 30, "slow_load_ms = 1000").unwrap();
    let mut config = common::config();
    config.budget_bytes = 3 << 29;
    let (engine, _) = common::engine_for(dir.path(), config);
    let events = engine.subscribe(1 << 16);
    for m in ["mid", "face-detector"] {
        engine.load(m).unwrap();
        common::wait_state(&engine, m, "Resident");
    }
    let frame = Arc::new(common::png(320, 240));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A stream of frames to the face detector, as the Live panel sends them.
    let stream = {
        let (engine, frame, stop) = (engine.clone(), frame.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            for i in 0..2000u32 {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let input = ImageInput::Bytes {
                    name: format!("f{i}.png"),
                    bytes: frame.clone(),
                };
                // A distinct threshold per frame keeps the result cache out.
                let params = modeldock::vision::InferParams {
                    conf: Some(0.5 + i as f32 * 1e-6),
                    ..Default::default()
                };
                let ok = engine.infer_wait("face-detector", input, params).is_ok();
                answers.push((std::time::Instant::now(), ok));
            }
            answers
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    engine.load("big").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (mut started, mut loaded, mut evicted) = (None, None, Vec::new());
    while std::time::Instant::now() < deadline && loaded.is_none() {
        match events.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(Event::LoadStarted { model, .. }) if model == "big" => started = Some(std::time::Instant::now()),
            Ok(Event::Loaded { model, .. }) if model == "big" => loaded = Some(std::time::Instant::now()),
            Ok(Event::LoadFailed { model, error }) if model == "big" => panic!("big failed: {error}"),
            Ok(Event::Freed { model, reason }) => evicted.push((model, reason.to_string())),
            _ => {}
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let answers = stream.join().unwrap();
    let (started, loaded) = (started.expect("big never started"), loaded.expect("big never loaded"));
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert_eq!(evicted[0].0, "mid");
    assert!(
        evicted[0].1.contains("evicted") && evicted[0].1.contains("big"),
        "{evicted:?}"
    );
    assert_eq!(common::state(&engine, "face-detector"), "Resident");
    assert!(answers.iter().all(|(_, ok)| *ok), "a face-detector request failed");
    let during = answers.iter().filter(|(t, _)| *t > started && *t < loaded).count();
    assert!(during >= 3, "only {during} face-detector answers during the 1 s+ load");
    engine.shutdown();
}
