//! The arrows between rooms point down (ui/cli/live → client, server →
//! engine → import → models → catalog/graph → kernels/vision/backend → v2);
//! the residency state machine, the scheduler and the pacer have no
//! threads, clocks or tensors, and residency imports nothing but `units`
//! and std. A violation names the file and the line.

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

#[test]
fn rooms_only_use_the_rooms_below_them() {
    let rules: &[(&str, &[&str])] = &[
        (
            "ui",
            &["crate::cli::", "crate::server", "crate::app_launch", "crate::engine"],
        ),
        ("cli", &["crate::ui"]),
        (
            "server",
            &[
                "crate::ui",
                "crate::cli::",
                "crate::client",
                "crate::models",
                "crate::catalog",
                "crate::import",
                "crate::graph",
            ],
        ),
        ("client", &["crate::ui", "crate::cli::", "crate::server"]),
        (
            "engine",
            &[
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "crate::camera",
            ],
        ),
        (
            "camera",
            &[
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "crate::engine",
                "crate::live",
            ],
        ),
        ("live", &["crate::ui", "crate::cli::", "crate::server", "crate::engine"]),
        (
            "models",
            &[
                "crate::import",
                "crate::engine",
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "crate::camera",
            ],
        ),
        (
            "vision",
            &[
                "crate::engine",
                "crate::models",
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "crate::camera",
            ],
        ),
        (
            "catalog",
            &[
                "crate::engine",
                "crate::models",
                "crate::import",
                "crate::graph",
                "crate::kernels",
                "crate::vision",
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "crate::camera",
                "candle",
            ],
        ),
        (
            "graph",
            &[
                "crate::engine",
                "crate::models",
                "crate::catalog",
                "crate::import",
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "crate::camera",
            ],
        ),
        (
            "import",
            &[
                "crate::engine",
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "crate::camera",
            ],
        ),
        (
            "kernels",
            &[
                "crate::engine",
                "crate::models",
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
            ],
        ),
        (
            "v2",
            &[
                "crate::engine",
                "crate::models",
                "crate::catalog",
                "crate::backend",
                "crate::client",
                "crate::server",
                "crate::ui",
                "crate::cli::",
                "crate::camera",
                "crate::live",
                "crate::vision",
                "candle",
            ],
        ),
        (
            "backend",
            &[
                "crate::engine",
                "crate::models",
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "crate::camera",
                "candle",
            ],
        ),
        (
            "telemetry",
            &[
                "crate::engine",
                "crate::ui",
                "crate::cli::",
                "crate::server",
                "crate::client",
                "mallopt",
                "malloc_trim",
            ],
        ),
        (
            "setup",
            &["crate::ui", "crate::cli::", "crate::server", "crate::client"],
        ),
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
    let mut all = Vec::new();
    for (room, forbidden) in rules {
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
    const HOSTS: &[&str] = &["serve_cmd.rs", "bench_cmd.rs", "bench_http.rs", "page_cache.rs"];
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
