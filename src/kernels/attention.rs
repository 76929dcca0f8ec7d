//! Multi-head attention over many small windows (TinyViT's 7×7 and 14×14):
//! one task per window, in parallel, reading the qkv projection in place.
//!
//! candle runs `q·kᵀ` and `attn·v` as batched matrix products, one small
//! product after another on one thread, with the head split, the scale, the
//! bias and the softmax each a pass and a tensor of their own. Here each
//! window's heads are done in one go: the scores of one query row are built
//! as a sum of rows of kᵀ (no horizontal sums), biased, soft-maxed with
//! [`super::fast_exp`]'s exp (16 lanes on AVX-512), and the output row is a
//! sum of v rows. Each loop is a plain multiply-add over contiguous floats,
//! compiled once more with AVX-512 (or AVX2 + FMA) enabled and picked at run
//! time.

use rayon::prelude::*;

/// The shape of one call.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Number of windows.
    pub count: usize,
    /// Tokens per window.
    pub tokens: usize,
    pub heads: usize,
    /// Width of each head's q, k and v.
    pub key_dim: usize,
    /// Multiplies q·k before the bias.
    pub scale: f32,
}

/// `qkv`: `[count, tokens, heads, 3·key_dim]` (each head's q, then k, then v,
/// as TinyViT's qkv projection lays them out); `bias`: `[heads, tokens,
/// tokens]`, added to the scaled scores; `out`: `[count, tokens,
/// heads·key_dim]` (heads side by side, ready for the output projection).
/// Panics if a slice is shorter than its shape says.
pub fn window_attention(w: Windows, qkv: &[f32], bias: &[f32], out: &mut [f32]) {
    let (n, kd) = (w.tokens, w.key_dim);
    let row = w.heads * 3 * kd;
    assert!(qkv.len() >= w.count * n * row, "window_attention: qkv too short");
    assert!(bias.len() >= w.heads * n * n, "window_attention: bias too short");
    assert!(
        out.len() >= w.count * n * w.heads * kd,
        "window_attention: out too short"
    );
    let isa = Isa::best();
    out.par_chunks_mut(n * w.heads * kd)
        .zip(qkv.par_chunks(n * row))
        .take(w.count)
        .for_each_init(
            || (vec![0f32; kd * n], vec![0f32; n]),
            |(kt, s), (o, x)| match isa {
                // SAFETY: `Isa::best` found the features these need.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { window_avx512(w, x, bias, o, kt, s) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { window_avx2(w, x, bias, o, kt, s) },
                Isa::Plain => window(w, x, bias, o, kt, s),
            },
        );
}

#[derive(Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Plain,
}

impl Isa {
    fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if super::avx512::available() {
                return Isa::Avx512;
            }
            if super::avx2::available() {
                return Isa::Avx2;
            }
        }
        Isa::Plain
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn window_avx512(w: Windows, x: &[f32], bias: &[f32], o: &mut [f32], kt: &mut [f32], s: &mut [f32]) {
    window(w, x, bias, o, kt, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn window_avx2(w: Windows, x: &[f32], bias: &[f32], o: &mut [f32], kt: &mut [f32], s: &mut [f32]) {
    window(w, x, bias, o, kt, s)
}

/// One window, every head: `x` its qkv rows, `o` its output rows, `kt`
/// (key_dim × tokens) and `s` (tokens) scratch.
#[inline(always)]
fn window(w: Windows, x: &[f32], bias: &[f32], o: &mut [f32], kt: &mut [f32], s: &mut [f32]) {
    let (n, kd, heads) = (w.tokens, w.key_dim, w.heads);
    let row = heads * 3 * kd;
    for h in 0..heads {
        let base = h * 3 * kd;
        // kᵀ of this head: kt[d][j] = k_j[d].
        for j in 0..n {
            let k = &x[j * row + base + kd..][..kd];
            for (d, v) in k.iter().enumerate() {
                kt[d * n + j] = *v;
            }
        }
        let b = &bias[h * n * n..][..n * n];
        for i in 0..n {
            let q = &x[i * row + base..][..kd];
            // s = scale·(q·kᵀ) + bias row.
            s.copy_from_slice(&b[i * n..][..n]);
            for (d, qd) in q.iter().enumerate() {
                let qs = qd * w.scale;
                for (sj, kj) in s.iter_mut().zip(&kt[d * n..][..n]) {
                    *sj += qs * kj;
                }
            }
            softmax(s);
            let oi = &mut o[(i * heads + h) * kd..][..kd];
            oi.fill(0.0);
            for (j, sj) in s.iter().enumerate() {
                let v = &x[j * row + base + 2 * kd..][..kd];
                for (a, vd) in oi.iter_mut().zip(v) {
                    *a += sj * vd;
                }
            }
        }
    }
}

/// Softmax of `s` in place (its maximum subtracted first).
#[inline(always)]
fn softmax(s: &mut [f32]) {
    let m = s.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = super::fast_exp(*v - m);
        sum += *v;
    }
    let inv = 1.0 / sum;
    s.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same attention in f64, written the textbook way.
    fn reference(w: Windows, qkv: &[f32], bias: &[f32]) -> Vec<f64> {
        let (n, kd, heads) = (w.tokens, w.key_dim, w.heads);
        let row = heads * 3 * kd;
        let mut out = vec![0f64; w.count * n * heads * kd];
        for c in 0..w.count {
            let x = &qkv[c * n * row..];
            for h in 0..heads {
                for i in 0..n {
                    let mut s: Vec<f64> = (0..n)
                        .map(|j| {
                            let dot: f64 = (0..kd)
                                .map(|d| x[i * row + h * 3 * kd + d] as f64 * x[j * row + h * 3 * kd + kd + d] as f64)
                                .sum();
                            dot * w.scale as f64 + bias[(h * n + i) * n + j] as f64
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    s.iter_mut().for_each(|v| *v = (*v - m).exp());
                    let sum: f64 = s.iter().sum();
                    for d in 0..kd {
                        out[((c * n + i) * heads + h) * kd + d] = (0..n)
                            .map(|j| s[j] / sum * x[j * row + h * 3 * kd + 2 * kd + d] as f64)
                            .sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn windows_match_textbook_attention() {
        let mut seed = 1u64;
        let mut rand = |len: usize, amp: f32| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5) * amp
                })
                .collect()
        };
        for (count, tokens, heads, key_dim) in [(3, 49, 4, 32), (2, 196, 5, 32), (5, 7, 2, 5)] {
            let w = Windows {
                count,
                tokens,
                heads,
                key_dim,
                scale: 1.0 / (key_dim as f32).sqrt(),
            };
            let qkv = rand(count * tokens * heads * 3 * key_dim, 4.0);
            let bias = rand(heads * tokens * tokens, 2.0);
            let mut out = vec![f32::NAN; count * tokens * heads * key_dim];
            window_attention(w, &qkv, &bias, &mut out);
            let want = reference(w, &qkv, &bias);
            let worst = out
                .iter()
                .zip(&want)
                .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
            assert!(worst < 2e-5, "{w:?}: off by {worst}");
        }
    }
}
