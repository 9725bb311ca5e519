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
        let invalid = |e: serde_json::Error| Error::new(ErrorKind::Unexpected, e.to_string());
        let mut json = serde_json::to_value(table.metadata()).map_err(invalid)?;
        let earlier = |value: &mut serde_json::Value| {
            if value.as_i64().is_some_and(|t| t > now_ms) {
                *value = now_ms.into();
            }
        };
        earlier(&mut json["last-updated-ms"]);
        if let Some(log) = json["snapshot-log"].as_array_mut() {
            log.iter_mut().for_each(|entry| earlier(&mut entry["timestamp-ms"]));
        }
        let metadata: TableMetadata = serde_json::from_value(json).map_err(invalid)?;
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
        let floor = newest_time(current.metadata());
        let mut builder = current.metadata().clone().into_builder(Some(base.clone()));
        for update in commit.take_updates() {
            builder = in_commit_order(update, floor)?.apply(builder)?;
        }
        let metadata = builder.build()?.metadata;
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
