//! Warm forward time of YOLOv8n at 640 with random weights, for profilers:
//!
//!     cargo build --example yolov8_forward && perf record ./target/debug/examples/yolov8_forward
//!
//! Prints the p50 of N runs (default 40; first argument).

use std::time::Instant;

use candle_core::{Device, Tensor};
use modeldock::catalog::weights_source::WeightsSource;
use modeldock::models::weights::var_builder;
use modeldock::models::yolov8::{HeadKind, YoloV8};

fn main() -> modeldock::error::Result<()> {
    // As the engine does at start: freed buffers are reused, not unmapped.
    modeldock::engine::allocator::keep_freed_memory_for_reuse();
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(40);
    let vb = var_builder(&WeightsSource::Random, 0, &Device::Cpu, std::sync::Arc::new(|_, _| {}))?;
    let model = YoloV8::build(vb, "n", HeadKind::Detect, 80)?;
    let x = Tensor::rand(0f32, 1.0, (1, 3, 640, 640), &Device::Cpu)?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        model.forward(&x)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "yolov8n forward p50 {:.1} ms (min {:.1})",
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}
