//! The AVX2 + FMA microkernel of the tiled conv, for CPUs without AVX-512:
//! the same 8 × 48 tile and packed panels as [`super::avx512`], computed as
//! six 4-row × 16-column blocks of 8 ymm accumulators (16 registers only).
//! Masks become per-lane vectors for `maskload`, which never touches a
//! masked-off lane.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx512::{Dest, MR, NR};
use super::Act;

/// Mask classes whose vector masks fit on the stack (a 3×3 conv has 9).
const STACK_CLASSES: usize = 25;

/// True when this CPU can run the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The same contract as [`super::avx512::tile`].
///
/// # Safety
/// The CPU supports AVX2 and FMA ([`available`]); otherwise as
/// [`super::avx512::tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    panel: *const f32,
    taps: &[*const f32],
    classes: &[u8],
    masks: &[[u16; 3]],
    start: usize,
    bias: &[f32; MR],
    act: Act,
    dest: Dest,
) {
    // Lane masks as vectors: class c, 8-lane group g at [c][g] (on the
    // stack for the usual few classes).
    let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let to_vectors = |m: &[u16; 3]| {
        let bits = m[0] as u64 | (m[1] as u64) << 16 | (m[2] as u64) << 32;
        let mut v = [_mm256_setzero_si256(); 6];
        for (g, slot) in v.iter_mut().enumerate() {
            let b = _mm256_set1_epi32(((bits >> (8 * g)) & 0xff) as i32);
            *slot = _mm256_cmpeq_epi32(_mm256_and_si256(b, lane_bits), lane_bits);
        }
        v
    };
    let mut on_stack = [[_mm256_setzero_si256(); 6]; STACK_CLASSES];
    let on_heap: Vec<[__m256i; 6]>;
    let vmasks: &[[__m256i; 6]] = if masks.len() <= STACK_CLASSES {
        for (slot, m) in on_stack.iter_mut().zip(masks) {
            *slot = to_vectors(m);
        }
        &on_stack[..masks.len()]
    } else {
        on_heap = masks.iter().map(to_vectors).collect();
        &on_heap
    };
    let mut tmp = [0f32; MR * NR];
    // Blocks of 4 rows × 16 columns: 8 accumulators, 2 inputs, 2 masks and
    // a broadcast stay in the 16 ymm registers. Blocks past the tile's
    // rows or lanes are skipped (their results are never stored).
    for half_r in 0..dest.rows.div_ceil(4).min(2) {
        for third_c in 0..dest.n.div_ceil(16).min(3) {
            let acc = block(panel, taps, classes, vmasks, start, half_r, third_c);
            let o = tmp.as_mut_ptr();
            for (r, row) in acc.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    _mm256_storeu_ps(o.wrapping_add((half_r * 4 + r) * NR + third_c * 16 + c * 8), *v);
                }
            }
        }
    }
    let n = dest.n;
    for (r, &b) in bias.iter().enumerate().take(dest.rows) {
        let bv = _mm256_set1_ps(b);
        for g in 0..NR / 8 {
            let lanes = n.saturating_sub(g * 8).min(8) as i32;
            if lanes == 0 {
                break;
            }
            let m = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            let at = r * dest.stride + g * 8;
            let mut x = _mm256_add_ps(_mm256_loadu_ps(tmp.as_ptr().wrapping_add(r * NR + g * 8)), bv);
            if !dest.pre.is_null() {
                x = _mm256_add_ps(x, _mm256_maskload_ps(dest.pre.wrapping_add(at), m));
            }
            let mut v = activate(x, act);
            if !dest.residual.is_null() {
                v = _mm256_add_ps(v, _mm256_maskload_ps(dest.residual.wrapping_add(at), m));
            }
            _mm256_maskstore_ps(dest.out.wrapping_add(at), m, v);
        }
    }
}

