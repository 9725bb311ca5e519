//! How the state store encodes what it keeps (postcard). Changing a layout here
//! makes existing state directories unreadable: add fields at the end with
//! care, or version the store.
//!
//! What contract 0.2 added (declared field values of waiting events, session
//! attributes of staged output) goes in a tail after the 0.1 layout, written
//! only when there is something in it: records of a job that uses no 0.2
//! plugin stay byte for byte what 0.1 wrote, and 0.1 records read as before.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{PendingEvent, UserState};
use crate::rules::contract::{AttributeValue, FieldValue, SessionAttribute, SessionState};
use crate::state::StagedOutput;

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
    let mut bytes = postcard::to_stdvec(&UserRecordRef {
        state: user.state.as_deref(),
        wake_at: user.wake_at,
        pending: &user.pending,
    })?;
    if user.pending.iter().any(|p| !p.fields.is_empty()) {
        let fields: Vec<&[Option<FieldValue>]> = user.pending.iter().map(|p| &*p.fields).collect();
        bytes.extend(postcard::to_stdvec(&fields)?);
    }
    Ok(bytes)
}

/// Reads a user stored under `uuid` back.
pub(crate) fn decode_user(uuid: &str, bytes: &[u8]) -> Result<UserState, postcard::Error> {
    let (mut record, tail): (UserRecord, _) = postcard::take_from_bytes(bytes)?;
    if !tail.is_empty() {
        let fields: Vec<Vec<Option<FieldValue>>> = postcard::from_bytes(tail)?;
        if fields.len() != record.pending.len() {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        for (pending, values) in record.pending.iter_mut().zip(fields) {
            pending.fields = values.into();
        }
    }
    Ok(UserState {
        uuid: Arc::from(uuid),
        state: record.state.map(Arc::new),
        wake_at: record.wake_at,
        pending: record.pending,
    })
}

/// The 0.2 tail of staged output: each session's attributes, and the
/// attribute columns the rules in force at the cut declared.
#[derive(Serialize, Deserialize)]
struct StagedTail {
    attributes: Vec<Vec<(String, AttributeValue)>>,
    columns: Vec<SessionAttribute>,
}

/// The stored form of a checkpoint's output.
pub(crate) fn encode_staged(staged: &StagedOutput) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = postcard::to_stdvec(staged)?;
    if !staged.columns.is_empty() || staged.sessions.iter().any(|s| !s.attributes.is_empty()) {
        let tail = StagedTail {
            attributes: staged
                .sessions
                .iter()
                .map(|s| s.attributes.iter().map(|(n, v)| (n.to_string(), v.clone())).collect())
                .collect(),
            columns: staged.columns.clone(),
        };
        bytes.extend(postcard::to_stdvec(&tail)?);
    }
    Ok(bytes)
}

/// Reads a checkpoint's output back.
pub(crate) fn decode_staged(bytes: &[u8]) -> Result<StagedOutput, postcard::Error> {
    let (mut staged, tail): (StagedOutput, _) = postcard::take_from_bytes(bytes)?;
    if !tail.is_empty() {
        let tail: StagedTail = postcard::from_bytes(tail)?;
        if tail.attributes.len() != staged.sessions.len() {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        for (session, attributes) in staged.sessions.iter_mut().zip(tail.attributes) {
            session.attributes = attributes.into_iter().map(|(n, v)| (Arc::from(n), v)).collect();
        }
        staged.columns = tail.columns;
    }
    Ok(staged)
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
                event_id: Some("e7".into()),
                event: Event {
                    timestamp_ms: 12,
                    page_name: Some(1),
                    event_name: None,
                    event_type: Some(2),
                },
                fields: Default::default(),
            }],
        };
        let bytes = encode_user(&user).unwrap();
        assert_eq!(decode_user("u1", &bytes).unwrap(), user);
        let mut with_fields = user.clone();
        with_fields.pending[0].fields =
            vec![Some(FieldValue::Float(2.5)), None, Some(FieldValue::Text(1))].into();
        let bytes = encode_user(&with_fields).unwrap();
        assert_eq!(decode_user("u1", &bytes).unwrap(), with_fields);
    }

    #[test]
    fn staged_output_keeps_attributes_and_columns_after_the_first_layout() {
        use crate::rules::contract::AttributeType;
        use crate::sink::SessionRow;
        let row = SessionRow {
            uuid: "u".into(),
            session_id: "s".into(),
            start_ms: 1,
            end_ms: 2,
            event_count: 2,
            pages: vec![Arc::from("home")],
            end_reason: "inactivity".into(),
            rule_version: Arc::from("r@1"),
            attributes: Vec::new(),
        };
        let plain = StagedOutput { sessions: vec![row.clone()], ..StagedOutput::default() };
        let bytes = encode_staged(&plain).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&plain).unwrap(), "0.1 layout kept");
        assert_eq!(decode_staged(&bytes).unwrap(), plain);
        let mut rich = plain.clone();
        rich.sessions[0].attributes = vec![(Arc::from("revenue"), AttributeValue::Double(9.5))];
        rich.columns = vec![SessionAttribute {
            name: "revenue".into(),
            attribute_type: AttributeType::Double,
            doc: "sum".into(),
        }];
        assert_eq!(decode_staged(&encode_staged(&rich).unwrap()).unwrap(), rich);
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
