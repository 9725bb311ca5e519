//! The users the engine holds: each one's open session, the events waiting for
//! the watermark, and the bookkeeping that finds users with work to do and
//! users changed since the last checkpoint.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::text::TextTable;
use crate::rules::contract::{Event, FieldValue, SessionState};

/// A producer's event id (serialized as a string).
pub type EventId = compact_str::CompactString;

/// The values of one event's declared fields, in declaration order: inline up
/// to two fields (rules declare few), on the heap beyond.
pub type FieldRow = smallvec::SmallVec<[Option<FieldValue>; 2]>;

/// An accepted event waiting for the watermark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// The producer's id, for duplicate detection. Held inline up to 24
    /// bytes: a user's waiting ids are compared on every event, and an id
    /// behind a pointer costs an allocation and a cache miss each.
    pub event_id: Option<EventId>,
    /// The event as the rules will see it.
    pub event: Event,
    /// The values of the declared fields (empty when none is declared).
    /// Stored by the state store after the 0.1 layout, not inside it.
    #[serde(skip)]
    pub fields: FieldRow,
}

impl PendingEvent {
    /// (time, event id), then the event's texts: events tied on time and id are
    /// ordered by content, never by arrival, so arrival order cannot show.
    pub(super) fn cmp(&self, other: &Self, texts: &TextTable) -> std::cmp::Ordering {
        let text = |h: Option<u32>| h.and_then(|h| texts.get(h)).map(|t| &**t);
        (self.event.timestamp_ms, self.event_id.as_deref())
            .cmp(&(other.event.timestamp_ms, other.event_id.as_deref()))
            .then_with(|| text(self.event.page_name).cmp(&text(other.event.page_name)))
            .then_with(|| text(self.event.event_name).cmp(&text(other.event.event_name)))
            .then_with(|| text(self.event.event_type).cmp(&text(other.event.event_type)))
            .then_with(|| {
                let key = |v: &Option<FieldValue>| match *v {
                    None => (0, None, 0, 0.0),
                    Some(FieldValue::Text(h)) => (1, text(Some(h)), 0, 0.0),
                    Some(FieldValue::Integer(n)) => (2, None, n, 0.0),
                    Some(FieldValue::Float(x)) => (3, None, 0, x),
                    Some(FieldValue::Boolean(b)) => (4, None, i64::from(b), 0.0),
                };
                let pairs = self.fields.iter().zip(other.fields.iter());
                pairs
                    .map(|(a, b)| {
                        let (a, b) = (key(a), key(b));
                        (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)).then(a.3.total_cmp(&b.3))
                    })
                    .find(|o| o.is_ne())
                    .unwrap_or_else(|| self.fields.len().cmp(&other.fields.len()))
            })
    }
}

/// Waiting events from which a user's duplicate lookups go through an index
/// instead of a scan: one hot user (a bot, an `anonymous` uuid) must not make
/// duplicate detection quadratic, while most users, with a few events waiting,
/// need no index at all.
const INDEX_FROM: usize = 16;

/// Event id -> position in a user's waiting events. Keyed by strings from
/// outside, so hashed with a randomly seeded hasher.
type EventIndex = HashMap<EventId, u32, ahash::RandomState>;

/// [`UserSlot::partition`] before the user's first event.
pub(super) const NO_PARTITION: u32 = u32::MAX;

/// Everything the engine keeps about one user.
pub(super) struct UserSlot {
    pub(super) uuid: Arc<str>,
    /// The open session, as the rules left it (shared with checkpoint cuts).
    pub(super) state: Option<Arc<SessionState>>,
    /// Events not yet released, in arrival order.
    pub(super) pending: Vec<PendingEvent>,
    /// Positions of `pending` by event id, once there are many; dropped
    /// whenever `pending` is reordered ([`Users::take_pending`]).
    index: Option<Box<EventIndex>>,
    /// When the rules want to see this user again without events.
    pub(super) wake_at: Option<i64>,
    /// The partition the user's first event (since the user was loaded)
    /// came from; [`NO_PARTITION`] before that.
    pub(super) partition: u32,
    /// Whether the user is in [`Users::with_pending`].
    listed: bool,
    /// Whether the user changed since the last [`Users::take_dirty`].
    dirty: bool,
}

/// Users by a dense id, reused after eviction.
#[derive(Default)]
pub(super) struct Users {
    /// Keyed by uuids from outside: a randomly seeded hasher, so crafted
    /// uuids cannot make every lookup collide.
    ids: HashMap<Arc<str>, u32, ahash::RandomState>,
    slots: Vec<UserSlot>,
    /// Slots of evicted users, for reuse.
    free: Vec<u32>,
    /// Users with events waiting.
    with_pending: Vec<u32>,
    /// Users changed since the last [`Users::take_dirty`].
    dirty: Vec<u32>,
}

