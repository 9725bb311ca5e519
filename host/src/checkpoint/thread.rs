//! The thread that completes checkpoints beside the event loop, so the event
//! flow stalls only for a cut. A group member's claims go through it too, in
//! order with its checkpoints.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::group::{Claim, Recorded};
use super::{CheckpointCut, CheckpointError, CheckpointStore};
use crate::group::GroupUpdate;

/// A cut checkpoint on its way to the checkpoint thread.
pub(crate) struct Cut {
    /// The checkpoint.
    pub(crate) checkpoint: CheckpointCut,
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
    /// Partitions another group member claimed first: nothing of theirs
    /// was published, and they are this member's no more.
    pub(crate) fenced: Vec<i32>,
    /// What a group member's commit learnt of the group's rules.
    pub(crate) fleet: Option<Box<GroupUpdate>>,
}

enum Work {
    Cut(Box<Cut>),
    Claim(Vec<i32>),
    Release(Vec<i32>),
}

enum Done {
    Checkpoint(Result<Completed, CheckpointError>),
    Claimed(Result<Claim, CheckpointError>),
}

/// The thread that completes checkpoints, in the order they were cut.
pub(crate) struct CheckpointThread {
    work: mpsc::SyncSender<Work>,
    done: mpsc::Receiver<Done>,
    /// Checkpoints completed while a claim was awaited.
    completed: VecDeque<Result<Completed, CheckpointError>>,
}

impl CheckpointThread {
    /// Starts the thread in `scope`; it owns the checkpoint store and the sink.
    pub(crate) fn start<'scope, C, S>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        runtime: &'scope tokio::runtime::Handle,
        mut store: C,
        sink: &'scope mut S,
    ) -> Result<Self, CheckpointError>
    where
        C: CheckpointStore<S> + 'scope,
        S: Send,
    {
        // One cut may wait while another completes; a third waits on the loop.
        let (work, queue) = mpsc::sync_channel::<Work>(1);
        let (done, completed) = mpsc::channel();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn_scoped(scope, move || {
                for item in queue {
                    let failed = match item {
                        Work::Cut(cut) => {
                            let completed = complete(runtime, &mut store, sink, *cut);
                            let failed = completed.is_err();
                            let _ = done.send(Done::Checkpoint(completed));
                            failed
                        }
                        Work::Claim(partitions) => {
                            let claimed = runtime.block_on(store.claim(sink, &partitions));
                            let failed = claimed.is_err();
                            let _ = done.send(Done::Claimed(claimed));
                            failed
                        }
                        Work::Release(partitions) => {
                            store.release(&partitions);
                            false
                        }
                    };
                    if failed {
                        // Later checkpoints build on this one: stop here.
                        break;
                    }
                }
            })
            .map_err(|e| CheckpointError::Thread(e.to_string()))?;
        Ok(Self { work, done: completed, completed: VecDeque::new() })
    }

    /// Hands a cut over; waits only if the thread is two checkpoints behind.
    pub(crate) fn submit(&mut self, cut: Cut) -> Result<(), CheckpointError> {
        self.send(Work::Cut(Box::new(cut)))
    }

    /// Claims `partitions` for this group member once the checkpoints cut
    /// before are complete, and restores their state.
    pub(crate) fn claim(&mut self, partitions: Vec<i32>) -> Result<Claim, CheckpointError> {
        self.send(Work::Claim(partitions))?;
        loop {
            match self.done.recv() {
                Ok(Done::Claimed(claimed)) => return claimed,
                Ok(Done::Checkpoint(completed)) => self.completed.push_back(completed),
                Err(_) => return Err(self.stopped()),
            }
        }
    }

    /// Gives up the claim on `partitions` once the checkpoints cut before
    /// (their last) are complete.
    pub(crate) fn release(&mut self, partitions: Vec<i32>) -> Result<(), CheckpointError> {
        self.send(Work::Release(partitions))
    }

    fn send(&mut self, work: Work) -> Result<(), CheckpointError> {
        if self.work.send(work).is_err() {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// The thread stopped on an error: that error (checkpoints it completed
    /// before may still be queued ahead of it).
    fn stopped(&mut self) -> CheckpointError {
        let queued = self.completed.drain(..).find_map(Result::err);
        queued
            .or_else(|| {
                self.done.iter().find_map(|done| match done {
                    Done::Checkpoint(Err(error)) | Done::Claimed(Err(error)) => Some(error),
                    _ => None,
                })
            })
            .unwrap_or_else(|| CheckpointError::Thread("the checkpoint thread stopped".into()))
    }

    /// A checkpoint completed since the last call, if any.
    pub(crate) fn try_completed(&mut self) -> Option<Result<Completed, CheckpointError>> {
        if let Some(completed) = self.completed.pop_front() {
            return Some(completed);
        }
        match self.done.try_recv().ok()? {
            Done::Checkpoint(completed) => Some(completed),
            Done::Claimed(Err(error)) => Some(Err(error)),
            Done::Claimed(Ok(_)) => None,
        }
    }

    /// No more cuts: the checkpoints still to complete, as they complete.
    pub(crate) fn finish(self) -> impl Iterator<Item = Result<Completed, CheckpointError>> {
        let CheckpointThread { work, done, completed } = self;
        drop(work);
        completed.into_iter().chain(done.into_iter().filter_map(|done| match done {
            Done::Checkpoint(completed) => Some(completed),
            Done::Claimed(Err(error)) => Some(Err(error)),
            Done::Claimed(Ok(_)) => None,
        }))
    }
}

/// Completes `cut` with `store`, and says how it went.
fn complete<C: CheckpointStore<S>, S>(
    runtime: &tokio::runtime::Handle,
    store: &mut C,
    sink: &mut S,
    cut: Cut,
) -> Result<Completed, CheckpointError> {
    let offsets = cut.checkpoint.offsets();
    let (sessions, dead_letters) = cut.checkpoint.counts();
    let started = Instant::now();
    let Recorded { id, fenced, fleet } = runtime.block_on(store.complete(sink, cut.checkpoint))?;
    Ok(Completed {
        id,
        offsets,
        oldest_closed: cut.oldest_closed,
        took: started.elapsed(),
        commit_took: store.last_publish_time(),
        sessions,
        dead_letters,
        state_bytes: store.state_bytes(),
        fenced,
        fleet,
    })
}
