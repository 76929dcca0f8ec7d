//! Property tests of the scheduler and the lanes together, over random
//! streams of requests (random clients, classes and priorities), cancels,
//! queue timeouts and lanes finishing, with a fake clock: every request is
//! answered exactly once, a lane runs one item at a time, bulk work always
//! leaves a lane to interactive work, and everything drains.

use std::collections::BTreeMap;

use modeldock::engine::scheduler::{lane_for, Class, Scheduler, Ticket};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        client: u8,
        bulk: bool,
        priority: u32,
        timeout: Option<u64>,
    },
    /// The client of the k-th waiting item goes away.
    Cancel(usize),
    /// Lane i finishes its item.
    Done(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4u8, any::<bool>(), prop_oneof![3 => Just(0u32), 1 => 1..4u32], prop::option::weighted(0.2, 1..2_000u64))
            .prop_map(|(client, bulk, priority, timeout)| Op::Submit { client, bulk, priority, timeout }),
        1 => (0..64usize).prop_map(Op::Cancel),
        4 => (0..4usize).prop_map(Op::Done),
        1 => (0..1_000u64).prop_map(Op::Advance),
    ]
}

struct Harness {
    s: Scheduler,
    lanes: Vec<Option<(Class, u64)>>,
    now: u64,
    next: u64,
    /// Waiting items: class, deadline.
    waiting: BTreeMap<u64, (Class, Option<u64>)>,
    answers: BTreeMap<u64, u32>,
}

impl Harness {
    fn busy(&self) -> Vec<Option<Class>> {
        self.lanes.iter().map(|l| l.map(|(c, _)| c)).collect()
    }

    fn answer(&mut self, id: u64) {
        *self.answers.entry(id).or_default() += 1;
    }

    /// What the worker does between events: expire, then start what may start.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        let now = self.now;
        let waiting = &self.waiting;
        let late = self
            .s
            .expire(|id, _| waiting.get(&id).and_then(|w| w.1).is_some_and(|d| d <= now));
        for id in late {
            prop_assert!(self.waiting.remove(&id).is_some(), "expired {id} which was not waiting");
            self.answer(id);
        }
        loop {
            let busy = self.busy();
            let Some(id) = self.s.pop_if(now, |c| lane_for(&busy, c).is_some()) else {
                break;
            };
            let Some((class, _)) = self.waiting.remove(&id) else {
                return Err(TestCaseError::fail(format!("popped {id} which was not waiting")));
            };
            let Some(lane) = lane_for(&busy, class) else {
                return Err(TestCaseError::fail(format!(
                    "popped {id} ({class:?}) with no lane for it"
                )));
            };
            prop_assert!(self.lanes[lane].is_none(), "lane {lane} given a second item");
            self.lanes[lane] = Some((class, id));
        }
        let bulk = self
            .lanes
            .iter()
            .filter(|l| matches!(l, Some((Class::Bulk, _))))
            .count();
        if self.lanes.len() > 1 {
            prop_assert!(bulk < self.lanes.len(), "bulk work holds every lane");
        }
        // Nothing waits while a lane could take it.
        let busy = self.busy();
        for (id, (class, _)) in &self.waiting {
            prop_assert!(
                lane_for(&busy, *class).is_none(),
                "{id} waits while a lane is free for it"
            );
        }
        prop_assert_eq!(self.s.len(), self.waiting.len());
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Submit {
                client,
                bulk,
                priority,
                timeout,
            } => {
                let id = self.next;
                self.next += 1;
                let class = if *bulk { Class::Bulk } else { Class::Interactive };
                let t = Ticket::new(format!("c{client}"), class, *priority).with_timeout(*timeout);
                self.s.push(id, t, self.now);
                self.waiting.insert(id, (class, timeout.map(|t| self.now + t)));
                self.answers.insert(id, 0);
            }
            Op::Cancel(k) => {
                if !self.waiting.is_empty() {
                    let id = *self.waiting.keys().nth(k % self.waiting.len()).unwrap_or(&0);
                    prop_assert!(self.s.remove(id), "cancel of waiting {id} found nothing");
                    self.waiting.remove(&id);
                    self.answer(id);
                }
            }
            Op::Done(i) => {
                let n = self.lanes.len();
                if let Some((_, id)) = self.lanes[i % n].take() {
                    self.answer(id);
                }
            }
            Op::Advance(ms) => self.now += ms,
        }
        self.settle()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_item_is_answered_once_and_lanes_are_shared_fairly(
        ops in prop::collection::vec(op(), 1..150),
        lanes in 1usize..4,
        age_ms in 1u64..500,
    ) {
        let mut h = Harness {
            s: Scheduler::new(age_ms),
            lanes: vec![None; lanes],
            now: 0,
            next: 1,
            waiting: BTreeMap::new(),
            answers: BTreeMap::new(),
        };
        for o in &ops {
            h.step(o)?;
        }
        // Drain: lanes finish until nothing is left (bounded).
        for round in 0..10_000usize {
            if h.waiting.is_empty() && h.lanes.iter().all(Option::is_none) {
                break;
            }
            prop_assert!(round < 9_999, "did not drain");
            h.step(&Op::Done(round))?;
        }
        for (id, n) in &h.answers {
            prop_assert_eq!(*n, 1, "request {} answered {} times", id, n);
        }
    }
}
