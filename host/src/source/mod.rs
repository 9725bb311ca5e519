//! The source stage: where records come from. Each record keeps where it was
//! read (partition, position), so a rejected record can be traced back.
//!
//! A bounded run reads a [`file::FileSource`] to its end (or a sample
//! [`generate`]d in memory, `--test-mode`); the streaming run polls a
//! [`StreamSource`] ([`kafka::KafkaSource`]) from positions it keeps in its
//! checkpoints. `sessionize generate` writes the same generated clickstream.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::event::EventBlock;

pub mod file;
pub mod generate;
pub mod kafka;
pub mod parsed;

/// A change of a consumer group member's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalanced {
    /// Partitions assigned to this member; paused until started.
    Assigned(Vec<i32>),
    /// Partitions taken away.
    Revoked(Vec<i32>),
}

/// Partitioned input that the streaming run polls and resumes by position.
pub trait StreamSource {
    /// Why the source failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The name dead letters carry, such as `kafka:<topic>`.
    fn name(&self) -> String;

    /// The partitions read.
    fn partitions(&self) -> &[i32];

    /// Polls up to `max` records into `block`, waiting at most `timeout` for the
    /// first. Returns how many were added.
    fn poll_into(&mut self, block: &mut EventBlock, max: usize, timeout: Duration) -> usize;

    /// Next position to read per partition (partitions read from so far, or
    /// given at start).
    fn positions(&self) -> &BTreeMap<i32, i64>;

    /// The end of each partition now: what a run to the end reads up to.
    fn end_offsets(&self, timeout: Duration) -> Result<BTreeMap<i32, i64>, Self::Error>;

    /// Events not yet read per partition (its end minus the next position),
    /// as last reported; partitions whose end is not known yet are absent.
    fn lags(&self) -> BTreeMap<i32, i64> {
        BTreeMap::new()
    }

    /// Reports `offsets` as consumed (for monitoring; a checkpoint, not this,
    /// is what a restart resumes from).
    fn commit_consumed(&mut self, offsets: &BTreeMap<i32, i64>);

    /// Stops delivering `partitions` until they are resumed; reading goes on
    /// where it stopped. The run pauses partitions that run ahead of the
    /// others (watermark alignment).
    fn pause(&mut self, partitions: &[i32]) -> Result<(), Self::Error>;

    /// Delivers `partitions` again.
    fn resume(&mut self, partitions: &[i32]) -> Result<(), Self::Error>;

    /// How the partitions read changed since the last call (a consumer
    /// group's rebalances), in order. A source that owns its partitions
    /// for good never changes.
    fn take_rebalance(&mut self) -> Vec<Rebalanced> {
        Vec::new()
    }

    /// Starts reading an assigned `partition` at `offset` (none: its beginning).
    fn start_at(&mut self, partition: i32, offset: Option<i64>) -> Result<(), Self::Error> {
        let _ = (partition, offset);
        Ok(())
    }
}
