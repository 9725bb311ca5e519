//! A bounded run: records from a source, through the engine and the rules, into
//! the Iceberg tables, with the run's counters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::engine::{Admission, Engine, EngineError, EngineStats};
use std::sync::mpsc;
use std::thread;

use crate::event::{BlockRecord, EventBlock};
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
    /// Time spent releasing events and applying the rules (engine `advance`).
    pub advance_time: Duration,
}

impl RunSummary {
    /// Records read per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_counts(f, self.read, &self.engine, self.rejected, self.sessions_written)?;
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

/// The counters every run summary starts with (bounded and streaming alike;
/// the end-to-end tests read them).
pub(crate) fn write_counts(
    f: &mut std::fmt::Formatter<'_>,
    read: u64,
    engine: &EngineStats,
    rejected: u64,
    sessions_written: u64,
) -> std::fmt::Result {
    writeln!(f, "events read:       {read}")?;
    writeln!(f, "  accepted:        {}", engine.accepted)?;
    writeln!(f, "  late:            {}", engine.late)?;
    writeln!(f, "  duplicate:       {}", engine.duplicates)?;
    writeln!(f, "  rejected:        {rejected}")?;
    writeln!(f, "sessions written:  {sessions_written}")
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

/// Records per block handed from the parsing thread to the engine.
const BLOCK_RECORDS: usize = 8192;
/// Blocks in flight between the threads: enough to keep both busy.
const BLOCKS_IN_FLIGHT: usize = 4;

/// Reads and parses `source` on its own thread, so parsing overlaps the engine.
fn spawn_parser(
    mut source: FileSource,
) -> (mpsc::Receiver<Result<EventBlock, FileSourceError>>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::sync_channel(BLOCKS_IN_FLIGHT);
    let handle = thread::spawn(move || {
        let mut line = Vec::with_capacity(1024);
        loop {
            let mut block = EventBlock::with_capacity(BLOCK_RECORDS);
            let mut done = false;
            while block.len() < BLOCK_RECORDS {
                match source.next_line(&mut line) {
                    Ok(Some(position)) => block.push(0, position, &line),
                    Ok(None) => {
                        done = true;
                        break;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            if (!block.is_empty() && tx.send(Ok(block)).is_err()) || done {
                return;
            }
        }
    });
    (rx, handle)
}

/// Runs `source` to its end: every open session is closed and written.
///
/// Not async: plugin calls block (WASI's synchronous bindings run their own
/// executor), so they must not run on an async task; `runtime` runs the commits.
pub fn run_bounded(
    runtime: &tokio::runtime::Handle,
    source: FileSource,
    engine: &mut Engine,
    rules: &mut dyn RulesRuntime,
    mut output: Output<'_>,
    rule_props: HashMap<String, String>,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let source_name = source.name().to_owned();
    let mut summary = RunSummary::default();
    let mut sessions: Vec<SessionRow> = Vec::new();
    let mut rejected: Vec<RejectedEvent> = Vec::new();
    let mut rules_time = Duration::ZERO;
    let (blocks, parser) = spawn_parser(source);
    let dead_letter = |position, raw: &str, reason: String| RejectedEvent {
        raw: raw.to_owned(),
        reason,
        source: source_name.clone(),
        partition: 0,
        position,
    };
    for block in blocks.iter() {
        let block = block?;
        summary.read += block.len() as u64;
        for record in block.records() {
            match record {
                BlockRecord::Event(_, position, raw, event) => {
                    if let Admission::Late { behind_ms } = engine.offer(0, &event) {
                        let reason = format!("late: {behind_ms} ms beyond the allowed lateness");
                        rejected.push(dead_letter(position, raw, reason));
                    }
                }
                BlockRecord::Rejected(_, position, raw, reason) => {
                    summary.rejected += 1;
                    rejected.push(dead_letter(position, raw, reason.to_string()));
                }
            }
        }
        let t = Instant::now();
        sessions.extend(engine.advance(rules, false)?);
        rules_time += t.elapsed();
        if sessions.len() >= COMMIT_EVERY_SESSIONS {
            commit(runtime, &mut output, &mut sessions, &mut rejected, &rule_props, &mut summary)?;
        }
    }
    // The channel closed: the parser is done (or failed, which it reported above).
    let _ = parser.join();
    let t = Instant::now();
    sessions.extend(engine.advance(rules, true)?);
    rules_time += t.elapsed();
    commit(runtime, &mut output, &mut sessions, &mut rejected, &rule_props, &mut summary)?;
    summary.engine = engine.stats();
    summary.elapsed = started.elapsed();
    summary.advance_time = rules_time;
    Ok(summary)
}

fn commit(
    runtime: &tokio::runtime::Handle,
    output: &mut Output<'_>,
    sessions: &mut Vec<SessionRow>,
    rejected: &mut Vec<RejectedEvent>,
    props: &HashMap<String, String>,
    summary: &mut RunSummary,
) -> Result<(), PipelineError> {
    summary.sessions_written += sessions.len() as u64;
    match output {
        Output::Iceberg(sink) => {
            let stats = runtime.block_on(sink.commit(sessions, rejected, props.clone()))?;
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
