//! Members of one consumer group sharing the tables: a claim fences the
//! member that held a partition, through the real SQLite catalog and a local
//! warehouse, and a member's state files travel beside the table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sessionize::sink::iceberg::{
    GroupProgress, IcebergSink, OwnedCommit, OwnedOutput, PartitionProgress, SinkConfig,
};
use sessionize::sink::{SessionRow, Sink};

type TestResult = Result<(), Box<dyn std::error::Error>>;

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
) -> Result<OwnedCommit, sessionize::sink::SinkError> {
    let progress: GroupProgress = claimed
        .keys()
        .map(|&p| (p, PartitionProgress { offset: Some(100), ..Default::default() }))
        .collect();
    let held = move |props: &HashMap<String, String>| {
        props.get("sessionize.checkpoint-id").and_then(|v| v.parse::<u64>().ok())
            >= Some(checkpoint)
    };
    let output = OwnedOutput {
        group: "fleet",
        owner,
        claimed,
        progress: &progress,
        sessions: rows,
        rejected: &[],
        properties: HashMap::from([
            ("sessionize.checkpoint-id".to_owned(), checkpoint.to_string()),
            ("sessionize.job-id".to_owned(), owner.to_owned()),
        ]),
        identity: ("sessionize.job-id", owner),
        held: &held,
    };
    sink.commit_owned(output).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_partition_was_claimed_since_commits_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SinkConfig::new(dir.path().join("warehouse"));
    let mut zombie = IcebergSink::open(&config).await?;
    let mut heir = IcebergSink::open(&config).await?;

    let first = zombie.claim_partitions("fleet", "zombie", &[0, 1]).await?;
    let epochs: BTreeMap<i32, u64> =
        first.progress.iter().map(|(&p, entry)| (p, entry.epoch)).collect();
    assert_eq!(epochs, BTreeMap::from([(0, 1), (1, 1)]));
    let done = commit(&mut zombie, "zombie", 1, &epochs, &[session("u1", 0)]).await?;
    assert_eq!(done, OwnedCommit::Committed);

    // Partition 1 moves: the heir's claim raises its epoch and finds the
    // zombie's offset.
    let second = heir.claim_partitions("fleet", "heir", &[1]).await?;
    assert_eq!(second.progress[&1].epoch, 2);
    assert_eq!(second.progress[&1].offset, Some(100));

    // The zombie, which has not noticed, commits for both: refused, and
    // nothing of it lands, not even partition 0's rows.
    let refused = commit(&mut zombie, "zombie", 2, &epochs, &[session("u2", 0)]).await?;
    assert_eq!(refused, OwnedCommit::Fenced(vec![1]));
    let only_zero = BTreeMap::from([(0, 1)]);
    let kept = commit(&mut zombie, "zombie", 2, &only_zero, &[session("u3", 0)]).await?;
    assert_eq!(kept, OwnedCommit::Committed);
    let heirs = BTreeMap::from([(1, 2)]);
    assert_eq!(
        commit(&mut heir, "heir", 1, &heirs, &[session("u4", 0)]).await?,
        OwnedCommit::Committed
    );

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
