//! Scratch buffers of each compute thread, kept between calls (a conv's
//! im2col columns, a tiled conv's output rows): the next forward pass then
//! finds its buffers grown already. They are counted process-wide
//! ([`held_bytes`]) so an engine can report them, and [`release`] lets a
//! thread hand its buffers back (the engine does so on every lane thread
//! once no model is resident).

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of every thread's scratch buffers, in use or kept.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// One buffer; its capacity counts in [`HELD`] until it is dropped.
#[derive(Default)]
struct Scratch(Vec<f32>);

impl Scratch {
    fn grow(&mut self, len: usize) {
        if self.0.len() < len {
            let before = self.0.capacity();
            self.0.resize(len, 0.0);
            HELD.fetch_add((self.0.capacity() - before) * 4, Ordering::Relaxed);
        }
    }

    fn bytes(&self) -> usize {
        self.0.capacity() * 4
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        HELD.fetch_sub(self.bytes(), Ordering::Relaxed);
    }
}

thread_local! {
    /// Scratch buffers of this thread, kept between calls.
    static POOL: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` floats (contents unspecified) kept
/// per thread across calls. The buffer is taken out of the thread's pool for
/// the call, so a re-entrant call on the same thread (a parallel loop inside
/// `f` may run another job here) gets a buffer of its own.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = POOL.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    buf.grow(len);
    let r = f(&mut buf.0[..len]);
    POOL.with(|s| s.borrow_mut().push(buf));
    r
}

/// Drops the calling thread's kept buffers; returns their bytes. A buffer
/// in use further up this thread's stack is not touched.
pub fn release() -> usize {
    let kept = POOL.with(|s| std::mem::take(&mut *s.borrow_mut()));
    kept.iter().map(Scratch::bytes).sum()
}

/// Bytes of every thread's scratch buffers, in use or kept.
pub fn held_bytes() -> usize {
    HELD.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call nested inside another on the same thread gets its own buffer.
    #[test]
    fn nested_scratch_buffers_are_distinct() {
        with_scratch(16, |outer| {
            outer.fill(1.0);
            with_scratch(8, |inner| {
                assert_eq!(inner.len(), 8);
                inner.fill(2.0);
            });
            assert!(outer.iter().all(|&v| v == 1.0));
        });
        with_scratch(32, |b| assert_eq!(b.len(), 32));
    }

    /// Buffers are kept between calls until `release`, counted meanwhile
    /// (on a thread of its own: other tests use scratch beside it).
    #[test]
    fn kept_buffers_are_counted_and_released() {
        let got = std::thread::spawn(|| {
            with_scratch(1 << 20, |b| b[0] = 1.0);
            with_scratch(1 << 10, |b| b[0] = 1.0);
            let counted = held_bytes();
            (counted, release(), release())
        })
        .join();
        let Ok((counted, first, second)) = got else {
            panic!("the scratch thread panicked");
        };
        assert!(first >= 4 << 20, "{first}");
        assert!(counted >= first, "{counted} < {first}");
        assert_eq!(second, 0);
    }
}
