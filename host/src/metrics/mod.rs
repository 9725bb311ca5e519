//! What a job tells its operators: Prometheus metrics, readiness, and the
//! recent activity the status page shows.
//!
//! The stages do not know about metrics: the job's loops read the engine, the
//! source and completed checkpoints, and report here — per batch or per
//! checkpoint, never per event. Metric names follow Prometheus' naming guide
//! (`sessionize_` prefix, `_total` counters, base units in the name).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::EngineStats;
use crate::rules::lifecycle::SwapEvent;
use crate::sink::{RejectedEvent, SessionRow};

mod families;
mod figures;
mod recent;

use families::{EndReason, FaultKind, Outcome, Partition, Reason, RuleVersion, RulesAction};

pub use figures::{EngineFigures, EngineSize};
pub use recent::{CheckpointNote, DeadLetterNote, Recent, Sample};

/// End reasons labelled one by one; later ones are counted together.
const MAX_END_REASONS: usize = 32;
/// The label those later end reasons share.
const OTHER_END_REASONS: &str = "(other)";

/// What decides `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// More events than this behind the end of the input is not caught up.
    pub max_lag: u64,
    /// A job whose last checkpoint completed longer ago than this (or that
    /// has completed none for this long since it started) is not ready.
    pub max_checkpoint_age: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { max_lag: 10_000, max_checkpoint_age: Duration::from_secs(60) }
    }
}

/// The headline numbers, as the status page shows them (each one is a metric).
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// `sessionize_events_read_total`.
    pub read: u64,
    /// `sessionize_events_total` by outcome.
    pub accepted: u64,
    /// Late events.
    pub late: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Rejected records.
    pub rejected: u64,
    /// `sessionize_sessions_closed_total`, all end reasons.
    pub sessions_closed: u64,
    /// `sessionize_open_sessions`.
    pub open_sessions: i64,
    /// `sessionize_users_waiting`.
    pub users_waiting: i64,
    /// `sessionize_pending_events`.
    pub pending_events: i64,
    /// `sessionize_watermark_delay_seconds`.
    pub watermark_delay_s: f64,
    /// The sum of `sessionize_consumer_lag`.
    pub lag: u64,
    /// `sessionize_checkpoints_total`.
    pub checkpoints: u64,
    /// `sessionize_rules_info`'s version.
    pub rule_version: String,
    /// `/readyz`.
    pub readiness: Result<(), Vec<String>>,
}

/// The metrics of one job, shared by its loops and the status endpoint.
pub struct JobMetrics {
    registry: Registry,
    started: Instant,
    readiness: Readiness,
    read: Counter,
    off_partition: Counter,
    events: Family<Outcome, Counter>,
    rejected: Family<Reason, Counter>,
    sessions_closed: Family<EndReason, Counter>,
    /// All of `sessions_closed`, for the page.
    sessions_closed_sum: AtomicU64,
    /// The end reasons `sessions_closed` has a label for.
    end_reasons: Mutex<BTreeSet<String>>,
    lag: Family<Partition, Gauge>,
    committed: Family<Partition, Gauge>,
    watermark: Gauge<f64, AtomicU64>,
    watermark_delay: Gauge<f64, AtomicU64>,
    open_sessions: Gauge,
    users_waiting: Gauge,
    pending_events: Gauge,
    users_in_memory: Gauge,
    texts: Gauge,
    state_bytes: Gauge,
    checkpoints: Counter,
    checkpoint_duration: Histogram,
    commit_duration: Histogram,
    visibility_delay: Histogram,
    plugin_calls: Counter,
    plugin_call_duration: Histogram,
    plugin_faults: Family<FaultKind, Counter>,
    rules_changes: Family<RulesAction, Counter>,
    rules_info: Family<RuleVersion, Gauge>,
    last_checkpoint_time: Gauge<f64, AtomicU64>,
    group_rules_followed: Gauge,
    partitions_unreadable: Gauge,
    publishes_refused: Counter,
    /// Why a group member does not run its group's rules, if it does not.
    diverged: Mutex<Option<String>>,
    /// Partitions held whose state cannot be read, and why.
    unreadable: Mutex<BTreeMap<i32, String>>,
    /// Engine counters already added to the metrics.
    reported: Mutex<EngineStats>,
    /// Milliseconds since `started` of the last completed checkpoint; -1 if none.
    last_checkpoint_ms: AtomicI64,
    /// Partitions the job reads; 0 until it reads any.
    partitions: AtomicU64,
    /// The partitions as last set, whose gauges a later set may remove.
    reported_partitions: Mutex<BTreeSet<i32>>,
    /// The sum of the per-partition lags.
    total_lag: AtomicU64,
    recent: Mutex<Recent>,
}

