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
#[derive(Debug, Clone, PartialEq)]
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
    /// One value per declared attribute, in declaration order (contract 0.2).
    pub attributes: Vec<Option<AttributeValue>>,
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
#[derive(Debug, Clone, PartialEq)]
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
    /// One column per declared field, one value per event (contract 0.2).
    pub fields: Vec<FieldValues>,
}

impl Batch {
    /// Rebuilds the field columns, made for the fields `from`, for the
    /// fields `to` (other rules'): a column both declare (same path, same
    /// type) moves over, one only `to` declares holds absent values.
    pub fn refit_fields(&mut self, from: &[EventField], to: &[EventField]) {
        let events = self.events.len();
        let mut columns = std::mem::take(&mut self.fields);
        self.fields = to
            .iter()
            .map(|field| match from.iter().position(|f| f == field) {
                Some(i) if i < columns.len() => {
                    std::mem::replace(&mut columns[i], FieldValues::Boolean(Vec::new()))
                }
                _ => {
                    let mut column = FieldValues::with_capacity(field.field_type, events);
                    (0..events).for_each(|_| column.push(None));
                    column
                }
            })
            .collect();
    }
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
#[derive(Debug, Clone, PartialEq)]
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

/// The type of a declared event field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldType {
    /// A JSON string, interned: values are [`TextId`]s.
    String,
    /// A JSON number without fraction that fits an `i64`.
    Integer,
    /// Any JSON number.
    Float,
    /// `true` or `false`.
    Boolean,
}

/// An event field the rules read: a dotted path from the event's top level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventField {
    /// For example `event_details.event_value`.
    pub path: String,
    /// What the rules expect there; anything else arrives as absent.
    pub field_type: FieldType,
}

/// One declared field's value in one event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// A string, interned.
    Text(TextId),
    /// An integer.
    Integer(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Boolean(bool),
}

/// One declared field's values for every event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValues {
    /// Of a `string` field.
    Text(Vec<Option<TextId>>),
    /// Of an `integer` field.
    Integer(Vec<Option<i64>>),
    /// Of a `float` field.
    Float(Vec<Option<f64>>),
    /// Of a `boolean` field.
    Boolean(Vec<Option<bool>>),
}

impl FieldValues {
    /// An empty column for a field of type `field_type`, with room for `events`.
    pub fn with_capacity(field_type: FieldType, events: usize) -> Self {
        match field_type {
            FieldType::String => FieldValues::Text(Vec::with_capacity(events)),
            FieldType::Integer => FieldValues::Integer(Vec::with_capacity(events)),
            FieldType::Float => FieldValues::Float(Vec::with_capacity(events)),
            FieldType::Boolean => FieldValues::Boolean(Vec::with_capacity(events)),
        }
    }

    /// Appends one event's value; a value of another type than the column's
    /// is appended as absent.
    pub fn push(&mut self, value: Option<FieldValue>) {
        match self {
            FieldValues::Text(v) => v.push(match value {
                Some(FieldValue::Text(t)) => Some(t),
                _ => None,
            }),
            FieldValues::Integer(v) => v.push(match value {
                Some(FieldValue::Integer(n)) => Some(n),
                _ => None,
            }),
            FieldValues::Float(v) => v.push(match value {
                Some(FieldValue::Float(x)) => Some(x),
                _ => None,
            }),
            FieldValues::Boolean(v) => v.push(match value {
                Some(FieldValue::Boolean(b)) => Some(b),
                _ => None,
            }),
        }
    }

    /// A copy of the first `len` values.
    pub fn prefix(&self, len: usize) -> Self {
        match self {
            FieldValues::Text(v) => FieldValues::Text(v[..len.min(v.len())].to_vec()),
            FieldValues::Integer(v) => FieldValues::Integer(v[..len.min(v.len())].to_vec()),
            FieldValues::Float(v) => FieldValues::Float(v[..len.min(v.len())].to_vec()),
            FieldValues::Boolean(v) => FieldValues::Boolean(v[..len.min(v.len())].to_vec()),
        }
    }
}

/// The type of a session attribute and of the column that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttributeType {
    /// Iceberg `string`.
    String,
    /// Iceberg `long`.
    Long,
    /// Iceberg `double`.
    Double,
    /// Iceberg `boolean`.
    Boolean,
    /// Iceberg `list<string>`.
    StringList,
}

impl AttributeType {
    /// The contract's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            AttributeType::String => "string",
            AttributeType::Long => "long",
            AttributeType::Double => "double",
            AttributeType::Boolean => "boolean",
            AttributeType::StringList => "string-list",
        }
    }
}

/// An attribute the rules compute for every session they close.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionAttribute {
    /// The column's name.
    pub name: String,
    /// The column's type.
    pub attribute_type: AttributeType,
    /// One line of documentation for the column.
    pub doc: String,
}

/// One session's value of an attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttributeValue {
    /// Of a `string` attribute.
    String(String),
    /// Of a `long` attribute.
    Long(i64),
    /// Of a `double` attribute.
    Double(f64),
    /// Of a `boolean` attribute.
    Boolean(bool),
    /// Of a `string-list` attribute.
    StringList(Vec<String>),
}

impl AttributeValue {
    /// The type this value has.
    pub fn attribute_type(&self) -> AttributeType {
        match self {
            AttributeValue::String(_) => AttributeType::String,
            AttributeValue::Long(_) => AttributeType::Long,
            AttributeValue::Double(_) => AttributeType::Double,
            AttributeValue::Boolean(_) => AttributeType::Boolean,
            AttributeValue::StringList(_) => AttributeType::StringList,
        }
    }
}

/// What rules read beyond the fixed event record and write beyond the fixed
/// session columns (contract 0.2; empty for 0.1 plugins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Declarations {
    /// Event fields, in the order of [`Batch::fields`].
    pub fields: Vec<EventField>,
    /// Session attributes, in the order of [`ClosedSession::attributes`].
    pub attributes: Vec<SessionAttribute>,
}
