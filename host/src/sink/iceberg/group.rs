//! Many instances of one job, one consumer group, writing the same tables.
//!
//! Each partition's progress (the next offset, where its state is, and who
//! owns it under which epoch) rides in the snapshot summary of every commit
//! the group makes, merged over the latest: the newest group snapshot always
//! holds every partition's entry. An instance *claims* a partition by
//! committing an empty snapshot to both tables that raises its epoch, and
//! commits output only while the newest entries still name it with the
//! epochs it claimed.
//!
//! The check and the commit must be one step, or a zombie (an instance that
//! lost its partitions without noticing) could pass the check, lose the race
//! to a claim, and commit anyway. iceberg-rust's `Transaction::commit` reloads
//! the table and re-applies an append to whatever it finds, so the commit here
//! goes through a catalog that serves only the table that was checked: the
//! append's requirement (the main branch still at the checked snapshot) then
//! fails against any snapshot committed since, a claim included.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg_catalog_sql::SqlCatalog;
use serde::{Deserialize, Serialize};

use super::commit::{append_transaction, latest_properties_with, reload};
use super::fleet::{FleetView, RulesNote};
use super::pinned::{moved, Pinned};
use super::{IcebergContext, IcebergSink, PROP_REJECTED_ROWS, PROP_SESSION_ROWS};
use crate::sink::{RejectedEvent, SessionRow, SinkError};

/// Snapshot summary key: the consumer group whose progress the snapshot records.
pub const GROUP_KEY: &str = "sessionize.group";
/// Snapshot summary key: every partition's [`PartitionProgress`], as JSON.
pub const PARTITIONS_KEY: &str = "sessionize.partitions";

/// Where one partition stands, as the group's newest snapshot says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// Next offset to read: the output of every record before it is in the table.
    #[serde(default)]
    pub offset: Option<i64>,
    /// Raised by each claim; only the claimer may commit for the partition.
    #[serde(default)]
    pub epoch: u64,
    /// The instance that made the last claim.
    #[serde(default)]
    pub owner: String,
    /// The partition's state as of `offset` (sessions table only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateChain>,
}

/// A partition's state files: a full one and the changes after it, all
/// written under one epoch, numbered `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChain {
    /// The epoch the files were written under.
    pub epoch: u64,
    /// The full state.
    pub first: u64,
    /// The last change.
    pub last: u64,
}

/// Every partition's progress.
pub type GroupProgress = BTreeMap<i32, PartitionProgress>;

/// What a member's commit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedCommit {
    /// Committed; the group's members and rules as the commit left them.
    Committed(FleetView),
    /// Nothing committed: these partitions were claimed by another instance
    /// (or again) since this one claimed them.
    Fenced(Vec<i32>),
}

/// A group member's output and where it leaves its partitions.
pub struct OwnedOutput<'a> {
    /// The consumer group.
    pub group: &'a str,
    /// This instance, as its claims name it.
    pub owner: &'a str,
    /// The partitions this instance claimed, with the epoch of each claim.
    pub claimed: &'a BTreeMap<i32, u64>,
    /// The new offset (and state) of the partitions the output covers.
    pub progress: &'a GroupProgress,
    /// Sessions closed.
    pub sessions: &'a [SessionRow],
    /// Dead letters.
    pub rejected: &'a [RejectedEvent],
    /// Summary properties of both snapshots; `identity` is among them.
    pub properties: HashMap<String, String>,
    /// The property only this instance's commits carry, as (key, value).
    pub identity: (&'a str, &'a str),
    /// Whether the summary of this instance's latest snapshot shows the
    /// output committed already (an earlier attempt landed).
    pub held: &'a (dyn Fn(&HashMap<String, String>) -> bool + Sync),
    /// What this instance runs, and the rules it publishes to the group.
    pub rules: RulesNote<'a>,
}

/// Lost compare-and-swaps in a row before a commit or a claim gives up.
const MAX_LOST_RACES: u32 = 64;

/// Partitions a claim gets, as they stood.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Each partition's progress in the sessions table, with the new epoch.
    pub progress: GroupProgress,
    /// Each partition's offset up to which its dead letters are in the
    /// dead-letter table (further than `progress` when a commit stopped
    /// between the two tables).
    pub dead_letters_to: BTreeMap<i32, i64>,
    /// The group's members and rules as the claim found them.
    pub fleet: FleetView,
}

