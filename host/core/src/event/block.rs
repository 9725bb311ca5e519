//! Blocks of parsed records that cross from the parsing thread (or the Kafka
//! poll) to the engine without an allocation per event.

use std::borrow::Cow;
use std::sync::Arc;

use super::split::{user_hash, UserSplit};
use super::{Captured, Event, EventLimits, FieldPaths, Rejection};

/// A run of parsed records with their strings copied into one buffer: parsing
/// happens on another thread than the engine, and a block crosses over without an
/// allocation per event.
#[derive(Debug, Default)]
pub struct EventBlock {
    text: String,
    items: Vec<BlockItem>,
    limits: EventLimits,
    /// The declared fields each event's values are found for.
    paths: Arc<FieldPaths>,
    /// Every event's declared field values, `paths.len()` per event.
    values: Vec<Option<StoredValue>>,
    /// Whether each event's user hash is taken as it is pushed (a run split
    /// over engines); otherwise a split reader takes it when it reads.
    hash_users: bool,
}

/// A declared field's value as a block keeps it.
#[derive(Debug, Clone, Copy)]
enum StoredValue {
    Str(Span),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

/// The declared field values of one event of a block.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    paths: &'a FieldPaths,
    values: &'a [Option<StoredValue>],
    text: &'a str,
}

impl<'a> Fields<'a> {
    /// The fields the values are for.
    pub fn paths(&self) -> &'a FieldPaths {
        self.paths
    }

    /// Field `index`'s value, if the event holds it with the declared type.
    pub fn get(&self, index: usize) -> Option<Captured<'a>> {
        Some(match (*self.values.get(index)?)? {
            StoredValue::Str(span) => Captured::Str(Cow::Borrowed(span.of(self.text))),
            StoredValue::Integer(n) => Captured::Integer(n),
            StoredValue::Float(x) => Captured::Float(x),
            StoredValue::Boolean(b) => Captured::Boolean(b),
        })
    }
}

/// A string stored in a block's buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(self, text: &str) -> &str {
        let start = self.start as usize;
        text.get(start..start + self.len as usize).unwrap_or_default()
    }
}

