//! Which engine a process uses, decided in one place for the app, `infer`,
//! `models` and `live`: a modeldock server that answers is the machine's
//! engine and is used; another kind of v2 server (Triton, KServe, MLServer)
//! runs the networks while decoding and pre/post-processing stay here; with
//! no server, the process owns an engine.

use std::sync::Arc;

use super::http::{base_url, HttpClient};
use super::remote::RemoteEngine;
use super::v2_server::{self, ServerKind};
use super::Client;
use crate::backend::transport;
use crate::engine::{Engine, WakeFn};
use crate::error::Result;
use crate::setup::EngineFlags;

/// The engine a server address leads to.
pub enum Door {
    /// A modeldock server answers: its engine serves this process too.
    Modeldock(HttpClient),
    /// Another v2 server answers, with the name it gives in `GET /v2`.
    Other { base: String, name: String },
    /// Nothing answers at `base`: this process runs its own engine.
    Own { base: String },
}

/// The door at `spec` (`--server` / `MODELDOCK_HOST`; `None`: the default
/// port). With `must_answer` (`--remote URL`), a server that does not answer
/// is an error rather than a reason to own an engine.
pub fn choose(spec: Option<&str>, must_answer: bool) -> Result<Door> {
    let base = base_url(spec)?;
    transport::check_tls(&base)?;
    let http = HttpClient::new(&base);
    Ok(match v2_server::identify(&http)? {
        Some(ServerKind::Modeldock) => Door::Modeldock(http),
        Some(ServerKind::Other(name)) => Door::Other { base, name },
        None if must_answer => {
            let why = http.not_live().unwrap_or_else(|| "no answer".to_string());
            return Err(crate::error::Error::unavailable(format!("cannot reach {base}: {why}")));
        }
        None => Door::Own { base },
    })
}

/// The client behind `door`: the server's engine, a local engine attached
/// to the other server (`flags`' manifests give the decoders), or an
/// engine of this process's own on `flags`.
/// `metrics_url`: where the other server's Prometheus metrics are, when
/// not beside its v2 API.
pub fn open(door: Door, flags: &EngineFlags, wake: Option<WakeFn>, metrics_url: Option<String>) -> Result<Client> {
    Ok(match door {
        Door::Modeldock(http) => Client::remote(RemoteEngine::start(http, wake)),
        Door::Other { base, name } => {
            let attached = v2_server::attach(&base, &name, &flags.registry(), metrics_url)?;
            for p in attached.registry.problems.iter().chain(&attached.fallback) {
                tracing::warn!("{p}");
            }
            tracing::info!(
                "attached to {name} at {base}: {} models in its index",
                attached.registry.entries.len()
            );
            let engine = Engine::start(attached.registry.clone(), flags.checked_config()?, wake);
            Client::attached(engine, Arc::new(attached))
        }
        Door::Own { .. } => Client::local(flags.engine(wake)?.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A server on 127.0.0.1 that answers every request 404 (something that
    /// is not a v2 server), for at most `n` connections.
    fn not_v2(n: usize) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        addr
    }

    #[test]
    fn something_that_is_not_a_v2_server_leaves_this_process_its_own_engine() {
        let addr = not_v2(4);
        match choose(Some(&addr), false) {
            Ok(Door::Own { base }) => assert!(base.ends_with(&addr), "{base}"),
            Ok(_) => panic!("a 404 server was taken for a v2 server"),
            Err(e) => panic!("{e}"),
        }
        // With --remote it must answer as a v2 server: one line naming it.
        let e = choose(Some(&addr), true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(&addr) && !e.contains('\n'), "{e}");
    }
}
