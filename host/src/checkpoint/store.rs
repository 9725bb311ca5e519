//! The one seam between the event loop's checkpoints and where they are kept.

use std::time::Duration;

use super::group::{Claim, Recorded};
use super::{CheckpointCut, CheckpointError};

/// Where checkpoints are kept: a job's own state store
/// ([`Checkpointer`](super::Checkpointer), redb in its state directory), or
/// a group's storage beside the table
/// ([`GroupCheckpointer`](super::GroupCheckpointer)). The checkpoint thread
/// drives either the same way, one call at a time, in order, with the
/// sink `S`.
// The futures are only ever run with `block_on`, so no `Send` bound is needed.
#[allow(async_fn_in_trait)]
pub trait CheckpointStore<S>: Send {
    /// Makes `cut` durable and publishes its output.
    async fn complete(
        &mut self,
        sink: &mut S,
        cut: CheckpointCut,
    ) -> Result<Recorded, CheckpointError>;

    /// Claims `partitions` for this member and restores their state.
    async fn claim(&mut self, sink: &mut S, partitions: &[i32]) -> Result<Claim, CheckpointError>;

    /// Gives up the claim on `partitions` (their last checkpoint is cut).
    fn release(&mut self, partitions: &[i32]);

    /// How long publishing the last completed checkpoint took, retries included.
    fn last_publish_time(&self) -> Duration;

    /// The store's size on disk, where it has one of its own.
    fn state_bytes(&self) -> Option<u64>;
}
