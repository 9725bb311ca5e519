//! The checkpoint protocol against sinks that refuse rows or fail for a while:
//! what cannot be stored is dead-lettered before it is staged, and transient
//! failures are retried without writing anything twice.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::table::Table;

use super::{CheckpointCut, CheckpointError, CheckpointStore, Checkpointer, ShardCut, Span};
use crate::engine::{Engine, EngineConfig};
use crate::sink::iceberg::{IcebergSink, SinkConfig};
use crate::sink::{
    carries, CommitStats, RejectedEvent, SessionRow, Sink, SinkError, SinkRetryPolicy,
};
use crate::state::{StagedOutput, StateStore};

/// 2024-03-01T00:00:00Z.
const MARCH_1_MS: i64 = 1_709_251_200_000;

fn row(uuid: &str, start_ms: i64) -> SessionRow {
    SessionRow {
        uuid: uuid.into(),
        session_id: crate::engine::session_id(uuid, start_ms),
        start_ms,
        end_ms: start_ms.saturating_add(1000),
        event_count: 2,
        pages: vec![Arc::from("home")],
        end_reason: "inactivity".into(),
        rule_version: Arc::from("test@1"),
        attributes: Vec::new(),
    }
}

fn dead_letter(position: i64) -> RejectedEvent {
    RejectedEvent {
        raw: "{not json".into(),
        reason: "invalid JSON".into(),
        source: "kafka:clicks".into(),
        partition: 0,
        position,
    }
}

/// Sessions the table cannot store: a count past the int column, a start in
/// the year 262,200 (beyond what iceberg-rust's date partitioning can
/// format), an end at the last millisecond of i64.
fn unwritable() -> Vec<SessionRow> {
    let mut huge_count = row("huge-count", MARCH_1_MS);
    huge_count.event_count = u32::MAX;
    let far_start = row("far-start", 8_212_000_000_000_000);
    let mut far_end = row("far-end", MARCH_1_MS);
    far_end.end_ms = i64::MAX;
    vec![huge_count, far_start, far_end]
}

async fn scan(table: &Table) -> Vec<RecordBatch> {
    table.scan().build().unwrap().to_arrow().await.unwrap().try_collect().await.unwrap()
}

async fn strings(table: &Table, column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for batch in scan(table).await {
        let Some(values) =
            batch.column_by_name(column).and_then(|c| c.as_any().downcast_ref::<StringArray>())
        else {
            panic!("no string column {column}");
        };
        out.extend((0..values.len()).map(|i| values.value(i).to_owned()));
    }
    out.sort();
    out
}

async fn open(dir: &Path) -> (IcebergSink, Checkpointer, Engine) {
    let mut sink = IcebergSink::open(&SinkConfig::new(dir.join("wh"))).await.unwrap();
    let store = StateStore::open(&dir.join("state")).unwrap();
    let (checkpointer, resumed) =
        Checkpointer::recover(store, &mut sink, EngineConfig::default()).await.unwrap();
    (sink, checkpointer, resumed.engine)
}

#[tokio::test]
async fn a_session_the_table_cannot_store_is_dead_lettered_not_staged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, mut checkpointer, mut engine) = open(dir.path()).await;
    let mut sessions = vec![row("fine", MARCH_1_MS)];
    sessions.extend(unwritable());
    let output = StagedOutput { sessions, rejected: vec![dead_letter(7)], columns: Vec::new() };
    let cut = topic_cut(&mut engine, output);

    let recorded = checkpointer.complete(&mut sink, cut).await.unwrap();

    assert_eq!(recorded.id, 1);
    assert_eq!(strings(sink.sessions_table(), "uuid").await, ["fine"]);
    // Every session is accounted for: the three that cannot be stored are
    // dead letters, with what is wrong with them, beside the input's own.
    let reasons = strings(sink.rejected_table(), "reason").await;
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons.contains(&"invalid JSON".to_owned()), "{reasons:?}");
    for (uuid, what) in [("huge-count", "event_count"), ("far-start", "start"), ("far-end", "end")]
    {
        assert!(
            reasons.iter().any(|r| r.contains(uuid) && r.contains(what)),
            "no reason names {what} of {uuid}: {reasons:?}"
        );
    }
    let raw = strings(sink.rejected_table(), "raw").await;
    for session in unwritable() {
        assert!(raw.iter().any(|r| r.contains(&session.session_id)), "{raw:?}");
    }
    // Nothing unwritable was staged, so a restart has nothing to re-publish.
    drop(checkpointer);
    let recovered = StateStore::open(&dir.path().join("state")).unwrap().recover().unwrap();
    assert!(recovered.staged.is_none());
    let (sink, _, _) = open(dir.path()).await;
    assert_eq!(strings(sink.sessions_table(), "uuid").await, ["fine"]);
    assert_eq!(strings(sink.rejected_table(), "reason").await.len(), 4);
}

