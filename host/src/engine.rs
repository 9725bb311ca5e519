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
}

/// One queued event of a user.
struct Pending {
    event_id: Option<Box<str>>,
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
    /// The open session, as the rules left it.
    state: Option<SessionState>,
    /// Events not yet released, in arrival order.
    pending: Vec<Pending>,
    /// When the rules want to see this user again without events.
    wake_at: Option<i64>,
    /// Whether the user is in `Engine::with_pending`.
    listed: bool,
}

/// A batch sent to the rules and not yet applied.
struct InFlight {
    batch: Batch,
    users: Vec<u32>,
}

/// Per-partition event-time progress.
#[derive(Debug, Clone, Copy, Default)]
struct PartitionClock {
    max_seen: Option<i64>,
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

    /// Users with an open session.
    pub fn open_sessions(&self) -> usize {
        self.users.iter().filter(|u| u.state.is_some()).count()
    }

    /// Admits or drops one event that arrived on `partition`.
    pub fn offer(&mut self, partition: usize, event: &Event<'_>) -> Admission {
        let t = event.timestamp_ms;
        if self.partitions.len() <= partition {
            self.partitions.resize(partition + 1, PartitionClock::default());
        }
        let clock = &mut self.partitions[partition];
        let floor = clock
            .max_seen
            .map_or(i64::MIN, |max| max.saturating_sub(self.config.allowed_lateness_ms));
        if t < floor || t < self.watermark {
            self.stats.late += 1;
            return Admission::Late { behind_ms: floor.max(self.watermark).saturating_sub(t) };
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
                return Admission::Duplicate;
            }
        }
        let event_id = event.event_id.as_deref().map(Box::from);
        let event = contract::Event {
            timestamp_ms: t,
            page_name: event.page_name.as_deref().map(|p| self.texts.intern(p)),
            event_name: event.event_name.as_deref().map(|n| self.texts.intern(n)),
            event_type: event.event_type.as_deref().map(|n| self.texts.intern(n)),
        };
        slot.pending.push(Pending { event_id, event });
        if !slot.listed {
            slot.listed = true;
            self.with_pending.push(user);
        }
        self.stats.accepted += 1;
        Admission::Accepted
    }

    fn user(&mut self, uuid: &str) -> u32 {
        if let Some(&id) = self.user_ids.get(uuid) {
            return id;
        }
        let id = self.users.len() as u32;
        let uuid: Arc<str> = Arc::from(uuid);
        self.users.push(UserSlot {
            uuid: uuid.clone(),
            state: None,
            pending: Vec::new(),
            wake_at: None,
            listed: false,
        });
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
        let mut closed = Vec::new();
        // A batch that failed before is retried first, so nothing is lost.
        self.drain_in_flight(rules, &mut closed)?;

        let lateness = self.config.allowed_lateness_ms;
        let allowed = self
            .partitions
            .iter()
            .filter_map(|p| p.max_seen)
            .map(|max| max.saturating_sub(lateness))
            .min();
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
            let slot = &mut self.users[user as usize];
            batch
                .users
                .push(UserSlice { state: slot.state.take(), event_count: events.len() as u32 });
            batch.events.extend(events.into_iter().map(|p| p.event));
            slot.wake_at = None;
            users.push(user);
        }
        if !users.is_empty() {
            self.in_flight.push(InFlight { batch, users });
        }
        self.drain_in_flight(rules, &mut closed)?;
        Ok(closed)
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
            slot.state = outcome.state;
            slot.wake_at = outcome.wake_at.filter(|_| slot.state.is_some());
            if let Some(at) = slot.wake_at {
                self.timers.push(Reverse((at, user)));
            }
        }
        let rule_version: Arc<str> = Arc::from(rule_version);
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
        self.stats.sessions_closed = self.stats.sessions_closed.saturating_add(closed.len() as u64);
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
