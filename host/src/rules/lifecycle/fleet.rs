//! The rules of a consumer group's member: what an operator changes here is
//! published to the group, and what another member published is followed
//! here (see [`crate::sink::iceberg::FleetView`]).

use std::time::Duration;

use super::request::{Answer, Candidate, RulesAction, RulesRequest};
use crate::sink::iceberg::FleetView;

/// How long a change the group published may wait to be applied here: long,
/// since nobody waits on it, but not forever.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(600);

/// Rules a member publishes to its group with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesToPublish {
    /// `name@version+hash` of the rules (their component is in the archive).
    pub version: String,
    /// Only if the group has no rules yet: the member's starting rules.
    pub only_if_none: bool,
}

/// Where a change of rules came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// An operator, through this job's admin endpoint or plugin watcher.
    Operator,
    /// Another member of the group, which published it.
    Group,
}

/// A member's part in its group's rules.
#[derive(Default)]
pub(super) struct MemberRules {
    /// A change to publish with the next checkpoint.
    to_publish: Option<RulesToPublish>,
    /// Changes handed to checkpoints for publishing, and how many of those
    /// the checkpoints have settled: while some are on their way, what the
    /// group published before them is not followed.
    sent: u64,
    settled: u64,
    /// The group as the last commit saw it, for `plugin status`.
    view: Option<FleetView>,
    /// Changes the group published, waiting to be applied here.
    following: Vec<(String, Answer)>,
}

impl MemberRules {
    /// Publishes the starting rules, unless the group has rules already.
    pub(super) fn start_with(&mut self, version: &str) {
        self.to_publish = Some(RulesToPublish { version: version.to_owned(), only_if_none: true });
    }

    /// An operator's change is in force here: it goes to the group next.
    pub(super) fn changed_here(&mut self, version: &str) {
        self.to_publish = Some(RulesToPublish { version: version.to_owned(), only_if_none: false });
    }

    /// What the next checkpoint publishes.
    pub(super) fn take_publish(&mut self) -> Option<RulesToPublish> {
        let publish = self.to_publish.take()?;
        self.sent += 1;
        Some(publish)
    }

    /// Takes in what a commit saw (`settled`: publish requests settled by
    /// the checkpoints so far); returns a deploy request for rules the group
    /// published that this member should follow.
    pub(super) fn take_in(
        &mut self,
        view: FleetView,
        follow: Option<(String, Vec<u8>)>,
        settled: u64,
    ) -> Option<RulesRequest> {
        self.settled = settled;
        self.view = Some(view);
        let (version, bytes) = follow?;
        if self.to_publish.as_ref().is_some_and(|p| !p.only_if_none) || self.settled < self.sent {
            // This member's own change was published after it and wins.
            tracing::info!(
                rules = version,
                "not following the group's rules: a newer change made here is on its way"
            );
            return None;
        }
        tracing::info!(rules = version, "following the group's rules");
        let candidate = Candidate::Uploaded { name: format!("group: {version}"), bytes };
        let (request, answer) = RulesRequest::new(RulesAction::Deploy(candidate), FOLLOW_TIMEOUT);
        self.following.push((version, answer));
        Some(request)
    }

    /// Logs how the changes followed went.
    pub(super) fn note_outcomes(&mut self) {
        self.following.retain_mut(|(version, answer)| match answer.try_recv() {
            Ok(Ok(_)) => false,
            Ok(Err(why)) => {
                tracing::warn!(rules = %version, %why, "the group's rules were not taken up here");
                false
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => true,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => false,
        });
    }

    /// The group, for `plugin status`.
    pub(super) fn status(&self) -> serde_json::Value {
        serde_json::to_value(&self.view).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow() -> Option<(String, Vec<u8>)> {
        Some(("theirs@2+ab".into(), b"component".to_vec()))
    }

    #[test]
    fn the_group_is_followed_unless_a_change_made_here_is_on_its_way() {
        let mut fleet = MemberRules::default();
        fleet.start_with("mine@1+aa");
        let start = fleet.take_publish();
        assert_eq!(start.map(|p| p.only_if_none), Some(true));
        // The first commit settles the starting rules and sees others'.
        assert!(fleet.take_in(FleetView::default(), follow(), 1).is_some());

        // An operator's change here, not yet published: what the group
        // published before it is not followed, neither before the cut that
        // carries it nor before that cut commits.
        fleet.changed_here("mine@3+cc");
        assert!(fleet.take_in(FleetView::default(), follow(), 1).is_none());
        assert_eq!(fleet.take_publish().map(|p| p.version), Some("mine@3+cc".into()));
        assert!(fleet.take_in(FleetView::default(), follow(), 1).is_none());
        assert!(fleet.take_in(FleetView::default(), follow(), 2).is_some());
        assert!(fleet.take_publish().is_none());
    }
}
