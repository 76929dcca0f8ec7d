//! `modeldock live --source webcam[:N]|DIR|synthetic --model ID [--frames N]
//! [--fps F] [--size WxH] [--mirror] [--no-track] [--json]`: the live pipeline without a window.

use std::time::{Duration, Instant};

use serde_json::json;

use super::args::LiveArgs;
use crate::client::ModelState;
use crate::client::{Client, Door};
use crate::error::{Error, Result};
use crate::live::{LiveOptions, LivePipeline};
use crate::vision::InferParams;

pub fn parse_size(s: &str) -> Result<(u32, u32)> {
    let bad = || Error::usage(format!("--size '{s}': expected WIDTHxHEIGHT, e.g. 640x480"));
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if w == 0 || h == 0 || w > 8192 || h > 8192 {
        return Err(bad());
    }
    Ok((w, h))
}

/// Polls `client` until `done` holds or `timeout` passes.
fn wait_until(client: &Client, timeout: Duration, done: impl Fn(&crate::client::Snapshot) -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if done(&client.snapshot()) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The engine the frames go to: the modeldock server (`--server`,
/// `MODELDOCK_HOST`, else the default port) when one answers, one engine per
/// machine, as `infer` does; else one in this process, said on stderr.
fn client_for(args: &LiveArgs) -> Result<Client> {
    let spec = args.server.server.as_deref();
    args.server.apply_remote_headers(spec)?;
    let door = crate::client::choose(spec, false)?;
    if let Door::Own { .. } = door {
        eprintln!("modeldock: no server running; running in this process");
    }
    crate::client::open(door, &args.engine, None, None)
}

pub fn run(args: &LiveArgs) -> Result<i32> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| crate::catalog::builtin::DEFAULT_LIVE_MODEL.to_string());
    let (frames, fps) = (args.frames, args.fps);
    let (w, h) = parse_size(&args.size)?;
    let engine = client_for(args)?;
    // `a+b` runs both models on every frame (see `live::infer_each`).
    let ids: Vec<&str> = model.split('+').filter(|s| !s.is_empty()).collect();
    let known = engine.snapshot();
    if let Some(bad) = ids.iter().find(|id| !known.models.iter().any(|m| m.id == **id)) {
        let at = engine.location();
        engine.shutdown();
        return Err(Error::not_found(format!("unknown model '{bad}' ({at})")));
    }
    // Load first so the figures describe the steady state, not the load.
    for id in &ids {
        engine.load(id)?;
    }
    wait_until(&engine, Duration::from_secs(600), |s| {
        ids.iter().all(|id| {
            s.models
                .iter()
                .any(|m| m.id == *id && matches!(m.state, ModelState::Resident | ModelState::Failed))
        })
    });
    let snap = engine.snapshot();
    for id in &ids {
        if let Some(m) = snap
            .models
            .iter()
            .find(|m| m.id == *id && m.state == ModelState::Failed)
        {
            engine.shutdown();
            return Err(Error::msg(
                m.failed_reason.clone().unwrap_or_else(|| format!("{id}: load failed")),
            ));
        }
    }
    let source = match crate::camera::open_spec(&args.source, w, h, fps) {
        Ok(s) => s,
        Err(e) => {
            engine.shutdown();
            return Err(e);
        }
    };
    let models = crate::live::model_list(&model);
    let track = if args.no_track {
        None
    } else {
        crate::live::hand_tracker::track_options(&snap, Some(&args.engine.registry()), &models)
    };
    let start = Instant::now();
    let mut p = LivePipeline::start(
        engine.clone(),
        source,
        LiveOptions {
            models,
            params: InferParams {
                conf: args.conf,
                iou: None,
                ..Default::default()
            },
            mirror: args.mirror,
            max_frames: Some(frames),
            headless: true,
            track,
        },
        None,
    );
    p.wait(Duration::from_secs(24 * 3600));
    let s = p.summary();
    let counts = p.track_counts();
    let status = p.status();
    let elapsed = start.elapsed().as_secs_f64();
    drop(p);
    engine.shutdown();
    if status.starts_with("camera error") {
        return Err(Error::msg(status));
    }
    if args.json {
        let mut v = serde_json::to_value(&s).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("source".into(), json!(args.source.to_string()));
            o.insert("model".into(), json!(model));
            o.insert("elapsed_s".into(), json!(elapsed));
            if let Some(c) = counts {
                o.insert(
                    "tracking".into(),
                    json!({"frames": c.frames, "palm_detections": c.detections, "hands_tracked": c.tracked}),
                );
            }
        }
        println!("{v}");
    } else {
        println!(
            "{} → {}: {} frames captured, {} inferred, {} dropped\n\
             camera {:.1} fps · inference {:.1} fps · end-to-end p50 {:.1} ms, p95 {:.1} ms · inference p50 {:.1} ms · max queue {}",
            args.source,
            model,
            s.frames_captured,
            s.frames_inferred,
            s.frames_dropped,
            s.camera_fps,
            s.inference_fps,
            s.e2e_latency_p50_ms,
            s.e2e_latency_p95_ms,
            s.inference_p50_ms,
            s.max_queue_len
        );
        if let Some(c) = counts {
            println!(
                "hand tracking: palm detector on {} of {} frames, {} hands tracked at the end",
                c.detections, c.frames, c.tracked
            );
        }
    }
    Ok(0)
}
