//! Attaching to any Open Inference Protocol v2 server (NVIDIA Triton, KServe,
//! MLServer): its repository index becomes the registry of a local engine
//! whose models run their networks there. Models modeldock has a decoder for
//! (a local manifest names them, or has their name) keep their pre- and
//! post-processing here; the rest are listed as `raw`: loaded and unloaded
//! through the repository extension, not run on images.

use std::sync::Arc;

use serde_json::Value;

use super::http::HttpClient;
use crate::backend::{BackendSpec, IndexEntry, Reply, V2Client, DEFAULT_TIMEOUT};
use crate::catalog::manifest::{Manifest, WeightsRef};
use crate::catalog::registry::{Entry, Registry, WeightsResolved};
use crate::catalog::Arch;
use crate::error::{Error, Result};

/// What answers at a base URL.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerKind {
    /// A modeldock server: its own API steers its engine.
    Modeldock,
    /// Another v2 server; the name it gives in `GET /v2`.
    Other(String),
}

/// Asks `GET /v2` who is at `base`; an error when nothing answers.
pub fn probe(base: &str) -> Result<ServerKind> {
    identify(&HttpClient::new(base))?.ok_or_else(|| Error::unavailable(format!("cannot reach {base}")))
}

/// Asks `GET /v2` (with the user's bearer key: a keyed modeldock server
/// wants it even there) who answers; `None` when nothing does, or when
/// what answers has no `/v2` (not a v2 server).
pub fn identify(http: &HttpClient) -> Result<Option<ServerKind>> {
    let v = match http.ask_quickly("/v2") {
        Ok(Some(v)) => v,
        Ok(None) | Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(Error::unavailable(e.to_string())),
    };
    let name = v.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Some(if name == "modeldock" {
        ServerKind::Modeldock
    } else {
        ServerKind::Other(if name.is_empty() { "a v2 server".into() } else { name })
    }))
}

/// A v2 server attached to: the registry its index gives, and the client
/// (kept alive by whoever holds this, so the index stays watched).
pub struct Attached {
    pub registry: Registry,
    pub client: Arc<V2Client>,
    pub server_name: String,
    /// The index read (or, when refused, the local manifests' models with
    /// their readiness).
    pub index: Vec<IndexEntry>,
    /// Why the index came from local manifests, in one line.
    pub fallback: Option<String>,
}

/// The registry for the server at `base`: one entry per model in its index.
/// A `local` entry whose backend names that model on this server, or whose id
/// is the model's name and whose arch can run remotely, keeps its decoder;
/// others become `raw` entries.
pub fn attach(base: &str, server_name: &str, local: &Registry, metrics_url: Option<String>) -> Result<Attached> {
    let client = V2Client::shared(base, DEFAULT_TIMEOUT)?;
    let reply = client
        .index_reply()
        .map_err(|e| Error::unavailable(format!("{base}: cannot read the repository index: {e}")))?;
    let (index, fallback) = if matches!(reply.status, 401 | 403) {
        let why = refusal(base, &reply);
        let index = local_index(base, &client, local);
        if index.is_empty() {
            return Err(Error::unavailable(why));
        }
        let note = format!(
            "{why}; listing the {} model(s) local backend manifests name on this server instead, checked with /v2/models/NAME/ready",
            index.len()
        );
        (index, Some(note))
    } else {
        let index = reply
            .ok("/v2/repository/index")
            .and_then(crate::backend::client::parse_index)
            .map_err(|e| Error::unavailable(format!("{base}: cannot read the repository index: {e}")))?;
        client.watch_index(metrics_url);
        (index, None)
    };
    let mut reg = Registry::default();
    for row in &index {
        match entry_for(base, &row.name, local) {
            Ok(e) => reg.upsert(e),
            Err(e) => reg.problems.push(e.to_string()),
        }
    }
    Ok(Attached {
        registry: reg,
        client,
        server_name: server_name.to_string(),
        index,
        fallback,
    })
}

/// "the repository index is refused (HTTP 403: …); it asks for header 'X'
/// (MODELDOCK_REMOTE_HEADERS or --remote-header)".
fn refusal(base: &str, reply: &Reply) -> String {
    let msg = crate::v2::tensor_infer::error_message(reply.status, &reply.body);
    let hint = match crate::backend::transport::header_asked_for(&msg) {
        Some(h) => format!(
            "; it asks for header '{h}': send it with MODELDOCK_REMOTE_HEADERS=\"{h}=…\" or --remote-header {h}=…"
        ),
        None => "; send credentials with MODELDOCK_REMOTE_HEADERS or --remote-header".to_string(),
    };
    format!("{base}: the repository index is refused ({msg}){hint}")
}

