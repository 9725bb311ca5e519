//! The streaming run: a [`StreamSource`] in, engine and rules, checkpoints into
//! the state store and the sink, until stopped (or, with `until_end`, until the
//! source's end as of the start).
//!
//! The event loop polls, ingests, runs the rules, serves rule changes and cuts
//! checkpoints; the [`CheckpointThread`] beside it completes them with the
//! run's [`CheckpointStore`], so the event flow stalls only for a cut. A change
//! of rules is applied right after a cut: each checkpoint is processed by one
//! rules version. A job on its own and a group member run the same loop: one
//! has an engine over the whole topic and its own state store, the other an
//! engine per partition it holds and the group's storage (`engines`,
//! `membership`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ingest::{ingest, Intake};
use super::summary::StreamSummary;
use crate::checkpoint::{
    CheckpointError, CheckpointStore, CheckpointThread, Checkpointer, Completed, Cut,
};
use crate::clock::wall_clock_ms;
use crate::engine::{Engine, EngineError};
use crate::event::EventBlock;
use crate::metrics::{fault_kind, wall_clock_s, CheckpointNote, JobMetrics};
use crate::rules::lifecycle::{Change, RulesLifecycle};
use crate::rules::RulesRuntime;
use crate::sink::RejectedEvent;
use crate::source::StreamSource;

mod engines;
mod membership;
#[cfg(test)]
mod tests;

pub(crate) use engines::Engines;

/// How long after losing a partition to another member's claim a member
/// claims it again, if the group still assigns it here: longer than a
/// member takes to hear from the group that it lost it.
const RECLAIM_AFTER: Duration = Duration::from_secs(10);

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
    /// Record and field bounds, and the future-skew bound.
    pub intake: Intake,
    /// A partition whose clock runs further ahead of the slowest one is
    /// paused until it catches up (`--max-partition-drift`).
    pub max_partition_drift: Duration,
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
    /// The source failed.
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
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

/// The parts a streaming run drives.
pub struct StreamParts<'a, S, K, C> {
    /// The input, positioned at the recovered offsets.
    pub source: S,
    /// The engines as recovered.
    pub(crate) engines: Engines,
    /// Where checkpoints are kept.
    pub(crate) store: C,
    /// The rules and the changes asked of them.
    pub rules: &'a mut RulesLifecycle,
    /// The output.
    pub sink: &'a mut K,
    /// Where the loop reports what it does.
    pub metrics: Arc<JobMetrics>,
}

impl<'a, S, K> StreamParts<'a, S, K, Checkpointer> {
    /// The parts of a job that reads every partition itself, its state in
    /// its own store.
    pub fn whole(
        source: S,
        engine: Engine,
        checkpointer: Checkpointer,
        rules: &'a mut RulesLifecycle,
        sink: &'a mut K,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        Self {
            source,
            engines: Engines::for_topic(engine),
            store: checkpointer,
            rules,
            sink,
            metrics,
        }
    }
}

/// Runs until `stop` is set (a final checkpoint keeps open sessions for the next
/// run) or, with `until_end`, until the source's end as of the start.
pub fn run_streaming<S, K, C>(
    runtime: &tokio::runtime::Handle,
    parts: StreamParts<'_, S, K, C>,
    config: StreamConfig,
    start_offsets: BTreeMap<i32, i64>,
    stop: &AtomicBool,
) -> Result<StreamSummary, StreamError>
where
    S: StreamSource,
    K: Send,
    C: CheckpointStore<K>,
{
    let StreamParts { source, engines, store, rules, sink, metrics } = parts;
    std::thread::scope(|scope| {
        let checkpoints = CheckpointThread::start(scope, runtime, store, sink)?;
        let now = Instant::now();
        let job = EventLoop {
            source_name: source.name(),
            last_message: source.partitions().iter().map(|&p| (p, now)).collect(),
            source,
            engines,
            rules,
            checkpoints,
            config,
            start_offsets,
            summary: StreamSummary::default(),
            dead_letters: Vec::new(),
            last_checkpoint: now,
            oldest_staged: None,
            failures: 0,
            ends: None,
            paused: BTreeSet::new(),
            metrics,
            last_report: now,
            off_partition_logged: 0,
            unstarted: BTreeSet::new(),
            lost: BTreeMap::new(),
            unreadable: BTreeMap::new(),
        };
        job.run(stop)
    })
}

