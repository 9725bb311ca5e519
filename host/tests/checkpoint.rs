//! The checkpoint protocol at each crash point, deterministically: a crash after
//! the state write, and a crash after the Iceberg commit, both recover to
//! exactly one copy of every session.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use default_rules::DefaultRules;
use futures::TryStreamExt;
use sessionize::checkpoint::{Checkpointer, CHECKPOINT_ID_KEY, JOB_ID_KEY};
use sessionize::engine::{Engine, EngineChanges, EngineConfig};
use sessionize::event::Event;
use sessionize::rules::contract::Settings;
use sessionize::sink::iceberg::{IcebergSink, SinkConfig};
use sessionize::sink::SessionRow;
use sessionize::sink::Sink;
use sessionize::source::generate::{generate, GeneratorConfig};
use sessionize::state::{CheckpointRecord, StagedOutput, StateStore};
use sessionize_native::NativeRules;

fn row(uuid: &str, start_ms: i64) -> SessionRow {
    SessionRow {
        uuid: uuid.into(),
        session_id: sessionize::engine::session_id(uuid, start_ms),
        start_ms,
        end_ms: start_ms + 1000,
        event_count: 2,
        pages: vec![Arc::from("home")],
        end_reason: "inactivity".into(),
        rule_version: Arc::from("test@1"),
        attributes: Vec::new(),
    }
}

async fn rows_in(sink: &IcebergSink) -> usize {
    let batches: Vec<_> = sink
        .sessions_table()
        .scan()
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

fn staged_checkpoint(store: &StateStore) -> (CheckpointRecord, StagedOutput) {
    let record = CheckpointRecord {
        id: 1,
        offsets: BTreeMap::from([(0, 10)]),
        rule_version: "test@1".into(),
        ..Default::default()
    };
    let output = StagedOutput {
        sessions: vec![row("a", 0), row("b", 5)],
        rejected: vec![],
        columns: vec![],
    };
    store.write_checkpoint(&EngineChanges::default(), &record, &output).unwrap();
    (record, output)
}

#[tokio::test]
async fn a_crash_after_the_state_write_publishes_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path().join("wh"))).await.unwrap();
    let store = StateStore::open(&dir.path().join("state")).unwrap();
    staged_checkpoint(&store);
    // Crash: nothing reached Iceberg. Recovery publishes the staged output...
    let (_, resumed) =
        Checkpointer::recover(store, &mut sink, EngineConfig::default()).await.unwrap();
    assert_eq!(resumed.checkpoint_id, 1);
    assert_eq!(resumed.offsets, BTreeMap::from([(0, 10)]));
    assert_eq!(rows_in(&sink).await, 2);
    // ...once: a second recovery finds nothing staged.
    let store = StateStore::open(&dir.path().join("state")).unwrap();
    Checkpointer::recover(store, &mut sink, EngineConfig::default()).await.unwrap();
    assert_eq!(rows_in(&sink).await, 2);
}

#[tokio::test]
async fn a_crash_after_the_iceberg_commit_does_not_write_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path().join("wh"))).await.unwrap();
    let store = StateStore::open(&dir.path().join("state")).unwrap();
    let job_id = store.job_id().unwrap();
    let (_, output) = staged_checkpoint(&store);
    // The commit went through, then the process died before dropping the staged copy.
    let props = HashMap::from([
        (CHECKPOINT_ID_KEY.to_owned(), "1".to_owned()),
        (JOB_ID_KEY.to_owned(), job_id),
    ]);
    sink.commit(&output.sessions, &[], props).await.unwrap();
    Checkpointer::recover(store, &mut sink, EngineConfig::default()).await.unwrap();
    assert_eq!(rows_in(&sink).await, 2);
}

#[tokio::test]
async fn another_jobs_commits_are_not_mistaken_for_ours() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path().join("wh"))).await.unwrap();
    // A job whose state was deleted committed checkpoint 7 earlier.
    let props = HashMap::from([
        (CHECKPOINT_ID_KEY.to_owned(), "7".to_owned()),
        (JOB_ID_KEY.to_owned(), "an-old-job".to_owned()),
    ]);
    sink.commit(&[row("old", 0)], &[], props).await.unwrap();
    let store = StateStore::open(&dir.path().join("state")).unwrap();
    staged_checkpoint(&store);
    Checkpointer::recover(store, &mut sink, EngineConfig::default()).await.unwrap();
    assert_eq!(rows_in(&sink).await, 3);
}

#[tokio::test]
async fn a_commit_by_another_writer_after_ours_does_not_hide_ours() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path().join("wh"))).await.unwrap();
    let store = StateStore::open(&dir.path().join("state")).unwrap();
    let job_id = store.job_id().unwrap();
    let (_, output) = staged_checkpoint(&store);
    // Our commit went through and the process died before dropping the staged
    // copy; meanwhile another writer (a second job, a compaction) committed.
    let ours = HashMap::from([
        (CHECKPOINT_ID_KEY.to_owned(), "1".to_owned()),
        (JOB_ID_KEY.to_owned(), job_id),
    ]);
    sink.commit(&output.sessions, &[], ours).await.unwrap();
    let theirs = HashMap::from([
        (CHECKPOINT_ID_KEY.to_owned(), "40".to_owned()),
        (JOB_ID_KEY.to_owned(), "another-job".to_owned()),
    ]);
    sink.commit(&[row("other", 0)], &[], theirs).await.unwrap();
    Checkpointer::recover(store, &mut sink, EngineConfig::default()).await.unwrap();
    assert_eq!(rows_in(&sink).await, 3);
}

fn rules() -> NativeRules<DefaultRules> {
    let settings =
        Settings { inactivity_timeout_ms: 1_800_000, max_duration_ms: 7_200_000, params: vec![] };
    NativeRules::new("default-rules", &settings).unwrap()
}

