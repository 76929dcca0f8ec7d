//! Allocator control: keep inference buffers for reuse, hand memory back after an unload.

/// Lets the allocator keep freed inference buffers for reuse: without this,
/// glibc returns every large block (a conv output of several MiB) to the OS
/// on free and the next forward pays a page fault per 4 KiB to get it back.
/// [`release_free_memory`] still hands the memory back after an unload.
pub fn keep_freed_memory_for_reuse() {
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
            mallopt(M_TRIM_THRESHOLD, 512 << 20);
        }
    }
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