/// The event loop and what it keeps between iterations.
struct EventLoop<'a, S> {
    source: S,
    source_name: String,
    engines: Engines,
    rules: &'a mut RulesLifecycle,
    checkpoints: CheckpointThread,
    config: StreamConfig,
    start_offsets: BTreeMap<i32, i64>,
    summary: StreamSummary,
    /// When each partition last delivered, for idleness.
    last_message: HashMap<i32, Instant>,
    /// Dead letters of the latest poll, on their way to their engine's output.
    dead_letters: Vec<RejectedEvent>,
    last_checkpoint: Instant,
    /// When the oldest session waiting for the next checkpoint closed.
    oldest_staged: Option<Instant>,
    /// Failed attempts at the batch at the head of the engine's queue.
    failures: u32,
    /// Where the source ends, with `until_end`.
    ends: Option<BTreeMap<i32, i64>>,
    /// Partitions paused for running ahead of the others.
    paused: BTreeSet<i32>,
    metrics: Arc<JobMetrics>,
    /// When the lag was last reported.
    last_report: Instant,
    /// Events off their user's partition when that was last logged.
    off_partition_logged: u64,
    /// Partitions claimed whose reading could not start: claimed again if
    /// still assigned after the next poll.
    unstarted: BTreeSet<i32>,
    /// Partitions another member claimed, and when to claim them again if
    /// the group still assigns them here.
    lost: BTreeMap<i32, Instant>,
    /// Partitions claimed whose state could not be read: paused, with when
    /// to claim (and read) them again and why they could not be read.
    unreadable: BTreeMap<i32, (Instant, String)>,
}

