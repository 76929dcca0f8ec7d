//! Safetensors bytes → the header reader that predicts a model's size
//! (`header_of_bytes` for embedded weights, `read_header` for files, which
//! must agree), then candle's readers through modeldock's weights backend
//! (`SliceSafetensors` for embedded weights, `MmapedSafetensors` for files):
//! every tensor the header names is looked up and loaded.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Shape};
use candle_nn::var_builder::SimpleBackend;
use libfuzzer_sys::fuzz_target;
use modeldock::catalog::safetensors_header::{header_of_bytes, read_header};
use modeldock::catalog::weights_source::WeightsSource;
use modeldock::models::weights::CountingBackend;

fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("modeldock-fuzz-{}.safetensors", std::process::id())))
}

/// (name, shape) of the first tensors the header names, if it is JSON at all.
fn names(data: &[u8]) -> Vec<(String, Option<Vec<usize>>)> {
    let Some(len) = data.get(..8) else { return vec![] };
    let n = u64::from_le_bytes(len.try_into().unwrap());
    let Some(header) = usize::try_from(n)
        .ok()
        .and_then(|n| data.get(8..8usize.checked_add(n)?))
    else {
        return vec![];
    };
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(header) else {
        return vec![];
    };
    obj.iter()
        .filter(|(k, _)| *k != "__metadata__")
        .take(32)
        .map(|(k, v)| {
            let shape = v.get("shape").and_then(|s| s.as_array()).and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect()
            });
            (k.clone(), shape)
        })
        .collect()
}

fn exercise(source: &WeightsSource, total: u64, tensors: &[(String, Option<Vec<usize>>)]) {
    let Ok(backend) = CountingBackend::open(source, total, Arc::new(|_, _| {})) else {
        return;
    };
    for (name, shape) in tensors {
        let _ = backend.contains_tensor(name);
        let _ = backend.get_unchecked(name, DType::F32, &Device::Cpu);
        if let Some(shape) = shape {
            let s = Shape::from(shape.clone());
            let _ = backend.get(s, name, candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let from_bytes = header_of_bytes(data);
    let path = scratch();
    std::fs::write(path, data).expect("write scratch file");
    let from_file = read_header(path);
    match (&from_bytes, &from_file) {
        (Ok(a), Ok(b)) => assert_eq!((a.tensors, a.data_bytes), (b.tensors, b.data_bytes)),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("header_of_bytes and read_header disagree: {a:?} / {b:?}"),
    }
    // Every tensor problem is ours to find (and name): what the header check
    // accepts, candle's reader accepts too.
    if from_bytes.is_ok() {
        if let Err(e) = candle_core::safetensors::SliceSafetensors::new(data) {
            panic!("the header check accepts what candle refuses: {e}");
        }
    }
    let total = from_bytes.as_ref().map(|i| i.data_bytes).unwrap_or(0);
    let tensors = names(data);

    // Embedded weights want `&'static [u8]`: lend a leaked copy and take it
    // back once the backend is gone.
    let leaked: &'static mut [u8] = Box::leak(data.to_vec().into_boxed_slice());
    let ptr: *mut [u8] = leaked;
    exercise(
        &WeightsSource::Embedded {
            name: "fuzz".into(),
            bytes: unsafe { &*ptr },
        },
        total,
        &tensors,
    );
    // SAFETY: `ptr` came from `Box::leak` above and nothing borrowing it is alive.
    drop(unsafe { Box::from_raw(ptr) });

    exercise(&WeightsSource::File(path.clone()), total, &tensors);
});
