//! `GET /metrics`: Prometheus text, built with `prometheus-client`. Triton's
//! names where they exist (kept without the `_total` suffix OpenMetrics adds
//! to counters, so dashboards made for Triton work unchanged), modeldock's own
//! (`modeldock_*`) for residency.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::Snapshot;
use crate::telemetry::gpu::GpuProbe;
use crate::vision::Timings;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabel {
    pub gpu_uuid: String,
}

type CounterLike = Family<ModelLabel, Gauge<u64, AtomicU64>>;

pub struct Metrics {
    registry: Registry,
    success: CounterLike,
    failure: CounterLike,
    count: CounterLike,
    exec_count: CounterLike,
    queue_us: CounterLike,
    compute_input_us: CounterLike,
    compute_infer_us: CounterLike,
    compute_output_us: CounterLike,
    loads: Family<ModelLabel, Counter>,
    load_seconds: Family<ModelLabel, Counter<f64, AtomicU64>>,
    resident_bytes: Family<ModelLabel, Gauge>,
    budget_bytes: Gauge,
    used_bytes: Gauge,
    cache_hits: Gauge,
    cache_misses: Gauge,
    pending: Family<ModelLabel, Gauge>,
    reloads_after_eviction: Gauge,
    class_queue_us: Family<ClassLabel, Counter>,
    class_requests: Family<ClassLabel, Counter>,
    gpu_used: Family<GpuLabel, Gauge>,
    gpu_total: Family<GpuLabel, Gauge>,
    gpu: Mutex<Option<GpuProbe>>,
}

