//! The thread that completes checkpoints beside the event loop, so the event
//! flow stalls only for a cut.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{CheckpointError, Checkpointer, PendingCheckpoint};
use crate::sink::Sink;

/// A cut checkpoint on its way to the checkpoint thread.
pub(crate) struct Cut {
    /// The checkpoint.
    pub(crate) pending: PendingCheckpoint,
    /// When the oldest session it publishes closed.
    pub(crate) oldest_closed: Option<Instant>,
}

/// A checkpoint the checkpoint thread has completed.
pub(crate) struct Completed {
    /// Its id.
    pub(crate) id: u64,
    /// The input offsets it resumes from.
    pub(crate) offsets: BTreeMap<i32, i64>,
    /// When the oldest session it published closed.
    pub(crate) oldest_closed: Option<Instant>,
    /// How long completing it took (state write and Iceberg commit).
    pub(crate) took: Duration,
    /// How long the Iceberg commit took, retries included.
    pub(crate) commit_took: Duration,
    /// Sessions it published.
    pub(crate) sessions: u64,
    /// Dead letters it published.
    pub(crate) dead_letters: u64,
    /// The state store's size after it, if it could be read.
    pub(crate) state_bytes: Option<u64>,
}

/// The thread that completes checkpoints, in the order they were cut.
pub(crate) struct CheckpointThread {
    cuts: mpsc::SyncSender<Cut>,
    completed: mpsc::Receiver<Result<Completed, CheckpointError>>,
}

impl CheckpointThread {
    /// Starts the thread in `scope`; it owns the checkpointer and the sink.
    pub(crate) fn start<'scope, S: Sink + Send>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        runtime: &'scope tokio::runtime::Handle,
        mut checkpointer: Checkpointer,
        sink: &'scope mut S,
    ) -> Result<Self, CheckpointError> {
        // One cut may wait while another completes; a third waits on the loop.
        let (cuts, queue) = mpsc::sync_channel::<Cut>(1);
        let (done, completed) = mpsc::channel();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn_scoped(scope, move || {
                for cut in queue {
                    let offsets = cut.pending.offsets().clone();
                    let sessions = cut.pending.output.sessions.len() as u64;
                    let dead_letters = cut.pending.output.rejected.len() as u64;
                    let started = Instant::now();
                    let outcome = runtime.block_on(checkpointer.complete(sink, cut.pending));
                    let failed = outcome.is_err();
                    let _ = done.send(outcome.map(|id| Completed {
                        id,
                        offsets,
                        oldest_closed: cut.oldest_closed,
                        took: started.elapsed(),
                        commit_took: checkpointer.last_publish_time(),
                        sessions,
                        dead_letters,
                        state_bytes: checkpointer.state_bytes(),
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
    pub(crate) fn submit(&self, cut: Cut) -> Result<(), CheckpointError> {
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
    pub(crate) fn try_completed(&self) -> Option<Result<Completed, CheckpointError>> {
        self.completed.try_recv().ok()
    }

    /// No more cuts: the checkpoints still to complete, as they complete.
    pub(crate) fn finish(self) -> impl Iterator<Item = Result<Completed, CheckpointError>> {
        drop(self.cuts);
        self.completed.into_iter()
    }
}
