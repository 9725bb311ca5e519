//! The checkpoint protocol: one checkpoint ties the input offsets consumed, the
//! state after them, and the Iceberg snapshot holding the sessions they closed.
//!
//! The event loop only *cuts* a checkpoint ([`PendingCheckpoint::cut`]: the
//! engine's changed users, its clocks, the offsets and the output, taken at one
//! instant); [`Checkpointer::complete`] does the slow steps, one checkpoint at a
//! time and in order, on the [`CheckpointThread`] beside the loop:
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

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Instant;

use crate::engine::{Engine, EngineChanges, EngineClocks, EngineConfig, EngineError};
use crate::sink::iceberg::{IcebergSink, SinkError};
use crate::state::{CheckpointRecord, StagedOutput, StateError, StateStore};

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

/// A checkpoint as cut by the event loop, not yet durable.
pub struct PendingCheckpoint {
    changes: EngineChanges,
    offsets: BTreeMap<i32, i64>,
    clocks: EngineClocks,
    rule_version: String,
    output: StagedOutput,
}

impl PendingCheckpoint {
    /// Takes what the checkpoint holds at this instant: the users changed since
    /// the last cut, the clocks, the input `offsets` and the `output` they closed.
    pub fn cut(
        engine: &mut Engine,
        offsets: BTreeMap<i32, i64>,
        output: StagedOutput,
        rule_version: &str,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            changes: engine.take_changes()?,
            clocks: engine.clocks(),
            offsets,
            rule_version: rule_version.to_owned(),
            output,
        })
    }

    /// The input offsets the checkpoint resumes from.
    pub fn offsets(&self) -> &BTreeMap<i32, i64> {
        &self.offsets
    }

    /// Sessions the checkpoint publishes.
    pub fn sessions(&self) -> usize {
        self.output.sessions.len()
    }
}

/// Runs checkpoints against one state store and one sink.
pub struct Checkpointer {
    store: StateStore,
    job_id: String,
    last_id: u64,
    given_rules: String,
}

