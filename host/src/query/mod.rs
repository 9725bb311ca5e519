//! `sessionize query`: SQL over the job's Iceberg tables.
//!
//! The engine is DataFusion, reading the tables through iceberg-rust's
//! DataFusion integration (`iceberg-datafusion`): the catalog is opened
//! exactly as the sink opens it, and registered as the DataFusion catalog
//! [`CATALOG_NAME`] with the job's namespace as the default schema, so
//! `sessions.user_sessions`, `user_sessions` and
//! `sessionize.sessions.user_sessions` all name the sessions table.
//!
//! Filters on the partition source columns (`session_date`,
//! `user_hash_bucket`) reach iceberg-rust's scan planner, which skips the data
//! files whose partition (and column statistics) cannot match; [`run_query`]
//! can report how many files each table scan kept, of the files in the
//! snapshot it read.
//!
//! Only reading statements run: DDL, DML (`INSERT`, `COPY`) and `SET` are
//! refused, so a query never changes the tables.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::CatalogProvider;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};
use iceberg::Catalog;
use iceberg_datafusion::IcebergCatalogProvider;

mod output;
mod scans;

pub use output::{write_result, OutputFormat};
pub use scans::ScanStats;
use scans::{iceberg_scans, scan_stats};

use crate::sink::iceberg::{
    open_configured_catalog, SinkConfig, Warehouse, CATALOG_FILE, CATALOG_NAME,
};

/// What a query returned.
#[derive(Debug)]
pub struct QueryResult {
    /// The columns, also when there are no rows.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// One entry per Iceberg table scan in the executed plan, when asked for.
    pub scans: Vec<ScanStats>,
}

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The flags point at a warehouse that holds no tables.
    #[error(
        "no tables in {warehouse}: {missing} does not exist; write some with `sessionize run \
         --warehouse {warehouse}`, or point --warehouse (and --catalog-uri) where the job writes"
    )]
    NoWarehouse {
        /// The warehouse, as given.
        warehouse: String,
        /// What is missing: the directory, or its catalog file.
        missing: String,
    },
    /// The catalog could not be opened, or its tables not listed or loaded.
    #[error(
        "cannot read the catalog of {warehouse}: {source}; check that --warehouse, \
         --catalog-uri and the S3 flags are the ones the job runs with, and that the catalog \
         and the store are reachable"
    )]
    Catalog {
        /// The warehouse, as given.
        warehouse: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The SQL does not parse, or names a column or function that does not exist.
    #[error(
        "the SQL cannot be run: {reason}; fix the statement (DataFusion's SQL, close to \
         PostgreSQL's; quote names with \"double quotes\" and text with 'single quotes')"
    )]
    Sql {
        /// DataFusion's reason (not a `source`: its chain repeats it in
        /// other words).
        reason: String,
    },
    /// The SQL names a table the catalog does not hold.
    #[error(
        "there is no table {name}; the tables are: {tables} (name one as namespace.table, \
         or check --warehouse and --catalog-uri)"
    )]
    UnknownTable {
        /// The table the SQL names, `namespace.table` (or with the catalog
        /// when it names another one).
        name: String,
        /// The tables there are, `namespace.table`, comma-separated.
        tables: String,
    },
    /// The statement would change something.
    #[error(
        "`sessionize query` only reads the tables: {source}; write a SELECT (or EXPLAIN, \
         SHOW TABLES, DESCRIBE)"
    )]
    NotAQuery {
        /// What DataFusion refused.
        #[source]
        source: Box<DataFusionError>,
    },
    /// The query failed while it ran (a data file unreadable, out of memory...).
    #[error("the query failed while running: {source}")]
    Execution {
        /// DataFusion's reason.
        #[source]
        source: Box<DataFusionError>,
    },
    /// Planning the scans again, to count their files, failed.
    #[error("cannot count the data files of {table} for --stats: {source}")]
    Stats {
        /// The table.
        table: String,
        /// iceberg-rust's reason.
        #[source]
        source: Box<iceberg::Error>,
    },
    /// The result could not be written.
    #[error("cannot write the result as {format}: {source}{hint}")]
    Output {
        /// The format.
        format: &'static str,
        /// What to do, if known (with its leading separator).
        hint: &'static str,
        /// Arrow's reason.
        #[source]
        source: ArrowError,
    },
}

