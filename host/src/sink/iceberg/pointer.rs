//! The compare-and-swap on a table's metadata pointer in the SQL catalog:
//! every commit the sink and maintenance make ends with it (see
//! `table_catalog`), and compaction's replace snapshot, which iceberg-rust's
//! `Transaction` cannot express, calls it directly.
//!
//! The statement is the one iceberg-catalog-sql runs (set the new location
//! where the row still holds the one the new metadata was built on), but on
//! its own, autocommitted, so its outcome is the commit's: zero rows updated
//! is a lost race, an error is an error.

use iceberg::TableIdent;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use super::catalog::CatalogConnection;
use super::CATALOG_NAME;
use crate::sink::SinkError;

/// A connection to the catalog's `iceberg_tables`.
pub(super) struct MetadataPointer {
    pool: AnyPool,
    postgres: bool,
}

impl MetadataPointer {
    pub(super) async fn connect(connection: &CatalogConnection) -> Result<Self, SinkError> {
        sqlx::any::install_default_drivers();
        let pool =
            AnyPoolOptions::new().max_connections(1).connect(&connection.uri).await.map_err(
                |source| SinkError::CatalogDatabase {
                    context: "connecting to the catalog".into(),
                    source,
                },
            )?;
        Ok(Self { pool, postgres: connection.postgres })
    }

    /// Points `table` at `new` if it still points at `expected`; returns
    /// whether it did.
    pub(super) async fn swap(
        &self,
        table: &TableIdent,
        expected: &str,
        new: &str,
    ) -> Result<bool, SinkError> {
        let sql = if self.postgres {
            "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2 \
             WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5 \
             AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = $6"
        } else {
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
             AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?"
        };
        let result = sqlx::query(sql)
            .bind(new)
            .bind(expected)
            .bind(CATALOG_NAME)
            .bind(table.namespace().join("."))
            .bind(table.name())
            .bind(expected)
            .execute(&self.pool)
            .await
            .map_err(|source| SinkError::CatalogDatabase {
                context: format!("swapping the metadata pointer of {table}"),
                source,
            })?;
        Ok(result.rows_affected() == 1)
    }
}
