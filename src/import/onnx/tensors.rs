//! ONNX `TensorProto`s (initializers, `Constant` values) → candle tensors:
//! floats become f32 (f16, bf16 and f64 converted), integers and booleans
//! i64. Every size is checked against the bytes really there before anything
//! is allocated, and external data must be a file inside the model's folder.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use candle_core::{Device, Tensor};

use super::proto::{data_type as dt, TensorProto, DATA_EXTERNAL};
use crate::error::{Error, Result};

/// The element count of `dims`, refusing negative sizes and overflow; the
/// product of the non-zero sizes must fit too (an empty tensor's strides
/// are computed from it).
pub fn element_count(dims: &[i64]) -> Option<usize> {
    let mut count = 1usize;
    let mut span = 1usize;
    for &d in dims {
        let d = usize::try_from(d).ok()?;
        count = count.checked_mul(d)?;
        span = span.checked_mul(d.max(1))?;
    }
    Some(count)
}

/// Bytes per element as stored, for the types an import reads.
fn width(data_type: i32) -> Option<usize> {
    match data_type {
        dt::FLOAT | dt::INT32 => Some(4),
        dt::INT64 | dt::DOUBLE => Some(8),
        dt::FLOAT16 | dt::BFLOAT16 => Some(2),
        dt::UINT8 | dt::INT8 | dt::BOOL => Some(1),
        _ => None,
    }
}

/// Whether the type is read as floats (else as integers).
pub fn is_float(data_type: i32) -> bool {
    matches!(data_type, dt::FLOAT | dt::FLOAT16 | dt::BFLOAT16 | dt::DOUBLE)
}

/// A readable name of a `TensorProto.DataType`.
pub fn type_name(data_type: i32) -> String {
    match data_type {
        dt::FLOAT => "float32".into(),
        dt::UINT8 => "uint8".into(),
        dt::INT8 => "int8".into(),
        dt::INT32 => "int32".into(),
        dt::INT64 => "int64".into(),
        dt::BOOL => "bool".into(),
        dt::FLOAT16 => "float16".into(),
        dt::DOUBLE => "float64".into(),
        dt::BFLOAT16 => "bfloat16".into(),
        other => format!("type {other}"),
    }
}

/// The tensor's stored bytes: its `raw_data`, or the range of an external
/// file it names (a plain relative path inside `dir`).
fn external_bytes(t: &TensorProto, dir: &Path, want: usize) -> Result<Vec<u8>> {
    let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.as_str());
    let what = |msg: String| Error::msg(format!("tensor '{}': {msg}", t.name));
    let loc = get("location").ok_or_else(|| what("external data without a location".into()))?;
    let rel = Path::new(loc);
    if loc.is_empty() || rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(what(format!(
            "external data '{loc}' must be a file inside the model's folder"
        )));
    }
    let path = dir.join(rel);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| what(format!("external data '{loc}': {e}")))?;
    if !meta.file_type().is_file() {
        return Err(what(format!("external data '{loc}' is not a regular file")));
    }
    let num = |k: &str| -> Result<u64> {
        match get(k) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| what(format!("external data {k} '{v}' is not a number"))),
        }
    };
    let offset = num("offset")?;
    let length = match get("length") {
        None => want as u64,
        Some(_) => num("length")?,
    };
    if length != want as u64 {
        return Err(what(format!(
            "external data length {length} does not match its shape ({want} bytes)"
        )));
    }
    if offset.checked_add(length).is_none_or(|end| end > meta.len()) {
        return Err(what(format!(
            "external data '{loc}' has {} bytes, the tensor needs {length} from offset {offset}",
            meta.len()
        )));
    }
    let mut f = std::fs::File::open(&path).map_err(|e| what(format!("external data '{loc}': {e}")))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; want];
    f.read_exact(&mut buf)
        .map_err(|e| what(format!("external data '{loc}': {e}")))?;
    Ok(buf)
}

