//! Which path the layers take: the fast CPU kernels here, or candle's own
//! ops everywhere (the generic path, the one a GPU runs). One switch for the
//! process (`--kernels generic`, `MODELDOCK_KERNELS=generic`), so that tests
//! on the CPU can prove the math a GPU will run equal to the fast path.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// The layers' path on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The tiled and fused kernels of this module on the CPU; candle's ops
    /// on other devices.
    #[default]
    Fast,
    /// candle's ops on every device.
    Generic,
}

static GENERIC: AtomicBool = AtomicBool::new(false);

impl Kernels {
    /// Makes `self` the path every layer takes from now on.
    pub fn apply(self) {
        GENERIC.store(self == Kernels::Generic, Ordering::Relaxed);
    }

    /// The path in force.
    pub fn current() -> Kernels {
        if GENERIC.load(Ordering::Relaxed) {
            Kernels::Generic
        } else {
            Kernels::Fast
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernels::Fast => "fast",
            Kernels::Generic => "generic",
        }
    }
}

impl std::str::FromStr for Kernels {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "fast" => Ok(Kernels::Fast),
            "generic" => Ok(Kernels::Generic),
            other => Err(Error::usage(format!(
                "kernels '{other}': expected fast (this CPU's kernels) or generic (candle's ops, as on a GPU)"
            ))),
        }
    }
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_a_bad_one_is_refused_in_one_line() {
        assert_eq!("generic".parse::<Kernels>().ok(), Some(Kernels::Generic));
        assert_eq!("fast".parse::<Kernels>().ok(), Some(Kernels::Fast));
        let e = "gpu"
            .parse::<Kernels>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("kernels 'gpu': expected fast") && !e.contains('\n'),
            "{e}"
        );
    }
}
