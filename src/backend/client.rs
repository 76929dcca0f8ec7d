//! One pooled keep-alive HTTP client per v2 server (shared by every model
//! that runs there), with timeouts, retries with backoff on connection errors
//! only, and the server's reachability: a server that is down is a state
//! ("unreachable since 12:01:07 UTC, retrying"), which a health thread clears
//! by itself when the server is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::endpoint::{is_connection_error, Body, Endpoint};
pub use super::endpoint::{normalise_url, Reply};
use crate::error::{Error, Result};
use crate::v2::tensor_infer as wire;

/// Retries of a request whose connection failed, and the first backoff
/// (doubled each time): at most about 0.7 s of waiting.
const RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The health thread's tick: a health check each tick while the server is
/// down, every fifth while it is up; round-trip splits are updated each tick.
const TICK: Duration = Duration::from_secs(2);
const UP_CHECK_EVERY: u64 = 5;
/// The largest reply read (a network output, or a repository index).
const MAX_REPLY: u64 = 512 << 20;

/// The rows of a repository index reply: a list (Triton, MLServer) or
/// `{"models": [...]}` (some gateways).
pub fn parse_index(reply: Reply) -> Result<Vec<IndexEntry>> {
    let path = "/v2/repository/index";
    let v = reply.json().map_err(|e| e.context(path))?;
    let list = match &v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o.get("models").and_then(Value::as_array).cloned().unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(list.iter().filter_map(IndexEntry::from_json).collect())
}

/// Totals of a model's statistics extension (nanoseconds and counts).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatTotals {
    pub success: u64,
    pub queue_ns: u64,
    pub compute_ns: u64,
}

/// The split of a round trip over the last window of requests, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RemoteSplit {
    pub requests: u64,
    pub round_trip_ms: f64,
    pub network_ms: f64,
    pub queue_ms: f64,
    pub compute_ms: f64,
}

#[derive(Default)]
struct ModelLatency {
    /// Round trips since the last statistics read: count and total ms.
    trips: u64,
    trip_ms: f64,
    last: Option<StatTotals>,
    split: Option<RemoteSplit>,
}

#[derive(Default)]
struct State {
    down: Option<(SystemTime, String)>,
    /// The server advertises the binary tensor extension (asked once per up period).
    binary: Option<bool>,
    latency: HashMap<String, ModelLatency>,
    /// The repository index, re-read each tick once someone watches it.
    index: Option<Vec<IndexEntry>>,
    watch_index: bool,
    /// The server's GPU gauges at the last read (watched servers only):
    /// `Some(None)` when its metrics have none.
    gpu: Option<Option<GpuMetrics>>,
    /// Where the metrics are, when not at the usual places.
    metrics_url: Option<String>,
}

pub struct V2Client {
    base: String,
    /// The server, its agent, and the headers sent with every request: the
    /// backend's `headers` and the remote headers set for this server.
    endpoint: Endpoint,
    state: Mutex<State>,
}

fn pool() -> &'static Mutex<HashMap<String, Weak<V2Client>>> {
    static POOL: OnceLock<Mutex<HashMap<String, Weak<V2Client>>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// "12:01:07 UTC" for a wall-clock time.
fn clock(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    match s.split_once('T') {
        Some((_, time)) => format!("{} UTC", time.trim_end_matches('Z')),
        None => s,
    }
}

impl V2Client {
    /// The client of the server at `url`: one per server in this process,
    /// with its health thread, shared by every model that runs there.
    pub fn shared(url: &str, timeout: Duration) -> Result<Arc<V2Client>> {
        V2Client::shared_with(url, timeout, Vec::new())
    }

    /// [`V2Client::shared`] that also sends `headers` (a backend's own);
    /// clients with other headers are other clients.
    pub fn shared_with(url: &str, timeout: Duration, headers: Vec<(String, String)>) -> Result<Arc<V2Client>> {
        let base = normalise_url(url)?;
        let mut headers = [super::transport::remote_headers(&base), headers].concat();
        headers.sort();
        headers.dedup();
        let pool_key = headers.iter().fold(base.clone(), |k, (n, v)| format!("{k}\n{n}: {v}"));
        let mut p = lock(pool());
        if let Some(c) = p.get(&pool_key).and_then(Weak::upgrade) {
            return Ok(c);
        }
        let endpoint = Endpoint::new(&base, Some(timeout), headers)?;
        let c = Arc::new(V2Client {
            base: base.clone(),
            endpoint,
            state: Mutex::new(State::default()),
        });
        p.insert(pool_key, Arc::downgrade(&c));
        let weak = Arc::downgrade(&c);
        let _ = std::thread::Builder::new()
            .name("modeldock-v2-health".into())
            .spawn(move || health_loop(weak));
        Ok(c)
    }

