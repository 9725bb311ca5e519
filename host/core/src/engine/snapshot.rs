//! What a checkpoint takes from the engine, and rebuilding an engine from it.
//! The engine hands out plain values; how they are stored is the state
//! store's business.

use std::cmp::Reverse;
use std::sync::Arc;

use super::clock::{Clocks, EngineClocks};
use super::users::PendingEvent;
use super::{Engine, EngineConfig, EngineError};
use crate::rules::contract::{EventField, SessionState};

/// A user as of a checkpoint's cut. The open session is shared with the
/// engine, not copied: the engine replaces sessions rather than changing them,
/// so cutting a checkpoint costs a pointer per open session, whatever its size.
#[derive(Debug, Clone, PartialEq)]
pub struct UserState {
    /// The user.
    pub uuid: Arc<str>,
    /// The open session.
    pub state: Option<Arc<SessionState>>,
    /// When the rules want to see the user again.
    pub wake_at: Option<i64>,
    /// Events accepted but not yet released to the rules.
    pub pending: Vec<PendingEvent>,
}

/// What changed in the engine since the last checkpoint.
#[derive(Debug, Default)]
pub struct EngineChanges {
    /// Users with something open or pending, to write.
    pub upserts: Vec<UserState>,
    /// Users with nothing left, to delete.
    pub deletes: Vec<Arc<str>>,
    /// Handle of the first new text.
    pub first_text: u32,
    /// The text table was renumbered: the stored one is to be replaced by
    /// `new_texts` (and every user holding a text is among `upserts`).
    pub replace_texts: bool,
    /// Texts interned since the last checkpoint, in handle order.
    pub new_texts: Vec<Arc<str>>,
    /// The declared fields waiting events carry values of (every user whose
    /// values changed layout since the last call is among `upserts`).
    pub fields: Vec<EventField>,
}

impl Engine {
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
            replace_texts: std::mem::take(&mut self.texts_renumbered),
            fields: self.fields.fields().to_vec(),
            ..EngineChanges::default()
        };
        self.texts_taken = self.texts.as_slice().len();
        for user in self.users.take_dirty() {
            let slot = self.users.slot(user);
            if slot.state.is_none() && slot.pending.is_empty() {
                changes.deletes.push(self.users.evict(user));
                continue;
            }
            changes.upserts.push(UserState {
                uuid: slot.uuid.clone(),
                state: slot.state.clone(),
                wake_at: slot.wake_at,
                pending: slot.pending.clone(),
            });
        }
        Ok(changes)
    }

    /// Whether a failed batch waits for a retry: no state can be taken then.
    pub fn has_failed_batch(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Everything the engine holds, as changes that replace whatever was
    /// stored before (every user, the whole text table): the first of a new
    /// chain of changes. Fails while a failed batch waits for a retry.
    pub fn take_everything(&mut self) -> Result<EngineChanges, EngineError> {
        if !self.in_flight.is_empty() {
            return Err(EngineError::Busy);
        }
        for user in self.users.live() {
            self.users.mark_dirty(user);
        }
        self.texts_taken = 0;
        self.texts_renumbered = true;
        self.take_changes()
    }

    /// Partition clocks and the watermark, for the state store.
    pub fn clocks(&self) -> EngineClocks {
        self.clocks.snapshot()
    }

    /// Rebuilds an engine from what [`Engine::take_changes`] and
    /// [`Engine::clocks`] stored.
    pub fn restore(
        config: EngineConfig,
        texts: Vec<String>,
        clocks: EngineClocks,
        users: impl IntoIterator<Item = UserState>,
    ) -> Self {
        let mut engine = Engine::new(config);
        for text in &texts {
            engine.texts.intern(text);
        }
        // The table, not the list: a text listed twice (which the stores
        // refuse) must not leave the engine believing it took more.
        engine.texts_taken = engine.texts.as_slice().len();
        engine.clocks = Clocks::restore(config.allowed_lateness_ms, clocks);
        for stored in users {
            let user = engine.users.id_of(&stored.uuid);
            let slot = engine.users.slot_mut(user);
            slot.state = stored.state;
            slot.wake_at = stored.wake_at;
            engine.waiting += stored.pending.len() as u64;
            slot.pending = stored.pending;
            if let Some(at) = slot.wake_at {
                engine.timers.push(Reverse((at, user)));
            }
            engine.users.list(user);
        }
        engine
    }
}