/// The models local backend manifests name on `base`, each with its
/// readiness there.
fn local_index(base: &str, client: &V2Client, local: &Registry) -> Vec<IndexEntry> {
    let mut names: Vec<String> = local
        .entries
        .iter()
        .filter_map(|e| e.manifest.backend.as_ref())
        .filter(|b| same_server(&b.url, base))
        .map(|b| b.model.clone())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let (state, reason) = match client.ready(&name) {
                Ok(true) => ("READY", String::new()),
                Ok(false) => ("UNAVAILABLE", "not ready (GET /v2/models/NAME/ready)".to_string()),
                Err(e) => ("UNAVAILABLE", e.to_string()),
            };
            IndexEntry {
                name,
                version: None,
                state: state.to_string(),
                reason,
            }
        })
        .collect()
}

fn same_server(a: &str, b: &str) -> bool {
    crate::backend::client::normalise_url(a).ok() == crate::backend::client::normalise_url(b).ok()
}

fn entry_for(base: &str, name: &str, local: &Registry) -> Result<Entry> {
    let origin = format!("{base} (repository index)");
    // A manifest that already points at this model on this server.
    if let Some(e) = local.entries.iter().find(|e| {
        e.manifest
            .backend
            .as_ref()
            .is_some_and(|b| b.model == name && same_server(&b.url, base))
    }) {
        return Ok(e.clone());
    }
    let spec = BackendSpec {
        url: base.to_string(),
        model: name.to_string(),
        input: String::new(),
        output: String::new(),
        timeout: None,
        manage: true,
        headers: Default::default(),
    };
    // A local model of that name whose network can run there.
    if let Some(e) = local
        .get(name)
        .filter(|e| e.manifest.arch.runs_remotely() && e.manifest.arch != Arch::Raw)
    {
        let mut m = e.manifest.clone();
        m.backend = Some(spec);
        return Ok(Entry {
            manifest: m,
            origin,
            weights: WeightsResolved::Remote,
            predicted_bytes: 0,
            weights_dtype: None,
        });
    }
    let manifest = raw_manifest(name, spec).map_err(|e| e.context(format_args!("{origin}: model '{name}'")))?;
    Ok(Entry {
        manifest,
        origin,
        weights: WeightsResolved::Remote,
        predicted_bytes: 0,
        weights_dtype: None,
    })
}

fn raw_manifest(name: &str, spec: BackendSpec) -> Result<Manifest> {
    let text = format!(
        "id = {id}\nname = {id}\ntask = \"raw\"\narch = \"raw\"\ninput_size = 1\nlicence = \"\"\n",
        id = toml_string(name)
    );
    let mut m = Manifest::parse(
        &format!(
            "{text}backend = {{ url = {}, model = {} }}\n",
            toml_string(&spec.url),
            toml_string(name)
        ),
        name,
    )?;
    m.weights = WeightsRef::Path(String::new());
    Ok(m)
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Registry {
        Registry::discover(&[])
    }

    #[test]
    fn index_names_map_to_decoders_or_raw_entries() {
        let base = "http://127.0.0.1:9";
        let reg = local();
        let e = entry_for(base, "face-detector", &reg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.manifest.arch, Arch::TinyFaceDetector);
        assert_eq!(e.predicted_bytes, 0);
        assert!(matches!(e.weights, WeightsResolved::Remote));
        let b = e.manifest.backend.unwrap_or_else(|| panic!("no backend"));
        assert_eq!((b.model.as_str(), b.input.as_str()), ("face-detector", ""));

        let raw = entry_for(base, "add_sub", &reg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(raw.manifest.arch, Arch::Raw);
        assert_eq!(raw.manifest.task, crate::catalog::Task::Raw);

        // A local model whose network cannot run remotely is listed raw.
        let objects = entry_for(base, "objects", &reg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(objects.manifest.arch, Arch::Raw);

        // A name that is not a modeldock id is a problem line, not a panic.
        let bad = entry_for(base, "a/b", &reg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad.contains("model 'a/b'"), "{bad}");
    }
}
