//! `modeldock models [--json]`: every registered model, its state and size —
//! the running server's view when one answers, else this process's.

use super::args::ModelsArgs;
use crate::client::Door;
use crate::error::Result;
use crate::units::human_bytes;

pub fn run(args: &ModelsArgs) -> Result<i32> {
    let snap = match crate::client::choose(args.server.server.as_deref(), false)? {
        Door::Other { base, name } => {
            let o = super::v2_cmds::OtherServer { base, name };
            return super::v2_cmds::list(&o, &args.engine.registry(), args.json);
        }
        Door::Modeldock(c) => c.snapshot()?,
        Door::Own { .. } => {
            eprintln!("modeldock: no server running; listing this process's registry (models load in `modeldock serve` or the app)");
            let (engine, _reg) = args.engine.engine(None)?;
            let s = engine.snapshot();
            engine.shutdown();
            s
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snap.models).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{:<22} {:<10} {:<10} {:>10}  {:<18} {:<12} LICENCE",
        "ID", "TASK", "STATE", "SIZE", "PRECISION", "KEEP-ALIVE"
    );
    for m in &snap.models {
        println!(
            "{:<22} {:<10} {:<10} {:>10}  {:<18} {:<12} {}",
            m.id,
            m.task,
            if m.weights_missing.is_some() && m.state != crate::client::ModelState::Resident {
                "no weights".to_string()
            } else {
                m.state.to_string()
            },
            human_bytes(m.predicted_bytes),
            m.precision,
            m.keep_alive,
            m.licence
        );
    }
    Ok(0)
}
