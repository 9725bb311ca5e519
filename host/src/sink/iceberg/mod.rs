//! Iceberg sink: appends finished sessions and rejected events to two Apache Iceberg
//! tables, in a local warehouse with a SQLite catalog by default, or on S3 with a
//! shared PostgreSQL catalog.
//!
//! The layout is chosen so that other engines can read the tables without any setup:
//! the catalog is `<warehouse>/catalog.db` (or `--catalog-uri`) under the catalog name
//! [`CATALOG_NAME`], the tables live under `<warehouse>/<database>/<table>`, exactly
//! where pyiceberg's `SqlCatalog("sessionize", uri=..., warehouse=...)` looks for them.
//!
//! The sessions table is partitioned by `identity(session_date)` and
//! `truncate(10, user_hash_bucket)`, where `user_hash_bucket` is Iceberg's own
//! `bucket[100]` of the user id. Partitioning directly by `bucket(100)` would write up to
//! 100 files per day and commit, which floods small commits with tiny files; grouping the
//! buckets by ten caps a commit at ten files per day while a filter on `user_hash_bucket`
//! still prunes files through the truncate transform.
//!
//! One [`IcebergSink::commit`] makes one snapshot per table. The sessions snapshot is the
//! commit point: it carries the caller's properties (checkpoint id, source offsets), which
//! [`IcebergSink::last_commit_properties`] reads back after a restart.
//!
//! The parts follow iceberg-rust's own layering: `catalog` (the SQL catalog,
//! namespace and tables), `schema` (columns, partition spec, checks), `batch`
//! (rows to Arrow), `writer` (Parquet data files) and `commit` (snapshots),
//! with `table_catalog` and `pointer` (every commit through our own
//! compare-and-swap); `group` is a consumer group's store
//! (`crate::group::GroupStore`) in the same tables; `maintain` is compaction
//! and expiry.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use iceberg::spec::{DataFile, SchemaRef};
use iceberg::table::Table;
use iceberg::NamespaceIdent;
use uuid::Uuid;

use super::{ColumnCheck, CommitStats, RejectedEvent, SessionRow, Sink, SinkError, UnwritableRow};
use crate::rules::contract::SessionAttribute;

mod attributes;
mod batch;
mod catalog;
mod commit;
mod group;
pub mod maintain;
mod pinned;
mod pointer;
mod remedy;
mod schema;
mod storage;
mod table_catalog;
mod writer;

pub use batch::{
    user_hash_bucket, user_hash_bucket_of, EARLIEST_SESSION_MS, LATEST_SESSION_MS,
    MAX_BATCH_TEXT_BYTES,
};
pub use catalog::{CatalogUri, CatalogUriError, CATALOG_FILE, CATALOG_NAME};
pub use group::{GROUP_KEY, MEMBERS_KEY, PARTITIONS_FILE_KEY, PARTITIONS_KEY, RULES_KEY};
pub use schema::{BUCKET_GROUP_WIDTH, USER_HASH_BUCKETS};
pub use storage::{S3Options, Warehouse, WarehouseError};

use attributes::{add_attribute_columns, check_declared};
use batch::{check_session, rejected_batch, sessions_batches};
#[cfg(feature = "query")]
pub(crate) use catalog::open_configured_catalog;
use catalog::{ensure_namespace, ensure_table};
use commit::{append, ensure_properties, latest_properties_with, reload};
use remedy::hinted_error;
use schema::{
    check_columns, rejected_creation, rejected_schema, sessions_creation, sessions_schema,
    table_properties,
};
use storage::Storage;
use table_catalog::TableCatalog;
use writer::write_data_files;

/// Default namespace, used when the operator does not choose one.
pub const DEFAULT_DATABASE: &str = "sessions";

/// Default sessions table name, used when the operator does not choose one.
pub const DEFAULT_TABLE: &str = "user_sessions";

/// Default rejected-events table name, used when the operator does not choose one.
pub const DEFAULT_REJECTED_TABLE: &str = "rejected_events";

/// Snapshot summary key the sink adds to every sessions snapshot, so that a commit with no
/// rows and no caller properties still records something (Iceberg refuses an empty append
/// without properties).
pub const PROP_SESSION_ROWS: &str = "sessionize.sink.session-rows";

