//! Members of one consumer group sharing the tables: a claim fences the
//! member that held a partition, through the real SQLite catalog and a local
//! warehouse, and a member's state files travel beside the table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sessionize::group::{
    CommitOutcome, GroupProgress, GroupStore, MemberCommit, PartitionProgress, Publish,
    PublishKind, StateChain,
};
use sessionize::sink::iceberg::maintain::{ExpiryOptions, TableMaintenance};
use sessionize::sink::iceberg::{IcebergSink, SinkConfig};
use sessionize::sink::{SessionRow, Sink};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The rules a commit was made by, and what it publishes.
type Rules<'a> = (&'a str, Option<&'a Publish>);

fn session(uuid: &str, start_ms: i64) -> SessionRow {
    SessionRow {
        uuid: uuid.to_string(),
        session_id: format!("{uuid}-{start_ms}"),
        start_ms,
        end_ms: start_ms + 60_000,
        event_count: 2,
        pages: vec![Arc::from("home")],
        end_reason: "inactivity".to_string(),
        rule_version: Arc::from("default-rules@1.0.0#abc"),
        attributes: Vec::new(),
    }
}

async fn commit(
    sink: &mut IcebergSink,
    owner: &str,
    checkpoint: u64,
    claimed: &BTreeMap<i32, u64>,
    rows: &[SessionRow],
) -> Result<CommitOutcome, sessionize::sink::SinkError> {
    commit_with(sink, owner, checkpoint, claimed, rows, ("default-rules@1.0.0+abc", None)).await
}

/// Whether a member's commit went through (whatever it saw of the group).
fn committed(outcome: &CommitOutcome) -> bool {
    matches!(outcome, CommitOutcome::Committed(_))
}

async fn commit_with(
    sink: &mut IcebergSink,
    owner: &str,
    checkpoint: u64,
    claimed: &BTreeMap<i32, u64>,
    rows: &[SessionRow],
    rules: Rules<'_>,
) -> Result<CommitOutcome, sessionize::sink::SinkError> {
    let progress: GroupProgress = claimed
        .keys()
        .map(|&p| (p, PartitionProgress { offset: Some(100), ..Default::default() }))
        .collect();
    commit_progress(sink, owner, checkpoint, claimed, &progress, rows, rules).await
}

