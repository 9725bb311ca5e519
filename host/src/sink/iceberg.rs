//! Iceberg sink: appends finished sessions and rejected events to two Apache Iceberg
//! tables kept in a local warehouse with a SQLite catalog.
//!
//! The layout is chosen so that other engines can read the tables without any setup:
//! the catalog is `<warehouse>/catalog.db` under the catalog name [`CATALOG_NAME`], the
//! tables live under `file://<warehouse>/<database>/<table>`, exactly where pyiceberg's
//! `SqlCatalog("sessionize", uri="sqlite:///<warehouse>/catalog.db",
//! warehouse="file://<warehouse>")` looks for them.
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    new_null_array, Array, ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, SchemaRef as ArrowSchemaRef};
use iceberg::arrow::{schema_to_arrow_schema, RecordBatchPartitionSplitter};
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{
    DataFile, DataFileFormat, FormatVersion, ListType, NestedField, PartitionSpec, PrimitiveType,
    Schema, Transform, Type,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::transform::create_transform_function;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{
    SqlBindStyle, SqlCatalog, SqlCatalogBuilder, SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI,
    SQL_CATALOG_PROP_WAREHOUSE,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use uuid::Uuid;

use crate::output::{RejectedEvent, SessionRow};

/// Catalog name shared with every other reader of the warehouse (pyiceberg, DuckDB via
/// pyiceberg): the SQL catalog keys its rows by this name, so a reader using another name
/// would see no tables.
pub const CATALOG_NAME: &str = "sessionize";

/// File name of the SQLite catalog inside the warehouse, so that the warehouse directory
/// alone is enough to find everything.
pub const CATALOG_FILE: &str = "catalog.db";

/// Default namespace, used when the operator does not choose one.
pub const DEFAULT_DATABASE: &str = "sessions";

/// Default sessions table name, used when the operator does not choose one.
pub const DEFAULT_TABLE: &str = "user_sessions";

/// Default rejected-events table name, used when the operator does not choose one.
pub const DEFAULT_REJECTED_TABLE: &str = "rejected_events";

/// Number of `user_hash_bucket` values. Fixed because it is part of the stored data:
/// changing it would make old and new rows disagree on a user's bucket.
pub const USER_HASH_BUCKETS: u32 = 100;

/// Width of the truncate transform over `user_hash_bucket`: ten buckets share a partition,
/// capping files per day and commit at `USER_HASH_BUCKETS / 10`.
pub const BUCKET_GROUP_WIDTH: u32 = 10;

/// Snapshot summary key the sink adds to every sessions snapshot, so that a commit with no
/// rows and no caller properties still records something (Iceberg refuses an empty append
/// without properties).
pub const PROP_SESSION_ROWS: &str = "sessionize.sink.session-rows";

/// Snapshot summary key recording how many rejected events went with the commit.
pub const PROP_REJECTED_ROWS: &str = "sessionize.sink.rejected-rows";

const MS_PER_DAY: i64 = 86_400_000;

// Sessions table columns.
const COL_UUID: &str = "uuid";
const COL_SESSION_ID: &str = "session_id";
const COL_START_MS: &str = "session_start_time_ms";
const COL_END_MS: &str = "session_end_time_ms";
const COL_DURATION: &str = "session_duration_seconds";
const COL_EVENT_COUNT: &str = "event_count";
const COL_PAGES: &str = "pages_visited";
const COL_DATE: &str = "session_date";
const COL_BUCKET: &str = "user_hash_bucket";
const COL_END_REASON: &str = "end_reason";
const COL_RULE_VERSION: &str = "rule_version";
const COL_START_TS: &str = "session_start_time";

// Rejected table columns.
const COL_RAW: &str = "raw";
const COL_REASON: &str = "reason";
const COL_SOURCE: &str = "source";
const COL_PARTITION: &str = "partition";
const COL_POSITION: &str = "position";
const COL_REJECTED_AT: &str = "rejected_at_ms";

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
        source: Box<iceberg::Error>,
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

/// Attaches "what were we doing" to iceberg-rust errors, whose messages describe the
/// failure but not the step.
trait IcebergContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SinkError>;
}

impl<T> IcebergContext<T> for iceberg::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, SinkError> {
        self.map_err(|source| SinkError::Iceberg { context: what(), source: Box::new(source) })
    }
}

