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
//!   `sink::MemoryGroupStore` in memory, with the faults a real store has
//!   (lost races, commits reported but not made), for the tests.
//!
//! This module depends on nothing but the core's rows: storage depends on it.
//! A member's side of the protocol, its checkpoints and claims, is
//! `checkpoint::GroupCheckpointer`; its rules, `rules::lifecycle`. The whole
//! protocol runs in a deterministic simulation (`job::simulation`, a test)
//! over the in-memory store.

mod progress;
mod record;
mod store;

pub use progress::{advanced, claim, fenced, holds, GroupProgress, PartitionProgress, StateChain};
pub use record::{GroupUpdate, GroupView, MemberSeen, Publish, PublishKind, RulesRecord, RulesRef};
pub use store::{Claimed, CommitOutcome, GroupStore, MemberCommit};