fn label(model: &str) -> ModelLabel {
    ModelLabel {
        model: model.to_string(),
        version: "1".to_string(),
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut counter_like = |name: &str, help: &str| {
            let f = CounterLike::default();
            registry.register(name, help, f.clone());
            f
        };
        let success = counter_like(
            "nv_inference_request_success",
            "Successful inference requests (per image)",
        );
        let failure = counter_like("nv_inference_request_failure", "Failed inference requests (per image)");
        let count = counter_like("nv_inference_count", "Inferences performed (cache hits included)");
        let exec_count = counter_like("nv_inference_exec_count", "Model executions (cache hits excluded)");
        let queue_us = counter_like("nv_inference_queue_duration_us", "Cumulative queue time, microseconds");
        let compute_input_us = counter_like(
            "nv_inference_compute_input_duration_us",
            "Cumulative decode + preprocess time, microseconds",
        );
        let compute_infer_us = counter_like(
            "nv_inference_compute_infer_duration_us",
            "Cumulative network forward time, microseconds",
        );
        let compute_output_us = counter_like(
            "nv_inference_compute_output_duration_us",
            "Cumulative postprocess time, microseconds",
        );
        let loads = Family::<ModelLabel, Counter>::default();
        registry.register("modeldock_loads", "Model loads this server performed", loads.clone());
        let load_seconds = Family::<ModelLabel, Counter<f64, AtomicU64>>::default();
        registry.register(
            "modeldock_load_seconds",
            "Time spent loading models",
            load_seconds.clone(),
        );
        let resident_bytes = Family::<ModelLabel, Gauge>::default();
        registry.register(
            "modeldock_resident_bytes",
            "Bytes a loading or resident model holds (measured, else predicted)",
            resident_bytes.clone(),
        );
        let budget_bytes = Gauge::default();
        registry.register(
            "modeldock_budget_bytes",
            "Memory budget for resident models",
            budget_bytes.clone(),
        );
        let used_bytes = Gauge::default();
        registry.register("modeldock_used_bytes", "Budget bytes in use", used_bytes.clone());
        let cache_hits = Gauge::default();
        registry.register("modeldock_cache_hits", "Result cache hits", cache_hits.clone());
        let cache_misses = Gauge::default();
        registry.register("modeldock_cache_misses", "Result cache misses", cache_misses.clone());
        let pending = Family::<ModelLabel, Gauge>::default();
        registry.register(
            "nv_inference_pending_request_count",
            "Images waiting for the engine: queued for their turn or behind a load",
            pending.clone(),
        );
        let reloads_after_eviction = Gauge::default();
        registry.register(
            "modeldock_reloads_after_eviction_total",
            "Models loaded again within 60 s of being evicted (thrashing: the budget is too small for the mix)",
            reloads_after_eviction.clone(),
        );
        let class_queue_us = Family::<ClassLabel, Counter>::default();
        registry.register(
            "modeldock_queue_duration_us",
            "Cumulative queue time by scheduling class (interactive, bulk), microseconds",
            class_queue_us.clone(),
        );
        let class_requests = Family::<ClassLabel, Counter>::default();
        registry.register(
            "modeldock_queue_requests",
            "Images answered by scheduling class (divide the queue time by this)",
            class_requests.clone(),
        );
        let gpu_used = Family::<GpuLabel, Gauge>::default();
        registry.register("nv_gpu_memory_used_bytes", "GPU memory used (NVML)", gpu_used.clone());
        let gpu_total = Family::<GpuLabel, Gauge>::default();
        registry.register(
            "nv_gpu_memory_total_bytes",
            "GPU memory total (NVML)",
            gpu_total.clone(),
        );
        Metrics {
            registry,
            success,
            failure,
            count,
            exec_count,
            queue_us,
            compute_input_us,
            compute_infer_us,
            compute_output_us,
            loads,
            load_seconds,
            resident_bytes,
            budget_bytes,
            used_bytes,
            cache_hits,
            cache_misses,
            pending,
            reloads_after_eviction,
            class_queue_us,
            class_requests,
            gpu_used,
            gpu_total,
            gpu: Mutex::new(None),
        }
    }

    pub fn record_ok(&self, model: &str, t: &Timings, cached: bool) {
        let l = label(model);
        let us = |ms: f64| (ms.max(0.0) * 1e3) as u64;
        self.success.get_or_create(&l).inc();
        self.count.get_or_create(&l).inc();
        self.queue_us.get_or_create(&l).inc_by(us(t.queue));
        if !cached {
            self.exec_count.get_or_create(&l).inc();
            self.compute_input_us
                .get_or_create(&l)
                .inc_by(us(t.decode + t.preprocess));
            self.compute_infer_us.get_or_create(&l).inc_by(us(t.forward));
            self.compute_output_us.get_or_create(&l).inc_by(us(t.postprocess));
        }
    }

    /// The queue time of one answered image, by its scheduling class.
    pub fn record_queue(&self, class: &str, queue_ms: f64) {
        let l = ClassLabel {
            class: class.to_string(),
        };
        self.class_queue_us
            .get_or_create(&l)
            .inc_by((queue_ms.max(0.0) * 1e3) as u64);
        self.class_requests.get_or_create(&l).inc();
    }

    pub fn record_fail(&self, model: &str) {
        self.failure.get_or_create(&label(model)).inc();
    }

    pub fn record_load(&self, model: &str, ms: f64) {
        let l = label(model);
        self.loads.get_or_create(&l).inc();
        self.load_seconds.get_or_create(&l).inc_by(ms.max(0.0) / 1e3);
    }

    /// The text exposition, with the residency gauges read from `snap`.
    pub fn encode(&self, snap: &Snapshot) -> String {
        self.resident_bytes.clear();
        self.pending.clear();
        for m in &snap.models {
            if m.queued + m.waiting > 0 {
                self.pending
                    .get_or_create(&label(&m.id))
                    .set(i64::try_from(m.queued + m.waiting).unwrap_or(i64::MAX));
            }
            if m.state.in_memory() {
                let b = m.measured_bytes.unwrap_or(m.predicted_bytes);
                self.resident_bytes
                    .get_or_create(&label(&m.id))
                    .set(i64::try_from(b).unwrap_or(i64::MAX));
            }
        }
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.budget_bytes.set(i(snap.budget_bytes));
        self.used_bytes.set(i(snap.used_bytes));
        self.cache_hits.set(i(snap.cache_hits));
        self.cache_misses.set(i(snap.cache_misses));
        self.reloads_after_eviction.set(i(snap.reloads_after_eviction));
        if let Ok(mut g) = self.gpu.lock() {
            let probe = g.get_or_insert_with(GpuProbe::open);
            for s in probe.sample() {
                let l = GpuLabel {
                    gpu_uuid: s.uuid.clone().unwrap_or_else(|| format!("GPU-{}", s.index)),
                };
                if let Some(u) = s.memory_used_bytes {
                    self.gpu_used.get_or_create(&l).set(i(u));
                }
                if let Some(t) = s.memory_total_bytes {
                    self.gpu_total.get_or_create(&l).set(i(t));
                }
            }
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
