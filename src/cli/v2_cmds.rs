//! The client commands when `MODELDOCK_HOST` points at a v2 server that is
//! not modeldock (Triton, KServe, MLServer): `ps` and `models` list its
//! repository index, `load` and `unload` go through its repository
//! extension, and `infer` runs modeldock's pre/post-processing here with the
//! network there.

use super::args::ServerFlags;
use crate::backend::{V2Client, DEFAULT_TIMEOUT};
use crate::catalog::registry::Registry;
use crate::client::v2_server;
use crate::error::{Error, Result};

/// A v2 server that is not modeldock.
pub struct OtherServer {
    pub base: String,
    pub name: String,
}

/// The server `flags` name, when one answers there and it is not modeldock.
pub fn other_server(flags: &ServerFlags) -> Result<Option<OtherServer>> {
    Ok(match crate::client::choose(flags.server.as_deref(), false)? {
        crate::client::Door::Other { base, name } => Some(OtherServer { base, name }),
        _ => None,
    })
}

fn client(s: &OtherServer) -> Result<std::sync::Arc<V2Client>> {
    V2Client::shared(&s.base, DEFAULT_TIMEOUT)
}

/// `ps` / `models`: the repository index with each model's state, and
/// whether modeldock has a decoder for it.
pub fn list(s: &OtherServer, local: &Registry, json: bool) -> Result<i32> {
    let attached = v2_server::attach(&s.base, &s.name, local, None)?;
    if let Some(note) = &attached.fallback {
        eprintln!("modeldock: {note}");
    }
    let rows: Vec<serde_json::Value> = attached
        .index
        .iter()
        .map(|r| {
            let decoder = attached
                .registry
                .entries
                .iter()
                .find(|e| e.manifest.backend.as_ref().is_some_and(|b| b.model == r.name))
                .map(|e| e.manifest.arch)
                .unwrap_or(crate::catalog::Arch::Raw);
            serde_json::json!({"model": r.name, "version": r.version, "state": r.state,
                               "reason": r.reason, "decoder": decoder})
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"server": s.name, "url": s.base, "models": rows})
        );
        return Ok(0);
    }
    println!("{} at {}", s.name, s.base);
    println!(
        "{:<24} {:<8} {:<12} {:<20} REASON",
        "MODEL", "VERSION", "STATE", "DECODER"
    );
    for r in &rows {
        let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
        println!(
            "{:<24} {:<8} {:<12} {:<20} {}",
            text("model"),
            text("version"),
            if text("state").is_empty() {
                "–".to_string()
            } else {
                text("state")
            },
            text("decoder"),
            text("reason")
        );
    }
    Ok(0)
}

pub fn load(s: &OtherServer, model: &str) -> Result<i32> {
    let c = client(s)?;
    eprintln!("loading {model} on {} at {}", s.name, s.base);
    c.load(model)?;
    eprintln!("{model} is loaded on {} (its memory is the server's)", s.name);
    Ok(0)
}

pub fn unload(s: &OtherServer, model: Option<&str>) -> Result<i32> {
    let c = client(s)?;
    let targets: Vec<String> = match model {
        Some(m) => vec![m.to_string()],
        None => c
            .index()
            .map_err(|e| Error::unavailable(e.to_string()))?
            .into_iter()
            .filter(|r| r.ready())
            .map(|r| r.name)
            .collect(),
    };
    let mut failed = 0;
    for m in targets {
        match c.unload(&m) {
            Ok(()) => eprintln!("{m} unloaded on {}", s.name),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

pub fn not_here(s: &OtherServer, what: &str) -> Error {
    Error::usage(format!(
        "{what} is modeldock's own; the server at {} is {} (ps, load, unload and infer work there)",
        s.base, s.name
    ))
}
