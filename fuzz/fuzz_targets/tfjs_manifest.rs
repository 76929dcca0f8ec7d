//! A tfjs `weights_manifest.json` plus shard bytes → `read_tfjs_text`, the
//! whole importer minus the folder: JSON, shape/size arithmetic,
//! dequantisation, non-finite checks, layout conversion.
//!
//! Input: the manifest text, a NUL byte, then the shard bytes. Every shard
//! path the manifest names reads those same bytes (at most 16 MiB served in
//! all per input), except paths starting with "missing", which fail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeldock::error::{Error, Result};
use modeldock::import::tfjs::{read_tfjs_text, Shards};

struct MemShards<'a> {
    blob: &'a [u8],
    served: usize,
}

impl Shards for MemShards<'_> {
    fn size(&mut self, rel: &str) -> Result<u64> {
        if rel.starts_with("missing") {
            return Err(Error::msg(format!("shard '{rel}': no such file")));
        }
        Ok(self.blob.len() as u64)
    }

    fn read(&mut self, rel: &str) -> Result<Vec<u8>> {
        self.served += self.blob.len();
        if self.served > 16 << 20 {
            return Err(Error::msg(format!("shard '{rel}': fuzz harness limit")));
        }
        Ok(self.blob.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, blob) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let mut shards = MemShards { blob, served: 0 };
    if let Ok(tensors) = read_tfjs_text("fuzz", text, &mut shards) {
        for (_, t) in &tensors {
            assert!(t.is_contiguous());
        }
    }
});
