//! Snapshot expiry, then removal of the files no remaining snapshot uses.
//!
//! iceberg-rust's `ExpireSnapshotsAction` drops snapshots from the metadata
//! and leaves the files; which snapshots go is chosen here, because the job's
//! recovery reads its last checkpoint from the newest snapshot carrying its
//! id, so that snapshot must stay whatever its age. The files are then found
//! by reachability (Iceberg's own expiry cleanup): every manifest list,
//! manifest and data file the expired snapshots used that no kept snapshot
//! uses any more. Files no snapshot ever referenced (a writer that crashed
//! between writing and committing) are not found this way; that needs a
//! listing of the storage, which iceberg-rust's FileIO does not offer.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use iceberg::spec::{ManifestContentType, SnapshotRef};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind, TableIdent};
use iceberg_catalog_sql::SqlCatalog;

use super::super::{wall_clock_ms, IcebergContext};
use crate::sink::SinkError;

/// Commit races tried before expiry gives up on a table that keeps moving.
const MAX_ATTEMPTS: u32 = 20;

/// Old metadata files kept beside the current one.
const METADATA_FILES_KEPT: usize = 10;

/// Which snapshots expiry keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryOptions {
    /// Snapshots younger than this stay.
    pub older_than: Duration,
    /// The newest this many snapshots stay whatever their age.
    pub retain_last: usize,
    /// Snapshot summary key naming the writer; each writer's newest snapshot
    /// stays (its recovery reads it).
    pub writer_key: String,
}

/// What one expiry of one table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// The table.
    pub table: String,
    /// Snapshots before and after.
    pub snapshots: (usize, usize),
    /// Data files deleted.
    pub data_files_deleted: usize,
    /// Manifests and manifest lists deleted.
    pub manifests_deleted: usize,
    /// Old metadata files deleted.
    pub metadata_files_deleted: usize,
    /// Bytes of the data files deleted.
    pub bytes_deleted: u64,
}

/// Expires `ident`'s snapshots per `options` and deletes what only they used.
pub(super) async fn expire(
    catalog: &SqlCatalog,
    ident: &TableIdent,
    options: &ExpiryOptions,
) -> Result<ExpiryReport, SinkError> {
    let mut report = ExpiryReport { table: ident.to_string(), ..Default::default() };
    let context = || format!("expiring snapshots of {ident}");
    let mut attempts = 0;
    let (before, after) = loop {
        attempts += 1;
        let table = catalog.load_table(ident).await.context(context)?;
        let expired = expirable(&table, options);
        report.snapshots.0 = table.metadata().snapshots().len();
        if expired.is_empty() {
            report.snapshots.1 = report.snapshots.0;
            break (table.clone(), table);
        }
        let tx = Transaction::new(&table);
        // Age 0 pins the action's own age rule off: only the ids chosen here go.
        let tx = tx
            .expire_snapshots()
            .expire_snapshot_ids(expired)
            .expire_older_than_ms(0)
            .apply(tx)
            .context(context)?;
        match tx.commit(catalog).await {
            Ok(after) => break (table, after),
            Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts && attempts < MAX_ATTEMPTS => {
                continue
            }
            Err(source) => {
                return Err(SinkError::Iceberg { context: context(), source: source.into() })
            }
        }
    };
    report.snapshots.1 = after.metadata().snapshots().len();

    // What the kept snapshots use, and what every snapshot before used; each
    // manifest list and manifest is read once.
    let mut index = FileIndex::default();
    for snapshot in before.metadata().snapshots().chain(after.metadata().snapshots()) {
        index.add(&after, snapshot).await?;
    }
    let all = index.referenced(before.metadata().snapshots());
    let kept = index.referenced(after.metadata().snapshots());
    for (path, size) in all.data.iter().filter(|(path, _)| !kept.live_data.contains(path)) {
        if delete(&after, path).await {
            report.data_files_deleted += 1;
            report.bytes_deleted += size;
        }
    }
    for path in all.metadata.difference(&kept.metadata) {
        if delete(&after, path).await {
            report.manifests_deleted += 1;
        }
    }
    // The metadata log is oldest first; the current file is not in it.
    let log = after.metadata().metadata_log();
    for entry in log.iter().take(log.len().saturating_sub(METADATA_FILES_KEPT)) {
        if delete(&after, &entry.metadata_file).await {
            report.metadata_files_deleted += 1;
        }
    }
    Ok(report)
}

