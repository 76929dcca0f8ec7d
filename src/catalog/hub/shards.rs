//! Sharded checkpoints on the Hub: the index first, then every shard it
//! names, each with the single-file pull's resume and checksum, and progress
//! in bytes across all of them.

use std::path::PathBuf;

use super::{pull, resolve, PullProgress, Pulled};
use crate::catalog::shards::read_index;
use crate::catalog::weights_source::WeightsSource;
use crate::error::Result;

/// A shard's path in the repo: beside the index.
fn beside(index_file: &str, shard: &str) -> String {
    match index_file.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{shard}"),
        None => shard.to_string(),
    }
}

/// The index and shards of a sharded checkpoint, all pulled.
pub struct PulledShards {
    pub index: Pulled,
    pub shards: Vec<Pulled>,
}

impl PulledShards {
    pub fn source(&self) -> WeightsSource {
        WeightsSource::Shards {
            index: Some(self.index.path.clone()),
            files: self.shards.iter().map(|s| s.path.clone()).collect(),
        }
    }

    /// Bytes of every file.
    pub fn bytes(&self) -> u64 {
        self.index.bytes + self.shards.iter().map(|s| s.bytes).sum::<u64>()
    }

    /// False when the cache already had every file.
    pub fn downloaded(&self) -> bool {
        self.index.downloaded || self.shards.iter().any(|s| s.downloaded)
    }
}

/// One shard's progress as part of the whole: bytes of the shards before
/// it are added, and the total is the index's `total_size` (the tensors'
/// bytes) or what is known so far, whichever is more.
struct Whole<'a> {
    outer: &'a mut dyn PullProgress,
    before: u64,
    total: u64,
    started: bool,
}

impl PullProgress for Whole<'_> {
    fn start(&mut self, total: u64) {
        self.total = self.total.max(self.before + total);
        if !self.started {
            self.started = true;
            self.outer.start(self.total);
        }
        self.outer.update(self.before, self.total);
    }

    fn update(&mut self, done: u64, total: u64) {
        self.total = self.total.max(self.before + total);
        self.outer.update(self.before + done, self.total);
    }
}

/// Pulls `index_file` (a `*.safetensors.index.json`) and every shard it
/// names. A missing or damaged shard fails with its name.
pub fn pull_shards(
    repo: &str,
    index_file: &str,
    revision: &str,
    retries: usize,
    progress: &mut dyn PullProgress,
) -> Result<PulledShards> {
    let index = pull(repo, index_file, revision, retries, &mut ())?;
    let ix = read_index(&index.path)?;
    let mut whole = Whole {
        outer: progress,
        before: 0,
        total: ix.total_size.unwrap_or(0),
        started: false,
    };
    let mut shards = Vec::with_capacity(ix.shards.len());
    for s in &ix.shards {
        let p = pull(repo, &beside(index_file, s), revision, retries, &mut whole)?;
        whole.before += p.bytes;
        shards.push(p);
    }
    let done = whole.before;
    whole.outer.update(done, whole.total.max(done));
    Ok(PulledShards { index, shards })
}

/// The cached index and shards of `index_file`, for a load: an error naming
/// the first file not in the cache.
pub fn resolve_shards(id: &str, repo: &str, index_file: &str, revision: &str) -> Result<WeightsSource> {
    let index = resolve(id, repo, index_file, revision)?;
    let files: Vec<PathBuf> = read_index(&index)?
        .shards
        .iter()
        .map(|s| resolve(id, repo, &beside(index_file, s), revision))
        .collect::<Result<_>>()?;
    Ok(WeightsSource::Shards {
        index: Some(index),
        files,
    })
}
