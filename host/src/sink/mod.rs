//! The sink stage: finished sessions and dead letters out, committed together
//! with the properties that tie them to a checkpoint. [`Sink`] is what the
//! jobs and the checkpoint protocol need of it; [`iceberg::IcebergSink`] is the
//! one that writes Apache Iceberg tables.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_schema::ArrowError;

pub mod iceberg;
mod memory;
mod no_table;
mod retry;
pub mod topic;

pub use memory::{LoggedCommit, MemoryGroupStore, SinkCommit, StoreFaults};
pub use no_table::NoTable;
pub use retry::{SinkRetryPolicy, DEFAULT_SINK_RETRY_BUDGET};
pub use sessionize_core::rows::{RejectedEvent, SessionRow};

use crate::rules::contract::SessionAttribute;

/// Whether the sessions table can take the attributes some rules declare, or
/// the sentence that says why not (a column of another type). A deploy asks
/// before the swap, on the job's thread, while the sink commits on its own.
pub type ColumnCheck = Arc<dyn Fn(&[SessionAttribute]) -> Result<(), String> + Send + Sync>;

pub(crate) use retry::SinkRetries;

/// `source` of the dead letter that replaces a session the sink cannot store.
pub const UNWRITABLE_SESSION_SOURCE: &str = "session";

/// `partition` of such a dead letter: it is no input record.
pub const UNWRITABLE_SESSION_PARTITION: i32 = -1;

/// `position` of such a dead letter.
pub const UNWRITABLE_SESSION_POSITION: i64 = -1;

/// Where sessions and dead letters go.
///
/// One [`Sink::commit`] is atomic per table, and the sessions commit is the
/// commit point: its properties are what [`Sink::last_commit_properties`]
/// reads back after a restart. Dead letters are committed first.
///
/// Several writers may share the tables (jobs, table maintenance), so a
/// writer finds its own last commit by a property only it writes, never by
/// taking the table's latest.
// The futures are only ever run with `block_on`, so no `Send` bound is needed.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// Appends `sessions` and `rejected`, with `properties` in both commits'
    /// summaries. A commit with no rows still records its properties.
    async fn commit(
        &mut self,
        sessions: &[SessionRow],
        rejected: &[RejectedEvent],
        properties: HashMap<String, String>,
    ) -> Result<CommitStats, SinkError>;

    /// The properties of the latest sessions commit whose properties map
    /// `key` to `value`, if any.
    async fn last_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError>;

    /// The same for the dead-letter table.
    async fn last_rejected_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError>;

    /// Adds the columns `attributes` need that the sessions table lacks, as
    /// optional columns; fails, naming the column, where one has another
    /// type. The checkpoint calls it before each commit with the attributes
    /// of the rules in force at the cut. By default there is nothing to add.
    async fn add_columns(&mut self, attributes: &[SessionAttribute]) -> Result<(), SinkError> {
        let _ = attributes;
        Ok(())
    }

    /// The check a deploy runs against the table as this sink last saw it.
    /// By default every attribute fits.
    fn column_check(&self) -> ColumnCheck {
        Arc::new(|_| Ok(()))
    }

    /// Whether [`Sink::commit`] can store `row`. The checkpoint asks before it
    /// stages a row: a row that fails its commit would fail every retry and
    /// every restart. By default every row can be stored.
    fn check_session(&self, row: &SessionRow) -> Result<(), UnwritableRow> {
        let _ = row;
        Ok(())
    }
}

/// Whether commit `properties` map `key` to `value`: how a writer knows its
/// own commits among every writer's.
pub(crate) fn carries(properties: &HashMap<String, String>, key: &str, value: &str) -> bool {
    properties.get(key).map(String::as_str) == Some(value)
}

