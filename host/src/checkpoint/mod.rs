//! The checkpoint protocol: one checkpoint ties the input offsets consumed, the
//! state after them, and the Iceberg snapshot holding the sessions they closed.
//!
//! The event loop only *cuts* a checkpoint ([`CheckpointCut`]: for each of its
//! engines the changed users, the clocks, the offsets and the output, taken at
//! one instant). A [`CheckpointStore`] does the slow steps, one checkpoint at a
//! time and in order, on the [`CheckpointThread`] beside the loop. There are
//! two: a group member's ([`GroupCheckpointer`], state beside the table; see
//! its module), and a job's own, [`Checkpointer`], whose steps are:
//!
//! 1. One redb transaction writes the state changes, the checkpoint record
//!    (id, offsets, clocks) and the checkpoint's output, staged.
//! 2. The staged output is committed to Iceberg with the checkpoint id (and the
//!    job id) in the snapshot summary, unless the table already holds it.
//! 3. The staged output is dropped from the store.
//! 4. The offsets are committed to the consumer group (for monitoring only).
//!
//! A crash before 1 leaves the previous checkpoint: input is re-read from its
//! offsets and, being deterministic, closes the same sessions again. A crash
//! between 1 and 3 leaves staged output: recovery publishes it, and step 2's
//! check makes that idempotent. So every session reaches Iceberg exactly once.
//!
//! Before step 1, sessions the sink says it cannot store ([`Sink::check_session`])
//! become dead letters with their reason: staged, such a row would fail its
//! commit, and every restart's, for ever. Step 2 is retried with backoff while
//! the sink's error may clear by itself (a locked catalog, a full disk), up to
//! a [`SinkRetryPolicy`]'s budget; each attempt redoes the check of what the
//! tables already hold, so a retry never writes anything twice. An error that
//! lasts stops the job at the checkpoint, which step 1 made durable.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineConfig, EngineError};
use crate::sink::topic::{SessionsTopic, TopicBatch};
use crate::sink::{divert_unwritable, Sink, SinkError, SinkRetries, SinkRetryPolicy};
use crate::state::{CheckpointRecord, StagedOutput, StateError, StateStore};

mod cut;
mod exchange;
mod group;
mod store;
mod thread;

#[cfg(test)]
mod tests;

pub use cut::{CheckpointCut, ShardCut, Span};
pub(crate) use exchange::{fetch_component, RulesExchange};
pub use group::{Claim, GroupCheckpointer, Recorded, RestoredPartition};
pub use store::CheckpointStore;
pub(crate) use thread::{CheckpointThread, Completed, Cut};

/// Snapshot summary key: the checkpoint whose output the snapshot holds.
pub const CHECKPOINT_ID_KEY: &str = "sessionize.checkpoint-id";
/// Snapshot summary key: the job (state store) that wrote the snapshot.
pub const JOB_ID_KEY: &str = "sessionize.job-id";
/// Snapshot summary key: the input offsets after the checkpoint, as JSON.
pub const OFFSETS_KEY: &str = "sessionize.offsets";
/// Snapshot summary key: the rules that cut the sessions.
pub const RULE_VERSION_KEY: &str = "sessionize.rule-version";

/// Why a checkpoint or a recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The Iceberg commit failed (the checkpoint is durable; a restart publishes it).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The sink kept failing with an error that may have cleared, for the
    /// whole retry budget.
    #[error(
        "the sink still failed after {attempts} attempts over {}; stopping at checkpoint \
         {checkpoint}, which is saved and is published when the job restarts",
        humantime::format_duration(*.waited)
    )]
    SinkUnavailable {
        /// The checkpoint whose output could not be published.
        checkpoint: u64,
        /// Attempts made.
        attempts: u32,
        /// Time from the first attempt to the last failure, to the millisecond.
        waited: Duration,
        /// The last failure.
        #[source]
        source: SinkError,
    },
    /// The engine could not hand over its state.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The checkpoint thread could not start, or stopped.
    #[error("checkpoint thread: {0}")]
    Thread(String),
}

