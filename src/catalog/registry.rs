//! The registry: every model modeldock knows, read from manifests only.
//!
//! Sources, in order: the models compiled into the binary, then each models
//! folder (`--models-dir`, `MODELDOCK_MODELS` (a `:`-separated list), and the
//! user's config folder, e.g. `~/.config/modeldock/models`). Each folder holds
//! `<id>/model.toml`. A bad manifest is reported and skipped; the rest register.

use std::path::{Component, Path, PathBuf};

use super::builtin;
use super::manifest::{Manifest, WeightsRef};
use super::safetensors_header::{header_of_bytes, read_header};
use super::weights_source::WeightsSource;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest: Manifest,
    /// Where the manifest came from ("embedded" or a path).
    pub origin: String,
    pub weights: WeightsResolved,
    /// Predicted resident bytes: the tensor bytes in the weights header.
    pub predicted_bytes: u64,
    /// The dtype most weight bytes are stored in (`f32`, `bf16`, …), from
    /// the header; `None` until the weights are on this machine.
    pub weights_dtype: Option<String>,
}

impl Entry {
    /// Bytes the weights take in memory: f16/bf16 weights are converted to
    /// f32 once at load on the CPU (GPUs keep them), so the prediction follows
    /// the dtype in memory, not on disk.
    pub fn predicted_in_memory(&self, cpu: bool) -> u64 {
        let half = |d: &str| matches!(d, "f16" | "bf16");
        if cpu && (half(&self.manifest.dtype) || self.weights_dtype.as_deref().is_some_and(half)) {
            self.predicted_bytes.saturating_mul(2)
        } else {
            self.predicted_bytes
        }
    }

    /// Where to read this model's weights now: random values when asked, a
    /// local file or the embedded bytes, or a hub reference resolved from
    /// the local cache.
    pub fn weights_source(&self, random: bool) -> Result<WeightsSource> {
        if random {
            return Ok(WeightsSource::Random);
        }
        match &self.weights {
            WeightsResolved::Local(s) => Ok(s.clone()),
            WeightsResolved::Hub { repo, file, revision } if super::shards::is_index(file) => {
                super::hub::resolve_shards(&self.manifest.id, repo, file, revision)
            }
            WeightsResolved::Hub { repo, file, revision } => Ok(WeightsSource::File(super::hub::resolve(
                &self.manifest.id,
                repo,
                file,
                revision,
            )?)),
            WeightsResolved::Remote => Err(Error::msg(format!(
                "{}: the network runs on a server ({}); there are no weights here",
                self.manifest.id,
                self.manifest.backend.as_ref().map(|b| b.describe()).unwrap_or_default()
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub enum WeightsResolved {
    Local(WeightsSource),
    /// A hub reference; resolved when the model is loaded.
    Hub {
        repo: String,
        file: String,
        revision: String,
    },
    /// The network runs on a server (`manifest.backend`): nothing to read here.
    Remote,
}

#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub entries: Vec<Entry>,
    /// One line per manifest that was skipped: file and reason.
    pub problems: Vec<String>,
}

impl Registry {
    /// Built-in models plus every folder in `dirs`.
    pub fn discover(dirs: &[PathBuf]) -> Registry {
        let mut r = Registry::default();
        for (toml, name, bytes) in builtin::MODELS {
            match builtin_entry(toml, name, bytes) {
                Ok(e) => r.add(e),
                Err(e) => r.problems.push(e.to_string()),
            }
        }
        for (name, toml) in builtin::HUB_MANIFESTS {
            let origin = format!("embedded {name}");
            match Manifest::parse(toml, &origin) {
                Ok(m) => match &m.weights {
                    WeightsRef::Hub { repo, file, revision } => {
                        let predicted = m.option("size_bytes", 0.0) as u64;
                        let weights = WeightsResolved::Hub {
                            repo: repo.clone(),
                            file: file.clone(),
                            revision: revision.clone(),
                        };
                        r.add(Entry {
                            manifest: m,
                            origin,
                            weights,
                            predicted_bytes: predicted,
                            weights_dtype: None,
                        })
                    }
                    WeightsRef::Path(_) | WeightsRef::Files(_) => r
                        .problems
                        .push(format!("{origin}: built-in hub manifest has a local path")),
                },
                Err(e) => r.problems.push(e.to_string()),
            }
        }
        for d in dirs {
            r.scan_dir(d);
        }
        r
    }

    /// Folders named by the user: flags first, then `MODELDOCK_MODELS`, then
    /// the config folder (if it exists).
    pub fn default_dirs(flag_dirs: &[PathBuf]) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = flag_dirs.to_vec();
        if let Some(v) = std::env::var_os("MODELDOCK_MODELS") {
            dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
        }
        if let Some(p) = directories::ProjectDirs::from("", "", "modeldock") {
            let d = p.config_dir().join("models");
            if d.is_dir() {
                dirs.push(d);
            }
        }
        dirs
    }

    /// Adds `e`, or replaces the entry with its id.
    pub fn upsert(&mut self, e: Entry) {
        match self.entries.iter_mut().find(|x| x.manifest.id == e.manifest.id) {
            Some(slot) => *slot = e,
            None => self.entries.push(e),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.manifest.id == id)
    }

    fn add(&mut self, e: Entry) {
        if let Some(prev) = self.get(&e.manifest.id) {
            self.problems.push(format!(
                "{}: duplicate model id '{}' (already registered from {}); skipped",
                e.origin, e.manifest.id, prev.origin
            ));
            return;
        }
        self.entries.push(e);
    }

    /// Registers every `<dir>/<id>/model.toml` (and a `model.toml` in `dir` itself).
    pub fn scan_dir(&mut self, dir: &Path) {
        let mut manifests = Vec::new();
        if dir.join("model.toml").is_file() {
            manifests.push(dir.join("model.toml"));
        }
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                let mut subs: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                subs.sort();
                for s in subs {
                    let m = s.join("model.toml");
                    if m.is_file() {
                        manifests.push(m);
                    }
                }
            }
            Err(e) => {
                self.problems
                    .push(format!("{}: cannot read models folder: {e}", dir.display()));
                return;
            }
        }
        for m in manifests {
            match load_manifest_file(&m) {
                Ok(e) => self.add(e),
                Err(e) => self.problems.push(e.to_string()),
            }
        }
    }
}

fn builtin_entry(toml: &str, name: &str, bytes: &'static [u8]) -> Result<Entry> {
    let origin = format!("embedded {name}");
    let manifest = Manifest::parse(toml, &origin)?;
    let info = header_of_bytes(bytes).map_err(|e| e.context(&origin))?;
    Ok(Entry {
        manifest,
        origin,
        weights: WeightsResolved::Local(WeightsSource::Embedded {
            name: name.to_string(),
            bytes,
        }),
        predicted_bytes: info.data_bytes,
        weights_dtype: Some(info.stored_dtype()),
    })
}

/// Reads one manifest file and resolves its weights path safely.
pub fn load_manifest_file(path: &Path) -> Result<Entry> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::msg(format!("{origin}: {e}")))?;
    let manifest = Manifest::parse(&text, &origin)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let (weights, predicted, dtype) = match &manifest.weights {
        // The server holds the network; nothing is charged to the local budget.
        _ if manifest.backend.is_some() => (WeightsResolved::Remote, 0, None),
        WeightsRef::Path(p) if super::shards::is_index(p) => {
            let index = resolve_inside(dir, p).map_err(|e| e.context(&origin))?;
            let files = super::shards::shards_in_folder(&index).map_err(|e| e.context(&origin))?;
            local_shards(Some(index), files, &origin)?
        }
        WeightsRef::Path(p) => {
            let resolved = resolve_inside(dir, p).map_err(|e| e.context(&origin))?;
            let info = read_header(&resolved).map_err(|e| e.context(&origin))?;
            (
                WeightsResolved::Local(WeightsSource::File(resolved)),
                info.data_bytes,
                Some(info.stored_dtype()),
            )
        }
        WeightsRef::Files(list) => {
            let files = list
                .iter()
                .map(|f| resolve_inside(dir, f))
                .collect::<Result<Vec<_>>>()
                .map_err(|e| e.context(&origin))?;
            local_shards(None, files, &origin)?
        }
        WeightsRef::Hub { repo, file, revision } => (
            WeightsResolved::Hub {
                repo: repo.clone(),
                file: file.clone(),
                revision: revision.clone(),
            },
            manifest.option("size_bytes", 0.0) as u64,
            None,
        ),
    };
    Ok(Entry {
        manifest,
        origin,
        weights,
        predicted_bytes: predicted,
        weights_dtype: dtype,
    })
}

