//! The streaming job: Kafka in, engine and rules, checkpoints into the state
//! store and Iceberg, until stopped (or, in test mode, until the topic's end).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::admin::{AdminAction, AdminRequest};
use crate::checkpoint::{CheckpointError, Checkpointer};
use crate::engine::{Admission, Engine, EngineError, EngineStats};
use crate::event::{BlockRecord, EventBlock};
use crate::output::RejectedEvent;
use crate::pipeline::write_counts;
use crate::plugin::{ComponentRules, PluginError, RulesRuntime, RulesSlot};
use crate::sink::iceberg::IcebergSink;
use crate::source::kafka::{KafkaSource, KafkaSourceError};
use crate::state::StagedOutput;

/// How the streaming loop paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Most messages taken per poll (`--max-events-per-batch`).
    pub max_events_per_batch: usize,
    /// Time between checkpoints (`--checkpoint-interval`).
    pub checkpoint_interval: Duration,
    /// A partition with no message for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Stop at the end of the topic as it was at start, closing every session.
    pub until_end: bool,
}

/// Why the streaming job stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    /// The rules failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// What a streaming run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSummary {
    /// Messages read.
    pub read: u64,
    /// Messages that were not valid events.
    pub rejected: u64,
    /// Engine counters.
    pub engine: EngineStats,
    /// Sessions written.
    pub sessions_written: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Longest time from a session closing to its Iceberg commit.
    pub max_visibility_latency: Duration,
}

impl std::fmt::Display for StreamSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_counts(f, self.read, &self.engine, self.rejected, self.sessions_written)?;
        writeln!(
            f,
            "checkpoints:       {} (sessions visible in Iceberg at most {:.2?} after closing)",
            self.checkpoints, self.max_visibility_latency
        )?;
        write!(
            f,
            "elapsed:           {:.2?} ({:.0} events/s)",
            self.elapsed,
            self.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )
    }
}

/// Compiles and configures a candidate component (off the hot path).
pub type RulesLoader = Arc<dyn Fn(&Path) -> Result<ComponentRules, PluginError> + Send + Sync>;

/// Hot swap: requests from the admin endpoint or the plugin watcher.
pub struct SwapControl {
    /// Incoming requests.
    pub requests: mpsc::Receiver<AdminRequest>,
    /// How candidates are loaded.
    pub loader: RulesLoader,
}

/// The parts a streaming run drives.
pub struct StreamParts<'a> {
    /// Kafka input, positioned at the recovered offsets.
    pub source: KafkaSource,
    /// The engine as recovered.
    pub engine: Engine,
    /// The checkpoint protocol.
    pub checkpointer: Checkpointer,
    /// The rules, swappable.
    pub rules: &'a mut RulesSlot,
    /// The output tables.
    pub sink: &'a mut IcebergSink,
    /// Hot swap requests, if enabled.
    pub swap: Option<SwapControl>,
}

type Reply = oneshot::Sender<Result<serde_json::Value, String>>;

/// A change of rules waiting for the next checkpoint boundary.
enum Candidate {
    /// A compiled (or refused) component.
    Deploy(Box<Result<ComponentRules, PluginError>>, PathBuf, Reply),
    /// Back to the previous version.
    Rollback(Reply),
}

/// Failed attempts at a batch before the job rolls back (or stops).
const ATTEMPTS_BEFORE_ROLLBACK: u32 = 3;

