//! What a run did: the counters and timings printed at the end of it.

use std::time::Duration;

use crate::engine::EngineStats;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Non-blank records read.
    pub read: u64,
    /// The engine's counters (accepted, late, duplicates, ...).
    pub engine: EngineStats,
    /// Records that were not valid events.
    pub rejected: u64,
    /// Session rows written.
    pub sessions_written: u64,
    /// Iceberg commits made.
    pub commits: u64,
    /// Data files written to the sessions table.
    pub session_files: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunSummary {
    /// Records read per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_counts(f, self.read, &self.engine, self.rejected, self.sessions_written)?;
        writeln!(f, "iceberg commits:   {} ({} data files)", self.commits, self.session_files)?;
        writeln!(f, "plugin calls:      {}", self.engine.plugin_calls)?;
        write!(
            f,
            "elapsed:           {:.2?} ({:.0} events/s)",
            self.elapsed,
            self.events_per_second()
        )
    }
}

/// The counters every run summary starts with (bounded and streaming alike;
/// the end-to-end tests read them).
pub(crate) fn write_counts(
    f: &mut std::fmt::Formatter<'_>,
    read: u64,
    engine: &EngineStats,
    rejected: u64,
    sessions_written: u64,
) -> std::fmt::Result {
    writeln!(f, "events read:       {read}")?;
    writeln!(f, "  accepted:        {}", engine.accepted)?;
    writeln!(f, "  late:            {}", engine.late)?;
    writeln!(f, "  duplicate:       {}", engine.duplicates)?;
    writeln!(f, "  rejected:        {rejected}")?;
    writeln!(f, "sessions written:  {sessions_written}")
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
    /// Compiling each deployed candidate, on a thread of its own (not a stall).
    pub candidate_compiles: Stalls,
    /// Most events waiting for the watermark at once: what memory follows.
    pub peak_waiting: u64,
    /// Times a partition was paused for running ahead of the others.
    pub partition_pauses: u64,
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
        writeln!(
            f,
            "waiting events:    at most {} (partitions paused for running ahead: {} times)",
            self.peak_waiting, self.partition_pauses
        )?;
        if self.engine.off_partition > 0 {
            writeln!(
                f,
                "off partition:     {} events of a user on another partition than its first: \
                 key the topic by uuid (docs/operating.md: Input keyed by user)",
                self.engine.off_partition
            )?;
        }
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
