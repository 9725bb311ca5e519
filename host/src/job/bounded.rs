//! A bounded run: a file, through the engines and the rules, into the sink,
//! with the run's counters.
//!
//! Parsing runs on threads of its own ([`ParsedFile`]), and so do the engines:
//! the users are split over them by a hash of their uuid ([`UserSplit`]), one
//! engine and one instance of the rules each. Every engine reads every block,
//! admits its own users' events and only times the others', so lateness and
//! the moments events are released are those of one engine over the whole
//! file, and the sessions do not depend on how many engines there are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::{self, ScopedJoinHandle};
use std::time::Instant;

use super::ingest::{ingest, Admit, Intake, Rejected};
use super::progress::RunProgress;
use super::summary::RunSummary;
use crate::clock::wall_clock_ms;
use crate::engine::{Admission, Engine, EngineError, EngineStats};
use crate::event::{Event, EventBlock, Fields, UserSplit};
use crate::metrics::{EngineFigures, JobMetrics};
use crate::rules::contract::SessionAttribute;
use crate::rules::RulesRuntime;
use crate::sink::{RejectedEvent, SessionRow, Sink, SinkError};
use crate::source::file::{FileSource, FileSourceError};
use crate::source::parsed::ParsedFile;

/// Sessions staged in memory before a commit: bounds memory on huge inputs
/// while keeping files per commit few.
const COMMIT_EVERY_SESSIONS: usize = 1_000_000;

/// Records read between two advances of the engine. A user's events then
/// reach the rules in fewer, larger calls, so what a call costs per user (the
/// open session crossing the sandbox, rules that carry attributes decoding
/// them) is paid less often; the sessions do not depend on it.
const ADVANCE_EVERY_RECORDS: u64 = 65_536;

/// Parsed blocks queued to each engine's thread.
const QUEUED_BLOCKS: usize = 4;

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
    /// The run was given no engine to run.
    #[error("a bounded run needs at least one engine")]
    NoEngine,
    /// A thread of the run (an engine's, the feeder's) could not be started.
    #[error("starting the run's threads")]
    Thread(#[source] std::io::Error),
}

/// Who watches a bounded run: a progress bar, the metrics endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watchers<'a> {
    /// How far the run has got, for a progress bar.
    pub progress: Option<&'a RunProgress>,
    /// The job's metrics, when served (`--metrics-addr`).
    pub metrics: Option<&'a JobMetrics>,
}

/// One engine of a bounded run and the rules it calls: it takes the users
/// its share of the split gives it.
pub struct Shard<'a> {
    /// The engine.
    pub engine: &'a mut Engine,
    /// Its own instance of the rules; every shard's are the same rules.
    pub rules: &'a mut dyn RulesRuntime,
}

