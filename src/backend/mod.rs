//! Remote network backends: a model's network runs on an Open Inference
//! Protocol v2 server (NVIDIA Triton, KServe, MLServer, another modeldock)
//! while modeldock keeps decoding, pre- and post-processing here. This room
//! knows HTTP and tensors as plain numbers; it knows nothing of models,
//! candle or the engine.

pub mod client;
pub mod endpoint;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use crate::v2::Tensor32;
pub use client::{GpuMetrics, IndexEntry, Metadata, RemoteSplit, Reply, V2Client};

/// `backend = { url = "http://gpu-box:8000", model = "tiny_face", input = "input", output = "output" }`
/// in a `model.toml`: where the network runs and the names of its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// The server's base URL (`http://host:port`).
    pub url: String,
    /// The model's name on the server.
    pub model: String,
    /// The network's input tensor (FP32, NCHW); empty or absent: the
    /// model's only input.
    #[serde(default)]
    pub input: String,
    /// The network's output tensor (FP32); empty or absent: its only output.
    #[serde(default)]
    pub output: String,
    /// How long one request may take ("30s", the default).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Load and unload the model on the server with modeldock's residency
    /// (the repository extension). `false` for servers that manage their own
    /// models (KServe): modeldock then only checks that the model is ready.
    #[serde(default = "yes")]
    pub manage: bool,
    /// Headers sent with every request to the server (access tokens):
    /// `headers = { "triton-access-token" = "${TRITON_TOKEN}" }`. `${VAR}`
    /// is read from the environment when the model loads; values are shown
    /// as `***`.
    #[serde(default, skip_serializing_if = "transport::Headers::is_empty")]
    pub headers: transport::Headers,
}

