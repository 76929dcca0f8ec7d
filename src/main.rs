use clap::Parser;

use modeldock::cli::args::Cli;

fn main() {
    modeldock::PROCESS_START.get_or_init(std::time::Instant::now);
    // A panic the engine contains becomes that request's one-line error; the
    // details go to the log (MODELDOCK_LOG), not over the user's terminal.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!("panic{at}: {}", msg.lines().next().unwrap_or(""));
    }));
    let cli = Cli::parse();
    let code = match cli.command {
        Some(cmd) => modeldock::cli::run(cmd),
        #[cfg(feature = "gui")]
        None => modeldock::app_launch::run(cli.app),
        #[cfg(not(feature = "gui"))]
        None => {
            let _ = cli.app;
            eprintln!("error: this modeldock was built without its window (the `gui` feature): run a subcommand, e.g. `modeldock serve`");
            2
        }
    };
    std::process::exit(code);
}
