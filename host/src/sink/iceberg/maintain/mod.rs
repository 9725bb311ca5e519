//! Table maintenance: compaction of small files, expiry of old snapshots and
//! removal of the files only they used. Safe beside running jobs: every
//! change is one commit through the catalog's compare-and-swap, a lost race
//! is retried on the new head, and the snapshots job recovery reads are kept.
//! One maintainer per table at a time.

use iceberg::{Catalog, NamespaceIdent, TableIdent};

use super::storage::Storage;
use super::table_catalog::TableCatalog;
use super::{IcebergContext, SinkConfig};
use crate::sink::SinkError;

mod compact;
mod expire;

pub use compact::{CompactionOptions, CompactionReport, MAINTENANCE_KEY};
pub use expire::{ExpiryOptions, ExpiryReport};

/// The job's tables, opened for maintenance.
pub struct TableMaintenance {
    storage: Storage,
    catalog: TableCatalog,
    tables: Vec<TableIdent>,
}

impl TableMaintenance {
    /// Opens the catalog and storage `config` names; the tables must exist
    /// (a job creates them).
    pub async fn open(config: &SinkConfig) -> Result<Self, SinkError> {
        let storage = Storage::new(&config.warehouse, &config.s3)?;
        let catalog = TableCatalog::open(&storage, config.catalog.as_ref()).await?;
        let namespace = NamespaceIdent::new(config.database.clone());
        let mut tables = Vec::new();
        for name in [&config.table, &config.rejected_table] {
            let table = TableIdent::new(namespace.clone(), name.clone());
            let exists = catalog
                .table_exists(&table)
                .await
                .context(|| format!("looking for table {table}"))?;
            if !exists {
                return Err(SinkError::Config(format!(
                    "the catalog has no table {table}: a job creates it on its first start \
                     (or check --warehouse, --catalog-uri and --iceberg-table)"
                )));
            }
            tables.push(table);
        }
        Ok(Self { storage, catalog, tables })
    }

    /// Compacts each table's small files.
    pub async fn compact(
        &self,
        options: CompactionOptions,
    ) -> Result<Vec<CompactionReport>, SinkError> {
        let mut reports = Vec::new();
        for table in &self.tables {
            reports.push(compact::compact(&self.catalog, table, options).await?);
        }
        Ok(reports)
    }

    /// Expires each table's old snapshots and deletes the files only they used.
    pub async fn expire(&self, options: &ExpiryOptions) -> Result<Vec<ExpiryReport>, SinkError> {
        let mut reports = Vec::new();
        for table in &self.tables {
            reports.push(expire::expire(&self.catalog, &self.storage, table, options).await?);
        }
        Ok(reports)
    }
}