/// The snapshots to expire: older than the cutoff, not among the newest
/// `retain_last`, not the current one, not any writer's newest.
fn expirable(table: &Table, options: &ExpiryOptions) -> Vec<i64> {
    let metadata = table.metadata();
    let mut by_age: Vec<&SnapshotRef> = metadata.snapshots().collect();
    by_age.sort_by_key(|s| std::cmp::Reverse(s.sequence_number()));
    let mut keep: HashSet<i64> =
        by_age.iter().take(options.retain_last.max(1)).map(|s| s.snapshot_id()).collect();
    keep.extend(metadata.current_snapshot().map(|s| s.snapshot_id()));
    let mut writers = HashSet::new();
    for snapshot in &by_age {
        if let Some(writer) = snapshot.summary().additional_properties.get(&options.writer_key) {
            if writers.insert(writer.clone()) {
                keep.insert(snapshot.snapshot_id());
            }
        }
    }
    let cutoff = wall_clock_ms()
        .saturating_sub(i64::try_from(options.older_than.as_millis()).unwrap_or(i64::MAX));
    by_age
        .iter()
        .filter(|s| s.timestamp_ms() < cutoff && !keep.contains(&s.snapshot_id()))
        .map(|s| s.snapshot_id())
        .collect()
}

/// The files some snapshots use.
#[derive(Default)]
struct Referenced {
    /// Every data file a manifest names (live or deleted), with its size.
    data: Vec<(String, u64)>,
    /// Data files live in some snapshot.
    live_data: HashSet<String>,
    /// Manifest lists and manifests.
    metadata: HashSet<String>,
}

/// The manifest lists and manifests of snapshots, read once each.
#[derive(Default)]
struct FileIndex {
    /// Per snapshot id: its manifest list and the manifests in it.
    snapshots: HashMap<i64, (String, Vec<String>)>,
    /// Per data manifest: its entries' paths, sizes and liveness.
    manifests: HashMap<String, Vec<(String, u64, bool)>>,
}

impl FileIndex {
    async fn add(&mut self, table: &Table, snapshot: &SnapshotRef) -> Result<(), SinkError> {
        if self.snapshots.contains_key(&snapshot.snapshot_id()) {
            return Ok(());
        }
        let context = || format!("reading the manifests of {}", table.identifier());
        let list = table.manifest_list_reader(snapshot).load().await.context(context)?;
        let mut manifests = Vec::new();
        for manifest in list.entries() {
            manifests.push(manifest.manifest_path.clone());
            if manifest.content != ManifestContentType::Data
                || self.manifests.contains_key(&manifest.manifest_path)
            {
                continue;
            }
            let loaded = manifest.load_manifest(table.file_io()).await.context(context)?;
            let entries = loaded
                .entries()
                .iter()
                .map(|e| (e.file_path().to_owned(), e.file_size_in_bytes(), e.is_alive()))
                .collect();
            self.manifests.insert(manifest.manifest_path.clone(), entries);
        }
        let list_path = snapshot.manifest_list().to_owned();
        self.snapshots.insert(snapshot.snapshot_id(), (list_path, manifests));
        Ok(())
    }

    fn referenced<'a>(&self, snapshots: impl Iterator<Item = &'a SnapshotRef>) -> Referenced {
        let mut out = Referenced::default();
        let mut seen_data = HashSet::new();
        for snapshot in snapshots {
            let Some((list, manifests)) = self.snapshots.get(&snapshot.snapshot_id()) else {
                continue;
            };
            out.metadata.insert(list.clone());
            for manifest in manifests {
                if !out.metadata.insert(manifest.clone()) {
                    continue;
                }
                for (path, size, alive) in self.manifests.get(manifest).into_iter().flatten() {
                    if *alive {
                        out.live_data.insert(path.clone());
                    }
                    if seen_data.insert(path.clone()) {
                        out.data.push((path.clone(), *size));
                    }
                }
            }
        }
        out
    }
}

/// Deletes one file no snapshot uses; a failure leaves it for the next run.
async fn delete(table: &Table, path: &str) -> bool {
    match table.file_io().delete(path).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(path, %error, "could not delete an unreferenced file");
            false
        }
    }
}
