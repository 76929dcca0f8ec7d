//! `modeldock bench --http`: the same model in this process and over HTTP
//! (keep-alive, loopback), in one run: p50 of each, their ratio, the cache-hit
//! p50 over HTTP, and throughput with 1 and 4 concurrent clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::catalog::registry::Registry;
use crate::client::HttpClient;
use crate::engine::{Engine, EngineConfig, ImageInput, KeepAlive};
use crate::error::{Error, Result};
use crate::server::{self, ServerOptions};
use crate::vision::InferParams;

fn p50(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Served {
    engine: Engine,
    handle: Option<server::ServerHandle>,
    client: HttpClient,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.engine.shutdown();
    }
}

fn serve(reg: &Registry, mut cfg: EngineConfig, cache: bool) -> Result<Served> {
    cfg.default_keep_alive = KeepAlive::Forever;
    if !cache {
        cfg.cache_entries = 0;
    }
    let engine = Engine::start(reg.clone(), cfg, None);
    let listener = server::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let handle = server::start(engine.clone(), ServerOptions::default(), listener)?;
    let client = HttpClient::new(&format!("http://{}", handle.addr));
    Ok(Served {
        engine,
        handle: Some(handle),
        client,
    })
}

fn time_http(c: &HttpClient, model: &str, image: &[u8], runs: usize) -> Result<Vec<f64>> {
    let imgs = [("bench".to_string(), image.to_vec())];
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        let v = c.infer(model, &imgs, InferParams::default())?;
        if let Some(e) = v.first().and_then(|v| v.get("error")) {
            return Err(Error::msg(format!("bench --http: {e}")));
        }
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    Ok(t)
}

fn throughput(c: &HttpClient, model: &str, image: &Arc<Vec<u8>>, clients: usize, per_client: usize) -> f64 {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (c, m, img) = (c.clone(), model.to_string(), image.clone());
            std::thread::spawn(move || time_http(&c, &m, &img, per_client).map(|t| t.len()).unwrap_or(0))
        })
        .collect();
    let done: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    done as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

pub fn run(
    reg: &Registry,
    cfg: &EngineConfig,
    model: &str,
    image: Vec<u8>,
    runs: usize,
    json_out: bool,
) -> Result<i32> {
    let image = Arc::new(image);
    // Without the result cache: both sides run the model every time.
    let s = serve(reg, cfg.clone(), false)?;
    s.engine.load(model)?;
    if !s.engine.wait_for(Duration::from_secs(600), |sn| {
        sn.models
            .iter()
            .any(|m| m.id == model && m.state == crate::engine::ModelState::Resident)
    }) {
        return Err(Error::msg(format!("bench --http: {model} did not load")));
    }
    let warm = runs.clamp(3, 10);
    let input = || ImageInput::Bytes {
        name: "bench".into(),
        bytes: image.clone(),
    };
    let mut inproc = Vec::new();
    let mut http = Vec::new();
    time_http(&s.client, model, &image, warm)?;
    // Alternate rounds so both sides see the same machine.
    for _ in 0..4 {
        for _ in 0..runs.div_ceil(4) {
            let t = Instant::now();
            s.engine
                .infer_wait(model, input(), InferParams::default())
                .map_err(|e| Error::msg(e.error))?;
            inproc.push(t.elapsed().as_secs_f64() * 1e3);
        }
        http.extend(time_http(&s.client, model, &image, runs.div_ceil(4))?);
    }
    let t1 = throughput(&s.client, model, &image, 1, runs);
    let t4 = throughput(&s.client, model, &image, 4, runs.div_ceil(2));
    drop(s);
    // With the cache: the same image again is answered without the model.
    let c = serve(reg, cfg.clone(), true)?;
    time_http(&c.client, model, &image, 2)?;
    let hit = p50(time_http(&c.client, model, &image, runs)?);
    drop(c);
    let (pi, ph) = (p50(inproc), p50(http));
    let v = json!({
        "model": model,
        "runs": runs,
        "inproc_p50_ms": pi,
        "http_p50_ms": ph,
        "http_over_inproc": ph / pi.max(1e-9),
        "http_overhead_ms": ph - pi,
        "http_cache_hit_p50_ms": hit,
        "throughput_1_client_rps": t1,
        "throughput_4_clients_rps": t4,
    });
    if json_out {
        println!("{v}");
    } else {
        println!(
            "{model}: in-process p50 {pi:.2} ms, over HTTP {ph:.2} ms ({:.3}×, +{:.2} ms); cache hit over HTTP {hit:.2} ms; \
             throughput {t1:.1} req/s with 1 client, {t4:.1} with 4",
            ph / pi.max(1e-9),
            ph - pi
        );
    }
    Ok(0)
}
