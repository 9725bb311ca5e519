//! The engine: admits events (lateness, duplicates), orders each user's events,
//! advances the watermark, and hands the rules one batch of many users at a time.
//!
//! Semantics (see docs/semantics.md): event time is judged per partition ([`clock`]); a
//! user's events wait until the watermark passes them and are then released to
//! the rules in (time, event id) order ([`users`], [`dispatch`]), so the result
//! does not depend on arrival order within the lateness bound, nor on how
//! events are batched. [`snapshot`] is what a checkpoint takes and restores.
//!
//! The engine speaks the host's own contract types ([`crate::rules::contract`]);
//! it knows nothing of WebAssembly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use uuid::Uuid;

use crate::event::{Event, FieldPaths, Fields};
use crate::rows::SessionRow;
use crate::rules::contract::{self, Batch, EventField, FieldValue};
use crate::rules::{RulesError, RulesRuntime, Texts};

mod clock;
mod dispatch;
mod fields;
mod snapshot;
mod text;
mod users;

pub use clock::EngineClocks;
pub use snapshot::{EngineChanges, UserState};
pub use users::{EventId, FieldRow, PendingEvent};

use clock::Clocks;
use dispatch::InFlight;
use text::TextTable;
use users::Users;

/// Namespace of session ids: `session_id = uuid_v5(NAMESPACE, "{uuid}:{start_ms}")`,
/// so replays and re-runs write the same ids.
pub const SESSION_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5e55_10e1_2e00_4c0b_9d7a_62a1_0c5e_55d1);

/// The deterministic id of the session of `uuid` that starts at `start_ms`.
pub fn session_id(uuid: &str, start_ms: i64) -> String {
    let name = format!("{uuid}:{start_ms}");
    Uuid::new_v5(&SESSION_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How far behind its partition's greatest time an event may arrive.
    pub allowed_lateness_ms: i64,
    /// Upper bound on events per plugin call (a user's events are never split).
    pub max_batch_events: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { allowed_lateness_ms: 10 * 60_000, max_batch_events: 16_384 }
    }
}

/// Part of a batch the rules processed, for a dry run of other rules.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The first users of the batch and their events.
    pub batch: &'a Batch,
    /// The fields the batch's columns hold values of (the rules' in force
    /// when it was built): a candidate declaring others gets them refitted.
    pub fields: &'a [EventField],
}

/// What became of an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued for its user.
    Accepted,
    /// Dropped: this far (ms) behind what its partition or the watermark allows.
    Late {
        /// Milliseconds beyond the allowed lateness.
        behind_ms: i64,
    },
    /// Dropped: the user already has an event with this id.
    Duplicate,
}

/// Counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events queued for the rules.
    pub accepted: u64,
    /// Events dropped as late.
    pub late: u64,
    /// Events dropped as duplicates.
    pub duplicates: u64,
    /// Plugin calls made.
    pub plugin_calls: u64,
    /// Sessions the rules closed.
    pub sessions_closed: u64,
    /// Time spent inside plugin calls.
    pub rules_time: std::time::Duration,
    /// Events of a user that came on another partition than the user's
    /// first: input not keyed by user, which lateness (judged per partition)
    /// and scale-out (a user's state follows its partition) both assume.
    pub off_partition: u64,
}

impl std::ops::AddAssign for EngineStats {
    /// Adds another engine's counters (engines over parts of one input).
    fn add_assign(&mut self, more: Self) {
        self.accepted += more.accepted;
        self.late += more.late;
        self.duplicates += more.duplicates;
        self.plugin_calls += more.plugin_calls;
        self.sessions_closed += more.sessions_closed;
        self.rules_time += more.rules_time;
        self.off_partition += more.off_partition;
    }
}

/// Why the engine could not go on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The rules failed a batch. The batch is kept and retried by the next
    /// [`Engine::advance`], for example with other rules.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// State cannot be taken while a failed batch waits for a retry.
    #[error("a failed batch is waiting for a retry")]
    Busy,
}