async fn commit_progress(
    sink: &mut IcebergSink,
    owner: &str,
    checkpoint: u64,
    claimed: &BTreeMap<i32, u64>,
    progress: &GroupProgress,
    rows: &[SessionRow],
    (rules, publish): Rules<'_>,
) -> Result<CommitOutcome, sessionize::sink::SinkError> {
    let commit = MemberCommit {
        group: "fleet",
        owner,
        claimed,
        progress,
        sessions: rows,
        rejected: &[],
        properties: HashMap::from([
            ("sessionize.checkpoint-id".to_owned(), checkpoint.to_string()),
            ("sessionize.job-id".to_owned(), owner.to_owned()),
        ]),
        checkpoint,
        rules,
        publish,
    };
    sink.commit_member(commit).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_partition_was_claimed_since_commits_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SinkConfig::new(dir.path().join("warehouse"));
    let mut zombie = IcebergSink::open(&config).await?;
    let mut heir = IcebergSink::open(&config).await?;

    let first = zombie.claim("fleet", "zombie", &[0, 1]).await?;
    let epochs: BTreeMap<i32, u64> =
        first.progress.iter().map(|(&p, entry)| (p, entry.epoch)).collect();
    assert_eq!(epochs, BTreeMap::from([(0, 1), (1, 1)]));
    let done = commit(&mut zombie, "zombie", 1, &epochs, &[session("u1", 0)]).await?;
    assert!(committed(&done));

    // Partition 1 moves: the heir's claim raises its epoch and finds the
    // zombie's offset.
    let second = heir.claim("fleet", "heir", &[1]).await?;
    assert_eq!(second.progress[&1].epoch, 2);
    assert_eq!(second.progress[&1].offset, Some(100));

    // The zombie, which has not noticed, commits for both: refused, and
    // nothing of it lands, not even partition 0's rows.
    let refused = commit(&mut zombie, "zombie", 2, &epochs, &[session("u2", 0)]).await?;
    assert_eq!(refused, CommitOutcome::Fenced(vec![1]));
    let only_zero = BTreeMap::from([(0, 1)]);
    let kept = commit(&mut zombie, "zombie", 2, &only_zero, &[session("u3", 0)]).await?;
    assert!(committed(&kept));
    let heirs = BTreeMap::from([(1, 2)]);
    assert!(committed(&commit(&mut heir, "heir", 1, &heirs, &[session("u4", 0)]).await?));

    let rows: Vec<String> = sessions_of(&mut heir).await?;
    assert_eq!(rows, ["u1-0", "u3-0", "u4-0"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_are_read_back_by_another_member() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SinkConfig::new(dir.path().join("warehouse"));
    let mut writer = IcebergSink::open(&config).await?;
    let mut reader = IcebergSink::open(&config).await?;
    writer.write_state("fleet/../x", 3, 7, 1, b"state".to_vec()).await?;
    assert_eq!(reader.read_state("fleet/../x", 3, 7, 1).await?, b"state");
    assert!(reader.read_state("fleet/../x", 3, 7, 2).await.is_err());
    // The group name stays one directory under the table's.
    let state = dir.path().join("warehouse/sessions/user_sessions/sessionize-state/fleet~2f..~2fx");
    assert!(state.join("3/7-1.state").is_file());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_one_member_publishes_reach_the_others_and_claims_keep_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SinkConfig::new(dir.path().join("warehouse"));
    let mut a = IcebergSink::open(&config).await?;
    let mut b = IcebergSink::open(&config).await?;
    let a_claim = a.claim("fleet", "a", &[0]).await?;
    assert_eq!(a_claim.view.rules, None);
    let a_epochs = BTreeMap::from([(0, a_claim.progress[&0].epoch)]);

    // A publishes v2: the component goes beside the table, the record into
    // the commit.
    let sha = "cd".repeat(32);
    a.write_component("fleet", &sha, b"component v2".to_vec()).await?;
    let v2 = publish("r@2+cdcd", &sha, PublishKind::Deploy, 0);
    let published = ("r@2+cdcd", Some(&v2));
    let CommitOutcome::Committed(view) =
        commit_with(&mut a, "a", 1, &a_epochs, &[], published).await?
    else {
        panic!("A's commit was refused");
    };
    assert_eq!(view.rules.as_ref().map(|r| (r.seq, r.version.as_str())), Some((1, "r@2+cdcd")));

    // B's claim carries the record on; a later member starting with other
    // rules does not replace it (a start), and both show as members.
    let b_claim = b.claim("fleet", "b", &[1]).await?;
    assert_eq!(b_claim.view.rules, view.rules);
    let b_epochs = BTreeMap::from([(1, b_claim.progress[&1].epoch)]);
    let v1 = publish("r@1+abab", &"ab".repeat(32), PublishKind::Start, 0);
    let starting = ("r@1+abab", Some(&v1));
    assert!(committed(&commit_with(&mut b, "b", 1, &b_epochs, &[], starting).await?));
    let fleet = a.view("fleet").await?;
    assert_eq!(fleet.rules.as_ref().map(|r| (r.seq, r.by.as_str())), Some((1, "a")));
    let runs: Vec<(&str, &str)> =
        fleet.members.iter().map(|(m, seen)| (m.as_str(), seen.rules.as_str())).collect();
    assert_eq!(runs, [("a", "r@2+cdcd"), ("b", "r@1+abab")]);
    assert_eq!(b.read_component("fleet", &sha, 1 << 20).await?, b"component v2");
    // A component over the reader's limit is refused before it is read.
    assert!(b.read_component("fleet", &sha, 4).await.is_err());
    Ok(())
}

fn publish(version: &str, sha256: &str, kind: PublishKind, based_on: u64) -> Publish {
    Publish { version: version.into(), sha256: Some(sha256.into()), kind, based_on }
}

/// A member holding no partitions accepted v2 while the group was at record
/// 1; v3 then went out through another member. When the first member gets to
/// commit, its publish of v2 must be refused, not roll the group back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_based_on_an_older_record_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SinkConfig::new(dir.path().join("warehouse"));
    let mut a = IcebergSink::open(&config).await?;
    let mut b = IcebergSink::open(&config).await?;
    let none = BTreeMap::new();
    let v1 = publish("r@1+aa", &"aa".repeat(32), PublishKind::Start, 0);
    let start = ("r@1+aa", Some(&v1));
    assert!(committed(&commit_with(&mut b, "b", 1, &none, &[], start).await?));
    let v3 = publish("r@3+cc", &"cc".repeat(32), PublishKind::Deploy, 1);
    let deploy = ("r@3+cc", Some(&v3));
    assert!(committed(&commit_with(&mut b, "b", 2, &none, &[], deploy).await?));
    // A's deploy of v2 was made against record 1.
    let v2 = publish("r@2+bb", &"bb".repeat(32), PublishKind::Deploy, 1);
    let stale = ("r@2+bb", Some(&v2));
    let CommitOutcome::Committed(view) = commit_with(&mut a, "a", 1, &none, &[], stale).await?
    else {
        panic!("A's commit was refused");
    };
    assert!(!view.holds(&v2) && view.holds(&v3), "{view:?}");
    assert_eq!(view.rules.as_ref().map(|r| (r.seq, r.version.as_str())), Some((2, "r@3+cc")));
    Ok(())
}

/// The files a group resumes from are kept by maintenance however old they
/// are (a fleet stopped over a long weekend); files nothing names go once
/// old enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_keeps_every_file_the_group_names() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SinkConfig::new(dir.path().join("warehouse"));
    let mut a = IcebergSink::open(&config).await?;
    let claim = a.claim("fleet", "a", &[0]).await?;
    let epochs = BTreeMap::from([(0, claim.progress[&0].epoch)]);
    let epoch = epochs[&0];
    for seq in 1..=3 {
        a.write_state("fleet", 0, epoch, seq, b"state".to_vec()).await?;
    }
    let chain = StateChain { epoch, first: 2, last: 3 };
    let progress = GroupProgress::from([(
        0,
        PartitionProgress { offset: Some(10), state: Some(chain), ..Default::default() },
    )]);
    let sha = "ef".repeat(32);
    a.write_component("fleet", &sha, b"component".to_vec()).await?;
    let v1 = publish("r@1+ef", &sha, PublishKind::Start, 0);
    let rules = ("r@1+ef", Some(&v1));
    let done = commit_progress(&mut a, "a", 1, &epochs, &progress, &[], rules).await?;
    assert!(committed(&done));

    let table = dir.path().join("warehouse/sessions/user_sessions");
    let weekend = std::time::SystemTime::now() - std::time::Duration::from_secs(4 * 86_400);
    for entry in walk(&table) {
        std::fs::File::options().write(true).open(&entry)?.set_modified(weekend)?;
    }
    let maintenance = TableMaintenance::open(&config).await?;
    let options = ExpiryOptions {
        older_than: std::time::Duration::from_secs(86_400),
        retain_last: 1,
        writer_key: "sessionize.job-id".into(),
        orphans_older_than: Some(std::time::Duration::from_secs(3 * 86_400)),
    };
    maintenance.expire(&options).await?;
    let state = table.join("sessionize-state/fleet/0");
    assert!(state.join(format!("{epoch}-2.state")).is_file());
    assert!(state.join(format!("{epoch}-3.state")).is_file());
    assert!(!state.join(format!("{epoch}-1.state")).exists(), "a file nothing names stayed");
    assert!(table.join(format!("sessionize-rules/fleet/{sha}.wasm")).is_file());
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

async fn sessions_of(sink: &mut IcebergSink) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    use futures::TryStreamExt;
    // Reloads the table, so commits by the other sink show.
    let _ = sink.last_commit_properties("sessionize.group", "fleet").await?;
    let table = sink.sessions_table();
    let batches: Vec<_> = table.scan().build()?.to_arrow().await?.try_collect().await?;
    let mut ids = Vec::new();
    for batch in batches {
        let column = batch.column_by_name("session_id").ok_or("no session_id")?;
        let strings = column
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .ok_or("session_id is not a string")?;
        ids.extend(strings.iter().flatten().map(str::to_owned));
    }
    ids.sort();
    Ok(ids)
}

