//! The streaming job: Kafka in, engine and rules, checkpoints into the state
//! store and Iceberg, until stopped (or, in test mode, until the topic's end).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::admin::{AdminAction, AdminRequest};
use crate::checkpoint::{
    CheckpointError, CheckpointThread, Checkpointer, Completed, Cut, PendingCheckpoint,
};
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
    /// Failed attempts at one batch before `on_rules_failure` applies.
    pub rules_attempts: u32,
    /// What happens when the rules keep failing a batch.
    pub on_rules_failure: FaultPolicy,
}

/// What the job does when the rules fail the same batch `rules_attempts` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPolicy {
    /// Go back to the previous rules version and retry; stop if there is none.
    Rollback,
    /// Stop at the last checkpoint (a restart resumes there).
    Stop,
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
    /// The rules kept failing a batch and the job stopped at its last checkpoint.
    #[error(
        "rules {rules} failed the same batch {attempts} times ({source}); the job stopped at \
         its last checkpoint and resumes there on restart: fix the rules, or start with \
         --plugin pointing at a version that works"
    )]
    RulesFailed {
        /// The rule version that failed.
        rules: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        source: EngineError,
    },
}

/// How long the event loop stood still, one sample per occurrence.
#[derive(Debug, Clone)]
pub struct Stalls(hdrhistogram::Histogram<u64>);

impl Default for Stalls {
    fn default() -> Self {
        // Microseconds, from 1 µs to an hour, 3 significant digits.
        Self(
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant bounds are valid"),
        )
    }
}

impl Stalls {
    /// Adds one sample.
    pub fn record(&mut self, stall: Duration) {
        self.0.saturating_record(u64::try_from(stall.as_micros()).unwrap_or(u64::MAX));
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The stall at quantile `q` (0.5 is the median, 1.0 the longest).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.0.value_at_quantile(q))
    }
}

impl std::fmt::Display for Stalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0)
        )
    }
}

/// What a streaming run did.
#[derive(Debug, Clone, Default)]
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
    /// The event loop standing still for each checkpoint.
    pub checkpoint_stalls: Stalls,
    /// The event loop standing still for each change of rules: the dry run
    /// and the switch (compiling happens off the loop).
    pub swap_pauses: Stalls,
    /// The same, plus the checkpoint the change waits for.
    pub swap_stalls: Stalls,
}

impl std::fmt::Display for StreamSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_counts(f, self.read, &self.engine, self.rejected, self.sessions_written)?;
        writeln!(
            f,
            "checkpoints:       {} (sessions visible in Iceberg at most {:.2?} after closing; \
             event flow stalled {})",
            self.checkpoints, self.max_visibility_latency, self.checkpoint_stalls
        )?;
        if self.swap_pauses.count() > 0 {
            writeln!(
                f,
                "rule changes:      {} (event flow paused {}; with the checkpoint: {})",
                self.swap_pauses.count(),
                self.swap_pauses,
                self.swap_stalls
            )?;
        }
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

/// Runs until `stop` is set (a final checkpoint keeps open sessions for the next
/// run) or, with `until_end`, until the topic's end as of the start.
///
/// Checkpoints are cut on the event loop and completed (state store, Iceberg)
/// on a thread of their own, so the event flow stalls only for the cut.
pub fn run_streaming(
    runtime: &tokio::runtime::Handle,
    parts: StreamParts<'_>,
    config: StreamConfig,
    start_offsets: BTreeMap<i32, i64>,
    stop: &AtomicBool,
) -> Result<StreamSummary, StreamError> {
    let StreamParts { source, engine, checkpointer, rules, sink, swap } = parts;
    std::thread::scope(|scope| {
        let checkpoints = CheckpointThread::start(scope, runtime, checkpointer, sink)?;
        let job = EventLoop {
            source,
            engine,
            rules,
            swap,
            checkpoints,
            config,
            start_offsets,
            summary: StreamSummary::default(),
        };
        job.run(stop)
    })
}

