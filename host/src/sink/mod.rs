//! The sink stage: finished sessions and dead letters out, committed together
//! with the properties that tie them to a checkpoint. [`Sink`] is what the
//! jobs and the checkpoint protocol need of it; [`iceberg::IcebergSink`] is the
//! one that writes Apache Iceberg tables.

use std::collections::HashMap;
use std::path::PathBuf;

use arrow_schema::ArrowError;

pub mod iceberg;

pub use sessionize_core::rows::{RejectedEvent, SessionRow};

/// Where sessions and dead letters go.
///
/// One [`Sink::commit`] is atomic per table, and the sessions commit is the
/// commit point: its properties are what [`Sink::last_commit_properties`]
/// reads back after a restart. Dead letters are committed first.
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

    /// The properties of the latest sessions commit by any writer, if any.
    async fn last_commit_properties(
        &mut self,
    ) -> Result<Option<HashMap<String, String>>, SinkError>;

    /// The properties of the latest dead-letter commit by any writer, if any.
    async fn last_rejected_commit_properties(
        &mut self,
    ) -> Result<Option<HashMap<String, String>>, SinkError>;
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
    /// A row holds a value the table cannot store.
    #[error("session {session_id} of user {uuid} cannot be stored: {detail}")]
    InvalidRow {
        /// The session's user.
        uuid: String,
        /// The session.
        session_id: String,
        /// What is out of range.
        detail: String,
    },
}
