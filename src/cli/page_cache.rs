//! Dropping one file's pages from the page cache, so `bench` can time a
//! cold-cache read and load without root or dropping every cache; and a
//! raw read into fresh memory, the floor of a load after an unload.

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

/// Reads `path` whole into memory the process has just handed back to the
/// OS, as a load after an unload finds it: free memory is released first
/// and the buffer gets the loader's huge-page hint, so the time is one copy
/// of the bytes plus the kernel's zeroing of fresh pages. Returns the bytes read.
pub fn read_into_fresh_memory(path: &Path) -> std::io::Result<usize> {
    use std::io::Read;
    crate::engine::allocator::release_free_memory();
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("file too large for memory"))?;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(len).map_err(std::io::Error::other)?;
    crate::models::weights::advise_huge_pages(buf.as_mut_ptr(), buf.capacity());
    // File reads go straight into the spare capacity (no zeroing pass first).
    f.read_to_end(&mut buf)
}