impl Users {
    /// Users held in memory.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The users held (evicted slots left out).
    pub(super) fn live(&self) -> Vec<u32> {
        self.ids.values().copied().collect()
    }

    /// Every slot id ever handed out (evicted ones included).
    pub(super) fn ids(&self) -> std::ops::Range<u32> {
        0..self.slots.len() as u32
    }

    pub(super) fn slot(&self, user: u32) -> &UserSlot {
        &self.slots[user as usize]
    }

    pub(super) fn slot_mut(&mut self, user: u32) -> &mut UserSlot {
        &mut self.slots[user as usize]
    }

    /// The id of `uuid`, adding the user on first sight.
    pub(super) fn id_of(&mut self, uuid: &str) -> u32 {
        if let Some(&id) = self.ids.get(uuid) {
            return id;
        }
        let uuid: Arc<str> = Arc::from(uuid);
        let slot = UserSlot {
            uuid: uuid.clone(),
            state: None,
            pending: Vec::new(),
            index: None,
            wake_at: None,
            partition: NO_PARTITION,
            listed: false,
            dirty: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(uuid, id);
        id
    }

    pub(super) fn mark_dirty(&mut self, user: u32) {
        let slot = &mut self.slots[user as usize];
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(user);
        }
    }

    /// The waiting event of `user` with this id, if any.
    pub(super) fn pending_twin(&mut self, user: u32, event_id: &str) -> Option<&mut PendingEvent> {
        let slot = &mut self.slots[user as usize];
        if slot.pending.len() < INDEX_FROM {
            return slot.pending.iter_mut().find(|p| p.event_id.as_deref() == Some(event_id));
        }
        let pending = &slot.pending;
        let index = slot.index.get_or_insert_with(|| {
            let ids = pending.iter().enumerate();
            Box::new(ids.filter_map(|(i, p)| Some((p.event_id.clone()?, i as u32))).collect())
        });
        let position = *index.get(event_id)?;
        slot.pending.get_mut(position as usize)
    }

    /// Takes `user`'s waiting events out, to be reordered or released.
    pub(super) fn take_pending(&mut self, user: u32) -> Vec<PendingEvent> {
        let slot = &mut self.slots[user as usize];
        slot.index = None;
        std::mem::take(&mut slot.pending)
    }

    /// Queues an accepted event for `user`.
    pub(super) fn queue(&mut self, user: u32, event: PendingEvent) {
        let slot = &mut self.slots[user as usize];
        if slot.pending.capacity() == 0 {
            // Most users have one or two events waiting: the default first
            // allocation (four) would dominate memory with many users.
            slot.pending.reserve_exact(1);
        }
        if let (Some(index), Some(id)) = (&mut slot.index, &event.event_id) {
            index.insert(id.clone(), slot.pending.len() as u32);
        }
        slot.pending.push(event);
        self.list(user);
        self.mark_dirty(user);
    }

    /// Keeps `user` among those with events waiting, if it has any; otherwise not.
    pub(super) fn list(&mut self, user: u32) {
        let slot = &mut self.slots[user as usize];
        if slot.pending.is_empty() {
            slot.listed = false;
        } else if !slot.listed {
            slot.listed = true;
            self.with_pending.push(user);
        }
    }

    /// Users with events waiting; they are listed again by [`Users::list`].
    pub(super) fn take_with_pending(&mut self) -> Vec<u32> {
        let users = std::mem::take(&mut self.with_pending);
        for &user in &users {
            self.slots[user as usize].listed = false;
        }
        users
    }

    /// Users changed since the last call.
    pub(super) fn take_dirty(&mut self) -> Vec<u32> {
        let users = std::mem::take(&mut self.dirty);
        for &user in &users {
            self.slots[user as usize].dirty = false;
        }
        users
    }

    /// Drops `user` from memory (nothing open, nothing waiting) and returns its uuid.
    pub(super) fn evict(&mut self, user: u32) -> Arc<str> {
        let slot = &mut self.slots[user as usize];
        self.ids.remove(&slot.uuid);
        slot.wake_at = None;
        slot.index = None;
        self.free.push(user);
        std::mem::replace(&mut slot.uuid, Arc::from(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_maps_are_seeded_differently() {
        // A fixed hasher would let one crafted set of uuids collide in every job.
        let (a, b) = (Users::default(), Users::default());
        assert_ne!(a.ids.hasher().hash_one("uuid"), b.ids.hasher().hash_one("uuid"));
    }
}
