//! `ps`, `load`, `unload`, `pin`, `unpin`: commands that steer a running
//! server (they need one; without it they say how to start it).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::args::{LoadArgs, PinArgs, PsArgs, ServerFlags, UnloadArgs};
use super::v2_cmds;
use crate::client::HttpClient;
use crate::client::{LoadPlan, ModelState};
use crate::error::{Error, Result};
use crate::units::human_bytes;

/// The running server, or an error saying none is running and how to start one.
pub fn server(flags: &ServerFlags) -> Result<HttpClient> {
    let base = crate::client::base_url(flags.server.as_deref())?;
    crate::backend::transport::check_tls(&base)?;
    let c = HttpClient::new(&base);
    match c.not_live() {
        None => Ok(c),
        Some(why) => Err(Error::unavailable(format!(
            "no modeldock server is running at {base} ({why}); start one with `modeldock serve` (or open the app), \
             or point MODELDOCK_HOST at one"
        ))),
    }
}

fn until(v: &Value) -> String {
    if v["pinned"].as_bool() == Some(true) {
        return "pinned".to_string();
    }
    match v["expires_at"].as_str() {
        Some(t) => match humantime::parse_rfc3339(t) {
            Ok(at) => match at.duration_since(std::time::SystemTime::now()) {
                Ok(d) => format!(
                    "{} from now",
                    humantime::format_duration(Duration::from_secs(d.as_secs()))
                ),
                Err(_) => "now".to_string(),
            },
            Err(_) => t.to_string(),
        },
        None if v["in_flight"].as_u64().unwrap_or(0) > 0 => "busy".to_string(),
        None if v["keep_alive"] == "forever" => "forever".to_string(),
        None => "–".to_string(),
    }
}

/// The registry of this machine's manifests (to match a v2 server's models
/// with decoders here).
fn local_registry() -> crate::catalog::registry::Registry {
    crate::catalog::registry::Registry::discover(&crate::catalog::registry::Registry::default_dirs(&[]))
}