fn yes() -> bool {
    true
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl BackendSpec {
    /// Checks the fields; the message names the field.
    pub fn validate(&self) -> Result<()> {
        client::normalise_url(&self.url).map_err(|e| Error::msg(format!("backend.url {e}")))?;
        for (k, v) in [("model", &self.model), ("input", &self.input), ("output", &self.output)] {
            if (v.is_empty() && k == "model") || v.contains(['/', '?', '#', ' ']) {
                return Err(Error::msg(format!(
                    "backend.{k} = {v:?}: expected a name (no '/', '?', '#' or spaces)"
                )));
            }
        }
        self.timeout_duration()?;
        self.headers
            .validate("backend.headers")
            .map_err(|e| Error::msg(e.to_string()))?;
        Ok(())
    }

    pub fn timeout_duration(&self) -> Result<Duration> {
        match &self.timeout {
            None => Ok(DEFAULT_TIMEOUT),
            Some(t) => humantime::parse_duration(t)
                .ok()
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
                .ok_or_else(|| {
                    Error::msg(format!(
                        "backend.timeout = {t:?}: expected a duration like 30s (up to 1h)"
                    ))
                }),
        }
    }

    /// "tiny_face on http://gpu-box:8000".
    pub fn describe(&self) -> String {
        format!("{} on {}", self.model, self.url.trim_end_matches('/'))
    }
}

/// A network that runs on a v2 server. Made by [`RemoteNet::connect`] (which
/// loads it there); dropping it unloads it there when modeldock manages it.
pub struct RemoteNet {
    client: Arc<V2Client>,
    spec: BackendSpec,
}

/// A server's answer that means "this model is not loaded (any more)": a
/// 400, 404 or 503 whose message says so (servers word it differently).
fn not_loaded(e: &Error) -> bool {
    let m = e.message().to_ascii_lowercase();
    matches!(e.status(), Some(400 | 404 | 503))
        && (m.contains("unknown model")
            || m.contains("not found")
            || m.contains("not ready")
            || m.contains("unavailable")
            || m.contains("not loaded"))
}

impl RemoteNet {
    /// Loads the model on the server (repository extension) when `manage`,
    /// else checks it is ready; then checks that `input` and `output` are
    /// FP32 tensors of it. Errors are one line naming the field or the server.
    pub fn connect(spec: &BackendSpec) -> Result<RemoteNet> {
        let mut net = RemoteNet::attach(spec)?;
        let meta = net.client.metadata(&spec.model)?;
        net.spec.input = resolve_tensor(&meta.inputs, &spec.input, "input", spec)?;
        net.spec.output = resolve_tensor(&meta.outputs, &spec.output, "output", spec)?;
        net.client.baseline(&spec.model);
        Ok(net)
    }

    /// Loads (or checks) the model on the server without looking at its
    /// tensors: for models modeldock only lists, loads and unloads.
    pub fn attach(spec: &BackendSpec) -> Result<RemoteNet> {
        spec.validate()?;
        let headers = spec.headers.expand("backend.headers")?;
        let client = V2Client::shared_with(&spec.url, spec.timeout_duration()?, headers)?;
        let net = RemoteNet {
            client,
            spec: spec.clone(),
        };
        net.load_there()?;
        Ok(net)
    }

    fn load_there(&self) -> Result<()> {
        let m = &self.spec.model;
        // Already loaded there (by another client, or at the server's start):
        // a repository load would reload it (Triton does), draining requests.
        if self.client.ready(m)? {
            return Ok(());
        }
        if self.spec.manage {
            match self.client.load(m) {
                Ok(()) => return Ok(()),
                // No repository extension, or the server manages its models:
                // fine if the model is ready anyway.
                Err(e) if self.client.unreachable().is_none() => {
                    if self.client.ready(m)? {
                        return Ok(());
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        if self.client.ready(m)? {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "{}: the model is not ready there",
                self.spec.describe()
            )))
        }
    }

    /// Runs the network on `x`. A server that forgot the model (it restarted)
    /// gets it loaded again, once, before the error is passed on.
    pub fn run(&self, x: &Tensor32) -> Result<Tensor32> {
        let s = &self.spec;
        match self.client.infer(&s.model, &s.input, x, &s.output) {
            Err(e) if not_loaded(&e) => {
                tracing::info!("{}: the server does not have it loaded; loading it again", s.describe());
                self.load_there()
                    .map_err(|le| Error::msg(format!("{e} (loading it again failed: {le})")))?;
                self.client.infer(&s.model, &s.input, x, &s.output)
            }
            r => r,
        }
    }

    pub fn spec(&self) -> &BackendSpec {
        &self.spec
    }

    pub fn unreachable(&self) -> Option<String> {
        self.client.unreachable()
    }
}

impl Drop for RemoteNet {
    fn drop(&mut self) {
        if !self.spec.manage {
            return;
        }
        // Off the caller's thread: the worker never waits on the network.
        let client = self.client.clone();
        let model = self.spec.model.clone();
        let _ = std::thread::Builder::new()
            .name("modeldock-v2-unload".into())
            .spawn(move || {
                if let Err(e) = client.unload(&model) {
                    tracing::warn!("{e}");
                }
            });
    }
}

/// The tensor named `name` (or the only one, when `name` is empty), checked
/// to be FP32.
fn resolve_tensor(list: &[(String, String, Vec<i64>)], name: &str, field: &str, spec: &BackendSpec) -> Result<String> {
    let names: Vec<&str> = list.iter().map(|(n, ..)| n.as_str()).collect();
    let name = match (name, names.as_slice()) {
        ("", [only]) => *only,
        ("", _) => {
            return Err(Error::msg(format!(
                "backend.{field}: {} has {} {field}s {names:?}; name the one to use",
                spec.describe(),
                names.len()
            )))
        }
        (n, _) => n,
    };
    match list.iter().find(|(n, ..)| n == name) {
        Some((_, dt, _)) if dt == "FP32" => Ok(name.to_string()),
        Some((_, dt, _)) => Err(Error::msg(format!(
            "backend.{field} '{name}' of {} is {dt}; modeldock sends and reads FP32",
            spec.describe()
        ))),
        None => Err(Error::msg(format!(
            "backend.{field} '{name}' is not an {field} of {} (it has {names:?})",
            spec.describe()
        ))),
    }
}

/// What panels show of a remote model's server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerView {
    /// "unreachable since 12:01:07 UTC, retrying: …".
    pub unreachable: Option<String>,
    pub split: Option<RemoteSplit>,
    /// The model's row in the server's repository index (when watched):
    /// "READY", "UNAVAILABLE: unloaded", "not loaded".
    pub index: Option<String>,
}

/// For panels: whether the server of `spec` answers, the latest round-trip
/// split of its model, and the model's state there. Nothing while no model in
/// this process talks to that server.
pub fn status(spec: &BackendSpec) -> ServerView {
    match V2Client::existing(&spec.url) {
        Some(c) => ServerView {
            unreachable: c.unreachable(),
            split: c.split(&spec.model),
            index: c.index_row(&spec.model).map(|r| r.describe()),
        },
        None => ServerView::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BackendSpec {
        BackendSpec {
            url: "http://127.0.0.1:8000".into(),
            model: "tiny_face".into(),
            input: "input".into(),
            output: "output".into(),
            timeout: None,
            manage: true,
            headers: Default::default(),
        }
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.url = "gpu-box:8000".into();
        assert!(s.validate().unwrap_err().to_string().starts_with("backend.url"));
        let mut s = spec();
        s.model = "../etc".into();
        assert!(s.validate().unwrap_err().to_string().starts_with("backend.model"));
        let mut s = spec();
        s.timeout = Some("soon".into());
        assert!(s.validate().unwrap_err().to_string().starts_with("backend.timeout"));
        let mut s = spec();
        s.timeout = Some("2s".into());
        assert_eq!(s.timeout_duration(), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn a_forgotten_model_is_recognised_from_each_servers_wording() {
        assert!(not_loaded(&Error::remote(
            400,
            "HTTP 400: Request for unknown model: 'tiny_face' is not found"
        )));
        assert!(not_loaded(&Error::remote(
            400,
            "HTTP 400: Request for unknown model: 'tiny_face' has no available versions"
        )));
        assert!(not_loaded(&Error::remote(404, "HTTP 404: Model tiny_face not found")));
        assert!(!not_loaded(&Error::remote(
            400,
            "HTTP 400: unexpected shape for input 'input'"
        )));
        assert!(!not_loaded(&Error::unavailable(
            "http://x: unreachable since 12:00:00 UTC, retrying: not found"
        )));
        // The status decides, not words in the text.
        assert!(!not_loaded(&Error::remote(500, "http 404: model not found")));
        assert!(!not_loaded(&Error::msg("http 404: model not found")));
    }
}