/// Where the sink keeps its tables. A plain struct so the CLI can fill it from flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// Warehouse directory; created if missing. Holds the catalog and all table files.
    pub warehouse: PathBuf,
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
    pub fn new(warehouse: impl Into<PathBuf>) -> Self {
        Self {
            warehouse: warehouse.into(),
            database: DEFAULT_DATABASE.to_string(),
            table: DEFAULT_TABLE.to_string(),
            rejected_table: DEFAULT_REJECTED_TABLE.to_string(),
        }
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

/// Appends sessions and rejected events to their Iceberg tables, one snapshot per table and
/// commit. Holds the catalog connection and the last known table metadata, so a commit does
/// not have to rediscover the tables.
#[derive(Debug)]
pub struct IcebergSink {
    catalog: SqlCatalog,
    sessions: Table,
    rejected: Table,
    /// Set after a failed commit: the cached metadata may be stale (another writer may have
    /// evolved the table), so the next commit reloads it first.
    needs_refresh: bool,
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

        let warehouse = prepare_warehouse(&config.warehouse)?;
        let warehouse_str =
            warehouse.to_str().ok_or_else(|| SinkError::NonUtf8Path(warehouse.clone()))?;
        let catalog_path = format!("{}/{CATALOG_FILE}", warehouse_str.trim_end_matches('/'));
        let props = HashMap::from([
            (
                SQL_CATALOG_PROP_URI.to_string(),
                format!("sqlite://{}?mode=rwc", encode_sqlite_path(&catalog_path)),
            ),
            (
                SQL_CATALOG_PROP_WAREHOUSE.to_string(),
                format!("file://{}", warehouse_str.trim_end_matches('/')),
            ),
            (SQL_CATALOG_PROP_BIND_STYLE.to_string(), SqlBindStyle::QMark.to_string()),
        ]);
        let catalog = SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load(CATALOG_NAME, props)
            .await
            .context(|| format!("opening the SQLite catalog {catalog_path}"))?;

        let namespace = NamespaceIdent::new(config.database.clone());
        ensure_namespace(&catalog, &namespace).await?;

        let sessions = ensure_table(&catalog, &namespace, &config.table, sessions_creation).await?;
        check_columns(&sessions, &sessions_schema().context(|| "defining the schema".into())?)?;
        let rejected =
            ensure_table(&catalog, &namespace, &config.rejected_table, rejected_creation).await?;
        check_columns(&rejected, &rejected_schema().context(|| "defining the schema".into())?)?;

        tracing::info!(
            warehouse = %warehouse.display(),
            sessions = %sessions.identifier(),
            rejected = %rejected.identifier(),
            "Iceberg sink opened"
        );
        Ok(Self { catalog, sessions, rejected, needs_refresh: false })
    }

    /// Appends one batch of output. Rejected events are committed first and the sessions
    /// snapshot last, because the sessions snapshot is the commit point that recovery reads:
    /// a crash in between can at worst duplicate rejected events (their snapshot carries the
    /// same `properties`, so duplicates are traceable), never lose sessions or mark
    /// uncommitted input as done. The sessions table is committed even with no rows so the
    /// checkpoint in `properties` is always recorded.
    pub async fn commit(
        &mut self,
        sessions: &[SessionRow],
        rejected: &[RejectedEvent],
        properties: HashMap<String, String>,
    ) -> Result<CommitStats, SinkError> {
        let result = self.try_commit(sessions, rejected, properties).await;
        self.needs_refresh = result.is_err();
        result
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

        // A fresh prefix per commit keeps data file names unique: the file name generator
        // numbers files from zero every time.
        let prefix = random_uuid().to_string();

        // Write every data file before committing anything, to keep the window in which
        // only one of the two tables has the commit as short as possible.
        let session_files = if sessions.is_empty() {
            Vec::new()
        } else {
            let batch = sessions_batch(&self.sessions, sessions)?;
            write_data_files(&self.sessions, batch, &prefix).await?
        };
        let rejected_files = if rejected.is_empty() {
            Vec::new()
        } else {
            let batch = rejected_batch(&self.rejected, rejected, wall_clock_ms())?;
            write_data_files(&self.rejected, batch, &prefix).await?
        };
        let stats = CommitStats {
            session_files: session_files.len(),
            rejected_files: rejected_files.len(),
        };

        if !rejected_files.is_empty() {
            self.rejected =
                append(&self.catalog, &self.rejected, rejected_files, properties.clone()).await?;
        }
        self.sessions = append(&self.catalog, &self.sessions, session_files, properties).await?;

        tracing::debug!(
            sessions = sessions.len(),
            rejected = rejected.len(),
            session_files = stats.session_files,
            rejected_files = stats.rejected_files,
            "Iceberg commit done"
        );
        Ok(stats)
    }

    /// Summary properties of the sessions table's latest snapshot (highest sequence
    /// number), or `None` before the first commit. Recovery uses it to learn which
    /// checkpoint was committed last; it reloads the table so it sees commits made by any
    /// writer. Besides the caller's properties the map holds Iceberg's own summary keys
    /// (`added-records`, `total-data-files`, ...).
    pub async fn last_commit_properties(
        &mut self,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        self.sessions = reload(&self.catalog, &self.sessions).await?;
        Ok(latest_properties(&self.sessions))
    }

    /// Same as [`Self::last_commit_properties`] for the rejected-events table, so recovery
    /// can tell whether a crash happened between the two snapshots of one commit (rejected
    /// committed, sessions not) and avoid writing those rejected events twice.
    pub async fn last_rejected_commit_properties(
        &mut self,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        self.rejected = reload(&self.catalog, &self.rejected).await?;
        Ok(latest_properties(&self.rejected))
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
        Ok(())
    }
}

