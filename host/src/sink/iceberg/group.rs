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

use std::collections::{BTreeMap, HashMap, HashSet};

use super::table_catalog::TableCatalog;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use serde::{Deserialize, Serialize};

use super::commit::{append_transaction, latest_properties_with, reload};
use super::fleet::{component_location, FleetRules, FleetView, RulesNote};
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
    /// The owner's checkpoint that committed `offset`: how it finds out
    /// whether a commit landed, from the newest snapshot alone (expiry may
    /// have removed its own older ones).
    #[serde(default)]
    pub checkpoint: u64,
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
    /// Summary properties of both snapshots.
    pub properties: HashMap<String, String>,
    /// This instance's checkpoint, which `progress` carries: a table whose
    /// newest progress shows it holds the output already (an earlier
    /// attempt landed).
    pub checkpoint: u64,
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
        // Made, not yet seen: a claim counts once a reload finds it.
        let mut made: Option<Claimed> = None;
        for _ in 0..MAX_LOST_RACES {
            self.refresh().await?;
            let mut sessions = progress_in(&self.sessions, group)?;
            if let Some(claimed) = made.take() {
                let epochs = claimed.progress.iter().map(|(&p, e)| (p, e.epoch)).collect();
                if fenced(&sessions, owner, &epochs).is_empty() {
                    return Ok(claimed);
                }
            }
            let fleet = fleet_in(&self.sessions, group);
            let mut rejected = progress_in(&self.rejected, group)?;
            for &p in partitions {
                let s = sessions.entry(p).or_default();
                let r = rejected.entry(p).or_default();
                let epoch = s.epoch.max(r.epoch) + 1;
                // Checkpoints count from the claim: the new owner's are its own.
                (s.epoch, s.owner, s.checkpoint) = (epoch, owner.to_owned(), 0);
                (r.epoch, r.owner, r.checkpoint) = (epoch, owner.to_owned(), 0);
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
            made = Some(Claimed { progress: sessions, dead_letters_to, fleet });
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
        mut output: OwnedOutput<'_>,
    ) -> Result<OwnedCommit, SinkError> {
        let mut properties = std::mem::take(&mut output.properties);
        properties.insert(PROP_SESSION_ROWS.to_string(), output.sessions.len().to_string());
        properties.insert(PROP_REJECTED_ROWS.to_string(), output.rejected.len().to_string());
        let (session_files, rejected_files) =
            self.write_output(output.sessions, output.rejected).await?;
        let mut committed = false;
        // A commit is taken as made only once a reload finds it: the catalog
        // may report one that did not land.
        for _ in 0..MAX_LOST_RACES {
            self.refresh().await?;
            let mut sessions = progress_in(&self.sessions, output.group)?;
            // (Output of no partition cannot be told apart: taken as made.)
            if committed && (output.progress.is_empty() || holds(&sessions, &output)) {
                return Ok(OwnedCommit::Committed(fleet_in(&self.sessions, output.group)));
            }
            let lost = fenced(&sessions, output.owner, output.claimed);
            if !lost.is_empty() {
                return Ok(OwnedCommit::Fenced(lost));
            }
            let rejected = progress_in(&self.rejected, output.group)?;
            if !rejected_files.is_empty() && !holds(&rejected, &output) {
                let lost = fenced(&rejected, output.owner, output.claimed);
                if !lost.is_empty() {
                    return Ok(OwnedCommit::Fenced(lost));
                }
                let mut rejected = advanced(rejected, &output);
                // State chains ride in the sessions table only.
                rejected.values_mut().for_each(|entry| entry.state = None);
                let mut props = properties.clone();
                props.extend(group_properties(output.group, &rejected, None));
                let files = rejected_files.clone();
                match append_if_unchanged(&self.catalog, &self.rejected, files, props).await? {
                    Some(table) => self.rejected = table,
                    None => continue,
                }
            }
            if holds(&sessions, &output) && !output.progress.is_empty() {
                // An earlier call's attempt landed; nothing to add.
                return Ok(OwnedCommit::Committed(fleet_in(&self.sessions, output.group)));
            }
            sessions = advanced(sessions, &output);
            let mut fleet = fleet_in(&self.sessions, output.group);
            let partitions = output.claimed.keys().copied().collect();
            fleet.record(output.owner, output.rules, partitions, now_ms());
            let mut props = properties.clone();
            props.extend(group_properties(output.group, &sessions, Some(&fleet)));
            let files = session_files.clone();
            if let Some(table) =
                append_if_unchanged(&self.catalog, &self.sessions, files, props).await?
            {
                self.sessions = table;
                self.publish_schema();
                committed = true;
            }
        }
        Err(lost_races("committing a group member's output"))
    }

    fn state_location(&self, group: &str, partition: i32, epoch: u64, seq: u64) -> String {
        state_location(&self.sessions, group, partition, epoch, seq)
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

/// Where state file `seq` of `partition`, written under `epoch`, lives:
/// beside the sessions table, so every instance that reaches the table
/// reaches it.
fn state_location(table: &Table, group: &str, partition: i32, epoch: u64, seq: u64) -> String {
    let table = table.metadata().location().trim_end_matches('/');
    format!("{table}/sessionize-state/{}/{partition}/{epoch}-{seq}.state", path_segment(group))
}

/// Every file beside `table` that a group's newest snapshot names: the
/// state chains its partitions resume from and the components of its rules
/// (in force, and kept for a rollback). Maintenance must never delete them,
/// however old: a group stopped over a long weekend resumes from them.
pub(super) fn named_files(table: &Table) -> HashSet<String> {
    let mut newest: HashMap<&str, &iceberg::spec::SnapshotRef> = HashMap::new();
    for snapshot in table.metadata().snapshots() {
        let Some(group) = snapshot.summary().additional_properties.get(GROUP_KEY) else {
            continue;
        };
        let entry = newest.entry(group).or_insert(snapshot);
        if snapshot.sequence_number() > entry.sequence_number() {
            *entry = snapshot;
        }
    }
    let mut named = HashSet::new();
    for (group, snapshot) in newest {
        let props = &snapshot.summary().additional_properties;
        let progress: GroupProgress = props
            .get(PARTITIONS_KEY)
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        for (&partition, entry) in &progress {
            let Some(chain) = entry.state.filter(|c| c.last - c.first < MAX_NAMED_CHAIN) else {
                continue;
            };
            for seq in chain.first..=chain.last {
                named.insert(state_location(table, group, partition, chain.epoch, seq));
            }
        }
        let fleet = FleetView::from_summary(props);
        for sha256 in fleet.rules.iter().flat_map(FleetRules::components) {
            named.insert(component_location(table, group, sha256));
        }
    }
    named
}

/// Longest chain [`named_files`] lists (a summary naming a longer one is
/// refused on restore anyway).
const MAX_NAMED_CHAIN: u64 = 1 << 16;

fn lost_races(what: &str) -> SinkError {
    SinkError::Iceberg {
        context: format!("{what}: lost {MAX_LOST_RACES} races in a row to other writers"),
        source: Box::new(moved()),
    }
}

/// Whether `progress` shows `output` committed: every partition it covers
/// at its checkpoint, under its claim. Output covering no partition (a
/// member that holds none publishes rules) is never held: committing it
/// again only records the same again.
fn holds(progress: &GroupProgress, output: &OwnedOutput<'_>) -> bool {
    !output.progress.is_empty()
        && output.progress.keys().all(|p| {
            progress.get(p).is_some_and(|entry| {
                entry.owner == output.owner
                    && output.claimed.get(p) == Some(&entry.epoch)
                    && entry.checkpoint >= output.checkpoint
            })
        })
}

/// `progress` with `output`'s partitions moved on to where it leaves them.
fn advanced(mut progress: GroupProgress, output: &OwnedOutput<'_>) -> GroupProgress {
    for (p, now) in output.progress {
        let entry = progress.entry(*p).or_default();
        (entry.offset, entry.state, entry.checkpoint) = (now.offset, now.state, output.checkpoint);
    }
    progress
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
    catalog: &TableCatalog,
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
