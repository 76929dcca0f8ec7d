use clap::Parser;

use modeldock::cli::args::Cli;

fn main() {
    modeldock::PROCESS_START.get_or_init(std::time::Instant::now);
    let cli = Cli::parse();
    let code = match cli.command {
        Some(cmd) => modeldock::cli::run(cmd),
        None => modeldock::app_launch::run(cli.app),
    };
    std::process::exit(code);
}
