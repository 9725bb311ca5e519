//! Parsing and validating input records into events.
//!
//! A valid event is a JSON object with a non-empty string `uuid` and an
//! `event_timestamp` of epoch milliseconds >= 0, given as a string of digits or a
//! number. `event_id`, `page_name`, `booking_details` and `event_details{event_name,
//! event_type, event_value}` are optional; unknown fields are ignored. Anything
//! else is rejected with a [`Rejection`] that says what is wrong, and so is a
//! record or a field larger than its [`EventLimits`].

use std::borrow::Cow;

mod block;
mod fields;
mod split;
mod wire;

pub use block::{BlockRecord, EventBlock, Fields};
pub use fields::{Captured, FieldPaths};
pub use split::UserSplit;
use wire::{Details, Value};

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
    /// The whole record is larger than the limit.
    #[error("record of {bytes} bytes is over the limit of {limit} (--max-record-bytes)")]
    RecordTooLarge {
        /// The record's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// One field is longer than the limit.
    #[error("{field} of {bytes} bytes is over the limit of {limit} ({flag})")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
        /// The flag that sets the limit.
        flag: &'static str,
    },
}

impl Rejection {
    /// A short, fixed name for the kind of rejection (a metric label: the
    /// sentence itself carries the record's details).
    pub fn class(&self) -> &'static str {
        match self {
            Rejection::InvalidJson(_) => "invalid_json",
            Rejection::NotUtf8 => "not_utf8",
            Rejection::Missing(_) => "missing_field",
            Rejection::WrongType { .. } => "wrong_type",
            Rejection::EmptyUuid => "empty_uuid",
            Rejection::BadTimestamp(_) => "bad_timestamp",
            Rejection::RecordTooLarge { .. } | Rejection::FieldTooLong { .. } => "too_large",
        }
    }
}

/// Upper bounds on what one record may carry. A producer's bug (a 5 MB page
/// name, a body pasted into a uuid) must reach neither memory for long nor the
/// table: such a record is rejected with the bound it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// A whole record: a JSON line or a Kafka message value.
    pub max_record_bytes: usize,
    /// `uuid`.
    pub max_uuid_bytes: usize,
    /// Each other string: `event_id`, `page_name`, `event_details.event_name`
    /// and `event_type`.
    pub max_text_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self { max_record_bytes: 1 << 20, max_uuid_bytes: 256, max_text_bytes: 8 << 10 }
    }
}

impl EventLimits {
    /// Parses one record (a JSON line or a Kafka message value) within these limits.
    pub fn parse<'a>(&self, record: &'a [u8]) -> Result<Event<'a>, Rejection> {
        self.parse_with(record, &FieldPaths::default(), &mut |_, _| ())
    }

    /// Parses one record within these limits, handing the value of each
    /// field of `paths` it holds, of the declared type, to `found` (with the
    /// field's index). A string field longer than `max_text_bytes` is not
    /// handed on: declared fields are optional, so it arrives as absent.
    pub fn parse_with<'a>(
        &self,
        record: &'a [u8],
        paths: &FieldPaths,
        found: &mut dyn FnMut(usize, Captured<'a>),
    ) -> Result<Event<'a>, Rejection> {
        let text = simdutf8::basic::from_utf8(record).map_err(|_| Rejection::NotUtf8)?;
        self.parse_text_with(text, paths, found)
    }

    /// [`EventLimits::parse_with`] for a record already known to be UTF-8:
    /// the parser checks no string again.
    pub fn parse_text_with<'a>(
        &self,
        record: &'a str,
        paths: &FieldPaths,
        found: &mut dyn FnMut(usize, Captured<'a>),
    ) -> Result<Event<'a>, Rejection> {
        if record.len() > self.max_record_bytes {
            return Err(Rejection::RecordTooLarge {
                bytes: record.len(),
                limit: self.max_record_bytes,
            });
        }
        let max_text = self.max_text_bytes;
        let mut within = |index, value: Captured<'a>| match &value {
            Captured::Str(s) if s.len() > max_text => {}
            _ => found(index, value),
        };
        let event = parse_fields(record, paths, &mut within)?;
        let check = |field, text: Option<&Cow<'_, str>>, limit, flag| match text {
            Some(t) if t.len() > limit => {
                Err(Rejection::FieldTooLong { field, bytes: t.len(), limit, flag })
            }
            _ => Ok(()),
        };
        check("uuid", Some(&event.uuid), self.max_uuid_bytes, "--max-uuid-bytes")?;
        let text = self.max_text_bytes;
        check("event_id", event.event_id.as_ref(), text, "--max-text-bytes")?;
        check("page_name", event.page_name.as_ref(), text, "--max-text-bytes")?;
        check("event_details.event_name", event.event_name.as_ref(), text, "--max-text-bytes")?;
        check("event_details.event_type", event.event_type.as_ref(), text, "--max-text-bytes")?;
        Ok(event)
    }
}

