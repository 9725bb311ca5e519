//! The engine: admits events (lateness, duplicates), orders each user's events,
//! advances the watermark, and hands the rules one batch of many users at a time.
//!
//! Semantics (see README): an event is late when its time is more than the
//! allowed lateness behind the greatest time seen before it on its partition, or
//! behind the watermark. The watermark is the least, over partitions, of
//! (greatest time seen − allowed lateness), and never goes back. A user's events
//! wait until the watermark passes them and are then released to the rules in
//! (time, event id) order, so the result does not depend on arrival order within
//! the lateness bound, nor on how events are batched.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::Event;
use crate::output::SessionRow;
use crate::plugin::contract::{self, Batch, BatchResult, EndReason, SessionState, UserSlice};
use crate::plugin::{PluginError, RulesRuntime};
use crate::text::TextTable;

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
}

/// Why the engine could not go on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The rules failed a batch. The batch is kept and retried by the next
    /// [`Engine::advance`], for example with another plugin.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// State cannot be taken while a failed batch waits for a retry.
    #[error("a failed batch is waiting for a retry")]
    Busy,
}

/// A user's open session and queued events, as the state store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The open session.
    pub state: Option<StoredSession>,
    /// When the rules want to see the user again.
    pub wake_at: Option<i64>,
    /// Events accepted but not yet released to the rules.
    pub pending: Vec<StoredEvent>,
}

impl UserRecord {
    /// The stored form (postcard).
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// Reads the stored form back.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The contract's `session-state`, serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    start_ms: i64,
    last_ms: i64,
    event_count: u32,
    pages: Vec<u32>,
    data: Vec<u8>,
}

impl From<&SessionState> for StoredSession {
    fn from(s: &SessionState) -> Self {
        Self {
            start_ms: s.start_ms,
            last_ms: s.last_ms,
            event_count: s.event_count,
            pages: s.pages.clone(),
            data: s.data.clone(),
        }
    }
}

impl From<StoredSession> for SessionState {
    fn from(s: StoredSession) -> Self {
        Self {
            start_ms: s.start_ms,
            last_ms: s.last_ms,
            event_count: s.event_count,
            pages: s.pages,
            data: s.data,
        }
    }
}

/// A queued event, serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    event_id: Option<Arc<str>>,
    timestamp_ms: i64,
    page_name: Option<u32>,
    event_name: Option<u32>,
    event_type: Option<u32>,
}

impl From<&Pending> for StoredEvent {
    fn from(p: &Pending) -> Self {
        Self {
            event_id: p.event_id.clone(),
            timestamp_ms: p.event.timestamp_ms,
            page_name: p.event.page_name,
            event_name: p.event.event_name,
            event_type: p.event.event_type,
        }
    }
}

impl From<StoredEvent> for Pending {
    fn from(e: StoredEvent) -> Self {
        Pending {
            event_id: e.event_id,
            event: contract::Event {
                timestamp_ms: e.timestamp_ms,
                page_name: e.page_name,
                event_name: e.event_name,
                event_type: e.event_type,
            },
        }
    }
}

/// A user as of a checkpoint's cut. The open session is shared with the
/// engine, not copied: the engine replaces sessions rather than changing them,
/// so cutting a checkpoint costs a pointer per open session, whatever its size.
#[derive(Debug)]
struct UserSnapshot {
    uuid: Arc<str>,
    state: Option<Arc<SessionState>>,
    wake_at: Option<i64>,
    pending: Vec<StoredEvent>,
}

impl UserSnapshot {
    fn record(&self) -> UserRecord {
        UserRecord {
            state: self.state.as_deref().map(StoredSession::from),
            wake_at: self.wake_at,
            pending: self.pending.clone(),
        }
    }
}

/// What changed in the engine since the last checkpoint.
#[derive(Debug, Default)]
pub struct EngineChanges {
    /// Users with something open or pending, to write.
    upserts: Vec<UserSnapshot>,
    /// Users with nothing left, to delete.
    pub deletes: Vec<Arc<str>>,
    /// Handle of the first new text.
    pub first_text: u32,
    /// Texts interned since the last checkpoint, in handle order.
    pub new_texts: Vec<Arc<str>>,
}

