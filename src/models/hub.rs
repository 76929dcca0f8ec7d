//! Hub references resolved through the Hugging Face cache layout, offline:
//! `$HF_HUB_CACHE` or `$HF_HOME/hub` (default `~/.cache/huggingface/hub`),
//! `models--{org}--{name}/refs/{revision}` holding a commit, and the file at
//! `models--{org}--{name}/snapshots/{commit}/{file}`. This build does not
//! download; a missing file is an error that says what to fetch and where
//! to put it.

use std::path::PathBuf;

use crate::error::{Error, Result};

pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = directories::BaseDirs::new()
        .map(|b| b.home_dir().to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("huggingface").join("hub")
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The cached file for `repo`/`file` at `revision`.
pub fn resolve(id: &str, repo: &str, file: &str, revision: &str) -> Result<PathBuf> {
    let root = cache_dir().join(format!("models--{}", repo.replace('/', "--")));
    let commit = if is_commit(revision) {
        Some(revision.to_string())
    } else {
        std::fs::read_to_string(root.join("refs").join(revision))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if let Some(c) = &commit {
        let p = root.join("snapshots").join(c).join(file);
        if p.is_file() {
            return Ok(p);
        }
    }
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let want = root
        .join("snapshots")
        .join(commit.as_deref().unwrap_or("<commit>"))
        .join(file);
    Err(Error::msg(format!(
        "{id}: weights {repo}/{file}@{revision} are not in the local hub cache{}; fetch \
         https://huggingface.co/{repo}/resolve/{revision}/{file} and put it at {}{} \
         (or point `weights` in the manifest at a local .safetensors file)",
        if offline {
            " and HF_HUB_OFFLINE is set"
        } else {
            " (this build does not download)"
        },
        want.display(),
        if commit.is_none() {
            format!(
                ", with {} holding that commit id",
                root.join("refs").join(revision).display()
            )
        } else {
            String::new()
        }
    )))
}