/// Runs `source` to its end over `shards`: every open session is closed and
/// written to `sink`, whose commits carry `properties`.
///
/// Not async: plugin calls block (WASI's synchronous bindings run their own
/// executor), so they must not run on an async task; `runtime` runs the commits.
pub fn run_bounded(
    runtime: &tokio::runtime::Handle,
    source: FileSource,
    intake: &Intake,
    mut shards: Vec<Shard<'_>>,
    sink: &mut impl Sink,
    properties: HashMap<String, String>,
    watchers: Watchers<'_>,
) -> Result<RunSummary, BoundedError> {
    let started = Instant::now();
    for shard in &mut shards {
        // The rules do not change during a bounded run: parse for their fields.
        shard.engine.declare_fields(&shard.rules.declarations().fields);
    }
    let first = shards.first().ok_or(BoundedError::NoEngine)?;
    let (fields, columns) =
        (first.engine.field_paths(), first.rules.declarations().attributes.clone());
    let source_name = source.name().to_owned();
    let bytes_read = source.bytes_read();
    if let Some(progress) = watchers.progress {
        progress.start(source.total_bytes());
    }
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    let split = shards.len() > 1;
    let blocks = ParsedFile::start(source, intake.limits, fields, workers, split);
    let mut output =
        Output::new(runtime, sink, &columns, properties, watchers.metrics, shards.len());
    let lane = Lane { intake, source: &source_name };
    let stop = AtomicBool::new(false);
    let feeding = Feeding { bytes_read: &bytes_read, progress: watchers.progress, stop: &stop };
    let (read, ends) = thread::scope(|scope| -> Result<_, BoundedError> {
        let (results, from_shards) = mpsc::channel();
        let (mut feeds, mut threads) = (Vec::new(), Vec::new());
        let count = shards.len();
        for (index, shard) in shards.into_iter().enumerate() {
            let (feed, blocks) = mpsc::sync_channel(QUEUED_BLOCKS);
            let (lane, results) = (lane, results.clone());
            let split = UserSplit::new(index, count);
            let thread = thread::Builder::new()
                .name(format!("engine-{index}"))
                .spawn_scoped(scope, move || lane.run(shard, split, index, &blocks, &results))
                .map_err(BoundedError::Thread)?;
            feeds.push(feed);
            threads.push(thread);
        }
        drop(results);
        // Feeding on a thread of its own: this one takes the output in as it
        // comes, so commits and metrics do not wait for the next block.
        let feeder = thread::Builder::new()
            .name("feeder".into())
            .spawn_scoped(scope, move || feeding.feed(blocks, feeds))
            .map_err(BoundedError::Thread)?;
        let mut taken = Ok(());
        for result in from_shards {
            taken = output.take(result);
            if taken.is_err() {
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        let ends = join(threads);
        let read = feeder.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        taken?;
        Ok((read?, ends?))
    })?;
    if let Some(progress) = watchers.progress {
        progress.finish();
    }
    output.commit()?;
    let mut summary = output.summary;
    summary.read = read;
    for stats in ends {
        summary.engine += stats;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Waits for every shard: what each did, or the first error one met.
fn join(
    threads: Vec<ScopedJoinHandle<'_, Result<Option<EngineStats>, EngineError>>>,
) -> Result<Vec<EngineStats>, BoundedError> {
    let mut ends = Vec::with_capacity(threads.len());
    let mut failed = None;
    for thread in threads {
        match thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
            Ok(Some(end)) => ends.push(end),
            Ok(None) => {}
            Err(error) => {
                failed.get_or_insert(error);
            }
        }
    }
    match failed {
        Some(error) => Err(error.into()),
        None => Ok(ends),
    }
}

/// A parsed block and the wall-clock time it is judged at, the same for
/// every shard.
struct TimedBlock {
    block: EventBlock,
    now_ms: i64,
}

/// What goes to a shard's thread.
enum Feed {
    /// The next block of the file.
    Block(Arc<TimedBlock>),
    /// The file has ended: close every session.
    End,
}

/// What a shard's thread sends after each block.
struct ShardOutput {
    index: usize,
    /// Records of the file it has gone through since its last output.
    records: u64,
    sessions: Vec<SessionRow>,
    dead_letters: Vec<RejectedEvent>,
    rejected: Rejected,
    figures: EngineFigures,
}

impl ShardOutput {
    fn new(index: usize) -> Self {
        Self {
            index,
            records: 0,
            sessions: Vec::new(),
            dead_letters: Vec::new(),
            rejected: Rejected::default(),
            figures: EngineFigures::default(),
        }
    }
}

/// What every shard's thread shares.
#[derive(Clone, Copy)]
struct Lane<'a> {
    intake: &'a Intake,
    source: &'a str,
}

impl Lane<'_> {
    /// A shard's thread: ingests every block, advances its engine every
    /// [`ADVANCE_EVERY_RECORDS`] records and at the end, and sends what it
    /// produced. `None` when the feed went away before the end (the run
    /// failed elsewhere).
    fn run(
        self,
        shard: Shard<'_>,
        split: UserSplit,
        index: usize,
        blocks: &Receiver<Feed>,
        results: &Sender<ShardOutput>,
    ) -> Result<Option<EngineStats>, EngineError> {
        let Shard { engine, rules } = shard;
        let mut since_advance = 0u64;
        let mut output = ShardOutput::new(index);
        loop {
            let timed = match blocks.recv() {
                Ok(Feed::Block(timed)) => timed,
                Ok(Feed::End) => break,
                Err(mpsc::RecvError) => return Ok(None),
            };
            let mut split_engine = SplitEngine { engine: &mut *engine, split };
            // A fresh output per block: its counts are this block's.
            output.rejected = ingest(
                &timed.block,
                timed.now_ms,
                self.intake,
                &mut split_engine,
                self.source,
                &mut output.dead_letters,
                |_| (),
            );
            output.records = timed.block.len() as u64;
            since_advance += output.records;
            if since_advance >= ADVANCE_EVERY_RECORDS {
                since_advance = 0;
                output.sessions.extend(engine.advance(rules, false)?);
            }
            // After every block, so the metrics follow the run.
            output.figures = EngineFigures::of(engine);
            // The receiver is gone only when the run failed elsewhere.
            let _ = results.send(std::mem::replace(&mut output, ShardOutput::new(index)));
        }
        output.sessions.extend(engine.advance(rules, true)?);
        output.figures = EngineFigures::of(engine);
        let _ = results.send(output);
        Ok(Some(engine.stats()))
    }
}

/// One shard's engine as ingest sees it: it admits its own users' events
/// and times everyone else's.
struct SplitEngine<'a> {
    engine: &'a mut Engine,
    split: UserSplit,
}

impl Admit for SplitEngine<'_> {
    fn limit_clocks_to(&mut self, now_ms: i64) {
        self.engine.limit_clocks_to(now_ms);
    }

    fn split(&self) -> UserSplit {
        self.split
    }

    fn observe_time(&mut self, partition: i32, timestamp_ms: i64) {
        self.engine.observe_time(partition as usize, timestamp_ms);
    }

    fn admit(&mut self, p: i32, event: &Event<'_>, fields: Fields<'_>) -> Option<Admission> {
        Admit::admit(self.engine, p, event, fields)
    }
}

