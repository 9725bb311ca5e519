//! Blocks of parsed records that cross from the parsing thread (or the Kafka
//! poll) to the engine without an allocation per event.

use std::borrow::Cow;

use super::{Event, EventLimits, Rejection};

/// A run of parsed records with their strings copied into one buffer: parsing
/// happens on another thread than the engine, and a block crosses over without an
/// allocation per event.
#[derive(Debug, Default)]
pub struct EventBlock {
    text: String,
    items: Vec<BlockItem>,
    limits: EventLimits,
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
    /// An empty block with room for `records` records, parsed within `limits`.
    pub fn new(records: usize, limits: EventLimits) -> Self {
        Self {
            text: String::with_capacity(records * 64),
            items: Vec::with_capacity(records),
            limits,
        }
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
        // escapes point into it, only unescaped copies are added.
        let raw = self.store(&String::from_utf8_lossy(record));
        let item = match self.limits.parse(record) {
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
