//! Stage timing shared by every model.

/// A duration in milliseconds, as every timing field holds it.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
