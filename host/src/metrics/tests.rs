use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn swap(action: &str, version: &str, at: u64) -> SwapEvent {
    SwapEvent {
        action: action.into(),
        rule_version: version.into(),
        at_unix_s: at,
        detail: None,
        pause_us: None,
    }
}

fn line<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(name)).collect()
}

#[test]
fn names_follow_the_prometheus_conventions() {
    let metrics = JobMetrics::default();
    metrics.observe_rejected(&[("invalid_json", 2), ("too_large", 1)]);
    metrics.observe_lag(&BTreeMap::from([(0, 5), (1, 7)]));
    let text = metrics.encode();
    assert_eq!(
        line(&text, "sessionize_events_total{outcome=\"rejected\"}"),
        ["sessionize_events_total{outcome=\"rejected\"} 3"]
    );
    assert!(text.contains("sessionize_events_rejected_total{reason=\"invalid_json\"} 2"), "{text}");
    assert!(text.contains("sessionize_consumer_lag{partition=\"1\"} 7"), "{text}");
    assert!(text.contains("# TYPE sessionize_checkpoint_duration_seconds histogram"), "{text}");
    assert!(text.contains("# UNIT sessionize_state_store_size_bytes bytes"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn rules_changes_are_counted_once_each_and_the_info_follows_the_version() {
    let metrics = JobMetrics::default();
    let mut history = vec![swap("started", "a@1", 1)];
    metrics.observe_rules("a@1", history.iter());
    history.push(swap("deployed", "b@1", 2));
    history.push(swap("refused", "c@1", 3));
    metrics.observe_rules("b@1", history.iter());
    // Seen again (a checkpoint with no change): nothing new.
    metrics.observe_rules("b@1", history.iter());
    history.push(swap("rolled back", "a@1", 4));
    metrics.observe_rules("a@1", history.iter());
    let text = metrics.encode();
    for counted in ["deployed\"} 1", "refused\"} 1", "rolled_back\"} 1"] {
        assert!(text.contains(&format!("sessionize_rules_changes_total{{action=\"{counted}")));
    }
    assert!(!text.contains("action=\"started\""));
    assert_eq!(
        line(&text, "sessionize_rules_info{"),
        ["sessionize_rules_info{rule_version=\"a@1\"} 1"]
    );
    assert_eq!(metrics.overview().rule_version, "a@1");
    assert_eq!(metrics.recent().rules().count(), 4);
}

#[test]
fn a_history_that_dropped_its_oldest_entries_still_counts_only_the_new() {
    let mut recent = Recent::default();
    let old: Vec<SwapEvent> = (0..4).map(|i| swap("deployed", "v", i)).collect();
    assert_eq!(recent.rules_history(old.clone()).len(), 4);
    let mut rotated = old[2..].to_vec();
    rotated.push(swap("deployed", "w", 9));
    assert_eq!(recent.rules_history(rotated), [swap("deployed", "w", 9)]);
}

#[test]
fn readiness_needs_partitions_little_lag_and_recent_checkpoints() {
    let readiness = Readiness { max_lag: 100, max_checkpoint_age: Duration::from_millis(200) };
    let metrics = JobMetrics::new(readiness);
    let why = metrics.readiness().unwrap_err();
    assert_eq!(why, ["no partitions assigned yet"]);
    metrics.set_partitions(&[0, 1]);
    metrics.observe_lag(&BTreeMap::from([(0, 60), (1, 60)]));
    let why = metrics.readiness().unwrap_err();
    assert_eq!(why, ["120 events behind the end of the input (ready at 100 or fewer)"]);
    metrics.observe_lag(&BTreeMap::from([(0, 60), (1, 0)]));
    assert_eq!(metrics.readiness(), Ok(()));
    std::thread::sleep(Duration::from_millis(250));
    let why = metrics.readiness().unwrap_err();
    assert!(why[0].starts_with("no checkpoint completed in"), "{why:?}");
    let note = CheckpointNote {
        id: 1,
        at_unix_s: 0.0,
        took: Duration::from_millis(30),
        commit_took: Duration::from_millis(20),
        visible_after: None,
        sessions: 0,
        dead_letters: 0,
        state_bytes: Some(4096),
    };
    metrics.observe_checkpoint(&note, &BTreeMap::from([(0, 10)]));
    assert_eq!(metrics.readiness(), Ok(()));
    let text = metrics.encode();
    assert!(text.contains("sessionize_committed_offset{partition=\"0\"} 10"), "{text}");
    assert!(text.contains("sessionize_state_store_size_bytes 4096"), "{text}");
    assert!(text.contains("sessionize_checkpoint_duration_seconds_count 1"), "{text}");
}

#[test]
fn the_page_keeps_only_the_latest_dead_letters_and_cuts_long_records() {
    let dead = |i: i64| RejectedEvent {
        raw: "x".repeat(1000),
        reason: format!("reason {i}"),
        source: "s".into(),
        partition: 0,
        position: i,
    };
    let metrics = JobMetrics::default();
    let rejected: Vec<RejectedEvent> = (0..50).map(dead).collect();
    metrics.observe_output(&[], &rejected);
    let recent = metrics.recent();
    let shown: Vec<i64> = recent.latest_dead_letters().map(|d| d.position).collect();
    assert_eq!(shown, (30..50).rev().collect::<Vec<_>>());
    assert!(recent.latest_dead_letters().all(|d| d.raw.len() == 160));
}

#[test]
fn rules_that_invent_end_reasons_cannot_grow_the_labels() {
    let row = |reason: String| SessionRow {
        uuid: "u".into(),
        session_id: "s".into(),
        start_ms: 0,
        end_ms: 1,
        event_count: 1,
        pages: Vec::new(),
        end_reason: reason,
        rule_version: "r".into(),
        attributes: Vec::new(),
    };
    let metrics = JobMetrics::default();
    let sessions: Vec<SessionRow> = (0..100).map(|i| row(format!("reason {i}"))).collect();
    metrics.observe_output(&sessions, &[]);
    metrics.observe_output(&[row("reason 0".into())], &[]);
    let text = metrics.encode();
    let labels = line(&text, "sessionize_sessions_closed_total{");
    assert_eq!(labels.len(), MAX_END_REASONS + 1, "{labels:?}");
    assert!(text.contains("end_reason=\"(other)\"} 68"), "{text}");
    assert!(text.contains("end_reason=\"reason 0\"} 2"), "{text}");
}
