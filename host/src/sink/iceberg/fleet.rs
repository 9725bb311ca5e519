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
}

impl FleetRules {
    /// Whether `sha256` can name a file: 64 lowercase hex digits (the record
    /// comes from storage others can write).
    pub(crate) fn names_a_file(&self) -> bool {
        self.sha256.len() == 64
            && self.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
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

/// Rules a member's commit publishes to the group (their component is
/// already beside the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// `name@version+hash` of the rules.
    pub version: String,
    /// The component's full SHA-256.
    pub sha256: String,
    /// Only if the group has no rules yet: a member's starting rules.
    pub only_if_none: bool,
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

    /// Takes in a member's commit: what it runs, and what it publishes.
    pub(super) fn record(
        &mut self,
        owner: &str,
        note: RulesNote<'_>,
        partitions: Vec<i32>,
        now_ms: i64,
    ) {
        if let Some(publish) = note.publish {
            if !(publish.only_if_none && self.rules.is_some()) {
                self.rules = Some(FleetRules {
                    seq: self.rules.as_ref().map_or(0, |r| r.seq) + 1,
                    version: publish.version.clone(),
                    sha256: publish.sha256.clone(),
                    by: owner.to_owned(),
                    at_ms: now_ms,
                });
            }
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

impl IcebergSink {
    /// Where the component with full SHA-256 `sha256` of `group` lives.
    fn component_location(&self, group: &str, sha256: &str) -> String {
        let table = self.sessions.metadata().location().trim_end_matches('/');
        format!("{table}/sessionize-rules/{}/{sha256}.wasm", path_segment(group))
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

    fn publish(version: &str, only_if_none: bool) -> Publish {
        Publish { version: version.into(), sha256: "ab".repeat(32), only_if_none }
    }

    #[test]
    fn a_publish_raises_the_sequence_and_a_starting_member_only_fills_a_gap() {
        let mut view = FleetView::default();
        view.record("a", note("v1", Some(&publish("v1", true))), vec![0], 1_000);
        assert_eq!(view.rules.as_ref().map(|r| (r.seq, r.version.as_str())), Some((1, "v1")));
        view.record("b", note("v0", Some(&publish("v0", true))), vec![1], 2_000);
        assert_eq!(view.rules.as_ref().map(|r| (r.seq, r.version.as_str())), Some((1, "v1")));
        view.record("b", note("v2", Some(&publish("v2", false))), vec![1], 3_000);
        assert_eq!(view.rules.as_ref().map(|r| (r.seq, r.by.as_str())), Some((2, "b")));
        assert_eq!(view.members["a"].rules, "v1");
        assert_eq!(view.members["b"].rules, "v2");
        assert!(view.rules.as_ref().is_some_and(FleetRules::names_a_file));
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
    }

    fn view_rules() -> FleetRules {
        FleetRules { seq: 1, version: "v".into(), sha256: String::new(), by: "a".into(), at_ms: 0 }
    }
}
