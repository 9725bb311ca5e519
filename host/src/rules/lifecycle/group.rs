//! The rules of a consumer group's member: what an operator changes here is
//! published to the group, and what another member published is followed
//! here (see [`crate::group::GroupView`]).

use std::time::Duration;

use super::request::{Answer, Candidate, RulesAction, RulesRequest};
use crate::group::{GroupUpdate, GroupView, Publish, PublishKind};

/// How long a change the group published may wait to be applied here: long,
/// since nobody waits on it, but not forever.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(600);

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
pub(crate) struct MemberRules {
    /// A change to publish with the next checkpoint.
    to_publish: Option<Publish>,
    /// Changes handed to checkpoints for publishing, and how many of those
    /// the checkpoints have settled: while some are on their way, what the
    /// group published before them is not followed.
    sent: u64,
    settled: u64,
    /// The group as the last commit saw it, for `plugin status`.
    view: Option<GroupView>,
    /// Changes the group published, waiting to be applied here.
    following: Vec<(String, Answer)>,
    /// Why this member does not run the group's rules, if it does not.
    diverged: Option<String>,
    /// The last change made here that the group refused.
    refused: Option<String>,
}

impl MemberRules {
    /// Publishes the starting rules, unless the group has rules already.
    pub(crate) fn start_with(&mut self, version: &str, diverged: Option<String>, found: GroupView) {
        self.to_publish = Some(Publish::new(version, PublishKind::Start));
        self.diverged = diverged;
        self.view = Some(found);
    }

    /// An operator's change is in force here: it goes to the group next.
    pub(crate) fn changed_here(&mut self, version: &str) {
        self.to_publish = Some(Publish::new(version, PublishKind::Deploy));
    }

    /// An operator's rollback: the group goes back to the rules its record
    /// kept before the ones in force. Returns what is asked, or why not.
    pub(crate) fn roll_back_group(&mut self) -> Result<serde_json::Value, String> {
        let Some(rules) = self.view.as_ref().and_then(|view| view.rules.as_ref()) else {
            return Err("this member has not seen its group's rules yet: try again after its \
                        next checkpoint, or send the rollback to another member"
                .into());
        };
        let Some(to) = rules.previous.first() else {
            return Err(format!(
                "the group has no earlier rules to go back to ({} is the first it recorded)",
                rules.version
            ));
        };
        self.to_publish = Some(Publish {
            version: to.version.clone(),
            kind: PublishKind::Rollback,
            sha256: Some(to.sha256.clone()),
            based_on: rules.seq,
        });
        tracing::info!(from = rules.version, to = to.version, "rolling the group back");
        Ok(serde_json::json!({
            "group_rollback": to.version,
            "from": rules.version,
            "note": "published with this member's next checkpoint; every member, this one \
                     included, takes it at its own next checkpoint (see plugin status)",
        }))
    }

    /// What the next checkpoint publishes.
    pub(crate) fn take_publish(&mut self) -> Option<Publish> {
        let publish = self.to_publish.take()?;
        self.sent += 1;
        Some(publish)
    }

