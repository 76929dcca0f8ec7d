//! Property tests of the residency state machine over random command streams,
//! with fake models (sizes only) and a fake clock.

use std::collections::{BTreeMap, BTreeSet};

use modeldock::engine::residency::{Action, FreeReason, KeepAlive, ModelState, Phase, Residency};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Request(usize),
    Load(usize),
    Unload(usize),
    Pin(usize, bool),
    /// Finish the outstanding load of model i: ok, failed, or (if it was
    /// told to cancel) stopped.
    LoadDone(usize, Outcome),
    /// The client of the k-th waiting request goes away.
    Withdraw(usize),
    /// Finish the oldest running request of model i.
    Finish(usize),
    Advance(u64),
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Failed,
    /// Obeys a cancel if one was sent (else finishes ok).
    Stopped,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize).prop_map(Op::Request),
        1 => (0..4usize).prop_map(Op::Load),
        1 => (0..4usize).prop_map(Op::Unload),
        1 => (0..4usize, any::<bool>()).prop_map(|(m, p)| Op::Pin(m, p)),
        3 => (0..4usize, prop_oneof![6 => Just(Outcome::Ok), 1 => Just(Outcome::Failed), 3 => Just(Outcome::Stopped)])
            .prop_map(|(m, o)| Op::LoadDone(m, o)),
        2 => (0..64usize).prop_map(Op::Withdraw),
        3 => (0..4usize).prop_map(Op::Finish),
        1 => (0..20_000u64).prop_map(Op::Advance),
    ]
}

const SIZES: [u64; 4] = [300, 500, 200, 700];

/// A fake worker around the state machine that checks every invariant.
struct Harness {
    r: Residency,
    now: u64,
    next_req: u64,
    loading: BTreeSet<String>,
    /// Loads told to cancel (and not told to resume).
    cancelling: BTreeSet<String>,
    running: BTreeMap<String, Vec<u64>>,
    /// The model each request was sent for.
    model_of: BTreeMap<u64, String>,
    answers: BTreeMap<u64, u32>,
    issued: BTreeSet<u64>,
}

fn name(i: usize) -> String {
    format!("m{i}")
}

impl Harness {
    fn new(budget: u64, max_resident: usize, keep_alive: KeepAlive, keep_alives: [Option<KeepAlive>; 4]) -> Self {
        let mut r = Residency::new(budget, max_resident, keep_alive);
        for (i, size) in SIZES.iter().enumerate() {
            r.register(&name(i), *size, false, keep_alives[i]);
        }
        Harness {
            r,
            now: 0,
            next_req: 1,
            loading: BTreeSet::new(),
            cancelling: BTreeSet::new(),
            running: BTreeMap::new(),
            model_of: BTreeMap::new(),
            answers: BTreeMap::new(),
            issued: BTreeSet::new(),
        }
    }