/// How a call to a [`ScriptedSink`] goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    /// As a healthy sink.
    Works,
    /// Fails as a locked catalog does, before doing anything.
    Locked,
    /// A commit that stores the dead letters, then fails as a locked catalog.
    LockedAfterDeadLetters,
    /// Fails in a way that cannot clear by itself.
    SchemaMismatch,
}

/// A sink whose calls go as scripted, then as `then`; it keeps each table's
/// snapshots (rows and properties) as a real sink's commit makes them.
struct ScriptedSink {
    script: std::collections::VecDeque<Call>,
    then: Call,
    calls: usize,
    sessions: Vec<(Vec<SessionRow>, HashMap<String, String>)>,
    rejected: Vec<(Vec<RejectedEvent>, HashMap<String, String>)>,
}

impl ScriptedSink {
    fn new(script: impl IntoIterator<Item = Call>, then: Call) -> Self {
        Self {
            script: script.into_iter().collect(),
            then,
            calls: 0,
            sessions: Vec::new(),
            rejected: Vec::new(),
        }
    }

    fn next_call(&mut self) -> Call {
        self.calls += 1;
        self.script.pop_front().unwrap_or(self.then)
    }

    fn sessions_written(&self) -> Vec<&str> {
        self.sessions.iter().flat_map(|(rows, _)| rows.iter().map(|r| r.uuid.as_str())).collect()
    }

    fn dead_letters_written(&self) -> Vec<i64> {
        self.rejected.iter().flat_map(|(rows, _)| rows.iter().map(|r| r.position)).collect()
    }
}

fn locked() -> SinkError {
    SinkError::Iceberg {
        context: "committing to sessions.user_sessions".into(),
        source: Box::new(iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "error returned from database: (code: 5) database is locked",
        )),
    }
}

fn failure(call: Call) -> Result<(), SinkError> {
    match call {
        Call::Works => Ok(()),
        Call::Locked | Call::LockedAfterDeadLetters => Err(locked()),
        Call::SchemaMismatch => Err(SinkError::Schema {
            table: "sessions.user_sessions".into(),
            detail: "column uuid is missing".into(),
        }),
    }
}

impl Sink for ScriptedSink {
    async fn commit(
        &mut self,
        sessions: &[SessionRow],
        rejected: &[RejectedEvent],
        properties: HashMap<String, String>,
    ) -> Result<CommitStats, SinkError> {
        let call = self.next_call();
        if call == Call::LockedAfterDeadLetters || call == Call::Works {
            self.rejected.push((rejected.to_vec(), properties.clone()));
        }
        failure(call)?;
        self.sessions.push((sessions.to_vec(), properties));
        Ok(CommitStats::default())
    }

    async fn last_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        failure(self.next_call())?;
        Ok(latest_with(&self.sessions, key, value))
    }

    async fn last_rejected_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        failure(self.next_call())?;
        Ok(latest_with(&self.rejected, key, value))
    }
}

fn latest_with<T>(
    commits: &[(T, HashMap<String, String>)],
    key: &str,
    value: &str,
) -> Option<HashMap<String, String>> {
    let ours = |(_, props): &&(T, HashMap<String, String>)| carries(props, key, value);
    commits.iter().rev().find(ours).map(|(_, props)| props.clone())
}

/// Retries within milliseconds, so the tests do not wait out real delays.
const QUICK_RETRY: SinkRetryPolicy = SinkRetryPolicy {
    first_delay: Duration::from_millis(1),
    max_delay: Duration::from_millis(4),
    budget: Duration::from_millis(200),
};

/// A fresh job over `sink`: its checkpointer (retrying quickly) and engine.
async fn fresh_job(dir: &Path, sink: &mut ScriptedSink) -> (Checkpointer, Engine) {
    let store = StateStore::open(dir).unwrap();
    let (mut checkpointer, resumed) =
        Checkpointer::recover(store, sink, EngineConfig::default()).await.unwrap();
    checkpointer.set_sink_retry(QUICK_RETRY);
    (checkpointer, resumed.engine)
}

