//! How long a failing sink is retried before the failure counts as lasting.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::SinkError;

/// Default of [`SinkRetryPolicy::budget`]: long enough for a reader's lock on
/// the catalog or a full disk being cleared, short enough that a lasting
/// failure stops the job while an operator is still looking.
pub const DEFAULT_SINK_RETRY_BUDGET: Duration = Duration::from_secs(120);

/// How a failing sink call is retried: exponential backoff with jitter from
/// `first_delay` up to `max_delay` between attempts, until the waits add up to
/// `budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkRetryPolicy {
    /// Wait after the first failure; doubles with each further one.
    pub first_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
    /// Total wait after which a failure counts as lasting (zero: no retry).
    pub budget: Duration,
}

impl Default for SinkRetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            budget: DEFAULT_SINK_RETRY_BUDGET,
        }
    }
}

/// Lost commit races in a row retried at once, before they wait like any
/// other failure.
const QUICK_RACE_RETRIES: u32 = 50;

/// The attempts at one operation under a [`SinkRetryPolicy`].
pub(crate) struct SinkRetries {
    delays: <ExponentialBuilder as BackoffBuilder>::Backoff,
    attempts: u32,
    races: u32,
    started: Instant,
    /// The longest wait the policy allows, a lost race's included.
    max_delay: Duration,
}

impl SinkRetries {
    /// Starts counting before the first attempt.
    pub(crate) fn new(policy: SinkRetryPolicy) -> Self {
        let delays = ExponentialBuilder::new()
            .with_min_delay(policy.first_delay)
            .with_max_delay(policy.max_delay)
            .with_total_delay(Some(policy.budget))
            .without_max_times()
            .with_jitter()
            .build();
        Self { delays, attempts: 0, races: 0, started: Instant::now(), max_delay: policy.max_delay }
    }

    /// After a failed attempt: how long to wait before the next one, or `None`
    /// when `error` cannot clear by itself or the budget is spent.
    ///
    /// A commit race lost to another writer is no failing sink: the table
    /// moved on, and the next attempt, on the new head, is retried after a
    /// few random milliseconds rather than a growing wait (which would leave
    /// a writer committing less often than its rivals behind for good).
    pub(crate) fn after_failure(&mut self, error: &SinkError) -> Option<Duration> {
        self.attempts += 1;
        if error.is_lost_race() && self.races < QUICK_RACE_RETRIES {
            self.races += 1;
            return Some(Duration::from_millis(rand::random::<u64>() % 20).min(self.max_delay));
        }
        if error.is_transient() {
            self.delays.next()
        } else {
            None
        }
    }

    /// Attempts that failed so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time since the first attempt.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