    fn apply(&mut self, actions: Vec<Action>, before: &Residency) -> Result<(), TestCaseError> {
        for a in actions {
            match a {
                Action::StartLoad { model } => {
                    prop_assert!(
                        !self.loading.contains(&model),
                        "second load of {model} while one is in flight"
                    );
                    self.loading.insert(model);
                }
                Action::Run { model, request } => {
                    prop_assert!(
                        self.r.slot(&model).is_some_and(|s| s.phase.holds_weights()),
                        "ran {request} on {model} which is not resident (or leaving after its requests)"
                    );
                    *self.answers.entry(request).or_default() += 0;
                    self.running.entry(model).or_default().push(request);
                }
                Action::Reject { request, .. } => {
                    *self.answers.entry(request).or_default() += 1;
                }
                Action::Free { model, reason } => {
                    let old = before.slot(&model);
                    let running = self.running.get(&model).map(|v| v.len()).unwrap_or(0);
                    prop_assert_eq!(running, 0, "freed {} with requests running", model);
                    if let Some(old) = old {
                        match reason {
                            FreeReason::Evicted { .. } => {
                                prop_assert!(!old.pinned, "evicted pinned {}", model);
                                prop_assert!(old.parked.is_empty() && old.in_flight.is_empty());
                            }
                            FreeReason::Idle => {
                                prop_assert!(!old.pinned, "keep-alive freed pinned {}", model);
                            }
                            FreeReason::Unloaded => {}
                            FreeReason::Cancelled => {
                                prop_assert!(
                                    matches!(old.phase, Phase::Loading { .. }),
                                    "cancelled {} which was not loading",
                                    model
                                );
                            }
                        }
                    }
                }
                Action::LoadFailed { .. } => {}
                Action::CancelLoad { model } => {
                    prop_assert!(self.loading.contains(&model), "cancelled {model} which is not loading");
                    prop_assert!(self.cancelling.insert(model.clone()), "{model} cancelled twice");
                    let s = self.r.slot(&model);
                    prop_assert!(
                        s.is_some_and(|s| s.parked.is_empty() && (s.unload_pending || !s.pinned)),
                        "cancelled {model} while something waits for it"
                    );
                }
                Action::ResumeLoad { model } => {
                    prop_assert!(
                        self.cancelling.remove(&model),
                        "resumed {model} which was not cancelling"
                    );
                }
            }
        }
        prop_assert!(
            self.r.used_bytes() <= self.r.budget,
            "budget exceeded: {} > {}",
            self.r.used_bytes(),
            self.r.budget
        );
        prop_assert!(self.r.resident_count() <= self.r.max_resident);
        for (k, s) in self.r.slots() {
            prop_assert!(
                !s.cancel_pending || s.parked.is_empty(),
                "{} cancelling with requests parked",
                k
            );
            prop_assert_eq!(
                s.cancel_pending,
                self.cancelling.contains(k.as_str()),
                "{} cancel flag out of step",
                k
            );
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.r.clone();
        let actions = match op {
            Op::Request(i) => {
                let id = self.next_req;
                self.next_req += 1;
                self.issued.insert(id);
                self.answers.entry(id).or_default();
                self.model_of.insert(id, name(*i));
                self.r.request(&name(*i), id, self.now)
            }
            Op::Load(i) => self.r.load(&name(*i), self.now),
            Op::Unload(i) => self.r.unload(&name(*i), self.now),
            Op::Pin(i, p) => {
                self.r.set_pinned(&name(*i), *p);
                Vec::new()
            }
            Op::LoadDone(i, outcome) => {
                let m = name(*i);
                if !self.loading.remove(&m) {
                    return Ok(());
                }
                let told = self.cancelling.remove(&m);
                match outcome {
                    Outcome::Stopped if told => self.r.load_cancelled(&m, self.now),
                    Outcome::Ok | Outcome::Stopped => self.r.load_finished(&m, Ok(Some(SIZES[*i])), self.now),
                    Outcome::Failed => self.r.load_finished(&m, Err(format!("{m}: disk on fire")), self.now),
                }
            }
            Op::Withdraw(k) => {
                // Requests neither answered nor running: the ones a client can withdraw.
                let running: BTreeSet<u64> = self.running.values().flatten().copied().collect();
                let waiting: Vec<u64> = self
                    .issued
                    .iter()
                    .copied()
                    .filter(|id| self.answers.get(id).copied().unwrap_or(0) == 0 && !running.contains(id))
                    .collect();
                if waiting.is_empty() {
                    return Ok(());
                }
                let req = waiting[k % waiting.len()];
                let m = self.model_of.get(&req).cloned().unwrap_or_default();
                // The worker answers a withdrawn request itself.
                *self.answers.entry(req).or_default() += 1;
                self.r.withdraw(&m, req)
            }
            Op::Finish(i) => {
                let m = name(*i);
                let Some(req) = self
                    .running
                    .get_mut(&m)
                    .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
                else {
                    return Ok(());
                };
                *self.answers.entry(req).or_default() += 1;
                self.r.request_finished(&m, req, self.now)
            }
            Op::Advance(ms) => {
                self.now += ms;
                self.r.tick(self.now)
            }
        };
        self.apply(actions, &before)
    }

    /// Completes everything outstanding: every load succeeds, every request finishes.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if let Some(m) = self.loading.iter().next().cloned() {
                let i: usize = m[1..].parse().unwrap_or(0);
                self.step(&Op::LoadDone(i, Outcome::Stopped))?;
                continue;
            }
            if let Some((m, _)) = self.running.iter().find(|(_, v)| !v.is_empty()) {
                let i: usize = m[1..].parse().unwrap_or(0);
                self.step(&Op::Finish(i))?;
                continue;
            }
            return Ok(());
        }
        Err(TestCaseError::fail("did not quiesce"))
    }
}