pub fn ps(a: &PsArgs) -> Result<i32> {
    if let Some(o) = v2_cmds::other_server(&a.server)? {
        return v2_cmds::list(&o, &local_registry(), a.json);
    }
    let c = server(&a.server)?;
    let v = c.ps()?;
    if a.json {
        println!("{v}");
        return Ok(0);
    }
    println!(
        "{:<22} {:<10} {:>10}  {:<10} {:<18} {:<20} LOADS",
        "MODEL", "STATE", "SIZE", "PROCESSOR", "PRECISION", "UNTIL"
    );
    for m in v["models"].as_array().into_iter().flatten() {
        let size = m["measured_bytes"]
            .as_u64()
            .or(m["predicted_bytes"].as_u64())
            .unwrap_or(0);
        println!(
            "{:<22} {:<10} {:>10}  {:<10} {:<18} {:<20} {}",
            m["id"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            human_bytes(size),
            m["device"].as_str().unwrap_or("?"),
            m["precision"].as_str().unwrap_or("?"),
            until(m),
            m["loads"].as_u64().unwrap_or(0),
        );
    }
    Ok(0)
}

/// Prints a load plan (`load --dry-run`): exit 0 when it would load, 1 when
/// it would be refused.
fn dry_run(v: &Value, json: bool) -> Result<i32> {
    let plan: LoadPlan = serde_json::from_value(v.clone())
        .map_err(|e| Error::msg(format!("dry run: the server's plan is not understood: {e}")))?;
    if json {
        println!("{v}");
        return Ok(if plan.fits { 0 } else { 1 });
    }
    let (model, size) = (&plan.model, human_bytes(plan.predicted_bytes));
    let headroom = human_bytes(plan.headroom_bytes);
    if matches!(plan.state, ModelState::Resident | ModelState::Loading) {
        println!(
            "{model} is already {} ({size}); {headroom} of the budget left",
            plan.state.to_string().to_lowercase()
        );
        return Ok(0);
    }
    if !plan.fits {
        println!(
            "{model} ({size}) would be refused: {}",
            plan.refusal.unwrap_or_default()
        );
        return Ok(1);
    }
    if plan.evict.is_empty() {
        println!("{model} ({size}) would load without evicting anything; {headroom} of the budget left after it");
        return Ok(0);
    }
    println!("{model} ({size}) would load after evicting:");
    for v in &plan.evict {
        let ago = Duration::from_secs(v.last_used_ms_ago / 1000);
        println!(
            "  {:<22} {:>10}  last used {} ago",
            v.id,
            human_bytes(v.bytes),
            humantime::format_duration(ago)
        );
    }
    println!("{headroom} of the budget left after it");
    Ok(0)
}

pub fn load(a: &LoadArgs) -> Result<i32> {
    if let Some(o) = v2_cmds::other_server(&a.server)? {
        return v2_cmds::load(&o, &a.model);
    }
    let c = server(&a.server)?;
    if a.dry_run {
        return dry_run(&c.plan_load(&a.model)?, a.json);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("loading {}", a.model));
    // The progress bar is drawn from the event stream while the load request waits.
    let follower = {
        let c = c.clone();
        let bar = bar.clone();
        let model = a.model.clone();
        std::thread::spawn(move || {
            let mut shown_phase = "";
            let _ = c.follow_events(|name, v| {
                if v["model"].as_str() != Some(model.as_str()) {
                    return true;
                }
                match name {
                    "load_started" | "progress" => {
                        let phase = if v["phase"] == "downloading" {
                            "downloading"
                        } else {
                            "loading"
                        };
                        if phase != shown_phase {
                            // Two phases: the download's bytes, then the load's.
                            shown_phase = phase;
                            bar.set_message(format!("{phase} {model}"));
                            bar.reset_eta();
                        }
                        bar.set_length(v["bytes_total"].as_u64().unwrap_or(0));
                        bar.set_position(v["bytes_done"].as_u64().unwrap_or(0));
                        true
                    }
                    _ => false,
                }
            });
        })
    };
    let r = c.load(&a.model, a.keep_alive.map(|k| k.to_string()), a.pin, true);
    bar.finish_and_clear();
    drop(follower);
    let v = r?;
    let size = v["measured_bytes"]
        .as_u64()
        .or(v["predicted_bytes"].as_u64())
        .unwrap_or(0);
    eprintln!(
        "{} is resident ({}, keep-alive {}{})",
        a.model,
        human_bytes(size),
        v["keep_alive"].as_str().unwrap_or("?"),
        if v["pinned"].as_bool() == Some(true) {
            ", pinned"
        } else {
            ""
        }
    );
    Ok(0)
}

pub fn unload(a: &UnloadArgs) -> Result<i32> {
    if let Some(o) = v2_cmds::other_server(&a.server)? {
        return v2_cmds::unload(&o, if a.all { None } else { a.model.as_deref() });
    }
    let c = server(&a.server)?;
    let v = c.unload(if a.all { None } else { a.model.as_deref() })?;
    let mut busy = 0;
    for m in v["models"].as_array().into_iter().flatten() {
        let id = m["model"].as_str().unwrap_or("?");
        if m["unloaded"].as_bool() == Some(true) {
            eprintln!("{id} unloaded");
        } else {
            busy += 1;
            eprintln!("{id} is busy; it will leave memory when its requests finish");
        }
    }
    Ok(if busy > 0 { 1 } else { 0 })
}

pub fn pin(a: &PinArgs, pinned: bool) -> Result<i32> {
    if let Some(o) = v2_cmds::other_server(&a.server)? {
        return Err(v2_cmds::not_here(&o, "pinning"));
    }
    let c = server(&a.server)?;
    c.pin(&a.model, pinned)?;
    eprintln!("{} {}", a.model, if pinned { "pinned" } else { "unpinned" });
    Ok(0)
}