impl std::fmt::Debug for JobMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobMetrics").finish_non_exhaustive()
    }
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self::new(Readiness::default())
    }
}

/// Seconds, from 1 ms to about 10 minutes: checkpoints, commits, visibility.
fn slow_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 20)
}

impl JobMetrics {
    /// A fresh set, all zero.
    pub fn new(readiness: Readiness) -> Self {
        let this = Self {
            registry: Registry::default(),
            started: Instant::now(),
            readiness,
            read: Counter::default(),
            off_partition: Counter::default(),
            events: Family::default(),
            rejected: Family::default(),
            sessions_closed: Family::default(),
            sessions_closed_sum: AtomicU64::new(0),
            end_reasons: Mutex::default(),
            lag: Family::default(),
            committed: Family::default(),
            watermark: Gauge::default(),
            watermark_delay: Gauge::default(),
            open_sessions: Gauge::default(),
            users_waiting: Gauge::default(),
            pending_events: Gauge::default(),
            users_in_memory: Gauge::default(),
            texts: Gauge::default(),
            state_bytes: Gauge::default(),
            checkpoints: Counter::default(),
            checkpoint_duration: Histogram::new(slow_buckets()),
            commit_duration: Histogram::new(slow_buckets()),
            visibility_delay: Histogram::new(slow_buckets()),
            plugin_calls: Counter::default(),
            // 10 µs to about 5 s: one call is one batch of many users.
            plugin_call_duration: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            plugin_faults: Family::default(),
            rules_changes: Family::default(),
            rules_info: Family::default(),
            last_checkpoint_time: Gauge::default(),
            group_rules_followed: Gauge::default(),
            partitions_unreadable: Gauge::default(),
            publishes_refused: Counter::default(),
            diverged: Mutex::default(),
            unreadable: Mutex::default(),
            reported: Mutex::new(EngineStats::default()),
            last_checkpoint_ms: AtomicI64::new(-1),
            partitions: AtomicU64::new(0),
            reported_partitions: Mutex::default(),
            total_lag: AtomicU64::new(0),
            recent: Mutex::new(Recent::default()),
        };
        let mut registry = Registry::with_prefix("sessionize");
        families::register(&mut registry, &this);
        Self { registry, ..this }
    }

    /// The metrics in the OpenMetrics text format (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The partitions the job reads. The lag and offset of partitions it no
    /// longer reads go (after a rebalance another member reports them: two
    /// series for one partition would add up wrong).
    pub fn set_partitions(&self, partitions: &[i32]) {
        self.partitions.store(partitions.len() as u64, Ordering::Relaxed);
        let mut known = lock(&self.reported_partitions);
        for &partition in known.iter().filter(|p| !partitions.contains(p)) {
            self.lag.remove(&Partition { partition });
            self.committed.remove(&Partition { partition });
        }
        known.clear();
        known.extend(partitions);
    }

    /// After a batch: the engines' counters and gauges, and `read` more records.
    pub fn observe_batch(&self, engine: EngineFigures, read: u64) {
        self.read.inc_by(read);
        let now = engine.stats;
        let mut reported = lock(&self.reported);
        self.events
            .get_or_create(&Outcome { outcome: "accepted" })
            .inc_by(now.accepted.saturating_sub(reported.accepted));
        self.events
            .get_or_create(&Outcome { outcome: "late" })
            .inc_by(now.late.saturating_sub(reported.late));
        self.events
            .get_or_create(&Outcome { outcome: "duplicate" })
            .inc_by(now.duplicates.saturating_sub(reported.duplicates));
        self.plugin_calls.inc_by(now.plugin_calls.saturating_sub(reported.plugin_calls));
        self.off_partition.inc_by(now.off_partition.saturating_sub(reported.off_partition));
        *reported = now;
        drop(reported);
        self.pending_events.set(clamp(engine.waiting));
        self.users_in_memory.set(clamp(engine.users as u64));
        let watermark = engine.watermark;
        if watermark > i64::MIN && watermark < i64::MAX {
            let seconds = watermark as f64 / 1000.0;
            self.watermark.set(seconds);
            self.watermark_delay.set((wall_clock_s() - seconds).max(0.0));
        }
    }

