//! The downloader behind `modeldock pull`: `hf-hub`'s blocking API (ureq +
//! rustls). hf-hub asks for the file's metadata (`GET` with `Range: bytes=0-0`:
//! `x-repo-commit`, `x-linked-etag` or `etag`, `content-range`), writes
//! `blobs/{etag}.part` (appending from its length with `Range: bytes=N-`, so
//! an interrupted download resumes), renames it to `blobs/{etag}`, links
//! `snapshots/{commit}/{file}` to it and writes `refs/{revision}`. Here the
//! result is checked (size, then sha256 or git sha1 against the etag) and
//! errors become one line naming the repo and file.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Repo, RepoType};

use super::verify::{self, Check};
use super::{cache_dir, endpoint, token, PullProgress, Pulled};
use crate::error::{Error, Result};
use crate::units::human_bytes;

struct Adapter<'a> {
    inner: &'a mut dyn PullProgress,
    done: u64,
    total: u64,
    started: bool,
}

impl Progress for &mut Adapter<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
        self.started = true;
        self.inner.start(self.total);
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        self.inner.update(self.done, self.total);
    }

    fn finish(&mut self) {}
}

pub fn pull(repo: &str, file: &str, revision: &str, retries: usize, progress: &mut dyn PullProgress) -> Result<Pulled> {
    let ep = endpoint();
    let api = ApiBuilder::from_env()
        .with_cache_dir(cache_dir())
        .with_endpoint(ep.clone())
        .with_token(token())
        .with_progress(false)
        // hf-hub's own retry resumes from the file position, which is 0 for
        // a part file reopened in append mode before its first write (it
        // would append the whole file again): retries are ours, each a fresh
        // call that resumes from the part file's length.
        .with_retries(0)
        .with_user_agent("modeldock", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| Error::msg(format!("{repo}/{file}: cannot set up the Hub client: {e}")))?;
    let handle = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let mut adapter = Adapter {
        inner: progress,
        done: 0,
        total: 0,
        started: false,
    };
    let mut attempt = 0;
    let mut restarted = false;
    let path = loop {
        match handle.download_with_progress(file, &mut adapter) {
            Ok(p) => break p,
            Err(e) if stale_part(&e) && !restarted => {
                // The partial file is already whole (a run killed before its
                // rename) or longer than the file: drop it and start over, once.
                restarted = true;
                if let Ok(m) = api.metadata(&handle.url(file)) {
                    let part = super::repo_dir(repo).join("blobs").join(format!("{}.part", m.etag()));
                    let _ = std::fs::remove_file(part);
                }
            }
            Err(e) if attempt < retries && transient(&e, &adapter) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(250 << attempt.min(4)));
            }
            Err(e) => return Err(explain(&e, repo, file, revision, &ep, &adapter)),
        }
    };
    let bytes = std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|e| Error::msg(format!("{repo}/{file}: {}: {e}", path.display())))?;
    if adapter.started && bytes != adapter.total {
        let blob = verify::blob_of(&path);
        let _ = std::fs::remove_file(&path);
        if let Some(b) = blob {
            if bytes < adapter.total {
                // Back to a partial file, so the next pull resumes it.
                let _ = std::fs::rename(&b, part_of(&b));
            } else {
                let _ = std::fs::remove_file(&b);
            }
        }
        return Err(Error::msg(format!(
            "{repo}/{file}@{revision}: the download ended at {bytes} of {} bytes; run \
             `modeldock pull` again to {}",
            adapter.total,
            if bytes < adapter.total {
                "resume it"
            } else {
                "download it afresh"
            }
        )));
    }
    match verify::check(&path).map_err(|e| e.context(format!("{repo}/{file}")))? {
        Check::Good(verified) => Ok(Pulled {
            path,
            bytes,
            downloaded: true,
            verified,
        }),
        Check::Bad { kind, want, got } => {
            verify::remove(&path);
            Err(Error::msg(format!(
                "{repo}/{file}@{revision}: checksum mismatch: the Hub says {kind} {want} but the \
                 downloaded {} hash to {got}; removed it from the cache",
                human_bytes(bytes)
            )))
        }
    }
}

/// Worth another try: the connection broke, timed out, or the server is busy.
fn transient(e: &ApiError, a: &Adapter) -> bool {
    match e {
        ApiError::IoError(io) => a.started && !is_disk_full(io) && io.kind() != ErrorKind::PermissionDenied,
        ApiError::RequestError(re) => matches!(
            re.as_ref(),
            ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::StatusCode(429 | 500..=599)
        ),
        _ => false,
    }
}

/// hf-hub resumes from the `.part` file's length: a `Range` past the end (416)
/// or a part longer than the file means the part cannot be resumed.
fn stale_part(e: &ApiError) -> bool {
    match e {
        ApiError::InvalidResume => true,
        ApiError::RequestError(re) => matches!(re.as_ref(), ureq::Error::StatusCode(416)),
        ApiError::TooManyRetries(inner) => stale_part(inner),
        _ => false,
    }
}

fn part_of(blob: &Path) -> PathBuf {
    let mut p = blob.to_path_buf();
    p.set_extension("part");
    p
}

fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// One line naming the repo, file and revision, and what to do.
fn explain(e: &ApiError, repo: &str, file: &str, revision: &str, ep: &str, a: &Adapter) -> Error {
    let what = format!("{repo}/{file}@{revision}");
    match e {
        ApiError::TooManyRetries(inner) => explain(inner, repo, file, revision, ep, a),
        ApiError::RequestError(re) => match re.as_ref() {
            ureq::Error::StatusCode(404) => Error::not_found(format!(
                "{what}: not found on {ep} (404): check the repo id, the file name and the revision"
            )),
            ureq::Error::StatusCode(code @ (401 | 403)) => Error::msg(format!(
                "{what}: {ep} refused access ({code}): the repo may be gated, private or absent; \
                 set HF_TOKEN to a token that can read it"
            )),
            ureq::Error::StatusCode(code) => Error::msg(format!("{what}: {ep} answered HTTP {code}")),
            ureq::Error::Io(io) if is_disk_full(io) => disk_full(&what, a),
            other => Error::unavailable(format!(
                "{what}: cannot reach {ep}: {other}; set HF_HUB_OFFLINE=1 to use only the local cache"
            )),
        },
        ApiError::IoError(io) if is_disk_full(io) => disk_full(&what, a),
        ApiError::IoError(io) if a.started => Error::unavailable(format!(
            "{what}: the download stopped at {} of {} bytes ({io}); run `modeldock pull` again \
             to resume it",
            a.done, a.total
        )),
        ApiError::IoError(io) => Error::msg(format!(
            "{what}: cannot write the hub cache {}: {io}",
            cache_dir().display()
        )),
        ApiError::MissingHeader(h) | ApiError::InvalidHeader(h) => Error::msg(format!(
            "{what}: {ep} sent no valid `{h}` header; is HF_ENDPOINT a Hugging Face Hub?"
        )),
        ApiError::LockAcquisition(p) => Error::unavailable(format!(
            "{what}: another process is downloading it (lock {}); try again when it is done",
            p.display()
        )),
        ApiError::InvalidResume => Error::msg(format!(
            "{what}: the partial download in {} is longer than the file; delete the .part file \
             and pull again",
            cache_dir().display()
        )),
        other => Error::msg(format!("{what}: {other}")),
    }
}

fn disk_full(what: &str, a: &Adapter) -> Error {
    Error::msg(format!(
        "{what}: no space left on the device holding {} ({} of {} bytes written); free space \
         and pull again to resume",
        cache_dir().display(),
        a.done,
        a.total
    ))
}