/// The event loop: poll, offer, advance the rules, cut checkpoints, swap rules.
struct EventLoop<'a> {
    source: KafkaSource,
    engine: Engine,
    rules: &'a mut RulesSlot,
    swap: Option<SwapControl>,
    checkpoints: CheckpointThread,
    config: StreamConfig,
    start_offsets: BTreeMap<i32, i64>,
    summary: StreamSummary,
}

impl EventLoop<'_> {
    fn run(mut self, stop: &AtomicBool) -> Result<StreamSummary, StreamError> {
        let (candidates_tx, candidates) = mpsc::channel::<Candidate>();
        let mut failures = 0u32;
        let started = Instant::now();
        let config = self.config;
        let partitions: Vec<i32> = self.source.partitions().to_vec();
        self.engine.register_partitions(partitions.iter().map(|&p| p as usize));
        let ends = if config.until_end {
            Some(self.source.end_offsets(Duration::from_secs(30))?)
        } else {
            None
        };
        let source_name = format!("kafka:{}", self.source.topic());
        let mut last_message: HashMap<i32, Instant> =
            partitions.iter().map(|&p| (p, Instant::now())).collect();
        let mut staged = StagedOutput::default();
        let mut last_checkpoint = Instant::now();
        // When the oldest session waiting for the next checkpoint closed.
        let mut oldest_staged: Option<Instant> = None;
        loop {
            let mut block = EventBlock::with_capacity(config.max_events_per_batch.min(65_536));
            self.source.poll_into(
                &mut block,
                config.max_events_per_batch,
                Duration::from_millis(100),
            );
            self.summary.read += block.len() as u64;
            let now = Instant::now();
            for record in block.records() {
                match record {
                    BlockRecord::Event(partition, offset, raw, event) => {
                        last_message.insert(partition, now);
                        if let Admission::Late { behind_ms } =
                            self.engine.offer(partition as usize, &event)
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
                        self.summary.rejected += 1;
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
                self.engine.set_idle(p as usize, now.duration_since(seen) >= config.idle_timeout);
            }
            self.take_completed()?;
            let closed = match self.engine.advance(self.rules, false) {
                Ok(closed) => {
                    failures = 0;
                    closed
                }
                Err(error) => {
                    failures += 1;
                    let rules = self.rules.rule_version().to_owned();
                    tracing::error!(rules, %error, attempt = failures, "rules failed a batch; it is kept and retried");
                    if failures >= config.rules_attempts {
                        self.give_up_on_rules(rules, failures, error)?;
                        failures = 0;
                    }
                    continue;
                }
            };
            if !closed.is_empty() && oldest_staged.is_none() {
                oldest_staged = Some(Instant::now());
            }
            staged.sessions.extend(closed);
            if let Some(swap) = &self.swap {
                handle_admin(swap, self.rules, &self.summary, &candidates_tx);
            }
            let offsets = merged(&self.start_offsets, self.source.positions());
            let at_end = ends.as_ref().is_some_and(|ends| {
                ends.iter().all(|(p, &end)| end <= 0 || offsets.get(p).is_some_and(|&o| o >= end))
            });
            if at_end {
                staged.sessions.extend(self.engine.advance(self.rules, true)?);
            }
            let stopping = at_end || stop.load(Ordering::Relaxed);
            // No change of rules after the final checkpoint: it would be
            // answered as done yet not be recorded in any checkpoint.
            let candidate = if stopping { None } else { candidates.try_recv().ok() };
            if stopping
                || candidate.is_some()
                || last_checkpoint.elapsed() >= config.checkpoint_interval
            {
                let boundary = Instant::now();
                let output = std::mem::take(&mut staged);
                self.summary.sessions_written += output.sessions.len() as u64;
                let pending = PendingCheckpoint::cut(
                    &mut self.engine,
                    offsets,
                    output,
                    self.rules.rule_version(),
                )?;
                self.checkpoints.submit(Cut { pending, oldest_closed: oldest_staged.take() })?;
                self.summary.checkpoint_stalls.record(boundary.elapsed());
                // At the checkpoint boundary: everything before it was cut by
                // the old rules, everything after by the new.
                if let Some(candidate) = candidate {
                    self.change_rules(candidate, boundary);
                }
                last_checkpoint = Instant::now();
            }
            if stopping {
                break;
            }
        }
        // Wait for the checkpoint thread to finish the last checkpoints.
        let EventLoop { checkpoints, mut source, mut summary, engine, .. } = self;
        for completed in checkpoints.finish() {
            completed_checkpoint(&mut source, &mut summary, &engine, completed?);
        }
        summary.engine = engine.stats();
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// The rules failed a batch too often: roll back if the policy says so and
    /// there is a version to go back to; otherwise stop (the checkpoint thread
    /// still completes the checkpoints already cut).
    fn give_up_on_rules(
        &mut self,
        rules: String,
        attempts: u32,
        error: EngineError,
    ) -> Result<(), StreamError> {
        if self.config.on_rules_failure == FaultPolicy::Rollback {
            if let Ok(version) = self.rules.rollback(Some(error.to_string())) {
                tracing::warn!(
                    failed = rules,
                    rules = version,
                    "rolled back after repeated failures"
                );
                return Ok(());
            }
        }
        Err(StreamError::RulesFailed { rules, attempts, source: error })
    }

    /// Takes note of checkpoints the checkpoint thread has completed.
    fn take_completed(&mut self) -> Result<(), StreamError> {
        while let Some(completed) = self.checkpoints.try_completed() {
            completed_checkpoint(&mut self.source, &mut self.summary, &self.engine, completed?);
        }
        Ok(())
    }

    /// Swaps in a candidate or rolls back, and answers the request.
    fn change_rules(&mut self, candidate: Candidate, boundary: Instant) {
        let swap_started = Instant::now();
        let summary = &mut self.summary;
        let mut swapped = || {
            let pause = swap_started.elapsed();
            summary.swap_pauses.record(pause);
            summary.swap_stalls.record(boundary.elapsed());
            pause
        };
        match candidate {
            Candidate::Rollback(reply) => {
                let answer = self
                    .rules
                    .rollback(Some("requested".into()))
                    .map(|version| {
                        let pause = swapped();
                        tracing::info!(rules = version, ?pause, "rules rolled back");
                        serde_json::json!({ "active": version })
                    })
                    .map_err(|e| e.to_string());
                let _ = reply.send(answer);
            }
            Candidate::Deploy(loaded, path, reply) => {
                let engine = &self.engine;
                let rules = &mut *self.rules;
                let outcome =
                    loaded.and_then(|c| rules.deploy(c, engine.texts(), engine.sample_batch()));
                let answer = match outcome {
                    Ok(version) => {
                        // The event flow waits only for the dry run and the switch.
                        let pause = swapped();
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
        }
    }
}

/// A checkpoint is durable and published: commit its offsets to the group
/// (for monitoring) and count it.
fn completed_checkpoint(
    source: &mut KafkaSource,
    summary: &mut StreamSummary,
    engine: &Engine,
    completed: Completed,
) {
    source.commit_to_group(&completed.offsets);
    if let Some(closed) = completed.oldest_closed {
        summary.max_visibility_latency = summary.max_visibility_latency.max(closed.elapsed());
    }
    summary.checkpoints += 1;
    tracing::info!(
        checkpoint = completed.id,
        consumed = completed.offsets.values().sum::<i64>(),
        users_in_memory = engine.users_in_memory(),
        "checkpoint"
    );
}

/// Answers status and rollback at once; starts compiling deploy candidates on
/// a thread of their own, to be swapped in at the next checkpoint.
fn handle_admin(
    swap: &SwapControl,
    rules: &mut RulesSlot,
    summary: &StreamSummary,
    candidates: &mpsc::Sender<Candidate>,
) {
    while let Ok(request) = swap.requests.try_recv() {
        match request.action {
            AdminAction::Status => {
                let _ = request.reply.send(Ok(serde_json::json!({
                    "active": rules.rule_version(),
                    "history": rules.history().collect::<Vec<_>>(),
                    "events_read": summary.read,
                    "checkpoints": summary.checkpoints,
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
