//! Compaction: the small data files of a partition rewritten into files of a
//! target size and committed as one `replace` snapshot, so readers see every
//! row exactly once before and after.
//!
//! iceberg-rust 0.10 has no rewrite action, so this builds one from its
//! public parts: the scan planner and Arrow reader read the files, the sink's
//! writer writes the new ones, `ManifestWriter` and `ManifestListWriter` write
//! one manifest (new files added, old ones deleted, the rest of the manifests
//! it replaces kept as existing) and the list, `TableMetadataBuilder` the new
//! metadata, and [`MetadataPointer`] swaps it in. A lost race rebuilds only the
//! manifests on the new head (the job only appends, so the rewritten files
//! are still there) and swaps again.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use super::super::table_catalog::{newest_time, TableCatalog};
use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{
    DataFile, ManifestContentType, ManifestEntryRef, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, Struct, Summary, TableMetadataBuilder, MAIN_BRANCH,
};
use iceberg::table::Table;
use iceberg::{Catalog, MetadataLocation, TableIdent};

use super::super::pointer::MetadataPointer;
use super::super::writer::write_data_files;
use super::super::{wall_clock_ms, IcebergContext};
use crate::sink::SinkError;

/// Snapshot summary key marking a snapshot made by table maintenance.
pub const MAINTENANCE_KEY: &str = "sessionize.maintenance";

/// Manifests read at once (each is a request to the store).
const READS_IN_FLIGHT: usize = 16;

/// Swaps tried before compaction gives up on a table that keeps moving.
const MAX_SWAPS: u32 = 100;

/// The live entries of the manifests read so far, by path: manifests never
/// change, so a retry on a new head reads only the manifests committed since.
type ManifestCache = HashMap<String, Arc<Vec<ManifestEntryRef>>>;

/// What compaction rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOptions {
    /// Size the new files are cut at; files at least this large are left alone.
    pub target_file_bytes: u64,
    /// A partition is rewritten once it holds this many smaller files.
    pub min_input_files: usize,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        Self { target_file_bytes: 128 << 20, min_input_files: 5 }
    }
}

/// What one compaction of one table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The table.
    pub table: String,
    /// Partitions rewritten.
    pub partitions: usize,
    /// Data files replaced.
    pub files_removed: usize,
    /// Data files written in their place.
    pub files_added: usize,
    /// Rows rewritten.
    pub rows: u64,
    /// Bytes of the replaced files.
    pub bytes_removed: u64,
    /// Bytes of the new files.
    pub bytes_added: u64,
    /// Manifests before and after.
    pub manifests: (usize, usize),
    /// Swaps lost to concurrent commits before one won.
    pub lost_races: u32,
}

/// Compacts `ident`'s small files; a table with nothing to compact is left
/// as it is.
pub(super) async fn compact(
    catalog: &TableCatalog,
    ident: &TableIdent,
    options: CompactionOptions,
) -> Result<CompactionReport, SinkError> {
    let mut report = CompactionReport { table: ident.to_string(), ..Default::default() };
    let table = catalog.load_table(ident).await.context(|| format!("loading {ident}"))?;
    let Some(snapshot) = table.metadata().current_snapshot().cloned() else {
        return Ok(report);
    };
    let live = live_entries(&table, &snapshot).await?;
    let groups = small_files(&table, &live, options);
    if groups.is_empty() {
        return Ok(report);
    }
    let (replaced, added) =
        rewrite(&table, snapshot.snapshot_id(), &groups, options, &mut report).await?;
    let manifests: ManifestCache = live
        .iter()
        .map(|(manifest, entries)| (manifest.manifest_path.clone(), Arc::new(entries.clone())))
        .collect();
    commit(catalog, table, &replaced, &added, manifests, &mut report).await?;
    Ok(report)
}

/// The partitions worth compacting, with their files smaller than the target.
fn small_files<'a>(
    table: &Table,
    live: &'a [(ManifestFile, Vec<ManifestEntryRef>)],
    options: CompactionOptions,
) -> HashMap<&'a Struct, Vec<&'a DataFile>> {
    let default_spec = table.metadata().default_partition_spec_id();
    let mut groups: HashMap<&Struct, Vec<&DataFile>> = HashMap::new();
    for (manifest, entries) in live {
        if manifest.partition_spec_id != default_spec {
            continue;
        }
        for entry in entries {
            let file = entry.data_file();
            if file.file_size_in_bytes() < options.target_file_bytes {
                groups.entry(file.partition()).or_default().push(file);
            }
        }
    }
    groups.retain(|_, files| files.len() >= options.min_input_files.max(2));
    groups
}

