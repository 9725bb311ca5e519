//! The SQL catalog, with every commit made by our own compare-and-swap.
//!
//! iceberg-catalog-sql 0.10 commits a table update in a transaction whose
//! `COMMIT` result it drops: a commit the database refuses at `COMMIT` time
//! (a dropped connection, a deferred constraint, a restart) is reported as
//! made. It also keeps the snapshot time iceberg-rust took from this machine's
//! clock, which the metadata builder refuses when it is more than a minute
//! behind the table's newest snapshot: a member whose clock runs two minutes
//! slow could never commit after the others. [`TableCatalog::update_table`]
//! therefore applies the update itself, moves a snapshot's time up to the
//! table's newest where it is behind (times in the table stay in commit
//! order), writes the metadata and swaps the pointer with one autocommitted
//! statement whose outcome it reads. And since iceberg-rust's `Transaction`
//! applies the same check to the table it was given before the catalog sees
//! the commit, [`TableCatalog::load_table`] hands out tables whose log of
//! snapshot times reads no later than this machine's clock (the snapshots
//! themselves keep their times).

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;

use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, Runtime, TableCommit,
    TableCreation, TableIdent, TableUpdate,
};
use iceberg_catalog_sql::SqlCatalog;

use super::catalog::open_catalog;
use super::pointer::MetadataPointer;
use super::storage::Storage;
use super::{wall_clock_ms, CatalogUri};
use crate::sink::SinkError;

/// The SQL catalog, committing through [`MetadataPointer`] (see the module docs).
pub(crate) struct TableCatalog {
    sql: SqlCatalog,
    pointer: MetadataPointer,
    /// Where tables built here spawn their tasks (the SQL catalog's own).
    runtime: Runtime,
}

impl std::fmt::Debug for TableCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableCatalog").finish_non_exhaustive()
    }
}

impl TableCatalog {
    /// Opens `catalog`, or SQLite in a local warehouse when none is given.
    pub(super) async fn open(
        storage: &Storage,
        catalog: Option<&CatalogUri>,
    ) -> Result<Self, SinkError> {
        let (sql, connection) = open_catalog(storage, catalog).await?;
        let pointer = MetadataPointer::connect(&connection).await?;
        let runtime = Runtime::try_current().map_err(|source| SinkError::Iceberg {
            context: "opening the catalog".into(),
            source: Box::new(source),
        })?;
        Ok(Self { sql, pointer, runtime })
    }

    /// The swap, for commits built by hand (compaction's replace snapshot).
    pub(super) fn pointer(&self) -> &MetadataPointer {
        &self.pointer
    }
}

impl TableCatalog {
    /// `table`, its log of snapshot times and last update moved back to
    /// `now_ms` where they are ahead of it (this machine's clock is behind
    /// the writer's that made them), so that a commit built on it here
    /// passes iceberg-rust's own check; the commit itself is stamped in
    /// order by [`Catalog::update_table`] below.
    fn in_this_clock(&self, table: Table, now_ms: i64) -> iceberg::Result<Table> {
        if newest_time(table.metadata()) <= now_ms {
            return Ok(table);
        }
        let metadata = metadata_in_this_clock(table.metadata(), now_ms)?;
        let location = table.metadata_location_result()?.to_owned();
        Table::builder()
            .identifier(table.identifier().clone())
            .metadata(metadata)
            .metadata_location(location)
            .file_io(table.file_io().clone())
            .runtime(self.runtime.clone())
            .build()
    }
}

/// `metadata` with its last update and its logs of snapshot times and of
/// metadata files moved back to `now_ms` where they are ahead of it. (The
/// metadata log matters once a writer ahead committed twice in a row: the
/// entry of its first file is then ahead of the last update moved back.)
fn metadata_in_this_clock(metadata: &TableMetadata, now_ms: i64) -> iceberg::Result<TableMetadata> {
    let invalid = |e: serde_json::Error| Error::new(ErrorKind::Unexpected, e.to_string());
    let mut json = serde_json::to_value(metadata).map_err(invalid)?;
    let earlier = |value: &mut serde_json::Value| {
        if value.as_i64().is_some_and(|t| t > now_ms) {
            *value = now_ms.into();
        }
    };
    earlier(&mut json["last-updated-ms"]);
    for log in ["snapshot-log", "metadata-log"] {
        if let Some(log) = json[log].as_array_mut() {
            log.iter_mut().for_each(|entry| earlier(&mut entry["timestamp-ms"]));
        }
    }
    serde_json::from_value(json).map_err(invalid)
}

