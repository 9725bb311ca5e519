//! The engines of a streaming run: one over every partition for a job that
//! reads the whole topic, or one per partition for a member of a consumer
//! group, so that a partition's state is checkpointed, dropped and restored
//! on its own, and its event time (the watermark) is its own wherever it
//! runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::checkpoint::{
    GroupCut, PartitionCut, Pending, PendingCheckpoint, RestoredPartition, WHOLE_STATE_EVERY,
};
use crate::engine::{Admission, Engine, EngineError, EngineStats, Sample};
use crate::event::{Event, FieldPaths, Fields};
use crate::metrics::{EngineFigures, EngineSize};
use crate::rules::contract::{EventField, SessionAttribute};
use crate::rules::{RulesRuntime, Texts};
use crate::state::StagedOutput;

use super::super::ingest::Admit;

/// A run's engines (see the module docs).
pub(crate) enum Engines {
    /// One engine for every partition.
    AllPartitions(Box<Engine>),
    /// One engine per partition this member holds.
    PerPartition(PartitionEngines),
}

/// A group member's engines.
#[derive(Default)]
pub(crate) struct PartitionEngines {
    parts: BTreeMap<i32, Part>,
    /// The fields the rules in force declare (an engine restored later
    /// is told at once).
    fields: Vec<EventField>,
    paths: Arc<FieldPaths>,
    /// Counters of engines given up, so the run's totals never go back.
    retired: EngineStats,
}

/// One partition's engine and what it owes the next checkpoint.
struct Part {
    engine: Engine,
    /// Where reading resumed when the partition was claimed.
    offset: Option<i64>,
    output: StagedOutput,
    /// Checkpoints since its last whole state; 0 before the first.
    since_whole: u32,
}

impl Engines {
    /// The declared fields events are to carry, for the parser.
    pub(crate) fn field_paths(&self) -> Arc<FieldPaths> {
        match self {
            Engines::AllPartitions(engine) => engine.field_paths(),
            Engines::PerPartition(set) => set.paths.clone(),
        }
    }

    /// Makes `declared` the fields events carry, in every engine.
    pub(crate) fn declare_fields(&mut self, declared: &[EventField]) {
        match self {
            Engines::AllPartitions(engine) => engine.declare_fields(declared),
            Engines::PerPartition(set) => {
                if set.fields != declared {
                    set.fields = declared.to_vec();
                    set.paths = Arc::new(FieldPaths::new(declared));
                }
                for part in set.parts.values_mut() {
                    part.engine.declare_fields(declared);
                }
            }
        }
    }

    /// Declares the input's partitions to the watermark.
    pub(crate) fn register_partitions(&mut self, partitions: &[i32]) {
        if let Engines::AllPartitions(engine) = self {
            engine.register_partitions(partitions.iter().map(|&p| p as usize));
        }
    }

    /// Marks a partition idle or active.
    pub(crate) fn set_idle(&mut self, partition: i32, idle: bool) {
        match self {
            Engines::AllPartitions(engine) => engine.set_idle(partition as usize, idle),
            Engines::PerPartition(set) => {
                if let Some(part) = set.parts.get_mut(&partition) {
                    part.engine.set_idle(partition as usize, idle);
                }
            }
        }
    }

    /// Partitions too far ahead of the slowest (only one engine over
    /// several partitions has a slowest: per partition, each waits for
    /// itself alone).
    pub(crate) fn partitions_ahead(&self, drift_ms: i64) -> Vec<i32> {
        match self {
            Engines::AllPartitions(engine) => {
                engine.partitions_ahead(drift_ms).into_iter().map(|p| p as i32).collect()
            }
            Engines::PerPartition(_) => Vec::new(),
        }
    }

