//! A consumer group's members (`run --scale-out`): many instances share a
//! topic's partitions, and a partition's state moves with it. This module is
//! the protocol's model, apart from any storage:
//!
//! - [`progress`](PartitionProgress): where each partition stands (offset,
//!   owner, the epoch of its claim, the chain of its state files), and the
//!   rules that decide who may commit ([`fenced`]) and whether a commit
//!   landed ([`holds`]);
//! - [`record`](RulesRecord): the group's rules, what each member runs, and how
//!   a [`Publish`] changes them (refused when made against an older record);
//! - [`GroupStore`]: what the members need of shared storage. The Iceberg sink
//!   implements it with the tables' snapshots (`sink::iceberg`);
//!   [`MemoryGroupStore`] in memory, with the faults a real store has
//!   (lost races, commits reported but not made), for the tests.
//!
//! A member's side of it, its checkpoints and claims, is
//! `checkpoint::GroupCheckpointer`; its rules, `rules::lifecycle`. The whole
//! protocol runs in a deterministic simulation (`simulation`, a test) over
//! the in-memory store.

mod memory;
mod progress;
mod record;
#[cfg(test)]
mod simulation;
mod store;

pub use memory::{LoggedCommit, MemoryGroupStore, StoreFaults};
pub use progress::{advanced, claim, fenced, holds, GroupProgress, PartitionProgress, StateChain};
pub use record::{GroupUpdate, GroupView, MemberSeen, Publish, PublishKind, RulesRecord, RulesRef};
pub use store::{Claimed, CommitOutcome, GroupStore, MemberCommit};
