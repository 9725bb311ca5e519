//! The rules a consumer group's members run, and which member runs which.
//!
//! A deploy or rollback sent to any member is *published*: the member puts
//! the component beside the table (`sessionize-rules/<group>/<sha256>.wasm`)
//! and its next commit records it in the group's snapshot summary
//! ([`FleetRules`]). Every member sees the newest record with each of its own
//! commits and follows it at its next checkpoint boundary; a member that
//! starts or restarts comes up with it. Each commit also notes what its
//! member runs ([`MemberSeen`]), so `plugin status` on any member shows the
//! fleet. Both ride in the same compare-and-swap as the partitions' progress,
//! so concurrent deploys are ordered: the later one wins everywhere.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use iceberg::table::Table;

use super::group::path_segment;
use super::{IcebergContext, IcebergSink};
use crate::sink::SinkError;

/// Snapshot summary key: the group's [`FleetRules`], as JSON.
pub const RULES_KEY: &str = "sessionize.fleet-rules";
/// Snapshot summary key: every recently seen member's [`MemberSeen`], as JSON.
pub const MEMBERS_KEY: &str = "sessionize.members";

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
pub struct FleetRules {
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

impl FleetRules {
    /// Whether `sha256` can name a file: 64 lowercase hex digits (the record
    /// comes from storage others can write).
    pub(crate) fn names_a_file(&self) -> bool {
        names_a_file(&self.sha256)
    }

    /// The components the record names (in force and kept), those that can
    /// name a file.
    pub(crate) fn components(&self) -> impl Iterator<Item = &str> {
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

/// What the group's newest snapshot says of its members and their rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetView {
    /// The rules published last, if any were.
    pub rules: Option<FleetRules>,
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

/// Rules a member's commit publishes to the group (their component is
/// already beside the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// `name@version+hash` of the rules.
    pub version: String,
    /// The component's full SHA-256.
    pub sha256: String,
    /// What it asks.
    pub kind: PublishKind,
    /// The record (its `seq`; 0: none) the change was made against: a
    /// deploy or rollback is refused when the group has moved on since,
    /// or a member that missed newer rules would roll the group back.
    pub based_on: u64,
}

/// What a member's commit says of its rules.
#[derive(Debug, Clone, Copy)]
pub struct RulesNote<'a> {
    /// The rules its output was made by.
    pub active: &'a str,
    /// Rules it publishes to the group, if any.
    pub publish: Option<&'a Publish>,
}

impl FleetView {
    /// The view in a group snapshot's summary. A record that does not decode
    /// is left out with a warning: the next commit writes a good one.
    pub(super) fn from_summary(props: &HashMap<String, String>) -> Self {
        fn decode<T: serde::de::DeserializeOwned>(
            props: &HashMap<String, String>,
            key: &str,
        ) -> Option<T> {
            let json = props.get(key)?;
            serde_json::from_str(json)
                .map_err(
                    |error| tracing::warn!(key, %error, "a group record does not decode: ignored"),
                )
                .ok()
        }
        Self {
            rules: decode(props, RULES_KEY),
            members: decode(props, MEMBERS_KEY).unwrap_or_default(),
        }
    }

    /// Takes in a member's commit: what it runs, and what it publishes (a
    /// deploy or rollback only if the record is still the one it was based on).
    pub(super) fn record(
        &mut self,
        owner: &str,
        note: RulesNote<'_>,
        partitions: Vec<i32>,
        now_ms: i64,
    ) {
        if let Some(publish) = note.publish {
            self.publish(owner, publish, now_ms);
        }
        self.members.insert(
            owner.to_owned(),
            MemberSeen { rules: note.active.to_owned(), partitions, at_ms: now_ms },
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
                Some((to, older)) if to.sha256 == publish.sha256 => older.to_vec(),
                _ => return,
            },
            (PublishKind::Rollback, None) => return,
        };
        self.rules = Some(FleetRules {
            seq: seq + 1,
            version: publish.version.clone(),
            sha256: publish.sha256.clone(),
            by: owner.to_owned(),
            at_ms: now_ms,
            previous,
        });
    }

    /// Whether the record took `publish` in (its rules are in force).
    pub fn holds(&self, publish: &Publish) -> bool {
        self.rules.as_ref().is_some_and(|r| r.sha256 == publish.sha256)
    }

    /// Its summary properties.
    pub(super) fn properties(&self) -> Vec<(String, String)> {
        let mut props = Vec::with_capacity(2);
        if let Some(rules) = &self.rules {
            props.push((RULES_KEY.to_owned(), serde_json::to_string(rules).unwrap_or_default()));
        }
        if !self.members.is_empty() {
            props.push((
                MEMBERS_KEY.to_owned(),
                serde_json::to_string(&self.members).unwrap_or_default(),
            ));
        }
        props
    }
}

/// Where the component with full SHA-256 `sha256` of `group` lives: beside
/// the sessions table.
pub(super) fn component_location(table: &Table, group: &str, sha256: &str) -> String {
    let table = table.metadata().location().trim_end_matches('/');
    format!("{table}/sessionize-rules/{}/{sha256}.wasm", path_segment(group))
}

impl IcebergSink {
    fn component_location(&self, group: &str, sha256: &str) -> String {
        component_location(&self.sessions, group, sha256)
    }

    /// Puts a component beside the table, for the other members.
    pub(super) async fn group_write_component(
        &self,
        group: &str,
        sha256: &str,
        bytes: Vec<u8>,
    ) -> Result<(), SinkError> {
        let location = self.component_location(group, sha256);
        let context = || format!("writing rules component {location}");
        let output = self.sessions.file_io().new_output(&location).context(context)?;
        output.write(bytes.into()).await.context(context)
    }