    /// Records that were not events, each with its class.
    pub fn observe_rejected(&self, classes: &[(&'static str, u64)]) {
        let mut total = 0;
        for &(reason, count) in classes {
            self.rejected.get_or_create(&Reason { reason }).inc_by(count);
            total += count;
        }
        self.events.get_or_create(&Outcome { outcome: "rejected" }).inc_by(total);
    }

    /// The sessions of a cut, by end reason, and the dead letters to show.
    pub fn observe_output(&self, sessions: &[SessionRow], rejected: &[RejectedEvent]) {
        let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
        for session in sessions {
            *by_reason.entry(&session.end_reason).or_default() += 1;
        }
        self.sessions_closed_sum.fetch_add(sessions.len() as u64, Ordering::Relaxed);
        let mut labelled = lock(&self.end_reasons);
        for (end_reason, count) in by_reason {
            // The rules name end reasons: a bounded set of labels, so that
            // rules inventing a reason per session cannot grow the metrics.
            let known = labelled.contains(end_reason);
            let end_reason = if known || labelled.len() < MAX_END_REASONS {
                if !known {
                    labelled.insert(end_reason.to_owned());
                }
                end_reason
            } else {
                OTHER_END_REASONS
            };
            self.sessions_closed
                .get_or_create(&EndReason { end_reason: end_reason.to_owned() })
                .inc_by(count);
        }
        lock(&self.recent).dead_letters(rejected);
    }

    /// Gauges that take a walk over the engine's users: once per checkpoint.
    pub fn observe_engine_size(&self, size: EngineSize) {
        self.open_sessions.set(clamp(size.open_sessions as u64));
        self.users_waiting.set(clamp(size.users_waiting as u64));
        self.texts.set(clamp(size.texts as u64));
    }

    /// Per-partition lag (the partition's end minus the next offset to read).
    pub fn observe_lag(&self, lags: &BTreeMap<i32, i64>) {
        let mut total = 0u64;
        let known = lock(&self.reported_partitions);
        for (&partition, &lag) in lags.iter().filter(|(p, _)| known.is_empty() || known.contains(p))
        {
            let lag = lag.max(0);
            self.lag.get_or_create(&Partition { partition }).set(lag);
            total = total.saturating_add(lag as u64);
        }
        self.total_lag.store(total, Ordering::Relaxed);
    }

    /// A checkpoint was published.
    pub fn observe_checkpoint(&self, checkpoint: &CheckpointNote, offsets: &BTreeMap<i32, i64>) {
        self.checkpoints.inc();
        self.checkpoint_duration.observe(checkpoint.took.as_secs_f64());
        self.commit_duration.observe(checkpoint.commit_took.as_secs_f64());
        if let Some(delay) = checkpoint.visible_after {
            self.visibility_delay.observe(delay.as_secs_f64());
        }
        if let Some(bytes) = checkpoint.state_bytes {
            self.state_bytes.set(clamp(bytes));
        }
        // A last checkpoint for partitions handed over completes after they went.
        let known = lock(&self.reported_partitions);
        for (&partition, &offset) in offsets {
            if known.is_empty() || known.contains(&partition) {
                self.committed.get_or_create(&Partition { partition }).set(offset);
            }
        }
        drop(known);
        self.last_checkpoint_time.set(wall_clock_s());
        let since_start = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.last_checkpoint_ms.store(since_start, Ordering::Relaxed);
        lock(&self.recent).checkpoint(checkpoint.clone());
    }

    /// One call into the rules took `took`.
    pub fn observe_plugin_call(&self, took: Duration) {
        self.plugin_call_duration.observe(took.as_secs_f64());
    }

    /// The rules failed a batch; `kind` names how.
    pub fn observe_plugin_fault(&self, kind: &'static str) {
        self.plugin_faults.get_or_create(&FaultKind { kind }).inc();
    }

    /// The rules changed (or a change was refused): counts it, updates the
    /// version in force, and keeps the history for the status page.
    pub fn observe_rules<'a>(&self, active: &str, history: impl Iterator<Item = &'a SwapEvent>) {
        let history: Vec<SwapEvent> = history.cloned().collect();
        let mut recent = lock(&self.recent);
        for change in recent.rules_history(history) {
            let action = change.action.replace(' ', "_");
            if action != "started" && action != "resumed" {
                self.rules_changes.get_or_create(&RulesAction { action }).inc();
            }
        }
        recent.set_active(active);
        drop(recent);
        self.rules_info.clear();
        self.rules_info.get_or_create(&RuleVersion { rule_version: active.to_owned() }).set(1);
    }

    /// Whether a group member runs its group's rules: `None` if it does,
    /// otherwise why not (it runs its own meanwhile).
    pub fn observe_group_rules(&self, diverged: Option<String>) {
        self.group_rules_followed.set(i64::from(diverged.is_none()));
        *lock(&self.diverged) = diverged;
    }

    /// A change of rules made here was refused by the group.
    pub fn observe_publish_refused(&self) {
        self.publishes_refused.inc();
    }

    /// The partitions a group member holds but cannot restore, and why.
    pub fn observe_unreadable(&self, partitions: &BTreeMap<i32, String>) {
        self.partitions_unreadable.set(clamp(partitions.len() as u64));
        *lock(&self.unreadable) = partitions.clone();
    }

    /// The partitions whose state cannot be read, and why, for the page.
    pub fn unreadable(&self) -> BTreeMap<i32, String> {
        lock(&self.unreadable).clone()
    }

    /// Takes a sample of the charted values (called once a second).
    pub fn sample(&self) {
        let sample = Sample {
            at_unix_s: wall_clock_s(),
            events_read: self.read.get(),
            lag: self.total_lag.load(Ordering::Relaxed),
            open_sessions: self.open_sessions.get().max(0) as u64,
            watermark_delay_s: self.watermark_delay.get(),
        };
        lock(&self.recent).sample(sample);
    }

    /// The headline numbers.
    pub fn overview(&self) -> Overview {
        let outcome = |outcome| self.events.get_or_create(&Outcome { outcome }).get();
        Overview {
            read: self.read.get(),
            accepted: outcome("accepted"),
            late: outcome("late"),
            duplicates: outcome("duplicate"),
            rejected: outcome("rejected"),
            sessions_closed: self.sessions_closed_sum.load(Ordering::Relaxed),
            open_sessions: self.open_sessions.get(),
            users_waiting: self.users_waiting.get(),
            pending_events: self.pending_events.get(),
            watermark_delay_s: self.watermark_delay.get(),
            lag: self.total_lag.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.get(),
            rule_version: lock(&self.recent).active().to_owned(),
            readiness: self.readiness(),
        }
    }

    /// The recent activity, for the status page.
    pub fn recent(&self) -> MutexGuard<'_, Recent> {
        lock(&self.recent)
    }

