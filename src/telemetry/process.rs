//! This process and this machine: RSS, available RAM, returning freed memory.

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // statm: size resident shared text lib data dt (pages)
        let s = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * page_size())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let pid = sysinfo::get_current_pid().ok()?;
        let mut sys = sysinfo::System::new().ok()?;
        sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
        sys.process(pid).map(|p| p.memory())
    }
}

#[cfg(target_os = "linux")]
fn page_size() -> u64 {
    // The kernel reports it in /proc/self/smaps' KernelPageSize; 4 KiB is
    // what every mainstream Linux target uses.
    4096
}

/// RAM available for new allocations, in bytes.
pub fn available_ram() -> u64 {
    let Ok(mut sys) = sysinfo::System::new() else {
        return 4 << 30;
    };
    sys.refresh_memory();
    let a = sys.available_memory();
    if a > 0 {
        a
    } else {
        sys.total_memory()
    }
}

/// Total RAM in bytes.
pub fn total_ram() -> u64 {
    let Ok(mut sys) = sysinfo::System::new() else {
        return 8 << 30;
    };
    sys.refresh_memory();
    sys.total_memory()
}

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