/// A `TensorProto` as a candle tensor (f32 or i64) on the CPU.
pub fn to_tensor(t: &TensorProto, dir: &Path) -> Result<Tensor> {
    let what = |msg: String| Error::msg(format!("tensor '{}': {msg}", t.name));
    let count = element_count(&t.dims).ok_or_else(|| what(format!("shape {:?} is invalid or too large", t.dims)))?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let w = width(t.data_type).ok_or_else(|| what(format!("{} tensors are not supported", type_name(t.data_type))))?;
    let nbytes = count
        .checked_mul(w)
        .ok_or_else(|| what(format!("shape {:?} is too large", t.dims)))?;
    let raw: Option<Vec<u8>> = if t.data_location == DATA_EXTERNAL {
        Some(external_bytes(t, dir, nbytes)?)
    } else if !t.raw_data.is_empty() || count == 0 {
        if t.raw_data.len() != nbytes {
            return Err(what(format!(
                "{} bytes of data for shape {:?} ({nbytes} expected)",
                t.raw_data.len(),
                t.dims
            )));
        }
        None
    } else {
        None
    };
    let bytes: Option<&[u8]> = match &raw {
        Some(b) => Some(b),
        None if !t.raw_data.is_empty() || count == 0 => Some(&t.raw_data),
        None => None,
    };
    let dev = Device::Cpu;
    if let Some(b) = bytes {
        return Ok(match t.data_type {
            dt::FLOAT => Tensor::from_vec(
                le_chunks::<4>(b).map(f32::from_le_bytes).collect::<Vec<_>>(),
                shape,
                &dev,
            )?,
            dt::FLOAT16 => Tensor::from_vec(
                le_chunks::<2>(b)
                    .map(|c| half::f16::from_le_bytes(c).to_f32())
                    .collect::<Vec<_>>(),
                shape,
                &dev,
            )?,
            dt::BFLOAT16 => Tensor::from_vec(
                le_chunks::<2>(b)
                    .map(|c| half::bf16::from_le_bytes(c).to_f32())
                    .collect::<Vec<_>>(),
                shape,
                &dev,
            )?,
            dt::DOUBLE => Tensor::from_vec(
                le_chunks::<8>(b)
                    .map(|c| f64::from_le_bytes(c) as f32)
                    .collect::<Vec<_>>(),
                shape,
                &dev,
            )?,
            dt::INT64 => Tensor::from_vec(
                le_chunks::<8>(b).map(i64::from_le_bytes).collect::<Vec<_>>(),
                shape,
                &dev,
            )?,
            dt::INT32 => Tensor::from_vec(
                le_chunks::<4>(b)
                    .map(|c| i32::from_le_bytes(c) as i64)
                    .collect::<Vec<_>>(),
                shape,
                &dev,
            )?,
            dt::INT8 => Tensor::from_vec(b.iter().map(|&v| v as i8 as i64).collect::<Vec<_>>(), shape, &dev)?,
            _ => Tensor::from_vec(b.iter().map(|&v| v as i64).collect::<Vec<_>>(), shape, &dev)?,
        });
    }
    // Typed fields: the count must match the shape.
    let check = |n: usize| -> Result<()> {
        if n == count {
            Ok(())
        } else {
            Err(what(format!("{n} values for shape {:?} ({count} expected)", t.dims)))
        }
    };
    Ok(match t.data_type {
        dt::FLOAT => {
            check(t.float_data.len())?;
            Tensor::from_vec(t.float_data.clone(), shape, &dev)?
        }
        dt::DOUBLE => {
            check(t.double_data.len())?;
            Tensor::from_vec(t.double_data.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape, &dev)?
        }
        dt::INT64 => {
            check(t.int64_data.len())?;
            Tensor::from_vec(t.int64_data.clone(), shape, &dev)?
        }
        dt::FLOAT16 | dt::BFLOAT16 => {
            // Stored as the 16-bit patterns in int32_data.
            check(t.int32_data.len())?;
            let bf = t.data_type == dt::BFLOAT16;
            let v: Vec<f32> = t
                .int32_data
                .iter()
                .map(|&b| {
                    let bits = b as u16;
                    if bf {
                        half::bf16::from_bits(bits).to_f32()
                    } else {
                        half::f16::from_bits(bits).to_f32()
                    }
                })
                .collect();
            Tensor::from_vec(v, shape, &dev)?
        }
        _ => {
            check(t.int32_data.len())?;
            Tensor::from_vec(t.int32_data.iter().map(|&v| v as i64).collect::<Vec<_>>(), shape, &dev)?
        }
    })
}

/// `b` cut into little-endian `N`-byte words.
fn le_chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}
