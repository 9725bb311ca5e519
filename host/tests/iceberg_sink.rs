//! End-to-end tests of the Iceberg sink: write through `IcebergSink`, read back with
//! iceberg-rust's own scan, and check the layout on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, Date32Array, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
};
use futures::TryStreamExt;
use iceberg::table::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use rand::{Rng, SeedableRng};
use sessionize::sink::iceberg::{
    user_hash_bucket, user_hash_bucket_of, IcebergSink, SinkConfig, EARLIEST_SESSION_MS,
    LATEST_SESSION_MS, MAX_BATCH_TEXT_BYTES, PROP_SESSION_ROWS,
};
use sessionize::sink::Sink;
use sessionize::sink::{RejectedEvent, SessionRow, SinkError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DAY_MS: i64 = 86_400_000;
/// 2024-03-01T00:00:00Z.
const MARCH_1_MS: i64 = 1_709_251_200_000;
/// Days from the epoch to 2024-03-01.
const MARCH_1_DAYS: i32 = 19_783;

/// Murmur3 x86 32-bit, written out from the reference algorithm so the test does not
/// trust the implementation under test.
fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, byte) in tail.iter().enumerate() {
            k |= u32::from(*byte) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The Iceberg spec's bucket function: `(murmur3_x86_32(utf8) & i32::MAX) % n`.
fn spec_bucket(value: &str, n: i32) -> i32 {
    (murmur3_x86_32(value.as_bytes(), 0) as i32 & i32::MAX) % n
}

fn session(uuid: &str, id: &str, start_ms: i64, duration_ms: i64, pages: &[&str]) -> SessionRow {
    SessionRow {
        uuid: uuid.to_string(),
        session_id: id.to_string(),
        start_ms,
        end_ms: start_ms + duration_ms,
        event_count: pages.len() as u32 + 1,
        pages: pages.iter().map(|p| Arc::<str>::from(*p)).collect(),
        end_reason: "inactivity".to_string(),
        rule_version: Arc::from("default-rules@1.0.0#abc"),
        attributes: Vec::new(),
    }
}

/// The property by which the tests' writer finds its own commits.
const JOB: (&str, &str) = ("sessionize.job-id", "test-job");

fn properties(checkpoint: &str) -> HashMap<String, String> {
    HashMap::from([
        ("sessionize.checkpoint-id".to_string(), checkpoint.to_string()),
        ("sessionize.offsets.clicks.0".to_string(), "42".to_string()),
        (JOB.0.to_string(), JOB.1.to_string()),
    ])
}

async fn scan(table: &Table) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
    let stream = table.scan().build()?.to_arrow().await?;
    Ok(stream.try_collect().await?)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    let Some(array) = batch.column_by_name(name) else { panic!("column {name} missing") };
    match array.as_any().downcast_ref::<T>() {
        Some(typed) => typed,
        None => panic!("column {name} has type {}", array.data_type()),
    }
}

/// One scanned session, keyed by session id in the tests.
#[derive(Debug, Clone, PartialEq)]
struct ReadSession {
    uuid: String,
    start_ms: i64,
    end_ms: i64,
    duration_s: f64,
    event_count: i32,
    pages: Vec<String>,
    date: i32,
    bucket: i32,
    end_reason: String,
    rule_version: String,
}

