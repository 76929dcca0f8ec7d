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

/// The token form, the reference the planar form is tested against.
/// `qkv`: `[count, tokens, heads, 3·key_dim]` (each head's q, then k, then v,
/// as TinyViT's qkv projection lays them out); `bias`: `[heads, tokens,
/// tokens]`, added to the scaled scores; `out`: `[count, tokens,
/// heads·key_dim]` (heads side by side, ready for the output projection).
/// Panics if a slice is shorter than its shape says.
#[cfg(test)]
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

/// The shape of a channel-first call: windows tiled over an `h`×`w` plane,
/// the last row and column of windows running past the plane's edge.
#[derive(Debug, Clone, Copy)]
pub struct Planar {
    pub h: usize,
    pub w: usize,
    /// The window's side.
    pub window: usize,
    pub heads: usize,
    pub key_dim: usize,
    pub scale: f32,
}

/// Window attention on channel-first data, as TinyViT computes it on its
/// zero-padded grid: `qkv` is `[3·heads·key_dim, h, w]` (each head's q, k,
/// v channels), `pad` the qkv column of a padding token (`3·heads·key_dim`
/// values: the projection of a layer-normed zero), `bias` `[heads, n, n]`
/// (n = window²), and `out` `[heads·key_dim, h, w]`. Positions past the
/// plane's edge take part as keys and values and are not written.
/// Panics if a slice is shorter than its shape says.
pub fn window_attention_planar(p: Planar, qkv: &[f32], pad: &[f32], bias: &[f32], out: &mut [f32]) {
    let (ws, kd) = (p.window.max(1), p.key_dim);
    let n = ws * ws;
    let (c, hw) = (p.heads * kd, p.h * p.w);
    let c3 = 3 * c;
    assert!(
        qkv.len() >= c3 * hw && pad.len() >= c3,
        "window_attention_planar: qkv too short"
    );
    assert!(bias.len() >= p.heads * n * n, "window_attention_planar: bias too short");
    assert!(out.len() >= c * hw, "window_attention_planar: out too short");
    let (nh, nw) = (p.h.div_ceil(ws), p.w.div_ceil(ws));
    let isa = Isa::best();
    let w = Windows {
        count: 1,
        tokens: n,
        heads: p.heads,
        key_dim: kd,
        scale: p.scale,
    };
    // Each window's output, channel-major `[c, n]`.
    let results: Vec<Vec<f32>> = (0..nh * nw)
        .into_par_iter()
        .map_init(
            || {
                let blocked = if kd == KD { blocked_len(n) } else { 0 };
                (
                    vec![0f32; c3 * n],
                    vec![0f32; n * kd],
                    vec![0f32; n],
                    vec![0f32; blocked],
                )
            },
            |(xw, vt, s, blocked), win| {
                let (y0, x0) = ((win / nw) * ws, (win % nw) * ws);
                let cols = ws.min(p.w - x0);
                for ch in 0..c3 {
                    let dst = &mut xw[ch * n..][..n];
                    for r in 0..ws {
                        let run = &mut dst[r * ws..][..ws];
                        if y0 + r < p.h {
                            run[..cols].copy_from_slice(&qkv[ch * hw + (y0 + r) * p.w + x0..][..cols]);
                            run[cols..].fill(pad[ch]);
                        } else {
                            run.fill(pad[ch]);
                        }
                    }
                }
                let mut o = vec![0f32; c * n];
                match isa {
                    // SAFETY: `Isa::best` found the features these need.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { planar_avx512(w, xw, bias, &mut o, vt, s, blocked) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { planar_avx2(w, xw, bias, &mut o, vt, s, blocked) },
                    Isa::Plain => planar(w, xw, bias, &mut o, vt, s, blocked),
                }
                o
            },
        )
        .collect();
    out[..c * hw].par_chunks_mut(hw).enumerate().for_each(|(ch, plane)| {
        for (win, o) in results.iter().enumerate() {
            let (y0, x0) = ((win / nw) * ws, (win % nw) * ws);
            let cols = ws.min(p.w - x0);
            for r in 0..ws.min(p.h - y0) {
                plane[(y0 + r) * p.w + x0..][..cols].copy_from_slice(&o[ch * n + r * ws..][..cols]);
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn planar_avx512(
    w: Windows,
    xw: &[f32],
    bias: &[f32],
    o: &mut [f32],
    vt: &mut [f32],
    s: &mut [f32],
    blocked: &mut [f32],
) {
    planar(w, xw, bias, o, vt, s, blocked)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn planar_avx2(
    w: Windows,
    xw: &[f32],
    bias: &[f32],
    o: &mut [f32],
    vt: &mut [f32],
    s: &mut [f32],
    blocked: &mut [f32],
) {
    planar(w, xw, bias, o, vt, s, blocked)
}

/// One channel-major window: `xw` `[3·heads·kd, n]`, `o` `[heads·kd, n]`,
/// `vt` (n × kd) and `s` (n) scratch. Each head's k rows are kᵀ already.
/// A key width of [`KD`] goes to [`blocked`] (with its scratch).
#[inline(always)]
fn planar(w: Windows, xw: &[f32], bias: &[f32], o: &mut [f32], vt: &mut [f32], s: &mut [f32], scratch: &mut [f32]) {
    let (n, kd) = (w.tokens, w.key_dim);
    if kd == KD && scratch.len() >= blocked_len(n) {
        return blocked(w, xw, bias, o, scratch);
    }
    let mut oi = [0f32; 64];
    for h in 0..w.heads {
        let base = h * 3 * kd;
        let kt = &xw[(base + kd) * n..][..kd * n];
        for d in 0..kd {
            for (j, v) in xw[(base + 2 * kd + d) * n..][..n].iter().enumerate() {
                vt[j * kd + d] = *v;
            }
        }
        let b = &bias[h * n * n..][..n * n];
        for i in 0..n {
            s.copy_from_slice(&b[i * n..][..n]);
            for d in 0..kd {
                let qs = xw[(base + d) * n + i] * w.scale;
                for (sj, kj) in s.iter_mut().zip(&kt[d * n..][..n]) {
                    *sj += qs * kj;
                }
            }
            softmax(s);
            // Key widths past 64 go through in blocks of 64.
            for d0 in (0..kd).step_by(64) {
                let width = (kd - d0).min(64);
                let acc = &mut oi[..width];
                acc.fill(0.0);
                for (j, sj) in s.iter().enumerate() {
                    for (a, vd) in acc.iter_mut().zip(&vt[j * kd + d0..][..width]) {
                        *a += sj * vd;
                    }
                }
                for (d, a) in acc.iter().enumerate() {
                    o[(h * kd + d0 + d) * n + i] = *a;
                }
            }
        }
    }
}

/// The key width of the register-blocked path (every TinyViT's).
const KD: usize = 32;
/// Query rows per register block.
const ROWS: usize = 4;

/// Scratch floats [`blocked`] needs for `n` tokens: q (rows padded to
/// [`ROWS`]), kᵀ (columns padded to [`KD`]), v, and the score rows.
fn blocked_len(n: usize) -> usize {
    let (n4, np) = (n.next_multiple_of(ROWS), n.next_multiple_of(KD));
    n4 * KD + KD * np + n * KD + n4 * np
}

/// `out[r][t] = Σₖ a[r·sa + k] · b[k·sb + t]` for 4 rows and 32 columns:
/// 8 vector accumulators, one broadcast per row and two vector loads per k.
#[inline(always)]
fn mm4x32(a: &[f32], sa: usize, b: &[f32], sb: usize, k: usize) -> [[f32; KD]; ROWS] {
    let mut acc = [[0f32; KD]; ROWS];
    let rows = [&a[..k], &a[sa..][..k], &a[2 * sa..][..k], &a[3 * sa..][..k]];
    for kk in 0..k {
        let bb = &b[kk * sb..][..KD];
        for (acc_r, row) in acc.iter_mut().zip(rows) {
            let av = row[kk];
            for (x, y) in acc_r.iter_mut().zip(bb) {
                *x += av * y;
            }
        }
    }
    acc
}

/// [`planar`] for key width 32: scores and outputs as small matrix products
/// in 4 × 32 register blocks.
#[inline(always)]
fn blocked(w: Windows, xw: &[f32], bias: &[f32], o: &mut [f32], scratch: &mut [f32]) {
    let n = w.tokens;
    let (n4, np) = (n.next_multiple_of(ROWS), n.next_multiple_of(KD));
    let (q, rest) = scratch.split_at_mut(n4 * KD);
    let (kt, rest) = rest.split_at_mut(KD * np);
    let (v, rest) = rest.split_at_mut(n * KD);
    let sc = &mut rest[..n4 * np];
    for h in 0..w.heads {
        let base = h * 3 * KD;
        // q row-major and scaled, kᵀ padded with zero columns, v row-major.
        q.fill(0.0);
        kt.fill(0.0);
        for d in 0..KD {
            for (i, x) in xw[(base + d) * n..][..n].iter().enumerate() {
                q[i * KD + d] = x * w.scale;
            }
            kt[d * np..][..n].copy_from_slice(&xw[(base + KD + d) * n..][..n]);
            for (j, x) in xw[(base + 2 * KD + d) * n..][..n].iter().enumerate() {
                v[j * KD + d] = *x;
            }
        }
        for i0 in (0..n4).step_by(ROWS) {
            for j0 in (0..np).step_by(KD) {
                let t = mm4x32(&q[i0 * KD..], KD, &kt[j0..], np, KD);
                for (r, row) in t.iter().enumerate() {
                    sc[(i0 + r) * np + j0..][..KD].copy_from_slice(row);
                }
            }
        }
        let b = &bias[h * n * n..][..n * n];
        for (i, row) in sc.chunks_exact_mut(np).enumerate() {
            if i < n {
                for (x, bb) in row[..n].iter_mut().zip(&b[i * n..][..n]) {
                    *x += bb;
                }
                softmax(&mut row[..n]);
            }
            row[n.min(np)..].fill(0.0);
        }
        for i0 in (0..n4).step_by(ROWS) {
            let t = mm4x32(&sc[i0 * np..], np, v, KD, n);
            for (r, row) in t.iter().enumerate().take(n.saturating_sub(i0)) {
                for (d, x) in row.iter().enumerate() {
                    o[(h * KD + d) * n + i0 + r] = *x;
                }
            }
        }
    }
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

#[cfg(test)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn window_avx512(w: Windows, x: &[f32], bias: &[f32], o: &mut [f32], kt: &mut [f32], s: &mut [f32]) {
    window(w, x, bias, o, kt, s)
}

#[cfg(test)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn window_avx2(w: Windows, x: &[f32], bias: &[f32], o: &mut [f32], kt: &mut [f32], s: &mut [f32]) {
    window(w, x, bias, o, kt, s)
}

/// One window, every head: `x` its qkv rows, `o` its output rows, `kt`
/// (key_dim × tokens) and `s` (tokens) scratch.
#[cfg(test)]
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

/// Softmax of `s` in place (its maximum subtracted first). Maximum and sum
/// run in 16 lanes, the exps in a loop of their own, so each vectorises.
#[inline(always)]
fn softmax(s: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for c in s.chunks(16) {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(*v);
        }
    }
    let m = lanes.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for v in s.iter_mut() {
        *v = super::fast_exp(*v - m);
    }
    let mut sums = [0f32; 16];
    for c in s.chunks(16) {
        for (l, v) in sums.iter_mut().zip(c) {
            *l += v;
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
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

    /// The channel-first form against the token form on the same windows:
    /// the plane cut into windows by hand, padding tokens included.
    #[test]
    fn planar_windows_match_the_token_form() {
        let mut seed = 5u64;
        let mut rand = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5) * 3.0
                })
                .collect()
        };
        for (h, w, ws, heads, kd) in [
            (9, 11, 7, 2, 8),
            (14, 14, 7, 3, 32),
            (5, 5, 7, 1, 4),
            (20, 17, 14, 2, 32),
        ] {
            let c3 = 3 * heads * kd;
            let n = ws * ws;
            let qkv = rand(c3 * h * w);
            let pad = rand(c3);
            let bias = rand(heads * n * n);
            let scale = 0.3;
            let mut out = vec![f32::NAN; heads * kd * h * w];
            let p = Planar {
                h,
                w,
                window: ws,
                heads,
                key_dim: kd,
                scale,
            };
            window_attention_planar(p, &qkv, &pad, &bias, &mut out);
            let (nh, nw) = (h.div_ceil(ws), w.div_ceil(ws));
            // Token form: [windows, n, c3].
            let mut tokens = vec![0f32; nh * nw * n * c3];
            for win in 0..nh * nw {
                for t in 0..n {
                    let (y, x) = ((win / nw) * ws + t / ws, (win % nw) * ws + t % ws);
                    for ch in 0..c3 {
                        tokens[(win * n + t) * c3 + ch] = if y < h && x < w {
                            qkv[ch * h * w + y * w + x]
                        } else {
                            pad[ch]
                        };
                    }
                }
            }
            let wd = Windows {
                count: nh * nw,
                tokens: n,
                heads,
                key_dim: kd,
                scale,
            };
            let mut want = vec![0f32; nh * nw * n * heads * kd];
            window_attention(wd, &tokens, &bias, &mut want);
            for win in 0..nh * nw {
                for t in 0..n {
                    let (y, x) = ((win / nw) * ws + t / ws, (win % nw) * ws + t % ws);
                    if y >= h || x >= w {
                        continue;
                    }
                    for ch in 0..heads * kd {
                        let a = out[ch * h * w + y * w + x];
                        let b = want[(win * n + t) * heads * kd + ch];
                        assert!((a - b).abs() < 1e-5, "({h}x{w}) at {y},{x} channel {ch}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