    /// The client of `url` if something in this process holds one.
    pub fn existing(url: &str) -> Option<Arc<V2Client>> {
        let base = normalise_url(url).ok()?;
        let p = lock(pool());
        p.iter()
            .filter(|(k, _)| k.split('\n').next() == Some(base.as_str()))
            .find_map(|(_, c)| c.upgrade())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// "unreachable since 12:01:07 UTC, retrying: connection refused" while
    /// the server does not answer.
    pub fn unreachable(&self) -> Option<String> {
        lock(&self.state)
            .down
            .as_ref()
            .map(|(since, why)| format!("unreachable since {}, retrying: {why}", clock(*since)))
    }

    fn mark_up(&self) {
        let mut s = lock(&self.state);
        if s.down.take().is_some() {
            // A restarted server may be another one: ask again.
            s.binary = None;
        }
    }

    fn mark_down(&self, why: &str) {
        let mut s = lock(&self.state);
        if s.down.is_none() {
            tracing::warn!("{}: unreachable: {why}", self.base);
            s.down = Some((SystemTime::now(), why.to_string()));
        }
    }

    /// Sends a request (`GET` without a body, else `POST`), retrying with
    /// backoff when the connection fails; any HTTP answer marks the server
    /// up, a connection failure marks it down.
    pub fn call(&self, path: &str, body: Option<Body>) -> Result<Reply> {
        self.call_with(path, body, RETRIES)
    }

    fn call_with(&self, path: &str, body: Option<Body>, retries: u32) -> Result<Reply> {
        let url = self.endpoint.url(path);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.endpoint.exchange(path, body, MAX_REPLY) {
                Ok(reply) => {
                    self.mark_up();
                    return Ok(reply);
                }
                Err(e) if is_connection_error(&e) => {
                    if attempt >= retries {
                        let why = e.to_string();
                        self.mark_down(&why);
                        return Err(Error::unavailable(format!(
                            "{}: {}",
                            self.base,
                            self.unreachable().unwrap_or(why)
                        )));
                    }
                }
                Err(e) => return Err(Error::msg(format!("{url}: {e}"))),
            }
            attempt += 1;
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        self.call(path, None)?.ok(path)?.json().map_err(|e| e.context(path))
    }

    /// Whether the server advertises the binary tensor extension (`GET /v2`).
    pub fn binary_tensors(&self) -> bool {
        if let Some(b) = lock(&self.state).binary {
            return b;
        }
        let b = self
            .get_json("/v2")
            .ok()
            .and_then(|v| {
                v.get("extensions")
                    .and_then(Value::as_array)
                    .map(|e| e.iter().any(|x| x.as_str() == Some("binary_tensor_data")))
            })
            .unwrap_or(false);
        lock(&self.state).binary = Some(b);
        b
    }

    /// One network run: `x` as `input`, `output` back.
    pub fn infer(&self, model: &str, input: &str, x: &wire::Tensor32, output: &str) -> Result<wire::Tensor32> {
        let path = format!("/v2/models/{model}/infer");
        let binary = self.binary_tensors();
        let enc = wire::encode_request(input, x, output, binary);
        let t0 = Instant::now();
        let body = Body {
            bytes: &enc.body,
            content_type: enc.content_type(),
            header_length: enc.header_length,
        };
        let reply = self.call(&path, Some(body))?;
        let reply = reply.ok(&format!("{model} on {}", self.base))?;
        let out = wire::decode_reply(&reply.body, reply.header_length, output)
            .map_err(|e| Error::msg(format!("{model} on {}: {e}", self.base)))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut s = lock(&self.state);
        let l = s.latency.entry(model.to_string()).or_default();
        l.trips += 1;
        l.trip_ms += ms;
        Ok(out)
    }

    /// `POST /v2/repository/models/{model}/load`.
    pub fn load(&self, model: &str) -> Result<()> {
        let path = format!("/v2/repository/models/{model}/load");
        self.call(&path, Some(Body::json(b"{}")))?
            .ok(&format!("loading {model} on {}", self.base))?;
        Ok(())
    }

    /// `POST /v2/repository/models/{model}/unload`.
    pub fn unload(&self, model: &str) -> Result<()> {
        let path = format!("/v2/repository/models/{model}/unload");
        self.call(&path, Some(Body::json(b"{}")))?
            .ok(&format!("unloading {model} on {}", self.base))?;
        Ok(())
    }

    /// `GET /v2/models/{model}/ready` answered 200.
    pub fn ready(&self, model: &str) -> Result<bool> {
        Ok(self.call(&format!("/v2/models/{model}/ready"), None)?.status == 200)
    }

    /// The repository index: every model the server knows, with its state.
    pub fn index(&self) -> Result<Vec<IndexEntry>> {
        let reply = self.index_reply()?;
        parse_index(reply.ok("/v2/repository/index")?)
    }

    /// `POST /v2/repository/index` as answered, refusals included.
    pub fn index_reply(&self) -> Result<Reply> {
        self.call("/v2/repository/index", Some(Body::json(b"{}")))
    }

    /// The model's inputs and outputs (`GET /v2/models/{model}`).
    pub fn metadata(&self, model: &str) -> Result<Metadata> {
        let path = format!("/v2/models/{model}");
        let v = self.get_json(&path)?;
        Ok(Metadata {
            inputs: tensor_list(v.get("inputs")),
            outputs: tensor_list(v.get("outputs")),
        })
    }

    /// Success count, queue and compute time so far (statistics extension).
    pub fn stats(&self, model: &str) -> Result<StatTotals> {
        let path = format!("/v2/models/{model}/stats");
        let v = self.get_json(&path)?;
        parse_stats(&v).ok_or_else(|| Error::msg(format!("{path}: no model_stats in the reply")))
    }

    /// Re-reads the repository index every tick from now on (the app
    /// attached to a server lists it).
    /// `metrics_url` says where its Prometheus metrics are, when not at
    /// `/metrics` or Triton's default port.
    pub fn watch_index(&self, metrics_url: Option<String>) {
        let fresh = self.index().ok();
        let mut s = lock(&self.state);
        s.watch_index = true;
        s.metrics_url = metrics_url;
        if fresh.is_some() {
            s.index = fresh;
        }
    }

    /// `model`'s row in the last index read, when the index is watched.
    pub fn index_row(&self, model: &str) -> Option<IndexEntry> {
        let s = lock(&self.state);
        s.index.as_ref()?.iter().find(|e| e.name == model).cloned()
    }

    fn refresh_index(&self) {
        if !lock(&self.state).watch_index {
            return;
        }
        if let Ok(i) = self.index() {
            lock(&self.state).index = Some(i);
        }
        let url = lock(&self.state).metrics_url.clone();
        let gpu = self.metrics_text(url.as_deref()).map(|t| parse_gpu_metrics(&t));
        lock(&self.state).gpu = Some(gpu.flatten());
    }

    /// The server's GPU gauges at the last read: `None` before the first
    /// read, `Some(None)` when its metrics have none (a CPU-only server, or
    /// no metrics endpoint).
    pub fn gpu_metrics(&self) -> Option<Option<GpuMetrics>> {
        lock(&self.state).gpu
    }

    /// Reads `model`'s statistics now, so that the first window of requests
    /// has a starting point (servers without statistics: nothing).
    pub fn baseline(&self, model: &str) {
        if let Ok(now) = self.stats(model) {
            lock(&self.state).latency.entry(model.to_string()).or_default().last = Some(now);
        }
    }

    /// The latest round-trip split of `model`'s requests sent from here.
    pub fn split(&self, model: &str) -> Option<RemoteSplit> {
        lock(&self.state).latency.get(model).and_then(|l| l.split)
    }

    /// Reads the statistics of models with new round trips and updates their split.
    fn refresh_splits(&self) {
        let due: Vec<String> = lock(&self.state)
            .latency
            .iter()
            .filter(|(_, l)| l.trips > 0 || l.last.is_none())
            .map(|(m, _)| m.clone())
            .collect();
        for m in due {
            let Ok(now) = self.stats(&m) else { continue };
            let mut s = lock(&self.state);
            let l = s.latency.entry(m).or_default();
            // Counters start again when the server reloads the model.
            let last = l.last.map(|p| {
                if now.success < p.success {
                    StatTotals::default()
                } else {
                    p
                }
            });
            if let (Some(prev), true) = (last, l.trips > 0) {
                let n = now.success.saturating_sub(prev.success);
                if n > 0 {
                    let queue = now.queue_ns.saturating_sub(prev.queue_ns) as f64 / n as f64 / 1e6;
                    let compute = now.compute_ns.saturating_sub(prev.compute_ns) as f64 / n as f64 / 1e6;
                    let trip = l.trip_ms / l.trips as f64;
                    l.split = Some(RemoteSplit {
                        requests: l.trips,
                        round_trip_ms: trip,
                        network_ms: (trip - queue - compute).max(0.0),
                        queue_ms: queue,
                        compute_ms: compute,
                    });
                }
            }
            l.last = Some(now);
            l.trips = 0;
            l.trip_ms = 0.0;
        }
    }

    /// The Prometheus text of the server's metrics: `/metrics` on the same
    /// address, else Triton's default metrics port (8002) on the same host.
    pub fn metrics_text(&self, metrics_url: Option<&str>) -> Option<String> {
        let urls = match metrics_url {
            Some(u) => vec![u.to_string()],
            None => {
                let mut v = vec![format!("{}/metrics", self.base)];
                if let Some((host, _)) = self.base.rsplit_once(':') {
                    if !host.ends_with("//") && !host.ends_with("http") && !host.ends_with("https") {
                        v.push(format!("{host}:8002/metrics"));
                    }
                }
                v
            }
        };
        for u in urls {
            let Ok(r) = self.endpoint.get_beside(&u, 16 << 20) else {
                continue;
            };
            if r.status != 200 {
                continue;
            }
            if let Ok(t) = String::from_utf8(r.body) {
                return Some(t);
            }
        }
        None
    }
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub name: String,
    pub version: Option<String>,
    /// READY, UNAVAILABLE, LOADING, UNLOADING, or empty (never loaded).
    pub state: String,
    pub reason: String,
}

impl IndexEntry {
    fn from_json(v: &Value) -> Option<IndexEntry> {
        let text = |k: &str| match v.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let name = text("name");
        if name.is_empty() {
            return None;
        }
        let version = Some(text("version")).filter(|s| !s.is_empty());
        Some(IndexEntry {
            name,
            version,
            state: text("state"),
            reason: text("reason"),
        })
    }