/// Snapshot summary key recording how many rejected events went with the commit.
pub const PROP_REJECTED_ROWS: &str = "sessionize.sink.rejected-rows";

/// Attaches "what were we doing" to iceberg-rust errors, whose messages describe the
/// failure but not the step.
pub(super) trait IcebergContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SinkError>;
}

impl<T> IcebergContext<T> for iceberg::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SinkError> {
        self.map_err(|source| hinted_error(what(), source))
    }
}

/// Where the sink keeps its tables. A plain struct so the CLI can fill it from flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// Where every table file goes; a local directory is created if missing
    /// and holds the default SQLite catalog.
    pub warehouse: Warehouse,
    /// The catalog; `None` for SQLite at `<warehouse>/catalog.db`, which only
    /// a local warehouse can hold.
    pub catalog: Option<CatalogUri>,
    /// How to reach an `s3://` warehouse.
    pub s3: S3Options,
    /// Iceberg namespace of both tables.
    pub database: String,
    /// Name of the sessions table.
    pub table: String,
    /// Name of the rejected-events table (default [`DEFAULT_REJECTED_TABLE`]).
    pub rejected_table: String,
}

impl SinkConfig {
    /// Configuration with the default namespace and table names, so callers only have to
    /// decide where the warehouse is.
    pub fn new(warehouse: impl Into<Warehouse>) -> Self {
        Self {
            warehouse: warehouse.into(),
            catalog: None,
            s3: S3Options::default(),
            database: DEFAULT_DATABASE.to_string(),
            table: DEFAULT_TABLE.to_string(),
            rejected_table: DEFAULT_REJECTED_TABLE.to_string(),
        }
    }
}

/// Appends sessions and rejected events to their Iceberg tables, one snapshot per table and
/// commit. Holds the catalog connection and the last known table metadata, so a commit does
/// not have to rediscover the tables.
#[derive(Debug)]
pub struct IcebergSink {
    catalog: TableCatalog,
    sessions: Table,
    rejected: Table,
    /// Set after a failed commit: the cached metadata may be stale (another writer may have
    /// evolved the table), so the next commit reloads it first.
    needs_refresh: bool,
    /// The sessions table's schema as last seen, for deploys to check
    /// attributes against from the job's thread.
    schema: Arc<RwLock<SchemaRef>>,
}

