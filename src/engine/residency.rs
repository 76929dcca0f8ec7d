//! Residency: which models are in memory, which are loading, and who waits.
//!
//! Plain data and functions: no threads, no clocks (time is passed in as
//! milliseconds), no tensors. The worker feeds it events and carries out the
//! [`Action`]s it returns, so every policy decision lives in this file.
//!
//! Policy, in one screen:
//! * Lazy: a request for a model that is not resident starts its load and
//!   parks. Requests arriving during that load park behind it (single
//!   flight). When the load ends they run in arrival order, or all receive
//!   the load's error.
//! * Budget: before a load starts, the bytes of every Loading or Resident model
//!   (predicted from the weights header) plus the new one must fit the budget,
//!   and the count must fit `max_resident`. To make room we evict, in this
//!   order: least recently used first, and only models that are unpinned,
//!   idle (nothing in flight, nobody parked) and not already leaving. If even
//!   evicting all of those would not make it fit, nothing is evicted and the
//!   load fails with a message saying what is needed, what is free and what
//!   is pinned.
//! * Unload: an idle model is freed at once; a busy one is freed when its
//!   in-flight requests finish. Requests arriving after an Unload wait for that
//!   and then start a fresh load.
//! * Keep-alive: an idle unpinned model is freed once `keep_alive` has passed
//!   since its last use (0 = right after each request, `Forever` = never).
//! * Every request is answered exactly once: a `Run` or a `Reject`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

pub type RequestId = u64;
/// Milliseconds on whatever clock the caller uses.
pub type Millis = u64;

pub use crate::units::KeepAlive;

/// A model's state as clients see it; serialises to the same strings as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ModelState {
    Available,
    Loading,
    Resident,
    /// Asked to leave; its requests in flight finish first.
    Unloading,
    Failed,
}

impl ModelState {
    /// Loading, resident or leaving: the model's bytes count against the budget.
    pub fn in_memory(self) -> bool {
        matches!(self, ModelState::Loading | ModelState::Resident | ModelState::Unloading)
    }
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelState::Available => "Available",
            ModelState::Loading => "Loading",
            ModelState::Resident => "Resident",
            ModelState::Unloading => "Unloading",
            ModelState::Failed => "Failed",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Available,
    /// `downloading`: the loader is still fetching the weights (the first of
    /// its two phases); the bytes count the download, then the load.
    Loading {
        bytes_done: u64,
        bytes_total: u64,
        downloading: bool,
    },
    Resident {
        measured: Option<u64>,
    },
    /// Resident and asked to leave (an unload): the requests in flight
    /// finish, then it is freed. Requests that arrive meanwhile wait for a
    /// fresh load, and a load asked meanwhile keeps it resident.
    Unloading {
        measured: Option<u64>,
    },
    Failed {
        reason: String,
    },
}

impl Phase {
    pub fn state(&self) -> ModelState {
        match self {
            Phase::Available => ModelState::Available,
            Phase::Loading { .. } => ModelState::Loading,
            Phase::Resident { .. } => ModelState::Resident,
            Phase::Unloading { .. } => ModelState::Unloading,
            Phase::Failed { .. } => ModelState::Failed,
        }
    }

    pub fn holds_memory(&self) -> bool {
        self.state().in_memory()
    }

    /// Its weights are in memory (requests may run): resident or leaving.
    pub fn holds_weights(&self) -> bool {
        matches!(self, Phase::Resident { .. } | Phase::Unloading { .. })
    }

    /// The bytes measured when it loaded, while it holds them.
    pub fn measured(&self) -> Option<u64> {
        match self {
            Phase::Resident { measured } | Phase::Unloading { measured } => *measured,
            _ => None,
        }
    }
}

/// Why a model leaves memory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum FreeReason {
    /// The user asked.
    Unloaded,
    /// Made room for another model's load.
    Evicted { for_model: String },
    /// Keep-alive expired.
    Idle,
    /// Its load was stopped: no request, pin or load asked still waits for it.
    Cancelled,
}

impl fmt::Display for FreeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeReason::Unloaded => f.write_str("unloaded by request"),
            FreeReason::Evicted { for_model } => {
                write!(f, "evicted (least recently used) to make room for {for_model}")
            }
            FreeReason::Idle => f.write_str("keep-alive expired"),
            FreeReason::Cancelled => f.write_str("load cancelled: nothing waits for it any more"),
        }
    }
}