/// What the thread that feeds the shards watches and reports to.
#[derive(Clone, Copy)]
struct Feeding<'a> {
    bytes_read: &'a AtomicU64,
    progress: Option<&'a RunProgress>,
    /// Set when the run failed elsewhere: feed no more.
    stop: &'a AtomicBool,
}

impl Feeding<'_> {
    /// Hands each block of `blocks` to every shard, in the file's order, then
    /// ends each feed with [`Feed::End`], unless a shard stopped early or the
    /// run is stopped (a shard whose feed just closes closes no session).
    /// Returns the records read.
    fn feed(
        self,
        blocks: ParsedFile,
        feeds: Vec<SyncSender<Feed>>,
    ) -> Result<u64, FileSourceError> {
        let mut read = 0;
        for block in blocks {
            let block = block?;
            if self.stop.load(Ordering::Relaxed) {
                return Ok(read);
            }
            read += block.len() as u64;
            if let Some(progress) = self.progress {
                progress.advance(block.len() as u64, self.bytes_read.load(Ordering::Relaxed));
            }
            let timed = Arc::new(TimedBlock { block, now_ms: wall_clock_ms() });
            for feed in &feeds {
                if feed.send(Feed::Block(timed.clone())).is_err() {
                    return Ok(read);
                }
            }
        }
        for feed in &feeds {
            // A shard that stopped early says why when it is joined.
            let _ = feed.send(Feed::End);
        }
        Ok(read)
    }
}

/// Where the shards' output goes: staged, then committed to the sink in
/// batches; the run's counters and metrics on the way.
struct Output<'r, S> {
    runtime: &'r tokio::runtime::Handle,
    sink: &'r mut S,
    columns: &'r [SessionAttribute],
    properties: HashMap<String, String>,
    metrics: Option<&'r JobMetrics>,
    sessions: Vec<SessionRow>,
    dead_letters: Vec<RejectedEvent>,
    /// Each shard's latest figures, for the metrics.
    figures: Vec<EngineFigures>,
    /// Records each shard has gone through, and the least of them the
    /// metrics have counted as read.
    gone_through: Vec<u64>,
    counted: u64,
    summary: RunSummary,
}

impl<'r, S: Sink> Output<'r, S> {
    fn new(
        runtime: &'r tokio::runtime::Handle,
        sink: &'r mut S,
        columns: &'r [SessionAttribute],
        properties: HashMap<String, String>,
        metrics: Option<&'r JobMetrics>,
        shards: usize,
    ) -> Self {
        let unknown = EngineFigures { watermark: i64::MIN, ..EngineFigures::default() };
        Self {
            runtime,
            sink,
            columns,
            properties,
            metrics,
            sessions: Vec::new(),
            dead_letters: Vec::new(),
            figures: vec![unknown; shards],
            gone_through: vec![0; shards],
            counted: 0,
            summary: RunSummary::default(),
        }
    }

    /// Takes in a shard's output; commits once enough sessions are staged.
    fn take(&mut self, result: ShardOutput) -> Result<(), BoundedError> {
        self.summary.rejected += result.rejected.total();
        if let Some(metrics) = self.metrics {
            metrics.observe_rejected(result.rejected.by_class());
            if let (Some(figures), Some(through)) =
                (self.figures.get_mut(result.index), self.gone_through.get_mut(result.index))
            {
                *figures = result.figures;
                *through += result.records;
            }
            // Read, for the metrics, is what every shard has gone through: with
            // one engine the outcomes then add up to it at every scrape.
            let read = self.gone_through.iter().copied().min().unwrap_or(0);
            let newly = read.saturating_sub(self.counted);
            self.counted = read;
            metrics.observe_batch(EngineFigures::total(&self.figures), newly);
        }
        self.sessions.extend(result.sessions);
        self.dead_letters.extend(result.dead_letters);
        if self.sessions.len() >= COMMIT_EVERY_SESSIONS {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits what is staged.
    fn commit(&mut self) -> Result<(), BoundedError> {
        let summary = &mut self.summary;
        summary.sessions_written += self.sessions.len() as u64;
        self.runtime.block_on(self.sink.add_columns(self.columns))?;
        if let Some(metrics) = self.metrics {
            metrics.observe_output(&self.sessions, &self.dead_letters);
        }
        // The shards' dead letters interleave; the table gets them in input order.
        self.dead_letters.sort_by_key(|d| (d.partition, d.position));
        let stats = self.runtime.block_on(self.sink.commit(
            &self.sessions,
            &self.dead_letters,
            self.properties.clone(),
        ))?;
        summary.commits += 1;
        summary.session_files += stats.session_files as u64;
        self.sessions.clear();
        self.dead_letters.clear();
        Ok(())
    }
}
