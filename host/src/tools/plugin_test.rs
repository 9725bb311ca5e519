//! `sessionize plugin test`: what rules make of a file, with no job, Kafka or
//! table, and what changes against other rules: the dry run a person runs
//! before `plugin deploy`.
//!
//! Both rules see the same events through the same engine (lateness,
//! duplicates, the watermark), so the sessions of one user under either rules
//! cover the same events, in time order. Lined up by time, they fall into
//! groups that overlap: one against one is the same session (or one whose end
//! reason changed), one against several a split, several against one a merge.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::engine::{Engine, EngineConfig};
use crate::job::bounded::{run_bounded, BoundedError, Shard, Watchers};
use crate::job::{Intake, RunSummary};
use crate::rules::RulesRuntime;
use crate::sink::{CommitStats, RejectedEvent, SessionRow, Sink, SinkError};
use crate::source::file::{FileSource, FileSourceError};
use crate::tools::distribution::{distributions, Distribution};

/// Why a test run failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginTestError {
    /// The input could not be read.
    #[error(transparent)]
    Input(#[from] FileSourceError),
    /// The run failed (the rules failed a batch, for example).
    #[error("running {rules} over the input: {source}")]
    Run {
        /// The rules.
        rules: String,
        /// Why.
        #[source]
        source: BoundedError,
    },
}

/// What one set of rules made of the input.
#[derive(Debug, Clone)]
pub struct RulesOutcome {
    /// The rules.
    pub rule_version: String,
    /// Every session, by user and start.
    pub sessions: Vec<SessionRow>,
    /// The records that were not events, late or refused.
    pub dead_letters: Vec<RejectedEvent>,
    /// The run's counters.
    pub summary: RunSummary,
}

impl RulesOutcome {
    /// Sessions by end reason.
    pub fn end_reasons(&self) -> BTreeMap<&str, u64> {
        let mut reasons = BTreeMap::new();
        for session in &self.sessions {
            *reasons.entry(session.end_reason.as_str()).or_default() += 1;
        }
        reasons
    }
}

/// Runs `rules` over the file at `input` to its end (every session closed).
pub fn run_rules(
    runtime: &tokio::runtime::Handle,
    rules: &mut dyn RulesRuntime,
    input: &Path,
    engine: EngineConfig,
    intake: &Intake,
) -> Result<RulesOutcome, PluginTestError> {
    let source = FileSource::open(input)?;
    let mut sink = Collected::default();
    let mut engine = Engine::new(engine);
    let rule_version = rules.rule_version().to_owned();
    let shards = vec![Shard { engine: &mut engine, rules }];
    let run = run_bounded(
        runtime,
        source,
        intake,
        shards,
        &mut sink,
        HashMap::new(),
        Watchers::default(),
    );
    let summary =
        run.map_err(|source| PluginTestError::Run { rules: rule_version.clone(), source })?;
    let mut sessions = sink.sessions;
    sessions.sort_by(|a, b| (&a.uuid, a.start_ms).cmp(&(&b.uuid, b.start_ms)));
    Ok(RulesOutcome { rule_version, sessions, dead_letters: sink.dead_letters, summary })
}

/// How a candidate's sessions differ from those of other rules.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SessionDiff {
    /// The same events, bounds and end reason.
    pub same: u64,
    /// The same events, another end reason: `(other, candidate)`.
    pub reason_changed: Vec<(SessionRow, SessionRow)>,
    /// One session of the other rules, cut into several by the candidate.
    pub split: Vec<(SessionRow, Vec<SessionRow>)>,
    /// Several sessions of the other rules, made one by the candidate.
    pub merged: Vec<(Vec<SessionRow>, SessionRow)>,
    /// Groups cut differently on both sides (several against several).
    pub reshaped: Vec<(Vec<SessionRow>, Vec<SessionRow>)>,
}

/// Lines up `candidate`'s sessions with `other`'s, user by user (both sorted
/// by user and start, as [`run_rules`] returns them).
pub fn compare(other: &[SessionRow], candidate: &[SessionRow]) -> SessionDiff {
    let mut diff = SessionDiff::default();
    let (mut i, mut j) = (0, 0);
    while i < other.len() || j < candidate.len() {
        // The next user on either side, in order.
        let user = match (other.get(i), candidate.get(j)) {
            (Some(a), Some(b)) => a.uuid.as_str().min(b.uuid.as_str()),
            (Some(a), None) => a.uuid.as_str(),
            (None, Some(b)) => b.uuid.as_str(),
            (None, None) => break,
        }
        .to_owned();
        let a_end = i + other[i..].iter().take_while(|s| s.uuid == user).count();
        let b_end = j + candidate[j..].iter().take_while(|s| s.uuid == user).count();
        compare_user(&other[i..a_end], &candidate[j..b_end], &mut diff);
        (i, j) = (a_end, b_end);
    }
    diff
}

