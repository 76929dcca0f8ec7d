//! How big a model's weights are, from the safetensors header alone: every
//! entry checked against the data section before anything is mapped.

use std::path::Path;

use crate::error::{Error, Result};

/// The parsed header of a safetensors file: tensor byte sizes only.
#[derive(Debug, Clone, Default)]
pub struct HeaderInfo {
    pub tensors: usize,
    pub data_bytes: u64,
    /// Where the data section starts in the file (8 + the header's length).
    pub data_start: u64,
    /// Every tensor: name, dtype, shape and byte range in the data section.
    pub entries: Vec<TensorEntry>,
    /// blake3 of the header and the data length, in hex: every tensor's
    /// name, dtype, shape and place, so two files with one fingerprint
    /// take the same memory (the key of measured sizes).
    pub fingerprint: String,
}

impl HeaderInfo {
    /// The float dtype most of the float tensor bytes are stored in, lower
    /// case (`f32`, `bf16`, `f16`, `f64`); `f32` for a header with no float
    /// tensors.
    pub fn stored_dtype(&self) -> String {
        let mut by: Vec<(&str, u64)> = Vec::new();
        // Floats only: a graph's topology (U8) and integer constants are
        // not what the model computes in.
        for e in self
            .entries
            .iter()
            .filter(|e| matches!(e.dtype.as_str(), "F64" | "F32" | "F16" | "BF16"))
        {
            match by.iter_mut().find(|(d, _)| *d == e.dtype) {
                Some((_, n)) => *n += e.end - e.start,
                None => by.push((&e.dtype, e.end - e.start)),
            }
        }
        by.iter()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d.to_lowercase())
            .unwrap_or_else(|| "f32".to_string())
    }
}

/// One tensor of a safetensors header, checked against the data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    /// The safetensors dtype name (`F32`, `BF16`, …).
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte offsets in the data section, end exclusive.
    pub start: u64,
    pub end: u64,
}

/// safetensors' own limit on the header (`MAX_HEADER_SIZE`).
const MAX_HEADER: u64 = 100_000_000;

