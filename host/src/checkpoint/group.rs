//! Checkpoints of a group member: many instances share a topic's partitions,
//! and a partition's state moves with it.
//!
//! Nothing is kept on local disk. A checkpoint writes, for each partition
//! that changed, one file of state changes beside the table (the first of a
//! chain holds the whole state), then commits the output with every
//! partition's offset and chain in the snapshot summary
//! ([`crate::group::PartitionProgress`]). The commit is the
//! checkpoint: a crash before it leaves files no summary names, and whoever
//! owns the partition next resumes from the summary before.
//!
//! A partition is *claimed* before it is read ([`CheckpointStore::claim`]):
//! the claim raises its epoch, restores its state from the chain the summary
//! names, and fences the previous owner, whose commits for it are refused
//! from then on. A refused partition is reported back and dropped; the
//! others of the checkpoint are committed without it. A partition whose
//! chain cannot be read is claimed but not restored, and reported back: the
//! member pauses it and tries again later, while its other partitions go on
//! (a corrupt file must not take down one member after another).
//!
//! The sink takes a commit as made only once a reload finds it, so chains a
//! commit replaces are deleted only after it really landed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::exchange::RulesExchange;
use super::{
    dead_letter_unwritable, publish_to_topic, wait_to_retry, CheckpointCut, CheckpointError,
    CheckpointStore, ShardCut, Span, CHECKPOINT_ID_KEY, JOB_ID_KEY, RULE_VERSION_KEY,
};
use crate::engine::{Engine, EngineChanges, EngineClocks, EngineConfig};
use crate::group::{
    CommitOutcome, GroupProgress, GroupStore, GroupUpdate, GroupView, MemberCommit,
    PartitionProgress, Publish, StateChain,
};
use crate::rules::contract::SessionAttribute;
use crate::sink::topic::{SessionsTopic, TopicBatch};
use crate::sink::{Sink, SinkError, SinkRetries, SinkRetryPolicy};
use crate::state::{encode_partition_file, PartitionState, StagedOutput, StateError};

/// Files a chain may hold: a summary naming a longer one is refused (it
/// comes from shared storage), and a member starts a new chain long before.
const MAX_CHAIN_FILES: u64 = 1_024;

/// One partition's part of a cut, as this store reads a shard.
struct PartitionCut {
    partition: i32,
    /// Next offset to read (none before its first record).
    offset: Option<i64>,
    changes: EngineChanges,
    whole: bool,
    clocks: EngineClocks,
    output: StagedOutput,
}

impl PartitionCut {
    /// `shard`, which must be one partition's.
    fn of(shard: ShardCut) -> Result<Self, CheckpointError> {
        let Span::Partition(partition) = shard.span else {
            return Err(CheckpointError::Thread(
                "a group member's engines are by partition".into(),
            ));
        };
        Ok(Self {
            partition,
            offset: shard.offsets.get(&partition).copied(),
            changes: shard.changes,
            whole: shard.whole,
            clocks: shard.clocks,
            output: shard.output,
        })
    }
}

/// A claimed partition, restored.
pub struct RestoredPartition {
    /// The partition.
    pub(crate) partition: i32,
    /// Its engine as of its last checkpoint.
    pub(crate) engine: Engine,
    /// Where to read from (none: from the beginning).
    pub(crate) offset: Option<i64>,
    /// Users restored (open sessions or waiting events).
    pub(crate) users: usize,
    /// State files read.
    pub(crate) files: u64,
}

/// What a claim got.
#[derive(Default)]
pub struct Claim {
    /// The partitions restored.
    pub(crate) restored: Vec<RestoredPartition>,
    /// The partitions claimed whose state could not be read, and why: held
    /// by this member (whoever held them before is fenced), not read.
    pub(crate) unreadable: Vec<(i32, String)>,
}

/// A checkpoint, completed by its store.
#[derive(Debug)]
pub struct Recorded {
    /// Its id.
    pub(crate) id: u64,
    /// Partitions another group member claimed meanwhile (dropped: nothing
    /// of theirs was committed).
    pub(crate) fenced: Vec<i32>,
    /// What its commit learnt of the group's rules (none if nothing was
    /// committed).
    pub(crate) fleet: Option<Box<GroupUpdate>>,
}

