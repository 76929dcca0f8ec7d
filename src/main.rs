fn main() {
    std::process::exit(modeldock::cli::main());
}
