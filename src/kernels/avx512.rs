//! The AVX-512 microkernel of the tiled conv: 8 output channels × 48 wide
//! output positions held in 24 zmm accumulators. Per tap it loads three
//! vectors of input (one shifted run, see [`super::planes`]), broadcasts the
//! eight packed weights and issues 24 FMAs; bias and activation are applied
//! in registers before the tile is stored.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Act;
#[cfg(target_arch = "x86_64")]
use super::{EXP_LN2_HI, EXP_LN2_LO, EXP_POLY};

/// Output channels per tile (rows of a packed weight panel).
pub const MR: usize = 8;
/// Wide output positions per tile.
pub const NR: usize = 48;

/// True when this CPU can run the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dest[r][j] = act(bias[r] + Σ_t panel[t·MR + r] · taps[t][start + j]) (+ residual[r][j])`
/// for r < `dest.rows` and j < `dest.n`, where tap t reads only the lanes set in `masks[classes[t]]`
/// (three 16-lane masks; a masked lane counts as zero and is never read).
///
/// # Safety
/// The CPU supports AVX-512F ([`available`]); `panel` holds `taps.len()·MR`
/// floats; `classes` has one entry per tap, each indexing `masks`;
/// `taps[t].wrapping_add(start + j)` is readable for every lane j its mask sets;
/// `dest` rows are writable (and `residual` rows readable) for `dest.n` lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    panel: *const f32,
    taps: &[*const f32],
    classes: &[u8],
    masks: &[[__mmask16; 3]],
    start: usize,
    bias: &[f32; MR],
    act: Act,
    dest: Dest,
) {
    let mut acc = [[_mm512_setzero_ps(); 3]; MR];
    // Pointer steps use wrapping_add and loads go through intrinsics: no
    // per-step precondition checks in builds with debug assertions, which
    // would otherwise keep the accumulators in memory.
    // One loop with masked loads for full and partial tiles and image
    // borders alike (a second loop made the compiler keep the accumulators
    // in memory).
    let mut w = panel;
    for (&tap, &class) in taps.iter().zip(classes) {
        let s = tap.wrapping_add(start);
        let m = masks.get(class as usize).copied().unwrap_or_default();
        let b = [
            _mm512_maskz_loadu_ps(m[0], s),
            _mm512_maskz_loadu_ps(m[1], s.wrapping_add(16)),
            _mm512_maskz_loadu_ps(m[2], s.wrapping_add(32)),
        ];
        // The next tile's run of this tap: a conv reads its taps from up to
        // hundreds of planes at once, more streams than the hardware
        // prefetcher follows (1×1 convs with large K gain 5–8%).
        _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(NR) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(NR + 16) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(NR + 32) as *const i8);
        step(w, &b, &mut acc);
        w = w.wrapping_add(MR);
    }
    // Store first (a loop the compiler unrolls, so the accumulators stay in
    // registers), then bias + activation (+ residual) into the destination.
    let mut tmp = [0f32; MR * NR];
    let o = tmp.as_mut_ptr();
    for (r, row) in acc.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            _mm512_storeu_ps(o.wrapping_add(r * NR + c * 16), *v);
        }
    }
    let lanes = |from: usize| -> __mmask16 { ((1u32 << dest.n.saturating_sub(from).min(16)) - 1) as __mmask16 };
    let m = [lanes(0), lanes(16), lanes(32)];
    for (r, &b) in bias.iter().enumerate().take(dest.rows) {
        let bv = _mm512_set1_ps(b);
        for (c, &mc) in m.iter().enumerate() {
            let at = r * dest.stride + c * 16;
            let mut x = _mm512_add_ps(_mm512_loadu_ps(o.wrapping_add(r * NR + c * 16)), bv);
            if !dest.pre.is_null() {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mc, dest.pre.wrapping_add(at)));
            }
            let mut v = activate(x, act);
            if !dest.residual.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mc, dest.residual.wrapping_add(at)));
            }
            _mm512_mask_storeu_ps(dest.out.wrapping_add(at), mc, v);
        }
    }
}

/// Where a tile's results go: rows `stride` apart, the first `rows` rows
/// and `n` lanes of each; `pre` and `residual` (null for none) have the same
/// layout: `pre` is added before the activation (with the bias), `residual`
/// after it.
#[derive(Clone, Copy)]
pub struct Dest {
    pub out: *mut f32,
    pub stride: usize,
    pub rows: usize,
    pub n: usize,
    pub pre: *const f32,
    pub residual: *const f32,
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn step(w: *const f32, b: &[__m512; 3], acc: &mut [[__m512; 3]; MR]) {
    for (r, row) in acc.iter_mut().enumerate() {
        let a = _mm512_broadcastss_ps(_mm_load_ss(w.wrapping_add(r)));
        row[0] = _mm512_fmadd_ps(a, b[0], row[0]);
        row[1] = _mm512_fmadd_ps(a, b[1], row[1]);
        row[2] = _mm512_fmadd_ps(a, b[2], row[2]);
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn activate(v: __m512, act: Act) -> __m512 {
    match act {
        Act::None => v,
        Act::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
        Act::Leaky(a) => {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
            _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(a))
        }
        Act::Relu6 => _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0)),
        Act::Silu => silu(v),
        Act::Gelu => gelu(v),
    }
}