fn read_sessions(batches: &[RecordBatch]) -> BTreeMap<String, ReadSession> {
    let mut out = BTreeMap::new();
    for batch in batches {
        let pages = column::<ListArray>(batch, "pages_visited");
        for i in 0..batch.num_rows() {
            let page_list = pages.value(i);
            let Some(page_values) = page_list.as_any().downcast_ref::<StringArray>() else {
                panic!("pages_visited elements have type {}", page_list.data_type())
            };
            let row = ReadSession {
                uuid: column::<StringArray>(batch, "uuid").value(i).to_string(),
                start_ms: column::<Int64Array>(batch, "session_start_time_ms").value(i),
                end_ms: column::<Int64Array>(batch, "session_end_time_ms").value(i),
                duration_s: column::<Float64Array>(batch, "session_duration_seconds").value(i),
                event_count: column::<Int32Array>(batch, "event_count").value(i),
                pages: page_values.iter().map(|p| p.unwrap_or_default().to_string()).collect(),
                date: column::<Date32Array>(batch, "session_date").value(i),
                bucket: column::<Int32Array>(batch, "user_hash_bucket").value(i),
                end_reason: column::<StringArray>(batch, "end_reason").value(i).to_string(),
                rule_version: column::<StringArray>(batch, "rule_version").value(i).to_string(),
            };
            let id = column::<StringArray>(batch, "session_id").value(i).to_string();
            assert!(out.insert(id.clone(), row).is_none(), "session {id} read twice");
        }
    }
    out
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn independent_murmur3_matches_the_spec_vector() {
    // Iceberg spec, Appendix B: hash of the string "iceberg".
    assert_eq!(murmur3_x86_32(b"iceberg", 0) as i32, 1_210_000_089);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_hash_bucket_follows_the_spec() -> TestResult {
    let ids = ["iceberg", "u-1", "2f1c7d3e-0b8a-4c55-9e31-6a0d6a1b2c3d", ""];
    let buckets = user_hash_bucket(&StringArray::from(ids.to_vec()))?;
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(buckets.value(i), spec_bucket(id, 100), "bucket of {id:?}");
        assert_eq!(user_hash_bucket_of(id)?, spec_bucket(id, 100));
    }
    let with_null = user_hash_bucket(&StringArray::from(vec![Some("a"), None]))?;
    assert!(with_null.is_null(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_round_trips_and_reopen_reuses_tables() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Set SESSIONIZE_KEEP_WAREHOUSE to a fresh path to keep the warehouse for inspection
    // with another reader (pyiceberg, DuckDB).
    let warehouse = match std::env::var_os("SESSIONIZE_KEEP_WAREHOUSE") {
        Some(path) => PathBuf::from(path),
        None => dir.path().join("warehouse"),
    };
    let config = SinkConfig::new(&warehouse);

    let mut sink = IcebergSink::open(&config).await?;
    assert_eq!(
        sink.last_commit_properties(JOB.0, JOB.1).await?,
        None,
        "fresh table has no snapshot"
    );

    let known_uuid = "2f1c7d3e-0b8a-4c55-9e31-6a0d6a1b2c3d";
    let mut sessions = vec![
        session(known_uuid, "s-known", MARCH_1_MS + 3_600_000, 90_500, &["/home", "/cart"]),
        // Starts one millisecond before midnight: belongs to March 1st.
        session("user-b", "s-late", MARCH_1_MS + DAY_MS - 1, 2_000, &["/a"]),
        session("user-c", "s-next-day", MARCH_1_MS + DAY_MS + 10, 0, &[]),
    ];
    // Spread over many buckets on both days.
    for i in 0..40 {
        let start = MARCH_1_MS + (i % 2) * DAY_MS + i * 1_000;
        sessions.push(session(&format!("user-{i}"), &format!("s-{i}"), start, 1_500, &["/x"]));
    }
    let rejected = vec![RejectedEvent {
        raw: "{not json".to_string(),
        reason: "invalid JSON".to_string(),
        source: "kafka:clicks".to_string(),
        partition: 3,
        position: 1234,
    }];

    let before_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let stats = sink.commit(&sessions, &rejected, properties("cp-1")).await?;
    assert!(stats.session_files >= 2, "two dates need at least two files: {stats:?}");
    assert!(stats.session_files <= 20, "at most 10 bucket groups per day: {stats:?}");
    assert_eq!(stats.rejected_files, 1);

    // Sessions, read back with iceberg-rust's scan.
    let read = read_sessions(&scan(sink.sessions_table()).await?);
    assert_eq!(read.len(), sessions.len());
    let known = &read["s-known"];
    assert_eq!(
        known,
        &ReadSession {
            uuid: known_uuid.to_string(),
            start_ms: MARCH_1_MS + 3_600_000,
            end_ms: MARCH_1_MS + 3_600_000 + 90_500,
            duration_s: 90.5,
            event_count: 3,
            pages: vec!["/home".to_string(), "/cart".to_string()],
            date: MARCH_1_DAYS,
            bucket: spec_bucket(known_uuid, 100),
            end_reason: "inactivity".to_string(),
            rule_version: "default-rules@1.0.0#abc".to_string(),
        }
    );
    assert_eq!(read["s-late"].date, MARCH_1_DAYS);
    assert_eq!(read["s-late"].duration_s, 2.0);
    assert_eq!(read["s-next-day"].date, MARCH_1_DAYS + 1);
    assert_eq!(read["s-next-day"].pages, Vec::<String>::new());
    assert_eq!(read["s-next-day"].duration_s, 0.0);
    for (id, row) in &read {
        assert_eq!(row.bucket, spec_bucket(&row.uuid, 100), "bucket of session {id}");
        assert_eq!(i64::from(row.date), row.start_ms.div_euclid(DAY_MS), "date of {id}");
    }
    let buckets: std::collections::BTreeSet<i32> = read.values().map(|r| r.bucket / 10).collect();
    assert!(buckets.len() >= 3, "test data should cover several bucket groups: {buckets:?}");

    // Rejected events.
    let rejected_batches = scan(sink.rejected_table()).await?;
    assert_eq!(rejected_batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    let batch = &rejected_batches[0];
    assert_eq!(column::<StringArray>(batch, "raw").value(0), "{not json");
    assert_eq!(column::<StringArray>(batch, "reason").value(0), "invalid JSON");
    assert_eq!(column::<StringArray>(batch, "source").value(0), "kafka:clicks");
    assert_eq!(column::<Int32Array>(batch, "partition").value(0), 3);
    assert_eq!(column::<Int64Array>(batch, "position").value(0), 1234);
    let rejected_at = column::<Int64Array>(batch, "rejected_at_ms").value(0);
    assert!(rejected_at >= before_ms.as_millis() as i64, "rejected_at_ms {rejected_at}");

    // Snapshot properties.
    let props =
        sink.last_commit_properties(JOB.0, JOB.1).await?.ok_or("no snapshot after commit")?;
    assert_eq!(props.get("sessionize.checkpoint-id").map(String::as_str), Some("cp-1"));
    assert_eq!(props.get("sessionize.offsets.clicks.0").map(String::as_str), Some("42"));
    assert_eq!(props.get(PROP_SESSION_ROWS), Some(&sessions.len().to_string()));
    let rejected_props =
        sink.last_rejected_commit_properties(JOB.0, JOB.1).await?.ok_or("no rejected snapshot")?;
    assert_eq!(rejected_props.get("sessionize.checkpoint-id").map(String::as_str), Some("cp-1"));

    // An empty commit still records its checkpoint; the rejected table is left alone.
    let rejected_snapshots = sink.rejected_table().metadata().snapshots().len();
    let stats = sink.commit(&[], &[], properties("cp-2")).await?;
    assert_eq!((stats.session_files, stats.rejected_files), (0, 0));
    let props = sink.last_commit_properties(JOB.0, JOB.1).await?.ok_or("no snapshot")?;
    assert_eq!(props.get("sessionize.checkpoint-id").map(String::as_str), Some("cp-2"));
    assert_eq!(sink.sessions_table().metadata().snapshots().len(), 2);
    assert_eq!(sink.last_rejected_commit_properties(JOB.0, JOB.1).await?, Some(rejected_props));
    assert_eq!(sink.rejected_table().metadata().snapshots().len(), rejected_snapshots);

    // Even with no caller properties the sink's own keys make the empty append valid.
    sink.commit(&[], &[], HashMap::new()).await?;
    assert_eq!(sink.sessions_table().metadata().snapshots().len(), 3);
    sink.commit(&[], &[], properties("cp-3")).await?;

    // Layout on disk: partition directories, ZSTD, rows clustered inside each file.
    let data_dir = warehouse.canonicalize()?.join("sessions/user_sessions/data");
    let files = parquet_files(&data_dir);
    assert_eq!(files.len(), stats_files(&sink));
    for file in &files {
        let relative = file.strip_prefix(&data_dir)?.to_string_lossy().to_string();
        assert!(
            relative.starts_with("session_date=2024-03-0")
                && relative.contains("/user_hash_bucket_trunc="),
            "unexpected data file path {relative}"
        );
        assert_clustered(file)?;
        let reader = SerializedFileReader::new(std::fs::File::open(file)?)?;
        for row_group in reader.metadata().row_groups() {
            for chunk in row_group.columns() {
                assert!(
                    matches!(chunk.compression(), Compression::ZSTD(_)),
                    "{relative}: column {} is {:?}",
                    chunk.column_path(),
                    chunk.compression()
                );
            }
        }
    }
    assert!(warehouse.join("catalog.db").is_file());

    let sessions_uuid = sink.sessions_table().metadata().uuid();
    let rejected_uuid = sink.rejected_table().metadata().uuid();
    drop(sink);

    // A second open of the same warehouse finds the same tables and data.
    let mut reopened = IcebergSink::open(&config).await?;
    assert_eq!(reopened.sessions_table().metadata().uuid(), sessions_uuid);
    assert_eq!(reopened.rejected_table().metadata().uuid(), rejected_uuid);
    let props =
        reopened.last_commit_properties(JOB.0, JOB.1).await?.ok_or("snapshot lost on reopen")?;
    assert_eq!(props.get("sessionize.checkpoint-id").map(String::as_str), Some("cp-3"));
    assert_eq!(read_sessions(&scan(reopened.sessions_table()).await?), read);

    // And keeps appending to them.
    let more = [session("user-z", "s-after-reopen", MARCH_1_MS + 5, 1_000, &["/z"])];
    reopened.commit(&more, &[], properties("cp-4")).await?;
    let read = read_sessions(&scan(reopened.sessions_table()).await?);
    assert_eq!(read.len(), sessions.len() + 1);
    assert!(read.contains_key("s-after-reopen"));
    Ok(())
}

/// Rows inside a data file are sorted by (bucket, uuid, start); the date is constant per
/// file because it is a partition column.
fn assert_clustered(file: &Path) -> TestResult {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file)?)?.build()?;
    let mut keys = Vec::new();
    for batch in reader {
        let batch = batch?;
        for i in 0..batch.num_rows() {
            keys.push((
                column::<Date32Array>(&batch, "session_date").value(i),
                column::<Int32Array>(&batch, "user_hash_bucket").value(i),
                column::<StringArray>(&batch, "uuid").value(i).to_string(),
                column::<Int64Array>(&batch, "session_start_time_ms").value(i),
            ));
        }
    }
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{} is not sorted: {keys:?}", file.display());
    assert!(keys.windows(2).all(|w| w[0].0 == w[1].0), "{} mixes dates", file.display());
    Ok(())
}

/// Data files the sessions table currently references, from its snapshot summary.
fn stats_files(sink: &IcebergSink) -> usize {
    sink.sessions_table()
        .metadata()
        .current_snapshot()
        .and_then(|s| s.summary().additional_properties.get("total-data-files").cloned())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn random_sessions(rng: &mut impl Rng, count: usize, days: i64) -> Vec<SessionRow> {
    (0..count)
        .map(|i| {
            let uuid = uuid::Builder::from_random_bytes(rng.random()).into_uuid().to_string();
            let start = MARCH_1_MS + rng.random_range(0..days * DAY_MS);
            let duration = rng.random_range(0..1_800_000);
            session(&uuid, &format!("r-{i}"), start, duration, &["/home", "/product/1", "/cart"])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_per_commit_for_ten_thousand_sessions_over_three_days() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path())).await?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);

    let mut per_commit = Vec::new();
    for (commit, count) in [10_000usize, 10_000, 1_000, 100].into_iter().enumerate() {
        let sessions = random_sessions(&mut rng, count, 3);
        let started = std::time::Instant::now();
        let stats = sink.commit(&sessions, &[], properties(&format!("cp-{commit}"))).await?;
        let elapsed = started.elapsed();
        eprintln!(
            "commit {commit}: {count} sessions over 3 days -> {} data files in {elapsed:?}",
            stats.session_files
        );
        per_commit.push((count, stats.session_files));
        assert!(stats.session_files <= 30, "3 days x 10 bucket groups: {stats:?}");
    }
    // With 10,000 random users every day sees every bucket group.
    assert_eq!(per_commit[0], (10_000, 30));

    let rows: usize = scan(sink.sessions_table()).await?.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 21_100);
    Ok(())
}

/// Two writers of one table committing at the same moments (a bounded run
/// beside a streaming job): one swaps the catalog's pointer between the
/// other's read of it and its own swap. Appends commute, so the loser goes
/// through on the table as it is now, and every writer's rows are there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_committing_at_once_both_commit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SinkConfig::new(dir.path());
    let mut writers = Vec::new();
    for writer in ["a", "b"] {
        let mut sink = IcebergSink::open(&config).await?;
        writers.push(tokio::spawn(async move {
            for n in 0..25 {
                let row =
                    session(writer, &format!("{writer}-{n}"), 1_700_000_000_000, 1000, &["x"]);
                sink.commit(&[row], &[], properties(&n.to_string())).await?;
            }
            Ok::<_, SinkError>(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let reread = IcebergSink::open(&config).await?;
    assert_eq!(read_sessions(&scan(reread.sessions_table()).await?).len(), 50);
    Ok(())
}

/// A session the checkpoint did not check first (in the year 262,200, past
/// what iceberg-rust's date partitioning can format) is an error of the
/// commit, not a panic of the thread that commits.
#[tokio::test]
async fn a_commit_refuses_an_unwritable_session_without_panicking() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path())).await?;
    let far = session("u", "far", 8_212_000_000_000_000, 1000, &["home"]);
    let commit = tokio::spawn(async move { sink.commit(&[far], &[], properties("1")).await });
    let outcome = commit.await.map_err(|panic| format!("the commit panicked: {panic}"))?;
    let error = outcome.err().ok_or("the commit succeeded")?;
    assert!(error.to_string().contains("far"), "{error}");
    Ok(())
}

/// What the sink says it can store, it stores: the first and last millisecond
/// of the years 1 to 9999 and the largest count round-trip; one step beyond
/// each is refused, and so is more text than a batch holds.
#[tokio::test]
async fn the_sink_stores_exactly_the_rows_its_check_accepts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path())).await?;
    let mut first = session("u1", "first", EARLIEST_SESSION_MS, 0, &["home"]);
    first.event_count = i32::MAX as u32;
    let last = session("u2", "last", LATEST_SESSION_MS, 0, &["home"]);
    for row in [&first, &last] {
        sink.check_session(row)?;
    }
    sink.commit(&[first.clone(), last.clone()], &[], properties("1")).await?;
    let read = read_sessions(&scan(sink.sessions_table()).await?);
    assert_eq!((read["first"].start_ms, read["first"].event_count), (first.start_ms, i32::MAX));
    assert_eq!(read["first"].date, -719_162);
    assert_eq!((read["last"].start_ms, read["last"].date), (LATEST_SESSION_MS, 2_932_896));

    let mut before = first.clone();
    before.start_ms -= 1;
    let mut after = last.clone();
    after.end_ms += 1;
    let mut counted = last.clone();
    counted.event_count = i32::MAX as u32 + 1;
    // Text is counted, not copied: one page shared by every entry.
    let page: Arc<str> = Arc::from("p".repeat(1 << 20));
    let mut wordy = last.clone();
    wordy.pages = vec![page; MAX_BATCH_TEXT_BYTES / (1 << 20) + 1];
    for (row, expected) in [
        (&before, "start time"),
        (&after, "end time"),
        (&counted, "event_count 2147483648"),
        (&wordy, "bytes of text"),
    ] {
        let refused = sink.check_session(row).err().ok_or(expected)?;
        assert!(refused.to_string().contains(expected), "{refused}");
    }
    Ok(())
}

/// One commit with more page text than an Arrow string array can address
/// (2 GiB) is written in several batches, not a panic of the commit.
#[tokio::test]
async fn a_commit_with_more_text_than_one_arrow_array_holds_is_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path())).await?;
    let page: Arc<str> = Arc::from("0123456789abcdef".repeat(1 << 16));
    let sessions: Vec<SessionRow> = (0..2100)
        .map(|i| {
            let mut row = session(&format!("user-{i}"), &format!("s{i}"), MARCH_1_MS, 1000, &[]);
            row.pages = vec![page.clone()];
            row
        })
        .collect();
    let commit = tokio::spawn(async move {
        sink.commit(&sessions, &[], properties("1")).await?;
        Ok::<_, SinkError>(sink)
    });
    let sink = commit.await.map_err(|panic| format!("the commit panicked: {panic}"))??;
    let snapshot = sink.sessions_table().metadata().current_snapshot().ok_or("no snapshot")?;
    assert_eq!(
        snapshot.summary().additional_properties.get("added-records").map(String::as_str),
        Some("2100")
    );
    Ok(())
}