/// Runs until `stop` is set (a final checkpoint keeps open sessions for the next
/// run) or, with `until_end`, until the topic's end as of the start.
pub fn run_streaming(
    runtime: &tokio::runtime::Handle,
    parts: StreamParts<'_>,
    config: StreamConfig,
    start_offsets: BTreeMap<i32, i64>,
    stop: &AtomicBool,
) -> Result<StreamSummary, StreamError> {
    let StreamParts { mut source, mut engine, mut checkpointer, rules, sink, swap } = parts;
    let (candidates_tx, candidates) = mpsc::channel::<Candidate>();
    let mut failures = 0u32;
    let started = Instant::now();
    let mut summary = StreamSummary::default();
    let partitions: Vec<i32> = source.partitions().to_vec();
    engine.register_partitions(partitions.iter().map(|&p| p as usize));
    let ends =
        if config.until_end { Some(source.end_offsets(Duration::from_secs(30))?) } else { None };
    let source_name = format!("kafka:{}", source.topic());
    let mut last_message: HashMap<i32, Instant> =
        partitions.iter().map(|&p| (p, Instant::now())).collect();
    let mut staged = StagedOutput::default();
    let mut last_checkpoint = Instant::now();
    // When the oldest session waiting for the next checkpoint closed.
    let mut oldest_staged: Option<Instant> = None;
    loop {
        let mut block = EventBlock::with_capacity(config.max_events_per_batch.min(65_536));
        source.poll_into(&mut block, config.max_events_per_batch, Duration::from_millis(100));
        summary.read += block.len() as u64;
        let now = Instant::now();
        for record in block.records() {
            match record {
                BlockRecord::Event(partition, offset, raw, event) => {
                    last_message.insert(partition, now);
                    if let Admission::Late { behind_ms } = engine.offer(partition as usize, &event)
                    {
                        staged.rejected.push(RejectedEvent {
                            raw: raw.to_owned(),
                            reason: format!("late: {behind_ms} ms beyond the allowed lateness"),
                            source: source_name.clone(),
                            partition,
                            position: offset,
                        });
                    }
                }
                BlockRecord::Rejected(partition, offset, raw, reason) => {
                    last_message.insert(partition, now);
                    summary.rejected += 1;
                    staged.rejected.push(RejectedEvent {
                        raw: raw.to_owned(),
                        reason: reason.to_string(),
                        source: source_name.clone(),
                        partition,
                        position: offset,
                    });
                }
            }
        }
        for (&p, &seen) in &last_message {
            engine.set_idle(p as usize, now.duration_since(seen) >= config.idle_timeout);
        }
        let closed = match engine.advance(rules, false) {
            Ok(closed) => {
                failures = 0;
                closed
            }
            Err(error) => {
                failures += 1;
                tracing::error!(rules = rules.rule_version(), %error, attempt = failures, "rules failed a batch; it is kept and retried");
                if failures >= ATTEMPTS_BEFORE_ROLLBACK {
                    // Stop cleanly at the last checkpoint unless there is a version to go back to.
                    let version = rules
                        .rollback(Some(error.to_string()))
                        .map_err(|_| StreamError::Engine(error))?;
                    tracing::warn!(rules = version, "rolled back after repeated failures");
                    failures = 0;
                }
                continue;
            }
        };
        if !closed.is_empty() && oldest_staged.is_none() {
            oldest_staged = Some(Instant::now());
        }
        staged.sessions.extend(closed);
        if let Some(swap) = &swap {
            handle_admin(swap, rules, &candidates_tx);
        }
        let candidate = candidates.try_recv().ok();

        let offsets = merged(&start_offsets, source.positions());
        let at_end = ends.as_ref().is_some_and(|ends| {
            ends.iter().all(|(p, &end)| end <= 0 || offsets.get(p).is_some_and(|&o| o >= end))
        });
        if at_end {
            staged.sessions.extend(engine.advance(rules, true)?);
        }
        let stopping = at_end || stop.load(Ordering::Relaxed);
        if stopping
            || candidate.is_some()
            || last_checkpoint.elapsed() >= config.checkpoint_interval
        {
            let output = std::mem::take(&mut staged);
            summary.sessions_written += output.sessions.len() as u64;
            let id = runtime.block_on(checkpointer.checkpoint(
                &mut engine,
                sink,
                offsets.clone(),
                output,
                rules.rule_version(),
            ))?;
            source.commit_to_group(&offsets);
            if let Some(since) = oldest_staged.take() {
                summary.max_visibility_latency =
                    summary.max_visibility_latency.max(since.elapsed());
            }
            summary.checkpoints += 1;
            // At the checkpoint boundary: everything before it was cut by the
            // old rules, everything after by the new.
            if let Some(Candidate::Rollback(reply)) = candidate {
                let answer = rules
                    .rollback(Some("requested".into()))
                    .map(|version| serde_json::json!({ "active": version }))
                    .map_err(|e| e.to_string());
                let _ = reply.send(answer);
            } else if let Some(Candidate::Deploy(loaded, path, reply)) = candidate {
                let swap_started = Instant::now();
                let outcome =
                    loaded.and_then(|c| rules.deploy(c, engine.texts(), engine.sample_batch()));
                let answer = match outcome {
                    Ok(version) => {
                        // The event flow waits only for the dry run and the switch.
                        let pause = swap_started.elapsed();
                        tracing::info!(rules = version, path = %path.display(), ?pause, "rules swapped");
                        Ok(serde_json::json!({ "active": version }))
                    }
                    Err(error) => {
                        rules.refused(&path.display().to_string(), &error);
                        tracing::warn!(path = %path.display(), %error, "candidate rules refused");
                        Err(format!(
                            "{} refused: {error}; {} stays active",
                            path.display(),
                            rules.rule_version()
                        ))
                    }
                };
                let _ = reply.send(answer);
            }
            last_checkpoint = Instant::now();
            tracing::info!(
                checkpoint = id,
                consumed = offsets.values().sum::<i64>(),
                users_in_memory = engine.users_in_memory(),
                "checkpoint"
            );
        }
        if stopping {
            break;
        }
    }
    summary.engine = engine.stats();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Answers status and rollback at once; starts compiling deploy candidates on
/// a thread of their own, to be swapped in at the next checkpoint.
fn handle_admin(swap: &SwapControl, rules: &mut RulesSlot, candidates: &mpsc::Sender<Candidate>) {
    while let Ok(request) = swap.requests.try_recv() {
        match request.action {
            AdminAction::Status => {
                let _ = request.reply.send(Ok(serde_json::json!({
                    "active": rules.rule_version(),
                    "history": rules.history(),
                })));
            }
            AdminAction::Rollback => {
                let _ = candidates.send(Candidate::Rollback(request.reply));
            }
            AdminAction::Deploy(path) => {
                let loader = swap.loader.clone();
                let candidates = candidates.clone();
                let reply = request.reply;
                std::thread::spawn(move || {
                    let loaded = loader(&path);
                    let _ = candidates.send(Candidate::Deploy(Box::new(loaded), path, reply));
                });
            }
        }
    }
}

/// Offsets read so far, over the offsets the run started from.
fn merged(start: &BTreeMap<i32, i64>, read: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    let mut all = start.clone();
    all.extend(read.iter().map(|(&p, &o)| (p, o)));
    all
}