/// Why a sink cannot store a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwritableRow {
    /// A time outside the range the table's readers can represent.
    #[error("{which} time {ms} ms is outside the years {first_year} to {last_year}")]
    TimeOutOfRange {
        /// `start` or `end`.
        which: &'static str,
        /// The time, epoch milliseconds.
        ms: i64,
        /// The first year the table takes.
        first_year: i32,
        /// The last year the table takes.
        last_year: i32,
    },
    /// An event count the column's type cannot hold.
    #[error("event_count {count} exceeds the column's maximum {max}")]
    CountOutOfRange {
        /// The count.
        count: u32,
        /// The largest count the column holds.
        max: u32,
    },
    /// More text than one Arrow string array can hold.
    #[error("the session holds {bytes} bytes of text, more than the {max} one batch can hold")]
    TooMuchText {
        /// The bytes of text (user id, session id, pages, reasons).
        bytes: usize,
        /// The most one batch holds.
        max: usize,
    },
}

/// Moves the sessions `sink` cannot store to `rejected`, each as a dead letter
/// holding the session as JSON and the reason; returns how many moved.
pub(crate) fn divert_unwritable(
    sink: &impl Sink,
    sessions: &mut Vec<SessionRow>,
    rejected: &mut Vec<RejectedEvent>,
) -> usize {
    let before = rejected.len();
    sessions.retain(|row| match sink.check_session(row) {
        Ok(()) => true,
        Err(reason) => {
            rejected.push(unwritable_dead_letter(row, &reason));
            false
        }
    });
    rejected.len() - before
}

fn unwritable_dead_letter(row: &SessionRow, reason: &UnwritableRow) -> RejectedEvent {
    RejectedEvent {
        // A session of plain strings and numbers always serializes; the debug
        // form is only a fallback that keeps the session in view.
        raw: session_json(row).unwrap_or_else(|_| format!("{row:?}")),
        reason: format!(
            "session {} of user {} cannot be stored: {reason}",
            row.session_id, row.uuid
        ),
        source: UNWRITABLE_SESSION_SOURCE.to_owned(),
        partition: UNWRITABLE_SESSION_PARTITION,
        position: UNWRITABLE_SESSION_POSITION,
    }
}

/// `row` as one JSON object, its attributes (contract 0.2) under
/// `attributes` as plain JSON values.
pub(crate) fn session_json(row: &SessionRow) -> serde_json::Result<String> {
    let mut json = serde_json::to_value(row)?;
    if !row.attributes.is_empty() {
        let attributes: serde_json::Map<String, serde_json::Value> = row
            .attributes
            .iter()
            .map(|(name, value)| (name.to_string(), attribute_json(value)))
            .collect();
        json["attributes"] = serde_json::Value::Object(attributes);
    }
    serde_json::to_string(&json)
}

/// An attribute's value as a plain JSON value.
pub(crate) fn attribute_json(value: &crate::rules::contract::AttributeValue) -> serde_json::Value {
    use crate::rules::contract::AttributeValue;
    match value {
        AttributeValue::String(s) => serde_json::json!(s),
        AttributeValue::Long(n) => serde_json::json!(n),
        AttributeValue::Double(x) => serde_json::json!(x),
        AttributeValue::Boolean(b) => serde_json::json!(b),
        AttributeValue::StringList(l) => serde_json::json!(l),
    }
}

/// What one commit wrote, so the pipeline can watch for small-file build-up (iceberg-rust
/// 0.10 cannot compact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Data files added to the sessions table.
    pub session_files: usize,
    /// Data files added to the rejected-events table.
    pub rejected_files: usize,
}