#[derive(Debug)]
enum BlockItem {
    Event {
        partition: i32,
        position: i64,
        raw: Span,
        /// Where the event's field values start in [`EventBlock::values`].
        values: u32,
        /// The hash of the uuid a split goes by, if the block takes it on
        /// push ([`EventBlock::hashing_users`]).
        user: u64,
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
    /// A valid event read at (partition, position), with its raw text and
    /// its declared fields.
    Event(i32, i64, &'a str, Event<'a>, Fields<'a>),
    /// A record refused at (partition, position): its raw text and why.
    Rejected(i32, i64, &'a str, &'a Rejection),
    /// An event of a user another engine takes (a split run): its
    /// partition and time, which every engine's clock follows.
    Elsewhere(i32, i64),
}

impl EventBlock {
    /// An empty block with room for `records` records, parsed within `limits`.
    pub fn new(records: usize, limits: EventLimits) -> Self {
        Self::with_capacity(records, records * 64, limits)
    }

    /// [`EventBlock::new`] with room for `text_bytes` bytes of the records'
    /// text: a block that has to grow copies what it holds each time, into
    /// fresh pages.
    pub fn with_capacity(records: usize, text_bytes: usize, limits: EventLimits) -> Self {
        Self {
            text: String::with_capacity(text_bytes),
            items: Vec::with_capacity(records),
            limits,
            paths: Arc::default(),
            values: Vec::new(),
            hash_users: false,
        }
    }

    /// Takes each event's user hash on the pushing thread (the parser's), so
    /// that the engines of a split run do not each hash every uuid.
    pub fn hashing_users(mut self) -> Self {
        self.hash_users = true;
        self
    }

    /// Finds the values of `paths` in each event from now on.
    pub fn with_fields(mut self, paths: Arc<FieldPaths>) -> Self {
        self.paths = paths;
        self
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
        if record.len() > self.limits.max_record_bytes {
            return self.push_oversized(partition, position, record, record.len());
        }
        // The record goes into the buffer once; fields that parsed without
        // escapes point into it, only unescaped copies are added. That needs
        // the buffer's copy to be the record byte for byte: a record that is
        // not UTF-8 (serde_json does not check the values it skips) is refused.
        // Validated first, with SIMD (it is a tenth of the parse otherwise);
        // only a refused record is converted.
        let Ok(record_text) = simdutf8::basic::from_utf8(record) else {
            let raw = self.store(&String::from_utf8_lossy(record));
            let reason = Rejection::NotUtf8;
            self.items.push(BlockItem::Rejected { partition, position, raw, reason });
            return;
        };
        let raw = self.store(record_text);
        let base = record.as_ptr() as usize;
        let inside = |b: &str| {
            let at = b.as_ptr() as usize;
            at >= base && at + b.len() <= base + record.len()
        };
        let span_of = |text: &mut String, s: &Cow<'_, str>| match s {
            Cow::Borrowed(b) if inside(b) => {
                Span { start: raw.start + (b.as_ptr() as usize - base) as u32, len: b.len() as u32 }
            }
            _ => store(text, s),
        };
        let values = self.values.len();
        self.values.resize(values + self.paths.len(), None);
        let parsed = {
            let (text, slots) = (&mut self.text, &mut self.values[values..]);
            let mut found = |index: usize, value: Captured<'_>| {
                let Some(slot) = slots.get_mut(index) else { return };
                *slot = Some(match value {
                    Captured::Str(s) => StoredValue::Str(span_of(text, &s)),
                    Captured::Integer(n) => StoredValue::Integer(n),
                    Captured::Float(x) => StoredValue::Float(x),
                    Captured::Boolean(b) => StoredValue::Boolean(b),
                });
            };
            self.limits.parse_text_with(record_text, &self.paths, &mut found)
        };
        let item = match parsed {
            Ok(event) => {
                let mut field = |s: &Cow<'_, str>| span_of(&mut self.text, s);
                BlockItem::Event {
                    partition,
                    position,
                    raw,
                    values: values as u32,
                    user: if self.hash_users { user_hash(&event.uuid) } else { 0 },
                    uuid: field(&event.uuid),
                    event_id: event.event_id.as_ref().map(&mut field),
                    timestamp_ms: event.timestamp_ms,
                    page_name: event.page_name.as_ref().map(&mut field),
                    event_name: event.event_name.as_ref().map(&mut field),
                    event_type: event.event_type.as_ref().map(&mut field),
                }
            }
            Err(reason) => {
                // Its field values, and any unescaped copies they added.
                self.values.truncate(values);
                self.text.truncate((raw.start + raw.len) as usize);
                BlockItem::Rejected { partition, position, raw, reason }
            }
        };
        self.items.push(item);
    }

    /// Keeps a record of `bytes` bytes, over the limit, as rejected; of its
    /// text only `prefix` (up to the limit) is kept for the dead letters.
    pub fn push_oversized(&mut self, partition: i32, position: i64, prefix: &[u8], bytes: usize) {
        let limit = self.limits.max_record_bytes;
        let kept = &prefix[..prefix.len().min(limit)];
        let raw = self.store(&String::from_utf8_lossy(kept));
        let reason = Rejection::RecordTooLarge { bytes, limit };
        self.items.push(BlockItem::Rejected { partition, position, raw, reason });
    }

    fn store(&mut self, s: &str) -> Span {
        store(&mut self.text, s)
    }

    fn get(&self, span: Span) -> &str {
        span.of(&self.text)
    }

    /// The records in input order.
    pub fn records(&self) -> impl Iterator<Item = BlockRecord<'_>> + '_ {
        self.records_split(UserSplit::WHOLE)
    }

