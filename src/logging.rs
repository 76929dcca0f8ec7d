//! One logging set-up for the app, the CLI and the server: `MODELDOCK_LOG`,
//! falling back to `RUST_LOG`, holds `tracing-subscriber` EnvFilter
//! directives (`info`, `modeldock=debug,wgpu=warn`, …).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The filter from the environment, or `default` when neither variable is
/// set. A malformed value is reported on stderr and `default` is used.
pub fn filter(default: &str) -> EnvFilter {
    let (var, value) = match std::env::var("MODELDOCK_LOG") {
        Ok(v) => ("MODELDOCK_LOG", v),
        Err(_) => match std::env::var("RUST_LOG") {
            Ok(v) => ("RUST_LOG", v),
            Err(_) => return EnvFilter::new(default),
        },
    };
    match EnvFilter::try_new(&value) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: {var}='{value}': {e}; using '{default}'");
            EnvFilter::new(default)
        }
    }
}

/// Installs the stderr log (filtered as above) plus an optional extra layer
/// with its own filter (the app's Log panel). Safe to call more than once:
/// later calls do nothing.
pub fn init<L>(default: &str, extra: Option<L>)
where
    L: Layer<Registry> + Send + Sync + 'static,
{
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_filter(filter(default));
    let _ = tracing_subscriber::registry().with(extra).with(stderr).try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn directives_with_targets_are_accepted() {
        assert!(tracing_subscriber::EnvFilter::try_new("modeldock=debug,wgpu=warn").is_ok());
        assert!(tracing_subscriber::EnvFilter::try_new("modeldock=notalevel").is_err());
    }
}
