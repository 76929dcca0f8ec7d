//! Allocator control: keep inference buffers for reuse, hand memory back
//! after an unload (the arenas' tops too: `super::arenas`), and say what
//! the allocator holds.

/// Lets the allocator keep freed inference buffers for reuse: without this,
/// glibc returns every large block (a conv output of several MiB) to the OS
/// on free and the next forward pays a page fault per 4 KiB to get it back.
/// [`release_free_memory`] still hands the memory back after an unload.
pub fn keep_freed_memory_for_reuse() {
    set_thresholds(TRIM_THRESHOLD);
}

/// The top of an arena kept for reuse (below it, a freed block's pages stay).
pub(super) const TRIM_THRESHOLD: i32 = 512 << 20;
/// While memory is handed back: every arena whose top is larger gives it up.
pub(super) const TRIM_THRESHOLD_LOW: i32 = 128 << 10;

pub(super) fn set_thresholds(trim: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: glibc's mallopt takes any values and reports failure by return code.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 256 << 20);
            mallopt(M_TRIM_THRESHOLD, trim);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = trim;
}

/// Asks the allocator to hand freed pages back to the OS, so an unload shows
/// in RSS. A no-op where the allocator offers no such call.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// What the allocator holds: bytes in use (its arenas plus large blocks it
/// mapped on their own) and bytes free but kept for reuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    pub in_use: u64,
    pub free: u64,
}

/// The allocator's figures, summed over every arena; `None` where the
/// allocator offers no such call.
pub fn heap_stats() -> Option<HeapStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[repr(C)]
        struct MallInfo2 {
            arena: usize,
            ordblks: usize,
            smblks: usize,
            hblks: usize,
            hblkhd: usize,
            usmblks: usize,
            fsmblks: usize,
            uordblks: usize,
            fordblks: usize,
            keepcost: usize,
        }
        extern "C" {
            fn mallinfo2() -> MallInfo2;
        }
        // SAFETY: glibc's mallinfo2 (2.33 and later) has no preconditions
        // and returns the struct by value.
        let m = unsafe { mallinfo2() };
        Some(HeapStats {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block in use counts as in use (other tests allocate beside this
    /// one, so only the lower bound is certain).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_held_block_shows_in_use() {
        let block = vec![1u8; 8 << 20];
        let h = heap_stats().unwrap_or_default();
        assert!(h.in_use >= 8 << 20, "{h:?}");
        assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), 8 << 20);
    }
}