impl IcebergSink {
    /// Opens the sink's tables, creating whatever is missing (warehouse directory, SQLite
    /// catalog, namespace, tables), so a first run needs no separate setup step.
    pub async fn open(config: &SinkConfig) -> Result<Self, SinkError> {
        for (what, name) in [
            ("database", &config.database),
            ("table", &config.table),
            ("rejected_table", &config.rejected_table),
        ] {
            if name.trim().is_empty() {
                return Err(SinkError::Config(format!("{what} name is empty")));
            }
        }
        if config.table == config.rejected_table {
            return Err(SinkError::Config(format!(
                "sessions and rejected events would share the table {}",
                config.table
            )));
        }

        let storage = Storage::new(&config.warehouse, &config.s3)?;
        let mut races = 0;
        let (catalog, sessions, rejected) = loop {
            match open_tables(&storage, config).await {
                Ok(opened) => break opened,
                // Jobs starting together on a new catalog race to create its
                // schema and tables; the loser finds them made on a retry.
                Err(error) if races < MAX_CREATION_RACES && is_creation_race(&error) => {
                    races += 1;
                    tracing::debug!(%error, "lost a race to create the catalog or tables");
                    let pause = 20 + rand::random::<u64>() % 200;
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(error) => return Err(error),
            }
        };

        tracing::info!(
            warehouse = %storage.location,
            sessions = %sessions.identifier(),
            rejected = %rejected.identifier(),
            "Iceberg sink opened"
        );
        let schema = Arc::new(RwLock::new(sessions.metadata().current_schema().clone()));
        Ok(Self { catalog, sessions, rejected, needs_refresh: false, schema })
    }

    /// Publishes the sessions table's current schema to [`Sink::column_check`].
    fn publish_schema(&self) {
        if let Ok(mut schema) = self.schema.write() {
            *schema = self.sessions.metadata().current_schema().clone();
        }
    }

    async fn try_commit(
        &mut self,
        sessions: &[SessionRow],
        rejected: &[RejectedEvent],
        mut properties: HashMap<String, String>,
    ) -> Result<CommitStats, SinkError> {
        if self.needs_refresh {
            self.refresh().await?;
        }
        properties.insert(PROP_SESSION_ROWS.to_string(), sessions.len().to_string());
        properties.insert(PROP_REJECTED_ROWS.to_string(), rejected.len().to_string());

        let (session_files, rejected_files) = self.write_output(sessions, rejected).await?;
        let stats = CommitStats {
            session_files: session_files.len(),
            rejected_files: rejected_files.len(),
        };

        if !rejected_files.is_empty() {
            self.rejected =
                append(&self.catalog, &self.rejected, rejected_files, properties.clone()).await?;
        }
        self.sessions = append(&self.catalog, &self.sessions, session_files, properties).await?;
        self.publish_schema();

        tracing::debug!(
            sessions = sessions.len(),
            rejected = rejected.len(),
            session_files = stats.session_files,
            rejected_files = stats.rejected_files,
            "Iceberg commit done"
        );
        Ok(stats)
    }

    /// Writes the data files of `sessions` and `rejected`, adding the
    /// attribute columns the sessions carry first. Every data file is written
    /// before anything is committed, to keep the window in which only one of
    /// the two tables has the commit as short as possible.
    async fn write_output(
        &mut self,
        sessions: &[SessionRow],
        rejected: &[RejectedEvent],
    ) -> Result<(Vec<DataFile>, Vec<DataFile>), SinkError> {
        // A fresh prefix per commit keeps data file names unique: the file name generator
        // numbers files from zero every time.
        let prefix = random_uuid().to_string();

        // Columns for attributes first: the data files are written with the
        // schema that has them.
        if sessions.iter().any(|s| !s.attributes.is_empty()) {
            self.sessions =
                add_attribute_columns(&self.catalog, self.sessions.clone(), &[], sessions).await?;
            self.publish_schema();
        }
        let session_files = if sessions.is_empty() {
            Vec::new()
        } else {
            let batches = sessions_batches(&self.sessions, sessions, MAX_BATCH_TEXT_BYTES)?;
            write_data_files(&self.sessions, batches, &prefix, None).await?
        };
        let rejected_files = if rejected.is_empty() {
            Vec::new()
        } else {
            let batch = rejected_batch(&self.rejected, rejected, wall_clock_ms());
            write_data_files(&self.rejected, [batch], &prefix, None).await?
        };
        Ok((session_files, rejected_files))
    }

    /// The sessions table as last loaded, for callers that want to scan it or inspect its
    /// metadata with iceberg-rust directly (tests, diagnostics).
    pub fn sessions_table(&self) -> &Table {
        &self.sessions
    }

    /// The rejected-events table as last loaded, for the same reasons as
    /// [`Self::sessions_table`].
    pub fn rejected_table(&self) -> &Table {
        &self.rejected
    }

    async fn refresh(&mut self) -> Result<(), SinkError> {
        self.sessions = reload(&self.catalog, &self.sessions).await?;
        self.rejected = reload(&self.catalog, &self.rejected).await?;
        self.needs_refresh = false;
        self.publish_schema();
        Ok(())
    }
}

impl Sink for IcebergSink {
    /// Appends one batch of output. Rejected events are committed first and the sessions
    /// snapshot last, because the sessions snapshot is the commit point that recovery reads:
    /// a crash in between can at worst duplicate rejected events (their snapshot carries the
    /// same `properties`, so duplicates are traceable), never lose sessions or mark
    /// uncommitted input as done. The sessions table is committed even with no rows so the
    /// checkpoint in `properties` is always recorded.
    async fn commit(
        &mut self,
        sessions: &[SessionRow],
        rejected: &[RejectedEvent],
        properties: HashMap<String, String>,
    ) -> Result<CommitStats, SinkError> {
        let result = self.try_commit(sessions, rejected, properties).await;
        self.needs_refresh = result.is_err();
        result
    }