/// Rows of many partitions, each with its partition.
struct Rows<T> {
    rows: Vec<T>,
    partitions: Vec<i32>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Self { rows: Vec::new(), partitions: Vec::new() }
    }
}

impl<T> Rows<T> {
    /// Moves `rows` of `partition` in.
    fn take(&mut self, partition: i32, rows: &mut Vec<T>) {
        self.partitions.extend(std::iter::repeat_n(partition, rows.len()));
        self.rows.append(rows);
    }

    fn drop_partitions(&mut self, lost: &[i32]) {
        let mut of = self.partitions.iter();
        self.rows.retain(|_| of.next().is_some_and(|p| !lost.contains(p)));
        self.partitions.retain(|p| !lost.contains(p));
    }
}

/// A partition this member holds a claim on.
struct Owned {
    epoch: u64,
    /// Its files written under this claim, once there is a whole state.
    chain: Option<StateChain>,
    next_seq: u64,
    /// Dead letters before this offset are in the table already (a commit
    /// stopped between the two tables); a replay does not repeat them.
    dead_letters_to: Option<i64>,
    /// The clocks last written.
    clocks: Option<EngineClocks>,
    /// Chains the newest summary may still name, to be deleted once a
    /// commit names a newer whole state (the one restored, then each chain
    /// a whole state starts over).
    replaced: Vec<StateChain>,
}

/// Completes a group member's checkpoints (see the module docs).
pub struct GroupCheckpointer {
    group: String,
    owner: String,
    config: EngineConfig,
    last_id: u64,
    owned: BTreeMap<i32, Owned>,
    sink_retry: SinkRetryPolicy,
    last_publish: Duration,
    /// The group's rules, when this member takes part in them.
    rules: Option<RulesExchange>,
    /// Where sessions also go, if anywhere.
    topic: Option<SessionsTopic>,
}

impl GroupCheckpointer {
    /// Cuts after which a partition's next file is its whole state again
    /// (the first is whole too), which bounds what a new owner reads.
    pub(crate) const WHOLE_STATE_EVERY: Option<u32> = Some(32);

    /// A member of `group` that names itself `owner` in its claims (unique
    /// per process: a restarted instance is a new member).
    pub fn new(group: &str, owner: &str, config: EngineConfig) -> Self {
        Self {
            group: group.to_owned(),
            owner: owner.to_owned(),
            config,
            last_id: 0,
            owned: BTreeMap::new(),
            sink_retry: SinkRetryPolicy::default(),
            last_publish: Duration::ZERO,
            rules: None,
            topic: None,
        }
    }

    /// Publishes every checkpoint's output to `topic` too, before its commit
    /// (a fenced member's records are repeats of what the partition's new
    /// owner publishes: it reads the same records from the same offset).
    pub fn publishing_to(mut self, topic: SessionsTopic) -> Self {
        self.topic = Some(topic);
        self
    }

    /// Publishes and follows the group's rules through `exchange`.
    pub(crate) fn exchanging_rules(mut self, exchange: RulesExchange) -> Self {
        self.rules = Some(exchange);
        self
    }

    /// How publishing retries a failing sink from now on.
    pub fn set_sink_retry(&mut self, policy: SinkRetryPolicy) {
        self.sink_retry = policy;
    }