/// Iceberg's `bucket[100]` of each user id (Murmur3 x86 32-bit, seed 0, as the Iceberg spec
/// defines it), computed by iceberg-rust's own transform so the stored column always agrees
/// with what any Iceberg engine computes for `bucket(100, uuid)`. Null ids give null buckets.
pub fn user_hash_bucket(uuids: &StringArray) -> Result<Int32Array, SinkError> {
    let context = || format!("computing bucket[{USER_HASH_BUCKETS}] of user ids");
    let function =
        create_transform_function(&Transform::Bucket(USER_HASH_BUCKETS)).context(context)?;
    let input: ArrayRef = Arc::new(uuids.clone());
    let output = function.transform(input).context(context)?;
    output.as_any().downcast_ref::<Int32Array>().cloned().ok_or_else(|| SinkError::Iceberg {
        context: context(),
        source: Box::new(iceberg::Error::new(
            ErrorKind::Unexpected,
            format!("bucket transform returned {} instead of Int32", output.data_type()),
        )),
    })
}

/// `bucket[100]` of a single user id, for callers (tests, query helpers) that have one id
/// rather than an Arrow array.
pub fn user_hash_bucket_of(uuid: &str) -> Result<i32, SinkError> {
    let buckets = user_hash_bucket(&StringArray::from(vec![uuid]))?;
    if buckets.len() == 1 && buckets.is_valid(0) {
        Ok(buckets.value(0))
    } else {
        Err(SinkError::Iceberg {
            context: format!("computing bucket[{USER_HASH_BUCKETS}] of user id {uuid}"),
            source: Box::new(iceberg::Error::new(
                ErrorKind::Unexpected,
                "bucket transform returned null",
            )),
        })
    }
}

fn prepare_warehouse(path: &Path) -> Result<PathBuf, SinkError> {
    let io_error = |source| SinkError::Warehouse { path: path.to_path_buf(), source };
    std::fs::create_dir_all(path).map_err(io_error)?;
    // Table locations are stored as absolute `file://` URLs so that readers started from
    // another working directory find the files.
    std::fs::canonicalize(path).map_err(io_error)
}