    fn engines(&self) -> Box<dyn Iterator<Item = &Engine> + '_> {
        match self {
            Engines::AllPartitions(engine) => Box::new(std::iter::once(&**engine)),
            Engines::PerPartition(set) => Box::new(set.parts.values().map(|part| &part.engine)),
        }
    }

    /// Counters so far, over every engine the run had.
    pub(crate) fn stats(&self) -> EngineStats {
        let mut total = match self {
            Engines::AllPartitions(_) => EngineStats::default(),
            Engines::PerPartition(set) => set.retired,
        };
        for engine in self.engines() {
            add_stats(&mut total, &engine.stats());
        }
        total
    }

    /// Events accepted and not yet handed to the rules.
    pub(crate) fn events_waiting(&self) -> u64 {
        self.engines().map(Engine::events_waiting).sum()
    }

    /// What the metrics read after a batch.
    pub(crate) fn figures(&self) -> EngineFigures {
        EngineFigures {
            stats: self.stats(),
            waiting: self.events_waiting(),
            users: self.engines().map(Engine::users_in_memory).sum(),
            watermark: self.engines().map(Engine::watermark).min().unwrap_or(i64::MIN),
        }
    }

    /// Open sessions, users waiting and interned texts (counted: now and
    /// then, not per event).
    pub(crate) fn size(&self) -> EngineSize {
        EngineSize {
            open_sessions: self.engines().map(Engine::open_sessions).sum(),
            users_waiting: self.engines().map(Engine::users_waiting).sum(),
            texts: self.engines().map(|e| e.texts().strings.len()).sum(),
        }
    }

    /// A sample of the latest batch with the texts it refers to, for a dry run.
    pub(crate) fn sample(&self) -> (Texts<'_>, Option<Sample<'_>>) {
        let sampled = self.engines().find(|e| e.sample().is_some());
        match sampled.or_else(|| self.engines().next()) {
            Some(engine) => (engine.texts(), engine.sample()),
            None => (Texts { strings: &[], generation: 0 }, None),
        }
    }

    /// Whether a failed batch waits for a retry in some engine: no
    /// checkpoint can be cut then.
    pub(crate) fn has_failed_batch(&self) -> bool {
        self.engines().any(Engine::has_failed_batch)
    }

    /// Runs the rules on what the watermark released (everything, at the end
    /// of input); the sessions closed go to `staged`, or to their
    /// partition's output. Returns how many closed.
    pub(crate) fn advance(
        &mut self,
        rules: &mut dyn RulesRuntime,
        end_of_input: bool,
        staged: &mut StagedOutput,
    ) -> Result<usize, EngineError> {
        match self {
            Engines::AllPartitions(engine) => {
                let closed = engine.advance(rules, end_of_input)?;
                let n = closed.len();
                staged.sessions.extend(closed);
                Ok(n)
            }
            Engines::PerPartition(set) => {
                let mut n = 0;
                for part in set.parts.values_mut() {
                    // A failing engine keeps its batch; the others' sessions are kept already.
                    let closed = part.engine.advance(rules, end_of_input)?;
                    n += closed.len();
                    part.output.sessions.extend(closed);
                }
                Ok(n)
            }
        }
    }

    /// Moves the dead letters in `staged` to their partition's output; those
    /// of partitions this member does not hold are dropped (their owner
    /// reads the records again).
    pub(crate) fn route_dead_letters(&mut self, staged: &mut StagedOutput) {
        let Engines::PerPartition(set) = self else { return };
        for dead in staged.rejected.drain(..) {
            if let Some(part) = set.parts.get_mut(&dead.partition) {
                part.output.rejected.push(dead);
            }
        }
    }

    /// Cuts a checkpoint at `offsets` with `output` (the whole run's; a
    /// group member's output is its partitions').
    pub(crate) fn cut(
        &mut self,
        offsets: BTreeMap<i32, i64>,
        output: StagedOutput,
        rule_version: &str,
        columns: &[SessionAttribute],
    ) -> Result<Pending, EngineError> {
        match self {
            Engines::AllPartitions(engine) => {
                let mut output = output;
                output.columns = columns.to_vec();
                let pending = PendingCheckpoint::cut(engine, offsets, output, rule_version)?;
                Ok(Pending::AllPartitions(pending))
            }
            Engines::PerPartition(set) => {
                let mut partitions = Vec::with_capacity(set.parts.len());
                for (&partition, part) in &mut set.parts {
                    let whole = part.since_whole == 0 || part.since_whole >= WHOLE_STATE_EVERY;
                    let changes = if whole {
                        part.engine.take_everything()?
                    } else {
                        part.engine.take_changes()?
                    };
                    part.since_whole = if whole { 1 } else { part.since_whole + 1 };
                    partitions.push(PartitionCut {
                        partition,
                        offset: offsets.get(&partition).copied().or(part.offset),
                        changes,
                        whole,
                        clocks: part.engine.clocks(),
                        output: std::mem::take(&mut part.output),
                    });
                }
                Ok(Pending::Partitions(GroupCut {
                    partitions,
                    rule_version: rule_version.to_owned(),
                    columns: columns.to_vec(),
                    publish: None,
                }))
            }
        }
    }

    /// Takes restored partitions in (a group member's claim).
    pub(crate) fn restore(&mut self, restored: Vec<RestoredPartition>) {
        let Engines::PerPartition(set) = self else { return };
        for RestoredPartition { partition, mut engine, offset, .. } in restored {
            engine.register_partitions([partition as usize]);
            engine.declare_fields(&set.fields);
            let part = Part { engine, offset, output: StagedOutput::default(), since_whole: 0 };
            if let Some(old) = set.parts.insert(partition, part) {
                add_stats(&mut set.retired, &old.engine.stats());
            }
        }
    }

    /// Drops `partitions` (revoked, or claimed by another member) with what
    /// they owe: their last checkpoint is cut, or another member's now.
    pub(crate) fn drop_partitions(&mut self, partitions: &[i32]) {
        let Engines::PerPartition(set) = self else { return };
        for p in partitions {
            if let Some(old) = set.parts.remove(p) {
                add_stats(&mut set.retired, &old.engine.stats());
            }
        }
    }

    /// Whether these are a group member's engines.
    pub(crate) fn is_group(&self) -> bool {
        matches!(self, Engines::PerPartition(_))
    }

    /// The partitions held (a group member's), in order.
    pub(crate) fn held(&self) -> Vec<i32> {
        match self {
            Engines::AllPartitions(_) => Vec::new(),
            Engines::PerPartition(set) => set.parts.keys().copied().collect(),
        }
    }
}

impl Admit for Engines {
    fn limit_clocks_to(&mut self, now_ms: i64) {
        match self {
            Engines::AllPartitions(engine) => engine.limit_clocks_to(now_ms),
            Engines::PerPartition(set) => {
                for part in set.parts.values_mut() {
                    part.engine.limit_clocks_to(now_ms);
                }
            }
        }
    }

    fn admit(
        &mut self,
        partition: i32,
        event: &Event<'_>,
        fields: Fields<'_>,
    ) -> Option<Admission> {
        match self {
            Engines::AllPartitions(engine) => engine.admit(partition, event, fields),
            Engines::PerPartition(set) => {
                let part = set.parts.get_mut(&partition)?;
                Some(part.engine.offer_with_fields(partition as usize, event, Some(fields)))
            }
        }
    }
}

fn add_stats(total: &mut EngineStats, more: &EngineStats) {
    total.accepted += more.accepted;
    total.late += more.late;
    total.duplicates += more.duplicates;
    total.plugin_calls += more.plugin_calls;
    total.sessions_closed += more.sessions_closed;
    total.rules_time += more.rules_time;
    total.off_partition += more.off_partition;
}
