//! Hub references and the Hugging Face cache layout, shared with Python
//! tools (`huggingface_hub`): `$HF_HUB_CACHE` or `$HF_HOME/hub` (default
//! `~/.cache/huggingface/hub`), `models--{org}--{name}/refs/{revision}`
//! holding a commit, the file at `models--{org}--{name}/snapshots/{commit}/{file}`
//! (a link to `blobs/{etag}`).
//!
//! [`resolve`] only reads that cache. `modeldock pull <id>` (or
//! `modeldock pull REPO[@REVISION] FILE`) fills it through [`pull`], which
//! downloads with the `hf-hub` crate when the build has the `hub` feature
//! (on by default); so does the engine's loader when a model whose weights
//! are missing is loaded (its first phase, "downloading"). `HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME` / `HF_HUB_CACHE`
//! and `HF_HUB_OFFLINE` mean what they mean in `huggingface_hub`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    home().join(".cache").join("huggingface").join("hub")
}

fn home() -> PathBuf {
    directories::BaseDirs::new()
        .map(|b| b.home_dir().to_path_buf())
        .unwrap_or_else(std::env::temp_dir)
}

/// `HF_HUB_OFFLINE` is set to a true value (1, true, yes, on): no requests.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        matches!(v.as_str(), "1" | "true" | "yes" | "on")
    })
}

/// `HF_ENDPOINT`, or the Hugging Face Hub.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_string())
}

/// `HF_TOKEN`, else the file `HF_TOKEN_PATH` names, else `$HF_HOME/token`
/// (default `~/.cache/huggingface/token`), as `huggingface_hub` reads it.
pub fn token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        let t = t.trim();
        if !t.is_empty() {
            return Some(t.to_string());
        }
    }
    let path = match std::env::var_os("HF_TOKEN_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
            Some(h) => PathBuf::from(h).join("token"),
            None => home().join(".cache").join("huggingface").join("token"),
        },
    };
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The cache folder of a model repo: `models--{org}--{name}`.
pub fn repo_dir(repo: &str) -> PathBuf {
    cache_dir().join(format!("models--{}", repo.replace('/', "--")))
}

/// The commit `revision` stands for in the cache (itself when it is one).
fn cached_commit(repo: &str, revision: &str) -> Option<String> {
    if is_commit(revision) {
        return Some(revision.to_string());
    }
    std::fs::read_to_string(repo_dir(repo).join("refs").join(revision))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The cached file for `repo`/`file` at `revision`, if the cache has it.
pub fn cached(repo: &str, file: &str, revision: &str) -> Option<PathBuf> {
    let commit = cached_commit(repo, revision)?;
    let p = repo_dir(repo).join("snapshots").join(commit).join(file);
    p.is_file().then_some(p)
}

/// The cached file for `repo`/`file` at `revision` (the weights of model `id`).
pub fn resolve(id: &str, repo: &str, file: &str, revision: &str) -> Result<PathBuf> {
    if let Some(p) = cached(repo, file, revision) {
        return Ok(p);
    }
    let rev = if revision == "main" {
        String::new()
    } else {
        format!("@{revision}")
    };
    Err(Error::msg(format!(
        "{id}: weights {repo}/{file}@{revision} are not in the local hub cache ({}){}; run \
         `modeldock pull {id}` (or `modeldock pull {repo}{rev} {file}`), or point `weights` in \
         the manifest at a local .safetensors file",
        repo_dir(repo).display(),
        if offline() { " and HF_HUB_OFFLINE is set" } else { "" },
    )))
}

/// Progress of one download, in bytes.
pub trait PullProgress {
    /// The download of `total` bytes starts (again, on a retry).
    fn start(&mut self, total: u64);
    /// `done` of `total` bytes are on disk (a resumed download starts above 0).
    fn update(&mut self, done: u64, total: u64);
}

impl PullProgress for () {
    fn start(&mut self, _total: u64) {}
    fn update(&mut self, _done: u64, _total: u64) {}
}

/// What [`pull`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The file in the snapshot folder (what [`resolve`] returns).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// False when the cache already had it (no request was made).
    pub downloaded: bool,
    /// "sha256" or "git-sha1" when the file was checked against the
    /// Hub's etag, `None` when the etag is not a hash.
    pub verified: Option<&'static str>,
}

/// A repo file name must stay inside its snapshot folder.
fn check_names(repo: &str, file: &str, revision: &str) -> Result<()> {
    let bad_repo = repo.is_empty()
        || repo.split('/').count() > 2
        || repo
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\\'));
    if bad_repo {
        return Err(Error::usage(format!(
            "'{repo}' is not a Hub repo id (expected org/name or name)"
        )));
    }
    let bad_file = file.is_empty()
        || Path::new(file).is_absolute()
        || file.split(['/', '\\']).any(|p| p.is_empty() || p == "." || p == "..");
    if bad_file {
        return Err(Error::usage(format!("'{file}' is not a file name inside repo {repo}")));
    }
    if revision.is_empty() || revision.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(Error::usage(format!("'{revision}' is not a revision of {repo}")));
    }
    Ok(())
}

