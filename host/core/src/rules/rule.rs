//! The rules of the contract every answer of a plugin must keep, by name,
//! and how a broken one is reported: what the answer checks (`check`) and
//! the declarations' checks (`declare`) both speak of.

use std::fmt;

use super::RulesError;

/// Most bytes of plugin-private `data` an open session may carry. The SDKs
/// keep a session's attribute values there too: room for the plugin's own
/// 16 KiB and a few attribute values of the largest text an event may carry
/// (`--max-text-bytes`, 8 KiB).
pub const MAX_STATE_DATA_BYTES: usize = 64 << 10;

/// Longest custom end reason, in bytes: it is a column value, not a message.
pub const MAX_END_REASON_BYTES: usize = 64;

/// Longest plugin name, and longest plugin version, in bytes: both go into the
/// rule version written with every session.
pub const MAX_PLUGIN_NAME_BYTES: usize = 64;

/// A rule of the contract that every answer of a plugin must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// One outcome per user of the batch, in order.
    OutcomeCount,
    /// A closed session names a user of the batch.
    ForeignUser,
    /// A session (closed or open) holds at least one event.
    EmptySession,
    /// A session starts no later than it ends.
    EndBeforeStart,
    /// A session lies within the times of its user's events (the stored
    /// session's included: a session may start where the stored one did).
    OutsideEvents,
    /// A user's sessions come in time order and do not overlap: each starts
    /// at or after the end of the one before, the open one last.
    OverlappingSessions,
    /// Every event of a user is in exactly one of its sessions: the events in
    /// its closed sessions and its open one are those of its stored session
    /// plus those of the batch.
    EventsConserved,
    /// A wake-up time is after the batch's watermark.
    WakeAfterWatermark,
    /// At the end of input no session stays open.
    OpenAtEndOfInput,
    /// An open session's `data` is at most [`MAX_STATE_DATA_BYTES`].
    DataSize,
    /// A session's pages are pages its user's events (or stored session) visited.
    ForeignPage,
    /// A session lists each page once.
    RepeatedPage,
    /// A custom end reason is one line of at most [`MAX_END_REASON_BYTES`].
    EndReasonName,
    /// The plugin's name is at most [`MAX_PLUGIN_NAME_BYTES`] of `[A-Za-z0-9._-]`.
    PluginName,
    /// The plugin's version is at most [`MAX_PLUGIN_NAME_BYTES`] of `[A-Za-z0-9._+-]`.
    PluginVersion,
    /// A closed session has one attribute value per declared attribute.
    AttributeCount,
    /// An attribute value has its declared type and fits
    /// [`MAX_ATTRIBUTE_VALUE_BYTES`](super::declare::MAX_ATTRIBUTE_VALUE_BYTES).
    AttributeType,
}

impl Rule {
    /// The rule's name, as error messages cite it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::OutcomeCount => "outcome-count",
            Rule::ForeignUser => "foreign-user",
            Rule::EmptySession => "empty-session",
            Rule::EndBeforeStart => "end-before-start",
            Rule::OutsideEvents => "outside-events",
            Rule::OverlappingSessions => "overlapping-sessions",
            Rule::EventsConserved => "events-conserved",
            Rule::WakeAfterWatermark => "wake-after-watermark",
            Rule::OpenAtEndOfInput => "open-at-end-of-input",
            Rule::DataSize => "data-size",
            Rule::ForeignPage => "foreign-page",
            Rule::RepeatedPage => "repeated-page",
            Rule::EndReasonName => "end-reason",
            Rule::PluginName => "plugin-name",
            Rule::PluginVersion => "plugin-version",
            Rule::AttributeCount => "attribute-count",
            Rule::AttributeType => "attribute-type",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fault for an answer that breaks `rule`, for `user` (an index into the batch).
pub(super) fn broken(rule: Rule, user: Option<u32>, detail: fmt::Arguments<'_>) -> RulesError {
    RulesError::Contract(match user {
        Some(user) => format!("rule {rule}, user {user}: {detail}"),
        None => format!("rule {rule}: {detail}"),
    })
}

/// The start of `text`, escaped, for a message: a plugin's strings can be long.
pub(super) fn quote(text: &str) -> String {
    const SHOWN: usize = 32;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
        None => format!("{text:?}"),
    }
}