/// Where a recovered job resumes.
pub struct Resumed {
    /// The engine as of the last checkpoint.
    pub engine: Engine,
    /// Next offset per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// The last checkpoint's id (0 for a fresh job).
    pub checkpoint_id: u64,
    /// Open sessions recovered.
    pub open_users: usize,
    /// The rules the last checkpoint was cut by (empty for a fresh job).
    pub rule_version: String,
    /// The rules the command line gave the run that cut it.
    pub given_rules: String,
}

/// Runs checkpoints against one state store and one sink.
pub struct Checkpointer {
    store: StateStore,
    job_id: String,
    last_id: u64,
    given_rules: String,
    sink_retry: SinkRetryPolicy,
    /// How long the last checkpoint's publish took.
    last_publish: Duration,
    /// Where sessions also go, if anywhere.
    topic: Option<SessionsTopic>,
}

impl Checkpointer {
    /// Recovers from `store`: publishes output a crash left staged, then rebuilds
    /// the engine as of the last checkpoint.
    pub async fn recover(
        store: StateStore,
        sink: &mut impl Sink,
        config: EngineConfig,
    ) -> Result<(Self, Resumed), CheckpointError> {
        Self::recover_publishing(store, sink, config, None).await
    }

    /// [`Checkpointer::recover`], with every checkpoint's output (output a
    /// crash left staged first) published to `topic` too, before the table.
    pub async fn recover_publishing(
        store: StateStore,
        sink: &mut impl Sink,
        config: EngineConfig,
        topic: Option<SessionsTopic>,
    ) -> Result<(Self, Resumed), CheckpointError> {
        let job_id = store.job_id()?;
        let recovered = store.recover()?;
        let checkpoint = recovered.checkpoint.unwrap_or_default();
        let mut this = Self {
            store,
            job_id,
            last_id: checkpoint.id,
            given_rules: String::new(),
            sink_retry: SinkRetryPolicy::default(),
            last_publish: Duration::ZERO,
            topic,
        };
        if let Some(mut staged) = recovered.staged {
            tracing::info!(checkpoint = checkpoint.id, "publishing output staged before a stop");
            // Staged by a version that did not check its rows yet.
            dead_letter_unwritable(sink, checkpoint.id, &mut staged);
            this.publish_to_topic(&checkpoint, &staged).await?;
            this.publish(sink, &checkpoint, &staged).await?;
        }
        let open_users = recovered.users.len();
        let engine = Engine::restore(config, recovered.texts, checkpoint.clocks, recovered.users)
            .with_stored_fields(&recovered.fields);
        let resumed = Resumed {
            engine,
            offsets: checkpoint.offsets,
            checkpoint_id: checkpoint.id,
            open_users,
            rule_version: checkpoint.rule_version,
            given_rules: checkpoint.given_rules,
        };
        Ok((this, resumed))
    }

    /// Records, in every checkpoint from now on, the rules the command line
    /// gave this run, so a restart can tell whether they changed.
    pub fn set_given_rules(&mut self, rule_version: &str) {
        self.given_rules = rule_version.to_owned();
    }

    /// How publishing retries a failing sink from now on (by default
    /// [`SinkRetryPolicy::default`]).
    pub fn set_sink_retry(&mut self, policy: SinkRetryPolicy) {
        self.sink_retry = policy;
    }

    /// Sends `output` to the topic, if sessions go to one (at least once:
    /// before the table, so a crash in between sends it again).
    async fn publish_to_topic(
        &self,
        record: &CheckpointRecord,
        output: &StagedOutput,
    ) -> Result<(), CheckpointError> {
        let Some(topic) = &self.topic else { return Ok(()) };
        let batch = TopicBatch {
            outputs: vec![(&output.sessions, &output.rejected)],
            checkpoint: record.id,
            rule_version: &record.rule_version,
        };
        publish_to_topic(topic, batch, self.sink_retry).await
    }

