//! The engines of a streaming run, each over a [`Span`] of the input: one
//! over the whole topic for a job on its own, or one per partition for a
//! member of a consumer group, so that a partition's state is checkpointed,
//! dropped and restored on its own, and its event time (the watermark) is
//! its own wherever it runs. Either way the run drives them the same way,
//! and each keeps the output it owes the next checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::checkpoint::{CheckpointCut, RestoredPartition, ShardCut, Span};
use crate::engine::{Admission, Engine, EngineError, EngineStats, Sample};
use crate::event::{Event, FieldPaths, Fields};
use crate::metrics::{EngineFigures, EngineSize};
use crate::rules::contract::{EventField, SessionAttribute};
use crate::rules::{RulesRuntime, Texts};
use crate::sink::RejectedEvent;
use crate::state::StagedOutput;

use super::super::ingest::Admit;

/// A run's engines (see the module docs).
pub(crate) struct Engines {
    shards: BTreeMap<Span, Shard>,
    /// The fields the rules in force declare (an engine restored later
    /// is told at once).
    fields: Vec<EventField>,
    paths: Arc<FieldPaths>,
    /// Counters of engines given up, so the run's totals never go back.
    retired: EngineStats,
    /// Cuts between whole states of a shard (none: changes only).
    whole_every: Option<u32>,
}

/// One engine and what it owes the next checkpoint.
struct Shard {
    engine: Engine,
    /// Where reading resumed when the partition was claimed.
    resumed_at: Option<i64>,
    output: StagedOutput,
    /// Checkpoints since its last whole state; 0 before the first.
    since_whole: u32,
}

impl Shard {
    fn new(engine: Engine, resumed_at: Option<i64>) -> Self {
        Self { engine, resumed_at, output: StagedOutput::default(), since_whole: 0 }
    }
}

impl Engines {
    /// A job on its own: one engine over the whole topic, as recovered; its
    /// store keeps the state and takes changes only.
    pub(crate) fn for_topic(engine: Engine) -> Self {
        let fields = engine.declared_fields().to_vec();
        let paths = engine.field_paths();
        let shards = BTreeMap::from([(Span::Topic, Shard::new(engine, None))]);
        Self { shards, fields, paths, retired: EngineStats::default(), whole_every: None }
    }

    /// A group member: an engine per partition, as it claims them; each
    /// one's state goes in whole at its first cut and every `whole_every`
    /// cuts after.
    pub(crate) fn per_partition(whole_every: Option<u32>) -> Self {
        Self {
            shards: BTreeMap::new(),
            fields: Vec::new(),
            paths: Arc::new(FieldPaths::new(&[])),
            retired: EngineStats::default(),
            whole_every,
        }
    }

    /// The shard that reads `partition`, if this run reads it.
    fn shard_mut(&mut self, partition: i32) -> Option<&mut Shard> {
        let span = match self.shards.first_key_value() {
            Some((Span::Topic, _)) => Span::Topic,
            _ => Span::Partition(partition),
        };
        self.shards.get_mut(&span)
    }

    fn engines(&self) -> impl Iterator<Item = &Engine> {
        self.shards.values().map(|shard| &shard.engine)
    }

    /// The declared fields events are to carry, for the parser.
    pub(crate) fn field_paths(&self) -> Arc<FieldPaths> {
        self.paths.clone()
    }

    /// Makes `declared` the fields events carry, in every engine.
    pub(crate) fn declare_fields(&mut self, declared: &[EventField]) {
        if self.fields != declared {
            self.fields = declared.to_vec();
            self.paths = Arc::new(FieldPaths::new(declared));
        }
        for shard in self.shards.values_mut() {
            shard.engine.declare_fields(declared);
        }
    }

    /// Declares the input's partitions to the watermark of the engines
    /// that read them.
    pub(crate) fn register_partitions(&mut self, partitions: &[i32]) {
        for &p in partitions {
            if let Some(shard) = self.shard_mut(p) {
                shard.engine.register_partitions([p as usize]);
            }
        }
    }

    /// Marks a partition idle or active.
    pub(crate) fn set_idle(&mut self, partition: i32, idle: bool) {
        if let Some(shard) = self.shard_mut(partition) {
            shard.engine.set_idle(partition as usize, idle);
        }
    }

    /// Partitions too far ahead of the slowest their engine reads (an engine
    /// over one partition waits for itself alone).
    pub(crate) fn partitions_ahead(&self, drift_ms: i64) -> Vec<i32> {
        self.engines().flat_map(|e| e.partitions_ahead(drift_ms)).map(|p| p as i32).collect()
    }

