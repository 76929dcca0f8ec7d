//! Driving the app in `egui_kittest` tests.

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use modeldock::ui::app::ModeldockApp;

/// Steps the app until `pred` holds, or panics naming `what` after [`super::WAIT`].
pub fn step_until(
    h: &mut Harness<'static, ModeldockApp>,
    what: &str,
    pred: impl Fn(&Harness<'static, ModeldockApp>) -> bool,
) {
    let end = Instant::now() + super::WAIT;
    while Instant::now() < end {
        h.step();
        if pred(h) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}
