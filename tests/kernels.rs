//! The CPU conv kernels against candle's reference ops on random shapes:
//! odd sizes, strides, asymmetric padding, 1×1/2×2/3×3/5×5, dense and
//! depthwise, every fused activation.

use candle_core::{Device, Tensor};
use modeldock::kernels::layer::FastConv;
use modeldock::kernels::tiled::Isa;
use modeldock::kernels::{Act, Padding};
use proptest::prelude::*;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        Just(Act::None),
        Just(Act::Relu),
        Just(Act::Leaky(0.1)),
        Just(Act::Silu),
        Just(Act::Gelu)
    ]
}

/// Largest absolute difference (infinite when the shapes differ).
fn abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .unwrap_or(f32::INFINITY)
}

fn check(x: &Tensor, conv: &FastConv) -> Result<(), TestCaseError> {
    let ours = conv.forward(x).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let reference = conv.reference(x).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(ours.dims(), reference.dims());
    let d = abs_diff(&ours, &reference);
    // Sums of up to a few hundred products of values in ±0.5: candle and the
    // kernels add in different orders.
    prop_assert!(d <= 2e-4, "max abs diff {}", d);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    #[test]
    fn dense_conv_matches_candle(
        n in 1usize..3, cin in 1usize..9, cout in 1usize..12, h in 1usize..20, w in 1usize..20,
        k in prop::sample::select(vec![1usize, 2, 3, 5]), stride in 1usize..4,
        pt in 0usize..3, pb in 0usize..3, pl in 0usize..3, pr in 0usize..3,
        bias in any::<bool>(), a in act(), seed in any::<u64>(),
    ) {
        prop_assume!(h + pt + pb >= k && w + pl + pr >= k);
        let x = rand(&[n, cin, h, w], seed);
        let wgt = rand(&[cout, cin, k, k], seed ^ 1);
        let b = bias.then(|| rand(&[cout], seed ^ 2));
        let pad = Padding { top: pt, bottom: pb, left: pl, right: pr };
        let conv = FastConv::new(wgt, b, stride, pad, 1, a).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&x, &conv)?;
        let conv = conv.with_tiled_isa(Isa::Avx2);
        check(&x, &conv)?;
        check(&x, &conv.without_tiled())?;
    }

    /// Sizes that cross the tiled kernel's tile edges: several 8-channel
    /// panels (and a partial one), rows wider than a 48-position tile, and
    /// outputs of a few tiles split across threads by panel.
    #[test]
    fn dense_conv_over_many_tiles_matches_candle(
        cin in 1usize..40, cout in 1usize..40, h in 1usize..60, w in 1usize..60,
        k in prop::sample::select(vec![1usize, 3]), stride in 1usize..3, pad in 0usize..2,
        a in act(), seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let x = rand(&[1, cin, h, w], seed);
        let wgt = rand(&[cout, cin, k, k], seed ^ 5);
        let b = Some(rand(&[cout], seed ^ 6));
        let conv = FastConv::new(wgt, b, stride, Padding::uniform(pad), 1, a)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&x, &conv)?;
        check(&x, &conv.with_tiled_isa(Isa::Avx2))?;
    }

    #[test]
    fn depthwise_conv_matches_candle(
        c in 1usize..17, h in 1usize..24, w in 1usize..24,
        k in prop::sample::select(vec![1usize, 3, 5]), stride in 1usize..3,
        pt in 0usize..3, pb in 0usize..3, pl in 0usize..3, pr in 0usize..3,
        bias in any::<bool>(), a in act(), seed in any::<u64>(),
    ) {
        prop_assume!(h + pt + pb >= k && w + pl + pr >= k);
        let x = rand(&[1, c, h, w], seed);
        let wgt = rand(&[c, 1, k, k], seed ^ 3);
        let b = bias.then(|| rand(&[c], seed ^ 4));
        let pad = Padding { top: pt, bottom: pb, left: pl, right: pr };
        let conv = FastConv::new(wgt, b, stride, pad, c, a).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&x, &conv)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// A conv over channel parts plus a residual equals candle's conv of the
    /// concatenation plus the residual, on the tiled and the fallback path.
    #[test]
    fn fused_concat_and_residual_match_candle(
        split in prop::collection::vec(1usize..12, 1..5), cout in 1usize..20,
        h in 1usize..30, w in 1usize..30, k in prop::sample::select(vec![1usize, 3]),
        stride in 1usize..3, with_residual in any::<bool>(), seed in any::<u64>(),
    ) {
        let cin: usize = split.iter().sum();
        let parts: Vec<Tensor> = split.iter().enumerate()
            .map(|(i, &c)| rand(&[1, c, h, w], seed ^ (i as u64 + 10)))
            .collect();
        let wgt = rand(&[cout, cin, k, k], seed ^ 7);
        let conv = FastConv::new(wgt, Some(rand(&[cout], seed ^ 8)), stride, Padding::uniform(k / 2), 1, Act::Silu)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let refs: Vec<&Tensor> = parts.iter().collect();
        let whole = Tensor::cat(&refs, 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let plain = conv.reference(&whole).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let residual = rand(plain.dims(), seed ^ 9);
        let want = if with_residual { (&plain + &residual).map_err(|e| TestCaseError::fail(e.to_string()))? } else { plain };
        let res = with_residual.then_some(&residual);
        let conv_gemm = FastConv::new(rand(&[cout, cin, k, k], seed ^ 7), Some(rand(&[cout], seed ^ 8)), stride,
            Padding::uniform(k / 2), 1, Act::Silu).map_err(|e| TestCaseError::fail(e.to_string()))?.without_tiled();
        let conv_avx2 = FastConv::new(rand(&[cout, cin, k, k], seed ^ 7), Some(rand(&[cout], seed ^ 8)), stride,
            Padding::uniform(k / 2), 1, Act::Silu).map_err(|e| TestCaseError::fail(e.to_string()))?.with_tiled_isa(Isa::Avx2);
        for (path, c) in [("tiled", &conv), ("tiled avx2", &conv_avx2), ("gemm", &conv_gemm)] {
            let got = c.forward_fused(&refs, res).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got.dims(), want.dims());
            let d = abs_diff(&got, &want);
            prop_assert!(d <= 2e-4, "{}: max abs diff {}", path, d);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// `act(conv(x) + bias + pre)` equals candle's conv plus `pre`, then the
    /// activation: in the tiled kernel's output pass (1×1 and padded-same
    /// 3×3), through the fallback where it cannot (valid 3×3, stride 2), on
    /// both ISAs and the GEMM path.
    #[test]
    fn pre_activation_addend_matches_candle(
        cin in 1usize..20, cout in 1usize..20, h in 1usize..30, w in 1usize..70,
        shape in prop::sample::select(vec![(1usize, 0usize, 1usize), (3, 1, 1), (3, 0, 1), (3, 1, 2)]),
        a in act(), seed in any::<u64>(),
    ) {
        let (k, pad, stride) = shape;
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let x = rand(&[1, cin, h, w], seed);
        let make = || FastConv::new(rand(&[cout, cin, k, k], seed ^ 7), Some(rand(&[cout], seed ^ 8)), stride,
            Padding::uniform(pad), 1, a).map_err(|e| TestCaseError::fail(e.to_string()));
        let out = make()?.reference(&x).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pre = rand(out.dims(), seed ^ 9);
        let want = make()?.reference_pre(&x, &pre).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (path, conv) in [("tiled", make()?), ("tiled avx2", make()?.with_tiled_isa(Isa::Avx2)),
                             ("gemm", make()?.without_tiled())] {
            let got = conv.forward_pre(&x, &pre).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got.dims(), want.dims());
            let d = abs_diff(&got, &want);
            prop_assert!(d <= 2e-4, "{}: max abs diff {}", path, d);
        }
    }
}

