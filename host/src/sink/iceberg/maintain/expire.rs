//! Snapshot expiry, then removal of the files no remaining snapshot uses.
//!
//! iceberg-rust's `ExpireSnapshotsAction` drops snapshots from the metadata
//! and leaves the files; which snapshots go is chosen here, because the job's
//! recovery reads its last checkpoint from the newest snapshot carrying its
//! id, so that snapshot must stay whatever its age. The files are then found
//! by reachability (Iceberg's own expiry cleanup): every manifest list,
//! manifest and data file the expired snapshots used that no kept snapshot
//! uses any more. Files no snapshot ever referenced (a writer that crashed
//! between writing and committing) are found by listing the table's location
//! (with opendal, as iceberg-rust's FileIO cannot list) and go once older
//! than a safety age, by the store's clock (a maintainer whose own clock runs
//! days ahead would otherwise take a commit in flight for an orphan). The
//! files a consumer group resumes from (state chains, rules components) are
//! referenced by its newest snapshot, which expiry always keeps.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, UNIX_EPOCH};

use super::super::table_catalog::TableCatalog;
use futures::{stream, StreamExt, TryStreamExt};
use iceberg::spec::{ManifestContentType, SnapshotRef};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind, TableIdent};

use super::super::group::{named_files, GROUP_KEY};
use super::super::storage::Storage;
use super::super::{wall_clock_ms, IcebergContext};
use crate::sink::SinkError;

/// Commit races tried before expiry gives up on a table that keeps moving.
const MAX_ATTEMPTS: u32 = 20;

/// Manifest lists or manifests read at once.
const READS_IN_FLIGHT: usize = 16;

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
    /// Also delete files under the table that nothing references and that
    /// are older than this (younger ones may belong to a commit in flight).
    pub orphans_older_than: Option<Duration>,
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
    /// Files no snapshot or metadata file referenced, deleted.
    pub orphans_deleted: usize,
}

/// Expires `ident`'s snapshots per `options` and deletes what only they used.
pub(super) async fn expire(
    catalog: &TableCatalog,
    storage: &Storage,
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
    let mut snapshots: HashMap<i64, SnapshotRef> = HashMap::new();
    for snapshot in before.metadata().snapshots().chain(after.metadata().snapshots()) {
        snapshots.insert(snapshot.snapshot_id(), snapshot.clone());
    }
    let index = FileIndex::build(&after, snapshots.into_values().collect()).await?;
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
    let old_metadata = log.len().saturating_sub(METADATA_FILES_KEPT);
    for entry in &log[..old_metadata] {
        if delete(&after, &entry.metadata_file).await {
            report.metadata_files_deleted += 1;
        }
    }
    if let Some(age) = options.orphans_older_than {
        let mut referenced: HashSet<String> = kept.metadata;
        referenced.extend(named_files(&after).await?);
        referenced.extend(all.data.into_iter().chain(kept.data).map(|(path, _)| path));
        referenced.extend(log[old_metadata..].iter().map(|e| e.metadata_file.clone()));
        referenced.extend(after.metadata_location().map(str::to_owned));
        report.orphans_deleted = remove_orphans(storage, &after, &referenced, age).await?;
    }
    Ok(report)
}

/// Deletes the files under `table`'s location that are not `referenced` and
/// were last written before `age` ago: what a writer left when it died
/// between writing files and committing them, and metadata files that fell
/// out of the metadata log. Data files some snapshot names but that were not
/// deleted above stay referenced, so this never removes a readable file.
async fn remove_orphans(
    storage: &Storage,
    table: &Table,
    referenced: &HashSet<String>,
    age: Duration,
) -> Result<usize, SinkError> {
    let location = table.metadata().location().trim_end_matches('/');
    let now = storage.clock(location).await?;
    let cutoff = now.checked_sub(age).unwrap_or(UNIX_EPOCH);
    let mut deleted = 0;
    for (path, modified) in storage.list(location).await? {
        if modified < cutoff && !referenced.contains(&path) && delete(table, &path).await {
            tracing::info!(path, "deleted an orphan file");
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The snapshots to expire: older than the cutoff, not among the newest
/// `retain_last`, not the current one, not any writer's newest, not any
/// consumer group's newest. A group's members are writers that come and go
/// (a new id each start): the group's newest snapshot holds all of its
/// progress, so it is kept, not one per member that ever ran.
fn expirable(table: &Table, options: &ExpiryOptions) -> Vec<i64> {
    let metadata = table.metadata();
    let mut by_age: Vec<&SnapshotRef> = metadata.snapshots().collect();
    by_age.sort_by_key(|s| std::cmp::Reverse(s.sequence_number()));
    let mut keep: HashSet<i64> =
        by_age.iter().take(options.retain_last.max(1)).map(|s| s.snapshot_id()).collect();
    keep.extend(metadata.current_snapshot().map(|s| s.snapshot_id()));
    let mut writers = HashSet::new();
    for snapshot in &by_age {
        let props = &snapshot.summary().additional_properties;
        let writer = match props.get(GROUP_KEY) {
            Some(group) => Some((true, group)),
            None => props.get(&options.writer_key).map(|writer| (false, writer)),
        };
        if let Some((group, name)) = writer {
            if writers.insert((group, name.clone())) {
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
    /// Reads the manifest lists of `snapshots`, then every data manifest in
    /// them, [`READS_IN_FLIGHT`] at a time (each is a request to the store).
    async fn build(table: &Table, snapshots: Vec<SnapshotRef>) -> Result<Self, SinkError> {
        let context = || format!("reading the manifests of {}", table.identifier());
        let lists: Vec<_> = stream::iter(snapshots)
            .map(|snapshot| async move {
                let list = table.manifest_list_reader(&snapshot).load().await?;
                Ok::<_, iceberg::Error>((snapshot, list))
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect()
            .await
            .context(context)?;
        let mut index = FileIndex::default();
        let mut to_read = HashMap::new();
        for (snapshot, list) in &lists {
            let mut manifests = Vec::new();
            for manifest in list.entries() {
                manifests.push(manifest.manifest_path.clone());
                if manifest.content == ManifestContentType::Data {
                    to_read.entry(manifest.manifest_path.clone()).or_insert(manifest);
                }
            }
            let list_path = snapshot.manifest_list().to_owned();
            index.snapshots.insert(snapshot.snapshot_id(), (list_path, manifests));
        }
        index.manifests = stream::iter(to_read)
            .map(|(path, manifest)| async move {
                let loaded = manifest.load_manifest(table.file_io()).await?;
                let entries = loaded
                    .entries()
                    .iter()
                    .map(|e| (e.file_path().to_owned(), e.file_size_in_bytes(), e.is_alive()))
                    .collect::<Vec<_>>();
                Ok::<_, iceberg::Error>((path, entries))
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect()
            .await
            .context(context)?;
        Ok(index)
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