/// [`Act::Gelu`] on 16 lanes: erf by Abramowitz & Stegun 7.1.26 as
/// [`super::erf`], with [`exp`] and an exact division.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn gelu(v: __m512) -> __m512 {
    use super::{ERF_A, ERF_P};
    let one = _mm512_set1_ps(1.0);
    let z = _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let a = _mm512_abs_ps(z);
    let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), a, one));
    let mut p = _mm512_set1_ps(ERF_A[4]);
    for c in ERF_A[..4].iter().rev() {
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(*c));
    }
    let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
    let erf_abs = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), e, one);
    let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
    let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
    _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5)), _mm512_add_ps(one, erf))
}

/// [`Act::Gelu`] over `x` in place, 16 lanes per step.
///
/// # Safety
/// The CPU supports AVX-512F ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn gelu_row(x: &mut [f32]) {
    let n = x.len();
    let mut i = 0;
    while i < n {
        let m = ((1u32 << (n - i).min(16)) - 1) as __mmask16;
        // SAFETY: lanes i..min(i + 16, n) of `x` (mask m).
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
            _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), m, gelu(v));
        }
        i += 16;
    }
}

/// Degree-5 minimax polynomial of e^r on [−ln2/2, ln2/2] in the form
/// 1 + r + r²·(c₀ + c₁r + c₂r² + c₃r³): 1.1e-7 relative (1.9e-7 evaluated
/// in f32), enough for an activation and two multiply-adds cheaper than
/// [`EXP_POLY`]'s degree 7.
pub(crate) const SILU_EXP_POLY: [f32; 4] = [0.499_992_3, 0.166_671_14, 0.041_890_11, 0.008_312_53];

/// `v / (1 + e^−v)` with a short exp: the argument negated inside the
/// range reduction, one ln 2 constant (its rounding costs ≤ 2.4e-7 relative
/// at |v| = 88), a degree-5 polynomial, and a 14-bit reciprocal with one
/// Newton step (about 1 ulp) for the division. Below v = −88, e^−v would
/// overflow: the argument is clamped there (the result is then ~1e-36, not
/// 0); above v = 88, `scalef` takes e^−v to 0 and the result is v.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn silu(v: __m512) -> __m512 {
    let x = _mm512_max_ps(v, _mm512_set1_ps(-88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(-std::f32::consts::LOG2_E),
    ));
    // r = −x − n·ln 2
    let r = _mm512_fnmsub_ps(n, _mm512_set1_ps(std::f32::consts::LN_2), x);
    let [c0, c1, c2, c3] = SILU_EXP_POLY;
    let p = _mm512_fmadd_ps(_mm512_set1_ps(c3), r, _mm512_set1_ps(c2));
    let p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c1));
    let p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c0));
    let one = _mm512_set1_ps(1.0);
    let e = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, one));
    let d = _mm512_add_ps(one, _mm512_scalef_ps(e, n));
    let q = _mm512_rcp14_ps(d);
    let q = _mm512_mul_ps(q, _mm512_fnmadd_ps(d, q, _mm512_set1_ps(2.0)));
    _mm512_mul_ps(v, q)
}

/// `out[i] = 1 / (1 + fast_exp(−x[i]))` over `min(x.len(), out.len())`
/// values, 16 per step (the same exp as [`super::fast_exp`], an exact division).
///
/// # Safety
/// The CPU supports AVX-512F ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn sigmoid_row(x: &[f32], out: &mut [f32]) {
    let n = x.len().min(out.len());
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < n {
        let m = ((1u32 << (n - i).min(16)) - 1) as __mmask16;
        // SAFETY: lanes i..min(i + 16, n) of both slices (mask m).
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), v));
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), m, _mm512_div_ps(one, _mm512_add_ps(one, e)));
        }
        i += 16;
    }
}

/// The box distribution's expectation per anchor, 16 anchors per step:
/// `out[j] = Σ_b e_b·dfl[b] / Σ_b e_b`, `e_b = fast_exp(bins[b·n + j] − max_b bins[b·n + j])`,
/// over `out.len()` anchors (= n), bins in order, as the scalar loop sums them.
///
/// # Safety
/// The CPU supports AVX-512F; `bins` holds `dfl.len()·out.len()` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn dfl_expectation(bins: &[f32], dfl: &[f32], out: &mut [f32]) {
    let n = out.len();
    debug_assert!(bins.len() >= dfl.len() * n);
    let mut j = 0;
    while j < n {
        let m = ((1u32 << (n - j).min(16)) - 1) as __mmask16;
        // SAFETY: lanes j..min(j + 16, n) of each bin's row (b·n + j < dfl.len()·n) and of `out`.
        unsafe {
            let at = |b: usize| _mm512_maskz_loadu_ps(m, bins.as_ptr().add(b * n + j));
            let mut hi = _mm512_set1_ps(f32::NEG_INFINITY);
            for b in 0..dfl.len() {
                hi = _mm512_max_ps(hi, at(b));
            }
            let (mut num, mut den) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for (b, &wt) in dfl.iter().enumerate() {
                let e = exp(_mm512_sub_ps(at(b), hi));
                den = _mm512_add_ps(den, e);
                num = _mm512_add_ps(num, _mm512_mul_ps(e, _mm512_set1_ps(wt)));
            }
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), m, _mm512_div_ps(num, den));
        }
        j += 16;
    }
}

