//! Which waiting image runs next: plain data and functions, like
//! residency (no threads, no clocks: time comes in as milliseconds).
//!
//! Every image of every request is one work item with a [`Ticket`]: the
//! client it came from, its class and an optional priority. The next item is
//! the one with the best *level*, then the next client in turn (round robin,
//! so one client cannot starve another of the same level), then the oldest
//! of that client's items.
//!
//! Levels (lower runs first), in Triton's terms: an explicit `priority` of
//! 1 or more is that level (1 is the highest); `priority` 0, the default, is
//! level 1 for interactive work (a Live frame, one image from the Viewer,
//! the CLI or HTTP) and level 2 for bulk work (a multi-image request, a
//! folder). Aging: each `age_ms` an item waits lowers its level by one (down
//! to 1), so bulk work always finishes under a constant interactive load.

use std::collections::VecDeque;

use super::residency::{Millis, RequestId};

/// Interactive work goes before bulk work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    #[default]
    Interactive,
    Bulk,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Interactive => "interactive",
            Class::Bulk => "bulk",
        }
    }
}

/// Who asked, and how urgently.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ticket {
    /// The request's origin for fair share: a connection, a process, a panel.
    pub client: String,
    pub class: Class,
    /// Triton's meaning: 1 is the highest, 0 the default for the class.
    pub priority: u32,
    /// How long the item may wait to start before it is answered with an
    /// error; `None` = the engine's default (`--queue-timeout`).
    pub timeout_ms: Option<u64>,
}

impl Ticket {
    pub fn new(client: impl Into<String>, class: Class, priority: u32) -> Ticket {
        Ticket {
            client: client.into(),
            class,
            priority,
            timeout_ms: None,
        }
    }

    /// The same ticket with a queue timeout.
    pub fn with_timeout(mut self, timeout_ms: Option<u64>) -> Ticket {
        self.timeout_ms = timeout_ms;
        self
    }

    /// The level before aging.
    pub fn level(&self) -> u32 {
        match (self.priority, self.class) {
            (0, Class::Interactive) => 1,
            (0, Class::Bulk) => 2,
            (p, _) => p,
        }
    }
}

#[derive(Debug, Clone)]
struct Item {
    id: RequestId,
    ticket: Ticket,
    arrived: Millis,
}

/// The waiting items and whose turn it was last.
#[derive(Debug, Clone)]
pub struct Scheduler {
    items: VecDeque<Item>,
    last_client: Option<String>,
    age_ms: u64,
}

/// How long a waiting item takes to climb one level.
pub const DEFAULT_AGE_MS: u64 = 250;

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new(DEFAULT_AGE_MS)
    }
}

impl Scheduler {
    pub fn new(age_ms: u64) -> Scheduler {
        Scheduler {
            items: VecDeque::new(),
            last_client: None,
            age_ms: age_ms.max(1),
        }
    }

