//! Handing back the free tops of the threads' arenas.
//!
//! glibc gives each thread that allocates an arena of its own (up to eight
//! per core). Freed blocks coalesce into the arena's top, which goes back
//! to the OS only when it exceeds the trim threshold, set high
//! ([`super::allocator::keep_freed_memory_for_reuse`]) so a forward pass
//! reuses its buffers without page faults; `malloc_trim` hands back the
//! free blocks of every arena, but the top of the main one only. So after
//! churn the compute threads' and the HTTP threads' arenas kept their
//! high-water marks (~60 MiB each) with no model resident.
//!
//! A [`TrimWindow`] lowers the threshold while it is open: a large free in
//! an arena then gives that arena's top back, whichever thread frees it.
//! Threads outside the lanes (the HTTP runtime's) [`arm`] themselves when
//! idle: they leave a block of their own arena here, and [`trim_armed`]
//! frees those blocks inside a window, so their arenas' tops go back
//! without waking them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::allocator::{set_thresholds, TRIM_THRESHOLD, TRIM_THRESHOLD_LOW};

/// Windows open now (they may overlap: the worker and an HTTP thread).
static OPEN: Mutex<usize> = Mutex::new(0);

/// While alive, an arena whose free top exceeds 128 KiB gives it back at
/// the next large free in that arena; once the last window closes, freed
/// memory is kept for reuse again.
pub struct TrimWindow(());

impl TrimWindow {
    pub fn open() -> TrimWindow {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        if *open == 0 {
            set_thresholds(TRIM_THRESHOLD_LOW);
        }
        *open += 1;
        TrimWindow(())
    }

    /// Frees a large block in the calling thread's arena, so that arena
    /// gives its free top back.
    pub fn trim_own_arena(&self) {
        drop(block());
    }
}

impl Drop for TrimWindow {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        *open = open.saturating_sub(1);
        if *open == 0 {
            set_thresholds(TRIM_THRESHOLD);
        }
    }
}

/// Large enough that freeing it checks its arena's top (64 KiB and over).
const BLOCK: usize = 128 << 10;

fn block() -> Vec<u8> {
    let b: Vec<u8> = Vec::with_capacity(BLOCK);
    std::hint::black_box(b)
}

/// Blocks left by armed threads, one per thread and round.
struct Armory {
    blocks: Mutex<Vec<Vec<u8>>>,
    /// Bumped by each trim: a thread re-arms once it has moved on.
    round: AtomicU64,
}

static ARMORY: Armory = Armory::new();

thread_local! {
    /// The round this thread last armed in.
    static ARMED_ROUND: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Armory {
    const fn new() -> Armory {
        Armory {
            blocks: Mutex::new(Vec::new()),
            round: AtomicU64::new(1),
        }
    }

    fn arm(&self) {
        let round = self.round.load(Ordering::Acquire);
        if ARMED_ROUND.with(|r| r.replace(round)) == round {
            return;
        }
        let mut blocks = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: threads that come and go (blocking pools) leave one each.
        if blocks.len() < 256 {
            blocks.push(block());
        }
    }

    fn trim(&self, _window: &TrimWindow) -> usize {
        let blocks = {
            let mut blocks = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
            self.round.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *blocks)
        };
        blocks.len()
    }
}

/// For a thread's idle hook (cheap when already armed): leaves a block of
/// this thread's arena for the next [`trim_armed`].
pub fn arm() {
    ARMORY.arm();
}

/// Frees every armed thread's block inside `window`: each of those arenas
/// gives its free top back. Returns how many.
pub fn trim_armed(window: &TrimWindow) -> usize {
    ARMORY.trim(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread arms once per round, and a trim takes every block.
    #[test]
    fn threads_arm_once_per_round() {
        let armory = Armory::new();
        let arm_on_a_thread = |times: usize, rounds: usize| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    for r in 0..rounds {
                        for _ in 0..times {
                            armory.arm();
                        }
                        if r + 1 < rounds {
                            let window = TrimWindow::open();
                            assert_eq!(armory.trim(&window), 1);
                        }
                    }
                });
            });
        };
        arm_on_a_thread(3, 1);
        arm_on_a_thread(1, 1);
        let window = TrimWindow::open();
        assert_eq!(armory.trim(&window), 2);
        assert_eq!(armory.trim(&window), 0);
        drop(window);
        // After a trim, the same thread arms again.
        arm_on_a_thread(2, 3);
        let window = TrimWindow::open();
        assert_eq!(armory.trim(&window), 1);
    }
}