/// The vector form of [`super::fast_exp`] (same reduction and polynomial;
/// 2^n applied with `scalef`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let e = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    _mm512_scalef_ps(e, n)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn vector_gelu_matches_the_scalar_and_f64() {
        if !available() {
            return;
        }
        let xs: Vec<f32> = (0..16 * 400).map(|i| -12.0 + i as f32 * 0.003_77).collect();
        let mut v = xs.clone();
        // SAFETY: AVX-512F checked above.
        unsafe { gelu_row(&mut v) };
        for (x, g) in xs.iter().zip(&v) {
            let s = Act::Gelu.apply(*x);
            assert!((g - s).abs() <= 2e-7 * (1.0 + x.abs()), "x {x}: vector {g}, scalar {s}");
            let exact = 0.5 * *x as f64 * (1.0 + erf_f64(*x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (*g as f64 - exact).abs() <= 4e-7 * (1.0 + x.abs() as f64),
                "x {x}: {g} vs {exact}"
            );
        }
    }

    /// erf in f64 by its Taylor series (|x| < 3) or continued fraction, to ~1e-15.
    fn erf_f64(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            let (mut term, mut sum, mut k) = (a, a, 0.0);
            loop {
                k += 1.0;
                term *= -a * a / k;
                let add = term / (2.0 * k + 1.0);
                sum += add;
                if add.abs() < 1e-17 {
                    break;
                }
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc by Lentz's continued fraction.
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())
        };
        r.copysign(x)
    }

    #[test]
    fn vector_exp_matches_scalar() {
        if !available() {
            return;
        }
        let xs: Vec<f32> = (0..16 * 200).map(|i| -90.0 + i as f32 * 0.0561).collect();
        for chunk in xs.chunks(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F is available (checked above); 16 floats in and out.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (g, x) in got.iter().zip(chunk) {
                let want = x.clamp(-87.0, 88.0).exp();
                assert!(((g - want) / want).abs() < 1e-6, "exp({x}) = {g}, want {want}");
            }
        }
    }

    /// The head's vector sigmoid and box expectation give the scalar
    /// loops' values to a few ulp (the vector exp fuses its multiply-adds),
    /// on lengths around the 16-lane step.
    #[test]
    fn head_rows_match_the_scalar_loops() {
        if !available() {
            return;
        }
        let fast_exp = crate::kernels::fast_exp;
        for n in [1usize, 15, 16, 17, 100, 400] {
            let x: Vec<f32> = (0..16 * n).map(|i| ((i * 7919) % 2003) as f32 * 0.013 - 13.0).collect();
            let mut got = vec![f32::NAN; n];
            // SAFETY: AVX-512F is available (checked above).
            unsafe { sigmoid_row(&x[..n], &mut got) };
            for (g, v) in got.iter().zip(&x) {
                let want = 1.0 / (1.0 + fast_exp(-v));
                assert!(
                    (g - want).abs() <= 1e-6 * want,
                    "sigmoid({v}) = {g}, want {want}, n {n}"
                );
            }
            let dfl: Vec<f32> = (0..16).map(|b| b as f32).collect();
            // SAFETY: as above; x holds 16·n floats.
            unsafe { dfl_expectation(&x, &dfl, &mut got) };
            for (j, g) in got.iter().enumerate() {
                let m = (0..16).map(|b| x[b * n + j]).fold(f32::NEG_INFINITY, f32::max);
                let (mut num, mut den) = (0f32, 0f32);
                for (b, wt) in dfl.iter().enumerate() {
                    let e = fast_exp(x[b * n + j] - m);
                    den += e;
                    num += e * wt;
                }
                let want = num / den;
                assert!(
                    (g - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "anchor {j} = {g}, want {want}, n {n}"
                );
            }
        }
    }

    /// The tile epilogue's SiLU against f64 (see `check_silu_against_f64`).
    #[test]
    fn short_silu_matches_f64() {
        if !available() {
            return;
        }
        crate::kernels::check_silu_against_f64(16, |x, out| {
            // SAFETY: AVX-512F is available (checked above); 16 floats in and out.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), silu(_mm512_loadu_ps(x.as_ptr()))) }
        });
    }
}
