//! A group member's part of the event loop: rebalances (a last checkpoint
//! for partitions taken away, claims and restores for partitions given),
//! partitions another member claimed, and partitions whose state cannot be
//! read, paused and claimed again later.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{merged, EventLoop, StreamError, RECLAIM_AFTER};
use crate::checkpoint::Claim;
use crate::source::{Rebalanced, StreamSource};

impl<S: StreamSource> EventLoop<'_, S> {
    /// Partitions another member claimed while this one still read them (it
    /// was frozen, or cut off): their engines go, and reading them stops
    /// until the group assigns them here again.
    ///
    /// If the group still assigns one here after [`RECLAIM_AFTER`] (a
    /// coordinator may hand a partition to a new member before the old one
    /// gave it up, and then give it back without telling), it is claimed
    /// again: otherwise nobody would read it.
    pub(super) fn lose(&mut self, partitions: &[i32]) {
        tracing::warn!(
            partitions = ?partitions,
            "another member claimed these partitions: dropped here, and claimed again only if still assigned here later"
        );
        self.engines.drop_partitions(partitions);
        if let Err(error) = self.source.pause(partitions) {
            tracing::warn!(%error, "pausing partitions claimed elsewhere failed");
        }
        let due = Instant::now() + RECLAIM_AFTER;
        self.lost.extend(partitions.iter().map(|&p| (p, due)));
    }

    /// A group member's rebalances: a last checkpoint for partitions taken
    /// away, then they are dropped; partitions assigned are claimed, their
    /// state restored, and read from where their last checkpoint ended.
    /// The changes queued since the last poll are taken together: a
    /// partition assigned and revoked again in between is not claimed (it
    /// cannot be read), and one revoked and assigned back is handed over
    /// and claimed again (another member may have claimed it meanwhile).
    pub(super) fn rebalance(&mut self) -> Result<(), StreamError> {
        let changes = self.source.take_rebalance();
        self.take_due();
        if changes.is_empty() && self.unstarted.is_empty() {
            return Ok(());
        }
        let mut assigned = std::mem::take(&mut self.unstarted);
        let mut revoked = BTreeSet::new();
        for change in changes {
            match change {
                Rebalanced::Assigned(added) => assigned.extend(added),
                Rebalanced::Revoked(gone) => revoked.extend(gone),
            }
        }
        // The source's partitions are the assignment as of now.
        let now: BTreeSet<i32> = self.source.partitions().iter().copied().collect();
        let unreadable = self.unreadable.len();
        self.unreadable.retain(|p, _| now.contains(p) && !revoked.contains(p));
        if self.unreadable.len() != unreadable {
            self.report_unreadable();
        }
        let gone: Vec<i32> = (self.engines.held().into_iter())
            .filter(|p| revoked.contains(p) || !now.contains(p))
            .collect();
        if !gone.is_empty() {
            self.hand_over(gone)?;
        }
        let held: BTreeSet<i32> = self.engines.held().into_iter().collect();
        let added: Vec<i32> =
            assigned.into_iter().filter(|p| now.contains(p) && !held.contains(p)).collect();
        if !added.is_empty() {
            self.claim(added)?;
        }
        self.metrics.set_partitions(self.source.partitions());
        Ok(())
    }

    /// Partitions due to be claimed again: lost to another member's claim,
    /// or claimed but unreadable, a while ago (if still assigned here).
    fn take_due(&mut self) {
        let checked = Instant::now();
        let lost: Vec<i32> =
            self.lost.iter().filter(|(_, &at)| at <= checked).map(|(&p, _)| p).collect();
        for p in &lost {
            self.lost.remove(p);
        }
        let retry = checked + RECLAIM_AFTER;
        let mut unreadable = Vec::new();
        for (&p, (at, _)) in self.unreadable.iter_mut().filter(|(_, (at, _))| *at <= checked) {
            *at = retry;
            unreadable.push(p);
        }
        self.unstarted.extend(lost.into_iter().chain(unreadable));
    }

    /// The partitions whose state cannot be read, to the metrics.
    fn report_unreadable(&self) {
        let why = self.unreadable.iter().map(|(&p, (_, why))| (p, why.clone())).collect();
        self.metrics.observe_unreadable(&why);
    }

    /// Cuts a last checkpoint for `gone`, then drops and releases them.
    fn hand_over(&mut self, gone: Vec<i32>) -> Result<(), StreamError> {
        // While a batch waits for a retry nothing can be cut: the next owner
        // replays from the last checkpoint instead.
        if !self.engines.has_failed_batch() {
            let offsets = merged(&self.start_offsets, self.source.positions());
            self.checkpoint(offsets, None)?;
        }
        self.engines.drop_partitions(&gone);
        self.checkpoints.release(gone.clone())?;
        for p in &gone {
            self.last_message.remove(p);
        }
        tracing::info!(partitions = ?gone, "partitions handed over");
        Ok(())
    }

    /// Claims `added`, restores their state and reads them from where their
    /// last checkpoint ended.
    fn claim(&mut self, added: Vec<i32>) -> Result<(), StreamError> {
        let started = Instant::now();
        let Claim { restored, unreadable } = self.checkpoints.claim(added.clone())?;
        let users: usize = restored.iter().map(|r| r.users).sum();
        let files: u64 = restored.iter().map(|r| r.files).sum();
        let starts: Vec<(i32, Option<i64>)> =
            restored.iter().map(|r| (r.partition, r.offset)).collect();
        self.engines.restore(restored);
        self.pause_unreadable(unreadable);
        let now = Instant::now();
        for (p, offset) in starts {
            match self.source.start_at(p, offset) {
                Ok(()) => {
                    self.last_message.insert(p, now);
                }
                Err(error) => {
                    // Most likely revoked again meanwhile (the next poll says
                    // so); if it is still assigned then, it is claimed again.
                    tracing::warn!(partition = p, %error, "cannot start reading a claimed partition");
                    self.engines.drop_partitions(&[p]);
                    self.checkpoints.release(vec![p])?;
                    self.unstarted.insert(p);
                }
            }
        }
        tracing::info!(
            partitions = ?added,
            users,
            files,
            took_ms = started.elapsed().as_millis(),
            "partitions claimed and restored"
        );
        Ok(())
    }

    /// Keeps partitions whose state could not be read paused, to be
    /// claimed and read again later; the others go on meanwhile.
    fn pause_unreadable(&mut self, unreadable: Vec<(i32, String)>) {
        if unreadable.is_empty() && self.unreadable.is_empty() {
            return;
        }
        let partitions: Vec<i32> = unreadable.iter().map(|(p, _)| *p).collect();
        if let Err(error) = self.source.pause(&partitions) {
            tracing::warn!(%error, "pausing partitions whose state cannot be read failed");
        }
        let retry = Instant::now() + RECLAIM_AFTER;
        for (p, why) in unreadable {
            self.unreadable.insert(p, (retry, why));
        }
        let readable: Vec<i32> =
            self.engines.held().into_iter().filter(|p| self.unreadable.contains_key(p)).collect();
        for p in readable {
            self.unreadable.remove(&p);
        }
        self.report_unreadable();
    }
}