    /// Whether the job is ready: `Ok` or why not, one sentence per reason.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        if self.partitions.load(Ordering::Relaxed) == 0 {
            why.push("no partitions assigned yet".to_owned());
        }
        let lag = self.total_lag.load(Ordering::Relaxed);
        if lag > self.readiness.max_lag {
            why.push(format!(
                "{lag} events behind the end of the input (ready at {} or fewer)",
                self.readiness.max_lag
            ));
        }
        let now_ms = self.started.elapsed().as_millis() as i64;
        let last = self.last_checkpoint_ms.load(Ordering::Relaxed);
        let age = Duration::from_millis(now_ms.saturating_sub(last.max(0)) as u64);
        if age > self.readiness.max_checkpoint_age {
            why.push(match last {
                -1 => format!("no checkpoint completed in {}s since the start", age.as_secs()),
                _ => format!("the last checkpoint completed {}s ago", age.as_secs()),
            });
        }
        if let Some(diverged) = lock(&self.diverged).as_ref() {
            why.push(format!("not running the group's rules: {diverged}"));
        }
        for (partition, error) in lock(&self.unreadable).iter() {
            why.push(format!(
                "partition {partition} is paused: its state cannot be read ({error})"
            ));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// The kind of a rules failure, as `sessionize_plugin_faults_total` labels it.
pub fn fault_kind(error: &crate::rules::RulesError) -> &'static str {
    use crate::rules::RulesError;
    match error {
        RulesError::Timeout(_) => "timeout",
        RulesError::OutOfMemory(_) => "out_of_memory",
        RulesError::Trapped(_) => "trapped",
        RulesError::Contract(_) => "contract",
        RulesError::Failed(_) | RulesError::Refused(_) => "failed",
        RulesError::Read { .. }
        | RulesError::Invalid(_)
        | RulesError::Declarations(_)
        | RulesError::Columns(_) => "invalid",
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) use crate::clock::wall_clock_s;

/// A poisoned lock only means a panic elsewhere; the data is still counters.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
