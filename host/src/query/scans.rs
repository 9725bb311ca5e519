//! How many data files a query's table scans read: the proof that a filter on
//! a partition column pruned.

use std::collections::HashSet;
use std::fmt;

use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use iceberg_datafusion::physical_plan::IcebergTableScan;

use super::QueryError;

/// How many data files one table scan of a query read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStats {
    /// The table, `namespace.table`.
    pub table: String,
    /// Data files iceberg-rust's planner kept for the scan's columns and
    /// filter, which the scan reads.
    pub files_scanned: usize,
    /// Data files in the snapshot the scan read (the table's current one).
    pub files_total: usize,
}

impl fmt::Display for ScanStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "files scanned: {} of {} ({})", self.files_scanned, self.files_total, self.table)
    }
}

/// The Iceberg table scans in `plan`, depth first.
pub(super) fn iceberg_scans<'a>(
    plan: &'a dyn ExecutionPlan,
    found: &mut Vec<&'a IcebergTableScan>,
) {
    if let Some(scan) = plan.as_any().downcast_ref::<IcebergTableScan>() {
        found.push(scan);
    }
    for child in plan.children() {
        iceberg_scans(child.as_ref(), found);
    }
}

/// Plans `scan` again with iceberg-rust's planner, with the same snapshot,
/// columns and filter, and counts its data files; and the files of the whole
/// snapshot, planned with no filter.
pub(super) async fn scan_stats(scan: &IcebergTableScan) -> Result<ScanStats, QueryError> {
    let table = scan.table();
    let name = table.identifier().to_string();
    let snapshot = scan.snapshot_id().or_else(|| table.metadata().current_snapshot_id());
    let at_snapshot = || match snapshot {
        Some(id) => table.scan().snapshot_id(id),
        None => table.scan(),
    };
    let mut scanned = match scan.projection() {
        Some(columns) => at_snapshot().select(columns.iter()),
        None => at_snapshot().select_all(),
    };
    if let Some(predicate) = scan.predicates() {
        scanned = scanned.with_filter(predicate.clone());
    }
    let stats_error = |source| QueryError::Stats { table: name.clone(), source: Box::new(source) };
    let files_scanned = count_files(scanned).await.map_err(stats_error)?;
    let files_total = count_files(at_snapshot().select_all()).await.map_err(stats_error)?;
    Ok(ScanStats { table: name.clone(), files_scanned, files_total })
}

/// The distinct data files a scan plans to read.
async fn count_files(scan: iceberg::scan::TableScanBuilder<'_>) -> iceberg::Result<usize> {
    let tasks: Vec<_> = scan.build()?.plan_files().await?.try_collect().await?;
    Ok(tasks.iter().map(|task| task.data_file_path.as_str()).collect::<HashSet<_>>().len())
}
