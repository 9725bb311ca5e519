//! Event time: how far each partition has got, and the watermark over them.
//!
//! An event is late when its time is more than the allowed lateness behind the
//! greatest time seen before it on its partition, or behind the watermark. The
//! watermark is the least, over partitions, of (greatest time seen − allowed
//! lateness), and never goes back.
//!
//! A partition's clock never runs ahead of the ceiling the job sets (the wall
//! clock): one event stamped an hour ahead would otherwise make every event of
//! the present late. Such an event is accepted and waits for its time.

use serde::{Deserialize, Serialize};

/// Event-time progress, as a checkpoint keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineClocks {
    /// Registered partitions and the greatest time each has delivered.
    pub partitions: Vec<(u32, Option<i64>)>,
    /// The watermark.
    pub watermark: i64,
}

/// Per-partition event-time progress.
#[derive(Debug, Clone, Copy, Default)]
struct PartitionClock {
    /// Whether the partition is part of the input (a file's one partition, or an
    /// assigned Kafka partition). A registered partition that has seen nothing
    /// holds the watermark back until it delivers or goes idle.
    registered: bool,
    max_seen: Option<i64>,
    /// Idle partitions do not hold the watermark back.
    idle: bool,
}

/// Every partition's clock, and the watermark.
#[derive(Debug)]
pub(super) struct Clocks {
    lateness_ms: i64,
    /// The most a partition's clock may read.
    ceiling: i64,
    partitions: Vec<PartitionClock>,
    watermark: i64,
}

impl Clocks {
    pub(super) fn new(lateness_ms: i64) -> Self {
        Self { lateness_ms, ceiling: i64::MAX, partitions: Vec::new(), watermark: i64::MIN }
    }

    fn clock(&mut self, partition: usize) -> &mut PartitionClock {
        if self.partitions.len() <= partition {
            self.partitions.resize(partition + 1, PartitionClock::default());
        }
        &mut self.partitions[partition]
    }

    /// Makes the watermark wait for `partition` until it delivers or goes idle.
    pub(super) fn register(&mut self, partition: usize) {
        self.clock(partition).registered = true;
    }

    pub(super) fn set_idle(&mut self, partition: usize, idle: bool) {
        self.clock(partition).idle = idle;
    }

    /// Caps partition clocks at `now_ms` from here on.
    pub(super) fn set_ceiling(&mut self, now_ms: i64) {
        self.ceiling = now_ms;
    }

    pub(super) fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Takes note of an event at `t` on `partition`, or says how far (ms) it is
    /// beyond what the partition and the watermark allow.
    pub(super) fn observe(&mut self, partition: usize, t: i64) -> Result<(), i64> {
        let watermark = self.watermark;
        let lateness = self.lateness_ms;
        let seen = t.min(self.ceiling);
        let clock = self.clock(partition);
        clock.registered = true;
        clock.idle = false;
        let floor = clock.max_seen.map_or(i64::MIN, |max| max.saturating_sub(lateness));
        if t < floor || t < watermark {
            return Err(floor.max(watermark).saturating_sub(t));
        }
        clock.max_seen = Some(clock.max_seen.map_or(seen, |max| max.max(seen)));
        Ok(())
    }

    /// Moves the watermark to what the partitions allow and returns it.
    pub(super) fn advance(&mut self) -> i64 {
        let lateness = self.lateness_ms;
        let active = self.partitions.iter().filter(|p| p.registered && !p.idle);
        let mut allowed =
            active.map(|p| p.max_seen.map_or(i64::MIN, |m| m.saturating_sub(lateness))).min();
        if allowed.is_none() {
            // Every partition idle: what they have delivered is all there is.
            allowed = self
                .partitions
                .iter()
                .filter_map(|p| p.max_seen)
                .map(|m| m.saturating_sub(lateness))
                .min();
        }
        if let Some(allowed) = allowed {
            self.watermark = self.watermark.max(allowed);
        }
        self.watermark
    }

    /// Active partitions whose clock is more than `drift_ms` ahead of the
    /// slowest one (the one the watermark waits for). An active partition that
    /// has delivered nothing yet holds the watermark at its start, so every
    /// partition that has is ahead until it delivers or goes idle.
    pub(super) fn ahead(&self, drift_ms: i64) -> impl Iterator<Item = usize> + '_ {
        let active = || self.partitions.iter().enumerate().filter(|(_, p)| p.registered && !p.idle);
        let slowest = active().map(|(_, p)| p.max_seen.unwrap_or(i64::MIN)).min();
        let limit = slowest.unwrap_or(i64::MAX).saturating_add(drift_ms);
        active().filter(move |(_, p)| p.max_seen.is_some_and(|t| t > limit)).map(|(i, _)| i)
    }

    /// What a checkpoint keeps.
    pub(super) fn snapshot(&self) -> EngineClocks {
        EngineClocks {
            partitions: self
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.registered)
                .map(|(i, p)| (i as u32, p.max_seen))
                .collect(),
            watermark: self.watermark,
        }
    }

    /// The clocks a checkpoint kept.
    pub(super) fn restore(lateness_ms: i64, stored: EngineClocks) -> Self {
        let mut clocks = Self::new(lateness_ms);
        for (p, max_seen) in stored.partitions {
            let clock = clocks.clock(p as usize);
            clock.registered = true;
            clock.max_seen = max_seen;
        }
        clocks.watermark = stored.watermark;
        clocks
    }
}
