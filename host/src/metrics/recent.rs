//! The recent past of a job, bounded: charted samples, the last checkpoints,
//! the latest dead letters and the rules' history, for the status page.

use std::collections::VecDeque;
use std::time::Duration;

use crate::rules::lifecycle::SwapEvent;
use crate::sink::RejectedEvent;

/// Samples kept: ten minutes at one a second.
const SAMPLES_KEPT: usize = 600;
/// Checkpoints kept.
const CHECKPOINTS_KEPT: usize = 10;
/// Dead letters kept.
const DEAD_LETTERS_KEPT: usize = 20;
/// Characters of a dead letter's record shown.
const RAW_SHOWN: usize = 160;

/// The charted values at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When, epoch seconds.
    pub at_unix_s: f64,
    /// Records read so far (a counter: the chart shows its rate).
    pub events_read: u64,
    /// Events behind the end of the input, all partitions.
    pub lag: u64,
    /// Users with an open session.
    pub open_sessions: u64,
    /// How far the watermark is behind the wall clock.
    pub watermark_delay_s: f64,
}

/// One published checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointNote {
    /// Its id.
    pub id: u64,
    /// When it completed, epoch seconds.
    pub at_unix_s: f64,
    /// State write and Iceberg commit.
    pub took: Duration,
    /// The Iceberg commit alone, retries included.
    pub commit_took: Duration,
    /// From the close of its oldest session to the commit, if it had sessions.
    pub visible_after: Option<Duration>,
    /// Sessions it published.
    pub sessions: u64,
    /// Dead letters it published.
    pub dead_letters: u64,
    /// The state store's size after it, if known.
    pub state_bytes: Option<u64>,
}

/// One dead letter, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterNote {
    /// Why it was refused.
    pub reason: String,
    /// Where it came from, such as `kafka:clicks`.
    pub source: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset (or line number).
    pub position: i64,
    /// The start of the record.
    pub raw: String,
}

/// The recent past, bounded.
#[derive(Debug, Default)]
pub struct Recent {
    samples: VecDeque<Sample>,
    checkpoints: VecDeque<CheckpointNote>,
    dead_letters: VecDeque<DeadLetterNote>,
    rules: Vec<SwapEvent>,
    active: String,
}

impl Recent {
    pub(crate) fn sample(&mut self, sample: Sample) {
        push_bounded(&mut self.samples, sample, SAMPLES_KEPT);
    }

    pub(crate) fn checkpoint(&mut self, note: CheckpointNote) {
        push_bounded(&mut self.checkpoints, note, CHECKPOINTS_KEPT);
    }

    /// Keeps the last of `rejected` (only those are shown: no copy of the rest).
    pub(crate) fn dead_letters(&mut self, rejected: &[RejectedEvent]) {
        let start = rejected.len().saturating_sub(DEAD_LETTERS_KEPT);
        for dead in &rejected[start..] {
            let note = DeadLetterNote {
                reason: dead.reason.clone(),
                source: dead.source.clone(),
                partition: dead.partition,
                position: dead.position,
                raw: dead.raw.chars().take(RAW_SHOWN).collect(),
            };
            push_bounded(&mut self.dead_letters, note, DEAD_LETTERS_KEPT);
        }
    }

    /// Replaces the rules' history; returns the entries that are new since
    /// the last call (history is only ever appended to, its oldest dropped).
    pub(crate) fn rules_history(&mut self, history: Vec<SwapEvent>) -> Vec<SwapEvent> {
        let new_from = match self.rules.last() {
            None => 0,
            Some(last) => history.iter().rposition(|e| e == last).map_or(0, |i| i + 1),
        };
        let new = history[new_from..].to_vec();
        self.rules = history;
        new
    }

    pub(crate) fn set_active(&mut self, version: &str) {
        version.clone_into(&mut self.active);
    }

    /// The rules in force.
    pub fn active(&self) -> &str {
        &self.active
    }

    /// Samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// Checkpoints, newest first.
    pub fn checkpoints(&self) -> impl Iterator<Item = &CheckpointNote> {
        self.checkpoints.iter().rev()
    }

    /// Dead letters, newest first.
    pub fn latest_dead_letters(&self) -> impl Iterator<Item = &DeadLetterNote> {
        self.dead_letters.iter().rev()
    }

    /// The rules' history, newest first.
    pub fn rules(&self) -> impl Iterator<Item = &SwapEvent> {
        self.rules.iter().rev()
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, kept: usize) {
    if queue.len() == kept {
        queue.pop_front();
    }
    queue.push_back(item);
}