/// Rows 4·half_r.. and columns 16·third_c.. of the tile, over every tap.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block(
    panel: *const f32,
    taps: &[*const f32],
    classes: &[u8],
    vmasks: &[[__m256i; 6]],
    start: usize,
    half_r: usize,
    third_c: usize,
) -> [[__m256; 2]; 4] {
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    let mut w = panel.wrapping_add(half_r * 4);
    let zero = [_mm256_setzero_si256(); 6];
    let g = third_c * 2;
    for (&tap, &class) in taps.iter().zip(classes) {
        let s = tap.wrapping_add(start + third_c * 16);
        let m = vmasks.get(class as usize).unwrap_or(&zero);
        let b = [
            _mm256_maskload_ps(s, m[g]),
            _mm256_maskload_ps(s.wrapping_add(8), m[g + 1]),
        ];
        for (r, row) in acc.iter_mut().enumerate() {
            let a = _mm256_broadcastss_ps(_mm_load_ss(w.wrapping_add(r)));
            row[0] = _mm256_fmadd_ps(a, b[0], row[0]);
            row[1] = _mm256_fmadd_ps(a, b[1], row[1]);
        }
        w = w.wrapping_add(MR);
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn activate(v: __m256, act: Act) -> __m256 {
    match act {
        Act::None => v,
        Act::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
        Act::Leaky(a) => {
            let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps());
            _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(a)), neg)
        }
        Act::Relu6 => _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0)),
        Act::Silu => silu(v),
        Act::Gelu => gelu(v),
    }
}

/// [`Act::Gelu`] on 8 lanes, as the AVX-512 epilogue computes it (erf by
/// Abramowitz & Stegun 7.1.26, `super::fast_exp`'s exp, exact division).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gelu(v: __m256) -> __m256 {
    use super::{ERF_A, ERF_P, EXP_LN2_HI, EXP_LN2_LO, EXP_POLY};
    let one = _mm256_set1_ps(1.0);
    let sign_bit = _mm256_set1_ps(-0.0);
    let z = _mm256_mul_ps(v, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let a = _mm256_andnot_ps(sign_bit, z);
    let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), a, one));
    let mut p = _mm256_set1_ps(ERF_A[4]);
    for c in ERF_A[..4].iter().rev() {
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(*c));
    }
    // e^(−a²), a² ≥ 0 clamped to 87 (e^−87 ~ 1.6e-38: erf is 1 there).
    let x = _mm256_max_ps(
        _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)),
        _mm256_set1_ps(-87.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
    let mut q = _mm256_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(*c));
    }
    let e = _mm256_fmadd_ps(_mm256_mul_ps(q, r), r, _mm256_add_ps(r, one));
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
    let e = _mm256_mul_ps(e, _mm256_castsi256_ps(pow2));
    let erf_abs = _mm256_fnmadd_ps(_mm256_mul_ps(p, t), e, one);
    let erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, sign_bit));
    _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5)), _mm256_add_ps(one, erf))
}

/// `v / (1 + e^−v)` as the AVX-512 epilogue computes it (negation folded
/// into the range reduction, one ln 2 constant, the degree-5 polynomial,
/// a reciprocal estimate with one Newton step), with 2^n built in the
/// exponent bits: the argument is clamped to [−88, 87] so that n stays in
/// the normal range (the results at the clamps are ~1e-36 and v).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn silu(v: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-88.0)), _mm256_set1_ps(87.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(-std::f32::consts::LOG2_E),
    ));
    // r = −x − n·ln 2
    let r = _mm256_fnmsub_ps(n, _mm256_set1_ps(std::f32::consts::LN_2), x);
    let [c0, c1, c2, c3] = super::avx512::SILU_EXP_POLY;
    let p = _mm256_fmadd_ps(_mm256_set1_ps(c3), r, _mm256_set1_ps(c2));
    let p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c1));
    let p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c0));
    let one = _mm256_set1_ps(1.0);
    let e = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, one));
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
    let d = _mm256_add_ps(one, _mm256_mul_ps(e, _mm256_castsi256_ps(pow2)));
    let q = _mm256_rcp_ps(d);
    let q = _mm256_mul_ps(q, _mm256_fnmadd_ps(d, q, _mm256_set1_ps(2.0)));
    _mm256_mul_ps(v, q)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The epilogue's SiLU against f64 (see `check_silu_against_f64`), as
    /// the AVX-512 one is checked.
    #[test]
    fn short_silu_matches_f64() {
        if !available() {
            return;
        }
        crate::kernels::check_silu_against_f64(8, |x, out| {
            // SAFETY: AVX2 and FMA are available (checked above); 8 floats in and out.
            unsafe { store(out.as_mut_ptr(), x.as_ptr()) }
        });
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(out: *mut f32, x: *const f32) {
        // SAFETY: the caller passes 8 readable and 8 writable floats.
        unsafe { _mm256_storeu_ps(out, silu(_mm256_loadu_ps(x))) };
    }
}