/// Largest difference between the kernels and candle's reference.
fn max_diff(conv: &FastConv, x: &Tensor) -> f32 {
    let a = conv.forward(x).unwrap_or_else(|e| panic!("{e}"));
    let b = conv.reference(x).unwrap_or_else(|e| panic!("{e}"));
    abs_diff(&a, &b)
}

/// Inputs that do not fit the layer get a one-line error naming the problem,
/// on every path, and the layer keeps working afterwards.
#[test]
fn mismatched_fused_inputs_are_refused_clearly() {
    let make = || FastConv::new(rand(&[4, 6, 3, 3], 1), None, 1, Padding::uniform(1), 1, Act::None);
    let convs = [
        make().unwrap_or_else(|e| panic!("{e}")),
        make().unwrap_or_else(|e| panic!("{e}")).with_tiled_isa(Isa::Avx2),
        make().unwrap_or_else(|e| panic!("{e}")).without_tiled(),
    ];
    let (a, b) = (rand(&[1, 2, 8, 8], 2), rand(&[1, 4, 8, 8], 3));
    for conv in &convs {
        let err = |r: modeldock::error::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let wrong_size = rand(&[1, 4, 7, 8], 4);
        let e = err(conv.forward_fused(&[&a, &wrong_size], None));
        assert!(!e.is_empty() && !e.contains('\n'), "parts of different sizes: {e:?}");
        let e = err(conv.forward_fused(&[&a, &a], None));
        assert!(e.contains("channels") || e.contains("shape"), "4 channels for 6: {e:?}");
        let e = err(conv.forward_fused(&[&a, &b], Some(&rand(&[1, 3, 8, 8], 5))));
        assert!(!e.is_empty() && !e.contains('\n'), "residual of the wrong shape: {e:?}");
        let ok = conv.forward_fused(&[&a, &b], Some(&rand(&[1, 4, 8, 8], 6)));
        assert_eq!(ok.map(|t| t.dims().to_vec()).ok(), Some(vec![1, 4, 8, 8]));
    }
}

