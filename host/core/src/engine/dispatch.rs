//! Handing work to the rules: which users are due, the batches built from
//! them, the queue of batches not yet applied (a failed one stays at its head
//! and is retried), and applying the rules' answers.

use std::cmp::Reverse;
use std::sync::Arc;

use super::{session_id, Engine, EngineError};
use crate::rows::SessionRow;
use crate::rules::contract::{Batch, BatchResult, EventField, UserSlice};
use crate::rules::{RulesRuntime, Texts};

/// A batch built for the rules and not yet applied, with the users it holds.
pub(super) struct InFlight {
    batch: Batch,
    users: Vec<u32>,
}

impl InFlight {
    /// Rebuilds the batch's field columns for other rules' fields.
    pub(super) fn refit_fields(&mut self, from: &[EventField], to: &[EventField]) {
        self.batch.refit_fields(from, to);
    }
}

impl Engine {
    /// Users whose events the watermark passed, and users whose wake-up time it
    /// passed, in id order; with `end_of_input`, every user with something open
    /// or waiting.
    pub(super) fn due_users(&mut self, watermark: i64, end_of_input: bool) -> Vec<u32> {
        let mut due: Vec<u32> = Vec::new();
        for user in self.users.take_with_pending() {
            let slot = self.users.slot(user);
            if end_of_input || slot.pending.iter().any(|p| p.event.timestamp_ms < watermark) {
                due.push(user);
            } else {
                self.users.list(user);
            }
        }
        while let Some(&Reverse((at, user))) = self.timers.peek() {
            if at > watermark && !end_of_input {
                break;
            }
            self.timers.pop();
            let slot = self.users.slot(user);
            // Stale timers (the user was seen again since) are skipped.
            if slot.wake_at == Some(at) && slot.state.is_some() {
                due.push(user);
            }
        }
        if end_of_input {
            due.extend(self.users.ids().filter(|&u| self.users.slot(u).state.is_some()));
        }
        due.sort_unstable();
        due.dedup();
        due
    }

    /// Releases the events of `due` users that the watermark passed (all, at
    /// the end of input) into batches of at most `max_batch_events` events
    /// (a user's events are never split), queued for the rules.
    pub(super) fn queue_batches(&mut self, due: Vec<u32>, end_of_input: bool) {
        let watermark = self.clocks.watermark();
        let mut batch = self.empty_batch(end_of_input);
        let mut users = Vec::new();
        for user in due {
            let mut events = self.users.take_pending(user);
            let texts = &self.texts;
            // Events that compare equal are equal in all the rules see, so
            // an unstable sort (no scratch allocation) gives the same batch.
            events.sort_unstable_by(|a, b| a.cmp(b, texts));
            let keep_from = if end_of_input {
                events.len()
            } else {
                events.partition_point(|p| p.event.timestamp_ms < watermark)
            };
            self.users.slot_mut(user).pending = events.split_off(keep_from);
            self.users.list(user);
            if !batch.events.is_empty()
                && batch.events.len() + events.len() > self.config.max_batch_events
            {
                let full = std::mem::replace(&mut batch, self.empty_batch(end_of_input));
                self.in_flight.push(InFlight { batch: full, users: std::mem::take(&mut users) });
            }
            self.users.mark_dirty(user);
            let slot = self.users.slot_mut(user);
            // Unshared unless a checkpoint still holds it; only then copied.
            let state = slot.state.take().map(Arc::unwrap_or_clone);
            batch.users.push(UserSlice { state, event_count: events.len() as u32 });
            self.waiting = self.waiting.saturating_sub(events.len() as u64);
            for pending in events {
                batch.events.push(pending.event);
                // One value per column, whatever the event holds (a stored
                // event's values are not trusted to be as many).
                for (i, column) in batch.fields.iter_mut().enumerate() {
                    column.push(pending.fields.get(i).copied().flatten());
                }
            }
            slot.wake_at = None;
            users.push(user);
        }
        if !users.is_empty() {
            self.in_flight.push(InFlight { batch, users });
        }
    }

    fn empty_batch(&self, end_of_input: bool) -> Batch {
        // Room for what may be released, so the batch does not grow by doubling.
        let events = usize::try_from(self.waiting).unwrap_or(usize::MAX);
        Batch {
            new_texts: Vec::new(),
            watermark: self.clocks.watermark(),
            end_of_input,
            users: Vec::new(),
            events: Vec::with_capacity(events.min(self.config.max_batch_events)),
            fields: self.empty_columns(),
        }
    }

    /// Runs queued batches through the rules, oldest first; stops at the first
    /// failure and leaves that batch queued.
    pub(super) fn drain_in_flight(
        &mut self,
        rules: &mut dyn RulesRuntime,
        closed: &mut Vec<SessionRow>,
    ) -> Result<(), EngineError> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let names: Vec<Arc<str>> =
            rules.declarations().attributes.iter().map(|a| Arc::from(a.name.as_str())).collect();
        while let Some(flight) = self.in_flight.first_mut() {
            self.stats.plugin_calls += 1;
            self.sample = Some(sample_of(&flight.batch));
            let started = std::time::Instant::now();
            let texts =
                Texts { strings: self.texts.as_slice(), generation: self.texts.generation() };
            let result = rules.process(texts, &mut flight.batch);
            self.stats.rules_time += started.elapsed();
            let result = result?;
            let flight = self.in_flight.remove(0);
            self.apply(&flight, result, rules.rule_version(), &names, closed);
        }
        Ok(())
    }

    fn apply(
        &mut self,
        flight: &InFlight,
        result: BatchResult,
        rule_version: &str,
        attribute_names: &[Arc<str>],
        closed: &mut Vec<SessionRow>,
    ) {
        for (&user, outcome) in flight.users.iter().zip(result.users) {
            let slot = self.users.slot_mut(user);
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
            let uuid = &self.users.slot(user).uuid;
            closed.push(SessionRow {
                uuid: uuid.to_string(),
                session_id: session_id(uuid, session.start_ms),
                start_ms: session.start_ms,
                end_ms: session.end_ms,
                event_count: session.event_count,
                pages: session.pages.iter().filter_map(|&h| self.texts.get(h).cloned()).collect(),
                end_reason: session.end_reason.into_name(),
                rule_version: rule_version.clone(),
                attributes: attribute_names
                    .iter()
                    .zip(session.attributes)
                    .filter_map(|(name, value)| Some((name.clone(), value?)))
                    .collect(),
            });
        }
    }
}

/// The first users of `batch` (up to 256) with their events.
fn sample_of(batch: &Batch) -> Batch {
    let users: Vec<UserSlice> = batch.users.iter().take(256).cloned().collect();
    let events = users.iter().map(|u| u.event_count as usize).sum::<usize>();
    let fields = batch.fields.iter().map(|column| column.prefix(events)).collect();
    Batch {
        new_texts: Vec::new(),
        watermark: batch.watermark,
        end_of_input: false,
        users,
        events: batch.events.iter().take(events).cloned().collect(),
        fields,
    }
}
