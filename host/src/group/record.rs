//! The rules a group's members run, as the group records them: the record
//! in force ([`RulesRecord`], with the rules before it kept for rollbacks),
//! what each member last ran ([`MemberSeen`]), and how a member's commit
//! changes them ([`Publish`]). A publish names the record it was made
//! against and is refused when the group moved on since: a member that missed
//! a deploy must not roll the fleet back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Members not heard from for this long are dropped from the record, unless
/// the newest commit still names them.
const MEMBER_FORGOTTEN_AFTER_MS: i64 = 15 * 60 * 1000;
/// Most members the record keeps (the most recently seen).
const MAX_MEMBERS: usize = 1_024;

/// Rules the group ran before, kept for a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesRef {
    /// `name@version+hash` of the rules.
    pub version: String,
    /// The component's full SHA-256.
    pub sha256: String,
}

/// Earlier rules a record keeps for rollbacks, newest first.
const PREVIOUS_KEPT: usize = 8;

/// The rules the whole group runs, as published last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesRecord {
    /// Raised by each deploy or rollback published to the group.
    pub seq: u64,
    /// `name@version+hash` of the rules.
    pub version: String,
    /// The component's full SHA-256, which names its file beside the table.
    pub sha256: String,
    /// The member that published it.
    pub by: String,
    /// When it was published, in ms since the Unix epoch.
    pub at_ms: i64,
    /// The rules in force before, newest first: a rollback sent to any
    /// member goes to the first of them.
    #[serde(default)]
    pub previous: Vec<RulesRef>,
}

impl RulesRecord {
    /// Whether `sha256` can name a file: 64 lowercase hex digits (the record
    /// comes from storage others can write).
    pub fn names_a_file(&self) -> bool {
        names_a_file(&self.sha256)
    }

    /// The components the record names (in force and kept), those that can
    /// name a file.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        let kept = self.previous.iter().map(|r| r.sha256.as_str());
        std::iter::once(self.sha256.as_str()).chain(kept).filter(|sha| names_a_file(sha))
    }
}

fn names_a_file(sha256: &str) -> bool {
    sha256.len() == 64 && sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One member as its last commit left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSeen {
    /// The rules it ran.
    pub rules: String,
    /// The partitions it committed for.
    pub partitions: Vec<i32>,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
}

/// What the group's newest commit says of its members and their rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// The rules published last, if any were.
    pub rules: Option<RulesRecord>,
    /// Members by id.
    pub members: BTreeMap<String, MemberSeen>,
}

/// What a publish asks of the group's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishKind {
    /// A member's starting rules: recorded only if the group has none.
    Start,
    /// An operator's deploy: the new rules, the old ones kept for rollback.
    Deploy,
    /// An operator's rollback: back to the first rules kept.
    Rollback,
}

/// A change of the group's rules a member asks for: made by an operator on
/// it (or its starting rules), carried by its next commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// `name@version+hash` of the rules.
    pub version: String,
    /// What it asks.
    pub kind: PublishKind,
    /// The component's full SHA-256, once it is where every member reaches
    /// it (a rollback's is there already); a publish without it is not
    /// recorded.
    pub sha256: Option<String>,
    /// The record (its `seq`; 0: none) the change was made against.
    pub based_on: u64,
}

impl Publish {
    /// A request not yet uploaded or placed against a record.
    pub fn new(version: &str, kind: PublishKind) -> Self {
        Self { version: version.to_owned(), kind, sha256: None, based_on: 0 }
    }
}

impl GroupView {
    /// Takes in a member's commit: what it runs, and what it publishes (a
    /// deploy or rollback only if the record is still the one it was based on).
    pub fn record(
        &mut self,
        owner: &str,
        active: &str,
        publish: Option<&Publish>,
        partitions: Vec<i32>,
        now_ms: i64,
    ) {
        if let Some(publish) = publish {
            self.publish(owner, publish, now_ms);
        }
        self.members.insert(
            owner.to_owned(),
            MemberSeen { rules: active.to_owned(), partitions, at_ms: now_ms },
        );
        self.members.retain(|_, m| now_ms - m.at_ms < MEMBER_FORGOTTEN_AFTER_MS);
        if self.members.len() > MAX_MEMBERS {
            let mut seen: Vec<i64> = self.members.values().map(|m| m.at_ms).collect();
            seen.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = seen[MAX_MEMBERS - 1];
            self.members.retain(|_, m| m.at_ms >= cutoff);
        }
    }

    fn publish(&mut self, owner: &str, publish: &Publish, now_ms: i64) {
        let Some(sha256) = publish.sha256.as_ref() else { return };
        let current = self.rules.as_ref();
        let seq = current.map_or(0, |r| r.seq);
        let previous = match (publish.kind, current) {
            (PublishKind::Start, None) => Vec::new(),
            (PublishKind::Start, Some(_)) => return,
            _ if publish.based_on != seq => return,
            (PublishKind::Deploy, current) => {
                let now = current
                    .map(|r| RulesRef { version: r.version.clone(), sha256: r.sha256.clone() });
                let older = current.map(|r| r.previous.clone()).unwrap_or_default();
                now.into_iter().chain(older).take(PREVIOUS_KEPT).collect()
            }
            (PublishKind::Rollback, Some(current)) => match current.previous.split_first() {
                Some((to, older)) if &to.sha256 == sha256 => older.to_vec(),
                _ => return,
            },
            (PublishKind::Rollback, None) => return,
        };
        self.rules = Some(RulesRecord {
            seq: seq + 1,
            version: publish.version.clone(),
            sha256: sha256.clone(),
            by: owner.to_owned(),
            at_ms: now_ms,
            previous,
        });
    }

