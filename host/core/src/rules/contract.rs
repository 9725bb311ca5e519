//! The rules contract (`wit/sessionize.wit`) as the host speaks it: plain Rust
//! types, so the engine and the state store never see wasmtime's generated ones.
//! The host converts them to the generated WIT types at the component
//! boundary, once per call.

use serde::{Deserialize, Serialize};

/// A handle into the text table the engine keeps (page and event names).
pub type TextId = u32;

/// One event as the rules see it: its time and interned texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Event time, epoch milliseconds.
    pub timestamp_ms: i64,
    /// `page_name`.
    pub page_name: Option<TextId>,
    /// `event_details.event_name`.
    pub event_name: Option<TextId>,
    /// `event_details.event_type`.
    pub event_type: Option<TextId>,
}

/// A user's open session, stored by the host between calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Time of the first event, epoch milliseconds.
    pub start_ms: i64,
    /// Time of the latest event.
    pub last_ms: i64,
    /// Events in the session so far.
    pub event_count: u32,
    /// Distinct pages in order of first visit.
    pub pages: Vec<TextId>,
    /// The plugin's own bytes, opaque to the host.
    pub data: Vec<u8>,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The inactivity timeout passed.
    Inactivity,
    /// The session reached its maximum duration.
    MaxDuration,
    /// A bounded input ended with the session open.
    EndOfInput,
    /// The plugin's own reason.
    Custom(String),
}

impl EndReason {
    /// The `end_reason` column's value.
    pub fn into_name(self) -> String {
        match self {
            EndReason::Inactivity => "inactivity".into(),
            EndReason::MaxDuration => "max_duration".into(),
            EndReason::EndOfInput => "end_of_input".into(),
            EndReason::Custom(reason) => reason,
        }
    }
}

/// A session the rules closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedSession {
    /// Index of the user in the batch.
    pub user: u32,
    /// Time of the first event.
    pub start_ms: i64,
    /// Time of the last event.
    pub end_ms: i64,
    /// Events in the session.
    pub event_count: u32,
    /// Distinct pages in order of first visit.
    pub pages: Vec<TextId>,
    /// Why it ended.
    pub end_reason: EndReason,
}

/// One user of a batch: the open session and how many of the batch's events are theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSlice {
    /// The open session, if any.
    pub state: Option<SessionState>,
    /// The user's events, next in [`Batch::events`].
    pub event_count: u32,
}

/// One call's worth of work: many users, their events in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Texts the instance has not seen yet (filled in by the runtime).
    pub new_texts: Vec<String>,
    /// Every event still to come is at or after this time.
    pub watermark: i64,
    /// Close every session: the input ended.
    pub end_of_input: bool,
    /// The users, in the order their events follow.
    pub users: Vec<UserSlice>,
    /// Every user's events, user after user, each in (time, id) order.
    pub events: Vec<Event>,
}

/// What became of one user of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserOutcome {
    /// The session still open.
    pub state: Option<SessionState>,
    /// When the rules want to see the user again without events.
    pub wake_at: Option<i64>,
}

/// The answer to a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    /// One outcome per user of the batch, in order.
    pub users: Vec<UserOutcome>,
    /// Sessions closed by this batch.
    pub closed: Vec<ClosedSession>,
}

/// The job's settings, given to the rules once per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--inactivity-timeout`, milliseconds.
    pub inactivity_timeout_ms: i64,
    /// `--max-session-duration`, milliseconds.
    pub max_duration_ms: i64,
    /// `--plugin-param` pairs.
    pub params: Vec<(String, String)>,
}