/// sqlx percent-decodes the SQLite file name and splits it at `?`, so those characters must
/// be escaped to reach the file system unchanged.
fn encode_sqlite_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            _ => out.push(c),
        }
    }
    out
}

async fn ensure_namespace(
    catalog: &SqlCatalog,
    namespace: &NamespaceIdent,
) -> Result<(), SinkError> {
    let context = || format!("creating namespace {}", namespace.join("."));
    if catalog.namespace_exists(namespace).await.context(context)? {
        return Ok(());
    }
    match catalog.create_namespace(namespace, HashMap::new()).await {
        Ok(_) => Ok(()),
        // Another process created it between the check and the insert.
        Err(e) if e.kind() == ErrorKind::NamespaceAlreadyExists => Ok(()),
        Err(source) => Err(SinkError::Iceberg { context: context(), source: Box::new(source) }),
    }
}

async fn ensure_table(
    catalog: &SqlCatalog,
    namespace: &NamespaceIdent,
    name: &str,
    creation: fn(&str) -> iceberg::Result<TableCreation>,
) -> Result<Table, SinkError> {
    let ident = TableIdent::new(namespace.clone(), name.to_string());
    let load_context = || format!("loading table {ident}");
    if catalog.table_exists(&ident).await.context(load_context)? {
        return catalog.load_table(&ident).await.context(load_context);
    }
    let creation = creation(name).context(|| format!("defining table {ident}"))?;
    match catalog.create_table(namespace, creation).await {
        Ok(table) => {
            tracing::info!(table = %ident, "created Iceberg table");
            Ok(table)
        }
        // Another process created it between the check and the insert.
        Err(e) if e.kind() == ErrorKind::TableAlreadyExists => {
            catalog.load_table(&ident).await.context(load_context)
        }
        Err(source) => Err(SinkError::Iceberg {
            context: format!("creating table {ident}"),
            source: Box::new(source),
        }),
    }
}

async fn reload(catalog: &SqlCatalog, table: &Table) -> Result<Table, SinkError> {
    catalog
        .load_table(table.identifier())
        .await
        .context(|| format!("reloading table {}", table.identifier()))
}

fn latest_properties(table: &Table) -> Option<HashMap<String, String>> {
    // Snapshots come back in no particular order; the sequence number is the commit order.
    table
        .metadata()
        .snapshots()
        .max_by_key(|snapshot| snapshot.sequence_number())
        .map(|snapshot| snapshot.summary().additional_properties.clone())
}

fn string_type() -> Type {
    Type::Primitive(PrimitiveType::String)
}

fn sessions_schema() -> iceberg::Result<Schema> {
    let long = || Type::Primitive(PrimitiveType::Long);
    let int = || Type::Primitive(PrimitiveType::Int);
    let pages =
        Type::List(ListType::new(NestedField::list_element(13, string_type(), true).into()));
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, COL_UUID, string_type())
                .with_doc("User id from the input events")
                .into(),
            NestedField::required(2, COL_SESSION_ID, string_type())
                .with_doc("Deterministic session id: replaying the same input yields the same id")
                .into(),
            NestedField::required(3, COL_START_MS, long())
                .with_doc("Time of the first event, epoch milliseconds")
                .into(),
            NestedField::required(4, COL_END_MS, long())
                .with_doc("Time of the last event, epoch milliseconds")
                .into(),
            NestedField::required(5, COL_DURATION, Type::Primitive(PrimitiveType::Double))
                .with_doc("(end - start) / 1000")
                .into(),
            NestedField::required(6, COL_EVENT_COUNT, int())
                .with_doc("Accepted, de-duplicated events in the session")
                .into(),
            NestedField::required(7, COL_PAGES, pages)
                .with_doc("Distinct pages in order of first visit")
                .into(),
            NestedField::required(8, COL_DATE, Type::Primitive(PrimitiveType::Date))
                .with_doc("UTC date of the session start")
                .into(),
            NestedField::required(9, COL_BUCKET, int())
                .with_doc("Iceberg bucket[100] of uuid")
                .into(),
            NestedField::required(10, COL_END_REASON, string_type())
                .with_doc("Why the session ended: inactivity, max_duration, end_of_input, ...")
                .into(),
            NestedField::required(11, COL_RULE_VERSION, string_type())
                .with_doc("Name, version and content hash of the rules that cut the session")
                .into(),
            NestedField::optional(12, COL_START_TS, Type::Primitive(PrimitiveType::Timestamptz))
                .with_doc("Session start as a timestamp, for engines' time functions")
                .into(),
        ])
        .build()
}