/// Brings `repo`/`file` at `revision` into the cache (a cache hit makes no
/// request), checks it against the Hub's sha256 or git etag, and returns
/// where it is. `retries` bounds how often an interrupted download resumes
/// within this call.
pub fn pull(repo: &str, file: &str, revision: &str, retries: usize, progress: &mut dyn PullProgress) -> Result<Pulled> {
    check_names(repo, file, revision)?;
    let mut damaged = None;
    if let Some(p) = cached(repo, file, revision) {
        match verify::check(&p)? {
            verify::Check::Good(verified) => {
                let bytes = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                return Ok(Pulled {
                    path: p,
                    bytes,
                    downloaded: false,
                    verified,
                });
            }
            verify::Check::Bad { kind, .. } => {
                // A damaged cache entry: remove it and fetch it again.
                verify::remove(&p);
                damaged = Some(kind);
            }
        }
    }
    if offline() {
        return Err(Error::unavailable(match damaged {
            Some(kind) => format!(
                "{repo}/{file}@{revision}: the cached copy did not match its {kind} and was \
                 removed; HF_HUB_OFFLINE is set, so it cannot be fetched again"
            ),
            None => format!(
                "{repo}/{file}@{revision} is not in the hub cache ({}) and HF_HUB_OFFLINE is set; \
                 unset it to download",
                cache_dir().display()
            ),
        }));
    }
    download::pull(repo, file, revision, retries, progress)
}

/// Hash checks of cached files against the etag they are stored under.
mod verify {
    use std::path::{Path, PathBuf};

    use crate::error::{Error, Result};

    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    pub enum Check {
        Good(Option<&'static str>),
        Bad {
            kind: &'static str,
            want: String,
            got: String,
        },
    }

    /// The blob a snapshot entry points at, when the entry is a link into `blobs/`.
    pub fn blob_of(snapshot_file: &Path) -> Option<PathBuf> {
        let b = std::fs::canonicalize(snapshot_file).ok()?;
        let parent = b.parent()?;
        (parent.file_name()? == "blobs").then_some(b)
    }

    fn hex_len(s: &str, n: usize) -> bool {
        s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit())
    }

    /// Checks `snapshot_file` against the etag its blob is named by: a
    /// sha256 (LFS files) or a git blob sha1 (small files).
    pub fn check(snapshot_file: &Path) -> Result<Check> {
        let Some(blob) = blob_of(snapshot_file) else {
            return Ok(Check::Good(None));
        };
        let etag = blob
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let kind = if hex_len(&etag, 64) {
            "sha256"
        } else if hex_len(&etag, 40) {
            "git-sha1"
        } else {
            return Ok(Check::Good(None));
        };
        let Some(got) = digest(&blob, kind == "sha256").map_err(|e| Error::msg(format!("{}: {e}", blob.display())))?
        else {
            return Ok(Check::Good(None));
        };
        Ok(if got == etag {
            Check::Good(Some(kind))
        } else {
            Check::Bad { kind, want: etag, got }
        })
    }

    /// Removes a snapshot entry and the blob it points at.
    pub fn remove(snapshot_file: &Path) {
        if let Some(b) = blob_of(snapshot_file) {
            let _ = std::fs::remove_file(b);
        }
        let _ = std::fs::remove_file(snapshot_file);
    }

    #[cfg(feature = "hub")]
    fn digest(path: &Path, sha256: bool) -> std::io::Result<Option<String>> {
        use std::io::Read;

        use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY, SHA256};

        let mut f = std::fs::File::open(path)?;
        let mut ctx = if sha256 {
            Context::new(&SHA256)
        } else {
            let len = f.metadata()?.len();
            let mut c = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
            c.update(format!("blob {len}\0").as_bytes());
            c
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        Ok(Some(ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// Without the downloader there is no hasher either: cached files are taken as they are.
    #[cfg(not(feature = "hub"))]
    fn digest(_path: &Path, _sha256: bool) -> std::io::Result<Option<String>> {
        Ok(None)
    }
}

#[cfg(not(feature = "hub"))]
mod download {
    use super::{PullProgress, Pulled};
    use crate::error::{Error, Result};

    pub fn pull(
        repo: &str,
        file: &str,
        revision: &str,
        _retries: usize,
        _progress: &mut dyn PullProgress,
    ) -> Result<Pulled> {
        Err(Error::unavailable(format!(
            "{repo}/{file}@{revision} is not in the hub cache and this build has no downloader \
             (built without the `hub` feature); rebuild with default features, or fetch the file \
             with huggingface-cli into {}",
            super::cache_dir().display()
        )))
    }
}

#[cfg(feature = "hub")]
mod download;
pub mod shards;
pub use shards::{pull_shards, resolve_shards, PulledShards};
