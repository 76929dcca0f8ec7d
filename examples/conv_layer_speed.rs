//! GFLOP/s of the CPU conv kernels on YOLOv8n's layer shapes at 640: the
//! tiled kernel (best ISA here), its AVX2 build, and im2col + GEMM side by
//! side (best of 15 runs each).
//!
//!     cargo run --example conv_layer_speed

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use modeldock::kernels::layer::FastConv;
use modeldock::kernels::tiled::Isa;
use modeldock::kernels::{Act, Padding};

fn best_ms(conv: &FastConv, x: &Tensor) -> Result<(f64, usize)> {
    let mut best = f64::MAX;
    let mut oh = 0;
    for _ in 0..15 {
        let t = Instant::now();
        let y = conv.forward(x).map_err(candle_core::Error::wrap)?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        oh = y.dim(2)?;
    }
    Ok((best, oh))
}

fn main() -> Result<()> {
    // (cin, cout, input size, kernel, stride)
    let shapes = [
        (3usize, 16usize, 640usize, 3usize, 2usize),
        (16, 32, 320, 3, 2),
        (16, 16, 160, 3, 1),
        (32, 32, 160, 1, 1),
        (32, 64, 160, 3, 2),
        (32, 32, 80, 3, 1),
        (64, 64, 80, 3, 1),
        (128, 64, 80, 1, 1),
        (64, 64, 40, 3, 1),
        (128, 128, 20, 3, 1),
        (256, 64, 20, 3, 1),
    ];
    println!("layer                      tiled ms  GFLOP/s   avx2 ms  GFLOP/s   gemm ms  GFLOP/s");
    for (cin, cout, hw, k, s) in shapes {
        let x = Tensor::randn(0f32, 1.0, (1, cin, hw, hw), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.1, (cout, cin, k, k), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 0.1, cout, &Device::Cpu)?;
        let conv =
            FastConv::new(w, Some(b), s, Padding::uniform(k / 2), 1, Act::Silu).map_err(candle_core::Error::wrap)?;
        let (tiled, oh) = best_ms(&conv, &x)?;
        let conv = conv.with_tiled_isa(Isa::Avx2);
        let (avx2, _) = best_ms(&conv, &x)?;
        let (gemm, _) = best_ms(&conv.without_tiled(), &x)?;
        let gflop = 2.0 * (cin * k * k * cout * oh * oh) as f64 / 1e9;
        println!(
            "{cin:>4}->{cout:<4} k{k} s{s} @{hw:<4}  {tiled:>8.3} {:>8.1} {avx2:>9.3} {:>8.1} {gemm:>9.3} {:>8.1}",
            gflop / tiled * 1e3,
            gflop / avx2 * 1e3,
            gflop / gemm * 1e3
        );
    }
    Ok(())
}