/// Writes each group's rows into files of the target size; returns the
/// paths replaced and the files written. Nothing is committed yet.
async fn rewrite(
    table: &Table,
    snapshot_id: i64,
    groups: &HashMap<&Struct, Vec<&DataFile>>,
    options: CompactionOptions,
    report: &mut CompactionReport,
) -> Result<(HashSet<String>, Vec<DataFile>), SinkError> {
    let ident = table.identifier();
    let mut replaced: HashSet<String> = HashSet::new();
    let mut added = Vec::new();
    let prefix = format!("compacted-{}", uuid::Uuid::new_v4().simple());
    for files in groups.values() {
        let paths: HashSet<String> = files.iter().map(|f| f.file_path().to_owned()).collect();
        let batches = read_files(table, snapshot_id, &paths).await?;
        let target = usize::try_from(options.target_file_bytes).ok();
        let written = write_data_files(table, batches.into_iter().map(Ok), &prefix, target).await?;
        report.partitions += 1;
        report.files_removed += files.len();
        report.rows += files.iter().map(|f| f.record_count()).sum::<u64>();
        report.bytes_removed += files.iter().map(|f| f.file_size_in_bytes()).sum::<u64>();
        report.bytes_added += written.iter().map(|f| f.file_size_in_bytes()).sum::<u64>();
        let rows_written: u64 = written.iter().map(|f| f.record_count()).sum();
        let rows_read: u64 = files.iter().map(|f| f.record_count()).sum();
        if rows_written != rows_read {
            delete_all(table, added.iter().chain(&written).map(DataFile::file_path)).await;
            return Err(SinkError::Maintenance(format!(
                "compacting {ident}: read {rows_read} rows but wrote {rows_written}; nothing \
                 committed"
            )));
        }
        replaced.extend(paths);
        added.extend(written);
    }
    report.files_added = added.len();
    Ok((replaced, added))
}

/// Swaps the replace snapshot in, on the newest head, until it wins or
/// cannot.
async fn commit(
    catalog: &TableCatalog,
    mut table: Table,
    replaced: &HashSet<String>,
    added: &[DataFile],
    mut manifests: ManifestCache,
    report: &mut CompactionReport,
) -> Result<(), SinkError> {
    let ident = table.identifier().clone();
    loop {
        let attempt = std::time::Instant::now();
        let outcome = swap_in(catalog.pointer(), &table, replaced, added, &mut manifests, report);
        let outcome = outcome.await?;
        tracing::debug!(table = %ident, took = ?attempt.elapsed(), "compaction swap attempt");
        let why = match outcome {
            Swap::Done => return Ok(()),
            Swap::InputsGone => "another writer replaced some of the same files meanwhile; \
                                 nothing committed (run maintenance from one place at a time)"
                .to_owned(),
            Swap::Lost if report.lost_races + 1 >= MAX_SWAPS => {
                format!("lost {MAX_SWAPS} commit races in a row; nothing committed")
            }
            Swap::Lost => {
                report.lost_races += 1;
                // Jitter, so as not to keep meeting a writer's commits in step.
                let pause = rand::random::<u64>() % 50;
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                table = catalog.load_table(&ident).await.context(|| format!("loading {ident}"))?;
                continue;
            }
        };
        delete_all(&table, added.iter().map(DataFile::file_path)).await;
        return Err(SinkError::Maintenance(format!("compacting {ident}: {why}")));
    }
}

/// The outcome of one attempt at the swap.
enum Swap {
    Done,
    Lost,
    InputsGone,
}

