//! `modeldock pull MODEL` / `modeldock pull REPO[@REVISION] FILE`: bring hub
//! weights into the Hugging Face cache, with a progress bar in bytes (plain
//! progress lines when stderr is not a terminal). Prints the cached file's
//! path on stdout.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::args::PullArgs;
use crate::catalog::hub::{self, PullProgress};
use crate::catalog::registry::WeightsResolved;
use crate::error::{Error, Result};
use crate::units::human_bytes;

/// What to pull: repo, file, revision.
fn target(a: &PullArgs) -> Result<(String, String, String)> {
    let split = |t: &str| match t.split_once('@') {
        Some((r, rev)) => (r.to_string(), rev.to_string()),
        None => (t.to_string(), "main".to_string()),
    };
    if let Some(file) = &a.file {
        let (repo, rev) = split(&a.target);
        return Ok((repo, file.clone(), rev));
    }
    let reg = a.catalog.registry();
    match reg.get(&a.target) {
        Some(e) => match &e.weights {
            WeightsResolved::Hub { repo, file, revision } => Ok((repo.clone(), file.clone(), revision.clone())),
            WeightsResolved::Local(_) => Err(Error::usage(format!(
                "{}: its weights are local ({}); there is nothing to pull",
                a.target, e.origin
            ))),
            WeightsResolved::Remote => Err(Error::usage(format!(
                "{}: its network runs on a server ({}); there is nothing to pull",
                a.target, e.origin
            ))),
        },
        None if a.target.contains('/') => Err(Error::usage(format!(
            "name the file to pull from {}: `modeldock pull {} FILE`",
            a.target, a.target
        ))),
        None => {
            for p in &reg.problems {
                eprintln!("warning: {p}");
            }
            Err(Error::not_found(format!(
                "no model '{}' (see `modeldock models`); for a Hub repo give org/name and a FILE",
                a.target
            )))
        }
    }
}

/// An indicatif bar on a terminal; otherwise a line at every 10 %.
struct Shown {
    tty: bool,
    label: String,
    bar: Option<ProgressBar>,
    next_tenth: u64,
    t0: Instant,
    resumed_from: Option<u64>,
    /// The last end (done = total) printed: a sharded pull's total grows
    /// as shards are met, and its true end is printed too.
    printed_end: Option<u64>,
}

impl PullProgress for Shown {
    fn start(&mut self, total: u64) {
        self.next_tenth = 0;
        self.resumed_from = None;
        self.t0 = Instant::now();
        if !self.tty {
            return;
        }
        let b = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ({eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_message(self.label.clone());
            b
        });
        b.set_length(total);
        b.set_position(0);
        b.reset_eta();
    }

    fn update(&mut self, done: u64, total: u64) {
        if self.resumed_from.is_none() {
            self.resumed_from = Some(done);
            if done > 0 {
                let line = format!("resuming at {done} of {total} bytes");
                match &self.bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
        if let Some(b) = &self.bar {
            if b.length() != Some(total) {
                b.set_length(total);
            }
            b.set_position(done);
            return;
        }
        let tenth = (done.saturating_mul(10)).checked_div(total).unwrap_or(10);
        let end = done >= total && self.printed_end != Some(done);
        if tenth >= self.next_tenth || end {
            if end {
                self.printed_end = Some(done);
            }
            self.next_tenth = tenth + 1;
            let new = done - self.resumed_from.unwrap_or(0);
            let secs = self.t0.elapsed().as_secs_f64();
            let eta = if new > 0 && secs > 0.0 && done < total {
                format!(", ETA {:.0} s", (total - done) as f64 * secs / new as f64)
            } else {
                String::new()
            };
            eprintln!("{done}/{total} bytes ({}%){eta}", done * 100 / total.max(1));
        }
    }
}

pub fn run(a: &PullArgs) -> Result<i32> {
    let (repo, file, revision) = target(a)?;
    let tty = std::io::stderr().is_terminal();
    if !tty {
        eprintln!("pulling {repo}/{file}@{revision}");
    }
    let mut shown = Shown {
        tty,
        label: format!("pulling {file}"),
        bar: None,
        next_tenth: 0,
        t0: Instant::now(),
        resumed_from: None,
        printed_end: None,
    };
    if crate::catalog::shards::is_index(&file) {
        return pull_sharded(&repo, &file, &revision, a.retries, &mut shown);
    }
    let r = hub::pull(&repo, &file, &revision, a.retries, &mut shown);
    if let Some(b) = &shown.bar {
        b.finish_and_clear();
    }
    let p = r?;
    let check = match p.verified {
        Some(k) => format!(", {k} verified"),
        None => String::new(),
    };
    if p.downloaded {
        eprintln!("pulled {repo}/{file}@{revision} ({}{check})", human_bytes(p.bytes));
    } else {
        eprintln!(
            "{repo}/{file}@{revision} is already in the cache ({}{check}); no request made",
            human_bytes(p.bytes)
        );
    }
    println!("{}", p.path.display());
    Ok(0)
}

/// A sharded checkpoint: the index and every shard, progress across all.
fn pull_sharded(repo: &str, file: &str, revision: &str, retries: usize, shown: &mut Shown) -> Result<i32> {
    let r = hub::pull_shards(repo, file, revision, retries, shown);
    if let Some(b) = &shown.bar {
        b.finish_and_clear();
    }
    let p = r?;
    let n = p.shards.len();
    if p.downloaded() {
        eprintln!(
            "pulled {repo}/{file}@{revision}: {n} shards ({})",
            human_bytes(p.bytes())
        );
    } else {
        eprintln!(
            "{repo}/{file}@{revision}: the index and its {n} shards are already in the cache ({}); no request made",
            human_bytes(p.bytes())
        );
    }
    println!("{}", p.index.path.display());
    Ok(0)
}