/// The sessionization engine: everything between parsed events and the rules.
pub struct Engine {
    config: EngineConfig,
    texts: TextTable,
    users: Users,
    clocks: Clocks,
    /// Wake-up times the rules asked for, earliest first (stale ones skipped).
    timers: BinaryHeap<Reverse<(i64, u32)>>,
    in_flight: Vec<InFlight>,
    stats: EngineStats,
    /// Accepted events not yet released to the rules.
    waiting: u64,
    /// Texts already handed out by [`Engine::take_changes`].
    texts_taken: usize,
    /// Whether the table was compacted since the last [`Engine::take_changes`],
    /// so the stored one must be replaced rather than extended.
    texts_renumbered: bool,
    /// A few users of the latest batch, for dry runs of candidate rules.
    sample: Option<Batch>,
    /// Sessions closed by batches that succeeded before a later one failed:
    /// handed out by the next successful [`Engine::advance`].
    carried: Vec<SessionRow>,
    /// The fields the rules in force declared: what waiting events carry.
    fields: Arc<FieldPaths>,
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            texts: TextTable::default(),
            users: Users::default(),
            clocks: Clocks::new(config.allowed_lateness_ms),
            timers: BinaryHeap::new(),
            in_flight: Vec::new(),
            stats: EngineStats::default(),
            waiting: 0,
            texts_taken: 0,
            texts_renumbered: false,
            sample: None,
            carried: Vec::new(),
            fields: Arc::default(),
        }
    }

    /// The declared fields events are to carry, for the parser: blocks
    /// parsed with other fields (the rules changed) are mapped on offer.
    pub fn field_paths(&self) -> Arc<FieldPaths> {
        self.fields.clone()
    }

    /// Makes `declared` (the rules in force's) the fields events carry, if
    /// they are not already: waiting events keep the values of fields both
    /// declare, and lack the new ones. [`Engine::advance`] does this itself;
    /// a job calls it right after a swap so the next events are parsed for
    /// the new fields.
    pub fn declare_fields(&mut self, declared: &[EventField]) {
        if declared != self.fields.fields() {
            self.remap_fields(declared);
        }
    }

    /// The fields the waiting events of a restored engine carry (as stored
    /// with the checkpoint); the next [`Engine::advance`] maps them to the
    /// rules' own.
    pub fn with_stored_fields(mut self, fields: &[EventField]) -> Self {
        self.fields = Arc::new(FieldPaths::new(fields));
        self
    }

    /// Part of the latest batch the rules processed (its first users and their
    /// events), for a dry run of new rules before they are swapped in.
    pub fn sample(&self) -> Option<Sample<'_>> {
        let batch = self.sample.as_ref()?;
        Some(Sample { batch, fields: self.fields.fields() })
    }

    /// The fields the waiting events (and the sample) carry values of.
    pub fn declared_fields(&self) -> &[EventField] {
        self.fields.fields()
    }

    /// The interned texts, which sampled batches refer to.
    pub fn texts(&self) -> Texts<'_> {
        Texts { strings: self.texts.as_slice(), generation: self.texts.generation() }
    }

    /// Declares the input's partitions: until each has delivered an event (or
    /// is marked idle), the watermark waits for it.
    pub fn register_partitions(&mut self, partitions: impl IntoIterator<Item = usize>) {
        for p in partitions {
            self.clocks.register(p);
        }
    }

    /// Marks a partition idle (it stops holding the watermark back) or active.
    pub fn set_idle(&mut self, partition: usize, idle: bool) {
        self.clocks.set_idle(partition, idle);
    }

    /// Keeps partition clocks at or before `now_ms`, the wall clock: an event
    /// stamped ahead of it (a producer's clock running fast) is accepted and
    /// waits for its time, instead of making every event of the present late.
    pub fn limit_clocks_to(&mut self, now_ms: i64) {
        self.clocks.set_ceiling(now_ms);
    }

    /// Partitions whose clock runs more than `drift_ms` ahead of the slowest
    /// active one. Reading them further only piles up events that wait for
    /// the watermark: the job pauses them until the others catch up
    /// (watermark alignment), which bounds memory when one partition lags.
    pub fn partitions_ahead(&self, drift_ms: i64) -> Vec<usize> {
        self.clocks.ahead(drift_ms).collect()
    }

    /// Events accepted and not yet handed to the rules.
    pub fn events_waiting(&self) -> u64 {
        self.waiting
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The current watermark: every event still to be released is at or after it.
    pub fn watermark(&self) -> i64 {
        self.clocks.watermark()
    }

    /// Users held in memory (with an open session or queued events, or seen
    /// since the last [`Engine::take_changes`]).
    pub fn users_in_memory(&self) -> usize {
        self.users.len()
    }

    /// Users with an open session. Counts them: call it now and then, not per event.
    pub fn open_sessions(&self) -> usize {
        self.users.ids().filter(|&u| self.users.slot(u).state.is_some()).count()
    }

    /// Users with accepted events waiting for the watermark, open session or
    /// not. Counts them: call it now and then, not per event.
    pub fn users_waiting(&self) -> usize {
        self.users.ids().filter(|&u| !self.users.slot(u).pending.is_empty()).count()
    }

    /// Admits or drops one event that arrived on `partition`.
    pub fn offer(&mut self, partition: usize, event: &Event<'_>) -> Admission {
        self.offer_with_fields(partition, event, None)
    }

    /// Admits or drops one event that arrived on `partition`, with the
    /// values of its declared fields.
    pub fn offer_with_fields(
        &mut self,
        partition: usize,
        event: &Event<'_>,
        fields: Option<Fields<'_>>,
    ) -> Admission {
        let t = event.timestamp_ms;
        if let Err(behind_ms) = self.clocks.observe(partition, t) {
            self.stats.late += 1;
            return Admission::Late { behind_ms };
        }
        let user = self.users.id_of(&event.uuid);
        let slot = self.users.slot_mut(user);
        let partition = u32::try_from(partition).unwrap_or(users::NO_PARTITION - 1);
        if slot.partition == users::NO_PARTITION {
            slot.partition = partition;
        } else if slot.partition != partition {
            self.stats.off_partition += 1;
        }
        if let Some(id) = event.event_id.as_deref() {
            if let Some(twin) = self.users.pending_twin(user, id) {
                // Keep the earliest copy, so which copy arrived first does not matter.
                if t < twin.event.timestamp_ms {
                    twin.event.timestamp_ms = t;
                }
                self.stats.duplicates += 1;
                self.users.mark_dirty(user);
                return Admission::Duplicate;
            }
        }
        let pending = PendingEvent {
            event_id: event.event_id.as_deref().map(users::EventId::from),
            event: contract::Event {
                timestamp_ms: t,
                page_name: event.page_name.as_deref().map(|p| self.texts.intern(p)),
                event_name: event.event_name.as_deref().map(|n| self.texts.intern(n)),
                event_type: event.event_type.as_deref().map(|n| self.texts.intern(n)),
            },
            fields: self.field_values(fields),
        };
        self.users.queue(user, pending);
        self.stats.accepted += 1;
        self.waiting += 1;
        Admission::Accepted
    }

    /// Times an event that another engine admits (a run whose users are split
    /// over engines): the partition's clock moves as that event moves it, so
    /// every engine judges lateness, and releases events, as one engine over
    /// all the users would. Nothing is queued or counted here.
    pub fn observe_time(&mut self, partition: usize, timestamp_ms: i64) {
        // A late event moves no clock; its owner counts it.
        let _ = self.clocks.observe(partition, timestamp_ms);
    }

    /// Moves the watermark to what the partitions allow, releases every event it
    /// passed, wakes users whose sessions may have expired, and runs the rules on
    /// them. With `end_of_input`, releases everything and closes every session.
    /// Returns the sessions closed.
    pub fn advance(
        &mut self,
        rules: &mut dyn RulesRuntime,
        end_of_input: bool,
    ) -> Result<Vec<SessionRow>, EngineError> {
        self.declare_fields(&rules.declarations().fields);
        let mut closed = std::mem::take(&mut self.carried);
        // A batch that failed before is retried first, so nothing is lost.
        if let Err(error) = self.drain_in_flight(rules, &mut closed) {
            self.carried = closed;
            return Err(error);
        }
        let watermark = self.clocks.advance();
        let due = self.due_users(watermark, end_of_input);
        self.queue_batches(due, end_of_input);
        if let Err(error) = self.drain_in_flight(rules, &mut closed) {
            self.carried = closed;
            return Err(error);
        }
        if self.texts.wants_compaction() {
            self.compact_texts();
        }
        Ok(closed)
    }

    /// Drops the texts no open session and no waiting event refers to, and
    /// renumbers the rest everywhere. Only between batches: none is in flight.
    fn compact_texts(&mut self) {
        let mut live = vec![false; self.texts.as_slice().len()];
        let mut mark = |h: u32| {
            if let Some(flag) = live.get_mut(h as usize) {
                *flag = true;
            }
        };
        for user in self.users.ids() {
            let slot = self.users.slot(user);
            for pending in &slot.pending {
                let event = &pending.event;
                event.page_name.into_iter().for_each(&mut mark);
                event.event_name.into_iter().for_each(&mut mark);
                event.event_type.into_iter().for_each(&mut mark);
                for value in pending.fields.iter().flatten() {
                    if let FieldValue::Text(h) = value {
                        mark(*h);
                    }
                }
            }
            if let Some(state) = &slot.state {
                state.pages.iter().copied().for_each(&mut mark);
            }
        }
        let renumbered = self.texts.compact(&live);
        let new = |h: &mut u32| *h = renumbered.get(*h as usize).copied().unwrap_or(u32::MAX);
        for user in self.users.ids() {
            let slot = self.users.slot_mut(user);
            if slot.pending.is_empty() && slot.state.is_none() {
                continue;
            }
            for pending in slot.pending.iter_mut() {
                let event = &mut pending.event;
                let texts = [&mut event.page_name, &mut event.event_name, &mut event.event_type];
                texts.into_iter().flatten().for_each(new);
                for value in pending.fields.iter_mut().flatten() {
                    if let FieldValue::Text(h) = value {
                        new(h);
                    }
                }
            }
            if let Some(state) = &mut slot.state {
                Arc::make_mut(state).pages.iter_mut().for_each(new);
            }
            self.users.mark_dirty(user);
        }
        // The sample refers to old handles; the next batch takes a new one.
        self.sample = None;
        self.texts_taken = 0;
        self.texts_renumbered = true;
    }
}
