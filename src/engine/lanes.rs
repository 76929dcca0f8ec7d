//! Lanes: where images are decoded and models run, side by side.
//!
//! Each lane is a thread pool of its own (the compute threads its kernels
//! fan out to), so a request in one lane never waits behind the parallel
//! loops of another: the operating system shares the cores among the busy
//! lanes. The worker hands a lane one job at a time and hears back on one
//! channel; which lane a job may take is [`super::scheduler::lane_for`].
//! Loads never run here (they have the loader thread).

use std::panic::AssertUnwindSafe;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::residency::RequestId;
use super::scheduler::Class;

/// What a finished job hands back: the value, or the panic it ended in.
pub(super) struct Finished<T> {
    pub lane: usize,
    pub id: RequestId,
    pub value: Result<T, Panicked>,
}

/// A job that panicked, with the text of its panic.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) struct Lanes<T: Send + 'static> {
    pools: Vec<Option<rayon::ThreadPool>>,
    /// Where lane l (past the first) runs bulk jobs, its threads at the
    /// engine's `bulk_nice`.
    bulk_pools: Vec<Option<rayon::ThreadPool>>,
    /// Lane 0's one thread for interactive work while bulk work runs in
    /// another lane: an image then costs a core, not every core's share
    /// of a parallel loop (see `engine::pacer`).
    solo: Option<rayon::ThreadPool>,
    busy: Vec<Option<Class>>,
    done_tx: Sender<Finished<T>>,
    done_rx: Receiver<Finished<T>>,
}

/// How far below the normal priority bulk work runs (Linux nice steps), by
/// default: the lowest, so an interactive image takes its core the moment
/// it starts. Bulk work keeps its part of the machine through the pacer
/// (`engine::pacer` spaces interactive images beside it), not through its
/// priority; `bench/contention.py` on two cores measured 0, 10 and 19 with
/// the pacer, and 19 kept the interactive p99 lowest at the same bulk
/// throughput (see bench/README.md).
pub const DEFAULT_BULK_NICE: i32 = 19;

/// Lane `l`'s pool of `threads` threads (`kind` tells bulk pools' names
/// apart), at `nice`; `None`, logged, when it cannot start (the lane then
/// uses rayon's shared pool: never without a lane).
fn pool(l: usize, threads: usize, kind: &'static str, nice: i32) -> Option<rayon::ThreadPool> {
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(move |i| format!("modeldock-lane{l}{kind}-{i}"))
        .start_handler(move |_| lower_priority(nice))
        .build();
    match built {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("lane {l}: cannot start its threads ({e}); it uses the shared pool");
            None
        }
    }
}