fn sessions_creation(name: &str) -> iceberg::Result<TableCreation> {
    let schema = sessions_schema()?;
    let spec = PartitionSpec::builder(schema.clone())
        .add_partition_field(COL_DATE, COL_DATE, Transform::Identity)?
        .add_partition_field(
            COL_BUCKET,
            format!("{COL_BUCKET}_trunc"),
            Transform::Truncate(BUCKET_GROUP_WIDTH),
        )?
        .build()?;
    Ok(TableCreation::builder()
        .name(name.to_string())
        .schema(schema)
        .partition_spec(spec.into_unbound())
        .properties(table_properties())
        .format_version(FormatVersion::V2)
        .build())
}

fn rejected_schema() -> iceberg::Result<Schema> {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, COL_RAW, string_type())
                .with_doc("The input record as read (lossily decoded if not UTF-8)")
                .into(),
            NestedField::required(2, COL_REASON, string_type())
                .with_doc("Why it was refused")
                .into(),
            NestedField::required(3, COL_SOURCE, string_type())
                .with_doc("File path or kafka:<topic>")
                .into(),
            NestedField::required(4, COL_PARTITION, Type::Primitive(PrimitiveType::Int))
                .with_doc("Input partition (0 for a file)")
                .into(),
            NestedField::required(5, COL_POSITION, Type::Primitive(PrimitiveType::Long))
                .with_doc("Line number (files, 1-based) or offset (Kafka)")
                .into(),
            NestedField::required(6, COL_REJECTED_AT, Type::Primitive(PrimitiveType::Long))
                .with_doc("Wall clock at commit, epoch milliseconds")
                .into(),
        ])
        .build()
}

fn rejected_creation(name: &str) -> iceberg::Result<TableCreation> {
    Ok(TableCreation::builder()
        .name(name.to_string())
        .schema(rejected_schema()?)
        .properties(table_properties())
        .format_version(FormatVersion::V2)
        .build())
}

/// Recorded so that other writers (pyiceberg, Spark) compress like this sink does;
/// iceberg-rust itself ignores the property, hence [`writer_properties`].
fn table_properties() -> HashMap<String, String> {
    HashMap::from([("write.parquet.compression-codec".to_string(), "zstd".to_string())])
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build()
}

/// Fails early, with the column's name, when an existing table was created differently (or
/// evolved incompatibly) instead of failing later inside a write.
fn check_columns(table: &Table, expected: &Schema) -> Result<(), SinkError> {
    let actual = table.metadata().current_schema();
    for field in expected.as_struct().fields() {
        let Some(found) = actual.field_by_name(&field.name) else {
            return Err(SinkError::Schema {
                table: table.identifier().to_string(),
                detail: format!("column {} is missing", field.name),
            });
        };
        if !same_shape(&found.field_type, &field.field_type) {
            return Err(SinkError::Schema {
                table: table.identifier().to_string(),
                detail: format!(
                    "column {} has type {} where {} is written",
                    field.name, found.field_type, field.field_type
                ),
            });
        }
    }
    Ok(())
}

/// Type equality ignoring field ids, which the catalog reassigns at creation.
fn same_shape(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::List(a), Type::List(b)) => {
            same_shape(&a.element_field.field_type, &b.element_field.field_type)
        }
        (Type::Primitive(a), Type::Primitive(b)) => a == b,
        _ => false,
    }
}

