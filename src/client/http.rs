//! A blocking client of a modeldock server (or, for the v2 parts, any Open
//! Inference Protocol v2 server): one pooled keep-alive `ureq` agent.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{json, Value};

use crate::backend::endpoint::{Body, Endpoint};
use crate::backend::transport;
use crate::engine::Snapshot;
use crate::error::{Error, Result};
use crate::v2::error_body::error_text;
use crate::v2::image_infer;
use crate::vision::InferParams;

/// How long a liveness or identity question may take.
const QUICK: Duration = Duration::from_millis(1500);

/// The largest reply read (a snapshot, a batch's detections).
const MAX_REPLY: u64 = 256 << 20;

/// Where the server is by default, and how `MODELDOCK_HOST` is read.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// Turns `host:port`, `host`, `:port` or a URL into a base URL. `0.0.0.0`
/// (what a server binds) means this machine.
pub fn base_url(spec: Option<&str>) -> Result<String> {
    let port = crate::setup::DEFAULT_PORT;
    let Some(s) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(format!("http://{DEFAULT_HOST}:{port}"));
    };
    let (scheme, rest) = match s.split_once("://") {
        Some((sch, rest)) if sch == "http" || sch == "https" => (sch, rest),
        Some((sch, _)) => {
            return Err(Error::usage(format!(
                "server '{s}': unsupported scheme '{sch}' (http or https)"
            )))
        }
        None => ("http", s),
    };
    let rest = rest.trim_end_matches('/');
    let (host, p) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
            let p: u16 = p
                .parse()
                .map_err(|_| Error::usage(format!("server '{s}': bad port '{p}'")))?;
            (h, p)
        }
        _ => (rest, port),
    };
    let host = match host {
        "" | "0.0.0.0" => DEFAULT_HOST,
        h => h,
    };
    if host.contains('/') || host.contains(' ') {
        return Err(Error::usage(format!("server '{s}': expected host:port or a URL")));
    }
    crate::backend::endpoint::normalise_url(&format!("{scheme}://{host}:{p}"))
}