/// A job on its own's cut of `engine` at offset 10 of partition 0, with `output`.
fn topic_cut(engine: &mut Engine, output: StagedOutput) -> CheckpointCut {
    let offsets = BTreeMap::from([(0, 10)]);
    let shard = ShardCut::take(engine, Span::Topic, offsets, output, false).unwrap();
    CheckpointCut {
        shards: vec![shard],
        rule_version: "test@1".into(),
        columns: Vec::new(),
        publish: None,
    }
}

fn one_checkpoint(engine: &mut Engine) -> CheckpointCut {
    let output = StagedOutput {
        sessions: vec![row("a", MARCH_1_MS), row("b", MARCH_1_MS)],
        rejected: vec![dead_letter(3)],
        columns: Vec::new(),
    };
    topic_cut(engine, output)
}

#[tokio::test]
async fn a_sink_that_fails_for_a_while_is_retried_and_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ScriptedSink::new([], Call::Works);
    let (mut checkpointer, mut engine) = fresh_job(dir.path(), &mut sink).await;
    // Locked at each step of an attempt in turn: the reads, then the commit.
    sink.script =
        [Call::Locked, Call::Works, Call::Locked, Call::Works, Call::Works, Call::Locked].into();

    let recorded = checkpointer.complete(&mut sink, one_checkpoint(&mut engine)).await.unwrap();

    assert_eq!(recorded.id, 1);
    assert_eq!(sink.sessions_written(), ["a", "b"]);
    assert_eq!(sink.dead_letters_written(), [3]);
    drop(checkpointer);
    assert!(StateStore::open(dir.path()).unwrap().recover().unwrap().staged.is_none());
}

#[tokio::test]
async fn a_retry_after_the_dead_letters_were_committed_does_not_repeat_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ScriptedSink::new([], Call::Works);
    let (mut checkpointer, mut engine) = fresh_job(dir.path(), &mut sink).await;
    sink.script = [Call::Works, Call::Works, Call::LockedAfterDeadLetters].into();

    checkpointer.complete(&mut sink, one_checkpoint(&mut engine)).await.unwrap();

    assert_eq!(sink.sessions_written(), ["a", "b"]);
    assert_eq!(sink.dead_letters_written(), [3]);
}

#[tokio::test]
async fn a_sink_failure_that_lasts_stops_at_the_checkpoint_and_a_restart_publishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ScriptedSink::new([], Call::Works);
    let (mut checkpointer, mut engine) = fresh_job(dir.path(), &mut sink).await;
    sink.then = Call::Locked;

    let error = checkpointer.complete(&mut sink, one_checkpoint(&mut engine)).await.unwrap_err();

    let CheckpointError::SinkUnavailable { checkpoint: 1, attempts, source, .. } = &error else {
        panic!("not a lasting sink failure: {error:?}");
    };
    assert!(*attempts > 1, "{attempts} attempts");
    assert!(source.to_string().contains("database is locked"), "{source}");
    let message = error.to_string();
    assert!(message.contains("checkpoint 1") && message.contains("restart"), "{message}");
    assert!(sink.sessions_written().is_empty());
    // The checkpoint is durable: the restart publishes it once the sink works.
    drop(checkpointer);
    sink.then = Call::Works;
    let (_, resumed) = Checkpointer::recover(
        StateStore::open(dir.path()).unwrap(),
        &mut sink,
        EngineConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(resumed.checkpoint_id, 1);
    assert_eq!(sink.sessions_written(), ["a", "b"]);
    assert_eq!(sink.dead_letters_written(), [3]);
}

#[tokio::test]
async fn a_sink_failure_that_cannot_clear_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ScriptedSink::new([], Call::Works);
    let (mut checkpointer, mut engine) = fresh_job(dir.path(), &mut sink).await;
    sink.calls = 0;
    sink.then = Call::SchemaMismatch;

    let error = checkpointer.complete(&mut sink, one_checkpoint(&mut engine)).await.unwrap_err();

    assert!(matches!(error, CheckpointError::Sink(SinkError::Schema { .. })), "{error:?}");
    assert_eq!(sink.calls, 1);
}