/// The newest time `metadata` holds: a snapshot added to it may not be older.
pub(super) fn newest_time(metadata: &TableMetadata) -> i64 {
    let snapshots = metadata.snapshots().map(|s| s.timestamp_ms());
    snapshots.fold(metadata.last_updated_ms(), i64::max)
}

/// `update`, a snapshot in it stamped no earlier than `floor`.
fn in_commit_order(update: TableUpdate, floor: i64) -> iceberg::Result<TableUpdate> {
    let TableUpdate::AddSnapshot { snapshot } = &update else { return Ok(update) };
    if snapshot.timestamp_ms() >= floor {
        return Ok(update);
    }
    tracing::debug!(
        behind_ms = floor - snapshot.timestamp_ms(),
        "this machine's clock is behind the table's newest snapshot: the new one takes its time"
    );
    // The snapshot's fields are crate-private: its serialized form is the way in.
    let invalid = |e: serde_json::Error| Error::new(ErrorKind::Unexpected, e.to_string());
    let mut json = serde_json::to_value(&update).map_err(invalid)?;
    json["snapshot"]["timestamp-ms"] = floor.into();
    serde_json::from_value(json).map_err(invalid)
}

/// `current` (read from `base`) with `updates` applied in commit order, its
/// last update never before `current`'s.
///
/// iceberg-rust's builder stamps an update without a snapshot with this
/// machine's clock, and refuses (or, with `base`'s own entry, writes a file
/// it cannot read back) one more than a minute before the table's logs. So
/// behind a writer whose clock was ahead, it builds on `current` with its
/// times moved back to this clock, then puts every time back.
fn updated(
    current: &TableMetadata,
    base: &str,
    updates: Vec<TableUpdate>,
) -> iceberg::Result<TableMetadata> {
    let floor = newest_time(current);
    let now = wall_clock_ms();
    let behind = floor > now;
    let working = if behind { metadata_in_this_clock(current, now)? } else { current.clone() };
    let mut builder = working.into_builder(Some(base.to_owned()));
    for update in updates {
        builder = in_commit_order(update, floor)?.apply(builder)?;
    }
    let metadata = builder.build()?.metadata;
    if !behind {
        return Ok(metadata);
    }
    with_times_of(&metadata, current, base, floor)
}

/// `metadata`, built on `original` (read from `base`) with its times moved
/// back, with `original`'s times put back in its logs and its last update no
/// earlier than `floor`.
fn with_times_of(
    metadata: &TableMetadata,
    original: &TableMetadata,
    base: &str,
    floor: i64,
) -> iceberg::Result<TableMetadata> {
    use serde_json::Value;
    let invalid = |e: serde_json::Error| Error::new(ErrorKind::Unexpected, e.to_string());
    let mut json = serde_json::to_value(metadata).map_err(invalid)?;
    let was = serde_json::to_value(original).map_err(invalid)?;
    let restore = |json: &mut Value, log: &str, key: &str, extra: Option<(Value, i64)>| {
        let times: HashMap<String, i64> = (was[log].as_array().into_iter().flatten())
            .filter_map(|e| Some((e[key].to_string(), e["timestamp-ms"].as_i64()?)))
            .chain(extra.map(|(k, t)| (k.to_string(), t)))
            .collect();
        for entry in json[log].as_array_mut().into_iter().flatten() {
            if let Some(&time) = times.get(&entry[key].to_string()) {
                entry["timestamp-ms"] = time.into();
            }
        }
    };
    restore(&mut json, "snapshot-log", "snapshot-id", None);
    let own = (Value::from(base), original.last_updated_ms());
    restore(&mut json, "metadata-log", "metadata-file", Some(own));
    json["last-updated-ms"] = metadata.last_updated_ms().max(floor).into();
    serde_json::from_value(json).map_err(invalid)
}