fn arrow_schema(table: &Table) -> Result<ArrowSchemaRef, SinkError> {
    schema_to_arrow_schema(table.metadata().current_schema())
        .map(Arc::new)
        .context(|| format!("converting the schema of {} to Arrow", table.identifier()))
}

/// Assembles a batch in the table's current column order, filling columns the sink does not
/// know (added later by someone else) with nulls when they are optional.
fn assemble_batch(
    table: &Table,
    rows: usize,
    mut column: impl FnMut(&Field) -> Result<Option<ArrayRef>, SinkError>,
) -> Result<RecordBatch, SinkError> {
    let schema = arrow_schema(table)?;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match column(field)? {
            Some(array) => columns.push(array),
            None if field.is_nullable() => columns.push(new_null_array(field.data_type(), rows)),
            None => {
                return Err(SinkError::Schema {
                    table: table.identifier().to_string(),
                    detail: format!("required column {} is not written by the sink", field.name()),
                })
            }
        }
    }
    RecordBatch::try_new(schema, columns)
        .map_err(|source| SinkError::Arrow { table: table.identifier().to_string(), source })
}

fn session_date(row: &SessionRow) -> Result<i32, SinkError> {
    i32::try_from(row.start_ms.div_euclid(MS_PER_DAY)).map_err(|_| SinkError::InvalidRow {
        uuid: row.uuid.clone(),
        session_id: row.session_id.clone(),
        detail: format!("start {} ms is outside the date range", row.start_ms),
    })
}

/// Builds the sessions batch sorted by (date, bucket, uuid, start) so each data file holds
/// a contiguous key range: tight min/max statistics for pruning and better compression.
fn sessions_batch(table: &Table, sessions: &[SessionRow]) -> Result<RecordBatch, SinkError> {
    let uuids = StringArray::from_iter_values(sessions.iter().map(|s| s.uuid.as_str()));
    let buckets = user_hash_bucket(&uuids)?;
    let dates = sessions.iter().map(session_date).collect::<Result<Vec<_>, _>>()?;

    let mut order: Vec<usize> = (0..sessions.len()).collect();
    let key = |i: usize| {
        let s = &sessions[i];
        (dates[i], buckets.value(i), s.uuid.as_str(), s.start_ms, s.session_id.as_str())
    };
    order.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)));
    let rows: Vec<&SessionRow> = order.iter().map(|&i| &sessions[i]).collect();

    let mut event_counts = Vec::with_capacity(rows.len());
    for row in &rows {
        event_counts.push(i32::try_from(row.event_count).map_err(|_| SinkError::InvalidRow {
            uuid: row.uuid.clone(),
            session_id: row.session_id.clone(),
            detail: format!("event_count {} exceeds the int column", row.event_count),
        })?);
    }

    assemble_batch(table, rows.len(), |field| {
        let array: ArrayRef = match field.name().as_str() {
            COL_UUID => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.uuid))),
            COL_SESSION_ID => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.session_id)))
            }
            COL_START_MS => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.start_ms))),
            COL_END_MS => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.end_ms))),
            COL_DURATION => Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.end_ms.saturating_sub(r.start_ms) as f64 / 1000.0),
            )),
            COL_EVENT_COUNT => Arc::new(Int32Array::from(event_counts.clone())),
            COL_PAGES => Arc::new(pages_array(table, field, &rows)?),
            COL_DATE => Arc::new(Date32Array::from_iter_values(order.iter().map(|&i| dates[i]))),
            COL_BUCKET => {
                Arc::new(Int32Array::from_iter_values(order.iter().map(|&i| buckets.value(i))))
            }
            COL_END_REASON => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.end_reason)))
            }
            COL_RULE_VERSION => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &*r.rule_version)))
            }
            COL_START_TS => {
                let timezone = match field.data_type() {
                    DataType::Timestamp(_, timezone) => timezone.clone(),
                    _ => None,
                };
                // Null rather than a failed commit for starts beyond the microsecond range.
                Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        rows.iter().map(|r| r.start_ms.checked_mul(1000)),
                    )
                    .with_timezone_opt(timezone),
                )
            }
            _ => return Ok(None),
        };
        Ok(Some(array))
    })
}