/// One user's sessions, each side in time order: walks the groups of
/// sessions whose spans overlap.
fn compare_user(other: &[SessionRow], candidate: &[SessionRow], diff: &mut SessionDiff) {
    let (mut i, mut j) = (0, 0);
    while i < other.len() && j < candidate.len() {
        let (group_a, group_b) = (i, j);
        let mut end = other[i].end_ms.max(candidate[j].end_ms);
        i += 1;
        j += 1;
        // Grow the group while the next session on either side starts within it.
        loop {
            if i < other.len() && other[i].start_ms <= end {
                end = end.max(other[i].end_ms);
                i += 1;
            } else if j < candidate.len() && candidate[j].start_ms <= end {
                end = end.max(candidate[j].end_ms);
                j += 1;
            } else {
                break;
            }
        }
        let (a, b) = (&other[group_a..i], &candidate[group_b..j]);
        match (a, b) {
            ([a], [b]) if a.end_reason == b.end_reason && same_span(a, b) => diff.same += 1,
            ([a], [b]) if same_span(a, b) => diff.reason_changed.push((a.clone(), b.clone())),
            ([a], b) => diff.split.push((a.clone(), b.to_vec())),
            (a, [b]) => diff.merged.push((a.to_vec(), b.clone())),
            (a, b) => diff.reshaped.push((a.to_vec(), b.to_vec())),
        }
    }
    // Sessions on one side only: the other rules dropped those events.
    if i < other.len() || j < candidate.len() {
        diff.reshaped.push((other[i..].to_vec(), candidate[j..].to_vec()));
    }
}

fn same_span(a: &SessionRow, b: &SessionRow) -> bool {
    (a.start_ms, a.end_ms, a.event_count) == (b.start_ms, b.end_ms, b.event_count)
}

/// Writes every session of `outcome` as one JSON object per line.
pub fn write_sessions(out: &mut impl Write, outcome: &RulesOutcome) -> io::Result<()> {
    for session in &outcome.sessions {
        writeln!(out, "{}", crate::sink::session_json(session)?)?;
    }
    Ok(())
}

/// Writes what changes from `other` to `candidate`: the counts, the end
/// reasons side by side, and up to `examples` of each kind of change.
pub fn write_comparison(
    out: &mut impl Write,
    other: &RulesOutcome,
    candidate: &RulesOutcome,
    examples: usize,
) -> io::Result<()> {
    let diff = compare(&other.sessions, &candidate.sessions);
    let (a, b) = (other, candidate);
    writeln!(out, "candidate: {}\nagainst:   {}", b.rule_version, a.rule_version)?;
    let e = &b.summary.engine;
    writeln!(
        out,
        "events:    {} read, {} accepted, {} late, {} duplicate, {} rejected (the same for both)",
        b.summary.read, e.accepted, e.late, e.duplicates, b.summary.rejected
    )?;
    writeln!(out, "sessions:  {} -> {}", a.sessions.len(), b.sessions.len())?;
    writeln!(out, "end reasons:")?;
    let (before, after) = (a.end_reasons(), b.end_reasons());
    let mut reasons: Vec<&str> = before.keys().chain(after.keys()).copied().collect();
    reasons.sort_unstable();
    reasons.dedup();
    for reason in reasons {
        let count = |m: &BTreeMap<&str, u64>| m.get(reason).copied().unwrap_or(0);
        writeln!(out, "  {reason:<20} {:>8} -> {}", count(&before), count(&after))?;
    }
    let (before, after) = (distributions(&a.sessions), distributions(&b.sessions));
    if !before.is_empty() || !after.is_empty() {
        writeln!(out, "attributes (against -> candidate):")?;
        let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let side = |m: &BTreeMap<String, Distribution>| {
                m.get(name.as_str()).map_or_else(|| "-".to_owned(), ToString::to_string)
            };
            writeln!(out, "  {name:<20} {} -> {}", side(&before), side(&after))?;
        }
    }
    writeln!(out, "unchanged: {}", diff.same)?;
    writeln!(out, "split:     {} (one session cut into several)", diff.split.len())?;
    for (one, several) in diff.split.iter().take(examples) {
        writeln!(out, "  {} -> {}", describe(one), describe_all(several))?;
    }
    writeln!(out, "merged:    {} (several sessions made one)", diff.merged.len())?;
    for (several, one) in diff.merged.iter().take(examples) {
        writeln!(out, "  {} -> {}", describe_all(several), describe(one))?;
    }
    writeln!(out, "end reason changed: {}", diff.reason_changed.len())?;
    for (was, is) in diff.reason_changed.iter().take(examples) {
        writeln!(out, "  {} -> {}", describe(was), is.end_reason)?;
    }
    writeln!(out, "reshaped:  {} (cut differently on both sides)", diff.reshaped.len())?;
    for (was, is) in diff.reshaped.iter().take(examples) {
        writeln!(out, "  {} -> {}", describe_all(was), describe_all(is))?;
    }
    Ok(())
}

