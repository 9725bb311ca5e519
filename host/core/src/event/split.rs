//! Users split over engines: a run with an engine per core gives each one the
//! users whose uuid hashes to it. A user's events all go to one engine, and
//! every engine times every event (`Engine::observe_time`), so the sessions
//! are those of one engine over all the users.
//!
//! The hash is taken once per event, by the parser ([`super::EventBlock`]),
//! so an engine passes over another's events without reading their uuids.

/// Fixed seeds: every engine of a run (every thread) must agree on a user's
/// engine. Which one it is does not show in the output.
const USER_HASH: ahash::RandomState = ahash::RandomState::with_seeds(
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

/// The hash a split goes by.
pub(super) fn user_hash(uuid: &str) -> u64 {
    USER_HASH.hash_one(uuid)
}

/// Which users one engine of a split run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSplit {
    index: u64,
    count: u64,
}

impl UserSplit {
    /// Every user, for a run with one engine.
    pub const WHOLE: UserSplit = UserSplit { index: 0, count: 1 };

    /// The share of engine `index` of `count` (at least one). An index past
    /// the count is the caller's bug: two engines would take the same users.
    pub fn new(index: usize, count: usize) -> Self {
        let count = count.max(1) as u64;
        assert!((index as u64) < count, "engine {index} of {count}");
        Self { index: index as u64, count }
    }

    /// Whether this engine takes every user.
    pub(super) fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether `uuid`'s events are this engine's.
    pub fn owns(&self, uuid: &str) -> bool {
        self.owns_hash(user_hash(uuid))
    }

    /// Whether the events of the user whose uuid hashes to `hash` are this engine's.
    pub(super) fn owns_hash(&self, hash: u64) -> bool {
        self.count == 1 || hash % self.count == self.index
    }

    /// Whether this engine reports what belongs to no user (records that
    /// are no event): the first one does.
    pub fn reports_unowned(&self) -> bool {
        self.index == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_has_exactly_one_engine_and_all_engines_get_some() {
        let splits: Vec<UserSplit> = (0..3).map(|i| UserSplit::new(i, 3)).collect();
        let mut per_engine = [0; 3];
        for n in 0..3_000 {
            let uuid = format!("user-{n}");
            let owners: Vec<usize> = (0..3).filter(|&i| splits[i].owns(&uuid)).collect();
            assert_eq!(owners.len(), 1, "{uuid}: {owners:?}");
            per_engine[owners[0]] += 1;
        }
        assert!(per_engine.iter().all(|&n| n > 800), "{per_engine:?}");
        assert!(UserSplit::WHOLE.owns("anyone") && UserSplit::WHOLE.reports_unowned());
    }
}
