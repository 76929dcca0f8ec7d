//! Where this process's memory is, beside the models: the figures
//! `/api/ps` reports under `memory`, each bounded or handed back.
//!
//! - the result cache: its bytes and entries, and their limits
//!   (`--cache-*`, [`super::cache::ResultCache`]);
//! - the compute threads' scratch buffers (`kernels::scratch`): kept
//!   between forward passes, handed back once no model is resident;
//! - the allocator: bytes in use and bytes free but kept for reuse
//!   ([`super::allocator::heap_stats`]); the free pages go back to the OS
//!   after each unload and, with the scratch buffers, once the last model
//!   leaves (`hand_backs` counts those);
//! - the resident set size.

use serde::{Deserialize, Serialize};

/// The result cache's share, published with each [`super::Snapshot`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheMemory {
    pub bytes: u64,
    pub limit_bytes: u64,
    pub limit_entries: usize,
}

/// `/api/ps`'s `memory`: read when asked, not on every publish.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryReport {
    pub rss_bytes: Option<u64>,
    pub heap_in_use_bytes: Option<u64>,
    pub heap_free_bytes: Option<u64>,
    pub scratch_bytes: u64,
    pub cache_bytes: u64,
    pub cache_limit_bytes: u64,
    pub cache_entries: usize,
    pub cache_limit_entries: usize,
    /// Times the engine handed memory back because no model was left.
    pub hand_backs: u64,
}

/// This process's figures now, with the cache's and the hand-backs from `snap`.
pub fn report(snap: &super::Snapshot) -> MemoryReport {
    let heap = super::allocator::heap_stats();
    MemoryReport {
        rss_bytes: crate::telemetry::process::rss_bytes(),
        heap_in_use_bytes: heap.map(|h| h.in_use),
        heap_free_bytes: heap.map(|h| h.free),
        scratch_bytes: crate::kernels::scratch::held_bytes() as u64,
        cache_bytes: snap.cache_memory.bytes,
        cache_limit_bytes: snap.cache_memory.limit_bytes,
        cache_entries: snap.cache_entries,
        cache_limit_entries: snap.cache_memory.limit_entries,
        hand_backs: snap.hand_backs,
    }
}

/// Drops this process's mapping of the weights compiled into the binary
/// (the whole pages inside each model's bytes): a load read them, and they
/// would count in RSS for the process's life. They stay in the page cache;
/// the next load maps them again. Returns the bytes.
pub fn release_embedded_weights(registry: &crate::catalog::registry::Registry) -> u64 {
    use crate::catalog::registry::WeightsResolved;
    use crate::catalog::weights_source::WeightsSource;
    let mut released = 0u64;
    for e in &registry.entries {
        if let WeightsResolved::Local(WeightsSource::Embedded { bytes, .. }) = &e.weights {
            released += release_pages(bytes);
        }
    }
    released
}

/// `MADV_DONTNEED` over the whole pages inside `bytes`, which must be
/// read-only data of the binary's file (never written, so the file holds
/// the same bytes).
fn release_pages(bytes: &'static [u8]) -> u64 {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
        if end <= start {
            return 0;
        }
        // SAFETY: [start, end) lies inside a `&'static [u8]` of the binary's
        // read-only data, whole pages holding nothing else; dropping them
        // only makes the next read fault them in again from the file.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if r == 0 {
            (end - start) as u64
        } else {
            0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        0
    }
}
