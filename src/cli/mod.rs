//! The headless face of the engine: every GUI action has a CLI twin. `main`
//! parses [`args::Cli`] and calls [`run`] for a command.

pub mod args;
pub mod bench_cmd;
pub mod bench_http;
pub mod bench_weights;
pub mod client_cmds;
pub mod gpu_cmd;
pub mod import_cmd;
pub mod infer_cmd;
pub mod infer_inputs;
pub mod infer_save;
pub mod live_cmd;
pub mod models_cmd;
pub mod page_cache;
pub mod pull_cmd;
pub mod serve_cmd;
pub mod v2_cmds;
pub mod verify_cmd;

use args::Command;

use crate::error::Result;

/// Runs one command; returns the process exit code (0 done, 1 the work
/// failed, 2 usage error).
pub fn run(cmd: Command) -> i32 {
    // Commands print their own one-line errors; MODELDOCK_LOG shows the engine's log.
    crate::logging::init::<tracing_subscriber::layer::Identity>("off", None);
    let r: Result<i32> = server_flags(&cmd)
        .map_or(Ok(()), |f| f.apply_remote_headers(None))
        .and_then(|_| dispatch(cmd));
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// The server flags of a client command.
fn server_flags(cmd: &Command) -> Option<&args::ServerFlags> {
    match cmd {
        Command::Models(a) => Some(&a.server),
        Command::Infer(a) => Some(&a.server),
        Command::Ps(a) => Some(&a.server),
        Command::Load(a) => Some(&a.server),
        Command::Unload(a) => Some(&a.server),
        Command::Pin(a) | Command::Unpin(a) => Some(&a.server),
        _ => None,
    }
}

fn dispatch(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Models(a) => models_cmd::run(&a),
        Command::Infer(a) => infer_cmd::run(&a),
        Command::Bench(a) => bench_cmd::run(&a),
        Command::Pull(a) => pull_cmd::run(&a),
        Command::Import(a) => import_cmd::run(&a),
        Command::Live(a) => live_cmd::run(&a),
        Command::Verify(a) => verify_cmd::run(&a),
        Command::Gpu(a) => gpu_cmd::run(&a),
        Command::Serve(a) => serve_cmd::run(&a),
        Command::Ps(a) => client_cmds::ps(&a),
        Command::Load(a) => client_cmds::load(&a),
        Command::Unload(a) => client_cmds::unload(&a),
        Command::Pin(a) => client_cmds::pin(&a, true),
        Command::Unpin(a) => client_cmds::pin(&a, false),
        Command::Completions(a) => {
            let mut cmd = <args::Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "modeldock", &mut std::io::stdout());
            Ok(0)
        }
    }
}
