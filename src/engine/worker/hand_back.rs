//! Memory back to the OS once no model is resident (see `engine::memory`).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Worker;
use crate::engine::{allocator, arenas, memory};
use crate::kernels::scratch;

impl Worker {
    /// Once the last model has left and the lanes are idle, the memory
    /// that served it goes back to the OS: every lane thread's scratch
    /// buffers (kept between forward passes), each one's arena top and the
    /// armed threads' (see `engine::arenas`), the allocator's free pages in
    /// every arena, and the pages of embedded weights the loads read. A
    /// model that arrives meanwhile calls it off.
    pub(super) fn hand_back_memory(&mut self) {
        if !self.hand_back || !self.lanes.is_idle() {
            return;
        }
        self.hand_back = false;
        if !self.models.is_empty() {
            return;
        }
        let window = arenas::TrimWindow::open();
        let freed = AtomicUsize::new(0);
        self.lanes.on_every_thread(|| {
            freed.fetch_add(scratch::release(), Ordering::Relaxed);
            window.trim_own_arena();
        });
        let freed = freed.into_inner() + scratch::release();
        window.trim_own_arena();
        let others = arenas::trim_armed(&window);
        allocator::release_free_memory();
        drop(window);
        let weights = memory::release_embedded_weights(&self.registry);
        self.hand_backs += 1;
        self.dirty = true;
        tracing::debug!(
            "no model resident: {} of scratch buffers, {} of embedded weights' pages and the free heap \
             ({} other threads' arenas) handed back",
            crate::units::human_bytes(freed as u64),
            crate::units::human_bytes(weights),
            others
        );
    }
}
