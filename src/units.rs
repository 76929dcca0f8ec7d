//! Units for people: byte counts as they appear in messages and tables.
//! (Below every room, so decoders and model readers can word their limits.)

pub mod keep_alive;
pub use keep_alive::KeepAlive;

/// Formats a byte count for people ("12.2 MiB"); the one place sizes are written.
pub fn human_bytes(b: u64) -> String {
    let f = b as f64;
    if f >= 1073741824.0 {
        format!("{:.1} GiB", f / 1073741824.0)
    } else if f >= 1048576.0 {
        format!("{:.1} MiB", f / 1048576.0)
    } else if f >= 1024.0 {
        format!("{:.0} KiB", f / 1024.0)
    } else {
        format!("{b} B")
    }
}