    /// Whether the record took `publish` in (its rules are in force).
    pub fn holds(&self, publish: &Publish) -> bool {
        let recorded = self.rules.as_ref().map(|r| &r.sha256);
        recorded.is_some_and(|sha| Some(sha) == publish.sha256.as_ref())
    }
}

/// What a member's commit brought back of its group's rules.
#[derive(Debug, Default)]
pub struct GroupUpdate {
    /// The members and rules as the commit left them.
    pub view: GroupView,
    /// Rules to follow: their version and component.
    pub follow: Option<(String, Vec<u8>)>,
    /// Publish requests the checkpoints have settled so far.
    pub settled: u64,
    /// A change made here that the group refused, in a sentence.
    pub refused: Option<String>,
    /// Why the group's rules cannot be had here, if they cannot.
    pub unusable: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(version: &str, kind: PublishKind, based_on: u64) -> Publish {
        let sha256 = Some(format!("{:0>64}", version.len()));
        Publish { version: version.into(), sha256, kind, based_on }
    }

    fn in_force(view: &GroupView) -> Option<(u64, &str)> {
        view.rules.as_ref().map(|r| (r.seq, r.version.as_str()))
    }

    #[test]
    fn a_publish_raises_the_sequence_and_a_starting_member_only_fills_a_gap() {
        let mut view = GroupView::default();
        view.record("a", "v1", Some(&publish("v1", PublishKind::Start, 0)), vec![0], 1_000);
        assert_eq!(in_force(&view), Some((1, "v1")));
        view.record("b", "v0", Some(&publish("v0", PublishKind::Start, 0)), vec![1], 2_000);
        assert_eq!(in_force(&view), Some((1, "v1")));
        view.record("b", "v22", Some(&publish("v22", PublishKind::Deploy, 1)), vec![1], 3_000);
        assert_eq!(view.rules.as_ref().map(|r| (r.seq, r.by.as_str())), Some((2, "b")));
        assert_eq!(view.members["a"].rules, "v1");
        assert_eq!(view.members["b"].rules, "v22");
        assert!(view.rules.as_ref().is_some_and(RulesRecord::names_a_file));
    }

    #[test]
    fn a_publish_based_on_an_older_record_is_refused() {
        // A accepted v2 while the group was at record 1; v3 went out through
        // B (record 2); A's publish must not roll the group back to v2.
        let mut view = GroupView::default();
        view.record("a", "v1", Some(&publish("v1", PublishKind::Start, 0)), vec![0], 0);
        let v3 = publish("v333", PublishKind::Deploy, 1);
        view.record("b", "v333", Some(&v3), vec![1], 1);
        let v2 = publish("v22", PublishKind::Deploy, 1);
        view.record("a", "v22", Some(&v2), vec![0], 2);
        assert_eq!(in_force(&view), Some((2, "v333")));
        assert!(view.holds(&v3) && !view.holds(&v2));
    }

    #[test]
    fn a_rollback_goes_to_the_rules_before_whoever_receives_it() {
        let mut view = GroupView::default();
        view.record("a", "v1", Some(&publish("v1", PublishKind::Start, 0)), vec![0], 0);
        view.record("a", "v22", Some(&publish("v22", PublishKind::Deploy, 1)), vec![0], 1);
        view.record("a", "v333", Some(&publish("v333", PublishKind::Deploy, 2)), vec![0], 2);
        let kept: Vec<&str> =
            view.rules.as_ref().unwrap().previous.iter().map(|r| &*r.version).collect();
        assert_eq!(kept, ["v22", "v1"]);
        // Back to v22 from any member; a rollback to anything else is refused.
        let wrong = publish("v4444", PublishKind::Rollback, 3);
        view.record("c", "v333", Some(&wrong), vec![2], 3);
        assert_eq!(in_force(&view), Some((3, "v333")));
        view.record("c", "v333", Some(&publish("v22", PublishKind::Rollback, 3)), vec![2], 3);
        assert_eq!(in_force(&view), Some((4, "v22")));
        let kept: Vec<&str> =
            view.rules.as_ref().unwrap().previous.iter().map(|r| &*r.version).collect();
        assert_eq!(kept, ["v1"]);
        assert_eq!(view.rules.as_ref().unwrap().components().count(), 2);
    }

    #[test]
    fn members_not_heard_from_are_forgotten_and_records_that_name_no_file_refused() {
        let mut view = GroupView::default();
        view.record("old", "v1", None, vec![0], 0);
        view.record("new", "v1", None, vec![1], MEMBER_FORGOTTEN_AFTER_MS + 1);
        assert_eq!(view.members.keys().collect::<Vec<_>>(), ["new"]);
        let bad = RulesRecord { sha256: "../../x".into(), ..view_rules() };
        assert!(!bad.names_a_file());
        assert_eq!(bad.components().count(), 0);
    }

    fn view_rules() -> RulesRecord {
        RulesRecord {
            seq: 1,
            version: "v".into(),
            sha256: String::new(),
            by: "a".into(),
            at_ms: 0,
            previous: Vec::new(),
        }
    }
}
