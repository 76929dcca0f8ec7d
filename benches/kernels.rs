//! `cargo bench`: modeldock's CPU conv kernels against candle's own conv2d on
//! the layer shapes the models use. Throughput is reported in FLOP/s
//! (criterion prints it as elements/s: 1 element = 1 FLOP).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use modeldock::kernels::layer::FastConv;
use modeldock::kernels::{Act, Padding};

fn rand(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

struct Case {
    name: &'static str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    hw: usize,
    depthwise: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "conv3x3 64->64 @160",
        cin: 64,
        cout: 64,
        k: 3,
        stride: 1,
        hw: 160,
        depthwise: false,
    },
    Case {
        name: "yolov8n conv3x3 80->80 @80",
        cin: 80,
        cout: 80,
        k: 3,
        stride: 1,
        hw: 80,
        depthwise: false,
    },
    Case {
        name: "yolov8n conv3x3 s2 16->32 @320",
        cin: 16,
        cout: 32,
        k: 3,
        stride: 2,
        hw: 320,
        depthwise: false,
    },
    Case {
        name: "conv1x1 192->64 @80",
        cin: 192,
        cout: 64,
        k: 1,
        stride: 1,
        hw: 80,
        depthwise: false,
    },
    Case {
        name: "face depthwise3x3 32 @104",
        cin: 32,
        cout: 32,
        k: 3,
        stride: 1,
        hw: 104,
        depthwise: true,
    },
    Case {
        name: "face depthwise3x3 256 @13",
        cin: 256,
        cout: 256,
        k: 3,
        stride: 1,
        hw: 13,
        depthwise: true,
    },
];

fn bench(c: &mut Criterion) {
    for case in CASES {
        let groups = if case.depthwise { case.cin } else { 1 };
        let w = rand(&[case.cout, case.cin / groups, case.k, case.k]);
        let conv = FastConv::new(
            w,
            Some(rand(&[case.cout])),
            case.stride,
            Padding::uniform(case.k / 2),
            groups,
            Act::Silu,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let x = rand(&[1, case.cin, case.hw, case.hw]);
        let out = case.hw / case.stride;
        let flops = 2 * case.cout * (case.cin / groups) * case.k * case.k * out * out;
        let mut g = c.benchmark_group(case.name);
        g.throughput(Throughput::Elements(flops as u64));
        g.sample_size(20);
        g.bench_function("modeldock", |b| {
            b.iter(|| conv.forward(&x).unwrap_or_else(|e| panic!("{e}")))
        });
        g.bench_function("candle", |b| {
            b.iter(|| conv.reference(&x).unwrap_or_else(|e| panic!("{e}")))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
