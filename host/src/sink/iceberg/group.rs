//! A consumer group's store in the tables ([`GroupStore`] for [`IcebergSink`]):
//! many instances of one job, one consumer group, writing the same tables.
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

//!
//! The group's rules record and its members ride in the same summaries
//! (`sessionize.fleet-rules`, `sessionize.members`), under the same
//! compare-and-swap; the rules' components and the partitions' state files
//! live beside the sessions table.

use std::collections::{BTreeMap, HashMap, HashSet};

use iceberg::spec::DataFile;
use iceberg::table::Table;

use super::commit::{append_transaction, latest_properties_with, reload};
use super::pinned::Pinned;
use super::table_catalog::TableCatalog;
use super::{IcebergContext, IcebergSink, PROP_REJECTED_ROWS, PROP_SESSION_ROWS};
use serde::{Deserialize, Serialize};

use crate::group::{
    advanced, claim, fenced, holds, Claimed, CommitOutcome, GroupProgress, GroupStore, GroupView,
    MemberCommit, MemberSeen, RulesRecord,
};
use crate::sink::SinkError;

/// Snapshot summary key: the consumer group whose progress the snapshot records.
pub const GROUP_KEY: &str = "sessionize.group";
/// Snapshot summary key: every partition's progress, as JSON, while the
/// group has at most [`INLINE_PARTITIONS`] of them.
pub const PARTITIONS_KEY: &str = "sessionize.partitions";
/// Snapshot summary key: the file holding every partition's progress and
/// every member's record, for a group with more partitions or members than
/// ride in the summary (written before the commit that names it, so
/// offsets, state and output still move in one compare-and-swap).
pub const PARTITIONS_FILE_KEY: &str = "sessionize.partitions-file";

/// Most partitions whose progress rides in the summary itself: beyond, each
/// snapshot would carry (and the metadata file repeat) kilobytes per commit.
const INLINE_PARTITIONS: usize = 64;

/// Most members whose records ride in the summary itself.
const INLINE_MEMBERS: usize = 16;

/// Largest progress file read back (it comes from shared storage).
const MAX_PROGRESS_BYTES: u64 = 64 << 20;
/// Snapshot summary key: the group's rules record, as JSON.
pub const RULES_KEY: &str = "sessionize.fleet-rules";
/// Snapshot summary key: every recently seen member, as JSON.
pub const MEMBERS_KEY: &str = "sessionize.members";

/// Lost compare-and-swaps in a row before a commit or a claim gives up.
const MAX_LOST_RACES: u32 = 64;

impl GroupStore for IcebergSink {
    type Error = SinkError;

    async fn claim(
        &mut self,
        group: &str,
        owner: &str,
        partitions: &[i32],
    ) -> Result<Claimed, SinkError> {
        self.group_claim(group, owner, partitions).await
    }

    async fn commit_member(
        &mut self,
        commit: MemberCommit<'_>,
    ) -> Result<CommitOutcome, SinkError> {
        let result = self.try_commit_member(commit).await;
        self.needs_refresh = result.is_err();
        result
    }

    async fn write_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
        bytes: Vec<u8>,
    ) -> Result<(), SinkError> {
        let location = state_location(&self.sessions, group, partition, epoch, seq);
        let context = || format!("writing state file {location}");
        let output = self.sessions.file_io().new_output(&location).context(context)?;
        output.write(bytes.into()).await.context(context)
    }

    async fn read_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
    ) -> Result<Vec<u8>, SinkError> {
        let location = state_location(&self.sessions, group, partition, epoch, seq);
        let context = || format!("reading state file {location}");
        let input = self.sessions.file_io().new_input(&location).context(context)?;
        Ok(input.read().await.context(context)?.to_vec())
    }

    async fn delete_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
    ) -> Result<(), SinkError> {
        let location = state_location(&self.sessions, group, partition, epoch, seq);
        let context = || format!("deleting state file {location}");
        self.sessions.file_io().delete(&location).await.context(context)
    }

    async fn write_component(
        &mut self,
        group: &str,
        sha256: &str,
        bytes: Vec<u8>,
    ) -> Result<(), SinkError> {
        let location = component_location(&self.sessions, group, sha256);
        let context = || format!("writing rules component {location}");
        let output = self.sessions.file_io().new_output(&location).context(context)?;
        output.write(bytes.into()).await.context(context)
    }

    async fn read_component(
        &mut self,
        group: &str,
        sha256: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, SinkError> {
        let location = component_location(&self.sessions, group, sha256);
        let context = || format!("reading rules component {location}");
        let input = self.sessions.file_io().new_input(&location).context(context)?;
        let size = input.metadata().await.context(context)?.size;
        if size > max_bytes {
            return Err(SinkError::Refused(format!(
                "rules component {location} is {size} bytes, more than the {max_bytes} this job \
                 takes (--max-component-mib)"
            )));
        }
        Ok(input.read().await.context(context)?.to_vec())
    }

    async fn view(&mut self, group: &str) -> Result<GroupView, SinkError> {
        self.refresh().await?;
        Ok(record_in(&self.sessions, group).await?.1)
    }
}