#[test]
fn realistic_layer_sizes_match() {
    // A YOLOv8n backbone conv and a face-detector separable pair.
    let x = rand(&[1, 32, 80, 80], 7);
    let conv = FastConv::new(
        rand(&[64, 32, 3, 3], 8),
        Some(rand(&[64], 9)),
        2,
        Padding::uniform(1),
        1,
        Act::Silu,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = max_diff(&conv, &x);
    assert!(d < 1e-4, "{d}");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(conv.is_tiled(), std::arch::is_x86_feature_detected!("avx512f"));
    let conv = conv.with_tiled_isa(Isa::Avx2);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert_eq!(conv.tiled_isa(), Some(Isa::Avx2));
    }
    let d = max_diff(&conv, &x);
    assert!(d < 1e-4, "avx2: {d}");
    let d = max_diff(&conv.without_tiled(), &x);
    assert!(d < 1e-4, "{d}");
    let dw = FastConv::new(rand(&[32, 1, 3, 3], 10), None, 1, Padding::uniform(1), 32, Act::None)
        .unwrap_or_else(|e| panic!("{e}"));
    let d = max_diff(&dw, &x);
    assert!(d < 1e-5, "{d}");
    assert!(
        FastConv::new(rand(&[8, 2, 3, 3], 1), None, 1, Padding::default(), 4, Act::None).is_err(),
        "grouped non-depthwise is refused"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    /// The conv with its 2×2 stride-2 pool fused gives the bits of the conv
    /// then the pool (the same kernel computes both), on odd and even output
    /// sizes, rows wider than a tile, several panels, both ISAs, and convs
    /// that cannot fuse (stride 2) through the fallback.
    #[test]
    fn conv_with_fused_pool_equals_conv_then_pool(
        cin in 1usize..20, cout in 1usize..24, h in 1usize..40, w in 1usize..110,
        k in prop::sample::select(vec![1usize, 3]), pad in 0usize..2, stride in 1usize..3,
        a in act(), seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let x = rand(&[1, cin, h, w], seed);
        let wgt = rand(&[cout, cin, k, k], seed ^ 7);
        let b = Some(rand(&[cout], seed ^ 8));
        let make = || {
            FastConv::new(wgt.clone(), b.clone(), stride, Padding::uniform(pad), 1, a)
                .map_err(|e| TestCaseError::fail(e.to_string()))
        };
        for conv in [make()?.with_tiled_isa(Isa::Avx2), make()?] {
            let fused = conv.forward_pool2(&x).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let apart = conv
                .forward(&x)
                .and_then(|y| modeldock::kernels::pool::max_pool2_same(&y, 2))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(fused.dims(), apart.dims());
            let (f, p) = (
                fused.flatten_all().and_then(|t| t.to_vec1::<f32>()),
                apart.flatten_all().and_then(|t| t.to_vec1::<f32>()),
            );
            prop_assert_eq!(f.ok(), p.ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// The separable blocks' depthwise (3×3, stride 1, padding 1), which reads
    /// its input in place with the borders masked: widths on both sides of
    /// the 16-lane blocks, one-row and one-column planes, every activation.
    #[test]
    fn same_padded_3x3_depthwise_matches_candle(
        c in 1usize..20, h in 1usize..40, w in 1usize..70,
        bias in any::<bool>(), a in act(), seed in any::<u64>(),
    ) {
        let x = rand(&[1, c, h, w], seed);
        let wgt = rand(&[c, 1, 3, 3], seed ^ 9);
        let b = bias.then(|| rand(&[c], seed ^ 10));
        let conv = FastConv::new(wgt, b, 1, Padding::uniform(1), c, a)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&x, &conv)?;
    }
}
