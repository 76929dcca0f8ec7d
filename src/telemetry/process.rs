//! This process and this machine: RSS, available and total RAM. (Handing
//! freed memory back to the OS is the engine's: `engine/allocator.rs`.)

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

/// Resets this process's peak RSS (`VmHWM`) to its current RSS, so
/// [`peak_rss_bytes`] then gives the peak of what follows. False where
/// that is not possible (not Linux, or an old kernel).
pub fn reset_peak_rss() -> bool {
    #[cfg(target_os = "linux")]
    {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// This process's peak RSS in bytes (`VmHWM`), since it started or since
/// [`reset_peak_rss`].
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