impl IcebergSink {
    /// Claims `partitions` for `owner` in `group`: raises each one's epoch in
    /// both tables, which fences whoever held them. Returns where they stood.
    async fn group_claim(
        &mut self,
        group: &str,
        owner: &str,
        partitions: &[i32],
    ) -> Result<Claimed, SinkError> {
        // Made, not yet seen: a claim counts once a reload finds it.
        let mut made: Option<Claimed> = None;
        for _ in 0..MAX_LOST_RACES {
            self.refresh().await?;
            let (mut sessions, view) = record_in(&self.sessions, group).await?;
            if let Some(claimed) = made.take() {
                let epochs = claimed.progress.iter().map(|(&p, e)| (p, e.epoch)).collect();
                if fenced(&sessions, owner, &epochs).is_empty() {
                    return Ok(claimed);
                }
            }
            let mut rejected = progress_in(&self.rejected, group).await?;
            let epoch = |p: i32| {
                let of = |progress: &GroupProgress| progress.get(&p).map_or(0, |e| e.epoch);
                of(&sessions).max(of(&rejected)) + 1
            };
            let epochs: BTreeMap<i32, u64> = partitions.iter().map(|&p| (p, epoch(p))).collect();
            claim(&mut sessions, owner, partitions, |p| epochs[&p]);
            claim(&mut rejected, owner, partitions, |p| epochs[&p]);
            // The dead-letter table first: the claim is in force once the
            // sessions table, the commit point, has it.
            let props = group_properties(&self.rejected, group, &rejected, None).await?;
            let Some(table) =
                append_if_unchanged(&self.catalog, &self.rejected, vec![], props).await?
            else {
                continue;
            };
            self.rejected = table;
            let props = group_properties(&self.sessions, group, &sessions, Some(&view)).await?;
            let Some(table) =
                append_if_unchanged(&self.catalog, &self.sessions, vec![], props).await?
            else {
                continue;
            };
            self.sessions = table;
            let dead_letters_to =
                partitions.iter().filter_map(|p| Some((*p, rejected.get(p)?.offset?))).collect();
            sessions.retain(|p, _| partitions.contains(p));
            made = Some(Claimed { progress: sessions, dead_letters_to, view });
        }
        Err(lost_races("claiming partitions"))
    }