    /// The one shard of a job on its own's cut: the whole topic's.
    fn topic_shard(cut: CheckpointCut) -> Result<(ShardCut, CheckpointCut), CheckpointError> {
        let mut cut = cut;
        if cut.publish.is_some() {
            return Err(CheckpointError::Thread(
                "a job on its own has no group to publish rules to".into(),
            ));
        }
        match (cut.shards.pop(), cut.shards.is_empty()) {
            (Some(shard), true) if shard.span == Span::Topic && !shard.whole => Ok((shard, cut)),
            _ => Err(CheckpointError::Thread(
                "a job on its own cuts one shard, the whole topic's changes".into(),
            )),
        }
    }

    /// Commits a checkpoint's output to Iceberg unless it is already there,
    /// retrying while the sink's error may clear, then drops it from the store.
    ///
    /// The loop is reload -> check -> commit, until a check finds the output:
    /// the catalog's compare-and-swap is the only lock between writers, a lost
    /// race is an error worth retrying, and only a check that reads the table
    /// can tell whether an attempt landed (iceberg-rust's own retry would
    /// re-apply the append without asking, and a catalog may report a commit
    /// that did not land).
    async fn publish(
        &mut self,
        sink: &mut impl Sink,
        record: &CheckpointRecord,
        output: &StagedOutput,
    ) -> Result<(), CheckpointError> {
        let mut retries = SinkRetries::new(self.sink_retry);
        let mut committed = false;
        loop {
            let error = match self.commit_unless_held(sink, record, output).await {
                Ok(Published::Held) => break,
                Ok(Published::Committed) if committed => {
                    SinkError::CommitNotVisible { checkpoint: record.id }
                }
                Ok(Published::Committed) => {
                    committed = true;
                    continue;
                }
                Err(error) => error,
            };
            committed = false;
            let Some(delay) = retries.after_failure(&error) else {
                if !error.is_transient() {
                    return Err(error.into());
                }
                return Err(CheckpointError::SinkUnavailable {
                    checkpoint: record.id,
                    attempts: retries.attempts(),
                    waited: whole_millis(retries.elapsed()),
                    source: error,
                });
            };
            tracing::warn!(
                checkpoint = record.id,
                attempt = retries.attempts(),
                retry_in = %humantime::format_duration(whole_millis(delay)),
                %error,
                "publishing to the sink failed; retrying"
            );
            // A lost race is retried at once: no trip through the timer.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        self.store.clear_staged(record.id)?;
        Ok(())
    }

    /// One pass of the publish loop. It reads what the tables hold first,
    /// every time: an earlier attempt, or an earlier run, may have committed
    /// the dead letters, or all of it.
    async fn commit_unless_held(
        &self,
        sink: &mut impl Sink,
        record: &CheckpointRecord,
        output: &StagedOutput,
    ) -> Result<Published, SinkError> {
        let holds = |props: Option<HashMap<String, String>>| {
            props.is_some_and(|p| {
                p.get(CHECKPOINT_ID_KEY).and_then(|id| id.parse::<u64>().ok()) >= Some(record.id)
            })
        };
        if holds(Sink::last_commit_properties(sink, JOB_ID_KEY, &self.job_id).await?) {
            return Ok(Published::Held);
        }
        // The sink commits dead letters before sessions: a crash between
        // the two leaves the dead letters in, so they are not repeated.
        let rejected_done =
            holds(Sink::last_rejected_commit_properties(sink, JOB_ID_KEY, &self.job_id).await?);
        let rejected = if rejected_done { &[][..] } else { &output.rejected[..] };
        // A schema change, not a snapshot: idempotent, so safe to repeat.
        Sink::add_columns(sink, &output.columns).await?;
        let props = HashMap::from([
            (CHECKPOINT_ID_KEY.to_owned(), record.id.to_string()),
            (JOB_ID_KEY.to_owned(), self.job_id.clone()),
            (RULE_VERSION_KEY.to_owned(), record.rule_version.clone()),
            (OFFSETS_KEY.to_owned(), offsets_json(&record.offsets)),
        ]);
        Sink::commit(sink, &output.sessions, rejected, props).await?;
        Ok(Published::Committed)
    }
}

impl<S: Sink> CheckpointStore<S> for Checkpointer {
    /// Makes a cut checkpoint durable and publishes it (steps 1 to 3 of the
    /// module docs). Checkpoints must be completed in the order they were cut.
    async fn complete(
        &mut self,
        sink: &mut S,
        cut: CheckpointCut,
    ) -> Result<Recorded, CheckpointError> {
        let (shard, cut) = Self::topic_shard(cut)?;
        let ShardCut { changes, offsets, clocks, mut output, .. } = shard;
        output.columns = cut.columns;
        let record = CheckpointRecord {
            id: self.last_id + 1,
            offsets,
            clocks,
            rule_version: cut.rule_version,
            given_rules: self.given_rules.clone(),
        };
        dead_letter_unwritable(sink, record.id, &mut output);
        self.store.write_checkpoint(&changes, &record, &output)?;
        drop(changes);
        self.last_id = record.id;
        let publishing = Instant::now();
        self.publish_to_topic(&record, &output).await?;
        self.publish(sink, &record, &output).await?;
        self.last_publish = publishing.elapsed();
        Ok(Recorded { id: record.id, fenced: Vec::new(), fleet: None })
    }

