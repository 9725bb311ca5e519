//! Parsing and validating input records into events.
//!
//! A valid event is a JSON object with a non-empty string `uuid` and an
//! `event_timestamp` of epoch milliseconds >= 0, given as a string of digits or a
//! number. `event_id`, `page_name`, `booking_details` and `event_details{event_name,
//! event_type, event_value}` are optional; unknown fields are ignored. Anything
//! else is rejected with a [`Rejection`] that says what is wrong.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// One valid input event, borrowing from the record it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The user.
    pub uuid: Cow<'a, str>,
    /// Producer's id; events of one user with the same id count once.
    pub event_id: Option<Cow<'a, str>>,
    /// Event time, epoch milliseconds.
    pub timestamp_ms: i64,
    /// The page the event happened on.
    pub page_name: Option<Cow<'a, str>>,
    /// `event_details.event_name`.
    pub event_name: Option<Cow<'a, str>>,
    /// `event_details.event_type`.
    pub event_type: Option<Cow<'a, str>>,
}

/// Why a record is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not parseable JSON, or not a JSON object.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The record is not valid UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// A required field is absent or null.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("{field} must be {expected}, found {found}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What the record had.
        found: &'static str,
    },
    /// `uuid` is an empty string.
    #[error("uuid is empty")]
    EmptyUuid,
    /// `event_timestamp` is not a non-negative whole number of milliseconds.
    #[error("event_timestamp {0:?} is not epoch milliseconds >= 0")]
    BadTimestamp(String),
}

/// Parses one record (a JSON line or a Kafka message value).
pub fn parse(record: &[u8]) -> Result<Event<'_>, Rejection> {
    // serde would also read a struct from a JSON array; events are objects only.
    if record.trim_ascii_start().first() != Some(&b'{') {
        return Err(if std::str::from_utf8(record).is_err() {
            Rejection::NotUtf8
        } else {
            Rejection::InvalidJson("not a JSON object".into())
        });
    }
    let wire: Wire<'_> = serde_json::from_slice(record).map_err(|e| {
        if std::str::from_utf8(record).is_err() {
            Rejection::NotUtf8
        } else {
            Rejection::InvalidJson(e.to_string())
        }
    })?;
    let uuid = match wire.uuid {
        Value::Str(s) if s.is_empty() => return Err(Rejection::EmptyUuid),
        Value::Str(s) => s,
        Value::Null => return Err(Rejection::Missing("uuid")),
        other => return Err(wrong_type("uuid", "a string", &other)),
    };
    let timestamp_ms = match wire.event_timestamp {
        Value::Str(s) => parse_digits(&s).ok_or_else(|| Rejection::BadTimestamp(s.into_owned()))?,
        Value::Unsigned(n) => {
            i64::try_from(n).map_err(|_| Rejection::BadTimestamp(n.to_string()))?
        }
        Value::Signed(n) => return Err(Rejection::BadTimestamp(n.to_string())),
        Value::Float(f) => whole_ms(f).ok_or_else(|| Rejection::BadTimestamp(f.to_string()))?,
        Value::Null => return Err(Rejection::Missing("event_timestamp")),
        other => return Err(wrong_type("event_timestamp", "a string or number", &other)),
    };
    let event_id = match wire.event_id {
        Value::Str(s) => Some(s),
        Value::Unsigned(n) => Some(Cow::Owned(n.to_string())),
        Value::Signed(n) => Some(Cow::Owned(n.to_string())),
        Value::Null => None,
        other => return Err(wrong_type("event_id", "a string or integer", &other)),
    };
    let page_name = optional_text("page_name", wire.page_name)?;
    let (event_name, event_type) = match wire.event_details {
        Details::Absent => (None, None),
        Details::Object { event_name, event_type } => (
            optional_text("event_details.event_name", event_name)?,
            optional_text("event_details.event_type", event_type)?,
        ),
        Details::NotObject(found) => {
            return Err(Rejection::WrongType {
                field: "event_details",
                expected: "an object",
                found,
            })
        }
    };
    Ok(Event { uuid, event_id, timestamp_ms, page_name, event_name, event_type })
}

fn optional_text<'a>(
    field: &'static str,
    value: Value<'a>,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    match value {
        Value::Str(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        other => Err(wrong_type(field, "a string", &other)),
    }
}

fn wrong_type(field: &'static str, expected: &'static str, found: &Value<'_>) -> Rejection {
    Rejection::WrongType { field, expected, found: found.kind() }
}

/// A string of ASCII digits that fits an i64.
fn parse_digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A float that is a whole, non-negative number of milliseconds (JSON like `1.7e12`).
fn whole_ms(f: f64) -> Option<i64> {
    // 2^53: beyond it a float no longer names one millisecond.
    (f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0).then_some(f as i64)
}