impl Checkpointer {
    /// Recovers from `store`: publishes output a crash left staged, then rebuilds
    /// the engine as of the last checkpoint.
    pub async fn recover(
        store: StateStore,
        sink: &mut IcebergSink,
        config: EngineConfig,
    ) -> Result<(Self, Resumed), CheckpointError> {
        let job_id = store.job_id()?;
        let recovered = store.recover()?;
        let checkpoint = recovered.checkpoint.unwrap_or_default();
        let mut this = Self { store, job_id, last_id: checkpoint.id, given_rules: String::new() };
        if let Some(staged) = recovered.staged {
            tracing::info!(checkpoint = checkpoint.id, "publishing output staged before a stop");
            this.publish(sink, &checkpoint, &staged).await?;
        }
        let open_users = recovered.users.len();
        let engine = Engine::restore(config, recovered.texts, checkpoint.clocks, recovered.users);
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

    /// Cuts and completes a checkpoint in one go.
    pub async fn checkpoint(
        &mut self,
        engine: &mut Engine,
        sink: &mut IcebergSink,
        offsets: BTreeMap<i32, i64>,
        output: StagedOutput,
        rule_version: &str,
    ) -> Result<u64, CheckpointError> {
        let pending = PendingCheckpoint::cut(engine, offsets, output, rule_version)?;
        self.complete(sink, pending).await
    }

    /// Makes a cut checkpoint durable and publishes it (steps 1 to 3 of the
    /// module docs). Checkpoints must be completed in the order they were cut.
    pub async fn complete(
        &mut self,
        sink: &mut IcebergSink,
        pending: PendingCheckpoint,
    ) -> Result<u64, CheckpointError> {
        let PendingCheckpoint { changes, offsets, clocks, rule_version, output } = pending;
        let record = CheckpointRecord {
            id: self.last_id + 1,
            offsets,
            clocks,
            rule_version,
            given_rules: self.given_rules.clone(),
        };
        self.store.write_checkpoint(&changes, &record, &output)?;
        drop(changes);
        self.last_id = record.id;
        self.publish(sink, &record, &output).await?;
        Ok(record.id)
    }

    /// Commits a checkpoint's output to Iceberg unless it is already there, then
    /// drops it from the store.
    async fn publish(
        &mut self,
        sink: &mut IcebergSink,
        record: &CheckpointRecord,
        output: &StagedOutput,
    ) -> Result<(), CheckpointError> {
        let holds = |props: Option<HashMap<String, String>>| {
            props.is_some_and(|p| {
                p.get(JOB_ID_KEY) == Some(&self.job_id)
                    && p.get(CHECKPOINT_ID_KEY).and_then(|id| id.parse::<u64>().ok())
                        >= Some(record.id)
            })
        };
        if holds(sink.last_commit_properties().await?) {
            tracing::info!(checkpoint = record.id, "output already in Iceberg");
        } else {
            // The sink commits dead letters before sessions: a crash between
            // the two leaves the dead letters in, so they are not repeated.
            let rejected_done = holds(sink.last_rejected_commit_properties().await?);
            let rejected = if rejected_done { &[][..] } else { &output.rejected[..] };
            let props = HashMap::from([
                (CHECKPOINT_ID_KEY.to_owned(), record.id.to_string()),
                (JOB_ID_KEY.to_owned(), self.job_id.clone()),
                (RULE_VERSION_KEY.to_owned(), record.rule_version.clone()),
                (OFFSETS_KEY.to_owned(), offsets_json(&record.offsets)),
            ]);
            sink.commit(&output.sessions, rejected, props).await?;
        }
        self.store.clear_staged(record.id)?;
        Ok(())
    }
}

/// A cut checkpoint on its way to the checkpoint thread.
pub struct Cut {
    /// The checkpoint.
    pub pending: PendingCheckpoint,
    /// When the oldest session it publishes closed.
    pub oldest_closed: Option<Instant>,
}

/// A checkpoint the checkpoint thread has completed.
pub struct Completed {
    /// Its id.
    pub id: u64,
    /// The input offsets it resumes from.
    pub offsets: BTreeMap<i32, i64>,
    /// When the oldest session it published closed.
    pub oldest_closed: Option<Instant>,
}

/// The thread that completes checkpoints, in the order they were cut.
pub struct CheckpointThread {
    cuts: mpsc::SyncSender<Cut>,
    completed: mpsc::Receiver<Result<Completed, CheckpointError>>,
}

impl CheckpointThread {
    /// Starts the thread in `scope`; it owns the checkpointer and the sink.
    pub fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        runtime: &'scope tokio::runtime::Handle,
        mut checkpointer: Checkpointer,
        sink: &'scope mut IcebergSink,
    ) -> Result<Self, CheckpointError> {
        // One cut may wait while another completes; a third waits on the loop.
        let (cuts, queue) = mpsc::sync_channel::<Cut>(1);
        let (done, completed) = mpsc::channel();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn_scoped(scope, move || {
                for cut in queue {
                    let offsets = cut.pending.offsets().clone();
                    let outcome = runtime.block_on(checkpointer.complete(sink, cut.pending));
                    let failed = outcome.is_err();
                    let _ = done.send(outcome.map(|id| Completed {
                        id,
                        offsets,
                        oldest_closed: cut.oldest_closed,
                    }));
                    if failed {
                        // Later checkpoints build on this one: stop here.
                        break;
                    }
                }
            })
            .map_err(|e| CheckpointError::Thread(e.to_string()))?;
        Ok(Self { cuts, completed })
    }

    /// Hands a cut over; waits only if the thread is two checkpoints behind.
    pub fn submit(&self, cut: Cut) -> Result<(), CheckpointError> {
        if self.cuts.send(cut).is_err() {
            // The thread stopped on an error: report it (checkpoints it
            // completed before may still be queued ahead of it).
            return Err(self.completed.iter().find_map(Result::err).unwrap_or_else(|| {
                CheckpointError::Thread("the checkpoint thread stopped".into())
            }));
        }
        Ok(())
    }

    /// A checkpoint completed since the last call, if any.
    pub fn try_completed(&self) -> Option<Result<Completed, CheckpointError>> {
        self.completed.try_recv().ok()
    }

    /// No more cuts: the checkpoints still to complete, as they complete.
    pub fn finish(self) -> impl Iterator<Item = Result<Completed, CheckpointError>> {
        drop(self.cuts);
        self.completed.into_iter()
    }
}

/// `{"0": 1234, "1": 99}`: next offset per partition.
fn offsets_json(offsets: &BTreeMap<i32, i64>) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        offsets.iter().map(|(p, o)| (p.to_string(), (*o).into())).collect();
    serde_json::Value::Object(map).to_string()
}
