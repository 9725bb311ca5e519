//! The SQL catalog on SQLite inside the warehouse, and the namespace and tables in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iceberg::io::LocalFsStorageFactory;
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{
    SqlBindStyle, SqlCatalog, SqlCatalogBuilder, SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI,
    SQL_CATALOG_PROP_WAREHOUSE,
};

use super::IcebergContext;
use crate::sink::SinkError;

/// Catalog name shared with every other reader of the warehouse (pyiceberg, DuckDB via
/// pyiceberg): the SQL catalog keys its rows by this name, so a reader using another name
/// would see no tables.
pub const CATALOG_NAME: &str = "sessionize";

/// File name of the SQLite catalog inside the warehouse, so that the warehouse directory
/// alone is enough to find everything.
pub const CATALOG_FILE: &str = "catalog.db";

/// Opens (creating) the warehouse directory and its SQLite catalog; returns the
/// catalog and the warehouse's absolute path.
pub(super) async fn open_catalog(warehouse: &Path) -> Result<(SqlCatalog, PathBuf), SinkError> {
    let warehouse = prepare_warehouse(warehouse)?;
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
    Ok((catalog, warehouse))
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

pub(super) async fn ensure_namespace(
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

pub(super) async fn ensure_table(
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
