//! `modeldock models [--json]`: every registered model, its state and size.

use super::args::Args;
use super::setup;
use crate::error::Result;

pub fn run(argv: &[String]) -> Result<i32> {
    let args = Args::parse(argv, setup::ENGINE_FLAGS, &["json"])?;
    let (engine, _reg) = setup::engine(&args, None)?;
    let snap = engine.snapshot();
    engine.shutdown();
    if args.has("json") {
        println!("{}", serde_json::to_string_pretty(&snap.models).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{:<22} {:<10} {:<10} {:>10}  {:<12} LICENCE",
        "ID", "TASK", "STATE", "SIZE", "KEEP-ALIVE"
    );
    for m in &snap.models {
        println!(
            "{:<22} {:<10} {:<10} {:>10}  {:<12} {}",
            m.id,
            m.task,
            m.state,
            human_bytes(m.predicted_bytes),
            m.keep_alive,
            m.licence
        );
    }
    Ok(0)
}

pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1073741824.0 {
        format!("{:.1} GiB", b / 1073741824.0)
    } else if b >= 1048576.0 {
        format!("{:.1} MiB", b / 1048576.0)
    } else if b >= 1024.0 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}
