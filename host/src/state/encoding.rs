//! How the state store encodes what it keeps (postcard). Changing a layout here
//! makes existing state directories unreadable: add fields at the end with
//! care, or version the store.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{PendingEvent, UserState};
use crate::rules::contract::SessionState;

/// A user's record as written: borrowed from the engine's snapshot, so a
/// checkpoint of a million open sessions encodes them one at a time.
#[derive(Serialize)]
struct UserRecordRef<'a> {
    state: Option<&'a SessionState>,
    wake_at: Option<i64>,
    pending: &'a [PendingEvent],
}

/// A user's record as read back.
#[derive(Deserialize)]
struct UserRecord {
    state: Option<SessionState>,
    wake_at: Option<i64>,
    pending: Vec<PendingEvent>,
}

/// The stored form of `user` (its uuid is the key, not part of the record).
pub(crate) fn encode_user(user: &UserState) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(&UserRecordRef {
        state: user.state.as_deref(),
        wake_at: user.wake_at,
        pending: &user.pending,
    })
}

/// Reads a user stored under `uuid` back.
pub(crate) fn decode_user(uuid: &str, bytes: &[u8]) -> Result<UserState, postcard::Error> {
    let record: UserRecord = postcard::from_bytes(bytes)?;
    Ok(UserState {
        uuid: Arc::from(uuid),
        state: record.state.map(Arc::new),
        wake_at: record.wake_at,
        pending: record.pending,
    })
}

/// Any other record the store keeps (checkpoint, staged output).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

/// Reads a record written by [`encode`].
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::contract::Event;

    #[test]
    fn a_user_reads_back_as_written() {
        let user = UserState {
            uuid: Arc::from("u1"),
            state: Some(Arc::new(SessionState {
                start_ms: 5,
                last_ms: 9,
                event_count: 2,
                pages: vec![0, 3],
                data: vec![1, 2, 3],
            })),
            wake_at: Some(1_800_009),
            pending: vec![PendingEvent {
                event_id: Some(Arc::from("e7")),
                event: Event {
                    timestamp_ms: 12,
                    page_name: Some(1),
                    event_name: None,
                    event_type: Some(2),
                },
            }],
        };
        let bytes = encode_user(&user).unwrap();
        assert_eq!(decode_user("u1", &bytes).unwrap(), user);
    }

    /// Bytes the 0.1.0 host (before the reshape) wrote for a user with an open
    /// session and one event waiting: the layout must not drift.
    #[test]
    fn a_user_written_by_the_first_layout_reads_back_and_encodes_the_same() {
        let old =
            hex::decode("0180897ac0b28101020200010001c28fdd020101026533c0c2cf0101020000").unwrap();
        let user = decode_user("u1", &old).unwrap();
        let state = user.state.as_deref().unwrap();
        assert_eq!((state.start_ms, state.last_ms, state.event_count), (1_000_000, 1_060_000, 2));
        assert_eq!(state.pages, [0, 1]);
        assert_eq!(user.pending.len(), 1);
        assert_eq!(user.pending[0].event_id.as_deref(), Some("e3"));
        assert_eq!(user.pending[0].event.timestamp_ms, 1_700_000);
        assert_eq!(user.pending[0].event.page_name, Some(2));
        assert_eq!(encode_user(&user).unwrap(), old);
    }
}
