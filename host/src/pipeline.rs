//! A bounded run: records from a source, through the engine and the rules, into
//! the Iceberg tables, with the run's counters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::engine::{Admission, Engine, EngineError, EngineStats};
use crate::event;
use crate::output::{RejectedEvent, SessionRow};
use crate::plugin::RulesRuntime;
use crate::sink::iceberg::{IcebergSink, SinkError};
use crate::source::file::{FileSource, FileSourceError};

/// Sessions staged in memory before a commit: bounds memory on huge inputs
/// while keeping files per commit few.
const COMMIT_EVERY_SESSIONS: usize = 1_000_000;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input could not be read.
    #[error(transparent)]
    Source(#[from] FileSourceError),
    /// The rules failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The output could not be written.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Non-blank records read.
    pub read: u64,
    /// The engine's counters (accepted, late, duplicates, ...).
    pub engine: EngineStats,
    /// Records that were not valid events.
    pub rejected: u64,
    /// Session rows written.
    pub sessions_written: u64,
    /// Iceberg commits made.
    pub commits: u64,
    /// Data files written to the sessions table.
    pub session_files: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time spent inside the rules (plugin calls).
    pub rules_time: Duration,
}

impl RunSummary {
    /// Records read per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "events read:       {}", self.read)?;
        writeln!(f, "  accepted:        {}", self.engine.accepted)?;
        writeln!(f, "  late:            {}", self.engine.late)?;
        writeln!(f, "  duplicate:       {}", self.engine.duplicates)?;
        writeln!(f, "  rejected:        {}", self.rejected)?;
        writeln!(f, "sessions written:  {}", self.sessions_written)?;
        writeln!(f, "iceberg commits:   {} ({} data files)", self.commits, self.session_files)?;
        writeln!(f, "plugin calls:      {}", self.engine.plugin_calls)?;
        write!(
            f,
            "elapsed:           {:.2?} ({:.0} events/s)",
            self.elapsed,
            self.events_per_second()
        )
    }
}

/// Where the run's rows go; the Iceberg tables in production, memory in tests
/// of the engine alone.
pub enum Output<'a> {
    /// Commit to Iceberg.
    Iceberg(&'a mut IcebergSink),
    /// Keep everything in memory.
    Memory {
        /// Sessions written.
        sessions: &'a mut Vec<SessionRow>,
        /// Rejected records.
        rejected: &'a mut Vec<RejectedEvent>,
    },
}

/// Runs `source` to its end: every open session is closed and written.
pub async fn run_bounded(
    source: &mut FileSource,
    engine: &mut Engine,
    rules: &mut dyn RulesRuntime,
    mut output: Output<'_>,
    rule_props: HashMap<String, String>,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let mut summary = RunSummary::default();
    let mut line = Vec::with_capacity(1024);
    let mut sessions: Vec<SessionRow> = Vec::new();
    let mut rejected: Vec<RejectedEvent> = Vec::new();
    let mut since_advance = 0usize;
    let advance_every = 16_384;
    let mut rules_time = Duration::ZERO;
    while let Some(position) = source.next_line(&mut line)? {
        summary.read += 1;
        match event::parse(&line) {
            Ok(event) => match engine.offer(0, &event) {
                Admission::Accepted => since_advance += 1,
                Admission::Duplicate => {}
                Admission::Late { behind_ms } => rejected.push(RejectedEvent {
                    raw: String::from_utf8_lossy(&line).into_owned(),
                    reason: format!("late: {behind_ms} ms beyond the allowed lateness"),
                    source: source.name().to_owned(),
                    partition: 0,
                    position,
                }),
            },
            Err(reason) => {
                summary.rejected += 1;
                rejected.push(RejectedEvent {
                    raw: String::from_utf8_lossy(&line).into_owned(),
                    reason: reason.to_string(),
                    source: source.name().to_owned(),
                    partition: 0,
                    position,
                });
            }
        }
        if since_advance >= advance_every {
            since_advance = 0;
            let t = Instant::now();
            sessions.extend(engine.advance(rules, false)?);
            rules_time += t.elapsed();
            if sessions.len() >= COMMIT_EVERY_SESSIONS {
                commit(&mut output, &mut sessions, &mut rejected, &rule_props, &mut summary)
                    .await?;
            }
        }
    }
    let t = Instant::now();
    sessions.extend(engine.advance(rules, true)?);
    rules_time += t.elapsed();
    commit(&mut output, &mut sessions, &mut rejected, &rule_props, &mut summary).await?;
    summary.engine = engine.stats();
    summary.elapsed = started.elapsed();
    summary.rules_time = rules_time;
    Ok(summary)
}

async fn commit(
    output: &mut Output<'_>,
    sessions: &mut Vec<SessionRow>,
    rejected: &mut Vec<RejectedEvent>,
    props: &HashMap<String, String>,
    summary: &mut RunSummary,
) -> Result<(), PipelineError> {
    summary.sessions_written += sessions.len() as u64;
    match output {
        Output::Iceberg(sink) => {
            let stats = sink.commit(sessions, rejected, props.clone()).await?;
            summary.commits += 1;
            summary.session_files += stats.session_files as u64;
            sessions.clear();
            rejected.clear();
        }
        Output::Memory { sessions: all, rejected: all_rejected } => {
            all.append(sessions);
            all_rejected.append(rejected);
        }
    }
    Ok(())
}