/// The metadata bytes one commit of a member holding `partitions` adds to
/// the table's metadata file (each commit rewrites it with every snapshot
/// kept): the group's record rides in a file of its own past 64 partitions.
async fn metadata_bytes_per_commit(partitions: i32) -> Result<u64, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = SinkConfig::new(dir.path().join("warehouse"));
    let mut sink = IcebergSink::open(&config).await?;
    let all: Vec<i32> = (0..partitions).collect();
    let claimed = sink.claim("fleet", "a", &all).await?;
    let epochs: BTreeMap<i32, u64> = claimed.progress.iter().map(|(&p, e)| (p, e.epoch)).collect();
    let mut sizes = Vec::new();
    for checkpoint in 1..=3 {
        let progress: GroupProgress = all
            .iter()
            .map(|&p| {
                let chain = StateChain { epoch: epochs[&p], first: 1, last: checkpoint };
                let entry = PartitionProgress {
                    offset: Some(1_000_000 + i64::from(p)),
                    state: Some(chain),
                    ..Default::default()
                };
                (p, entry)
            })
            .collect();
        let rules = ("default-rules@1.0.0+abc", None);
        let done =
            commit_progress(&mut sink, "a", checkpoint, &epochs, &progress, &[], rules).await?;
        assert!(committed(&done));
        let location = sink.sessions_table().metadata_location().ok_or("no metadata")?;
        sizes.push(std::fs::metadata(location.trim_start_matches("file://"))?.len());
    }
    // A second member restores what the first committed.
    let mut b = IcebergSink::open(&config).await?;
    let taken = b.claim("fleet", "b", &all).await?;
    assert_eq!(taken.progress.len(), all.len());
    assert!(taken.progress.values().all(|e| e.state.map(|c| c.last) == Some(3)));
    Ok(sizes[2] - sizes[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_adds_little_metadata_at_a_thousand_partitions() -> TestResult {
    for partitions in [8, 100, 1_000] {
        let bytes = metadata_bytes_per_commit(partitions).await?;
        println!("{partitions} partitions: {bytes} metadata bytes per commit");
        assert!(bytes < 4_000, "{partitions} partitions: {bytes} bytes per commit");
    }
    Ok(())
}
