//! Layer norm over the channels of channel-first data: each pixel's C values
//! normalised (biased variance, as PyTorch's `LayerNorm`), then scaled and
//! shifted per channel. Statistics in parallel over blocks of pixels, the
//! output in parallel over channels; every loop runs along pixels, so it
//! vectorises without horizontal sums.

use rayon::prelude::*;

const CHUNK: usize = 512;

/// `x` and `out`: `[c, hw]`; `gamma`, `beta`: `[c]`. Panics if a slice is
/// shorter than its shape says.
pub fn layer_norm_planar(x: &[f32], c: usize, hw: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        x.len() >= c * hw && out.len() >= c * hw,
        "layer_norm_planar: data too short"
    );
    assert!(
        gamma.len() >= c && beta.len() >= c,
        "layer_norm_planar: gamma/beta too short"
    );
    let mut mean = vec![0f32; hw];
    let mut rstd = vec![0f32; hw];
    let inv_c = 1.0 / c.max(1) as f32;
    mean.par_chunks_mut(CHUNK)
        .zip(rstd.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(k, (m, r))| {
            let (p0, len) = (k * CHUNK, m.len());
            m.fill(0.0);
            for ch in 0..c {
                for (a, v) in m.iter_mut().zip(&x[ch * hw + p0..][..len]) {
                    *a += v;
                }
            }
            m.iter_mut().for_each(|a| *a *= inv_c);
            r.fill(0.0);
            for ch in 0..c {
                for ((a, v), mu) in r.iter_mut().zip(&x[ch * hw + p0..][..len]).zip(m.iter()) {
                    let d = v - mu;
                    *a += d * d;
                }
            }
            r.iter_mut().for_each(|a| *a = 1.0 / (*a * inv_c + eps).sqrt());
        });
    out[..c * hw].par_chunks_mut(hw).enumerate().for_each(|(ch, o)| {
        let (g, b) = (gamma[ch], beta[ch]);
        for (((o, v), mu), rs) in o.iter_mut().zip(&x[ch * hw..][..hw]).zip(&mean).zip(&rstd) {
            *o = (v - mu) * rs * g + b;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pixel_is_normalised_over_its_channels() {
        let (c, hw) = (5, 1031);
        let x: Vec<f32> = (0..c * hw)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.1 + (i % hw) as f32 * 0.01)
            .collect();
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
        let beta: Vec<f32> = (0..c).map(|i| i as f32 - 2.0).collect();
        let mut out = vec![f32::NAN; c * hw];
        layer_norm_planar(&x, c, hw, &gamma, &beta, 1e-5, &mut out);
        for p in 0..hw {
            let v: Vec<f64> = (0..c).map(|ch| x[ch * hw + p] as f64).collect();
            let mean = v.iter().sum::<f64>() / c as f64;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / c as f64;
            for ch in 0..c {
                let want = (v[ch] - mean) / (var + 1e-5).sqrt() * gamma[ch] as f64 + beta[ch] as f64;
                let got = out[ch * hw + p] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "pixel {p} channel {ch}: {got} vs {want}"
                );
            }
        }
    }
}