/// Shards on disk, checked as a set; the predicted size is their headers' sum.
fn local_shards(
    index: Option<PathBuf>,
    files: Vec<PathBuf>,
    origin: &str,
) -> Result<(WeightsResolved, u64, Option<String>)> {
    let set = super::shards::check_shards(index.as_deref(), &files).map_err(|e| e.context(origin))?;
    Ok((
        WeightsResolved::Local(WeightsSource::Shards { index, files }),
        set.combined.data_bytes,
        Some(set.combined.stored_dtype()),
    ))
}

/// Resolves `rel` against `dir` and refuses anything that ends up outside it
/// (`..`, absolute paths elsewhere, symlinks out).
pub fn resolve_inside(dir: &Path, rel: &str) -> Result<PathBuf> {
    let rel_path = Path::new(rel);
    if rel_path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::msg(format!(
            "weights path '{rel}' escapes the model folder ('..')"
        )));
    }
    let joined = if rel_path.is_absolute() {
        rel_path.to_path_buf()
    } else {
        dir.join(rel_path)
    };
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| Error::msg(format!("model folder {}: {e}", dir.display())))?;
    let canon = joined.canonicalize().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::msg(format!(
                "weights file '{rel}' does not exist (expected it in {})",
                dir.display()
            ))
        } else {
            Error::msg(format!("weights file '{rel}': {e}"))
        }
    })?;
    if !canon.starts_with(&canon_dir) {
        return Err(Error::msg(format!(
            "weights path '{rel}' escapes the model folder (resolves to {})",
            canon.display()
        )));
    }
    if !canon.is_file() {
        return Err(Error::msg(format!("weights path '{rel}' is not a file")));
    }
    Ok(canon)
}