/// Lowers the calling thread's scheduling priority by `nice` steps (Linux
/// keeps a nice value per thread); elsewhere, or at 0, nothing.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain system calls on the calling thread's own id.
        let r = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            // Relative to the priority the process runs at (nice 19 at most).
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (now + nice).min(19))
        };
        if r != 0 {
            tracing::debug!(
                "lane thread: cannot lower its priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The default number of lanes: three where there are two cores or more
/// (one for interactive work, two for bulk work, so one batch image's
/// serial parts, its decoding and its last small layers, overlap another's
/// parallel loops; measured on two cores in bench/README.md), else one.
pub fn default_lanes() -> usize {
    if compute_threads() >= 2 {
        3
    } else {
        1
    }
}

/// Threads in each lane's pool: every core (the busy lanes share them).
pub fn compute_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl<T: Send + 'static> Lanes<T> {
    /// `count` lanes of `threads` threads each. A pool that cannot be started
    /// leaves its lane on rayon's global pool (logged), never without a lane.
    pub fn new(count: usize, threads: usize, bulk_nice: i32) -> Lanes<T> {
        let count = count.max(1);
        let pools = (0..count).map(|l| pool(l, threads, "", 0)).collect();
        // Bulk work runs below the normal priority, in pools of its own (a
        // thread's priority cannot be raised back without privileges).
        // The bulk lanes share the cores: each has its part of them, so one
        // lane's thread held up by interactive work never stalls another
        // lane's parallel loop.
        let bulk_threads = (threads / count.saturating_sub(1).max(1)).max(1);
        let bulk_pools = (0..count)
            .map(|l| {
                (count > 1 && l > 0)
                    .then(|| pool(l, bulk_threads, "b", bulk_nice))
                    .flatten()
            })
            .collect();
        let solo = (count > 1 && threads > 1).then(|| pool(0, 1, "s", 0)).flatten();
        // One job per lane at a time, so one report per lane at most.
        let (done_tx, done_rx) = bounded(count.max(1));
        Lanes {
            pools,
            bulk_pools,
            solo,
            busy: vec![None; count],
            done_tx,
            done_rx,
        }
    }

    pub fn busy(&self) -> &[Option<Class>] {
        &self.busy
    }

    /// Whether a lane runs bulk work.
    pub fn runs_bulk(&self) -> bool {
        self.busy.contains(&Some(Class::Bulk))
    }

    pub fn is_idle(&self) -> bool {
        self.busy.iter().all(Option::is_none)
    }

    pub fn count(&self) -> usize {
        self.busy.len()
    }

    /// The channel finished jobs arrive on.
    pub fn finished(&self) -> &Receiver<Finished<T>> {
        &self.done_rx
    }

    /// Marks `lane` free again (its job's [`Finished`] arrived).
    pub fn release(&mut self, lane: usize) {
        if let Some(b) = self.busy.get_mut(lane) {
            *b = None;
        }
    }

    /// Runs `job` for request `id` in `lane`, which must be free; its
    /// result (or its panic, as text) arrives on [`Self::finished`].
    pub fn spawn(&mut self, lane: usize, class: Class, id: RequestId, job: impl FnOnce() -> T + Send + 'static) {
        let Some(slot) = self.busy.get_mut(lane) else {
            return;
        };
        *slot = Some(class);
        let tx = self.done_tx.clone();
        let task = move || {
            let value =
                std::panic::catch_unwind(AssertUnwindSafe(job)).map_err(|p| Panicked(super::loader::panic_text(&p)));
            let _ = tx.send(Finished { lane, id, value });
        };
        let bulk = (class == Class::Bulk)
            .then(|| self.bulk_pools.get(lane).and_then(Option::as_ref))
            .flatten();
        let solo = (class == Class::Interactive && lane == 0 && self.runs_bulk())
            .then_some(self.solo.as_ref())
            .flatten();
        match bulk.or(solo).or_else(|| self.pools.get(lane).and_then(Option::as_ref)) {
            Some(pool) => pool.spawn(task),
            None => rayon::spawn(task),
        }
    }

    /// Runs `f` on `lane`'s threads and waits for it (a model's warm-up, so
    /// the threads that will run its requests have their scratch grown).
    pub fn install<R: Send>(&self, lane: usize, f: impl FnOnce() -> R + Send) -> R {
        match self.pools.get(lane).and_then(Option::as_ref) {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Runs `f` once on every thread of every lane's pools and waits for
    /// them all (a lane without a pool of its own: on rayon's shared pool).
    /// Call it with the lanes idle, so no thread holds it up.
    pub fn on_every_thread(&self, f: impl Fn() + Sync) {
        let own = self
            .pools
            .iter()
            .chain(&self.bulk_pools)
            .chain(std::iter::once(&self.solo));
        for pool in own.flatten() {
            pool.broadcast(|_| f());
        }
        if self.pools.iter().any(Option::is_none) {
            rayon::broadcast(|_| f());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_side_by_side_and_panics_come_back_as_text() {
        let mut lanes: Lanes<usize> = Lanes::new(2, 1, 0);
        let (hold_tx, hold_rx) = crossbeam_channel::bounded::<()>(0);
        // Lane 0 waits until lane 1's job has run: they must overlap.
        lanes.spawn(0, Class::Bulk, 1, move || {
            let _ = hold_rx.recv_timeout(Duration::from_secs(20));
            rayon::current_num_threads()
        });
        lanes.spawn(1, Class::Interactive, 2, move || {
            let _ = hold_tx.send(());
            7
        });
        assert_eq!(lanes.busy(), &[Some(Class::Bulk), Some(Class::Interactive)]);
        let mut got = Vec::new();
        for _ in 0..2 {
            let f = lanes
                .finished()
                .recv_timeout(Duration::from_secs(20))
                .expect("a job finished");
            lanes.release(f.lane);
            got.push((f.id, f.value));
        }
        got.sort_by_key(|g| g.0);
        assert_eq!(got, vec![(1, Ok(1)), (2, Ok(7))]);
        assert!(lanes.is_idle());
        lanes.spawn(1, Class::Bulk, 3, || panic!("boom"));
        let f = lanes
            .finished()
            .recv_timeout(Duration::from_secs(20))
            .expect("the panic came back");
        assert_eq!((f.lane, f.id, f.value), (1, 3, Err(Panicked("boom".to_string()))));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn bulk_jobs_run_below_the_normal_priority_and_interactive_ones_do_not() {
        fn own_nice() -> i32 {
            // SAFETY: plain system calls on the calling thread's own id.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            }
        }
        let base = own_nice();
        let mut lanes: Lanes<i32> = Lanes::new(2, 1, 5);
        let mut run = |lane, class| {
            lanes.spawn(lane, class, 1, own_nice);
            let f = lanes
                .finished()
                .recv_timeout(Duration::from_secs(20))
                .expect("the job finished");
            lanes.release(f.lane);
            f.value.expect("no panic") - base
        };
        assert_eq!(run(1, Class::Bulk), 5.min(19 - base));
        assert_eq!(run(1, Class::Interactive), 0);
        // Lane 0 never runs bulk work below the normal priority.
        assert_eq!(run(0, Class::Bulk), 0);
    }
}