/// What the worker must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    StartLoad {
        model: String,
    },
    Run {
        model: String,
        request: RequestId,
    },
    Reject {
        request: RequestId,
        error: String,
    },
    Free {
        model: String,
        reason: FreeReason,
    },
    /// Stop the model's load in progress: nothing waits for it. The loader
    /// answers with [`Residency::load_cancelled`] (or, too late to stop,
    /// [`Residency::load_finished`]).
    CancelLoad {
        model: String,
    },
    /// Someone wants the load that was being cancelled after all: let it go on.
    ResumeLoad {
        model: String,
    },
    /// A load could not start or finished with an error; `Reject`s for its
    /// parked requests follow.
    LoadFailed {
        model: String,
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct Slot {
    pub phase: Phase,
    pub predicted: u64,
    pub pinned: bool,
    pub keep_alive: Option<KeepAlive>,
    pub last_used: Millis,
    pub in_flight: Vec<RequestId>,
    /// Waiting for the current (or about to start) load.
    pub parked: VecDeque<RequestId>,
    /// Arrived after an Unload; served by a fresh load once the model is freed.
    pub after_unload: VecDeque<RequestId>,
    /// An unload asked while the model loads: once loaded it is
    /// [`Phase::Unloading`] (its parked requests run, then it leaves).
    pub unload_pending: bool,
    pub loads_started: u64,
    /// A load (the user's or a preload) asked for the model: its load goes on
    /// with no request waiting.
    pub wanted: bool,
    /// A [`Action::CancelLoad`] was sent for the load in progress.
    pub cancel_pending: bool,
}

impl Slot {
    fn idle(&self) -> bool {
        self.in_flight.is_empty() && self.parked.is_empty() && self.after_unload.is_empty()
    }

    /// The one rule for leaving memory without being asked (eviction, idle
    /// timer): resident, unpinned, idle and not already leaving.
    fn evictable(&self) -> bool {
        matches!(self.phase, Phase::Resident { .. }) && !self.pinned && self.idle()
    }
}

/// A model a load would evict, with its size and when it was last used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Victim {
    pub id: String,
    pub bytes: u64,
    pub last_used_ms_ago: u64,
}

/// What a load would do now: [`Residency::plan`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadPlan {
    pub model: String,
    pub state: ModelState,
    pub predicted_bytes: u64,
    /// It would load (after the evictions); false: refused, see `refusal`.
    pub fits: bool,
    pub evict: Vec<Victim>,
    /// Budget left after the load (or now, when refused or already held).
    pub headroom_bytes: u64,
    pub refusal: Option<String>,
}

