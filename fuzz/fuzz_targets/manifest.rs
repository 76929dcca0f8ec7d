//! `model.toml` text → `Manifest::parse` (and the accessors discovery uses).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeldock::catalog::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(m) = Manifest::parse(text, "fuzz") {
        let _ = m.keep_alive();
        let _ = m.option("size_bytes", 0.0) as u64;
        // What discovery and the CLI print must not panic either.
        let _ = format!("{m:?}");
    }
});
