//! What the engine hands a sink: finished sessions, and input records that did
//! not become events, with their reasons.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rules::contract::AttributeValue;

/// One finished session, as the rules closed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// The user.
    pub uuid: String,
    /// Deterministic id: the same input always yields the same id.
    pub session_id: String,
    /// Time of the first event, epoch ms.
    pub start_ms: i64,
    /// Time of the last event, epoch ms.
    pub end_ms: i64,
    /// Accepted, de-duplicated events in the session.
    pub event_count: u32,
    /// Distinct page names in order of first visit.
    pub pages: Vec<Arc<str>>,
    /// `inactivity`, `max_duration`, `end_of_input`, or the plugin's own reason.
    pub end_reason: String,
    /// Name, version and content hash of the plugin that cut the session.
    pub rule_version: Arc<str>,
    /// The values of the attributes the rules declared (contract 0.2), by
    /// column name; unset ones are left out and written as null. Stored by
    /// the state store after the 0.1 layout, not inside it.
    #[serde(skip)]
    pub attributes: Vec<(Arc<str>, AttributeValue)>,
}

/// An input record that did not become an event, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEvent {
    /// The record as read (lossily decoded if it was not UTF-8).
    pub raw: String,
    /// Why it was refused, for example `late by 700000 ms` or `missing uuid`.
    pub reason: String,
    /// Where it came from: a file path or `kafka:<topic>`.
    pub source: String,
    /// Input partition (0 for a file).
    pub partition: i32,
    /// Line number (files, 1-based) or offset (Kafka).
    pub position: i64,
}