impl IcebergSink {
    /// Claims `partitions` for `owner` in `group`: raises each one's epoch in
    /// both tables, which fences whoever held them. Returns where they stood.
    pub(super) async fn group_claim(
        &mut self,
        group: &str,
        owner: &str,
        partitions: &[i32],
    ) -> Result<Claimed, SinkError> {
        for _ in 0..MAX_LOST_RACES {
            self.refresh().await?;
            let mut sessions = progress_in(&self.sessions, group)?;
            let fleet = fleet_in(&self.sessions, group);
            let mut rejected = progress_in(&self.rejected, group)?;
            for &p in partitions {
                let s = sessions.entry(p).or_default();
                let r = rejected.entry(p).or_default();
                let epoch = s.epoch.max(r.epoch) + 1;
                (s.epoch, s.owner) = (epoch, owner.to_owned());
                (r.epoch, r.owner) = (epoch, owner.to_owned());
            }
            // The dead-letter table first: the claim is in force once the
            // sessions table, the commit point, has it.
            let props = group_properties(group, &rejected, None);
            let Some(table) =
                append_if_unchanged(&self.catalog, &self.rejected, vec![], props).await?
            else {
                continue;
            };
            self.rejected = table;
            let props = group_properties(group, &sessions, Some(&fleet));
            let Some(table) =
                append_if_unchanged(&self.catalog, &self.sessions, vec![], props).await?
            else {
                continue;
            };
            self.sessions = table;
            let dead_letters_to =
                partitions.iter().filter_map(|p| Some((*p, rejected.get(p)?.offset?))).collect();
            sessions.retain(|p, _| partitions.contains(p));
            return Ok(Claimed { progress: sessions, dead_letters_to, fleet });
        }
        Err(lost_races("claiming partitions"))
    }

    /// Commits a member's output unless a partition it covers was claimed
    /// since, in the same order and with the same idempotence as
    /// [`Sink::commit`].
    pub(super) async fn group_commit(
        &mut self,
        output: OwnedOutput<'_>,
    ) -> Result<OwnedCommit, SinkError> {
        let result = self.try_commit_owned(output).await;
        self.needs_refresh = result.is_err();
        result
    }

    async fn try_commit_owned(
        &mut self,
        output: OwnedOutput<'_>,
    ) -> Result<OwnedCommit, SinkError> {
        let (key, value) = output.identity;
        let mut properties = output.properties;
        properties.insert(PROP_SESSION_ROWS.to_string(), output.sessions.len().to_string());
        properties.insert(PROP_REJECTED_ROWS.to_string(), output.rejected.len().to_string());
        let (session_files, rejected_files) =
            self.write_output(output.sessions, output.rejected).await?;
        for _ in 0..MAX_LOST_RACES {
            self.refresh().await?;
            if latest_properties_with(&self.sessions, key, value).is_some_and(|p| (output.held)(&p))
            {
                return Ok(OwnedCommit::Committed(fleet_in(&self.sessions, output.group)));
            }
            let mut sessions = progress_in(&self.sessions, output.group)?;
            let lost = fenced(&sessions, output.owner, output.claimed);
            if !lost.is_empty() {
                return Ok(OwnedCommit::Fenced(lost));
            }
            let rejected_held = latest_properties_with(&self.rejected, key, value)
                .is_some_and(|p| (output.held)(&p));
            if !rejected_files.is_empty() && !rejected_held {
                let mut rejected = progress_in(&self.rejected, output.group)?;
                let lost = fenced(&rejected, output.owner, output.claimed);
                if !lost.is_empty() {
                    return Ok(OwnedCommit::Fenced(lost));
                }
                for (p, now) in output.progress {
                    rejected.entry(*p).or_default().offset = now.offset;
                }
                let mut props = properties.clone();
                props.extend(group_properties(output.group, &rejected, None));
                let files = rejected_files.clone();
                match append_if_unchanged(&self.catalog, &self.rejected, files, props).await? {
                    Some(table) => self.rejected = table,
                    None => continue,
                }
            }
            for (p, now) in output.progress {
                let entry = sessions.entry(*p).or_default();
                (entry.offset, entry.state) = (now.offset, now.state);
            }
            let mut fleet = fleet_in(&self.sessions, output.group);
            let partitions = output.claimed.keys().copied().collect();
            fleet.record(output.owner, output.rules, partitions, now_ms());
            let mut props = properties.clone();
            props.extend(group_properties(output.group, &sessions, Some(&fleet)));
            let files = session_files.clone();
            match append_if_unchanged(&self.catalog, &self.sessions, files, props).await? {
                Some(table) => {
                    self.sessions = table;
                    self.publish_schema();
                    return Ok(OwnedCommit::Committed(fleet));
                }
                None => continue,
            }
        }
        Err(lost_races("committing a group member's output"))
    }

    /// Where state file `seq` of `partition`, written under `epoch`, lives:
    /// beside the sessions table, so every instance that reaches the table
    /// reaches it.
    fn state_location(&self, group: &str, partition: i32, epoch: u64, seq: u64) -> String {
        let table = self.sessions.metadata().location().trim_end_matches('/');
        format!("{table}/sessionize-state/{}/{partition}/{epoch}-{seq}.state", path_segment(group))
    }

    /// Writes a partition's state file.
    pub(super) async fn group_write_state(
        &self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
        bytes: Vec<u8>,
    ) -> Result<(), SinkError> {
        let location = self.state_location(group, partition, epoch, seq);
        let context = || format!("writing state file {location}");
        let output = self.sessions.file_io().new_output(&location).context(context)?;
        output.write(bytes.into()).await.context(context)
    }

