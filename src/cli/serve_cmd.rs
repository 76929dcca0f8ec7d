//! `modeldock serve [ENGINE FLAGS] [--host H] [--port P]`: the engine over HTTP.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::args::ServeArgs;
use crate::error::{Error, Result};
use crate::server::security::{Access, Secret};
use crate::server::{self, ServerOptions};

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

pub fn run(args: &ServeArgs) -> Result<i32> {
    let access = Access {
        admin_key: Secret::new(args.api_key.clone()),
        infer_key: Secret::new(args.infer_key.clone()),
        ..Access::from_env()
    };
    let keyed = access.admin_key.is_some() || access.infer_key.is_some();
    if !is_loopback(&args.host) && !keyed && !args.insecure_no_api_key {
        return Err(Error::usage(format!(
            "--host {}: serving beyond loopback needs an API key (set MODELDOCK_API_KEY or MODELDOCK_INFER_KEY) or --insecure-no-api-key",
            args.host
        )));
    }
    let host = if args.host == "localhost" {
        "127.0.0.1"
    } else {
        args.host.as_str()
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| Error::usage(format!("--host '{}': expected an IP address", args.host)))?;
    let max_body =
        crate::engine::config::parse_bytes(&args.max_body, 0).map_err(|e| Error::usage(format!("--max-body {e}")))?;
    let options = ServerOptions {
        max_queue: args.max_queue as usize,
        max_queue_per_client: args
            .max_queue_per_client
            .map(|n| n as usize)
            .unwrap_or_else(|| ServerOptions::default_per_client(args.max_queue as usize)),
        max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
        timeout: Duration::from_secs_f64(args.timeout),
        access,
        drain: Duration::from_secs(10),
    };
    let listener = server::bind(SocketAddr::new(ip, args.port))?;
    let addr = listener.local_addr().map_err(|e| Error::msg(e.to_string()))?;
    let (engine, registry) = args.engine.engine(None)?;
    eprintln!(
        "modeldock: serving {} models on http://{addr} (Ctrl+C to stop)",
        registry.entries.len()
    );
    server::run_until_signal(engine, options, listener)?;
    eprintln!("modeldock: stopped");
    Ok(0)
}
