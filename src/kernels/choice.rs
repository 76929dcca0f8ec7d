//! Which path the layers take: the fast CPU kernels here, or candle's own
//! ops everywhere (the generic path, the one a GPU runs). One switch for the
//! process (`--kernels generic`, `MODELDOCK_KERNELS=generic`), so that tests
//! on the CPU can prove the math a GPU will run equal to the fast path.

use std::sync::atomic::{AtomicU8, Ordering};

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
    /// candle's ops, and the graph models in f16 on the CPU too: all of a
    /// GPU's math, half precision included.
    GenericHalf,
}

/// 0: fast, 1: generic, 2: generic in half precision.
static CHOICE: AtomicU8 = AtomicU8::new(0);

impl Kernels {
    /// Makes `self` the path every layer takes from now on.
    pub fn apply(self) {
        let v = match self {
            Kernels::Fast => 0,
            Kernels::Generic => 1,
            Kernels::GenericHalf => 2,
        };
        CHOICE.store(v, Ordering::Relaxed);
    }

    /// The path in force.
    pub fn current() -> Kernels {
        match CHOICE.load(Ordering::Relaxed) {
            0 => Kernels::Fast,
            1 => Kernels::Generic,
            _ => Kernels::GenericHalf,
        }
    }

    /// The graph models compute in f16 on `device`: on a GPU, and on the
    /// CPU under [`Kernels::GenericHalf`] (read when a model loads).
    pub fn half_on(device: &candle_core::Device) -> bool {
        !device.is_cpu() || Kernels::current() == Kernels::GenericHalf
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernels::Fast => "fast",
            Kernels::Generic => "generic",
            Kernels::GenericHalf => "generic-f16",
        }
    }
}

impl std::str::FromStr for Kernels {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "fast" => Ok(Kernels::Fast),
            "generic" => Ok(Kernels::Generic),
            "generic-f16" => Ok(Kernels::GenericHalf),
            other => Err(Error::usage(format!(
                "kernels '{other}': expected fast (this CPU's kernels), generic (candle's ops, as on a GPU) or generic-f16 (and the graph models in f16, as on a GPU)"
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
        assert_eq!("generic-f16".parse::<Kernels>().ok(), Some(Kernels::GenericHalf));
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
