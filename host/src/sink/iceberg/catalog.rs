//! The SQL catalog (SQLite inside a local warehouse by default, or a shared
//! PostgreSQL), and the namespace and tables in it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{
    SqlBindStyle, SqlCatalog, SqlCatalogBuilder, SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI,
    SQL_CATALOG_PROP_WAREHOUSE,
};

use super::storage::Storage;
use super::IcebergContext;
#[cfg(feature = "query")]
use super::SinkConfig;
use crate::sink::SinkError;

/// Catalog name shared with every other reader of the warehouse (pyiceberg, DuckDB via
/// pyiceberg): the SQL catalog keys its rows by this name, so a reader using another name
/// would see no tables.
pub const CATALOG_NAME: &str = "sessionize";

/// File name of the SQLite catalog inside a local warehouse, so that the warehouse
/// directory alone is enough to find everything.
pub const CATALOG_FILE: &str = "catalog.db";

/// Which SQL catalog holds the tables' metadata pointers.
#[derive(Clone, PartialEq, Eq)]
pub enum CatalogUri {
    /// `sqlite://path`: one machine's writers.
    Sqlite(String),
    /// `postgres://` or `postgresql://`: shared by writers and readers anywhere.
    Postgres(String),
}

/// A catalog URI the sink cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "catalog {0:?}: use sqlite:///path/catalog.db or postgres://user@host:port/database \
     (an Iceberg REST catalog is not supported: no REST catalog server could be tested here)"
)]
pub struct CatalogUriError(String);

impl FromStr for CatalogUri {
    type Err = CatalogUriError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("sqlite:") {
            Ok(CatalogUri::Sqlite(text.to_owned()))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(CatalogUri::Postgres(text.to_owned()))
        } else {
            Err(CatalogUriError(redact_password(text)))
        }
    }
}

// The URI may hold a password.
impl fmt::Display for CatalogUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogUri::Sqlite(uri) | CatalogUri::Postgres(uri) => {
                f.write_str(&redact_password(uri))
            }
        }
    }
}

impl fmt::Debug for CatalogUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CatalogUri({self})")
    }
}

/// `scheme://user:secret@host` -> `scheme://user:***@host`.
fn redact_password(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else { return uri.to_owned() };
    let Some((credentials, host)) = rest.split_once('@') else { return uri.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => uri.to_owned(),
    }
}

/// How to reach the catalog's database directly, for the statements
/// iceberg-catalog-sql has no API for.
#[derive(Debug, Clone)]
pub(super) struct CatalogConnection {
    /// The sqlx URI.
    pub(super) uri: String,
    /// PostgreSQL (`$1` placeholders) rather than SQLite (`?`).
    pub(super) postgres: bool,
}

/// Opens the catalog: `catalog`, or SQLite at `<warehouse>/catalog.db` when
/// none is given and the warehouse is local.
pub(super) async fn open_catalog(
    storage: &Storage,
    catalog: Option<&CatalogUri>,
) -> Result<(SqlCatalog, CatalogConnection), SinkError> {
    let (uri, bind_style) = match (catalog, storage.local_directory()) {
        (Some(CatalogUri::Sqlite(uri)), _) => (sqlite_creating(uri), SqlBindStyle::QMark),
        (Some(CatalogUri::Postgres(uri)), _) => (uri.clone(), SqlBindStyle::DollarNumeric),
        (None, Some(directory)) => {
            let path = format!("{}/{CATALOG_FILE}", directory.trim_end_matches('/'));
            (format!("sqlite://{}?mode=rwc", encode_sqlite_path(&path)), SqlBindStyle::QMark)
        }
        (None, None) => {
            return Err(SinkError::Config(format!(
                "the warehouse {} is not a local directory, so the catalog cannot live in it: \
                 give --catalog-uri (postgres://... to share it, or sqlite:///path/catalog.db)",
                storage.location
            )))
        }
    };
    let shown = catalog.map_or_else(|| uri.clone(), ToString::to_string);
    let connection =
        CatalogConnection { uri: uri.clone(), postgres: bind_style == SqlBindStyle::DollarNumeric };
    let mut props = storage.props.clone();
    props.insert(SQL_CATALOG_PROP_URI.to_string(), uri);
    props.insert(SQL_CATALOG_PROP_WAREHOUSE.to_string(), storage.location.clone());
    props.insert(SQL_CATALOG_PROP_BIND_STYLE.to_string(), bind_style.to_string());
    // The catalog creates its own tables on first use (`CREATE TABLE IF NOT
    // EXISTS`); two jobs doing it at once on a fresh PostgreSQL catalog can
    // see "type ... already exists" from the one that lost. Opening again
    // then finds the tables made.
    let mut attempt = 1;
    loop {
        let opened = SqlCatalogBuilder::default()
            .with_storage_factory(storage.factory.clone())
            .load(CATALOG_NAME, props.clone())
            .await;
        match opened {
            Ok(catalog) => return Ok((catalog, connection)),
            Err(error)
                if attempt < CATALOG_OPEN_ATTEMPTS
                    && error.to_string().contains("already exists") =>
            {
                tracing::info!(%error, "the catalog's tables were being created by another job; opening again");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error).context(|| format!("opening the catalog {shown}")),
        }
    }
}

/// Attempts at opening a catalog whose tables another job is creating.
const CATALOG_OPEN_ATTEMPTS: u32 = 5;

/// Opens the catalog `config` names, as the sink does, for a reader: creates
/// no namespace or table (`sessionize query`).
#[cfg(feature = "query")]
pub(crate) async fn open_configured_catalog(config: &SinkConfig) -> Result<SqlCatalog, SinkError> {
    let storage = Storage::new(&config.warehouse, &config.s3)?;
    Ok(open_catalog(&storage, config.catalog.as_ref()).await?.0)
}

/// sqlx opens an SQLite file only if it exists unless asked to create it.
fn sqlite_creating(uri: &str) -> String {
    if uri.contains("mode=") {
        uri.to_owned()
    } else if uri.contains('?') {
        format!("{uri}&mode=rwc")
    } else {
        format!("{uri}?mode=rwc")
    }
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
    catalog: &impl Catalog,
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
    catalog: &impl Catalog,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_uris_parse_and_hide_passwords() {
        let pg: CatalogUri = "postgres://job:s3cret@db:5432/lake".parse().unwrap();
        assert_eq!(pg.to_string(), "postgres://job:***@db:5432/lake");
        assert!(matches!("sqlite:///tmp/c.db".parse(), Ok(CatalogUri::Sqlite(_))));
        let rest = "https://user:pw@catalog/api".parse::<CatalogUri>().unwrap_err();
        assert!(!rest.to_string().contains("pw@"), "{rest}");
        assert_eq!(sqlite_creating("sqlite:///c.db"), "sqlite:///c.db?mode=rwc");
    }
}