    async fn claim(
        &mut self,
        _sink: &mut S,
        _partitions: &[i32],
    ) -> Result<Claim, CheckpointError> {
        Err(CheckpointError::Thread("a job on its own claims no partitions".into()))
    }

    /// Nothing to give up: a job on its own holds no claims.
    fn release(&mut self, _partitions: &[i32]) {}

    fn last_publish_time(&self) -> Duration {
        self.last_publish
    }

    fn state_bytes(&self) -> Option<u64> {
        self.store.file_size()
    }
}

/// What one pass of the publish loop found or did.
enum Published {
    /// The sessions table holds the checkpoint.
    Held,
    /// The output was committed; the next pass checks that it landed.
    Committed,
}

/// Waits before the next attempt at checkpoint `id`'s commit, or says why
/// there is none: `error` cannot clear, or the policy's budget is spent.
pub(super) async fn wait_to_retry(
    retries: &mut SinkRetries,
    id: u64,
    error: SinkError,
) -> Result<(), CheckpointError> {
    let Some(delay) = retries.after_failure(&error) else {
        if !error.is_transient() {
            return Err(error.into());
        }
        return Err(CheckpointError::SinkUnavailable {
            checkpoint: id,
            attempts: retries.attempts(),
            waited: whole_millis(retries.elapsed()),
            source: error,
        });
    };
    tracing::warn!(checkpoint = id, %error, "publishing to the sink failed; retrying");
    // A lost race is retried at once: no trip through the timer.
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(())
}

/// Publishes a checkpoint's output to the topics, retrying while the
/// broker's error may clear.
async fn publish_to_topic(
    topic: &SessionsTopic,
    batch: TopicBatch<'_>,
    policy: SinkRetryPolicy,
) -> Result<(), CheckpointError> {
    let mut retries = SinkRetries::new(policy);
    loop {
        match topic.publish(&batch).await {
            Ok(()) => return Ok(()),
            Err(error) => wait_to_retry(&mut retries, batch.checkpoint, error).await?,
        }
    }
}

/// `duration` to the millisecond, for messages.
fn whole_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Turns the sessions `sink` cannot store into dead letters of the same output.
fn dead_letter_unwritable(sink: &impl Sink, checkpoint: u64, output: &mut StagedOutput) {
    let moved = divert_unwritable(sink, &mut output.sessions, &mut output.rejected);
    if moved > 0 {
        let first = output.rejected.len() - moved;
        let first = output.rejected.get(first).map(|dead| dead.reason.as_str()).unwrap_or_default();
        tracing::warn!(
            checkpoint,
            sessions = moved,
            first,
            "sessions the sink cannot store are written as dead letters"
        );
    }
}

/// `{"0": 1234, "1": 99}`: next offset per partition.
fn offsets_json(offsets: &BTreeMap<i32, i64>) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        offsets.iter().map(|(p, o)| (p.to_string(), (*o).into())).collect();
    serde_json::Value::Object(map).to_string()
}