    pub fn ready(&self) -> bool {
        self.state.eq_ignore_ascii_case("READY")
    }

    /// "READY", "UNAVAILABLE: unloaded", "not loaded" (no state given).
    pub fn describe(&self) -> String {
        match (self.state.as_str(), self.reason.as_str()) {
            ("", "") => "not loaded".to_string(),
            (s, "") => s.to_string(),
            ("", r) => r.to_string(),
            (s, r) => format!("{s}: {r}"),
        }
    }
}

/// A model's declared tensors: (name, datatype, shape; -1 is any size).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub inputs: Vec<(String, String, Vec<i64>)>,
    pub outputs: Vec<(String, String, Vec<i64>)>,
}

fn tensor_list(v: Option<&Value>) -> Vec<(String, String, Vec<i64>)> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| {
                    let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    let shape = t
                        .get("shape")
                        .and_then(Value::as_array)
                        .map(|d| d.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default();
                    (s("name"), s("datatype"), shape)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sums the statistics extension's reply over versions: successes, queue ns,
/// and compute (input + infer + output) ns. Numbers may come as strings.
pub fn parse_stats(v: &Value) -> Option<StatTotals> {
    let num = |v: Option<&Value>| -> u64 {
        match v {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        }
    };
    let models = v.get("model_stats")?.as_array()?;
    let mut t = StatTotals::default();
    for m in models {
        let Some(s) = m.get("inference_stats") else { continue };
        let ns = |k: &str| num(s.get(k).and_then(|x| x.get("ns")));
        t.success += num(s.get("success").and_then(|x| x.get("count")));
        t.queue_ns += ns("queue");
        t.compute_ns += ns("compute_input") + ns("compute_infer") + ns("compute_output");
    }
    Some(t)
}

fn health_loop(client: Weak<V2Client>) {
    let mut tick: u64 = 0;
    loop {
        let Some(c) = client.upgrade() else { return };
        if c.unreachable().is_some() {
            // One attempt, no retries: this loop is the retry.
            let _ = c.call_with("/v2/health/live", None, 0);
        } else {
            c.refresh_splits();
            c.refresh_index();
            if tick.is_multiple_of(UP_CHECK_EVERY) {
                let _ = c.call_with("/v2/health/live", None, 0);
            }
        }
        tick += 1;
        drop(c);
        std::thread::sleep(TICK);
    }
}

/// GPU figures a server's `/metrics` gives (Triton's `nv_gpu_*`), summed
/// over its GPUs; `None` fields are absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpuMetrics {
    pub gpus: usize,
    /// Mean utilisation, 0..1.
    pub utilization: Option<f64>,
    pub memory_used_bytes: Option<f64>,
    pub memory_total_bytes: Option<f64>,
    pub power_watts: Option<f64>,
}

/// Reads Triton's GPU gauges from Prometheus text; `None` when it has none
/// (a CPU-only server).
pub fn parse_gpu_metrics(text: &str) -> Option<GpuMetrics> {
    let mut util = Vec::new();
    let mut m = GpuMetrics::default();
    let add = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0) + v);
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        let name = name_labels.split('{').next().unwrap_or("").trim();
        match name {
            "nv_gpu_utilization" => util.push(v),
            "nv_gpu_memory_used_bytes" => add(&mut m.memory_used_bytes, v),
            "nv_gpu_memory_total_bytes" => add(&mut m.memory_total_bytes, v),
            "nv_gpu_power_usage" => add(&mut m.power_watts, v),
            _ => {}
        }
    }
    m.gpus = util.len();
    if !util.is_empty() {
        m.utilization = Some(util.iter().sum::<f64>() / util.len() as f64);
    }
    (m.gpus > 0 || m.memory_total_bytes.is_some()).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_are_checked() {
        assert_eq!(normalise_url("http://gpu-box:8000/"), Ok("http://gpu-box:8000".into()));
        assert!(normalise_url("gpu-box:8000").is_err());
        assert!(normalise_url("http://").is_err());
        assert!(normalise_url("http://a b").is_err());
    }

    #[test]
    fn statistics_are_summed_over_versions_with_string_numbers() {
        let v = json!({"model_stats": [
            {"name": "m", "version": "1", "inference_stats": {
                "success": {"count": 4, "ns": 100}, "queue": {"count": 4, "ns": 40},
                "compute_input": {"count": 4, "ns": 10}, "compute_infer": {"count": 4, "ns": "200"},
                "compute_output": {"count": 4, "ns": 5}}},
            {"name": "m", "version": "2", "inference_stats": {"success": {"count": "1"}, "queue": null}}]});
        assert_eq!(
            parse_stats(&v),
            Some(StatTotals {
                success: 5,
                queue_ns: 40,
                compute_ns: 215
            })
        );
        assert_eq!(parse_stats(&json!({"x": 1})), None);
    }

    #[test]
    fn triton_gpu_gauges_are_read_and_a_cpu_server_has_none() {
        let t = "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n\
                 nv_gpu_utilization{gpu_uuid=\"GPU-a\"} 0.5\n\
                 nv_gpu_utilization{gpu_uuid=\"GPU-b\"} 0.25\n\
                 nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-a\"} 1000\n\
                 nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-b\"} 24\n\
                 nv_gpu_memory_total_bytes{gpu_uuid=\"GPU-a\"} 4096\n\
                 nv_gpu_power_usage{gpu_uuid=\"GPU-a\"} 70.5\n\
                 nv_inference_count{model=\"m\",version=\"1\"} 3\n";
        let m = parse_gpu_metrics(t);
        assert_eq!(
            m,
            Some(GpuMetrics {
                gpus: 2,
                utilization: Some(0.375),
                memory_used_bytes: Some(1024.0),
                memory_total_bytes: Some(4096.0),
                power_watts: Some(70.5),
            })
        );
        assert_eq!(
            parse_gpu_metrics("nv_inference_count{model=\"m\"} 3\nnv_cpu_utilization 0.1\n"),
            None
        );
    }

    #[test]
    fn index_rows_accept_missing_and_null_fields() {
        let rows: Vec<IndexEntry> = [
            json!({"name": "a", "version": "1", "state": "READY"}),
            json!({"name": "b", "state": null, "reason": "unloaded"}),
            json!({"name": "c", "version": 3}),
            json!({"version": "1"}),
        ]
        .iter()
        .filter_map(IndexEntry::from_json)
        .collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].ready() && !rows[1].ready());
        assert_eq!(rows[2].version.as_deref(), Some("3"));
        assert_eq!(rows[1].reason, "unloaded");
    }

    #[test]
    fn a_server_that_is_not_there_is_a_state_not_a_panic() {
        // A port nothing listens on: bind one, then drop it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let c = V2Client::shared(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2));
        let Ok(c) = c else { panic!("client") };
        assert_eq!(c.unreachable(), None);
        let e = c.ready("m").unwrap_err().to_string();
        assert!(e.contains("unreachable since") && e.contains("retrying"), "{e}");
        assert!(c.unreachable().is_some());
    }
}