/// The fields we read; every other field is skipped without being decoded.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    uuid: Value<'a>,
    #[serde(borrow, default)]
    event_id: Value<'a>,
    #[serde(borrow, default)]
    event_timestamp: Value<'a>,
    #[serde(borrow, default)]
    page_name: Value<'a>,
    #[serde(borrow, default)]
    event_details: Details<'a>,
}

/// Any JSON value, keeping only what validation needs.
#[derive(Default)]
enum Value<'a> {
    #[default]
    Null,
    Str(Cow<'a, str>),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool,
    Array,
    Object,
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Str(_) => "a string",
            Value::Unsigned(_) | Value::Signed(_) | Value::Float(_) => "a number",
            Value::Bool => "a boolean",
            Value::Array => "an array",
            Value::Object => "an object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Value::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 { Value::Unsigned(v as u64) } else { Value::Signed(v) })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Value::Bool)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Object)
    }
}

/// `event_details`: an object with the two fields we read, or something else.
#[derive(Default)]
enum Details<'a> {
    #[default]
    Absent,
    Object {
        event_name: Value<'a>,
        event_type: Value<'a>,
    },
    NotObject(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Details<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DetailsVisitor;
        impl<'de> Visitor<'de> for DetailsVisitor {
            type Value = Details<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut event_name, mut event_type) = (Value::Null, Value::Null);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "event_name" => event_name = map.next_value()?,
                        "event_type" => event_type = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Details::Object { event_name, event_type })
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Details::Absent)
            }
            fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Details::NotObject("a string"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Details::NotObject("a string"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Details::NotObject("a number"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Details::NotObject("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Details::NotObject("a number"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Details::NotObject("a boolean"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Details::NotObject("an array"))
            }
        }
        deserializer.deserialize_any(DetailsVisitor)
    }
}

/// A run of parsed records with their strings copied into one buffer: parsing
/// happens on another thread than the engine, and a block crosses over without an
/// allocation per event.
#[derive(Debug, Default)]
pub struct EventBlock {
    text: String,
    items: Vec<BlockItem>,
}

/// A string stored in a block's buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug)]
enum BlockItem {
    Event {
        partition: i32,
        position: i64,
        raw: Span,
        uuid: Span,
        event_id: Option<Span>,
        timestamp_ms: i64,
        page_name: Option<Span>,
        event_name: Option<Span>,
        event_type: Option<Span>,
    },
    Rejected {
        partition: i32,
        position: i64,
        raw: Span,
        reason: Rejection,
    },
}

/// One record of a block: an event, or a rejected record with its reason.
#[derive(Debug)]
pub enum BlockRecord<'a> {
    /// A valid event read at (partition, position), with its raw text.
    Event(i32, i64, &'a str, Event<'a>),
    /// A record refused at (partition, position): its raw text and why.
    Rejected(i32, i64, &'a str, &'a Rejection),
}

impl EventBlock {
    /// An empty block with room for `records` records.
    pub fn with_capacity(records: usize) -> Self {
        Self { text: String::with_capacity(records * 64), items: Vec::with_capacity(records) }
    }