/// Runs `sql` over the tables `config` describes (its warehouse, catalog and
/// store; its database is the default namespace) and returns the rows; with
/// `stats`, also how many data files each table scan read.
pub async fn run_query(
    config: &SinkConfig,
    sql: &str,
    stats: bool,
) -> Result<QueryResult, QueryError> {
    check_warehouse(config)?;
    let warehouse = config.warehouse.to_string();
    let catalog_error = |source: Box<dyn std::error::Error + Send + Sync>| QueryError::Catalog {
        warehouse: warehouse.clone(),
        source,
    };
    let catalog: Arc<dyn Catalog> =
        Arc::new(open_configured_catalog(config).await.map_err(|e| catalog_error(e.into()))?);
    let provider = Arc::new(
        IcebergCatalogProvider::try_new(catalog).await.map_err(|e| catalog_error(e.into()))?,
    );
    let context = session(provider.clone(), &config.database);

    let state = context.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect).map_err(sql_error)?;
    let references = state.resolve_table_references(&statement).map_err(sql_error)?;
    for reference in references {
        check_table(provider.as_ref(), &reference, &config.database)?;
    }
    let plan = state.statement_to_plan(statement).await.map_err(sql_error)?;
    read_only()
        .verify_plan(&plan)
        .map_err(|source| QueryError::NotAQuery { source: Box::new(source) })?;
    let frame = context.execute_logical_plan(plan).await.map_err(sql_error)?;
    let physical = frame.create_physical_plan().await.map_err(sql_error)?;
    let schema = physical.schema();
    let batches = collect(physical.clone(), context.task_ctx())
        .await
        .map_err(|source| QueryError::Execution { source: Box::new(source) })?;

    let mut scans = Vec::new();
    if stats {
        let mut found = Vec::new();
        iceberg_scans(physical.as_ref(), &mut found);
        for scan in found {
            scans.push(scan_stats(scan).await?);
        }
    }
    Ok(QueryResult { schema, batches, scans })
}

/// A local warehouse without its catalog holds no tables: say so rather than
/// create an empty catalog there.
fn check_warehouse(config: &SinkConfig) -> Result<(), QueryError> {
    let Warehouse::Local(directory) = &config.warehouse else { return Ok(()) };
    let missing = if !directory.is_dir() {
        directory.clone()
    } else if config.catalog.is_none() && !directory.join(CATALOG_FILE).is_file() {
        directory.join(CATALOG_FILE)
    } else {
        return Ok(());
    };
    Err(QueryError::NoWarehouse {
        warehouse: config.warehouse.to_string(),
        missing: missing.display().to_string(),
    })
}

/// A DataFusion session whose default catalog is the Iceberg catalog and
/// default schema the job's namespace.
fn session(provider: Arc<IcebergCatalogProvider>, database: &str) -> SessionContext {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG_NAME, database)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true);
    let context = SessionContext::new_with_config(config);
    context.register_catalog(CATALOG_NAME, provider);
    context
}

/// Statements that read only.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

fn sql_error(error: DataFusionError) -> QueryError {
    let reason = match error.find_root() {
        DataFusionError::SQL(parser, _) => parser.to_string(),
        root => root.to_string(),
    };
    QueryError::Sql { reason }
}

/// Fails with the list of tables when `reference` names none of them.
fn check_table(
    catalog: &dyn CatalogProvider,
    reference: &TableReference,
    database: &str,
) -> Result<(), QueryError> {
    let resolved = reference.clone().resolve(CATALOG_NAME, database);
    if &*resolved.schema == "information_schema" && &*resolved.catalog == CATALOG_NAME {
        return Ok(());
    }
    let exists = &*resolved.catalog == CATALOG_NAME
        && catalog
            .schema(&resolved.schema)
            .is_some_and(|schema| schema.table_exist(&resolved.table));
    if exists {
        return Ok(());
    }
    let mut tables: Vec<String> = catalog
        .schema_names()
        .into_iter()
        .flat_map(|namespace| {
            let names = catalog.schema(&namespace).map(|s| s.table_names()).unwrap_or_default();
            names
                .into_iter()
                // `table$snapshots` and the like: Iceberg's metadata tables.
                .filter(|name| !name.contains('$'))
                .map(move |name| format!("{namespace}.{name}"))
        })
        .collect();
    tables.sort();
    let tables = if tables.is_empty() { "none".to_owned() } else { tables.join(", ") };
    let name = if &*resolved.catalog == CATALOG_NAME {
        format!("{}.{}", resolved.schema, resolved.table)
    } else {
        resolved.to_string()
    };
    Err(QueryError::UnknownTable { name, tables })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_warehouse_is_named_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let config = SinkConfig::new(dir.path().join("nowhere"));
        let error = run_query(&config, "SELECT 1", false).await.unwrap_err();
        assert!(matches!(error, QueryError::NoWarehouse { .. }), "{error}");
        assert!(error.to_string().contains("sessionize run"), "{error}");
        assert!(!dir.path().join("nowhere").exists());
        let config = SinkConfig::new(dir.path());
        let error = run_query(&config, "SELECT 1", false).await.unwrap_err();
        assert!(error.to_string().contains(CATALOG_FILE), "{error}");
    }
}
