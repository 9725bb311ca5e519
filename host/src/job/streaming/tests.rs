//! The event loop in-process, over a scripted source, an in-memory sink and
//! the default rules compiled natively: end detection, a failing checkpoint,
//! and rule changes at checkpoint boundaries.

use crate::sink::{MemoryGroupStore, StoreFaults};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use default_rules::DefaultRules;

use super::*;
use crate::checkpoint::{Checkpointer, RULE_VERSION_KEY};
use crate::engine::EngineConfig;
use crate::job::RunSummary;
use crate::rules::contract::Settings;
use crate::rules::lifecycle::{Candidate, RulesAction, RulesRequest, RulesSlot};
use crate::sink::SessionRow;
use crate::source::file::FileSource;
use crate::source::generate::{generate, GeneratorConfig};
use crate::state::StateStore;
use sessionize_native::NativeRules;

/// Records per partition, served in order, a few at a time.
struct ScriptedSource {
    partitions: Vec<i32>,
    records: BTreeMap<i32, Vec<Vec<u8>>>,
    positions: BTreeMap<i32, i64>,
    committed: Vec<BTreeMap<i32, i64>>,
    paused: BTreeSet<i32>,
}

impl ScriptedSource {
    /// The lines of `events` over `partitions` partitions, keyed by user as a
    /// producer would: a user's events stay on one partition, in order.
    fn new(events: &[u8], partitions: i32) -> Self {
        let mut records: BTreeMap<i32, Vec<Vec<u8>>> =
            (0..partitions).map(|p| (p, Vec::new())).collect();
        for line in events.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let key = crate::event::parse(line).map_or(0, |e| {
                e.uuid.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            });
            let p = (key % partitions as u32) as i32;
            records.entry(p).or_default().push(line.to_vec());
        }
        Self {
            partitions: (0..partitions).collect(),
            records,
            positions: BTreeMap::new(),
            committed: Vec::new(),
            paused: BTreeSet::new(),
        }
    }
}

impl StreamSource for ScriptedSource {
    type Error = std::io::Error;

    fn name(&self) -> String {
        "scripted".into()
    }

    fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    fn poll_into(&mut self, block: &mut EventBlock, max: usize, _timeout: Duration) -> usize {
        let mut added = 0;
        while added < max {
            let mut any = false;
            for (&p, records) in &self.records {
                if self.paused.contains(&p) {
                    continue;
                }
                let position = self.positions.entry(p).or_insert(0);
                if let Some(record) = records.get(*position as usize) {
                    block.push(p, *position, record);
                    *position += 1;
                    added += 1;
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        added
    }

    fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    fn end_offsets(&self, _timeout: Duration) -> Result<BTreeMap<i32, i64>, Self::Error> {
        Ok(self.records.iter().map(|(&p, r)| (p, r.len() as i64)).collect())
    }

    fn commit_consumed(&mut self, offsets: &BTreeMap<i32, i64>) {
        self.committed.push(offsets.clone());
    }

    fn pause(&mut self, partitions: &[i32]) -> Result<(), Self::Error> {
        self.paused.extend(partitions);
        Ok(())
    }

    fn resume(&mut self, partitions: &[i32]) -> Result<(), Self::Error> {
        self.paused.retain(|p| !partitions.contains(p));
        Ok(())
    }
}

/// Keeps every commit (a group member's in its log); fails as its faults say.
type MemorySink = MemoryGroupStore;

/// The bounded run over the same lines, with the default rules: what a
/// streaming run must equal.
fn bounded_run(lines: Vec<u8>) -> (RunSummary, MemorySink) {
    let mut sink = MemorySink::default();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    // Users split over three engines, as a run on three cores does.
    let mut engines: Vec<Engine> = (0..3).map(|_| Engine::new(EngineConfig::default())).collect();
    let mut rules: Vec<_> = (0..3).map(|_| native("default")).collect();
    let shards = engines
        .iter_mut()
        .zip(&mut rules)
        .map(|(engine, rules)| crate::job::bounded::Shard { engine, rules })
        .collect();
    let summary = crate::job::bounded::run_bounded(
        runtime.handle(),
        FileSource::from_bytes("file", lines),
        &Intake::default(),
        shards,
        &mut sink,
        HashMap::new(),
        Default::default(),
    )
    .unwrap();
    (summary, sink)
}

fn native(name: &str) -> NativeRules<DefaultRules> {
    let settings = Settings {
        inactivity_timeout_ms: 30 * 60_000,
        max_duration_ms: 2 * 3_600_000,
        params: vec![],
    };
    NativeRules::new(name, &settings).unwrap()
}

fn sample() -> Vec<u8> {
    let mut lines = Vec::new();
    generate(&GeneratorConfig { num_users: 200, ..GeneratorConfig::sample() }, &mut lines).unwrap();
    lines
}

fn config() -> StreamConfig {
    StreamConfig {
        max_events_per_batch: 700,
        checkpoint_interval: Duration::ZERO,
        idle_timeout: Duration::from_secs(3600),
        until_end: true,
        rules_attempts: 3,
        on_rules_failure: FaultPolicy::Rollback,
        intake: Intake::default(),
        max_partition_drift: Duration::from_secs(600),
    }
}

/// Runs a fresh job over `source` into `sink` to the source's end.
fn run_to_end(
    source: ScriptedSource,
    sink: &mut MemorySink,
    rules: &mut RulesLifecycle,
) -> Result<StreamSummary, StreamError> {
    run_to_end_with(source, sink, rules, config())
}

/// [`run_to_end`] with another pace or fault policy.
fn run_to_end_with(
    source: ScriptedSource,
    sink: &mut MemorySink,
    rules: &mut RulesLifecycle,
    config: StreamConfig,
) -> Result<StreamSummary, StreamError> {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let (checkpointer, resumed) =
        runtime.block_on(Checkpointer::recover(store, sink, EngineConfig::default())).unwrap();
    let metrics = Default::default();
    let parts = StreamParts::whole(source, resumed.engine, checkpointer, rules, sink, metrics);
    run_streaming(runtime.handle(), parts, config, BTreeMap::new(), &AtomicBool::new(false))
}

fn sorted(mut rows: Vec<SessionRow>) -> Vec<SessionRow> {
    rows.sort_by(|a, b| (&a.uuid, a.start_ms).cmp(&(&b.uuid, b.start_ms)));
    rows
}

#[test]
fn a_run_to_the_end_writes_what_the_bounded_run_writes() {
    let events = sample();
    let mut sink = MemorySink::default();
    let mut rules = RulesLifecycle::new(RulesSlot::new(native("default")));
    let summary = run_to_end(ScriptedSource::new(&events, 1), &mut sink, &mut rules).unwrap();

    let (expected, bounded) = bounded_run(events);

    assert_eq!(summary.read, expected.read);
    assert_eq!(summary.engine.accepted, expected.engine.accepted);
    assert_eq!(summary.rejected, expected.rejected);
    assert!(summary.checkpoints > 3, "{} checkpoints", summary.checkpoints);
    assert_eq!(sorted(sink.sessions()), sorted(bounded.sessions()));
    let dead: usize = sink.sink_commits.iter().map(|(_, r, _)| r.len()).sum();
    assert_eq!(dead as u64, expected.rejected + expected.engine.late);
}

/// Four partitions of 4,000 events a second apart; partition 0 an hour of
/// event time behind the other three.
fn one_partition_an_hour_behind() -> (ScriptedSource, Vec<u8>) {
    let t0: i64 = 1_750_000_000_000;
    let mut source = ScriptedSource::new(b"", 4);
    let mut all: Vec<(i64, Vec<u8>)> = Vec::new();
    for p in 0..4 {
        let start = if p == 0 { t0 - 3_600_000 } else { t0 };
        for i in 0..4_000i64 {
            let t = start + i * 1000;
            let line =
                format!(r#"{{"uuid":"u{p}-{}","event_id":"{i}","event_timestamp":{t}}}"#, i % 50);
            source.records.entry(p).or_default().push(line.clone().into_bytes());
            all.push((t, line.into_bytes()));
        }
    }
    all.sort();
    let file = all.into_iter().flat_map(|(_, mut l)| {
        l.push(b'\n');
        l
    });
    (source, file.collect())
}

/// Watermark alignment: with one partition an hour behind, the others are
/// paused rather than read ahead, so the events waiting for the watermark
/// stay few; without it they pile up. Either way the sessions are the
/// bounded run's.
#[test]
fn partitions_running_ahead_are_paused_until_the_lagging_one_catches_up() {
    let run = |drift: Duration| {
        let (source, file) = one_partition_an_hour_behind();
        let mut sink = MemorySink::default();
        let mut rules = RulesLifecycle::new(RulesSlot::new(native("default")));
        let config =
            StreamConfig { max_events_per_batch: 100, max_partition_drift: drift, ..config() };
        let summary = run_to_end_with(source, &mut sink, &mut rules, config).unwrap();
        (summary, spans(sink.sessions()), file)
    };
    // End reasons aside: where the end of input meets the watermark, the
    // topic's final watermark is the least over its partitions, the file's is one.
    fn spans(rows: Vec<SessionRow>) -> Vec<(String, i64, i64, u32)> {
        let mut spans: Vec<_> =
            rows.into_iter().map(|r| (r.uuid, r.start_ms, r.end_ms, r.event_count)).collect();
        spans.sort();
        spans
    }
    let (aligned, sessions, file) = run(Duration::from_secs(120));
    let (unaligned, unaligned_sessions, _) = run(Duration::from_secs(1 << 30));

    // 600 events of partition 0 within the lateness, the others' 12 minutes
    // (drift + lateness) at most, and a poll's worth.
    assert!(aligned.peak_waiting < 3_500, "{} waiting at most", aligned.peak_waiting);
    assert!(aligned.partition_pauses >= 3, "{} pauses", aligned.partition_pauses);
    assert!(unaligned.peak_waiting > 8_000, "{} waiting at most", unaligned.peak_waiting);
    assert_eq!(unaligned.partition_pauses, 0);

    let (_, bounded) = bounded_run(file);
    assert_eq!(aligned.engine.late, 0);
    assert_eq!(sessions, spans(bounded.sessions()));
    assert_eq!(unaligned_sessions, sessions);
}

#[test]
fn every_event_is_accounted_for_over_several_partitions() {
    let events = sample();
    let source = ScriptedSource::new(&events, 3);
    let ends = source.end_offsets(Duration::ZERO).unwrap();
    let mut sink = MemorySink::default();
    let mut rules = RulesLifecycle::new(RulesSlot::new(native("default")));
    let summary = run_to_end(source, &mut sink, &mut rules).unwrap();
    let e = summary.engine;
    assert_eq!(summary.read, ends.values().sum::<i64>() as u64);
    assert_eq!(summary.read, e.accepted + e.late + e.duplicates + summary.rejected);
    let in_sessions: u64 = sink.sessions().iter().map(|s| u64::from(s.event_count)).sum();
    assert_eq!(in_sessions, e.accepted);
    // The last checkpoint's offsets are where every partition ended.
    let last = sink.sink_commits.last().unwrap();
    let offsets: BTreeMap<i32, i64> =
        serde_json::from_str::<HashMap<String, i64>>(&last.2[crate::checkpoint::OFFSETS_KEY])
            .unwrap()
            .into_iter()
            .map(|(p, o)| (p.parse().unwrap(), o))
            .collect();
    assert_eq!(offsets, ends);
}

#[test]
fn a_checkpoint_that_cannot_commit_stops_the_run_with_its_cause() {
    let mut sink = MemorySink::with_faults(
        StoreFaults { fail_commits_from: Some(3), ..StoreFaults::default() },
        0,
    );
    let mut rules = RulesLifecycle::new(RulesSlot::new(native("default")));
    let outcome = run_to_end(ScriptedSource::new(&sample(), 2), &mut sink, &mut rules);
    let error = outcome.expect_err("the run must stop");
    assert!(matches!(error, StreamError::Checkpoint(_)), "{error}");
    assert!(error.to_string().contains("the disk is on fire"), "{error}");
    assert_eq!(sink.sink_commits.len(), 2, "the commits before the failure stand");
}

#[test]
fn a_rollback_takes_effect_at_a_checkpoint_boundary() {
    let mut slot = RulesSlot::new(native("first"));
    slot.resume(native("second"));
    let (requests_tx, requests) = mpsc::channel();
    let mut rules = RulesLifecycle::new(slot).accepting(requests);
    let ask = |action| {
        let (request, answer) = RulesRequest::new(action, Duration::from_secs(300));
        requests_tx.send(request).unwrap();
        answer
    };
    let status = ask(RulesAction::Status);
    let rolled_back = ask(RulesAction::Rollback);
    let deploy = ask(RulesAction::Deploy(Candidate::File("nowhere.wasm".into())));

    let mut sink = MemorySink::default();
    let summary = run_to_end(ScriptedSource::new(&sample(), 1), &mut sink, &mut rules).unwrap();

    assert_eq!(status.blocking_recv().unwrap().unwrap()["active"], "second+native");
    assert_eq!(rolled_back.blocking_recv().unwrap().unwrap()["active"], "first+native");
    assert!(deploy.blocking_recv().unwrap().is_err(), "no loader: no deploys");
    assert_eq!(summary.swap_pauses.count(), 1);
    // Each checkpoint was cut by one version: its rows and its snapshot agree.
    let versions: Vec<&str> =
        sink.sink_commits.iter().map(|(_, _, p)| p[RULE_VERSION_KEY].as_str()).collect();
    for (rows, _, props) in &sink.sink_commits {
        assert!(rows.iter().all(|r| *r.rule_version == props[RULE_VERSION_KEY]));
    }
    let switch = versions.iter().position(|v| *v == "first+native").unwrap();
    assert!(switch > 0, "the first checkpoint was cut by the rules in force");
    assert!(versions[..switch].iter().all(|v| *v == "second+native"));
    assert!(versions[switch..].iter().all(|v| *v == "first+native"), "{versions:?}");
    assert_eq!(rules.rule_version(), "first+native");
}

/// Rules that fail every batch, and say when they are first asked.
struct FailingRules(Option<mpsc::Sender<()>>);

impl crate::rules::RulesRuntime for FailingRules {
    fn rule_version(&self) -> &str {
        "failing@1"
    }

    fn process(
        &mut self,
        _: crate::rules::Texts<'_>,
        _: &mut crate::rules::contract::Batch,
    ) -> Result<crate::rules::contract::BatchResult, crate::rules::RulesError> {
        if let Some(called) = self.0.take() {
            let _ = called.send(());
        }
        Err(crate::rules::RulesError::Failed("always".into()))
    }
}

#[test]
fn requests_are_served_while_the_rules_keep_failing_a_batch() {
    let (called_tx, called) = mpsc::channel();
    let mut slot = RulesSlot::new(native("first"));
    slot.resume(FailingRules(Some(called_tx)));
    let (requests_tx, requests) = mpsc::channel();
    let job = std::thread::spawn(move || {
        let mut rules = RulesLifecycle::new(slot).accepting(requests);
        let mut sink = MemorySink::default();
        // Retried without end: only the operator can rescue this job.
        let config = StreamConfig {
            rules_attempts: u32::MAX,
            on_rules_failure: FaultPolicy::Stop,
            ..config()
        };
        let summary =
            run_to_end_with(ScriptedSource::new(&sample(), 2), &mut sink, &mut rules, config);
        (summary, sink)
    });
    called.recv_timeout(Duration::from_secs(60)).expect("the failing rules were called");
    let (request, mut rolled_back) =
        RulesRequest::new(RulesAction::Rollback, Duration::from_secs(300));
    requests_tx.send(request).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match rolled_back.try_recv() {
            Ok(answer) => break answer,
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "no answer while the rules were failing");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("the job dropped the request: {error}"),
        }
    };
    assert_eq!(answer.unwrap()["active"], "first+native");
    let (summary, sink) = job.join().unwrap();
    let summary = summary.expect("the rescued job runs to the end");
    let in_sessions: u64 = sink.sessions().iter().map(|s| u64::from(s.event_count)).sum();
    assert_eq!(in_sessions, summary.engine.accepted, "the failed batch was kept, not lost");
    assert!(sink.sessions().iter().all(|s| &*s.rule_version == "first+native"));
}