    /// Takes in what a commit saw; returns a deploy request for rules the
    /// group published that this member should follow.
    pub(crate) fn take_in(&mut self, update: GroupUpdate, active: &str) -> Option<RulesRequest> {
        let GroupUpdate { view, follow, settled, refused, unusable } = update;
        self.settled = settled;
        if refused.is_some() {
            self.refused = refused;
        }
        let in_force = view.rules.as_ref().map(|r| r.version.as_str());
        self.diverged = match (unusable, in_force) {
            (Some(why), _) => Some(why),
            (None, Some(version)) if version == active || follow.is_some() => None,
            (None, _) => self.diverged.take(),
        };
        self.view = Some(view);
        let (version, bytes) = follow?;
        let own_pending = self.to_publish.as_ref().is_some_and(|p| p.kind != PublishKind::Start);
        if own_pending || self.settled < self.sent {
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

    /// Logs how the changes followed went; one that was refused here (its
    /// dry run failed, or its settings) leaves this member on its own rules.
    pub(super) fn note_outcomes(&mut self) {
        let diverged = &mut self.diverged;
        self.following.retain_mut(|(version, answer)| match answer.try_recv() {
            Ok(Ok(_)) => false,
            Ok(Err(why)) => {
                tracing::warn!(rules = %version, %why, "the group's rules were not taken up here");
                *diverged = Some(format!("{version} was refused here: {why}"));
                false
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => true,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => false,
        });
    }

    /// Why this member does not run its group's rules, if it does not.
    pub(crate) fn diverged(&self) -> Option<&str> {
        self.diverged.as_deref()
    }

    /// The group, for `plugin status`.
    pub(super) fn status(&self) -> serde_json::Value {
        let mut status = match &self.view {
            Some(view) => serde_json::to_value(view).unwrap_or_default(),
            None => serde_json::json!({ "rules": null, "members": {} }),
        };
        if let Some(object) = status.as_object_mut() {
            object.insert("diverged".into(), serde_json::json!(self.diverged));
            object.insert("last_refused".into(), serde_json::json!(self.refused));
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(follow: bool, settled: u64) -> GroupUpdate {
        let follow = follow.then(|| ("theirs@2+ab".into(), b"component".to_vec()));
        GroupUpdate { follow, settled, ..GroupUpdate::default() }
    }

    #[test]
    fn the_group_is_followed_unless_a_change_made_here_is_on_its_way() {
        let mut member = MemberRules::default();
        member.start_with("mine@1+aa", None, GroupView::default());
        let start = member.take_publish();
        assert_eq!(start.map(|p| p.kind), Some(PublishKind::Start));
        // The first commit settles the starting rules and sees others'.
        assert!(member.take_in(update(true, 1), "mine@1+aa").is_some());

        // An operator's change here, not yet published: what the group
        // published before it is not followed, neither before the cut that
        // carries it nor before that cut commits.
        member.changed_here("mine@3+cc");
        assert!(member.take_in(update(true, 1), "mine@3+cc").is_none());
        let deploy = member.take_publish();
        assert_eq!(deploy, Some(Publish::new("mine@3+cc", PublishKind::Deploy)));
        assert!(member.take_in(update(true, 1), "mine@3+cc").is_none());
        assert!(member.take_in(update(true, 2), "mine@3+cc").is_some());
        assert!(member.take_publish().is_none());
    }

    #[test]
    fn a_rollback_asks_for_the_groups_previous_rules_and_needs_some() {
        let mut member = MemberRules::default();
        assert!(member.roll_back_group().is_err());
        let view = GroupView {
            rules: Some(crate::group::RulesRecord {
                seq: 5,
                version: "v3".into(),
                sha256: "c".repeat(64),
                by: "b".into(),
                at_ms: 0,
                previous: vec![crate::group::RulesRef {
                    version: "v2".into(),
                    sha256: "b".repeat(64),
                }],
            }),
            ..GroupView::default()
        };
        member.take_in(GroupUpdate { view, ..GroupUpdate::default() }, "v3");
        let asked = member.roll_back_group().unwrap();
        assert_eq!(asked["group_rollback"], "v2");
        let rollback = member.take_publish().expect("no rollback to publish");
        assert_eq!((rollback.kind, rollback.version.as_str()), (PublishKind::Rollback, "v2"));
        assert_eq!((rollback.sha256, rollback.based_on), (Some("b".repeat(64)), 5));
    }

    #[test]
    fn rules_that_cannot_be_had_here_are_reported_until_they_run() {
        let mut member = MemberRules::default();
        member.start_with(
            "mine@1",
            Some("cannot use theirs@2: too large".into()),
            GroupView::default(),
        );
        assert!(member.diverged().is_some());
        let view = GroupView {
            rules: Some(crate::group::RulesRecord {
                seq: 2,
                version: "theirs@2".into(),
                sha256: "a".repeat(64),
                by: "b".into(),
                at_ms: 0,
                previous: vec![],
            }),
            ..GroupView::default()
        };
        member.take_in(GroupUpdate { view: view.clone(), ..GroupUpdate::default() }, "mine@1");
        assert!(member.diverged().is_some());
        member.take_in(GroupUpdate { view, ..GroupUpdate::default() }, "theirs@2");
        assert!(member.diverged().is_none());
    }
}