/// Why a load cannot start; its `Display` is the user's one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub model: String,
    pub needed: u64,
    pub budget: u64,
    pub used: u64,
    pub resident: usize,
    pub max_resident: usize,
    pub pinned: Vec<String>,
    pub busy: Vec<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refusal {
            model,
            needed,
            budget,
            used,
            ..
        } = self;
        if needed > budget {
            write!(
                f,
                "{model} needs {}; the whole budget is {}",
                mib(*needed),
                mib(*budget)
            )?;
        } else if self.resident >= self.max_resident && used + needed <= *budget {
            write!(
                f,
                "{model} cannot load: {} of at most {} models are resident and none can be evicted",
                self.resident, self.max_resident
            )?;
        } else {
            write!(
                f,
                "{model} needs {}; {} free of a {} budget",
                mib(*needed),
                mib(budget.saturating_sub(*used)),
                mib(*budget)
            )?;
        }
        let pinned = if self.pinned.is_empty() {
            "none".to_string()
        } else {
            self.pinned.join(", ")
        };
        write!(f, "; pinned: {pinned}")?;
        if !self.busy.is_empty() {
            write!(f, "; busy: {}", self.busy.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Residency {
    slots: BTreeMap<String, Slot>,
    pub budget: u64,
    pub max_resident: usize,
    pub default_keep_alive: KeepAlive,
}

pub fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

impl Residency {
    pub fn new(budget: u64, max_resident: usize, default_keep_alive: KeepAlive) -> Self {
        Residency {
            slots: BTreeMap::new(),
            budget,
            max_resident: max_resident.max(1),
            default_keep_alive,
        }
    }

    pub fn register(&mut self, id: &str, predicted: u64, pinned: bool, keep_alive: Option<KeepAlive>) {
        self.slots.insert(
            id.to_string(),
            Slot {
                phase: Phase::Available,
                predicted,
                pinned,
                keep_alive,
                last_used: 0,
                in_flight: Vec::new(),
                parked: VecDeque::new(),
                after_unload: VecDeque::new(),
                unload_pending: false,
                loads_started: 0,
                wanted: false,
                cancel_pending: false,
            },
        );
    }

    pub fn slot(&self, id: &str) -> Option<&Slot> {
        self.slots.get(id)
    }

    pub fn slots(&self) -> impl Iterator<Item = (&String, &Slot)> {
        self.slots.iter()
    }

    /// Bytes held (predicted) by loading and resident models.
    pub fn used_bytes(&self) -> u64 {
        self.slots
            .values()
            .filter(|s| s.phase.holds_memory())
            .map(|s| s.predicted)
            .sum()
    }

    pub fn resident_count(&self) -> usize {
        self.slots.values().filter(|s| s.phase.holds_memory()).count()
    }

    fn keep_alive_of(&self, s: &Slot) -> KeepAlive {
        s.keep_alive.unwrap_or(self.default_keep_alive)
    }

    /// A request arrives for `id`.
    pub fn request(&mut self, id: &str, req: RequestId, now: Millis) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(id) else {
            return vec![Action::Reject {
                request: req,
                error: format!("unknown model '{id}'"),
            }];
        };
        if slot.unload_pending {
            slot.after_unload.push_back(req);
            return Vec::new();
        }
        match slot.phase {
            Phase::Unloading { .. } => {
                slot.after_unload.push_back(req);
                Vec::new()
            }
            Phase::Resident { .. } => {
                slot.last_used = now;
                slot.in_flight.push(req);
                vec![Action::Run {
                    model: id.to_string(),
                    request: req,
                }]
            }
            Phase::Loading { .. } => {
                slot.parked.push_back(req);
                resume(id, slot)
            }
            Phase::Available | Phase::Failed { .. } => {
                slot.parked.push_back(req);
                self.start_load(id, now)
            }
        }
    }

    /// Request `req` for `id` no longer waits (its client went away): it
    /// leaves the queue, and a load that nothing else waits for (no other
    /// request, no pin, no load or preload asked) is cancelled. A request
    /// already running is not affected.
    pub fn withdraw(&mut self, id: &str, req: RequestId) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Vec::new();
        };
        let before = slot.parked.len() + slot.after_unload.len();
        slot.parked.retain(|&r| r != req);
        slot.after_unload.retain(|&r| r != req);
        if slot.parked.len() + slot.after_unload.len() == before {
            return Vec::new();
        }
        cancel_if_unwanted(id, slot)
    }

    /// The user (or preload) asks for `id` to be loaded.
    pub fn load(&mut self, id: &str, now: Millis) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(id) else {
            return vec![Action::LoadFailed {
                model: id.to_string(),
                error: format!("unknown model '{id}'"),
            }];
        };
        match slot.phase {
            Phase::Available | Phase::Failed { .. } => {
                slot.wanted = true;
                self.start_load(id, now)
            }
            Phase::Loading { .. } | Phase::Resident { .. } | Phase::Unloading { .. } => {
                slot.wanted = matches!(slot.phase, Phase::Loading { .. });
                let mut out = resume(id, slot);
                // A Load after an Unload that has not happened yet cancels it.
                let leaving = match slot.phase {
                    Phase::Unloading { measured } => {
                        slot.phase = Phase::Resident { measured };
                        true
                    }
                    _ => false,
                };
                if slot.unload_pending || leaving {
                    slot.unload_pending = false;
                    let waiting: Vec<_> = slot.after_unload.drain(..).collect();
                    for r in waiting {
                        out.extend(self.request(id, r, now));
                    }
                }
                out
            }
        }
    }

    /// The eviction policy: which models must leave so that `id` fits the
    /// budget and the resident count, least recently used first, or why it
    /// cannot fit (then nothing is evicted).
    pub fn plan_eviction(&self, id: &str) -> Result<Vec<String>, Refusal> {
        let needed = self.slots.get(id).map(|s| s.predicted).unwrap_or(0);
        let fits = |used: u64, count: usize| used + needed <= self.budget && count < self.max_resident;
        let (used, count) = (self.used_bytes(), self.resident_count());
        let mut candidates: Vec<(&String, &Slot)> = self
            .slots
            .iter()
            .filter(|(k, s)| k.as_str() != id && s.evictable())
            .collect();
        candidates.sort_by_key(|(k, s)| (s.last_used, (*k).clone()));
        let (mut u, mut c, mut victims) = (used, count, Vec::new());
        for (k, s) in candidates {
            if fits(u, c) {
                break;
            }
            u -= s.predicted;
            c -= 1;
            victims.push(k.clone());
        }
        if fits(u, c) {
            return Ok(victims);
        }
        let holding = |f: &dyn Fn(&Slot) -> bool| -> Vec<String> {
            self.slots
                .iter()
                .filter(|(k, s)| k.as_str() != id && s.phase.holds_memory() && f(s))
                .map(|(k, _)| k.clone())
                .collect()
        };
        Err(Refusal {
            model: id.to_string(),
            needed,
            budget: self.budget,
            used,
            resident: count,
            max_resident: self.max_resident,
            pinned: holding(&|s| s.pinned),
            busy: holding(&|s| !s.pinned && !s.idle()),
        })
    }

    /// What loading `id` now would do, without doing it (`load --dry-run`):
    /// the models it would evict, or why it would be refused. `None` for an
    /// unknown model.
    pub fn plan(&self, id: &str, now: Millis) -> Option<LoadPlan> {
        let slot = self.slots.get(id)?;
        let used = self.used_bytes();
        let mut plan = LoadPlan {
            model: id.to_string(),
            state: slot.phase.state(),
            predicted_bytes: slot.predicted,
            fits: true,
            evict: Vec::new(),
            headroom_bytes: self.budget.saturating_sub(used),
            refusal: None,
        };
        if slot.phase.holds_memory() {
            return Some(plan);
        }
        match self.plan_eviction(id) {
            Ok(victims) => {
                let mut freed = 0;
                for v in victims {
                    let Some(s) = self.slots.get(&v) else { continue };
                    freed += s.predicted;
                    plan.evict.push(Victim {
                        id: v.clone(),
                        bytes: s.predicted,
                        last_used_ms_ago: now.saturating_sub(s.last_used),
                    });
                }
                plan.headroom_bytes = self.budget.saturating_sub(used - freed + slot.predicted);
            }
            Err(r) => {
                plan.fits = false;
                plan.refusal = Some(r.to_string());
            }
        }
        Some(plan)
    }

    /// Evicts what the policy says and starts a load, or fails it.
    fn start_load(&mut self, id: &str, now: Millis) -> Vec<Action> {
        let Some(needed) = self.slots.get(id).map(|s| s.predicted) else {
            return Vec::new();
        };
        let victims = match self.plan_eviction(id) {
            Ok(v) => v,
            Err(refusal) => return self.fail_load(id, refusal.to_string()),
        };
        let mut out = Vec::new();
        for k in victims {
            if let Some(s) = self.slots.get_mut(&k) {
                s.phase = Phase::Available;
                out.push(Action::Free {
                    model: k.clone(),
                    reason: FreeReason::Evicted {
                        for_model: id.to_string(),
                    },
                });
            }
        }
        if let Some(slot) = self.slots.get_mut(id) {
            slot.phase = Phase::Loading {
                bytes_done: 0,
                bytes_total: needed,
                downloading: false,
            };
            slot.last_used = now;
            slot.loads_started += 1;
        }
        out.push(Action::StartLoad { model: id.to_string() });
        out
    }

    fn fail_load(&mut self, id: &str, error: String) -> Vec<Action> {
        let mut out = vec![Action::LoadFailed {
            model: id.to_string(),
            error: error.clone(),
        }];
        if let Some(slot) = self.slots.get_mut(id) {
            slot.phase = Phase::Failed { reason: error.clone() };
            slot.unload_pending = false;
            slot.wanted = false;
            slot.cancel_pending = false;
            for r in slot.parked.drain(..).chain(slot.after_unload.drain(..)) {
                out.push(Action::Reject {
                    request: r,
                    error: error.clone(),
                });
            }
        }
        out
    }

    /// Progress of a load; `downloading` while its weights are being fetched.
    pub fn progress(&mut self, id: &str, done: u64, total: u64, downloading: bool) {
        if let Some(slot) = self.slots.get_mut(id) {
            if let Phase::Loading { .. } = slot.phase {
                slot.phase = Phase::Loading {
                    bytes_done: done,
                    bytes_total: total,
                    downloading,
                };
            }
        }
    }

    /// The loader finished `id`: `Ok(measured bytes)` or `Err(reason)`.
    pub fn load_finished(&mut self, id: &str, result: Result<Option<u64>, String>, now: Millis) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Vec::new();
        };
        if !matches!(slot.phase, Phase::Loading { .. }) {
            return Vec::new();
        }
        let cancelled = std::mem::take(&mut slot.cancel_pending);
        slot.wanted = false;
        match result {
            Err(e) => self.fail_load(id, e),
            // Finished before the cancel reached the loader: freed at once.
            Ok(_) if cancelled => self.drop_cancelled(id, now),
            Ok(measured) => {
                // Unloaded while it loaded: what waited for it runs, then it leaves.
                slot.phase = match std::mem::take(&mut slot.unload_pending) {
                    true => Phase::Unloading { measured },
                    false => Phase::Resident { measured },
                };
                slot.last_used = now;
                let mut out = Vec::new();
                for r in slot.parked.drain(..) {
                    slot.in_flight.push(r);
                    out.push(Action::Run {
                        model: id.to_string(),
                        request: r,
                    });
                }
                if out.is_empty() {
                    out.extend(self.settle(id, now));
                }
                out
            }
        }
    }

    /// The loader stopped `id`'s load after a [`Action::CancelLoad`] and
    /// dropped what it had read.
    pub fn load_cancelled(&mut self, id: &str, now: Millis) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Vec::new();
        };
        if !matches!(slot.phase, Phase::Loading { .. }) {
            return Vec::new();
        }
        slot.cancel_pending = false;
        let still_wanted = !slot.parked.is_empty() || (slot.wanted && !slot.unload_pending);
        if still_wanted {
            // Wanted again too late to stop the loader: a fresh load.
            slot.phase = Phase::Available;
            return self.start_load(id, now);
        }
        slot.wanted = false;
        self.drop_cancelled(id, now)
    }

    /// A cancelled load's model leaves memory; requests that arrived after an
    /// unload start a fresh load.
    fn drop_cancelled(&mut self, id: &str, now: Millis) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Vec::new();
        };
        slot.phase = Phase::Available;
        slot.unload_pending = false;
        let mut out = vec![Action::Free {
            model: id.to_string(),
            reason: FreeReason::Cancelled,
        }];
        let waiting: Vec<_> = slot.after_unload.drain(..).collect();
        if !waiting.is_empty() || !slot.parked.is_empty() {
            slot.parked.extend(waiting);
            out.extend(self.start_load(id, now));
        }
        out
    }

    /// A request that was `Run` has finished (with a result or an error).
    pub fn request_finished(&mut self, id: &str, req: RequestId, now: Millis) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Vec::new();
        };
        slot.in_flight.retain(|&r| r != req);
        slot.last_used = now;
        self.settle(id, now)
    }

    /// After something finished: carry out a pending unload, or a zero keep-alive.
    fn settle(&mut self, id: &str, now: Millis) -> Vec<Action> {
        let ka = match self.slots.get(id) {
            Some(s) => self.keep_alive_of(s),
            None => return Vec::new(),
        };
        let Some(slot) = self.slots.get_mut(id) else {
            return Vec::new();
        };
        if !slot.phase.holds_weights() || !slot.in_flight.is_empty() || !slot.parked.is_empty() {
            return Vec::new();
        }
        if let Phase::Unloading { .. } = slot.phase {
            slot.phase = Phase::Available;
            let mut out = vec![Action::Free {
                model: id.to_string(),
                reason: FreeReason::Unloaded,
            }];
            if !slot.after_unload.is_empty() {
                let waiting: Vec<_> = slot.after_unload.drain(..).collect();
                slot.parked.extend(waiting);
                out.extend(self.start_load(id, now));
            }
            return out;
        }
        if ka == KeepAlive::Millis(0) && !slot.pinned {
            slot.phase = Phase::Available;
            return vec![Action::Free {
                model: id.to_string(),
                reason: FreeReason::Idle,
            }];
        }
        Vec::new()
    }

    /// The user asks for `id` to leave memory.
    pub fn unload(&mut self, id: &str, now: Millis) -> Vec<Action> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Vec::new();
        };
        match slot.phase {
            Phase::Resident { measured } => {
                slot.phase = Phase::Unloading { measured };
                self.settle(id, now)
            }
            Phase::Unloading { .. } => Vec::new(),
            Phase::Loading { .. } => {
                slot.unload_pending = true;
                slot.wanted = false;
                cancel_if_unwanted(id, slot)
            }
            Phase::Failed { .. } => {
                slot.phase = Phase::Available;
                Vec::new()
            }
            Phase::Available => Vec::new(),
        }
    }

    /// The bytes `id`'s next load is admitted at (a measured size); a model
    /// that holds memory keeps the size it was admitted at until it leaves.
    pub fn set_size(&mut self, id: &str, bytes: u64) {
        if let Some(s) = self.slots.get_mut(id) {
            if !s.phase.holds_memory() {
                s.predicted = bytes;
            }
        }
    }

    pub fn set_pinned(&mut self, id: &str, pinned: bool) -> bool {
        match self.slots.get_mut(id) {
            Some(s) => {
                s.pinned = pinned;
                true
            }
            None => false,
        }
    }

    pub fn set_keep_alive(&mut self, id: &str, ka: Option<KeepAlive>) {
        if let Some(s) = self.slots.get_mut(id) {
            s.keep_alive = ka;
        }
    }

    /// Frees idle models whose keep-alive has passed.
    pub fn tick(&mut self, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        let ids: Vec<String> = self.slots.keys().cloned().collect();
        for id in ids {
            let Some(s) = self.slots.get(&id) else { continue };
            let ka = self.keep_alive_of(s);
            let expired = match ka {
                KeepAlive::Forever => false,
                KeepAlive::Millis(ms) => now >= s.last_used.saturating_add(ms),
            };
            if expired && s.evictable() {
                if let Some(s) = self.slots.get_mut(&id) {
                    s.phase = Phase::Available;
                }
                out.push(Action::Free {
                    model: id.clone(),
                    reason: FreeReason::Idle,
                });
            }
        }
        out
    }

    /// When the next keep-alive expires, so the worker knows how long to sleep.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.slots
            .values()
            .filter(|s| s.evictable())
            .filter_map(|s| match self.keep_alive_of(s) {
                KeepAlive::Forever => None,
                KeepAlive::Millis(ms) => Some(s.last_used.saturating_add(ms)),
            })
            .min()
    }

    /// Time left before an idle model's keep-alive frees it.
    pub fn keep_alive_left(&self, id: &str, now: Millis) -> Option<u64> {
        let s = self.slots.get(id)?;
        if !s.evictable() {
            return None;
        }
        match self.keep_alive_of(s) {
            KeepAlive::Forever => None,
            KeepAlive::Millis(ms) => Some(s.last_used.saturating_add(ms).saturating_sub(now)),
        }
    }
}

/// Cancels `slot`'s load if nothing waits for it any more.
fn cancel_if_unwanted(id: &str, slot: &mut Slot) -> Vec<Action> {
    let loading = matches!(slot.phase, Phase::Loading { .. });
    let waited_for = !slot.parked.is_empty() || (!slot.unload_pending && (slot.wanted || slot.pinned));
    if !loading || slot.cancel_pending || waited_for {
        return Vec::new();
    }
    slot.cancel_pending = true;
    vec![Action::CancelLoad { model: id.to_string() }]
}

/// A load being cancelled is wanted again: it goes on.
fn resume(id: &str, slot: &mut Slot) -> Vec<Action> {
    if !std::mem::take(&mut slot.cancel_pending) {
        return Vec::new();
    }
    vec![Action::ResumeLoad { model: id.to_string() }]
}