/// Parses one record (a JSON line or a Kafka message value), with no bound on
/// its size: the job parses within [`EventLimits`].
pub fn parse(record: &[u8]) -> Result<Event<'_>, Rejection> {
    let text = simdutf8::basic::from_utf8(record).map_err(|_| Rejection::NotUtf8)?;
    parse_fields(text, &FieldPaths::default(), &mut |_, _| ())
}

fn parse_fields<'a>(
    record: &'a str,
    paths: &FieldPaths,
    found: &mut dyn FnMut(usize, Captured<'a>),
) -> Result<Event<'a>, Rejection> {
    // serde would also read a struct from a JSON array; events are objects only.
    if record.trim_ascii_start().as_bytes().first() != Some(&b'{') {
        return Err(Rejection::InvalidJson("not a JSON object".into()));
    }
    let wire = wire::read(record, paths.root(), found)
        .map_err(|e| Rejection::InvalidJson(e.to_string()))?;
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
    // An empty page name names no page (docs/semantics.md): it is left out
    // of the pages a session visited, and the rules see none.
    let page_name = optional_text("page_name", wire.page_name)?.filter(|page| !page.is_empty());
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
    fn an_empty_page_name_is_no_page() {
        let e = parse(br#"{"uuid":"u","event_timestamp":1,"page_name":""}"#).unwrap();
        assert_eq!(e.page_name, None);
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

    #[test]
    fn records_and_fields_over_their_limits_are_rejected_with_the_limit() {
        let limits = EventLimits { max_record_bytes: 200, max_uuid_bytes: 8, max_text_bytes: 16 };
        let line = |uuid: &str, page: &str| {
            format!(r#"{{"uuid":"{uuid}","event_timestamp":1,"page_name":"{page}"}}"#)
        };
        let reject = |line: &str| limits.parse(line.as_bytes()).unwrap_err().to_string();
        assert!(limits.parse(line("12345678", "0123456789abcdef").as_bytes()).is_ok());
        assert_eq!(
            reject(&line("123456789", "home")),
            "uuid of 9 bytes is over the limit of 8 (--max-uuid-bytes)"
        );
        assert_eq!(
            reject(&line("u", "0123456789abcdefg")),
            "page_name of 17 bytes is over the limit of 16 (--max-text-bytes)"
        );
        // Escapes count as what they decode to.
        assert!(limits
            .parse(line("u", r"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9").as_bytes())
            .is_ok());
        let long = format!(r#"{{"uuid":"u","event_timestamp":1,"x":"{}"}}"#, "a".repeat(200));
        assert_eq!(
            reject(&long),
            format!("record of {} bytes is over the limit of 200 (--max-record-bytes)", long.len())
        );
        let id = r#"{"uuid":"u","event_timestamp":1,"event_id":"0123456789abcdefg"}"#;
        assert!(reject(id).starts_with("event_id of 17 bytes"));
        let name = r#"{"uuid":"u","event_timestamp":1,"event_details":{"event_type":"0123456789abcdefg"}}"#;
        assert!(reject(name).starts_with("event_details.event_type of 17 bytes"));
    }
}
