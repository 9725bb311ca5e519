//! Snapshots: appending data files in one transaction, and reading back what
//! the latest snapshot says.

use std::collections::HashMap;

use super::table_catalog::TableCatalog;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind};

use super::IcebergContext;
use crate::sink::{carries, SinkError};

/// Commit races lost in a row before [`append`] hands the last one to its
/// caller's retry policy.
const RACES_RETRIED: u32 = 20;

/// Appends `files` to `table` in one snapshot carrying `properties`.
///
/// A lost race is retried on the table as it is now: the catalog refused it
/// (another writer's snapshot came first, before the requirement check or
/// before the pointer swap), so nothing of it landed, and appends commute.
/// Any other failure is the caller's, since only a read of the table can tell
/// whether it landed.
pub(super) async fn append(
    catalog: &TableCatalog,
    table: &Table,
    files: Vec<DataFile>,
    properties: HashMap<String, String>,
) -> Result<Table, SinkError> {
    let context = || format!("committing to {}", table.identifier());
    let mut current = table.clone();
    let mut races = 0;
    loop {
        let tx = append_transaction(&current, files.clone(), properties.clone())?;
        match tx.commit(catalog).await {
            Ok(committed) => return Ok(committed),
            Err(error)
                if error.kind() == ErrorKind::CatalogCommitConflicts && races < RACES_RETRIED =>
            {
                races += 1;
                tracing::debug!(table = %table.identifier(), races, "lost a commit race; appending again");
                current = reload(catalog, &current).await?;
            }
            Err(error) => return Err(error).context(context),
        }
    }
}

/// The transaction that appends `files` to `table` with `properties`.
pub(super) fn append_transaction(
    table: &Table,
    files: Vec<DataFile>,
    properties: HashMap<String, String>,
) -> Result<Transaction, SinkError> {
    let context = || format!("committing to {}", table.identifier());
    let tx = Transaction::new(table);
    tx.fast_append()
        // The duplicate check reads every manifest of the table on each commit, a cost that
        // grows with the table's history; file names here are unique per commit anyway.
        .with_check_duplicate(false)
        .add_data_files(files)
        .set_snapshot_properties(properties)
        .apply(tx)
        .context(context)
}

/// Sets whichever of `properties` the table lacks or holds otherwise (a table
/// created by an older version), and returns the table as committed.
pub(super) async fn ensure_properties(
    catalog: &TableCatalog,
    table: Table,
    properties: &HashMap<String, String>,
) -> Result<Table, SinkError> {
    let current = table.metadata().properties();
    let missing: Vec<_> = properties
        .iter()
        .filter(|(key, value)| current.get(*key) != Some(*value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if missing.is_empty() {
        return Ok(table);
    }
    let context = || format!("setting the properties of {}", table.identifier());
    let tx = Transaction::new(&table);
    let mut update = tx.update_table_properties();
    for (key, value) in missing {
        update = update.set(key, value);
    }
    let tx = update.apply(tx).context(context)?;
    tx.commit(catalog).await.context(context)
}

pub(super) async fn reload(catalog: &TableCatalog, table: &Table) -> Result<Table, SinkError> {
    catalog
        .load_table(table.identifier())
        .await
        .context(|| format!("reloading table {}", table.identifier()))
}

/// The summary properties of the latest snapshot whose properties map `key`
/// to `value`. Every snapshot is searched, not only the current one's
/// ancestry, because expiry may have removed the snapshots between.
pub(super) fn latest_properties_with(
    table: &Table,
    key: &str,
    value: &str,
) -> Option<HashMap<String, String>> {
    // Snapshots come back in no particular order; the sequence number is the commit order.
    table
        .metadata()
        .snapshots()
        .filter(|snapshot| carries(&snapshot.summary().additional_properties, key, value))
        .max_by_key(|snapshot| snapshot.sequence_number())
        .map(|snapshot| snapshot.summary().additional_properties.clone())
}