/// Builds the replace snapshot on `table`'s head and swaps it in.
async fn swap_in(
    pointer: &MetadataPointer,
    table: &Table,
    replaced: &HashSet<String>,
    added: &[DataFile],
    manifests: &mut ManifestCache,
    report: &mut CompactionReport,
) -> Result<Swap, SinkError> {
    let ident = table.identifier();
    let context = || format!("committing the compaction of {ident}");
    let metadata = table.metadata();
    let Some(head) = metadata.current_snapshot().cloned() else { return Ok(Swap::InputsGone) };
    let current_location = table.metadata_location_result().context(context)?.to_owned();
    let list = table.manifest_list_reader(&head).load().await.context(context)?;
    let io = table.file_io();
    let snapshot_id = new_snapshot_id(table);
    let location = metadata.location().trim_end_matches('/').to_owned();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let replacing = Replacing { table, snapshot_id, replaced, added, token: &token };
    let Some((merged, kept)) = merge_manifests(&replacing, list.entries(), manifests).await? else {
        return Ok(Swap::InputsGone);
    };
    let manifest_path = merged.manifest_path.clone();
    report.manifests = (list.entries().len(), kept.len() + 1);

    let list_path = format!("{location}/metadata/snap-{snapshot_id}-0-{token}.avro");
    let mut list_writer = ManifestListWriter::v2(
        io.new_output(&list_path).context(context)?.writer().await.context(context)?,
        snapshot_id,
        Some(head.snapshot_id()),
        metadata.next_sequence_number(),
    );
    list_writer.add_manifests(kept.into_iter().chain([merged])).context(context)?;
    list_writer.close().await.context(context)?;

    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(head.snapshot_id()))
        .with_sequence_number(metadata.next_sequence_number())
        .with_timestamp_ms(wall_clock_ms().max(newest_time(metadata)))
        .with_manifest_list(list_path.clone())
        .with_summary(replace_summary(&head, report))
        .with_schema_id(metadata.current_schema_id())
        .build();
    let new_metadata =
        TableMetadataBuilder::new_from_metadata(metadata.clone(), Some(current_location.clone()))
            .set_branch_snapshot(snapshot, MAIN_BRANCH)
            .context(context)?
            .build()
            .context(context)?
            .metadata;
    let new_location = MetadataLocation::from_str(&current_location)
        .context(context)?
        .with_next_version()
        .with_new_metadata(&new_metadata);
    new_metadata.write_to(io, &new_location).await.context(context)?;

    let new_location = new_location.to_string();
    if pointer.swap(ident, &current_location, &new_location).await? {
        tracing::info!(
            table = %ident,
            files_removed = report.files_removed,
            files_added = report.files_added,
            "compaction committed"
        );
        return Ok(Swap::Done);
    }
    delete_all(table, [new_location.as_str(), list_path.as_str(), manifest_path.as_str()]).await;
    Ok(Swap::Lost)
}

/// One replace snapshot in the making.
struct Replacing<'a> {
    table: &'a Table,
    snapshot_id: i64,
    replaced: &'a HashSet<String>,
    added: &'a [DataFile],
    /// Names this attempt's files.
    token: &'a str,
}

/// Merges every manifest of `list` that holds a replaced file into one new
/// manifest (the replaced files deleted, the others kept, the new ones
/// added), and returns it with the manifests left as they are; none if some
/// replaced file is no longer live.
async fn merge_manifests(
    replacing: &Replacing<'_>,
    list: &[ManifestFile],
    manifests: &mut ManifestCache,
) -> Result<Option<(ManifestFile, Vec<ManifestFile>)>, SinkError> {
    let Replacing { table, snapshot_id, replaced, added, token } = replacing;
    let context = || format!("committing the compaction of {}", table.identifier());
    let metadata = table.metadata();
    let io = table.file_io();
    let location = metadata.location().trim_end_matches('/');
    let manifest_path = format!("{location}/metadata/{token}-m0.avro");
    let mut writer = ManifestWriterBuilder::new(
        io.new_output(&manifest_path).context(context)?,
        Some(*snapshot_id),
        metadata.current_schema().clone(),
        metadata.default_partition_spec().as_ref().clone(),
    )
    .build_v2_data();
    let mut kept = Vec::new();
    let mut found = 0;
    for manifest in list {
        let merged = manifest.content == ManifestContentType::Data
            && manifest.partition_spec_id == metadata.default_partition_spec_id();
        let live = match merged {
            true => live_of(table, manifest, manifests).await?,
            false => Arc::new(Vec::new()),
        };
        let hits = live.iter().filter(|e| replaced.contains(e.file_path())).count();
        if hits == 0 {
            kept.push(manifest.clone());
            continue;
        }
        found += hits;
        for entry in live.iter() {
            let file = entry.data_file().clone();
            let seq = entry.sequence_number().unwrap_or(0);
            let file_seq = entry.file_sequence_number.or(Some(seq));
            if replaced.contains(entry.file_path()) {
                writer.add_delete_file(file, seq, file_seq).context(context)?;
            } else {
                let id = entry.snapshot_id().unwrap_or(manifest.added_snapshot_id);
                writer.add_existing_file(file, id, seq, file_seq).context(context)?;
            }
        }
    }
    if found != replaced.len() {
        return Ok(None);
    }
    for file in added.iter() {
        writer.add_file(file.clone(), metadata.next_sequence_number()).context(context)?;
    }
    let merged = writer.write_manifest_file().await.context(context)?;
    Ok(Some((merged, kept)))
}

