//! What a group's members need of the storage they share: claims that fence,
//! commits of a member's output that a fenced member cannot make, the
//! partitions' state files, the rules' components and the group's record.
//! The Iceberg sink is one such store (everything rides in the tables'
//! snapshots and beside them); `sink::MemoryGroupStore` is another, for the
//! tests and the simulation.

use std::collections::{BTreeMap, HashMap};

use super::{GroupProgress, GroupView, Publish};
use sessionize_core::rows::{RejectedEvent, SessionRow};

/// Partitions a claim got, as they stood.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Each partition's progress, with the new epoch.
    pub progress: GroupProgress,
    /// Each partition's offset up to which its dead letters are committed
    /// (further than `progress` when a commit stopped between the two).
    pub dead_letters_to: BTreeMap<i32, i64>,
    /// The group's members and rules as the claim found them.
    pub view: GroupView,
}

/// A member's output and where it leaves its partitions.
pub struct MemberCommit<'a> {
    /// The consumer group.
    pub group: &'a str,
    /// The member, as its claims name it.
    pub owner: &'a str,
    /// The partitions it claimed, with the epoch of each claim.
    pub claimed: &'a BTreeMap<i32, u64>,
    /// The new offset (and state) of the partitions the output covers.
    pub progress: &'a GroupProgress,
    /// Sessions closed.
    pub sessions: &'a [SessionRow],
    /// Dead letters.
    pub rejected: &'a [RejectedEvent],
    /// Properties the commit carries (for readers and tools).
    pub properties: HashMap<String, String>,
    /// The member's checkpoint, which `progress` records: the newest
    /// progress shows whether an earlier attempt landed.
    pub checkpoint: u64,
    /// The rules the output was made by.
    pub rules: &'a str,
    /// A change of the group's rules it carries, if any.
    pub publish: Option<&'a Publish>,
}

/// What a member's commit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed; the group's members and rules as the commit left them.
    Committed(GroupView),
    /// Nothing committed: these partitions were claimed by another member
    /// (or again) since this one claimed them.
    Fenced(Vec<i32>),
}

/// The storage a group's members share (see the module docs). Every method
/// may be retried: a claim or commit that reports an error may have landed,
/// and the next attempt finds out.
// The futures are only ever run with `block_on`, so no `Send` bound is needed.
#[allow(async_fn_in_trait)]
pub trait GroupStore {
    /// What the store fails with (the Iceberg sink's and the memory store's
    /// is `SinkError`, which says whether a failure may clear).
    type Error;

    /// Claims `partitions` for `owner`, a member of `group`: raises each
    /// one's epoch, which fences whoever held it, and returns where they stood.
    async fn claim(
        &mut self,
        group: &str,
        owner: &str,
        partitions: &[i32],
    ) -> Result<Claimed, Self::Error>;

    /// Commits a member's output unless another member claimed one of its
    /// partitions since; taken as made only once the store shows it.
    async fn commit_member(
        &mut self,
        commit: MemberCommit<'_>,
    ) -> Result<CommitOutcome, Self::Error>;

    /// Writes one file of a partition's state where every member reaches it.
    async fn write_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
        bytes: Vec<u8>,
    ) -> Result<(), Self::Error>;

    /// Reads one file of a partition's state.
    async fn read_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
    ) -> Result<Vec<u8>, Self::Error>;

    /// Deletes one file of a partition's state that no commit names any more.
    async fn delete_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
    ) -> Result<(), Self::Error>;

    /// Puts a rules component (named by its full SHA-256) where every member
    /// of `group` reaches it.
    async fn write_component(
        &mut self,
        group: &str,
        sha256: &str,
        bytes: Vec<u8>,
    ) -> Result<(), Self::Error>;

    /// Reads a component [`GroupStore::write_component`] put there, refusing
    /// one larger than `max_bytes` (a lasting refusal).
    async fn read_component(
        &mut self,
        group: &str,
        sha256: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, Self::Error>;

    /// The members of `group` and the rules they run, as its newest commit says.
    async fn view(&mut self, group: &str) -> Result<GroupView, Self::Error>;
}
