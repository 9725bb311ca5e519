//! The thread that completes checkpoints beside the event loop, so the event
//! flow stalls only for a cut. A group member's claims go through it too, in
//! order with its checkpoints.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::group::{Claim, GroupCheckpointer, GroupCompleted, GroupCut};
use super::{CheckpointError, Checkpointer, PendingCheckpoint};
use crate::group::{GroupStore, GroupUpdate};
use crate::sink::{Sink, SinkError};

/// What completes checkpoints: a job's own state store, or a group
/// member's shared storage.
pub(crate) enum Completer {
    /// One instance, state in its state directory.
    Local(Checkpointer),
    /// A member of a consumer group, state beside the table.
    Group(GroupCheckpointer),
}

/// A checkpoint as cut, for its completer.
pub(crate) enum Pending {
    /// All partitions at once, for [`Completer::Local`].
    AllPartitions(PendingCheckpoint),
    /// Partition by partition, for [`Completer::Group`].
    Partitions(GroupCut),
}

impl Pending {
    fn offsets(&self) -> BTreeMap<i32, i64> {
        match self {
            Pending::AllPartitions(pending) => pending.offsets().clone(),
            Pending::Partitions(cut) => cut.offsets(),
        }
    }

    fn counts(&self) -> (u64, u64) {
        match self {
            Pending::AllPartitions(pending) => {
                (pending.output.sessions.len() as u64, pending.output.rejected.len() as u64)
            }
            Pending::Partitions(cut) => cut.counts(),
        }
    }
}

/// A cut checkpoint on its way to the checkpoint thread.
pub(crate) struct Cut {
    /// The checkpoint.
    pub(crate) pending: Pending,
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
    /// Starts the thread in `scope`; it owns the completer and the sink.
    pub(crate) fn start<'scope, S: Sink + GroupStore<Error = SinkError> + Send>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        runtime: &'scope tokio::runtime::Handle,
        mut completer: Completer,
        sink: &'scope mut S,
    ) -> Result<Self, CheckpointError> {
        // One cut may wait while another completes; a third waits on the loop.
        let (work, queue) = mpsc::sync_channel::<Work>(1);
        let (done, completed) = mpsc::channel();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn_scoped(scope, move || {
                for item in queue {
                    let cut = match item {
                        Work::Cut(cut) => *cut,
                        Work::Claim(partitions) => {
                            let claimed = match &mut completer {
                                Completer::Group(group) => {
                                    runtime.block_on(group.claim(sink, &partitions))
                                }
                                Completer::Local(_) => Err(CheckpointError::Thread(
                                    "a job that is no group member claims no partitions".into(),
                                )),
                            };
                            let failed = claimed.is_err();
                            let _ = done.send(Done::Claimed(claimed));
                            if failed {
                                break;
                            }
                            continue;
                        }
                        Work::Release(partitions) => {
                            if let Completer::Group(group) = &mut completer {
                                group.release(&partitions);
                            }
                            continue;
                        }
                    };
                    let offsets = cut.pending.offsets();
                    let (sessions, dead_letters) = cut.pending.counts();
                    let started = Instant::now();
                    let outcome = complete(runtime, &mut completer, sink, cut.pending);
                    let failed = outcome.is_err();
                    let _ = done.send(Done::Checkpoint(outcome.map(|group| Completed {
                        id: group.id,
                        offsets,
                        oldest_closed: cut.oldest_closed,
                        took: started.elapsed(),
                        commit_took: match &completer {
                            Completer::Local(local) => local.last_publish_time(),
                            Completer::Group(group) => group.last_publish_time(),
                        },
                        sessions,
                        dead_letters,
                        state_bytes: match &completer {
                            Completer::Local(local) => local.state_bytes(),
                            Completer::Group(_) => None,
                        },
                        fenced: group.fenced,
                        fleet: group.fleet,
                    })));
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

fn complete<S: Sink + GroupStore<Error = SinkError>>(
    runtime: &tokio::runtime::Handle,
    completer: &mut Completer,
    sink: &mut S,
    pending: Pending,
) -> Result<GroupCompleted, CheckpointError> {
    match (completer, pending) {
        (Completer::Local(local), Pending::AllPartitions(pending)) => runtime
            .block_on(local.complete(sink, pending))
            .map(|id| GroupCompleted { id, fenced: Vec::new(), fleet: None }),
        (Completer::Group(group), Pending::Partitions(cut)) => {
            runtime.block_on(group.complete(sink, cut))
        }
        _ => Err(CheckpointError::Thread("a cut of the other kind of checkpoint".into())),
    }
}
