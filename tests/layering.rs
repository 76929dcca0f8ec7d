//! The arrows between rooms point down: the rooms stand in tiers (`TIERS`),
//! and a room uses only the tiers below its own, with a few more arrows
//! refused (`EXTRA`: ui, live and cli reach the engine only through
//! `client`; the server knows no catalogue or models; the residency state
//! machine, the scheduler and the pacer have no threads, clocks or tensors,
//! and residency imports nothing but `units` and std; only `v2` knows the
//! wire format). A violation names the file and the line.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

fn violations(room: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let path = root.join(room);
    let files = if path.is_dir() {
        rust_files(&path)
    } else {
        vec![path.with_extension("rs")]
    };
    assert!(!files.is_empty(), "no files in {room}");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in forbidden {
                if code.contains(bad) {
                    out.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    out
}

/// The rooms from the bottom up. A room may use the rooms of the tiers
/// below its own, never one of its own tier or above.
const TIERS: &[&[&str]] = &[
    &["units", "error", "logging"],
    &["v2", "telemetry", "kernels"],
    &["vision", "backend"],
    &["camera", "graph", "catalog"],
    &["models"],
    &["import"],
    &["engine"],
    &["setup"],
    &["server", "client"],
    &["live"],
    &["ui", "cli"],
    &["app_launch"],
];

/// Arrows the tiers allow that a room still may not take: the door (ui and
/// live reach the engine only through `client`; cli's rule is below), the
/// server's ignorance of how models are made, and the rooms that stay free
/// of tensors or of the allocator's knobs.
const EXTRA: &[(&str, &[&str])] = &[
    ("ui", &["crate::engine"]),
    ("live", &["crate::engine"]),
    (
        "server",
        &["crate::models", "crate::catalog", "crate::import", "crate::graph"],
    ),
    ("catalog", &["candle"]),
    ("backend", &["candle"]),
    ("v2", &["candle"]),
    ("telemetry", &["mallopt", "malloc_trim"]),
    (
        "engine/residency",
        &["candle", "std::thread", "Instant", "SystemTime", "crossbeam"],
    ),
    (
        "engine/scheduler",
        &["candle", "std::thread", "Instant", "SystemTime", "crossbeam", "crate::"],
    ),
    (
        "engine/pacer",
        &["candle", "std::thread", "Instant", "SystemTime", "crossbeam", "crate::"],
    ),
];

#[test]
fn rooms_only_use_the_rooms_below_them() {
    let mut all = Vec::new();
    for (t, tier) in TIERS.iter().enumerate() {
        let above: Vec<String> = TIERS[t..]
            .iter()
            .flat_map(|r| r.iter())
            .map(|r| match *r {
                // `crate::cli` would also match `crate::client`.
                "cli" => "crate::cli::".to_string(),
                r => format!("crate::{r}"),
            })
            .collect();
        for room in *tier {
            let own = format!("crate::{room}");
            let forbidden: Vec<&str> = above.iter().map(String::as_str).filter(|f| *f != own).collect();
            all.extend(violations(room, &forbidden));
        }
    }
    for (room, forbidden) in EXTRA {
        all.extend(violations(room, forbidden));
    }
    assert!(all.is_empty(), "imports against the arrows:\n{}", all.join("\n"));
}

#[test]
fn model_states_are_an_enum_not_strings() {
    let mut all = Vec::new();
    for room in ["ui", "cli", "engine", "server", "client"] {
        all.extend(violations(room, &["state == \"", "state != \"", "state.as_str()"]));
    }
    assert!(
        all.is_empty(),
        "string comparisons of model states:\n{}",
        all.join("\n")
    );
}

#[test]
fn residency_imports_nothing_but_units_and_std() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/residency.rs");
    let text = std::fs::read_to_string(&root).unwrap_or_default();
    assert!(!text.is_empty(), "no file {}", root.display());
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if !after.starts_with("units") {
                bad.push(format!("{}:{}: {}", root.display(), i + 1, line.trim()));
                break;
            }
            rest = after;
        }
        for ext in ["candle", "crossbeam", "parking_lot", "rayon"] {
            if code.contains(&format!("{ext}::")) || code.contains(&format!("use {ext}")) {
                bad.push(format!("{}:{}: {}", root.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "residency imports more than units and std:\n{}",
        bad.join("\n")
    );
}

/// The CLI reaches an engine through `client` (its types and its doors),
/// except the commands whose job is to host or measure an engine of their
/// own: `serve` (the engine it serves), `bench` and its HTTP half (this
/// process's engine, by design), and the page-cache helper `bench` uses.
#[test]
fn cli_reaches_the_engine_only_through_client() {
    const HOSTS: &[&str] = &[
        "serve_cmd.rs",
        "bench_cmd.rs",
        "bench_http.rs",
        "bench_weights.rs",
        "page_cache.rs",
    ];
    let bad: Vec<String> = violations("cli", &["crate::engine"])
        .into_iter()
        .filter(|v| !HOSTS.iter().any(|h| v.contains(&format!("/cli/{h}:"))))
        .collect();
    assert!(bad.is_empty(), "cli files that go around the door:\n{}", bad.join("\n"));
    for h in HOSTS {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli").join(h);
        assert!(p.exists(), "{} is listed as a host but does not exist", p.display());
    }
}

/// Only `src/v2/` knows the wire format: no other file names the binary
/// extension's header or its `binary_data_size` parameter (they use the
/// constants and codecs of `v2`).
#[test]
fn only_v2_knows_the_wire_format() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let words = [
        "binary_data_size",
        "Inference-Header-Content-Length",
        "inference-header-content-length",
    ];
    let mut bad = Vec::new();
    for f in rust_files(&root) {
        if f.starts_with(root.join("v2")) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if words.iter().any(|w| code.contains(w)) {
                bad.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "wire format outside src/v2:\n{}", bad.join("\n"));
    let v2 = std::fs::read_to_string(root.join("v2/mod.rs")).unwrap_or_default();
    assert!(v2.contains("binary_data_size"), "src/v2/mod.rs names the parameter");
}