/// The bearer key this user sends to a modeldock server: the admin key
/// (`MODELDOCK_API_KEY`) when set, else the inference-only one
/// (`MODELDOCK_INFER_KEY`).
pub fn client_key() -> Option<String> {
    ["MODELDOCK_API_KEY", "MODELDOCK_INFER_KEY"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

#[derive(Clone)]
pub struct HttpClient {
    pub base: String,
    /// The server, with this user's key and the remote headers set for it.
    endpoint: Endpoint,
    /// Sent as the v2 `priority` parameter of inference requests (0: the default).
    priority: u32,
}

/// The error an answer with HTTP `status` means here: its body's message,
/// of the kind the status says (404: not found, 503: unavailable).
fn error_from(status: u16, body: &[u8], what: &str) -> Error {
    let msg = error_text(body).unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        400 | 422 => Error::msg(format!("{what}: {msg}")),
        404 => Error::not_found(msg),
        503 => Error::unavailable(format!("{what}: {msg}")),
        _ => Error::msg(format!("{what}: {msg}")),
    }
}

impl HttpClient {
    pub fn new(base: &str) -> HttpClient {
        let mut headers = transport::remote_headers(base);
        if let Some(k) = client_key() {
            headers.push(("Authorization".to_string(), format!("Bearer {k}")));
        }
        let endpoint = Endpoint::lenient(base, Some(Duration::from_secs(900)), headers);
        HttpClient {
            base: endpoint.base().to_string(),
            endpoint,
            priority: 0,
        }
    }

    /// This client's images at `priority` (Triton's: 1 is the highest; 2 is
    /// where bulk work waits by default).
    pub fn with_priority(mut self, priority: u32) -> HttpClient {
        self.priority = priority;
        self
    }

    /// `GET path` within a second and a half: `None` when nothing answers
    /// (refused, unreachable, too slow), else its JSON or the error its
    /// status says.
    pub fn ask_quickly(&self, path: &str) -> Result<Option<Value>> {
        let quick = self.endpoint.with_timeout(Some(QUICK));
        let Ok(r) = quick.exchange(path, None, MAX_REPLY) else {
            return Ok(None);
        };
        if r.status != 200 {
            return Err(error_from(r.status, &r.body, path));
        }
        Ok(Some(serde_json::from_slice(&r.body).unwrap_or(Value::Null)))
    }

    fn unreachable(&self, e: ureq::Error) -> Error {
        Error::unavailable(format!("cannot reach the server at {}: {e}", self.base))
    }

    /// `GET /v2/health/live` answered 200 within a second.
    pub fn is_live(&self) -> bool {
        self.not_live().is_none()
    }

    /// Why `GET /v2/health/live` was not answered 200 within a second and a
    /// half (a refused connection, a certificate, a status); `None` when it was.
    pub fn not_live(&self) -> Option<String> {
        let quick = self.endpoint.with_timeout(Some(QUICK));
        match quick.send("/v2/health/live", None) {
            Ok(resp) if resp.status().as_u16() == 200 => None,
            Ok(resp) => Some(format!("HTTP {}", resp.status().as_u16())),
            Err(e) => Some(e.to_string()),
        }
    }

    /// Sends (`GET` without a body, else `POST`) and reads the reply's JSON,
    /// or the one-line error its status and body say. `what` names the
    /// request in messages.
    fn exchange_json(&self, path: &str, body: Option<Body>, what: &str) -> Result<Value> {
        let r = self
            .endpoint
            .exchange(path, body, MAX_REPLY)
            .map_err(|e| self.unreachable(e))?;
        if r.status != 200 {
            return Err(error_from(r.status, &r.body, what));
        }
        if r.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&r.body).map_err(|e| Error::msg(format!("{what}: bad JSON from the server: {e}")))
    }

    pub fn get_json(&self, path: &str) -> Result<Value> {
        self.exchange_json(path, None, path)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        self.exchange_json(path, Some(Body::json(body.to_string().as_bytes())), path)
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        let v = self.get_json("/api/snapshot")?;
        serde_json::from_value(v).map_err(|e| Error::msg(format!("/api/snapshot: unexpected shape: {e}")))
    }

    pub fn ps(&self) -> Result<Value> {
        self.get_json("/api/ps")
    }

    pub fn load(&self, model: &str, keep_alive: Option<String>, pin: bool, wait: bool) -> Result<Value> {
        let mut b = json!({"model": model, "wait": wait});
        if let Some(k) = keep_alive {
            b["keep_alive"] = json!(k);
        }
        if pin {
            b["pin"] = json!(true);
        }
        self.post_json("/api/load", &b)
    }

    /// What loading `model` would do now, changing nothing (`/api/load`
    /// with `dry_run`).
    pub fn plan_load(&self, model: &str) -> Result<Value> {
        self.post_json("/api/load", &json!({"model": model, "dry_run": true}))
    }

    pub fn unload(&self, model: Option<&str>) -> Result<Value> {
        let b = match model {
            Some(m) => json!({"model": m}),
            None => json!({"all": true}),
        };
        self.post_json("/api/unload", &b)
    }

    pub fn pin(&self, model: &str, pinned: bool) -> Result<Value> {
        self.post_json("/api/pin", &json!({"model": model, "pinned": pinned}))
    }

    /// Runs `model` on encoded images through v2 infer (binary tensor
    /// extension for the images); one `DETECTIONS` object per image.
    pub fn infer(&self, model: &str, images: &[(String, Vec<u8>)], params: InferParams) -> Result<Vec<Value>> {
        let mut parameters = serde_json::Map::new();
        if let Some(c) = params.conf {
            parameters.insert("conf".into(), json!(c));
        }
        if let Some(i) = params.iou {
            parameters.insert("iou".into(), json!(i));
        }
        if let Some(r) = &params.hand_regions {
            parameters.insert("hand_regions".into(), json!(r.to_param()));
        }
        if self.priority > 0 {
            parameters.insert("priority".into(), json!(self.priority));
        }
        let prompts = params.prompts.map(|p| p.to_sets()).unwrap_or_default();
        let req = image_infer::encode_image_request(images, parameters, &prompts)?;
        let path = format!("/v2/models/{model}/infer");
        let body = Body {
            bytes: &req.body,
            content_type: req.content_type(),
            header_length: req.header_length,
        };
        let v = self.exchange_json(&path, Some(body), model)?;
        image_infer::decode_detections(&v).map_err(|e| e.context(&path))
    }

    /// Follows `/api/events`, calling `f(name, data)` for each event until it
    /// returns false or the stream ends.
    pub fn follow_events(&self, mut f: impl FnMut(&str, &Value) -> bool) -> Result<()> {
        let r = self
            .endpoint
            .with_timeout(None)
            .send("/api/events", None)
            .map_err(|e| self.unreachable(e))?;
        if r.status().as_u16() != 200 {
            return Err(Error::msg(format!("/api/events: HTTP {}", r.status().as_u16())));
        }
        let reader = BufReader::new(r.into_body().into_reader());
        let mut name = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                let v: Value = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
                if !f(&name, &v) {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn host_specs_become_base_urls() {
        let d = crate::setup::DEFAULT_PORT;
        assert_eq!(base_url(None).ok(), Some(format!("http://127.0.0.1:{d}")));
        assert_eq!(base_url(Some("gpu-box:9000")).ok(), Some("http://gpu-box:9000".into()));
        assert_eq!(base_url(Some("http://h:1/")).ok(), Some("http://h:1".into()));
        assert_eq!(base_url(Some("0.0.0.0:7")).ok(), Some("http://127.0.0.1:7".into()));
        assert_eq!(base_url(Some("box")).ok(), Some(format!("http://box:{d}")));
        assert!(base_url(Some("h:notaport")).is_err());
        assert!(base_url(Some("ftp://h")).is_err());
    }
}