/// Everything that can go wrong while opening or writing the Iceberg tables. Each variant
/// says which step failed, because the underlying errors (SQLite, file system, Arrow) rarely
/// say it themselves.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The warehouse directory could not be created or resolved.
    #[error("cannot prepare warehouse directory {path}: {source}")]
    Warehouse {
        /// The configured warehouse path.
        path: PathBuf,
        /// The file system error.
        #[source]
        source: std::io::Error,
    },
    /// Iceberg locations are strings, so a warehouse path that is not UTF-8 cannot be used.
    #[error("warehouse path {0} is not valid UTF-8")]
    NonUtf8Path(PathBuf),
    /// A configuration value is unusable (for example an empty table name).
    #[error("invalid Iceberg sink configuration: {0}")]
    Config(String),
    /// A request the store refuses, and will refuse however often it is
    /// asked (a component over the reader's limit, a record that does not
    /// decode).
    #[error("{0}")]
    Refused(String),
    /// A commit kept losing the catalog's compare-and-swap to other writers.
    #[error("{what}: lost {races} races in a row to other writers")]
    LostRaces {
        /// What was being committed.
        what: String,
        /// Races lost.
        races: u32,
    },
    /// An Iceberg operation (catalog, write, commit) failed.
    #[error("Iceberg error while {context}: {source}")]
    Iceberg {
        /// What the sink was doing.
        context: String,
        /// The error reported by iceberg-rust (boxed: it carries a backtrace and context,
        /// which would make every `Result` of the sink several hundred bytes wide).
        #[source]
        source: Box<::iceberg::Error>,
    },
    /// The object store or the catalog's database failed in a way that has
    /// a known cure.
    #[error("{context}: {hint} ({source})")]
    Backend {
        /// What the sink was doing.
        context: String,
        /// What to do about it.
        hint: &'static str,
        /// The error reported by iceberg-rust.
        #[source]
        source: Box<::iceberg::Error>,
    },
    /// A record could not be delivered to a Kafka topic (the broker is down,
    /// or refused it); delivery is retried while the error may clear.
    #[error("delivering to topic {topic}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        message: String,
    },
    /// A statement of the sink's own on the catalog's database failed.
    #[error("{context}: {source}")]
    CatalogDatabase {
        /// What the sink was doing.
        context: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// Building an Arrow batch failed, usually because the table's schema changed type.
    #[error("cannot build the Arrow batch for table {table}: {source}")]
    Arrow {
        /// The table the batch was for.
        table: String,
        /// The Arrow error.
        #[source]
        source: ArrowError,
    },
    /// An existing table lacks a column the sink writes, or has it with another type.
    #[error("table {table} does not match what the sink writes: {detail}")]
    Schema {
        /// The table.
        table: String,
        /// What does not match.
        detail: String,
    },
    /// Table maintenance stopped without committing (its inputs changed, it
    /// kept losing races, or the storage could not be listed).
    #[error("table maintenance: {0}")]
    Maintenance(String),
    /// A commit reported success, but reading the table back does not find it.
    #[error("the commit of checkpoint {checkpoint} reported success but is not in the table")]
    CommitNotVisible {
        /// The checkpoint committed.
        checkpoint: u64,
    },
    /// A row holds a value the table cannot store.
    #[error("session {session_id} of user {uuid} cannot be stored: {reason}")]
    InvalidRow {
        /// The session's user.
        uuid: String,
        /// The session.
        session_id: String,
        /// What is out of range.
        reason: UnwritableRow,
    },
}

impl SinkError {
    /// Whether a commit lost the catalog's compare-and-swap to another writer.
    pub fn is_lost_race(&self) -> bool {
        match self {
            SinkError::LostRaces { .. } => true,
            SinkError::Iceberg { source, .. } => {
                source.kind() == ::iceberg::ErrorKind::CatalogCommitConflicts
            }
            _ => false,
        }
    }

    /// Whether the failure may clear by itself, so the same call is worth
    /// retrying: a locked catalog, a full disk, a lost commit race.
    /// iceberg-rust reports catalog and storage failures as `Unexpected`, with
    /// no finer kind, so all of them count; the retry budget bounds the cost
    /// of one that does not clear. Schema, configuration and row errors never
    /// heal on their own.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Iceberg { source, .. } | SinkError::Backend { source, .. } => {
                source.retryable()
                    || matches!(
                        source.kind(),
                        ::iceberg::ErrorKind::Unexpected
                            | ::iceberg::ErrorKind::CatalogCommitConflicts
                    )
            }
            SinkError::CommitNotVisible { .. }
            | SinkError::Topic { .. }
            | SinkError::CatalogDatabase { .. }
            | SinkError::LostRaces { .. } => true,
            SinkError::Warehouse { .. }
            | SinkError::NonUtf8Path(_)
            | SinkError::Config(_)
            | SinkError::Refused(_)
            | SinkError::Maintenance(_)
            | SinkError::Arrow { .. }
            | SinkError::Schema { .. }
            | SinkError::InvalidRow { .. } => false,
        }
    }
}