    /// Reads a component put beside the table, refusing one larger than
    /// `max_bytes` before reading it.
    pub(super) async fn group_read_component(
        &self,
        group: &str,
        sha256: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, SinkError> {
        let location = self.component_location(group, sha256);
        let context = || format!("reading rules component {location}");
        let input = self.sessions.file_io().new_input(&location).context(context)?;
        let size = input.metadata().await.context(context)?.size;
        if size > max_bytes {
            return Err(SinkError::Config(format!(
                "rules component {location} is {size} bytes, more than the {max_bytes} this job \
                 takes (--max-component-mib)"
            )));
        }
        Ok(input.read().await.context(context)?.to_vec())
    }

    /// The group's members and rules as its newest snapshot says.
    pub(super) async fn group_fleet(&mut self, group: &str) -> Result<FleetView, SinkError> {
        self.refresh().await?;
        Ok(super::group::fleet_in(&self.sessions, group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note<'a>(active: &'a str, publish: Option<&'a Publish>) -> RulesNote<'a> {
        RulesNote { active, publish }
    }

    fn publish(version: &str, kind: PublishKind, based_on: u64) -> Publish {
        let sha256 = format!("{:0>64}", version.len());
        Publish { version: version.into(), sha256, kind, based_on }
    }

    fn in_force(view: &FleetView) -> Option<(u64, &str)> {
        view.rules.as_ref().map(|r| (r.seq, r.version.as_str()))
    }

    #[test]
    fn a_publish_raises_the_sequence_and_a_starting_member_only_fills_a_gap() {
        let mut view = FleetView::default();
        view.record("a", note("v1", Some(&publish("v1", PublishKind::Start, 0))), vec![0], 1_000);
        assert_eq!(in_force(&view), Some((1, "v1")));
        view.record("b", note("v0", Some(&publish("v0", PublishKind::Start, 0))), vec![1], 2_000);
        assert_eq!(in_force(&view), Some((1, "v1")));
        view.record(
            "b",
            note("v22", Some(&publish("v22", PublishKind::Deploy, 1))),
            vec![1],
            3_000,
        );
        assert_eq!(view.rules.as_ref().map(|r| (r.seq, r.by.as_str())), Some((2, "b")));
        assert_eq!(view.members["a"].rules, "v1");
        assert_eq!(view.members["b"].rules, "v22");
        assert!(view.rules.as_ref().is_some_and(FleetRules::names_a_file));
    }

    #[test]
    fn a_publish_based_on_an_older_record_is_refused() {
        // A accepted v2 while the group was at record 1; v3 went out through
        // B (record 2); A's publish must not roll the group back to v2.
        let mut view = FleetView::default();
        view.record("a", note("v1", Some(&publish("v1", PublishKind::Start, 0))), vec![0], 0);
        let v3 = publish("v333", PublishKind::Deploy, 1);
        view.record("b", note("v333", Some(&v3)), vec![1], 1);
        let v2 = publish("v22", PublishKind::Deploy, 1);
        view.record("a", note("v22", Some(&v2)), vec![0], 2);
        assert_eq!(in_force(&view), Some((2, "v333")));
        assert!(view.holds(&v3) && !view.holds(&v2));
    }

    #[test]
    fn a_rollback_goes_to_the_rules_before_whoever_receives_it() {
        let mut view = FleetView::default();
        view.record("a", note("v1", Some(&publish("v1", PublishKind::Start, 0))), vec![0], 0);
        view.record("a", note("v22", Some(&publish("v22", PublishKind::Deploy, 1))), vec![0], 1);
        view.record("a", note("v333", Some(&publish("v333", PublishKind::Deploy, 2))), vec![0], 2);
        let kept: Vec<&str> =
            view.rules.as_ref().unwrap().previous.iter().map(|r| &*r.version).collect();
        assert_eq!(kept, ["v22", "v1"]);
        // Back to v22 from any member; a rollback to anything else is refused.
        let wrong = publish("v4444", PublishKind::Rollback, 3);
        view.record("c", note("v333", Some(&wrong)), vec![2], 3);
        assert_eq!(in_force(&view), Some((3, "v333")));
        view.record("c", note("v333", Some(&publish("v22", PublishKind::Rollback, 3))), vec![2], 3);
        assert_eq!(in_force(&view), Some((4, "v22")));
        let kept: Vec<&str> =
            view.rules.as_ref().unwrap().previous.iter().map(|r| &*r.version).collect();
        assert_eq!(kept, ["v1"]);
        assert_eq!(view.rules.as_ref().unwrap().components().count(), 2);
    }

    #[test]
    fn members_not_heard_from_are_forgotten_and_bad_records_ignored() {
        let mut view = FleetView::default();
        view.record("old", note("v1", None), vec![0], 0);
        view.record("new", note("v1", None), vec![1], MEMBER_FORGOTTEN_AFTER_MS + 1);
        assert_eq!(view.members.keys().collect::<Vec<_>>(), ["new"]);
        let props = HashMap::from([
            (RULES_KEY.to_owned(), "{not json".to_owned()),
            (MEMBERS_KEY.to_owned(), serde_json::to_string(&view.members).unwrap()),
        ]);
        let read = FleetView::from_summary(&props);
        assert_eq!((read.rules, read.members), (None, view.members));
        let bad = FleetRules { sha256: "../../x".into(), ..view_rules() };
        assert!(!bad.names_a_file());
        assert_eq!(bad.components().count(), 0);
    }

    fn view_rules() -> FleetRules {
        FleetRules {
            seq: 1,
            version: "v".into(),
            sha256: String::new(),
            by: "a".into(),
            at_ms: 0,
            previous: Vec::new(),
        }
    }
}