    /// Counters so far, over every engine the run had.
    pub(crate) fn stats(&self) -> EngineStats {
        let mut total = self.retired;
        for engine in self.engines() {
            total += engine.stats();
        }
        total
    }

    /// Events accepted and not yet handed to the rules.
    pub(crate) fn events_waiting(&self) -> u64 {
        self.engines().map(Engine::events_waiting).sum()
    }

    /// What the metrics read after a batch.
    pub(crate) fn figures(&self) -> EngineFigures {
        let parts: Vec<EngineFigures> = self.engines().map(EngineFigures::of).collect();
        // The stats include those of engines already retired.
        EngineFigures { stats: self.stats(), ..EngineFigures::total(&parts) }
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
    /// of input); the sessions closed go to their engine's output. Returns
    /// how many closed.
    pub(crate) fn advance(
        &mut self,
        rules: &mut dyn RulesRuntime,
        end_of_input: bool,
    ) -> Result<usize, EngineError> {
        let mut n = 0;
        for shard in self.shards.values_mut() {
            // A failing engine keeps its batch; the others' sessions are kept already.
            let closed = shard.engine.advance(rules, end_of_input)?;
            n += closed.len();
            shard.output.sessions.extend(closed);
        }
        Ok(n)
    }

    /// Moves `dead_letters` to the output of the engine that reads their
    /// partition; those of partitions this run does not read are dropped
    /// (their owner reads the records again).
    pub(crate) fn route_dead_letters(&mut self, dead_letters: &mut Vec<RejectedEvent>) {
        for dead in dead_letters.drain(..) {
            if let Some(shard) = self.shard_mut(dead.partition) {
                shard.output.rejected.push(dead);
            }
        }
    }

    /// Cuts a checkpoint at `offsets`, with each engine's output.
    pub(crate) fn cut(
        &mut self,
        offsets: &BTreeMap<i32, i64>,
        rule_version: &str,
        columns: &[SessionAttribute],
    ) -> Result<CheckpointCut, EngineError> {
        let mut shards = Vec::with_capacity(self.shards.len());
        for (&span, shard) in &mut self.shards {
            let whole = self
                .whole_every
                .is_some_and(|every| shard.since_whole == 0 || shard.since_whole >= every);
            shard.since_whole = if whole { 1 } else { shard.since_whole + 1 };
            let offsets = match span {
                Span::Topic => offsets.clone(),
                Span::Partition(p) => offsets
                    .get(&p)
                    .copied()
                    .or(shard.resumed_at)
                    .map(|o| (p, o))
                    .into_iter()
                    .collect(),
            };
            let output = std::mem::take(&mut shard.output);
            shards.push(ShardCut::take(&mut shard.engine, span, offsets, output, whole)?);
        }
        Ok(CheckpointCut {
            shards,
            rule_version: rule_version.to_owned(),
            columns: columns.to_vec(),
            publish: None,
        })
    }

    /// Takes restored partitions in (a group member's claim).
    pub(crate) fn restore(&mut self, restored: Vec<RestoredPartition>) {
        for RestoredPartition { partition, mut engine, offset, .. } in restored {
            engine.register_partitions([partition as usize]);
            engine.declare_fields(&self.fields);
            let shard = Shard::new(engine, offset);
            if let Some(old) = self.shards.insert(Span::Partition(partition), shard) {
                self.retired += old.engine.stats();
            }
        }
    }

    /// Drops `partitions` (revoked, or claimed by another member) with what
    /// they owe: their last checkpoint is cut, or another member's now.
    pub(crate) fn drop_partitions(&mut self, partitions: &[i32]) {
        for &p in partitions {
            if let Some(old) = self.shards.remove(&Span::Partition(p)) {
                self.retired += old.engine.stats();
            }
        }
    }

    /// The partitions held one engine each (a group member's), in order.
    pub(crate) fn held(&self) -> Vec<i32> {
        let span = |span: &Span| match *span {
            Span::Partition(p) => Some(p),
            Span::Topic => None,
        };
        self.shards.keys().filter_map(span).collect()
    }
}

impl Admit for Engines {
    fn limit_clocks_to(&mut self, now_ms: i64) {
        for shard in self.shards.values_mut() {
            shard.engine.limit_clocks_to(now_ms);
        }
    }

    fn admit(
        &mut self,
        partition: i32,
        event: &Event<'_>,
        fields: Fields<'_>,
    ) -> Option<Admission> {
        let shard = self.shard_mut(partition)?;
        Some(shard.engine.offer_with_fields(partition as usize, event, Some(fields)))
    }
}