fn keep_alive() -> impl Strategy<Value = KeepAlive> {
    prop_oneof![
        Just(KeepAlive::Forever),
        Just(KeepAlive::Millis(0)),
        (1..30_000u64).prop_map(KeepAlive::Millis),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_random_streams(
        ops in prop::collection::vec(op(), 1..120),
        budget in 600u64..2000,
        max_resident in 1usize..4,
        ka in keep_alive(),
        kas in prop::array::uniform4(prop::option::of(keep_alive())),
    ) {
        let mut h = Harness::new(budget, max_resident, ka, kas);
        for o in &ops {
            h.step(o)?;
        }
        h.drain()?;
        // Every request was answered exactly once.
        for id in &h.issued {
            prop_assert_eq!(h.answers.get(id).copied().unwrap_or(0), 1, "request {} answered {} times", id, h.answers.get(id).copied().unwrap_or(0));
        }
        // Nobody is left waiting, and no load is left half done.
        for (k, s) in h.r.slots() {
            prop_assert!(s.parked.is_empty() && s.after_unload.is_empty() && s.in_flight.is_empty(), "{} still has waiters", k);
            prop_assert!(!matches!(s.phase, Phase::Loading { .. }), "{} still loading", k);
        }
    }

    #[test]
    fn concurrent_requests_share_one_load(n in 1usize..64) {
        let mut r = Residency::new(1000, 4, KeepAlive::Forever);
        r.register("a", 100, false, None);
        let mut starts = 0;
        for i in 0..n {
            starts += r.request("a", i as u64, 0).iter().filter(|a| matches!(a, Action::StartLoad { .. })).count();
        }
        prop_assert_eq!(starts, 1);
        let runs: Vec<u64> = r
            .load_finished("a", Ok(None), 1)
            .into_iter()
            .filter_map(|a| if let Action::Run { request, .. } = a { Some(request) } else { None })
            .collect();
        prop_assert_eq!(runs, (0..n as u64).collect::<Vec<_>>(), "parked requests run in arrival order");
    }
}

#[test]
fn a_load_whose_only_request_leaves_is_cancelled_and_freed() {
    let mut r = Residency::new(1000, 4, KeepAlive::Forever);
    r.register("a", 400, false, None);
    r.request("a", 1, 0);
    assert_eq!(r.used_bytes(), 400, "the load holds its budget");
    assert_eq!(r.withdraw("a", 1), vec![Action::CancelLoad { model: "a".into() }]);
    assert_eq!(r.used_bytes(), 400, "held until the loader lets go");
    assert_eq!(
        r.load_cancelled("a", 5),
        vec![Action::Free {
            model: "a".into(),
            reason: FreeReason::Cancelled
        }]
    );
    assert_eq!(r.used_bytes(), 0);
    // A load the user asked for goes on when its request leaves.
    r.load("a", 6);
    r.request("a", 2, 6);
    assert!(r.withdraw("a", 2).is_empty(), "{:?}", r.slot("a"));
    // Two waiters, one leaves: the load goes on for the other.
    let mut r = Residency::new(1000, 4, KeepAlive::Forever);
    r.register("a", 400, false, None);
    r.request("a", 1, 0);
    r.request("a", 2, 0);
    assert!(r.withdraw("a", 1).is_empty());
    // A request arriving while the cancel is on its way resumes the load.
    assert_eq!(r.withdraw("a", 2), vec![Action::CancelLoad { model: "a".into() }]);
    assert_eq!(r.request("a", 3, 1), vec![Action::ResumeLoad { model: "a".into() }]);
    // Too late: the loader had already stopped; a fresh load serves it.
    assert_eq!(r.load_cancelled("a", 2), vec![Action::StartLoad { model: "a".into() }]);
    assert_eq!(
        r.load_finished("a", Ok(None), 3),
        vec![Action::Run {
            model: "a".into(),
            request: 3
        }]
    );
}

#[test]
fn failed_load_rejects_waiters_then_a_retry_succeeds() {
    let mut r = Residency::new(1000, 4, KeepAlive::Forever);
    r.register("a", 100, false, None);
    r.request("a", 1, 0);
    r.request("a", 2, 0);
    let a = r.load_finished("a", Err("a: truncated file".into()), 1);
    let rejected: Vec<_> = a.iter().filter(|x| matches!(x, Action::Reject { .. })).collect();
    assert_eq!(rejected.len(), 2);
    assert!(matches!(r.slot("a").map(|s| &s.phase), Some(Phase::Failed { .. })));
    let a = r.request("a", 3, 2);
    assert!(a.contains(&Action::StartLoad { model: "a".into() }));
    let a = r.load_finished("a", Ok(None), 3);
    assert_eq!(
        a,
        vec![Action::Run {
            model: "a".into(),
            request: 3
        }]
    );
}

#[test]
fn budget_refusal_names_need_free_and_pinned() {
    let mut r = Residency::new(1000 << 20, 4, KeepAlive::Forever);
    r.register("big", 900 << 20, true, None);
    r.register("b", 412 << 20, false, None);
    r.load("big", 0);
    r.load_finished("big", Ok(None), 1);
    let a = r.load("b", 2);
    let Some(Action::LoadFailed { error, .. }) = a.first() else {
        panic!("expected a refusal, got {a:?}");
    };
    assert!(error.contains("needs 412 MiB"), "{error}");
    assert!(error.contains("100 MiB free of a 1000 MiB budget"), "{error}");
    assert!(error.contains("pinned: big"), "{error}");
    assert!(
        matches!(r.slot("big").map(|s| &s.phase), Some(Phase::Resident { .. })),
        "pinned model kept"
    );
}

#[test]
fn lru_idle_model_is_evicted_first() {
    let mut r = Residency::new(1000, 8, KeepAlive::Forever);
    for (m, s) in [("a", 400), ("b", 400), ("c", 400)] {
        r.register(m, s, false, None);
    }
    r.load("a", 0);
    r.load_finished("a", Ok(None), 0);
    r.load("b", 10);
    r.load_finished("b", Ok(None), 10);
    // Use a after b, so b is the least recently used.
    r.request("a", 1, 20);
    r.request_finished("a", 1, 21);
    let acts = r.load("c", 30);
    assert_eq!(
        acts[0],
        Action::Free {
            model: "b".into(),
            reason: FreeReason::Evicted { for_model: "c".into() }
        }
    );
}

#[test]
fn unload_waits_for_in_flight_and_later_requests_reload() {
    let mut r = Residency::new(1000, 8, KeepAlive::Forever);
    r.register("a", 100, false, None);
    r.load("a", 0);
    r.load_finished("a", Ok(None), 0);
    assert_eq!(
        r.request("a", 1, 1),
        vec![Action::Run {
            model: "a".into(),
            request: 1
        }]
    );
    assert!(r.unload("a", 2).is_empty(), "busy model is not freed yet");
    assert!(r.request("a", 2, 3).is_empty(), "request after the unload waits");
    let acts = r.request_finished("a", 1, 4);
    assert_eq!(
        acts,
        vec![
            Action::Free {
                model: "a".into(),
                reason: FreeReason::Unloaded
            },
            Action::StartLoad { model: "a".into() }
        ]
    );
    assert_eq!(
        r.load_finished("a", Ok(None), 5),
        vec![Action::Run {
            model: "a".into(),
            request: 2
        }]
    );
}

#[test]
fn a_busy_model_is_unloading_until_its_requests_end_and_a_load_keeps_it() {
    let mut r = Residency::new(1000, 8, KeepAlive::Forever);
    r.register("a", 100, false, None);
    r.load("a", 0);
    r.load_finished("a", Ok(Some(90)), 0);
    r.request("a", 1, 1);
    assert!(r.unload("a", 2).is_empty());
    let s = r.slot("a").map(|s| (s.phase.clone(), s.phase.state()));
    assert_eq!(
        s,
        Some((Phase::Unloading { measured: Some(90) }, ModelState::Unloading))
    );
    assert!(ModelState::Unloading.in_memory(), "its bytes still count");
    assert_eq!(r.used_bytes(), 100);
    // Not a victim while it leaves, and a second unload changes nothing.
    assert!(r.unload("a", 3).is_empty());
    r.register("b", 950, false, None);
    assert!(r.plan_eviction("b").is_err(), "a leaving model is not evicted twice");
    // A load while it leaves keeps it: resident again, the waiting request runs.
    assert!(r.request("a", 2, 4).is_empty(), "a request after the unload waits");
    assert_eq!(
        r.load("a", 5),
        vec![Action::Run {
            model: "a".into(),
            request: 2
        }]
    );
    assert_eq!(r.slot("a").map(|s| s.phase.state()), Some(ModelState::Resident));
    // Unloaded during its load: loaded as Unloading, its parked request
    // runs, then it leaves.
    r.register("c", 10, false, None);
    r.request("c", 3, 6);
    assert!(r.unload("c", 7).is_empty(), "a parked request keeps the load going");
    assert_eq!(
        r.load_finished("c", Ok(None), 8),
        vec![Action::Run {
            model: "c".into(),
            request: 3
        }]
    );
    assert_eq!(r.slot("c").map(|s| s.phase.state()), Some(ModelState::Unloading));
    assert_eq!(
        r.request_finished("c", 3, 9),
        vec![Action::Free {
            model: "c".into(),
            reason: FreeReason::Unloaded
        }]
    );
    assert_eq!(r.slot("c").map(|s| s.phase.state()), Some(ModelState::Available));
}

#[test]
fn keep_alive_frees_only_idle_models() {
    let mut r = Residency::new(1000, 8, KeepAlive::Millis(100));
    r.register("a", 100, false, None);
    r.request("a", 1, 0);
    r.load_finished("a", Ok(None), 0);
    assert!(r.tick(1000).is_empty(), "a request is running");
    r.request_finished("a", 1, 1000);
    assert!(r.tick(1050).is_empty());
    assert_eq!(
        r.tick(1100),
        vec![Action::Free {
            model: "a".into(),
            reason: FreeReason::Idle
        }]
    );
    assert_eq!(KeepAlive::parse("5m"), Some(KeepAlive::Millis(300_000)));
    assert_eq!(KeepAlive::parse("-1"), Some(KeepAlive::Forever));
    assert_eq!(KeepAlive::parse("0"), Some(KeepAlive::Millis(0)));
    assert_eq!(KeepAlive::parse("soon"), None);
}