/// Reads only the header of a safetensors file and sums the tensor sizes.
pub fn read_header(path: &Path) -> Result<HeaderInfo> {
    use std::io::Read;
    let name = path.display();
    let mut f = std::fs::File::open(path).map_err(|e| Error::msg(format!("{name}: {e}")))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| Error::msg(format!("{name}: not a safetensors file (shorter than 8 bytes)")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(Error::msg(format!(
            "{name}: not a safetensors file (header length {n} is above the {MAX_HEADER} byte limit)"
        )));
    }
    if n + 8 > file_len {
        return Err(Error::msg(format!(
            "{name}: not a safetensors file (header length {n} runs past the end of the {file_len} byte file)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| Error::msg(format!("{name}: {e}")))?;
    let mut info = parse_header(&header, file_len - 8 - n).map_err(|e| e.context(name))?;
    info.data_start = 8 + n;
    Ok(info)
}

/// Header info of an in-memory safetensors buffer.
pub fn header_of_bytes(bytes: &[u8]) -> Result<HeaderInfo> {
    if bytes.len() < 8 {
        return Err(Error::msg("not a safetensors buffer (shorter than 8 bytes)"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(Error::msg(format!(
            "not a safetensors buffer (header length {n} is above the {MAX_HEADER} byte limit)"
        )));
    }
    if n > bytes.len() as u64 - 8 {
        return Err(Error::msg(format!(
            "not a safetensors buffer (header length {n} runs past the end of the {} byte buffer)",
            bytes.len()
        )));
    }
    let mut info = parse_header(&bytes[8..8 + n as usize], bytes.len() as u64 - 8 - n)?;
    info.data_start = 8 + n;
    Ok(info)
}

/// Element sizes in bits of the safetensors dtypes candle can load (the
/// others are refused here, naming the tensor, rather than at load time).
const DTYPES: &[(&str, u64)] = &[
    ("F32", 32),
    ("F16", 16),
    ("BF16", 16),
    ("F64", 64),
    ("U8", 8),
    ("U16", 16),
    ("U32", 32),
    ("I16", 16),
    ("I32", 32),
    ("I64", 64),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("F4", 4),
];

/// Valid safetensors dtypes candle cannot load.
const UNLOADABLE_DTYPES: &[&str] = &["BOOL", "I8", "U64", "C64", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ"];

/// One tensor's header entry, checked.
struct Entry<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: Vec<u64>,
    start: u64,
    end: u64,
}

fn check_entry<'a>(name: &'a str, t: &'a serde_json::Value, data_len: u64) -> Result<Entry<'a>> {
    let t = t.as_object().ok_or_else(|| {
        Error::msg(format!(
            "tensor '{name}': expected an object with dtype, shape and data_offsets, got {}",
            short_json(t)
        ))
    })?;
    let dtype_v = t
        .get("dtype")
        .ok_or_else(|| Error::msg(format!("tensor '{name}' has no dtype")))?;
    let dtype = dtype_v.as_str().unwrap_or("");
    let bits = match DTYPES.iter().find(|(d, _)| *d == dtype) {
        Some((_, b)) => *b,
        None if UNLOADABLE_DTYPES.contains(&dtype) => {
            return Err(Error::msg(format!(
                "tensor '{name}' has dtype {dtype}, which modeldock cannot load (expected one of {})",
                dtype_list()
            )))
        }
        None => {
            return Err(Error::msg(format!(
                "tensor '{name}' has unknown dtype {} (expected one of {})",
                short_json(dtype_v),
                dtype_list()
            )))
        }
    };
    let shape_v = t
        .get("shape")
        .ok_or_else(|| Error::msg(format!("tensor '{name}' has no shape")))?;
    let shape: Vec<u64> = shape_v
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().filter(|&d| usize::try_from(d).is_ok()))
                .collect()
        })
        .ok_or_else(|| {
            Error::msg(format!(
                "tensor '{name}' shape {}: expected a list of non-negative integers",
                short_json(shape_v)
            ))
        })?;
    let offs_v = t
        .get("data_offsets")
        .ok_or_else(|| Error::msg(format!("tensor '{name}' has no data_offsets")))?;
    let (start, end) = match offs_v.as_array().map(|a| a.as_slice()) {
        Some([a, b]) => match (a.as_u64(), b.as_u64()) {
            (Some(a), Some(b)) if usize::try_from(a.max(b)).is_ok() => (a, b),
            _ => (u64::MAX, u64::MAX),
        },
        _ => (u64::MAX, u64::MAX),
    };
    if start == u64::MAX {
        return Err(Error::msg(format!(
            "tensor '{name}' data_offsets {}: expected [start, end], two byte offsets",
            short_json(offs_v)
        )));
    }
    if start > end {
        return Err(Error::msg(format!(
            "tensor '{name}' data_offsets [{start}, {end}] are reversed: the start is after the end"
        )));
    }
    if end > data_len {
        return Err(Error::msg(format!(
            "tensor '{name}' data_offsets [{start}, {end}] point past the end of the data ({data_len} bytes)"
        )));
    }
    let shape_str = format!("{shape:?}");
    let nbits = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .and_then(|n| n.checked_mul(bits))
        .filter(|&b| usize::try_from(b).is_ok())
        .ok_or_else(|| {
            Error::msg(format!(
                "tensor '{name}' ({dtype}, shape {shape_str}) is too large: its byte size overflows"
            ))
        })?;
    if nbits % 8 != 0 {
        return Err(Error::msg(format!(
            "tensor '{name}' ({dtype}, shape {shape_str}) is {nbits} bits, not a whole number of bytes"
        )));
    }
    let expected = nbits / 8;
    if end - start != expected {
        return Err(Error::msg(format!(
            "tensor '{name}' ({dtype}, shape {shape_str}) needs {expected} bytes, but its data_offsets [{start}, {end}] hold {}",
            end - start
        )));
    }
    Ok(Entry {
        name,
        dtype,
        shape,
        start,
        end,
    })
}

fn dtype_list() -> String {
    DTYPES.iter().map(|(d, _)| *d).collect::<Vec<_>>().join(", ")
}

/// A JSON value for a message: at most 40 characters.
fn short_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Checks everything safetensors (and candle's loader) would check, so that
/// a bad file is refused here with a message naming the tensor, the field and
/// what was expected, and candle never sees it.
/// A tensor entry's fields, each at most once: `serde_json::Value` keeps the
/// last of two equal keys, while safetensors' reader refuses the entry.
#[derive(serde::Deserialize)]
struct FieldsOnce {
    #[serde(rename = "dtype")]
    _dtype: serde::de::IgnoredAny,
    #[serde(rename = "shape")]
    _shape: serde::de::IgnoredAny,
    #[serde(rename = "data_offsets")]
    _data_offsets: serde::de::IgnoredAny,
}

/// The header's entries in file order, a name given twice kept twice (a
/// map would keep only the last, and the first would go unchecked).
struct AllEntries<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for AllEntries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = AllEntries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> std::result::Result<Self::Value, M::Error> {
                let mut all = Vec::new();
                while let Some(e) = m.next_entry()? {
                    all.push(e);
                }
                Ok(AllEntries(all))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Refuses a tensor named twice in the header, and a tensor entry that
/// names a field twice (e.g. two `shape`s).
fn refuse_duplicate_fields(header: &[u8]) -> Result<()> {
    let raw: AllEntries =
        serde_json::from_slice(header).map_err(|e| Error::msg(format!("not a safetensors file (header: {e})")))?;
    let mut seen = std::collections::HashSet::new();
    if let Some((k, _)) = raw.0.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        return Err(Error::msg(format!("tensor '{k}' is named twice in the header")));
    }
    for (k, v) in raw.0 {
        if k == "__metadata__" {
            continue;
        }
        serde_json::from_str::<FieldsOnce>(v.get())
            .map_err(|e| Error::msg(format!("tensor '{k}': {e} (each of dtype, shape, data_offsets once)")))?;
    }
    Ok(())
}

fn parse_header(header: &[u8], data_len: u64) -> Result<HeaderInfo> {
    let v: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| Error::msg(format!("not a safetensors file (header: {e})")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::msg("not a safetensors file (header is not a JSON object)"))?;
    let mut entries = Vec::with_capacity(obj.len());
    for (k, t) in obj {
        if k == "__metadata__" {
            let ok = t
                .as_object()
                .is_some_and(|m| m.values().all(serde_json::Value::is_string));
            if !ok {
                return Err(Error::msg(format!(
                    "__metadata__ {}: expected an object of string values",
                    short_json(t)
                )));
            }
            continue;
        }
        entries.push(check_entry(k, t, data_len)?);
    }
    refuse_duplicate_fields(header)?;
    // The tensors' data must tile the data section: in offset order, each
    // starts where the previous ends, and the last ends at the end of the file.
    entries.sort_by_key(|e| (e.start, e.end));
    let mut at = 0u64;
    let mut prev: Option<&Entry> = None;
    for e in &entries {
        if e.start != at {
            let (what, n) = if e.start > at {
                ("a gap of", e.start - at)
            } else {
                ("an overlap of", at - e.start)
            };
            let before = prev
                .map(|p| format!("tensor '{}' ends at byte {}", p.name, p.end))
                .unwrap_or_else(|| "the data starts at byte 0".to_string());
            return Err(Error::msg(format!(
                "tensor '{}' data_offsets [{}, {}] leave {what} {n} bytes: {before}, expected this tensor to start there",
                e.name, e.start, e.end
            )));
        }
        at = e.end;
        prev = Some(e);
    }
    if at != data_len {
        return Err(Error::msg(format!(
            "{} bytes after the last tensor ({}) belong to no tensor: the data section is {data_len} bytes, the tensors cover {at}",
            data_len - at,
            prev.map(|p| format!("'{}' ends at byte {}", p.name, p.end))
                .unwrap_or_else(|| "there are none".to_string())
        )));
    }
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(&data_len.to_le_bytes());
    let entries = entries
        .iter()
        .map(|e| TensorEntry {
            name: e.name.to_string(),
            dtype: e.dtype.to_string(),
            // Each dimension was checked to fit a usize above.
            shape: e.shape.iter().map(|&d| d as usize).collect(),
            start: e.start,
            end: e.end,
        })
        .collect::<Vec<_>>();
    Ok(HeaderInfo {
        tensors: entries.len(),
        data_bytes: at,
        data_start: 0,
        entries,
        fingerprint: h.finalize().to_hex().to_string(),
    })
}