    /// Summary properties of the latest sessions snapshot whose properties map
    /// `key` to `value` (one writer's latest commit), or `None` if it has none.
    /// Recovery uses it to learn which checkpoint its job committed last; it
    /// reloads the table so it sees commits made by any process. Besides the
    /// caller's properties the map holds Iceberg's own summary keys
    /// (`added-records`, `total-data-files`, ...).
    async fn last_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        self.sessions = reload(&self.catalog, &self.sessions).await?;
        self.publish_schema();
        Ok(latest_properties_with(&self.sessions, key, value))
    }

    /// Same as [`Self::last_commit_properties`] for the rejected-events table, so recovery
    /// can tell whether a crash happened between the two snapshots of one commit (rejected
    /// committed, sessions not) and avoid writing those rejected events twice.
    async fn last_rejected_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        self.rejected = reload(&self.catalog, &self.rejected).await?;
        Ok(latest_properties_with(&self.rejected, key, value))
    }

    /// Adds the attribute columns as one schema change (a snapshot-less
    /// commit), reloading the table first if a commit failed.
    async fn add_columns(&mut self, attributes: &[SessionAttribute]) -> Result<(), SinkError> {
        if attributes.is_empty() {
            return Ok(());
        }
        if self.needs_refresh {
            self.refresh().await?;
        }
        let added = add_attribute_columns(&self.catalog, self.sessions.clone(), attributes, &[]);
        match added.await {
            Ok(table) => {
                self.sessions = table;
                self.publish_schema();
                Ok(())
            }
            Err(error) => {
                self.needs_refresh = true;
                Err(error)
            }
        }
    }

    fn column_check(&self) -> ColumnCheck {
        let schema = self.schema.clone();
        Arc::new(move |declared| match schema.read() {
            Ok(schema) => check_declared(&schema, declared),
            Err(_) => Err("the sink's view of the table is unavailable".into()),
        })
    }

    /// Times in the years 1 to 9999 ([`EARLIEST_SESSION_MS`] to
    /// [`LATEST_SESSION_MS`]), a count that fits the `int` column, and at most
    /// [`MAX_BATCH_TEXT_BYTES`] of text.
    fn check_session(&self, row: &SessionRow) -> Result<(), UnwritableRow> {
        check_session(row)
    }
}

/// Retries of [`IcebergSink::open`] after losing a creation race.
const MAX_CREATION_RACES: u32 = 8;

/// Opens the catalog, checks the storage, and creates what is missing.
async fn open_tables(
    storage: &Storage,
    config: &SinkConfig,
) -> Result<(TableCatalog, Table, Table), SinkError> {
    let catalog = TableCatalog::open(storage, config.catalog.as_ref()).await?;
    storage.probe().await?;

    let namespace = NamespaceIdent::new(config.database.clone());
    ensure_namespace(&catalog, &namespace).await?;

    let sessions = ensure_table(&catalog, &namespace, &config.table, sessions_creation).await?;
    check_columns(&sessions, &sessions_schema().context(|| "defining the schema".into())?)?;
    let sessions = ensure_properties(&catalog, sessions, &table_properties()).await?;
    let rejected =
        ensure_table(&catalog, &namespace, &config.rejected_table, rejected_creation).await?;
    check_columns(&rejected, &rejected_schema().context(|| "defining the schema".into())?)?;
    let rejected = ensure_properties(&catalog, rejected, &table_properties()).await?;
    Ok((catalog, sessions, rejected))
}

/// Whether `error` is another process creating the same catalog schema,
/// namespace or table first (iceberg-catalog-sql reports a unique-key
/// violation, not `TableAlreadyExists`), or changing a table's properties
/// first.
fn is_creation_race(error: &SinkError) -> bool {
    let SinkError::Iceberg { source, .. } = error else { return false };
    if source.kind() == ::iceberg::ErrorKind::CatalogCommitConflicts {
        return true;
    }
    let message = remedy::full_message(source.as_ref());
    message.contains("duplicate key value violates unique constraint")
        || message.contains("UNIQUE constraint failed")
}

fn random_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

pub(super) use crate::clock::wall_clock_ms;