/// The list column must use the table's own element field (name, nullability and field-id
/// metadata), or Arrow rejects the batch as not matching the schema.
fn pages_array(
    table: &Table,
    field: &Field,
    rows: &[&SessionRow],
) -> Result<arrow_array::ListArray, SinkError> {
    let element: FieldRef = match field.data_type() {
        DataType::List(element) => element.clone(),
        other => {
            return Err(SinkError::Schema {
                table: table.identifier().to_string(),
                detail: format!("column {COL_PAGES} is {other}, not a list"),
            })
        }
    };
    let pages: usize = rows.iter().map(|r| r.pages.len()).sum();
    let mut builder =
        ListBuilder::with_capacity(StringBuilder::with_capacity(pages, pages * 16), rows.len())
            .with_field(element);
    for row in rows {
        for page in &row.pages {
            builder.values().append_value(page);
        }
        builder.append(true);
    }
    Ok(builder.finish())
}

fn rejected_batch(
    table: &Table,
    rejected: &[RejectedEvent],
    rejected_at_ms: i64,
) -> Result<RecordBatch, SinkError> {
    assemble_batch(table, rejected.len(), |field| {
        let array: ArrayRef = match field.name().as_str() {
            COL_RAW => Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| &r.raw))),
            COL_REASON => {
                Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| &r.reason)))
            }
            COL_SOURCE => {
                Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| &r.source)))
            }
            COL_PARTITION => {
                Arc::new(Int32Array::from_iter_values(rejected.iter().map(|r| r.partition)))
            }
            COL_POSITION => {
                Arc::new(Int64Array::from_iter_values(rejected.iter().map(|r| r.position)))
            }
            COL_REJECTED_AT => Arc::new(Int64Array::from_value(rejected_at_ms, rejected.len())),
            _ => return Ok(None),
        };
        Ok(Some(array))
    })
}

/// Writes one batch as Parquet data files of `table`: split by the table's current
/// partition spec and fanned out to one rolling file writer per partition.
async fn write_data_files(
    table: &Table,
    batch: RecordBatch,
    prefix: &str,
) -> Result<Vec<DataFile>, SinkError> {
    let ident = table.identifier();
    let context = || format!("writing data files of {ident}");
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();

    let parquet = ParquetWriterBuilder::new(writer_properties(), schema.clone());
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        parquet,
        table.file_io().clone(),
        DefaultLocationGenerator::new(metadata).context(context)?,
        DefaultFileNameGenerator::new(prefix.to_string(), None, DataFileFormat::Parquet),
    );
    let builder = DataFileWriterBuilder::new(rolling);

    if spec.is_unpartitioned() {
        let mut writer = builder.build(None).await.context(context)?;
        writer.write(batch).await.context(context)?;
        return writer.close().await.context(context);
    }

    let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)
        .context(context)?;
    let mut writer = FanoutWriter::new(builder);
    for (partition, part) in splitter.split(&batch).context(context)? {
        writer.write(partition, part).await.context(context)?;
    }
    writer.close().await.context(context)
}

async fn append(
    catalog: &SqlCatalog,
    table: &Table,
    files: Vec<DataFile>,
    properties: HashMap<String, String>,
) -> Result<Table, SinkError> {
    let context = || format!("committing to {}", table.identifier());
    let tx = Transaction::new(table);
    let tx = tx
        .fast_append()
        // The duplicate check reads every manifest of the table on each commit, a cost that
        // grows with the table's history; file names here are unique per commit anyway.
        .with_check_duplicate(false)
        .add_data_files(files)
        .set_snapshot_properties(properties)
        .apply(tx)
        .context(context)?;
    tx.commit(catalog).await.context(context)
}

fn random_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