    /// Records in the block.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the block holds no record.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Parses `record` (read at `position` of `partition`) and keeps the outcome.
    pub fn push(&mut self, partition: i32, position: i64, record: &[u8]) {
        // The record goes into the buffer once; fields that parsed without
        // escapes point into it, only unescaped copies are added.
        let raw = self.store(&String::from_utf8_lossy(record));
        let item = match parse(record) {
            Ok(event) => {
                let base = record.as_ptr() as usize;
                let inside = |b: &str| {
                    let at = b.as_ptr() as usize;
                    at >= base && at + b.len() <= base + record.len()
                };
                let mut field = |text: &Cow<'_, str>| match text {
                    Cow::Borrowed(b) if inside(b) => Span {
                        start: raw.start + (b.as_ptr() as usize - base) as u32,
                        len: b.len() as u32,
                    },
                    _ => self.store(text),
                };
                BlockItem::Event {
                    partition,
                    position,
                    raw,
                    uuid: field(&event.uuid),
                    event_id: event.event_id.as_ref().map(&mut field),
                    timestamp_ms: event.timestamp_ms,
                    page_name: event.page_name.as_ref().map(&mut field),
                    event_name: event.event_name.as_ref().map(&mut field),
                    event_type: event.event_type.as_ref().map(&mut field),
                }
            }
            Err(reason) => BlockItem::Rejected { partition, position, raw, reason },
        };
        self.items.push(item);
    }

    fn store(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span { start, len: s.len() as u32 }
    }

    fn get(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.text.get(start..start + span.len as usize).unwrap_or_default()
    }

    /// The records in input order.
    pub fn records(&self) -> impl Iterator<Item = BlockRecord<'_>> + '_ {
        self.items.iter().map(move |item| match item {
            BlockItem::Event {
                partition,
                position,
                raw,
                uuid,
                event_id,
                timestamp_ms,
                page_name,
                event_name,
                event_type,
            } => BlockRecord::Event(
                *partition,
                *position,
                self.get(*raw),
                Event {
                    uuid: Cow::Borrowed(self.get(*uuid)),
                    event_id: event_id.map(|s| Cow::Borrowed(self.get(s))),
                    timestamp_ms: *timestamp_ms,
                    page_name: page_name.map(|s| Cow::Borrowed(self.get(s))),
                    event_name: event_name.map(|s| Cow::Borrowed(self.get(s))),
                    event_type: event_type.map(|s| Cow::Borrowed(self.get(s))),
                },
            ),
            BlockItem::Rejected { partition, position, raw, reason } => {
                BlockRecord::Rejected(*partition, *position, self.get(*raw), reason)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(line: &str) -> String {
        match parse(line.as_bytes()) {
            Ok(e) => panic!("accepted {line}: {e:?}"),
            Err(r) => r.to_string(),
        }
    }

    #[test]
    fn accepts_string_or_number_timestamps_and_optional_fields() {
        let e = parse(br#"{"uuid":"u1","event_timestamp":"1700000000000"}"#).unwrap();
        assert_eq!((e.uuid.as_ref(), e.timestamp_ms, e.event_id), ("u1", 1_700_000_000_000, None));
        let e = parse(
            br#"{"uuid":"u1","event_id":7,"event_timestamp":0,"page_name":"home",
                "booking_details":{"x":[1,2]},"event_details":{"event_name":"click",
                "event_type":"ui","event_value":{"a":1}},"extra":true}"#,
        )
        .unwrap();
        assert_eq!(e.timestamp_ms, 0);
        assert_eq!(e.event_id.as_deref(), Some("7"));
        assert_eq!(e.page_name.as_deref(), Some("home"));
        assert_eq!(e.event_name.as_deref(), Some("click"));
        assert_eq!(e.event_type.as_deref(), Some("ui"));
        let e = parse(br#"{"uuid":"u","event_timestamp":1.7e12,"event_details":null}"#).unwrap();
        assert_eq!(e.timestamp_ms, 1_700_000_000_000);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let e = parse(br#"{"uuid":"a\"b","event_timestamp":"5","page_name":"caf\u00e9"}"#).unwrap();
        assert_eq!((e.uuid.as_ref(), e.page_name.as_deref()), ("a\"b", Some("café")));
    }

    #[test]
    fn rejects_each_kind_of_malformed_record_with_its_reason() {
        assert!(reject("not json").starts_with("invalid JSON"));
        assert_eq!(reject(r#"["u", 1]"#), "invalid JSON: not a JSON object");
        assert_eq!(reject("42"), "invalid JSON: not a JSON object");
        assert!(reject(r#"{"uuid":"u","event_timestamp":1"#).starts_with("invalid JSON"));
        assert_eq!(reject(r#"{"event_timestamp":1}"#), "missing uuid");
        assert_eq!(reject(r#"{"uuid":null,"event_timestamp":1}"#), "missing uuid");
        assert_eq!(reject(r#"{"uuid":"","event_timestamp":1}"#), "uuid is empty");
        assert_eq!(
            reject(r#"{"uuid":5,"event_timestamp":1}"#),
            "uuid must be a string, found a number"
        );
        assert_eq!(reject(r#"{"uuid":"u"}"#), "missing event_timestamp");
        for bad in [r#""-5""#, r#""12a""#, r#""""#, "-5", "1.5", r#""99999999999999999999""#] {
            assert!(
                reject(&format!(r#"{{"uuid":"u","event_timestamp":{bad}}}"#))
                    .starts_with("event_timestamp"),
                "{bad}"
            );
        }
        assert_eq!(
            reject(r#"{"uuid":"u","event_timestamp":true}"#),
            "event_timestamp must be a string or number, found a boolean"
        );
        assert_eq!(
            reject(r#"{"uuid":"u","event_timestamp":1,"page_name":3}"#),
            "page_name must be a string, found a number"
        );
        assert_eq!(
            reject(r#"{"uuid":"u","event_timestamp":1,"event_details":"x"}"#),
            "event_details must be an object, found a string"
        );
        assert_eq!(
            reject(r#"{"uuid":"u","event_timestamp":1,"event_details":{"event_name":[]}}"#),
            "event_details.event_name must be a string, found an array"
        );
        assert_eq!(
            reject(r#"{"uuid":"u","event_timestamp":1,"event_id":{}}"#),
            "event_id must be a string or integer, found an object"
        );
        assert_eq!(parse(b"{\"uuid\":\"\xff\"}"), Err(Rejection::NotUtf8));
    }
}
