//! A bounded run: a file, through the engine and the rules, into the sink,
//! with the run's counters. Parsing runs on threads of its own.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::ingest::{ingest, Intake};
use super::progress::RunProgress;
use super::summary::RunSummary;
use crate::engine::{Engine, EngineError};
use crate::metrics::{EngineFigures, JobMetrics};
use crate::rules::contract::SessionAttribute;
use crate::rules::RulesRuntime;
use crate::sink::{RejectedEvent, SessionRow, Sink, SinkError};
use crate::source::file::{FileSource, FileSourceError};
use crate::source::parsed::ParsedFile;

/// Sessions staged in memory before a commit: bounds memory on huge inputs
/// while keeping files per commit few.
const COMMIT_EVERY_SESSIONS: usize = 1_000_000;

/// Why a bounded run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
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

/// Records read between two advances of the engine. A user's events then
/// reach the rules in fewer, larger calls, so what a call costs per user (the
/// open session crossing the sandbox, rules that carry attributes decoding
/// them) is paid less often; the sessions do not depend on it.
const ADVANCE_EVERY_RECORDS: u64 = 65_536;

/// Who watches a bounded run: a progress bar, the metrics endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watchers<'a> {
    /// How far the run has got, for a progress bar.
    pub progress: Option<&'a RunProgress>,
    /// The job's metrics, when served (`--metrics-addr`).
    pub metrics: Option<&'a JobMetrics>,
}

/// Runs `source` to its end: every open session is closed and written to
/// `sink`, whose commits carry `properties`.
///
/// Not async: plugin calls block (WASI's synchronous bindings run their own
/// executor), so they must not run on an async task; `runtime` runs the commits.
// One argument per part the job wires in, as `streaming::StreamParts` has fields.
#[allow(clippy::too_many_arguments)]
pub fn run_bounded(
    runtime: &tokio::runtime::Handle,
    source: FileSource,
    intake: &Intake,
    engine: &mut Engine,
    rules: &mut dyn RulesRuntime,
    sink: &mut impl Sink,
    properties: HashMap<String, String>,
    watchers: Watchers<'_>,
) -> Result<RunSummary, BoundedError> {
    let Watchers { progress, metrics } = watchers;
    let started = Instant::now();
    let source_name = source.name().to_owned();
    let bytes_read = source.bytes_read();
    if let Some(progress) = progress {
        progress.start(source.total_bytes());
    }
    let mut summary = RunSummary::default();
    let mut out = Staged { sessions: Vec::new(), rejected: Vec::new(), properties };
    let mut rules_time = Duration::ZERO;
    // The rules do not change during a bounded run: parse for their fields.
    engine.declare_fields(&rules.declarations().fields);
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    let blocks = ParsedFile::start(source, intake.limits, engine.field_paths(), workers);
    let columns = rules.declarations().attributes.clone();
    let mut since_advance = 0u64;
    for block in blocks {
        let block = block?;
        summary.read += block.len() as u64;
        if let Some(progress) = progress {
            progress.advance(block.len() as u64, bytes_read.load(Ordering::Relaxed));
        }
        let rejected = ingest(&block, intake, engine, &source_name, &mut out.rejected, |_| ());
        summary.rejected += rejected.total();
        since_advance += block.len() as u64;
        if since_advance >= ADVANCE_EVERY_RECORDS {
            since_advance = 0;
            let t = Instant::now();
            out.sessions.extend(engine.advance(rules, false)?);
            rules_time += t.elapsed();
        }
        if let Some(metrics) = metrics {
            metrics.observe_rejected(rejected.by_class());
            metrics.observe_batch(EngineFigures::of(engine), block.len() as u64);
        }
        if out.sessions.len() >= COMMIT_EVERY_SESSIONS {
            out.commit(runtime, sink, &columns, &mut summary, metrics)?;
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    let t = Instant::now();
    out.sessions.extend(engine.advance(rules, true)?);
    rules_time += t.elapsed();
    out.commit(runtime, sink, &columns, &mut summary, metrics)?;
    summary.engine = engine.stats();
    summary.elapsed = started.elapsed();
    summary.advance_time = rules_time;
    Ok(summary)
}

/// Output waiting for the next commit.
struct Staged {
    sessions: Vec<SessionRow>,
    rejected: Vec<RejectedEvent>,
    properties: HashMap<String, String>,
}

impl Staged {
    fn commit(
        &mut self,
        runtime: &tokio::runtime::Handle,
        sink: &mut impl Sink,
        columns: &[SessionAttribute],
        summary: &mut RunSummary,
        metrics: Option<&JobMetrics>,
    ) -> Result<(), BoundedError> {
        summary.sessions_written += self.sessions.len() as u64;
        runtime.block_on(sink.add_columns(columns))?;
        if let Some(metrics) = metrics {
            metrics.observe_output(&self.sessions, &self.rejected);
        }
        let stats = runtime.block_on(sink.commit(
            &self.sessions,
            &self.rejected,
            self.properties.clone(),
        ))?;
        summary.commits += 1;
        summary.session_files += stats.session_files as u64;
        self.sessions.clear();
        self.rejected.clear();
        Ok(())
    }
}