    /// Deletes a partition's state file (one no summary names any more).
    pub(super) async fn group_delete_state(
        &self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
    ) -> Result<(), SinkError> {
        let location = self.state_location(group, partition, epoch, seq);
        let context = || format!("deleting state file {location}");
        self.sessions.file_io().delete(&location).await.context(context)
    }

    /// Reads a partition's state file.
    pub(super) async fn group_read_state(
        &self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
    ) -> Result<Vec<u8>, SinkError> {
        let location = self.state_location(group, partition, epoch, seq);
        let context = || format!("reading state file {location}");
        let input = self.sessions.file_io().new_input(&location).context(context)?;
        Ok(input.read().await.context(context)?.to_vec())
    }
}

fn lost_races(what: &str) -> SinkError {
    SinkError::Iceberg {
        context: format!("{what}: lost {MAX_LOST_RACES} races in a row to other writers"),
        source: Box::new(moved()),
    }
}

/// The group's newest progress in `table`, or none.
pub(super) fn progress_in(table: &Table, group: &str) -> Result<GroupProgress, SinkError> {
    let Some(props) = latest_properties_with(table, GROUP_KEY, group) else {
        return Ok(GroupProgress::new());
    };
    let Some(json) = props.get(PARTITIONS_KEY) else { return Ok(GroupProgress::new()) };
    // Written by this program, but read from storage others can write: checked.
    serde_json::from_str(json).map_err(|e| {
        SinkError::Config(format!(
            "the partition progress of group {group} in {} does not decode ({e}); the table was \
             written by something else",
            table.identifier()
        ))
    })
}

/// The group's members and rules in `table`'s newest group snapshot.
pub(super) fn fleet_in(table: &Table, group: &str) -> FleetView {
    latest_properties_with(table, GROUP_KEY, group)
        .map(|props| FleetView::from_summary(&props))
        .unwrap_or_default()
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The partitions of `claimed` (partition -> epoch) that `progress` no longer
/// gives to `owner` under that epoch.
pub(super) fn fenced(
    progress: &GroupProgress,
    owner: &str,
    claimed: &BTreeMap<i32, u64>,
) -> Vec<i32> {
    claimed
        .iter()
        .filter(|(p, &epoch)| {
            progress.get(p).is_none_or(|entry| entry.owner != owner || entry.epoch != epoch)
        })
        .map(|(&p, _)| p)
        .collect()
}

/// Appends `files` (perhaps none) to `table` with `properties`, only if no
/// snapshot was committed to it since it was loaded. `Ok(None)`: one was.
pub(super) async fn append_if_unchanged(
    catalog: &SqlCatalog,
    table: &Table,
    files: Vec<DataFile>,
    properties: HashMap<String, String>,
) -> Result<Option<Table>, SinkError> {
    let context = || format!("committing to {}", table.identifier());
    let tx = append_transaction(table, files, properties)?;
    match tx.commit(&Pinned::new(catalog, table)).await {
        Ok(table) => Ok(Some(table)),
        Err(error) => {
            // Lost the race if the table moved; otherwise a failure of its own.
            let now = reload(catalog, table).await?;
            if now.metadata_location() != table.metadata_location() {
                return Ok(None);
            }
            Err(error).context(context)
        }
    }
}

/// A group's summary properties for `progress` and, in the sessions
/// table, `fleet`.
pub(super) fn group_properties(
    group: &str,
    progress: &GroupProgress,
    fleet: Option<&FleetView>,
) -> HashMap<String, String> {
    let json = serde_json::to_string(progress).unwrap_or_default();
    let mut props = HashMap::from([
        (GROUP_KEY.to_owned(), group.to_owned()),
        (PARTITIONS_KEY.to_owned(), json),
    ]);
    props.extend(fleet.map(FleetView::properties).unwrap_or_default());
    props
}

/// `group` as one path segment: letters, digits, `-`, `_` and `.` kept, any
/// other byte as `~xx`.
pub(super) fn path_segment(group: &str) -> String {
    let mut out = String::with_capacity(group.len());
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_become_one_safe_path_segment() {
        assert_eq!(path_segment("sessionize"), "sessionize");
        assert_eq!(path_segment("../x/y"), "~2e.~2fx~2fy");
        assert_eq!(path_segment("a b"), "a~20b");
    }

    #[test]
    fn a_partition_claimed_again_is_fenced() {
        let mut progress = GroupProgress::new();
        progress.insert(0, PartitionProgress { epoch: 3, owner: "a".into(), ..Default::default() });
        progress.insert(1, PartitionProgress { epoch: 4, owner: "b".into(), ..Default::default() });
        let claimed = BTreeMap::from([(0, 3), (1, 2), (2, 1)]);
        assert_eq!(fenced(&progress, "a", &claimed), vec![1, 2]);
    }
}