/// `u1 2025-01-01T00:00:00Z +50m, 6 events, inactivity`.
fn describe(session: &SessionRow) -> String {
    let start = UNIX_EPOCH + Duration::from_millis(session.start_ms.max(0) as u64);
    let span = Duration::from_secs((session.end_ms - session.start_ms).max(0) as u64 / 1000);
    format!(
        "{} {} +{}, {} events, {}",
        session.uuid,
        humantime::format_rfc3339_seconds(start),
        humantime::format_duration(span),
        session.event_count,
        session.end_reason
    )
}

fn describe_all(sessions: &[SessionRow]) -> String {
    let all: Vec<String> = sessions.iter().map(describe).collect();
    format!("[{}]", all.join("; "))
}

/// Keeps what a run commits, in memory.
#[derive(Default)]
struct Collected {
    sessions: Vec<SessionRow>,
    dead_letters: Vec<RejectedEvent>,
}

impl Sink for Collected {
    async fn commit(
        &mut self,
        sessions: &[SessionRow],
        rejected: &[RejectedEvent],
        _properties: HashMap<String, String>,
    ) -> Result<CommitStats, SinkError> {
        self.sessions.extend_from_slice(sessions);
        self.dead_letters.extend_from_slice(rejected);
        Ok(CommitStats::default())
    }

    async fn last_commit_properties(
        &mut self,
        _key: &str,
        _value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        Ok(None)
    }

    async fn last_rejected_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        self.last_commit_properties(key, value).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn session(uuid: &str, start_min: i64, end_min: i64, events: u32, reason: &str) -> SessionRow {
        SessionRow {
            uuid: uuid.into(),
            session_id: format!("{uuid}-{start_min}"),
            start_ms: start_min * 60_000,
            end_ms: end_min * 60_000,
            event_count: events,
            pages: Vec::new(),
            end_reason: reason.into(),
            rule_version: Arc::from("r"),
            attributes: Vec::new(),
        }
    }

    #[test]
    fn splits_merges_and_changed_reasons_are_told_apart() {
        let other = [
            session("a", 0, 50, 6, "inactivity"),
            session("b", 0, 10, 2, "inactivity"),
            session("b", 60, 70, 2, "inactivity"),
            session("c", 0, 5, 1, "inactivity"),
            session("d", 0, 5, 1, "inactivity"),
        ];
        let candidate = [
            session("a", 0, 20, 3, "logout"),
            session("a", 30, 50, 3, "inactivity"),
            session("b", 0, 70, 4, "inactivity"),
            session("c", 0, 5, 1, "logout"),
            session("d", 0, 5, 1, "inactivity"),
            session("e", 0, 5, 1, "inactivity"),
        ];
        let diff = compare(&other, &candidate);
        assert_eq!(diff.same, 1);
        assert_eq!(diff.split.len(), 1);
        assert_eq!((diff.split[0].0.uuid.as_str(), diff.split[0].1.len()), ("a", 2));
        assert_eq!(diff.merged.len(), 1);
        assert_eq!((diff.merged[0].0.len(), diff.merged[0].1.uuid.as_str()), (2, "b"));
        assert_eq!(diff.reason_changed.len(), 1);
        assert_eq!(diff.reason_changed[0].1.end_reason, "logout");
        // A user only one side has: reshaped, not lost.
        assert_eq!(diff.reshaped.len(), 1);
        assert_eq!(diff.reshaped[0].1[0].uuid, "e");
    }
}
