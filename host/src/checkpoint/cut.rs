//! A checkpoint as the event loop cuts it: one part per engine, whatever
//! store it goes to.

use std::collections::BTreeMap;

use crate::engine::{Engine, EngineChanges, EngineClocks, EngineError};
use crate::group::Publish;
use crate::rules::contract::SessionAttribute;
use crate::state::StagedOutput;

/// What one engine reads.
///
/// A job on its own reads the whole topic with one engine: a topic not keyed
/// by uuid gives a user's events to several partitions, and only one engine
/// over them all keeps that user's sessions whole. A group member has one
/// engine per partition, so a partition's state can move to another member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Span {
    /// Every partition of the topic.
    Topic,
    /// One partition.
    Partition(i32),
}

/// One engine's part of a cut.
pub struct ShardCut {
    /// What the engine reads.
    pub(crate) span: Span,
    /// Next offset to read, for each partition of the span read so far.
    pub(crate) offsets: BTreeMap<i32, i64>,
    /// What changed since its last cut, or everything.
    pub(crate) changes: EngineChanges,
    /// Whether `changes` is everything (the first file of a chain).
    pub(crate) whole: bool,
    /// Its event-time clocks.
    pub(crate) clocks: EngineClocks,
    /// Sessions and dead letters of its records since its last cut.
    pub(crate) output: StagedOutput,
}

impl ShardCut {
    /// Takes what `engine` holds at this instant: everything if `whole`,
    /// else the users changed since its last cut.
    pub(crate) fn take(
        engine: &mut Engine,
        span: Span,
        offsets: BTreeMap<i32, i64>,
        output: StagedOutput,
        whole: bool,
    ) -> Result<Self, EngineError> {
        let changes = if whole { engine.take_everything()? } else { engine.take_changes()? };
        Ok(Self { span, offsets, changes, whole, clocks: engine.clocks(), output })
    }
}

/// A checkpoint as cut: every engine's part, taken at one instant.
pub struct CheckpointCut {
    /// Each engine's part.
    pub(crate) shards: Vec<ShardCut>,
    /// The rules that cut it.
    pub(crate) rule_version: String,
    /// The attribute columns of the rules in force.
    pub(crate) columns: Vec<SessionAttribute>,
    /// Rules to publish to the group with it.
    pub(crate) publish: Option<Publish>,
}

impl CheckpointCut {
    /// Next offset per partition, over every shard.
    pub(crate) fn offsets(&self) -> BTreeMap<i32, i64> {
        let mut all = BTreeMap::new();
        for shard in &self.shards {
            all.extend(shard.offsets.iter().map(|(&p, &o)| (p, o)));
        }
        all
    }

    /// Sessions and dead letters it holds.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let sessions = self.shards.iter().map(|c| c.output.sessions.len() as u64).sum();
        let dead = self.shards.iter().map(|c| c.output.rejected.len() as u64).sum();
        (sessions, dead)
    }

    /// Every shard's output.
    pub(crate) fn outputs(&self) -> impl Iterator<Item = &StagedOutput> {
        self.shards.iter().map(|shard| &shard.output)
    }
}
