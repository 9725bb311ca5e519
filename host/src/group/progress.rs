//! Where each partition of a group stands: its next offset, its owner and the
//! epoch of the owner's claim, and the chain of files its state is in. The
//! store keeps the newest of these for every partition; the rules here say who
//! may commit, and whether a commit already landed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where one partition stands, as the group's newest commit says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// Next offset to read: the output of every record before it is committed.
    #[serde(default)]
    pub offset: Option<i64>,
    /// Raised by each claim; only the claimer may commit for the partition.
    #[serde(default)]
    pub epoch: u64,
    /// The member that made the last claim.
    #[serde(default)]
    pub owner: String,
    /// The owner's checkpoint that committed `offset`: how a member finds out
    /// whether its commit landed from the newest progress alone (expiry may
    /// have removed its own older commits).
    #[serde(default)]
    pub checkpoint: u64,
    /// The partition's state as of `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateChain>,
}

/// A partition's state files: a whole state and the changes after it, all
/// written under one epoch, numbered `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChain {
    /// The epoch the files were written under.
    pub epoch: u64,
    /// The whole state.
    pub first: u64,
    /// The last change.
    pub last: u64,
}

/// Every partition's progress.
pub type GroupProgress = BTreeMap<i32, PartitionProgress>;

/// The partitions of `claimed` (partition -> epoch) that `progress` no longer
/// gives to `owner` under that epoch: another member claimed them since.
pub fn fenced(progress: &GroupProgress, owner: &str, claimed: &BTreeMap<i32, u64>) -> Vec<i32> {
    claimed
        .iter()
        .filter(|(p, &epoch)| {
            progress.get(p).is_none_or(|entry| entry.owner != owner || entry.epoch != epoch)
        })
        .map(|(&p, _)| p)
        .collect()
}

/// Raises the epoch of `partitions` for `owner`: a claim. Checkpoints count
/// from the claim (the new owner's are its own).
pub fn claim(
    progress: &mut GroupProgress,
    owner: &str,
    partitions: &[i32],
    epoch: impl Fn(i32) -> u64,
) {
    for &p in partitions {
        let entry = progress.entry(p).or_default();
        (entry.epoch, entry.owner, entry.checkpoint) = (epoch(p), owner.to_owned(), 0);
    }
}

/// Whether `progress` shows a member's commit made: every partition it
/// covers (`moved`) at its `checkpoint`, under its claim. Output covering no
/// partition cannot be told apart, so it never shows.
pub fn holds(
    progress: &GroupProgress,
    owner: &str,
    claimed: &BTreeMap<i32, u64>,
    moved: &GroupProgress,
    checkpoint: u64,
) -> bool {
    !moved.is_empty()
        && moved.keys().all(|p| {
            progress.get(p).is_some_and(|entry| {
                entry.owner == owner
                    && claimed.get(p) == Some(&entry.epoch)
                    && entry.checkpoint >= checkpoint
            })
        })
}

/// `progress` with the partitions of `moved` moved on to where a member's
/// `checkpoint` leaves them.
pub fn advanced(
    mut progress: GroupProgress,
    moved: &GroupProgress,
    checkpoint: u64,
) -> GroupProgress {
    for (p, now) in moved {
        let entry = progress.entry(*p).or_default();
        (entry.offset, entry.state, entry.checkpoint) = (now.offset, now.state, checkpoint);
    }
    progress
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_claimed_again_is_fenced() {
        let mut progress = GroupProgress::new();
        progress.insert(0, PartitionProgress { epoch: 3, owner: "a".into(), ..Default::default() });
        progress.insert(1, PartitionProgress { epoch: 4, owner: "b".into(), ..Default::default() });
        let claimed = BTreeMap::from([(0, 3), (1, 2), (2, 1)]);
        assert_eq!(fenced(&progress, "a", &claimed), vec![1, 2]);
    }

    #[test]
    fn a_commit_shows_in_the_progress_until_the_partition_is_claimed_again() {
        let moved =
            GroupProgress::from([(0, PartitionProgress { offset: Some(9), ..Default::default() })]);
        let mut progress = GroupProgress::new();
        claim(&mut progress, "a", &[0], |_| 1);
        let claimed = BTreeMap::from([(0, 1)]);
        assert!(!holds(&progress, "a", &claimed, &moved, 5));
        progress = advanced(progress, &moved, 5);
        assert!(holds(&progress, "a", &claimed, &moved, 5));
        assert!(!holds(&progress, "a", &claimed, &moved, 6));
        // A new owner's claim starts its checkpoints over.
        claim(&mut progress, "b", &[0], |_| 2);
        assert_eq!(progress[&0].checkpoint, 0);
        assert!(!holds(&progress, "b", &BTreeMap::from([(0, 2)]), &moved, 1));
        assert!(!holds(&progress, "a", &claimed, &GroupProgress::new(), 0));
    }
}
