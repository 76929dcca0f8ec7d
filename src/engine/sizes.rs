//! Measured sizes remembered across restarts: once a model has been loaded
//! and its memory measured, admission uses that figure instead of the
//! prediction from the weights header, in this run's later loads and in the
//! next run's.
//!
//! A small JSON file in modeldock's cache folder, keyed by the weights'
//! fingerprint (see `HeaderInfo::fingerprint`), the device and the dtype in
//! memory. A corrupt or foreign file is ignored with a warning (and replaced
//! at the next measurement); nothing here ever fails a load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file's `format`; another value is a foreign file.
const FORMAT: &str = "modeldock-measured-sizes-1";

/// A file larger than this is not read (it is not ours).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Entries kept at most; past that, new measurements are not remembered.
const MAX_ENTRIES: usize = 4096;

/// Models predicted smaller than this are admitted at their prediction: an
/// RSS delta of a few hundred KiB is the allocator's, not the model's.
const MIN_PREDICTED: u64 = 16 << 20;

#[derive(serde::Serialize, serde::Deserialize)]
struct FileForm {
    format: String,
    sizes: BTreeMap<String, u64>,
}

/// The remembered sizes, and the file they live in (`None`: nothing is
/// remembered, not even for this run).
#[derive(Debug, Default)]
pub struct SizeBook {
    path: Option<PathBuf>,
    sizes: BTreeMap<String, u64>,
}

/// The key of one model's measurement.
pub fn key(fingerprint: &str, device: &str, dtype: &str) -> String {
    format!("{fingerprint}/{device}/{dtype}")
}

/// modeldock's default file: `<cache folder>/modeldock/measured-sizes.json`.
pub fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "modeldock").map(|d| d.cache_dir().join("measured-sizes.json"))
}

impl SizeBook {
    /// Reads `path`; a missing file is an empty book, a corrupt or foreign
    /// one too, with a warning that names it.
    pub fn open(path: Option<PathBuf>) -> SizeBook {
        let sizes = path.as_deref().map(read).unwrap_or_default();
        SizeBook { path, sizes }
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        self.sizes.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// Remembers a measurement and writes the file (atomically: a reader
    /// sees the old file or the new one). A failed write is a warning.
    pub fn record(&mut self, key: String, bytes: u64) {
        let Some(path) = &self.path else { return };
        if bytes == 0 || self.sizes.get(&key) == Some(&bytes) {
            return;
        }
        if self.sizes.len() >= MAX_ENTRIES && !self.sizes.contains_key(&key) {
            return;
        }
        self.sizes.insert(key, bytes);
        if let Err(e) = write(path, &self.sizes) {
            tracing::warn!("{}: cannot remember measured sizes: {e}", path.display());
        }
    }
}

fn read(path: &Path) -> BTreeMap<String, u64> {
    let ignore = |why: String| {
        tracing::warn!("{}: {why}; ignored (predicted sizes are used)", path.display());
        BTreeMap::new()
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => return ignore(e.to_string()),
        Ok(m) if m.len() > MAX_FILE_BYTES => return ignore(format!("{} bytes, more than a sizes file holds", m.len())),
        Ok(_) => {}
    }
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => return ignore(e.to_string()),
    };
    match serde_json::from_slice::<FileForm>(&text) {
        Ok(f) if f.format == FORMAT => f.sizes.into_iter().filter(|(_, b)| *b > 0).take(MAX_ENTRIES).collect(),
        Ok(f) => ignore(format!("format '{}' is not {FORMAT}", f.format)),
        Err(e) => ignore(format!("not a measured-sizes file ({e})")),
    }
}

fn write(path: &Path, sizes: &BTreeMap<String, u64>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let form = FileForm {
        format: FORMAT.to_string(),
        sizes: sizes.clone(),
    };
    let text = serde_json::to_vec_pretty(&form).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The key of `e`'s measured size: its weights' fingerprint, the device and
/// the dtype in memory (`None` for weights not on this machine yet).
pub(super) fn key_of(e: &crate::catalog::registry::Entry, config: &super::EngineConfig) -> Option<String> {
    let header = e.weights_source(false).ok()?.header().ok()??;
    let cpu = config.device == super::config::DeviceChoice::Cpu;
    let dtype = match e.manifest.dtype.as_str() {
        "f16" | "bf16" if cpu => "f32",
        d => d,
    };
    Some(key(&header.fingerprint, &config.device.label(), dtype))
}

/// The bytes a load of `e` is admitted at: its measured size from an
/// earlier load once known, else the prediction from the weights header.
/// Only for models of [`MIN_PREDICTED`] or more, and within half and twice
/// the prediction: an RSS delta can miss memory the allocator reused, or
/// count memory that is not the model's.
pub(super) fn admission_bytes(
    e: &crate::catalog::registry::Entry,
    config: &super::EngineConfig,
    sizes: &SizeBook,
) -> u64 {
    let p = e.predicted_bytes;
    if config.random_weights || sizes.is_empty() || p < MIN_PREDICTED {
        return p;
    }
    match key_of(e, config).and_then(|k| sizes.get(&k)) {
        Some(measured) => measured.clamp(p / 2, p.saturating_mul(2)),
        None => p,
    }
}

/// Remembers `e`'s measured size (models of [`MIN_PREDICTED`] or more).
pub(super) fn remember(
    sizes: &mut SizeBook,
    e: &crate::catalog::registry::Entry,
    config: &super::EngineConfig,
    measured: u64,
) {
    if e.predicted_bytes < MIN_PREDICTED || config.random_weights {
        return;
    }
    if let Some(k) = key_of(e, config) {
        sizes.record(k, measured);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_survive_a_reopen_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub").join("sizes.json");
        let mut none = SizeBook::open(None);
        none.record(key("abc", "cpu", "f32"), 1234);
        assert!(none.is_empty(), "without a file nothing is remembered");
        let mut b = SizeBook::open(Some(path.clone()));
        assert!(b.is_empty());
        b.record(key("abc", "cpu", "f32"), 1234);
        b.record(key("abc", "cpu", "f16"), 0);
        let b = SizeBook::open(Some(path.clone()));
        assert_eq!(b.get(&key("abc", "cpu", "f32")), Some(1234));
        assert_eq!(b.len(), 1, "a zero measurement is not remembered");
        for bad in [
            "{not json".to_string(),
            r#"{"format":"someone-else-1","sizes":{"abc/cpu/f32":5}}"#.to_string(),
            r#"{"format":"modeldock-measured-sizes-1","sizes":{"abc/cpu/f32":-5}}"#.to_string(),
            "x".repeat((MAX_FILE_BYTES + 1) as usize),
        ] {
            std::fs::write(&path, &bad).unwrap_or_else(|e| panic!("{e}"));
            let b = SizeBook::open(Some(path.clone()));
            assert!(
                b.is_empty(),
                "{} bytes starting {:?} were read",
                bad.len(),
                &bad[..10.min(bad.len())]
            );
        }
        // The next measurement replaces the bad file.
        let mut b = SizeBook::open(Some(path.clone()));
        b.record(key("abc", "cpu", "f32"), 99);
        assert_eq!(SizeBook::open(Some(path)).get(&key("abc", "cpu", "f32")), Some(99));
    }
}