    /// Forgets the claim on `partitions` (given up in a rebalance; their last
    /// checkpoint is already cut).
    pub(crate) fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.owned.remove(p);
        }
    }

    /// Claims `partitions` and restores each one's state. A partition whose
    /// state cannot be read is claimed but not restored: it comes back among
    /// [`Claim::unreadable`], and the others go on.
    async fn claim_and_restore(
        &mut self,
        sink: &mut (impl Sink + GroupStore<Error = SinkError>),
        partitions: &[i32],
    ) -> Result<Claim, CheckpointError> {
        // Retried like a commit while the store's error may clear (a
        // catalog restarting): a failed claim would stop the member.
        let mut retries = SinkRetries::new(self.sink_retry);
        let claimed = loop {
            match sink.claim(&self.group, &self.owner, partitions).await {
                Ok(claimed) => break claimed,
                Err(error) => wait_to_retry(&mut retries, self.last_id, error).await?,
            }
        };
        let mut claim = Claim::default();
        for &partition in partitions {
            let progress = claimed.progress.get(&partition).cloned().unwrap_or_default();
            let (state, files) = match self.read_chain(sink, partition, &progress).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(
                        partition,
                        %error,
                        "the partition's state cannot be read: it is paused here and tried again"
                    );
                    claim.unreadable.push((partition, error.to_string()));
                    continue;
                }
            };
            let users = state.users();
            self.owned.insert(
                partition,
                Owned {
                    epoch: progress.epoch,
                    chain: None,
                    next_seq: 1,
                    dead_letters_to: claimed.dead_letters_to.get(&partition).copied(),
                    clocks: None,
                    replaced: progress.state.into_iter().collect(),
                },
            );
            let engine = state.into_engine(self.config);
            let offset = progress.offset;
            claim.restored.push(RestoredPartition { partition, engine, offset, users, files });
        }
        Ok(claim)
    }

    /// Folds the chain `progress` names into a partition's state; returns it
    /// and the files read.
    async fn read_chain(
        &self,
        sink: &mut (impl Sink + GroupStore<Error = SinkError>),
        partition: i32,
        progress: &PartitionProgress,
    ) -> Result<(PartitionState, u64), CheckpointError> {
        let mut state = PartitionState::default();
        let Some(chain) = &progress.state else { return Ok((state, 0)) };
        if chain.last < chain.first || chain.last - chain.first >= MAX_CHAIN_FILES {
            return Err(StateError::Corrupt {
                path: format!("the sessions table's summary, partition {partition}"),
                what: "state chain",
                message: format!("files {}..={}", chain.first, chain.last),
            }
            .into());
        }
        for seq in chain.first..=chain.last {
            let bytes = sink.read_state(&self.group, partition, chain.epoch, seq).await?;
            let name = format!("{}/{partition}/{}-{seq}.state", self.group, chain.epoch);
            state.apply(&name, &bytes)?;
        }
        Ok((state, chain.last - chain.first + 1))
    }

    /// Writes the state files of `cut` and commits its output, with the
    /// rules it publishes. A member that holds no partitions commits only
    /// to publish rules an operator gave it.
    async fn write_and_commit(
        &mut self,
        sink: &mut (impl Sink + GroupStore<Error = SinkError>),
        mut cut: CheckpointCut,
    ) -> Result<Recorded, CheckpointError> {
        let id = self.last_id + 1;
        self.last_id = id;
        let mut parts = Vec::with_capacity(cut.shards.len());
        for shard in std::mem::take(&mut cut.shards) {
            let part = PartitionCut::of(shard)?;
            if self.owned.contains_key(&part.partition) {
                parts.push(part);
            }
        }
        let publish = match &mut self.rules {
            Some(exchange) => {
                if let Some(rules) = cut.publish.take() {
                    exchange.queue(rules);
                }
                exchange.upload(sink).await
            }
            None => None,
        };
        for part in &mut parts {
            dead_letter_unwritable(sink, id, &mut part.output);
            self.drop_published_dead_letters(part);
            self.write_state(sink, part).await?;
        }
        let stale = self.replaced_by(&parts);
        let publishing = Instant::now();
        self.publish_to_topic(id, &parts, &cut.rule_version).await?;
        let outcome = self.commit(sink, id, parts, &cut.rule_version, &cut.columns, &publish).await;
        self.last_publish = publishing.elapsed();
        let (view, fenced) = outcome?;
        if view.is_some() {
            let stale: Vec<_> = stale.into_iter().filter(|(p, _)| !fenced.contains(p)).collect();
            self.delete_stale(sink, &stale).await;
        }
        let fleet = match (&mut self.rules, view) {
            (Some(exchange), Some(view)) => Some(Box::new(
                exchange.take_in(sink, view, &cut.rule_version, publish.as_ref()).await,
            )),
            _ => None,
        };
        Ok(Recorded { id, fenced, fleet })
    }

    /// Sends the output of `parts` to the topic, if sessions go to one.
    async fn publish_to_topic(
        &self,
        id: u64,
        parts: &[PartitionCut],
        rule_version: &str,
    ) -> Result<(), CheckpointError> {
        let Some(topic) = &self.topic else { return Ok(()) };
        let outputs = parts.iter().map(|p| (&p.output.sessions[..], &p.output.rejected[..]));
        let batch = TopicBatch { outputs: outputs.collect(), checkpoint: id, rule_version };
        publish_to_topic(topic, batch, self.sink_retry).await
    }

    /// The chains a whole state in `parts` replaces: to be deleted once it commits.
    fn replaced_by(&mut self, parts: &[PartitionCut]) -> Vec<(i32, StateChain)> {
        let mut stale = Vec::new();
        for part in parts.iter().filter(|c| c.whole) {
            if let Some(owned) = self.owned.get_mut(&part.partition) {
                let replaced = std::mem::take(&mut owned.replaced);
                stale.extend(replaced.into_iter().map(|chain| (part.partition, chain)));
            }
        }
        stale
    }

    /// Commits the output of `parts` (and `publish`), leaving out partitions
    /// another member claimed meanwhile, retrying while the sink's error may
    /// clear. Returns the group as the commit left it (none if nothing was to
    /// be committed) and the partitions fenced.
    async fn commit(
        &mut self,
        sink: &mut (impl Sink + GroupStore<Error = SinkError>),
        id: u64,
        mut parts: Vec<PartitionCut>,
        rule_version: &str,
        columns: &[SessionAttribute],
        publish: &Option<Publish>,
    ) -> Result<(Option<GroupView>, Vec<i32>), CheckpointError> {
        let mut fenced = Vec::new();
        let mut retries = SinkRetries::new(self.sink_retry);
        // Every row moved out once, each with its partition, so a fenced
        // partition's rows can be left out of the next attempt.
        let (mut sessions, mut rejected) = (Rows::default(), Rows::default());
        for part in &mut parts {
            sessions.take(part.partition, &mut part.output.sessions);
            rejected.take(part.partition, &mut part.output.rejected);
        }
        while !parts.is_empty() || publish.is_some() {
            let progress = self.progress(&parts);
            let claimed: BTreeMap<i32, u64> = parts
                .iter()
                .filter_map(|c| Some((c.partition, self.owned.get(&c.partition)?.epoch)))
                .collect();
            let commit = MemberCommit {
                group: &self.group,
                owner: &self.owner,
                claimed: &claimed,
                progress: &progress,
                sessions: &sessions.rows,
                rejected: &rejected.rows,
                properties: HashMap::from([
                    (CHECKPOINT_ID_KEY.to_owned(), id.to_string()),
                    (JOB_ID_KEY.to_owned(), self.owner.clone()),
                    (RULE_VERSION_KEY.to_owned(), rule_version.to_owned()),
                ]),
                checkpoint: id,
                rules: rule_version,
                publish: publish.as_ref(),
            };
            // A schema change, not a snapshot: idempotent, so safe to repeat.
            let attempt = match sink.add_columns(columns).await {
                Ok(()) => sink.commit_member(commit).await,
                Err(error) => Err(error),
            };
            let error = match attempt {
                Ok(CommitOutcome::Committed(view)) => return Ok((Some(view), fenced)),
                Ok(CommitOutcome::Fenced(lost)) => {
                    tracing::warn!(
                        partitions = ?lost,
                        "partitions were claimed by another member: their output is dropped"
                    );
                    parts.retain(|c| !lost.contains(&c.partition));
                    sessions.drop_partitions(&lost);
                    rejected.drop_partitions(&lost);
                    for p in &lost {
                        self.owned.remove(p);
                    }
                    fenced.extend(lost);
                    continue;
                }
                Err(error) => error,
            };
            wait_to_retry(&mut retries, id, error).await?;
        }
        Ok((None, fenced))
    }

    /// Deletes the files of `stale` chains, which no summary names any more.
    /// A failure leaves files behind, nothing worse: logged, not retried.
    async fn delete_stale(
        &self,
        sink: &mut (impl Sink + GroupStore<Error = SinkError>),
        stale: &[(i32, StateChain)],
    ) {
        for &(partition, chain) in stale {
            for seq in chain.first..=chain.last {
                if let Err(error) =
                    sink.delete_state(&self.group, partition, chain.epoch, seq).await
                {
                    tracing::warn!(partition, %error, "a replaced state file was not deleted");
                    return;
                }
            }
        }
    }

    /// Writes `part`'s changes as the next file of its chain, unless
    /// nothing changed.
    async fn write_state(
        &mut self,
        sink: &mut (impl Sink + GroupStore<Error = SinkError>),
        part: &PartitionCut,
    ) -> Result<(), CheckpointError> {
        let Some(owned) = self.owned.get_mut(&part.partition) else { return Ok(()) };
        let changes = &part.changes;
        let unchanged = changes.upserts.is_empty()
            && changes.deletes.is_empty()
            && changes.new_texts.is_empty()
            && !changes.replace_texts
            && owned.clocks.as_ref() == Some(&part.clocks);
        if !part.whole && unchanged {
            return Ok(());
        }
        let seq = owned.next_seq;
        if let (true, Some(previous)) = (part.whole, owned.chain) {
            owned.replaced.push(previous);
        }
        let chain = match (part.whole, owned.chain) {
            (true, _) => StateChain { epoch: owned.epoch, first: seq, last: seq },
            (false, Some(chain)) => StateChain { last: seq, ..chain },
            (false, None) => {
                return Err(CheckpointError::Thread(format!(
                    "partition {}: changes cut before its whole state",
                    part.partition
                )))
            }
        };
        let bytes = encode_partition_file(changes, &part.clocks)?;
        sink.write_state(&self.group, part.partition, owned.epoch, seq, bytes).await?;
        owned.next_seq += 1;
        owned.chain = Some(chain);
        owned.clocks = Some(part.clocks.clone());
        Ok(())
    }

    /// Where the partitions of `parts` stand after them; dead letters a
    /// replay repeats are dropped from them first.
    fn progress(&self, parts: &[PartitionCut]) -> GroupProgress {
        parts
            .iter()
            .filter_map(|c| {
                let owned = self.owned.get(&c.partition)?;
                Some((
                    c.partition,
                    PartitionProgress {
                        offset: c.offset,
                        state: owned.chain,
                        ..Default::default()
                    },
                ))
            })
            .collect()
    }

    /// Drops the dead letters of `part` that a commit before the claim
    /// already published (a replay finds the same records again).
    fn drop_published_dead_letters(&self, part: &mut PartitionCut) {
        let Some(to) = self.owned.get(&part.partition).and_then(|o| o.dead_letters_to) else {
            return;
        };
        let p = part.partition;
        part.output.rejected.retain(|dead| dead.partition != p || dead.position >= to);
    }
}

impl<S: Sink + GroupStore<Error = SinkError>> CheckpointStore<S> for GroupCheckpointer {
    async fn complete(
        &mut self,
        sink: &mut S,
        cut: CheckpointCut,
    ) -> Result<Recorded, CheckpointError> {
        self.write_and_commit(sink, cut).await
    }

    async fn claim(&mut self, sink: &mut S, partitions: &[i32]) -> Result<Claim, CheckpointError> {
        self.claim_and_restore(sink, partitions).await
    }

    fn release(&mut self, partitions: &[i32]) {
        GroupCheckpointer::release(self, partitions);
    }

    fn last_publish_time(&self) -> Duration {
        self.last_publish
    }

    /// Nothing on local disk: the state is beside the table.
    fn state_bytes(&self) -> Option<u64> {
        None
    }
}