    pub fn push(&mut self, id: RequestId, ticket: Ticket, now: Millis) {
        self.items.push_back(Item {
            id,
            ticket,
            arrived: now,
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes an item out (a cancelled request); false when it was not here.
    pub fn remove(&mut self, id: RequestId) -> bool {
        let before = self.items.len();
        self.items.retain(|i| i.id != id);
        self.items.len() != before
    }

    /// Every waiting item, in arrival order (to answer them on shutdown).
    pub fn drain(&mut self) -> Vec<RequestId> {
        self.items.drain(..).map(|i| i.id).collect()
    }

    fn level_at(&self, i: &Item, now: Millis) -> u32 {
        let climbed = now.saturating_sub(i.arrived) / self.age_ms;
        let l = u64::from(i.ticket.level()).saturating_sub(climbed);
        u32::try_from(l.max(1)).unwrap_or(1)
    }

    /// The next item to run, or `None` when nothing waits.
    pub fn pop(&mut self, now: Millis) -> Option<RequestId> {
        self.pop_if(now, |_| true)
    }

    /// The next item among those of a class `allowed` says may start now
    /// (a bulk item waits while the lanes bulk work may take are busy).
    pub fn pop_if(&mut self, now: Millis, allowed: impl Fn(Class) -> bool) -> Option<RequestId> {
        let ok = |i: &Item| allowed(i.ticket.class);
        let best = self
            .items
            .iter()
            .filter(|i| ok(i))
            .map(|i| self.level_at(i, now))
            .min()?;
        let mut clients: Vec<&str> = self
            .items
            .iter()
            .filter(|i| ok(i) && self.level_at(i, now) == best)
            .map(|i| i.ticket.client.as_str())
            .collect();
        clients.sort_unstable();
        clients.dedup();
        // The first client after the last one served, wrapping around.
        let client = match &self.last_client {
            Some(last) => clients
                .iter()
                .find(|c| **c > last.as_str())
                .or(clients.first())
                .map(|c| c.to_string()),
            None => clients.first().map(|c| c.to_string()),
        }?;
        let at = self
            .items
            .iter()
            .position(|i| ok(i) && i.ticket.client == client && self.level_at(i, now) == best)?;
        let item = self.items.remove(at)?;
        self.last_client = Some(client);
        Some(item.id)
    }

    /// Whether an item of `class` waits.
    pub fn has(&self, class: Class) -> bool {
        self.items.iter().any(|i| i.ticket.class == class)
    }

    /// Takes out the items that arrived before `before` (their queue
    /// timeout passed) and returns them.
    pub fn expire(&mut self, before: impl Fn(RequestId, Millis) -> bool) -> Vec<RequestId> {
        let mut gone = Vec::new();
        self.items.retain(|i| {
            let keep = !before(i.id, i.arrived);
            if !keep {
                gone.push(i.id);
            }
            keep
        });
        gone
    }

    /// Waiting items per class.
    pub fn waiting(&self, class: Class) -> usize {
        self.items.iter().filter(|i| i.ticket.class == class).count()
    }
}

/// The lane an item of `class` may start in, given what each lane runs
/// (`None` = free): the first free lane, except that bulk work never takes
/// lane 0 when there are two lanes or more, so a single image never waits
/// behind a batch's image (and lane 0's threads run at the normal priority,
/// the others' below it: see `engine::lanes`).
pub fn lane_for(busy: &[Option<Class>], class: Class) -> Option<usize> {
    let first = usize::from(class == Class::Bulk && busy.len() > 1);
    busy.iter()
        .enumerate()
        .skip(first)
        .find(|(_, b)| b.is_none())
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(client: &str, class: Class, priority: u32) -> Ticket {
        Ticket::new(client, class, priority)
    }

    fn order(s: &mut Scheduler, now: Millis) -> Vec<RequestId> {
        std::iter::from_fn(|| s.pop(now)).collect()
    }

    #[test]
    fn interactive_goes_before_bulk_whatever_the_arrival() {
        let mut s = Scheduler::new(1000);
        for id in 0..5 {
            s.push(id, t("batch", Class::Bulk, 0), 0);
        }
        s.push(9, t("viewer", Class::Interactive, 0), 1);
        assert_eq!(order(&mut s, 2), vec![9, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn clients_of_one_level_take_turns() {
        let mut s = Scheduler::new(1000);
        for id in 0..3 {
            s.push(id, t("a", Class::Bulk, 0), 0);
        }
        for id in 10..13 {
            s.push(id, t("b", Class::Bulk, 0), 0);
        }
        assert_eq!(order(&mut s, 0), vec![0, 10, 1, 11, 2, 12]);
    }

    #[test]
    fn priority_follows_triton_one_is_highest_zero_is_the_default() {
        let mut s = Scheduler::new(10_000);
        s.push(1, t("a", Class::Interactive, 3), 0);
        s.push(2, t("a", Class::Interactive, 0), 0);
        s.push(3, t("a", Class::Bulk, 1), 0);
        s.push(4, t("a", Class::Bulk, 0), 0);
        // Levels: 3, 1, 1, 2 -> the two level-1 items in arrival order.
        assert_eq!(order(&mut s, 0), vec![2, 3, 4, 1]);
    }

    #[test]
    fn waiting_bulk_work_climbs_to_the_interactive_level_and_shares_it() {
        let mut s = Scheduler::new(100);
        s.push(1, t("batch", Class::Bulk, 0), 0);
        s.push(2, t("live", Class::Interactive, 0), 50);
        s.push(3, t("live", Class::Interactive, 0), 60);
        // At 50 ms the bulk item is still level 2.
        assert_eq!(s.pop(70), Some(2));
        // At 100 ms it has climbed to level 1: the batch client's turn.
        assert_eq!(s.pop(100), Some(1));
        assert_eq!(s.pop(100), Some(3));
        assert_eq!(s.pop(100), None);
    }

    proptest::proptest! {
        /// Random pushes, pops and removals over random tickets and clock
        /// steps: each item leaves exactly once (popped or removed), each pop
        /// takes an item of the best level at that moment, and in the end
        /// everything comes out.
        #[test]
        fn every_item_leaves_exactly_once_and_pops_take_the_best_level(
            ops in proptest::collection::vec((0u8..3, 0u8..3, proptest::bool::ANY, 0u32..4, 0u64..80), 1..300)
        ) {
            let mut s = Scheduler::new(100);
            let (mut now, mut next_id) = (0u64, 0u64);
            let mut waiting: std::collections::HashMap<RequestId, Ticket> = Default::default();
            let mut arrived: std::collections::HashMap<RequestId, Millis> = Default::default();
            let mut gone = std::collections::HashSet::new();
            for (op, client, bulk, priority, step) in ops {
                now += step;
                match op {
                    0 => {
                        let class = if bulk { Class::Bulk } else { Class::Interactive };
                        let t = Ticket::new(format!("c{client}"), class, priority);
                        s.push(next_id, t.clone(), now);
                        waiting.insert(next_id, t);
                        arrived.insert(next_id, now);
                        next_id += 1;
                    }
                    1 => {
                        let level = |id: &RequestId| {
                            let climbed = (now - arrived[id]) / 100;
                            (u64::from(waiting[id].level()).saturating_sub(climbed)).max(1)
                        };
                        let best = waiting.keys().map(level).min();
                        match s.pop(now) {
                            Some(id) => {
                                proptest::prop_assert!(waiting.contains_key(&id), "{id} popped twice or never pushed");
                                proptest::prop_assert_eq!(Some(level(&id)), best);
                                waiting.remove(&id);
                                proptest::prop_assert!(gone.insert(id));
                            }
                            None => proptest::prop_assert!(waiting.is_empty()),
                        }
                    }
                    _ => {
                        if let Some(id) = waiting.keys().next().copied() {
                            proptest::prop_assert!(s.remove(id));
                            waiting.remove(&id);
                            proptest::prop_assert!(gone.insert(id));
                        }
                    }
                }
                proptest::prop_assert_eq!(s.len(), waiting.len());
            }
            while let Some(id) = s.pop(now) {
                proptest::prop_assert!(waiting.remove(&id).is_some());
            }
            proptest::prop_assert!(waiting.is_empty());
        }
    }

    #[test]
    fn removed_and_drained_items_are_gone() {
        let mut s = Scheduler::default();
        s.push(1, t("a", Class::Bulk, 0), 0);
        s.push(2, t("a", Class::Interactive, 0), 0);
        assert_eq!((s.waiting(Class::Bulk), s.waiting(Class::Interactive)), (1, 1));
        assert!(s.remove(2));
        assert!(!s.remove(2));
        assert_eq!(s.drain(), vec![1]);
        assert!(s.is_empty());
    }

    #[test]
    fn bulk_work_leaves_one_lane_to_interactive_work() {
        use Class::{Bulk, Interactive};
        assert_eq!(lane_for(&[None], Bulk), Some(0));
        assert_eq!(lane_for(&[Some(Bulk)], Interactive), None);
        assert_eq!(lane_for(&[None, None], Bulk), Some(1));
        assert_eq!(lane_for(&[None, Some(Bulk)], Bulk), None);
        assert_eq!(lane_for(&[None, Some(Bulk)], Interactive), Some(0));
        assert_eq!(lane_for(&[Some(Bulk), None], Interactive), Some(1));
        assert_eq!(lane_for(&[Some(Interactive), None], Bulk), Some(1));
        assert_eq!(lane_for(&[Some(Interactive), None], Interactive), Some(1));
        assert_eq!(lane_for(&[None, Some(Bulk), None], Bulk), Some(2));
        assert_eq!(lane_for(&[None, Some(Bulk), Some(Bulk)], Bulk), None);
        assert_eq!(lane_for(&[None, Some(Bulk), Some(Bulk)], Interactive), Some(0));
        assert_eq!(lane_for(&[Some(Bulk), Some(Bulk), None], Interactive), Some(2));
    }

    #[test]
    fn pop_if_skips_classes_that_may_not_start() {
        let mut s = Scheduler::new(1000);
        s.push(1, t("batch", Class::Bulk, 0), 0);
        s.push(2, t("batch", Class::Bulk, 0), 0);
        assert_eq!(s.pop_if(0, |c| c == Class::Interactive), None);
        s.push(3, t("viewer", Class::Interactive, 0), 5);
        assert_eq!(s.pop_if(6, |c| c == Class::Interactive), Some(3));
        assert!(s.has(Class::Bulk) && !s.has(Class::Interactive));
        assert_eq!(s.expire(|id, arrived| id == 2 && arrived == 0), vec![2]);
        assert_eq!(s.pop(7), Some(1));
        assert!(s.is_empty());
    }
}
