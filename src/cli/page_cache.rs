//! Dropping one file's pages from the page cache, so `bench` can time a
//! cold-cache read and load without root or dropping every cache.

use std::path::Path;

/// Asks the kernel to drop `path`'s cached pages (`posix_fadvise`
/// DONTNEED). Returns false where that is not possible (not Unix, or the
/// call failed); the caller then reports no cold-cache figures.
pub fn drop_file(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let Ok(f) = std::fs::File::open(path) else {
            return false;
        };
        // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}