#[async_trait]
impl Catalog for TableCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.sql.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.sql.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.sql.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.sql.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.sql.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.sql.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.sql.list_tables(namespace).await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.sql.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        let table = self.sql.load_table(table).await?;
        self.in_this_clock(table, wall_clock_ms())
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.sql.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.sql.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.sql.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.sql.rename_table(src, dest).await
    }

    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.sql.register_table(table, metadata_location).await
    }

    /// Applies `commit` to the table as the catalog holds it now, and swaps
    /// the pointer to the result (see the module docs).
    async fn update_table(&self, mut commit: TableCommit) -> iceberg::Result<Table> {
        let ident = commit.identifier().clone();
        let current = self.sql.load_table(&ident).await?;
        let base = current.metadata_location_result()?.to_owned();
        for requirement in commit.take_requirements() {
            requirement.check(Some(current.metadata()))?;
        }
        let metadata = updated(current.metadata(), &base, commit.take_updates())?;
        let location =
            MetadataLocation::from_str(&base)?.with_next_version().with_new_metadata(&metadata);
        metadata.write_to(current.file_io(), &location).await?;
        let location = location.to_string();
        let swapped = self.pointer.swap(&ident, &base, &location).await.map_err(|e| {
            Error::new(ErrorKind::Unexpected, format!("committing to {ident}")).with_source(e)
        })?;
        if !swapped {
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("another writer committed to {ident} first"),
            )
            .with_retryable(true));
        }
        Table::builder()
            .identifier(ident)
            .metadata(metadata)
            .metadata_location(location)
            .file_io(current.file_io().clone())
            .runtime(self.runtime.clone())
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{
        FormatVersion, NestedField, PartitionSpec, PrimitiveType, Schema, SortOrder,
        TableMetadataBuilder, Type,
    };

    const DAY_MS: i64 = 86_400_000;

    /// A table written last by a machine whose clock was four days ahead
    /// of `now_ms`, with an earlier metadata file of that machine's in its log.
    fn written_ahead(now_ms: i64) -> TableMetadata {
        let uuid = NestedField::required(1, "uuid", Type::Primitive(PrimitiveType::String));
        let schema = Schema::builder().with_fields(vec![uuid.into()]).build().unwrap();
        let metadata = TableMetadataBuilder::new(
            schema,
            PartitionSpec::unpartition_spec(),
            SortOrder::unsorted_order(),
            "file:///w/t".into(),
            FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata;
        let ahead = now_ms + 4 * DAY_MS;
        let mut json = serde_json::to_value(&metadata).unwrap();
        json["last-updated-ms"] = ahead.into();
        json["metadata-log"] = serde_json::json!([{
            "metadata-file": "file:///w/t/metadata/00000-a.metadata.json",
            "timestamp-ms": ahead - 1_000,
        }]);
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_table_written_on_a_clock_days_ahead_is_read_in_this_clock() {
        let now = 1_800_000_000_000;
        let metadata = metadata_in_this_clock(&written_ahead(now), now).unwrap();
        assert_eq!(metadata.last_updated_ms(), now);
    }

    #[test]
    fn an_update_without_a_snapshot_on_a_slow_clock_reads_back() {
        let current = written_ahead(wall_clock_ms());
        let properties = HashMap::from([("k".to_owned(), "v".to_owned())]);
        let update = TableUpdate::SetProperties { updates: properties };
        let base = "file:///w/t/metadata/00001-b.metadata.json";
        let metadata = updated(&current, base, vec![update]).unwrap();
        let json = serde_json::to_string(&metadata).unwrap();
        let read: TableMetadata = serde_json::from_str(&json).unwrap();
        assert!(read.last_updated_ms() >= current.last_updated_ms());
        assert_eq!(read.properties()["k"], "v");
        // The log keeps the writers' own times.
        let log: Vec<_> = read.metadata_log().iter().map(|e| e.timestamp_ms).collect();
        let ahead = current.last_updated_ms();
        assert_eq!(log, [ahead - 1_000, ahead]);
    }

    #[test]
    fn a_snapshot_behind_the_table_takes_the_tables_newest_time() {
        let snapshot = iceberg::spec::Snapshot::builder()
            .with_snapshot_id(7)
            .with_sequence_number(3)
            .with_timestamp_ms(1_000)
            .with_manifest_list("s3://b/m.avro")
            .with_summary(iceberg::spec::Summary {
                operation: iceberg::spec::Operation::Append,
                additional_properties: HashMap::from([("k".into(), "v".into())]),
            })
            .build();
        let update = TableUpdate::AddSnapshot { snapshot };
        let moved = in_commit_order(update.clone(), 121_000).unwrap();
        let TableUpdate::AddSnapshot { snapshot: moved } = moved else { panic!("{moved:?}") };
        assert_eq!(moved.timestamp_ms(), 121_000);
        assert_eq!(moved.snapshot_id(), 7);
        assert_eq!(moved.summary().additional_properties["k"], "v");
        assert_eq!(in_commit_order(update.clone(), 500).unwrap(), update);
    }
}