impl EngineChanges {
    /// Users to write, each with its stored record ([`UserRecord::encode`]d).
    /// Records are built as the iterator reaches them, so writing a million
    /// open sessions never holds a second copy of them all.
    pub fn upserts(&self) -> impl Iterator<Item = (&str, Result<Vec<u8>, postcard::Error>)> + '_ {
        self.upserts.iter().map(|user| (&*user.uuid, user.record().encode()))
    }

    /// How many users [`EngineChanges::upserts`] yields.
    pub fn upsert_count(&self) -> usize {
        self.upserts.len()
    }
}

/// Event-time progress, as the state store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineClocks {
    /// Registered partitions and the greatest time each has delivered.
    pub partitions: Vec<(u32, Option<i64>)>,
    /// The watermark.
    pub watermark: i64,
}

/// One queued event of a user.
struct Pending {
    event_id: Option<Arc<str>>,
    event: contract::Event,
}

impl Pending {
    /// (time, event id), then the event's texts: events tied on time and id are
    /// ordered by content, never by arrival, so arrival order cannot show.
    fn cmp(&self, other: &Self, texts: &TextTable) -> std::cmp::Ordering {
        let text = |h: Option<u32>| h.and_then(|h| texts.get(h)).map(|t| &**t);
        (self.event.timestamp_ms, self.event_id.as_deref())
            .cmp(&(other.event.timestamp_ms, other.event_id.as_deref()))
            .then_with(|| text(self.event.page_name).cmp(&text(other.event.page_name)))
            .then_with(|| text(self.event.event_name).cmp(&text(other.event.event_name)))
            .then_with(|| text(self.event.event_type).cmp(&text(other.event.event_type)))
    }
}

/// Everything the engine keeps about one user.
struct UserSlot {
    uuid: Arc<str>,
    /// The open session, as the rules left it (shared with checkpoint cuts).
    state: Option<Arc<SessionState>>,
    /// Events not yet released, in arrival order.
    pending: Vec<Pending>,
    /// When the rules want to see this user again without events.
    wake_at: Option<i64>,
    /// Whether the user is in `Engine::with_pending`.
    listed: bool,
    /// Whether the user changed since the last [`Engine::take_changes`].
    dirty: bool,
}

/// A batch sent to the rules and not yet applied.
struct InFlight {
    batch: Batch,
    users: Vec<u32>,
}

/// Per-partition event-time progress.
#[derive(Debug, Clone, Copy, Default)]
struct PartitionClock {
    /// Whether the partition is part of the input (a file's one partition, or an
    /// assigned Kafka partition). A registered partition that has seen nothing
    /// holds the watermark back until it delivers or goes idle.
    registered: bool,
    max_seen: Option<i64>,
    /// Idle partitions do not hold the watermark back.
    idle: bool,
}