    /// Commits a member's output unless a partition it covers was claimed
    /// since: dead letters first, then the sessions (the commit point), each
    /// unless the newest progress shows an earlier attempt landed. A commit
    /// counts once a reload finds it: the catalog may report one that did
    /// not land.
    async fn try_commit_member(
        &mut self,
        mut commit: MemberCommit<'_>,
    ) -> Result<CommitOutcome, SinkError> {
        let mut properties = std::mem::take(&mut commit.properties);
        properties.insert(PROP_SESSION_ROWS.to_string(), commit.sessions.len().to_string());
        properties.insert(PROP_REJECTED_ROWS.to_string(), commit.rejected.len().to_string());
        let (session_files, rejected_files) =
            self.write_output(commit.sessions, commit.rejected).await?;
        let shown = |progress: &GroupProgress| {
            holds(progress, commit.owner, commit.claimed, commit.progress, commit.checkpoint)
        };
        let mut committed = false;
        for _ in 0..MAX_LOST_RACES {
            self.refresh().await?;
            let (sessions, mut view) = record_in(&self.sessions, commit.group).await?;
            // (Output of no partition cannot be told apart: taken as made.)
            if shown(&sessions) || (committed && commit.progress.is_empty()) {
                return Ok(CommitOutcome::Committed(view));
            }
            let lost = fenced(&sessions, commit.owner, commit.claimed);
            if !lost.is_empty() {
                return Ok(CommitOutcome::Fenced(lost));
            }
            let rejected = progress_in(&self.rejected, commit.group).await?;
            if !rejected_files.is_empty() && !shown(&rejected) {
                let lost = fenced(&rejected, commit.owner, commit.claimed);
                if !lost.is_empty() {
                    return Ok(CommitOutcome::Fenced(lost));
                }
                let mut rejected = advanced(rejected, commit.progress, commit.checkpoint);
                // State chains ride in the sessions table only.
                rejected.values_mut().for_each(|entry| entry.state = None);
                let mut props = properties.clone();
                props
                    .extend(group_properties(&self.rejected, commit.group, &rejected, None).await?);
                let files = rejected_files.clone();
                match append_if_unchanged(&self.catalog, &self.rejected, files, props).await? {
                    Some(table) => self.rejected = table,
                    None => continue,
                }
            }
            let sessions = advanced(sessions, commit.progress, commit.checkpoint);
            let partitions = commit.claimed.keys().copied().collect();
            view.record(
                commit.owner,
                commit.rules,
                commit.publish,
                partitions,
                commit_time(&self.sessions),
            );
            let mut props = properties.clone();
            props.extend(
                group_properties(&self.sessions, commit.group, &sessions, Some(&view)).await?,
            );
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
}

/// Where state file `seq` of `partition`, written under `epoch`, lives:
/// beside the sessions table, so every instance that reaches the table
/// reaches it.
fn state_location(table: &Table, group: &str, partition: i32, epoch: u64, seq: u64) -> String {
    let table = table.metadata().location().trim_end_matches('/');
    format!("{table}/sessionize-state/{}/{partition}/{epoch}-{seq}.state", path_segment(group))
}

/// Every file beside `table` that a group's newest snapshot names: the
/// file of its progress, the state chains its partitions resume from and the
/// components of its rules (in force, and kept for a rollback). Maintenance
/// must never delete them, however old: a group stopped over a long weekend
/// resumes from them. Fails if a progress file cannot be read: nothing may
/// be taken for an orphan then.
pub(super) async fn named_files(table: &Table) -> Result<HashSet<String>, SinkError> {
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
        named.extend(props.get(PARTITIONS_FILE_KEY).cloned());
        let (progress, view) = record_of(table, group, props).await?;
        for (&partition, entry) in &progress {
            let Some(chain) = entry.state.filter(|c| c.last - c.first < MAX_NAMED_CHAIN) else {
                continue;
            };
            for seq in chain.first..=chain.last {
                named.insert(state_location(table, group, partition, chain.epoch, seq));
            }
        }
        for sha256 in view.rules.iter().flat_map(RulesRecord::components) {
            named.insert(component_location(table, group, sha256));
        }
    }
    Ok(named)
}

/// Longest chain [`named_files`] lists (a summary naming a longer one is
/// refused on restore anyway).
const MAX_NAMED_CHAIN: u64 = 1 << 16;

fn lost_races(what: &str) -> SinkError {
    SinkError::LostRaces { what: what.to_owned(), races: MAX_LOST_RACES }
}

/// The group's newest progress in `table`, or none.
async fn progress_in(table: &Table, group: &str) -> Result<GroupProgress, SinkError> {
    Ok(record_in(table, group).await?.0)
}

/// The group's newest progress and view in `table` (none if it has none).
async fn record_in(table: &Table, group: &str) -> Result<(GroupProgress, GroupView), SinkError> {
    match latest_properties_with(table, GROUP_KEY, group) {
        Some(props) => record_of(table, group, &props).await,
        None => Ok(Default::default()),
    }
}

/// What a group's record holds when it is too large for the summary.
#[derive(Default, Serialize, Deserialize)]
struct RecordFile {
    partitions: GroupProgress,
    #[serde(default)]
    members: BTreeMap<String, MemberSeen>,
}

/// The progress and view a group snapshot's summary `props` in `table`
/// holds or names.
async fn record_of(
    table: &Table,
    group: &str,
    props: &HashMap<String, String>,
) -> Result<(GroupProgress, GroupView), SinkError> {
    // Written by this program, but read from storage others can write: checked.
    let undecodable = |e: &dyn std::fmt::Display| {
        SinkError::Refused(format!(
            "the record of group {group} in {} does not decode ({e}); the table was written by \
             something else",
            table.identifier()
        ))
    };
    let mut view = view_from_summary(props);
    if let Some(json) = props.get(PARTITIONS_KEY) {
        return Ok((serde_json::from_str(json).map_err(|e| undecodable(&e))?, view));
    }
    let Some(location) = props.get(PARTITIONS_FILE_KEY) else {
        return Ok((GroupProgress::new(), view));
    };
    if !location.starts_with(&progress_dir(table, group)) || location.contains("/../") {
        return Err(undecodable(&format!("{location} is not where progress files live")));
    }
    let context = || format!("reading the record of group {group} from {location}");
    let input = table.file_io().new_input(location).context(context)?;
    let size = input.metadata().await.context(context)?.size;
    if size > MAX_PROGRESS_BYTES {
        return Err(undecodable(&format!("{location} is {size} bytes")));
    }
    let bytes = input.read().await.context(context)?;
    let file: RecordFile = serde_json::from_slice(&bytes).map_err(|e| undecodable(&e))?;
    view.members = file.members;
    Ok((file.partitions, view))
}

/// Where a group's progress files for `table` live, beside it.
fn progress_dir(table: &Table, group: &str) -> String {
    let table = table.metadata().location().trim_end_matches('/');
    format!("{table}/sessionize-state/{}/progress/", path_segment(group))
}

/// The time a member's commit notes: this machine's clock, but never before
/// the table's newest snapshot (members' clocks may disagree).
fn commit_time(table: &Table) -> i64 {
    super::wall_clock_ms().max(super::table_catalog::newest_time(table.metadata()))
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

/// A group's summary properties in `table` for `progress` and, in the
/// sessions table, `view`. The progress of more than
/// [`INLINE_PARTITIONS`] partitions goes to a file of its own beside the
/// table first, which the summary names.
async fn group_properties(
    table: &Table,
    group: &str,
    progress: &GroupProgress,
    view: Option<&GroupView>,
) -> Result<HashMap<String, String>, SinkError> {
    let mut props = HashMap::from([(GROUP_KEY.to_owned(), group.to_owned())]);
    let members = view.map_or(0, |v| v.members.len());
    if progress.len() <= INLINE_PARTITIONS && members <= INLINE_MEMBERS {
        let json = serde_json::to_string(progress).unwrap_or_default();
        props.insert(PARTITIONS_KEY.to_owned(), json);
        props.extend(view.map(view_properties).unwrap_or_default());
        return Ok(props);
    }
    let file = RecordFile {
        partitions: progress.clone(),
        members: view.map(|v| v.members.clone()).unwrap_or_default(),
    };
    let json = serde_json::to_vec(&file).unwrap_or_default();
    let location = format!("{}{}.json", progress_dir(table, group), uuid::Uuid::new_v4().simple());
    let context = || format!("writing the record of group {group} to {location}");
    let output = table.file_io().new_output(&location).context(context)?;
    output.write(json.into()).await.context(context)?;
    props.insert(PARTITIONS_FILE_KEY.to_owned(), location);
    let rules = view.and_then(|v| v.rules.as_ref());
    props.extend(
        rules.map(|r| (RULES_KEY.to_owned(), serde_json::to_string(r).unwrap_or_default())),
    );
    Ok(props)
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

/// Where the component with full SHA-256 `sha256` of `group` lives: beside
/// the sessions table.
pub(super) fn component_location(table: &Table, group: &str, sha256: &str) -> String {
    let table = table.metadata().location().trim_end_matches('/');
    format!("{table}/sessionize-rules/{}/{sha256}.wasm", path_segment(group))
}

/// The group's view in a snapshot's summary. A record that does not decode
/// is left out with a warning: the next commit writes a good one.
fn view_from_summary(props: &HashMap<String, String>) -> GroupView {
    fn decode<T: serde::de::DeserializeOwned>(
        props: &HashMap<String, String>,
        key: &str,
    ) -> Option<T> {
        let json = props.get(key)?;
        serde_json::from_str(json)
            .map_err(|error| tracing::warn!(key, %error, "a group record does not decode: ignored"))
            .ok()
    }
    GroupView {
        rules: decode(props, RULES_KEY),
        members: decode(props, MEMBERS_KEY).unwrap_or_default(),
    }
}

/// The group view's summary properties.
fn view_properties(view: &GroupView) -> Vec<(String, String)> {
    let mut props = Vec::with_capacity(2);
    if let Some(rules) = &view.rules {
        props.push((RULES_KEY.to_owned(), serde_json::to_string(rules).unwrap_or_default()));
    }
    if !view.members.is_empty() {
        props.push((
            MEMBERS_KEY.to_owned(),
            serde_json::to_string(&view.members).unwrap_or_default(),
        ));
    }
    props
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
    fn a_record_that_does_not_decode_is_left_out() {
        let mut view = GroupView::default();
        view.record("a", "v1", None, vec![0], 0);
        let mut props: HashMap<String, String> = view_properties(&view).into_iter().collect();
        props.insert(RULES_KEY.to_owned(), "{not json".to_owned());
        let read = view_from_summary(&props);
        assert_eq!((read.rules, read.members), (None, view.members));
    }
}