/// Offers `events` in order, advancing every 97 events, then ends the input.
/// With `restart_at`, the engine is stored in a state store after that many
/// events, dropped, and restored from the store to go on.
fn sessions(events: &[Event<'_>], restart_at: Option<usize>) -> Vec<SessionRow> {
    let config = EngineConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let mut rules = rules();
    let mut engine = Engine::new(config);
    let mut rows = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if restart_at == Some(i) {
            let store = StateStore::open(dir.path()).unwrap();
            let changes = engine.take_changes().unwrap();
            let record = CheckpointRecord { id: 1, clocks: engine.clocks(), ..Default::default() };
            store.write_checkpoint(&changes, &record, &StagedOutput::default()).unwrap();
            drop((engine, store));
            let recovered = StateStore::open(dir.path()).unwrap().recover().unwrap();
            let clocks = recovered.checkpoint.unwrap().clocks;
            engine = Engine::restore(config, recovered.texts, clocks, recovered.users);
        }
        engine.offer(0, e);
        if (i + 1) % 97 == 0 {
            rows.extend(engine.advance(&mut rules, false).unwrap());
        }
    }
    rows.extend(engine.advance(&mut rules, true).unwrap());
    rows.sort_by(|a, b| (&a.uuid, a.start_ms).cmp(&(&b.uuid, b.start_ms)));
    rows
}

/// Stopping at any point, storing the engine in the state store and restoring
/// it gives the same sessions as never stopping.
#[test]
fn a_restored_engine_continues_exactly_where_it_stopped() {
    let mut lines = Vec::new();
    generate(
        &GeneratorConfig { num_users: 50, rate: 5.0, ..GeneratorConfig::sample() },
        &mut lines,
    )
    .unwrap();
    let lines: Vec<&[u8]> = lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let events: Vec<Event<'_>> =
        lines.iter().filter_map(|l| sessionize::event::parse(l).ok()).collect();
    let uninterrupted = sessions(&events, None);
    assert!(uninterrupted.len() > 50, "{} sessions", uninterrupted.len());
    for stop_at in [1, 500, events.len() / 2, events.len() - 3] {
        assert_eq!(
            sessions(&events, Some(stop_at)),
            uninterrupted,
            "stopped after {stop_at} events"
        );
    }
}

/// Output an earlier version staged without checking it: a session whose
/// count does not fit the table, and one that starts in the year 262,200
/// (iceberg-rust's date partitioning cannot format it).
fn staged_unwritable_checkpoint(store: &StateStore) {
    let record = CheckpointRecord {
        id: 1,
        offsets: BTreeMap::from([(0, 10)]),
        rule_version: "test@1".into(),
        ..Default::default()
    };
    let mut huge_count = row("huge-count", 0);
    huge_count.event_count = u32::MAX;
    let output = StagedOutput {
        sessions: vec![row("a", 0), huge_count, row("far-start", 8_212_000_000_000_000)],
        rejected: vec![],
        columns: vec![],
    };
    store.write_checkpoint(&EngineChanges::default(), &record, &output).unwrap();
}

async fn dead_letter_reasons(sink: &IcebergSink) -> Vec<String> {
    let batches: Vec<_> = sink
        .rejected_table()
        .scan()
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut reasons = Vec::new();
    for batch in &batches {
        let column = batch.column_by_name("reason").unwrap();
        let column = column.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
        reasons.extend(column.iter().flatten().map(str::to_owned));
    }
    reasons
}

/// A restart must not fail forever on staged output the sink cannot store: it
/// is dead-lettered, the rest is published, and the job resumes.
#[tokio::test]
async fn staged_output_the_sink_cannot_store_does_not_block_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.path().join("wh"))).await.unwrap();
    let store = StateStore::open(&dir.path().join("state")).unwrap();
    staged_unwritable_checkpoint(&store);

    let (_, resumed) =
        Checkpointer::recover(store, &mut sink, EngineConfig::default()).await.unwrap();

    assert_eq!(resumed.checkpoint_id, 1);
    assert_eq!(rows_in(&sink).await, 1);
    let reasons = dead_letter_reasons(&sink).await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("huge-count") && r.contains("event_count")));
    assert!(reasons.iter().any(|r| r.contains("far-start") && r.contains("start")));
    // Published once: a second restart finds nothing staged.
    let store = StateStore::open(&dir.path().join("state")).unwrap();
    Checkpointer::recover(store, &mut sink, EngineConfig::default()).await.unwrap();
    assert_eq!(rows_in(&sink).await, 1);
    assert_eq!(dead_letter_reasons(&sink).await.len(), 2);
}

/// A state store that holds a text twice (written by hand, or damaged) is
/// refused as corrupt: restored, every later handle would shift by one and
/// sessions would name the wrong pages.
#[test]
fn a_store_that_holds_a_text_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut engine = Engine::new(EngineConfig::default());
    for (user, page) in [("a", "home"), ("b", "cart")] {
        let event = Event {
            uuid: user.into(),
            event_id: None,
            timestamp_ms: 1_000,
            page_name: Some(page.into()),
            event_name: None,
            event_type: None,
        };
        engine.offer(0, &event);
    }
    let mut changes: EngineChanges = engine.take_changes().unwrap();
    let home = changes.new_texts[0].clone();
    changes.new_texts.insert(1, home);
    let record = CheckpointRecord { id: 1, clocks: engine.clocks(), ..Default::default() };
    store.write_checkpoint(&changes, &record, &StagedOutput::default()).unwrap();
    let error = store.recover().expect_err("a text stored twice was accepted").to_string();
    assert!(error.contains("twice") && error.contains("home"), "{error}");
}