/// The live entries of `manifest`, read once per compaction.
async fn live_of(
    table: &Table,
    manifest: &ManifestFile,
    manifests: &mut ManifestCache,
) -> Result<Arc<Vec<ManifestEntryRef>>, SinkError> {
    if let Some(live) = manifests.get(&manifest.manifest_path) {
        return Ok(live.clone());
    }
    let context = || format!("reading the manifests of {}", table.identifier());
    let loaded = manifest.load_manifest(table.file_io()).await.context(context)?;
    let live: Vec<ManifestEntryRef> =
        loaded.entries().iter().filter(|e| e.is_alive()).cloned().collect();
    let live = Arc::new(live);
    manifests.insert(manifest.manifest_path.clone(), live.clone());
    Ok(live)
}

/// The live data files of `snapshot`, by manifest.
pub(super) async fn live_entries(
    table: &Table,
    snapshot: &iceberg::spec::SnapshotRef,
) -> Result<Vec<(ManifestFile, Vec<ManifestEntryRef>)>, SinkError> {
    let context = || format!("reading the manifests of {}", table.identifier());
    let list = table.manifest_list_reader(snapshot).load().await.context(context)?;
    let data = list.entries().iter().filter(|m| m.content == ManifestContentType::Data);
    futures::stream::iter(data)
        .map(|manifest| async move {
            let loaded = manifest.load_manifest(table.file_io()).await?;
            let live = loaded.entries().iter().filter(|e| e.is_alive()).cloned().collect();
            Ok::<_, iceberg::Error>((manifest.clone(), live))
        })
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await
        .context(context)
}

/// Every row of the files at `paths`, as of `snapshot_id`.
async fn read_files(
    table: &Table,
    snapshot_id: i64,
    paths: &HashSet<String>,
) -> Result<Vec<arrow_array::RecordBatch>, SinkError> {
    let context = || format!("reading the files to compact in {}", table.identifier());
    let scan = table.scan().snapshot_id(snapshot_id).build().context(context)?;
    let tasks: Vec<_> = scan
        .plan_files()
        .await
        .context(context)?
        .try_filter(|task| futures::future::ready(paths.contains(&task.data_file_path)))
        .try_collect()
        .await
        .context(context)?;
    let stream = futures::stream::iter(tasks.into_iter().map(Ok)).boxed();
    let batches = table.reader_builder().build().read(stream).context(context)?.stream();
    batches.try_collect().await.context(context)
}

fn replace_summary(head: &Snapshot, report: &CompactionReport) -> Summary {
    let previous = &head.summary().additional_properties;
    let mut properties = HashMap::from([
        (MAINTENANCE_KEY.to_owned(), "compaction".to_owned()),
        ("added-data-files".to_owned(), report.files_added.to_string()),
        ("deleted-data-files".to_owned(), report.files_removed.to_string()),
        ("added-records".to_owned(), report.rows.to_string()),
        ("deleted-records".to_owned(), report.rows.to_string()),
        ("added-files-size".to_owned(), report.bytes_added.to_string()),
        ("removed-files-size".to_owned(), report.bytes_removed.to_string()),
        ("changed-partition-count".to_owned(), report.partitions.to_string()),
    ]);
    let total = |key: &str| previous.get(key).and_then(|v| v.parse::<i128>().ok());
    if let Some(records) = total("total-records") {
        properties.insert("total-records".to_owned(), records.to_string());
    }
    if let Some(files) = total("total-data-files") {
        let files = files - report.files_removed as i128 + report.files_added as i128;
        properties.insert("total-data-files".to_owned(), files.to_string());
    }
    if let Some(size) = total("total-files-size") {
        let size = size - i128::from(report.bytes_removed) + i128::from(report.bytes_added);
        properties.insert("total-files-size".to_owned(), size.to_string());
    }
    Summary { operation: Operation::Replace, additional_properties: properties }
}

/// A positive id no snapshot of `table` has.
fn new_snapshot_id(table: &Table) -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// Deletes files this run wrote but did not commit; a failure only leaves an
/// unreferenced file behind, so it is logged, not returned.
pub(super) async fn delete_all<'a>(table: &Table, paths: impl IntoIterator<Item = &'a str>) {
    for path in paths {
        if let Err(error) = table.file_io().delete(path).await {
            tracing::warn!(path, %error, "could not delete an uncommitted file");
        }
    }
}