impl<S: StreamSource> EventLoop<'_, S> {
    fn run(mut self, stop: &AtomicBool) -> Result<StreamSummary, StreamError> {
        let started = Instant::now();
        self.engines.register_partitions(self.source.partitions());
        self.engines.declare_fields(&self.rules.rules().declarations().fields);
        self.metrics.set_partitions(self.source.partitions());
        self.observe_engine_size();
        self.report_rules();
        if self.config.until_end {
            let ends = self.source.end_offsets(Duration::from_secs(30));
            self.ends = Some(ends.map_err(|e| StreamError::Source(Box::new(e)))?);
        }
        loop {
            self.poll();
            self.rebalance()?;
            self.take_completed()?;
            if !self.run_rules()? {
                self.serve_requests_while_failing();
                continue;
            }
            self.rules.serve_requests(self.summary.read, self.summary.checkpoints);
            let offsets = merged(&self.start_offsets, self.source.positions());
            let at_end = self.at_end(&offsets);
            if at_end {
                self.engines.advance(self.rules.rules(), true)?;
            }
            let stopping = at_end || stop.load(Ordering::Relaxed);
            // No change of rules after the final checkpoint: it would be
            // answered as done yet not be recorded in any checkpoint.
            let change = if stopping { None } else { self.rules.next_change() };
            if stopping
                || change.is_some()
                || self.last_checkpoint.elapsed() >= self.config.checkpoint_interval
            {
                self.checkpoint(offsets, change)?;
            }
            if stopping {
                break;
            }
        }
        self.finish(started)
    }

    /// Reads what the source has, into the engine and the dead letters, and
    /// marks partitions that have been silent too long as idle.
    fn poll(&mut self) {
        let max = self.config.max_events_per_batch;
        let mut block = EventBlock::new(max.min(65_536), self.config.intake.limits)
            .with_fields(self.engines.field_paths());
        self.source.poll_into(&mut block, max, Duration::from_millis(100));
        self.summary.read += block.len() as u64;
        let now = Instant::now();
        let last_message = &mut self.last_message;
        let intake = self.config.intake;
        let rejected = ingest(
            &block,
            wall_clock_ms(),
            &intake,
            &mut self.engines,
            &self.source_name,
            &mut self.dead_letters,
            |p| {
                last_message.insert(p, now);
            },
        );
        self.summary.rejected += rejected.total();
        self.metrics.observe_rejected(rejected.by_class());
        self.engines.route_dead_letters(&mut self.dead_letters);
        self.metrics.observe_batch(self.engines.figures(), block.len() as u64);
        if now.duration_since(self.last_report) >= Duration::from_millis(500) {
            self.metrics.observe_lag(&self.source.lags());
            self.last_report = now;
            self.warn_off_partition();
        }
        let offsets = merged(&self.start_offsets, self.source.positions());
        for (&p, &seen) in &self.last_message {
            // A paused partition is silent because it was paused; one read to
            // its end in a run to the end has nothing more to say.
            let silent =
                now.duration_since(seen) >= self.config.idle_timeout && !self.paused.contains(&p);
            let finished = self
                .ends
                .as_ref()
                .and_then(|ends| ends.get(&p))
                .is_some_and(|&end| end <= 0 || offsets.get(&p).is_some_and(|&o| o >= end));
            self.engines.set_idle(p, silent || finished);
        }
        self.summary.peak_waiting = self.summary.peak_waiting.max(self.engines.events_waiting());
        self.align_partitions(now);
    }

    /// Says once, and again whenever the count has doubled, that users' events
    /// arrive on several partitions: lateness is judged per partition, so such
    /// input makes events late that are not.
    fn warn_off_partition(&mut self) {
        let off = self.engines.stats().off_partition;
        if off > 0 && off >= self.off_partition_logged.saturating_mul(2) {
            tracing::warn!(
                events = off,
                "events of a user arrive on more than one partition: key the topic by uuid \
                 (docs/operating.md: Input keyed by user)"
            );
            self.off_partition_logged = off;
        }
    }

    /// Pauses the partitions that run too far ahead of the slowest, and
    /// resumes those that no longer do: without it, one lagging partition
    /// holds the watermark back while the others pile up waiting events
    /// without limit.
    fn align_partitions(&mut self, now: Instant) {
        let drift = i64::try_from(self.config.max_partition_drift.as_millis()).unwrap_or(i64::MAX);
        let ahead: BTreeSet<i32> = self.engines.partitions_ahead(drift).into_iter().collect();
        let resume: Vec<i32> = self.paused.difference(&ahead).copied().collect();
        let pause: Vec<i32> = ahead.difference(&self.paused).copied().collect();
        if !resume.is_empty() {
            match self.source.resume(&resume) {
                Ok(()) => {
                    for p in &resume {
                        self.paused.remove(p);
                        self.last_message.insert(*p, now);
                    }
                    tracing::debug!(partitions = ?resume, "resumed: the others caught up");
                }
                Err(error) => tracing::warn!(%error, "resuming partitions failed; retried"),
            }
        }
        if !pause.is_empty() {
            match self.source.pause(&pause) {
                Ok(()) => {
                    self.summary.partition_pauses += pause.len() as u64;
                    self.paused.extend(&pause);
                    tracing::debug!(partitions = ?pause, "paused: ahead of the slowest partition");
                }
                Err(error) => tracing::warn!(%error, "pausing partitions failed; retried"),
            }
        }
    }

    /// Runs the rules on what the watermark released. A failed batch is kept
    /// for the next iteration (returns false); after too many attempts the
    /// fault policy applies.
    fn run_rules(&mut self) -> Result<bool, StreamError> {
        match self.engines.advance(self.rules.rules(), false) {
            Ok(closed) => {
                self.failures = 0;
                if closed > 0 && self.oldest_staged.is_none() {
                    self.oldest_staged = Some(Instant::now());
                }
                Ok(true)
            }
            Err(error) => {
                if let EngineError::Rules(rules_error) = &error {
                    self.metrics.observe_plugin_fault(fault_kind(rules_error));
                }
                self.failures += 1;
                let rules = self.rules.rule_version().to_owned();
                tracing::error!(rules, %error, attempt = self.failures, "rules failed a batch; it is kept and retried");
                if self.failures >= self.config.rules_attempts {
                    self.give_up_on_rules(rules, error)?;
                    self.failures = 0;
                }
                Ok(false)
            }
        }
    }

    /// The rules failed a batch too often: roll back if the policy says so and
    /// there is a version to go back to; otherwise stop (the checkpoint thread
    /// still completes the checkpoints already cut).
    fn give_up_on_rules(&mut self, rules: String, error: EngineError) -> Result<(), StreamError> {
        if self.config.on_rules_failure == FaultPolicy::Rollback
            && self.rules.roll_back_after_failure(error.to_string()).is_some()
        {
            self.report_rules();
            return Ok(());
        }
        Err(StreamError::RulesFailed { rules, attempts: self.failures, source: error })
    }

    /// While the rules fail a batch no checkpoint can be cut (the batch waits
    /// for its retry), so a change of rules cannot wait for a boundary: it is
    /// applied at once, as a rollback after failures is, and the new rules get
    /// the batch with a fresh count of attempts. This is how an operator
    /// rescues a job whose rules keep failing: by deploying fixed ones.
    fn serve_requests_while_failing(&mut self) {
        self.rules.serve_requests(self.summary.read, self.summary.checkpoints);
        let Some(change) = self.rules.next_change() else { return };
        if let Some(took) = change.compile_time() {
            self.summary.candidate_compiles.record(took);
        }
        let (texts, sample) = self.engines.sample();
        if let Some(pause) = self.rules.apply(change, texts, sample) {
            self.summary.swap_pauses.record(pause);
            self.failures = 0;
        }
        self.report_rules();
    }

    /// The rules in force and their history, to the metrics.
    fn report_rules(&mut self) {
        let diverged = self.rules.group_diverged().map(str::to_owned);
        let slot = self.rules.rules();
        self.metrics.observe_rules(slot.rule_version(), slot.history());
        if self.rules.is_group_member() {
            self.metrics.observe_group_rules(diverged);
        }
    }

    /// Whether every partition has been read up to where it ended at the start.
    fn at_end(&self, offsets: &BTreeMap<i32, i64>) -> bool {
        self.ends.as_ref().is_some_and(|ends| {
            ends.iter().all(|(p, &end)| end <= 0 || offsets.get(p).is_some_and(|&o| o >= end))
        })
    }

    /// Cuts a checkpoint at `offsets` and hands it to the checkpoint thread;
    /// then, at that boundary, applies `change`.
    fn checkpoint(
        &mut self,
        offsets: BTreeMap<i32, i64>,
        change: Option<Change>,
    ) -> Result<(), StreamError> {
        let boundary = Instant::now();
        self.observe_engine_size();
        let columns = self.rules.rules().declarations().attributes.clone();
        let mut checkpoint = self.engines.cut(&offsets, self.rules.rule_version(), &columns)?;
        checkpoint.publish = self.rules.take_publish();
        for output in checkpoint.outputs() {
            self.summary.sessions_written += output.sessions.len() as u64;
            self.metrics.observe_output(&output.sessions, &output.rejected);
        }
        self.checkpoints.submit(Cut { checkpoint, oldest_closed: self.oldest_staged.take() })?;
        self.summary.checkpoint_stalls.record(boundary.elapsed());
        // At the checkpoint boundary: everything before it was cut by the old
        // rules, everything after by the new.
        if let Some(change) = change {
            if let Some(took) = change.compile_time() {
                self.summary.candidate_compiles.record(took);
            }
            let (texts, sample) = self.engines.sample();
            if let Some(pause) = self.rules.apply(change, texts, sample) {
                self.summary.swap_pauses.record(pause);
                self.summary.swap_stalls.record(boundary.elapsed());
                self.engines.declare_fields(&self.rules.rules().declarations().fields);
            }
            self.report_rules();
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Takes note of checkpoints the checkpoint thread has completed.
    fn take_completed(&mut self) -> Result<(), StreamError> {
        while let Some(completed) = self.checkpoints.try_completed() {
            let mut completed = completed?;
            if !completed.fenced.is_empty() {
                self.lose(&completed.fenced);
            }
            if let Some(update) = completed.fleet.take() {
                if update.refused.is_some() {
                    self.metrics.observe_publish_refused();
                }
                self.rules.take_in_group(*update);
                self.report_rules();
            }
            completed_checkpoint(&mut self.source, &mut self.summary, &self.metrics, completed);
        }
        Ok(())
    }

    /// Open sessions, users waiting and texts, to the metrics.
    fn observe_engine_size(&self) {
        self.metrics.observe_engine_size(self.engines.size());
    }

    /// Waits for the checkpoint thread to finish the last checkpoints.
    fn finish(self, started: Instant) -> Result<StreamSummary, StreamError> {
        let size = self.engines.size();
        let EventLoop { checkpoints, mut source, mut summary, engines, metrics, .. } = self;
        for completed in checkpoints.finish() {
            completed_checkpoint(&mut source, &mut summary, &metrics, completed?);
        }
        metrics.observe_engine_size(size);
        summary.engine = engines.stats();
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}

/// A checkpoint is durable and published: report its offsets to the source
/// (for monitoring) and count it.
fn completed_checkpoint(
    source: &mut impl StreamSource,
    summary: &mut StreamSummary,
    metrics: &JobMetrics,
    completed: Completed,
) {
    source.commit_consumed(&completed.offsets);
    let visible_after = completed.oldest_closed.map(|closed| closed.elapsed());
    if let Some(latency) = visible_after {
        summary.max_visibility_latency = summary.max_visibility_latency.max(latency);
    }
    summary.checkpoints += 1;
    tracing::info!(
        checkpoint = completed.id,
        consumed = completed.offsets.values().sum::<i64>(),
        sessions = completed.sessions,
        took_ms = completed.took.as_millis(),
        commit_ms = completed.commit_took.as_millis(),
        visible_after_ms = visible_after.map(|latency| latency.as_millis()),
        "checkpoint"
    );
    let note = CheckpointNote {
        id: completed.id,
        at_unix_s: wall_clock_s(),
        took: completed.took,
        commit_took: completed.commit_took,
        visible_after,
        sessions: completed.sessions,
        dead_letters: completed.dead_letters,
        state_bytes: completed.state_bytes,
    };
    metrics.observe_checkpoint(&note, &completed.offsets);
}

/// Offsets read so far, over the offsets the run started from.
fn merged(start: &BTreeMap<i32, i64>, read: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    let mut all = start.clone();
    all.extend(read.iter().map(|(&p, &o)| (p, o)));
    all
}
