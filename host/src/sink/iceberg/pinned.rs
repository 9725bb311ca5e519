//! A catalog that serves one table, as it was checked, once: a commit made
//! through it cannot be rebased onto a newer snapshot (iceberg-rust's
//! `Transaction::commit` reloads the table and re-applies the actions to
//! whatever it finds), so its requirements are checked against the table the
//! caller checked. Everything else goes to the SQL catalog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::table_catalog::TableCatalog;
use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{Catalog, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};

/// The catalog a pinned commit goes through: it serves the checked table
/// once, and refuses to serve it again, so `Transaction::commit` cannot
/// rebase the append onto a newer snapshot.
#[derive(Debug)]
pub(super) struct Pinned<'a> {
    catalog: &'a TableCatalog,
    table: Table,
    served: AtomicBool,
}

/// The error the pinned catalog answers a second load with.
pub(super) fn moved() -> iceberg::Error {
    iceberg::Error::new(
        iceberg::ErrorKind::CatalogCommitConflicts,
        "the table changed since it was checked",
    )
}

impl<'a> Pinned<'a> {
    /// A catalog that serves `table`, as checked, once.
    pub(super) fn new(catalog: &'a TableCatalog, table: &Table) -> Self {
        Self { catalog, table: table.clone(), served: AtomicBool::new(false) }
    }
}

#[async_trait]
impl Catalog for Pinned<'_> {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.catalog.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.catalog.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.catalog.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.catalog.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.catalog.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.catalog.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.catalog.list_tables(namespace).await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.catalog.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        if table != self.table.identifier() || self.served.swap(true, Ordering::SeqCst) {
            return Err(moved());
        }
        Ok(self.table.clone())
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.catalog.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.catalog.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.catalog.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.catalog.rename_table(src, dest).await
    }

    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.catalog.register_table(table, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        self.catalog.update_table(commit).await
    }
}
