//! How much of the machine interactive work takes while bulk work waits:
//! plain data and functions, like the scheduler (time comes in as
//! microseconds on the worker's clock).
//!
//! Interactive work goes first (see [`super::scheduler`]) and has a lane of
//! its own, so on its own it would take every core it can use: a client
//! that sends single images back to back would leave a batch almost
//! nothing. While bulk work waits or runs, interactive images therefore
//! start no closer together than their cost divided by the interactive
//! *share* (the fraction of one core they may take): with a share of 0.4
//! and images that cost 8 ms, one starts at most every 20 ms (the default
//! share is [`DEFAULT_INTERACTIVE_SHARE`]). A click, or a
//! camera frame every 33 ms, arrives later than that and never waits; a
//! client sending as fast as it is answered is held to the share, and the
//! batch keeps the rest. Without bulk work nothing is spaced.
//!
//! The cost is the median of what the last [`COSTS`] interactive images
//! took in their lanes (decode and run) while bulk work was present: what an
//! image costs beside a batch, on the one thread it then gets (see
//! `engine::lanes`). A median, so one image slowed by the batch's threads
//! does not stretch the spacing of the next ones.

/// Microseconds on the worker's clock.
pub type Micros = u64;

/// The fraction of one core interactive work may take while bulk work
/// waits, by default. `bench/contention.py` on two cores (a client sending
/// single `face-detector` images back to back beside two `mtcnn` batch
/// clients) measured the two ratios the scheduler is held to at shares
/// from 0.4 to 0.6: a lower share costs the interactive p99, a higher one
/// the batch's throughput, and 0.45 kept the p99 within 3× of its p99
/// alone with the batch at 0.7× its speed alone (see bench/README.md).
pub const DEFAULT_INTERACTIVE_SHARE: f64 = 0.45;

/// How many of the last interactive images' costs the median is over.
pub const COSTS: usize = 9;

#[derive(Debug, Clone, PartialEq)]
pub struct Pacer {
    share: f64,
    /// The last interactive images' lane times beside bulk work, µs, oldest
    /// first (at most [`COSTS`]).
    costs: std::collections::VecDeque<Micros>,
    last_start: Option<Micros>,
}

impl Pacer {
    /// `share` of one core (clamped to 0.01..=1; 1 spaces nothing: an image
    /// cannot start again before the last one's cost has passed anyway).
    pub fn new(share: f64) -> Pacer {
        let share = if share.is_finite() { share.clamp(0.01, 1.0) } else { 1.0 };
        Pacer {
            share,
            costs: std::collections::VecDeque::with_capacity(COSTS),
            last_start: None,
        }
    }

    pub fn share(&self) -> f64 {
        self.share
    }

    /// The median cost of an interactive image beside bulk work, µs;
    /// `None` until one has been measured.
    pub fn cost(&self) -> Option<Micros> {
        let mut v: Vec<Micros> = self.costs.iter().copied().collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }

    /// The earliest time the next interactive image may start while bulk
    /// work is present (0: at once).
    pub fn next_start(&self) -> Micros {
        match (self.last_start, self.cost()) {
            (Some(at), Some(cost)) if self.share < 1.0 => at.saturating_add((cost as f64 / self.share) as Micros),
            _ => 0,
        }
    }

    /// Whether an interactive image may start at `now`.
    pub fn may_start(&self, now: Micros, bulk_present: bool) -> bool {
        !bulk_present || now >= self.next_start()
    }

    /// How long an interactive image that waits has left to wait at `now`
    /// (0 when it may start).
    pub fn wait(&self, now: Micros, bulk_present: bool) -> Micros {
        if bulk_present {
            self.next_start().saturating_sub(now)
        } else {
            0
        }
    }

    /// An interactive image started at `now`.
    pub fn started(&mut self, now: Micros) {
        self.last_start = Some(now);
    }

    /// An interactive image took `lane_time` µs in its lanes; only what it
    /// cost beside bulk work counts (alone it has every core).
    pub fn ran(&mut self, lane_time: Micros, bulk_present: bool) {
        if !bulk_present {
            return;
        }
        if self.costs.len() == COSTS {
            self.costs.pop_front();
        }
        self.costs.push_back(lane_time);
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new(DEFAULT_INTERACTIVE_SHARE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_spaced_without_bulk_work_or_before_a_cost_is_known() {
        let mut p = Pacer::new(0.4);
        assert!(p.may_start(0, true), "no cost measured yet");
        p.started(1_000);
        assert!(p.may_start(1_001, true), "still no cost");
        p.ran(8_000, false);
        assert_eq!(p.cost(), None, "a cost alone does not count");
        p.ran(8_000, true);
        assert!(p.may_start(1_001, false), "no bulk work: never spaced");
        assert_eq!(p.wait(1_001, false), 0);
    }

    #[test]
    fn beside_bulk_work_starts_are_spaced_by_cost_over_share() {
        let mut p = Pacer::new(0.4);
        p.ran(8_000, true);
        p.started(100_000);
        // 8 ms at 40 % of a core: one image each 20 ms.
        assert_eq!(p.next_start(), 120_000);
        assert!(!p.may_start(119_999, true));
        assert_eq!(p.wait(110_000, true), 10_000);
        assert!(p.may_start(120_000, true));
        assert_eq!(p.wait(125_000, true), 0);
    }

    #[test]
    fn the_cost_is_the_median_of_the_last_images() {
        let mut p = Pacer::new(0.5);
        p.ran(8_000, true);
        p.ran(30_000, true);
        p.ran(10_000, true);
        // One slow image does not stretch the spacing.
        assert_eq!(p.cost(), Some(10_000));
        p.started(0);
        assert_eq!(p.next_start(), 20_000);
        // Only the last COSTS images count.
        for _ in 0..COSTS {
            p.ran(4_000, true);
        }
        assert_eq!(p.cost(), Some(4_000));
    }

    #[test]
    fn a_full_share_spaces_nothing_and_bad_shares_are_clamped() {
        let mut p = Pacer::new(1.0);
        p.ran(8_000, true);
        p.started(0);
        assert!(p.may_start(1, true));
        assert_eq!(Pacer::new(f64::NAN).share(), 1.0);
        assert_eq!(Pacer::new(7.0).share(), 1.0);
        assert_eq!(Pacer::new(0.0).share(), 0.01);
    }

    #[test]
    fn a_camera_slower_than_the_spacing_never_waits() {
        let mut p = Pacer::new(0.4);
        p.ran(8_000, true);
        // Frames every 33 ms: later than the 20 ms spacing each time.
        for f in 0..30u64 {
            let now = f * 33_000;
            assert!(p.may_start(now, true), "frame {f}");
            p.started(now);
            p.ran(8_000, true);
        }
    }
}