    /// The records in input order as one engine of a split run reads them:
    /// another engine's users' events only as [`BlockRecord::Elsewhere`],
    /// and records that are no event only if `split` reports them.
    pub fn records_split(&self, split: UserSplit) -> impl Iterator<Item = BlockRecord<'_>> + '_ {
        let unowned = split.reports_unowned();
        let owned = move |user: u64, uuid: Span| {
            split.is_whole()
                || split.owns_hash(if self.hash_users { user } else { user_hash(self.get(uuid)) })
        };
        self.items.iter().filter_map(move |item| match item {
            BlockItem::Event { partition, timestamp_ms, user, uuid, .. }
                if !owned(*user, *uuid) =>
            {
                Some(BlockRecord::Elsewhere(*partition, *timestamp_ms))
            }
            BlockItem::Rejected { .. } if !unowned => None,
            item => Some(self.record(item)),
        })
    }

    fn record<'s>(&'s self, item: &'s BlockItem) -> BlockRecord<'s> {
        match item {
            BlockItem::Event {
                partition,
                position,
                raw,
                values,
                user: _,
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
                Fields {
                    paths: &self.paths,
                    values: {
                        let at = *values as usize;
                        self.values.get(at..at + self.paths.len()).unwrap_or_default()
                    },
                    text: &self.text,
                },
            ),
            BlockItem::Rejected { partition, position, raw, reason } => {
                BlockRecord::Rejected(*partition, *position, self.get(*raw), reason)
            }
        }
    }
}

fn store(text: &mut String, s: &str) -> Span {
    let start = text.len() as u32;
    text.push_str(s);
    Span { start, len: s.len() as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_gives_each_event_to_one_engine_and_its_time_to_every_other() {
        for block in
            [EventBlock::new(64, EventLimits::default()), EventBlock::default().hashing_users()]
        {
            split_of(block);
        }
    }

    fn split_of(mut block: EventBlock) {
        for n in 0..40 {
            let line = format!(r#"{{"uuid":"user-{n}","event_timestamp":{n}}}"#);
            block.push(0, n, line.as_bytes());
        }
        block.push(0, 40, b"not json");
        let splits = [UserSplit::new(0, 2), UserSplit::new(1, 2)];
        let read: Vec<Vec<BlockRecord<'_>>> =
            splits.iter().map(|&split| block.records_split(split).collect()).collect();
        for (n, (first, second)) in read[0].iter().zip(&read[1]).take(40).enumerate() {
            let n = n as i64;
            match (first, second) {
                (BlockRecord::Event(_, p, ..), BlockRecord::Elsewhere(0, t))
                | (BlockRecord::Elsewhere(0, t), BlockRecord::Event(_, p, ..)) => {
                    assert_eq!((*p, *t), (n, n));
                }
                other => panic!("event {n} is not one engine's: {other:?}"),
            }
        }
        assert!(matches!(read[0][40], BlockRecord::Rejected(0, 40, ..)));
        assert_eq!(read[1].len(), 40, "only the first engine reports a record that is no event");
    }

    #[test]
    fn a_record_with_invalid_utf8_anywhere_is_refused_not_misread() {
        // serde_json skips the value of an unread key without checking its
        // UTF-8; the block keeps a lossy copy of the record, whose offsets
        // differ from the record's, so such a record must not become an event.
        let mut block = EventBlock::new(2, EventLimits::default());
        block.push(0, 1, b"{\"x\":\"\xff\xff\xff\",\"uuid\":\"alice\",\"event_timestamp\":1}");
        block.push(0, 2, br#"{"uuid":"bob","event_timestamp":2}"#);
        let records: Vec<String> = block
            .records()
            .map(|r| match r {
                BlockRecord::Event(_, _, _, event, _) => format!("event {}", event.uuid),
                BlockRecord::Rejected(_, _, _, reason) => format!("rejected: {reason}"),
                BlockRecord::Elsewhere(..) => "another engine's".into(),
            })
            .collect();
        assert_eq!(records, ["rejected: not UTF-8 text", "event bob"]);
    }
}