/// The sessionization engine: everything between parsed events and the rules.
pub struct Engine {
    config: EngineConfig,
    texts: TextTable,
    user_ids: FxHashMap<Arc<str>, u32>,
    users: Vec<UserSlot>,
    partitions: Vec<PartitionClock>,
    watermark: i64,
    with_pending: Vec<u32>,
    timers: BinaryHeap<Reverse<(i64, u32)>>,
    in_flight: Vec<InFlight>,
    stats: EngineStats,
    /// Users changed since the last [`Engine::take_changes`].
    dirty: Vec<u32>,
    /// Slots of evicted users, for reuse.
    free: Vec<u32>,
    /// Texts already handed out by [`Engine::take_changes`].
    texts_taken: usize,
    /// A few users of the latest batch, for dry runs of candidate rules.
    sample: Option<Batch>,
    /// Sessions closed by batches that succeeded before a later one failed:
    /// handed out by the next successful [`Engine::advance`].
    carried: Vec<SessionRow>,
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            texts: TextTable::default(),
            user_ids: FxHashMap::default(),
            users: Vec::new(),
            partitions: Vec::new(),
            watermark: i64::MIN,
            with_pending: Vec::new(),
            timers: BinaryHeap::new(),
            in_flight: Vec::new(),
            stats: EngineStats::default(),
            dirty: Vec::new(),
            free: Vec::new(),
            texts_taken: 0,
            sample: None,
            carried: Vec::new(),
        }
    }

    /// Part of the latest batch the rules processed (its first users and their
    /// events), for a dry run of new rules before they are swapped in.
    pub fn sample_batch(&self) -> Option<&Batch> {
        self.sample.as_ref()
    }

    /// The interned texts, which sampled batches refer to.
    pub fn texts(&self) -> &[Arc<str>] {
        self.texts.as_slice()
    }

    /// Declares the input's partitions: until each has delivered an event (or
    /// is marked idle), the watermark waits for it.
    pub fn register_partitions(&mut self, partitions: impl IntoIterator<Item = usize>) {
        for p in partitions {
            self.clock(p).registered = true;
        }
    }

    /// Marks a partition idle (it stops holding the watermark back) or active.
    pub fn set_idle(&mut self, partition: usize, idle: bool) {
        self.clock(partition).idle = idle;
    }

    fn clock(&mut self, partition: usize) -> &mut PartitionClock {
        if self.partitions.len() <= partition {
            self.partitions.resize(partition + 1, PartitionClock::default());
        }
        &mut self.partitions[partition]
    }

    fn mark_dirty(&mut self, user: u32) {
        let slot = &mut self.users[user as usize];
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(user);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The current watermark: every event still to be released is at or after it.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Users held in memory (with an open session or queued events, or seen
    /// since the last [`Engine::take_changes`]).
    pub fn users_in_memory(&self) -> usize {
        self.user_ids.len()
    }

    /// Admits or drops one event that arrived on `partition`.
    pub fn offer(&mut self, partition: usize, event: &Event<'_>) -> Admission {
        let t = event.timestamp_ms;
        let watermark = self.watermark;
        let lateness = self.config.allowed_lateness_ms;
        let clock = self.clock(partition);
        clock.registered = true;
        clock.idle = false;
        let floor = clock.max_seen.map_or(i64::MIN, |max| max.saturating_sub(lateness));
        if t < floor || t < watermark {
            self.stats.late += 1;
            return Admission::Late { behind_ms: floor.max(watermark).saturating_sub(t) };
        }
        clock.max_seen = Some(clock.max_seen.map_or(t, |max| max.max(t)));

        let user = self.user(&event.uuid);
        let slot = &mut self.users[user as usize];
        if let Some(id) = event.event_id.as_deref() {
            if let Some(twin) = slot.pending.iter_mut().find(|p| p.event_id.as_deref() == Some(id))
            {
                // Keep the earliest copy, so which copy arrived first does not matter.
                if t < twin.event.timestamp_ms {
                    twin.event.timestamp_ms = t;
                }
                self.stats.duplicates += 1;
                self.mark_dirty(user);
                return Admission::Duplicate;
            }
        }
        let event_id = event.event_id.as_deref().map(Arc::from);
        let event = contract::Event {
            timestamp_ms: t,
            page_name: event.page_name.as_deref().map(|p| self.texts.intern(p)),
            event_name: event.event_name.as_deref().map(|n| self.texts.intern(n)),
            event_type: event.event_type.as_deref().map(|n| self.texts.intern(n)),
        };
        if slot.pending.capacity() == 0 {
            // Most users have one or two events waiting: the default first
            // allocation (four) would dominate memory with many users.
            slot.pending.reserve_exact(1);
        }
        slot.pending.push(Pending { event_id, event });
        if !slot.listed {
            slot.listed = true;
            self.with_pending.push(user);
        }
        self.mark_dirty(user);
        self.stats.accepted += 1;
        Admission::Accepted
    }

    fn user(&mut self, uuid: &str) -> u32 {
        if let Some(&id) = self.user_ids.get(uuid) {
            return id;
        }
        let uuid: Arc<str> = Arc::from(uuid);
        let slot = UserSlot {
            uuid: uuid.clone(),
            state: None,
            pending: Vec::new(),
            wake_at: None,
            listed: false,
            dirty: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.users[id as usize] = slot;
                id
            }
            None => {
                self.users.push(slot);
                (self.users.len() - 1) as u32
            }
        };
        self.user_ids.insert(uuid, id);
        id
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
        let mut closed = std::mem::take(&mut self.carried);
        // A batch that failed before is retried first, so nothing is lost.
        if let Err(error) = self.drain_in_flight(rules, &mut closed) {
            self.carried = closed;
            return Err(error);
        }

        let lateness = self.config.allowed_lateness_ms;
        let active = self.partitions.iter().filter(|p| p.registered && !p.idle);
        let mut allowed =
            active.map(|p| p.max_seen.map_or(i64::MIN, |m| m.saturating_sub(lateness))).min();
        if allowed.is_none() {
            // Every partition idle: what they have delivered is all there is.
            allowed = self
                .partitions
                .iter()
                .filter_map(|p| p.max_seen)
                .map(|m| m.saturating_sub(lateness))
                .min();
        }
        if let Some(allowed) = allowed {
            self.watermark = self.watermark.max(allowed);
        }
        let watermark = self.watermark;

        let mut due: Vec<u32> = Vec::new();
        let mut still_pending = Vec::with_capacity(self.with_pending.len());
        for user in std::mem::take(&mut self.with_pending) {
            let slot = &mut self.users[user as usize];
            let releasable =
                end_of_input || slot.pending.iter().any(|p| p.event.timestamp_ms < watermark);
            if releasable {
                due.push(user);
            } else {
                still_pending.push(user);
            }
        }
        self.with_pending = still_pending;
        while let Some(&Reverse((at, user))) = self.timers.peek() {
            if at > watermark && !end_of_input {
                break;
            }
            self.timers.pop();
            let slot = &self.users[user as usize];
            // Stale timers (the user was seen again since) are skipped.
            if slot.wake_at == Some(at) && slot.state.is_some() {
                due.push(user);
            }
        }
        if end_of_input {
            due.extend(
                (0..self.users.len() as u32).filter(|&u| self.users[u as usize].state.is_some()),
            );
        }
        due.sort_unstable();
        due.dedup();

        let mut batch = self.empty_batch(end_of_input);
        let mut users = Vec::new();
        for user in due {
            let slot = &mut self.users[user as usize];
            let mut events = std::mem::take(&mut slot.pending);
            let texts = &self.texts;
            events.sort_by(|a, b| a.cmp(b, texts));
            let keep_from = if end_of_input {
                events.len()
            } else {
                events.partition_point(|p| p.event.timestamp_ms < watermark)
            };
            slot.pending = events.split_off(keep_from);
            if !slot.pending.is_empty() {
                slot.listed = true;
                self.with_pending.push(user);
            } else {
                slot.listed = false;
            }
            if !batch.events.is_empty()
                && batch.events.len() + events.len() > self.config.max_batch_events
            {
                let full = std::mem::replace(&mut batch, self.empty_batch(end_of_input));
                self.in_flight.push(InFlight { batch: full, users: std::mem::take(&mut users) });
            }
            self.mark_dirty(user);
            let slot = &mut self.users[user as usize];
            // Unshared unless a checkpoint still holds it; only then copied.
            let state = slot.state.take().map(Arc::unwrap_or_clone);
            batch.users.push(UserSlice { state, event_count: events.len() as u32 });
            batch.events.extend(events.into_iter().map(|p| p.event));
            slot.wake_at = None;
            users.push(user);
        }
        if !users.is_empty() {
            self.in_flight.push(InFlight { batch, users });
        }
        if let Err(error) = self.drain_in_flight(rules, &mut closed) {
            self.carried = closed;
            return Err(error);
        }
        Ok(closed)
    }

    /// What changed since the last call, for the state store: users to write,
    /// users to delete (nothing open, nothing pending: they are also dropped
    /// from memory, so memory follows open sessions, not users ever seen), and
    /// new texts. Fails while a failed batch waits for a retry.
    pub fn take_changes(&mut self) -> Result<EngineChanges, EngineError> {
        if !self.in_flight.is_empty() {
            return Err(EngineError::Busy);
        }
        let mut changes = EngineChanges {
            first_text: self.texts_taken as u32,
            new_texts: self.texts.as_slice()[self.texts_taken..].to_vec(),
            ..EngineChanges::default()
        };
        self.texts_taken = self.texts.as_slice().len();
        for user in std::mem::take(&mut self.dirty) {
            let slot = &mut self.users[user as usize];
            slot.dirty = false;
            if slot.state.is_none() && slot.pending.is_empty() {
                self.user_ids.remove(&slot.uuid);
                changes.deletes.push(std::mem::replace(&mut slot.uuid, Arc::from("")));
                slot.wake_at = None;
                self.free.push(user);
                continue;
            }
            changes.upserts.push(UserSnapshot {
                uuid: slot.uuid.clone(),
                state: slot.state.clone(),
                wake_at: slot.wake_at,
                pending: slot.pending.iter().map(StoredEvent::from).collect(),
            });
        }
        Ok(changes)
    }

    /// Partition clocks and the watermark, for the state store.
    pub fn clocks(&self) -> EngineClocks {
        EngineClocks {
            partitions: self
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.registered)
                .map(|(i, p)| (i as u32, p.max_seen))
                .collect(),
            watermark: self.watermark,
        }
    }

    /// Rebuilds an engine from what [`Engine::take_changes`] and
    /// [`Engine::clocks`] stored.
    pub fn restore(
        config: EngineConfig,
        texts: Vec<String>,
        clocks: EngineClocks,
        users: impl IntoIterator<Item = (String, UserRecord)>,
    ) -> Self {
        let mut engine = Engine::new(config);
        for text in &texts {
            engine.texts.intern(text);
        }
        engine.texts_taken = texts.len();
        for (p, max_seen) in clocks.partitions {
            let clock = engine.clock(p as usize);
            clock.registered = true;
            clock.max_seen = max_seen;
        }
        engine.watermark = clocks.watermark;
        for (uuid, record) in users {
            let user = engine.user(&uuid);
            let slot = &mut engine.users[user as usize];
            slot.state = record.state.map(|s| Arc::new(SessionState::from(s)));
            slot.wake_at = record.wake_at;
            slot.pending = record.pending.into_iter().map(Pending::from).collect();
            if let Some(at) = slot.wake_at {
                engine.timers.push(Reverse((at, user)));
            }
            if !slot.pending.is_empty() {
                slot.listed = true;
                engine.with_pending.push(user);
            }
        }
        engine
    }

    fn empty_batch(&self, end_of_input: bool) -> Batch {
        Batch {
            new_texts: Vec::new(),
            watermark: self.watermark,
            end_of_input,
            users: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Runs queued batches through the rules, oldest first; stops at the first
    /// failure and leaves that batch queued.
    fn drain_in_flight(
        &mut self,
        rules: &mut dyn RulesRuntime,
        closed: &mut Vec<SessionRow>,
    ) -> Result<(), EngineError> {
        while let Some(flight) = self.in_flight.first_mut() {
            self.stats.plugin_calls += 1;
            self.sample = Some(sample_of(&flight.batch));
            let started = std::time::Instant::now();
            let result = rules.process(self.texts.as_slice(), &mut flight.batch);
            self.stats.rules_time += started.elapsed();
            let result = result?;
            let flight = self.in_flight.remove(0);
            self.apply(&flight, result, rules.rule_version(), closed);
        }
        Ok(())
    }

    fn apply(
        &mut self,
        flight: &InFlight,
        result: BatchResult,
        rule_version: &str,
        closed: &mut Vec<SessionRow>,
    ) {
        for (&user, outcome) in flight.users.iter().zip(result.users) {
            let slot = &mut self.users[user as usize];
            slot.state = outcome.state.map(Arc::new);
            slot.wake_at = outcome.wake_at.filter(|_| slot.state.is_some());
            if let Some(at) = slot.wake_at {
                self.timers.push(Reverse((at, user)));
            }
        }
        let rule_version: Arc<str> = Arc::from(rule_version);
        self.stats.sessions_closed += result.closed.len() as u64;
        for session in result.closed {
            let Some(&user) = flight.users.get(session.user as usize) else { continue };
            let uuid = &self.users[user as usize].uuid;
            closed.push(SessionRow {
                uuid: uuid.to_string(),
                session_id: session_id(uuid, session.start_ms),
                start_ms: session.start_ms,
                end_ms: session.end_ms,
                event_count: session.event_count,
                pages: session.pages.iter().filter_map(|&h| self.texts.get(h).cloned()).collect(),
                end_reason: end_reason_name(session.end_reason),
                rule_version: rule_version.clone(),
            });
        }
    }
}

/// The first users of `batch` (up to 256) with their events.
fn sample_of(batch: &Batch) -> Batch {
    let users: Vec<UserSlice> = batch.users.iter().take(256).cloned().collect();
    let events = users.iter().map(|u| u.event_count as usize).sum::<usize>();
    Batch {
        new_texts: Vec::new(),
        watermark: batch.watermark,
        end_of_input: false,
        users,
        events: batch.events.iter().take(events).cloned().collect(),
    }
}

/// The `end_reason` column's value.
pub fn end_reason_name(reason: EndReason) -> String {
    match reason {
        EndReason::Inactivity => "inactivity".into(),
        EndReason::MaxDuration => "max_duration".into(),
        EndReason::EndOfInput => "end_of_input".into(),
        EndReason::Custom(reason) => reason,
    }
}
