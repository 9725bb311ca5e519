//! Benchmark: hot swaps under load. A streaming job reads a pre-filled topic
//! (4 partitions) into Iceberg while the rules are swapped back and forth
//! between the default and the logout rules, through the same request channel
//! the admin endpoint uses. Reports how long the event flow stood still per
//! swap (compiling excluded: it runs on its own thread) and the throughput
//! before, during and after the swaps.
//!
//!     guest/build.sh && cargo bench -p sessionize --bench swap
//!
//! `BENCH_EVENTS` (default 8,000,000) must outlast the run; `BENCH_SWAPS`
//! (default 100) sets the number of swaps. Starts its own Tansu broker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

mod common;

use anyhow::{anyhow, bail, Context, Result};
use sessionize::job::streaming::{run_streaming, StreamParts};
use sessionize::job::{Stalls, StreamSummary};
use sessionize::rules::lifecycle::{
    Candidate, RulesAction, RulesLifecycle, RulesLoader, RulesRequest, RulesSlot,
};
use sessionize::rules::{ComponentLoader, SandboxLimits};
use sessionize::source::file::FileSource;
use sessionize::source::generate::generate;
use sessionize::tools::produce::{ensure_topic, produce};

const TOPIC: &str = "swap-bench";
/// Length of the throughput windows before and after the swaps.
const WINDOW: Duration = Duration::from_secs(4);

fn main() -> Result<()> {
    let events: u64 = env_number("BENCH_EVENTS", 8_000_000);
    let swaps: u64 = env_number("BENCH_SWAPS", 100);
    let dir = std::env::temp_dir().join(format!("sessionize-swap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = 18_000 + (std::process::id() % 1000) as u16;
    let servers = format!("127.0.0.1:{port}");
    let mut broker = common::start_broker(&dir, port)?;
    let outcome = bench(&servers, &dir, events, swaps);
    let _ = broker.kill();
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Sends admin requests to the job and waits for the answers.
struct Admin(mpsc::Sender<RulesRequest>);

impl Admin {
    fn ask(&self, action: RulesAction) -> Result<serde_json::Value> {
        let (request, answer) = RulesRequest::new(action, Duration::from_secs(600));
        self.0.send(request).map_err(|_| anyhow!("the job has stopped"))?;
        answer.blocking_recv().map_err(|_| anyhow!("the job has stopped"))?.map_err(|e| anyhow!(e))
    }

    /// When, and how many events the job had read by then.
    fn progress(&self) -> Result<(Instant, u64)> {
        let status = self.ask(RulesAction::Status)?;
        let read = status["events_read"].as_u64().context("status without events_read")?;
        Ok((Instant::now(), read))
    }
}

fn rate(from: (Instant, u64), to: (Instant, u64)) -> f64 {
    (to.1 - from.1) as f64 / to.0.duration_since(from.0).as_secs_f64()
}

fn bench(servers: &str, dir: &Path, events: u64, swaps: u64) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(ensure_topic(servers, TOPIC, 4))?;
    let mut lines = Vec::new();
    generate(&common::bench_events(events), &mut lines)?;
    let started = Instant::now();
    let sent = produce(servers, TOPIC, FileSource::from_bytes("bench", lines), false)?;
    println!("produced {sent} events in {:.2?}", started.elapsed());

    let default_rules = common::default_component();
    let logout_rules = default_rules.with_file_name("logout_rules.wasm");
    let loader = RulesLoader::new(
        Arc::new(ComponentLoader::new()?),
        common::default_settings(),
        SandboxLimits::default(),
    );
    let rules = RulesSlot::new(
        loader
            .load_file(&default_rules)
            .with_context(|| format!("{}: run guest/build.sh", default_rules.display()))?,
    );
    let job = common::FreshJob::new(&runtime, servers, TOPIC, dir)?;
    let stream = common::stream_config(false);
    let (requests_tx, requests) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = runtime.handle().clone();
    let job = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<StreamSummary> {
            let mut job = job;
            // Compiling runs beside the job; its time is reported, not counted as pause.
            let mut rules = RulesLifecycle::new(rules).accepting(requests).loading_with(loader);
            let parts = StreamParts::whole(
                job.source,
                job.resumed.engine,
                job.checkpointer,
                &mut rules,
                &mut job.sink,
                Default::default(),
            );
            Ok(run_streaming(&handle, parts, stream, BTreeMap::new(), &stop)?)
        })
    };
    let admin = Admin(requests_tx);
    let measured = drive(&admin, &[logout_rules, default_rules], swaps, sent);
    stop.store(true, Ordering::Relaxed);
    let summary = job.join().map_err(|_| anyhow!("the job panicked"))??;
    let (before, during, after) = measured?;
    report(&summary, &summary.candidate_compiles, before, during, after);
    Ok(())
}

/// Throughput before, during and after `swaps` swaps, alternating `versions`.
fn drive(admin: &Admin, versions: &[PathBuf], swaps: u64, sent: u64) -> Result<(f64, f64, f64)> {
    // Warm up: the consumer fetching at full speed, the first checkpoints done.
    loop {
        let (_, read) = admin.progress()?;
        if read >= sent / 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = admin.progress()?;
    std::thread::sleep(WINDOW);
    let swaps_start = admin.progress()?;
    for i in 0..swaps {
        let path = &versions[i as usize % versions.len()];
        admin
            .ask(RulesAction::Deploy(Candidate::File(path.clone())))
            .with_context(|| format!("deploying {}", path.display()))?;
    }
    let swaps_end = admin.progress()?;
    println!(
        "{swaps} swaps took {:.2?} ({} events read by then)",
        swaps_end.0.duration_since(swaps_start.0),
        swaps_end.1
    );
    std::thread::sleep(WINDOW);
    let end = admin.progress()?;
    if end.1 >= sent {
        bail!(
            "the topic ran dry before the last window ended ({} of {sent} events read): \
             raise BENCH_EVENTS",
            end.1
        );
    }
    Ok((rate(start, swaps_start), rate(swaps_start, swaps_end), rate(swaps_end, end)))
}

fn report(summary: &StreamSummary, compile: &Stalls, before: f64, during: f64, after: f64) {
    println!("swaps: {} (compiling, off the event loop: {compile})", summary.swap_pauses.count());
    println!("  event flow paused by the swap (dry run + switch): {}", summary.swap_pauses);
    println!("  with the checkpoint the swap waits for:           {}", summary.swap_stalls);
    println!(
        "  every checkpoint of the run ({}):                 {}",
        summary.checkpoint_stalls.count(),
        summary.checkpoint_stalls
    );
    println!(
        "throughput: {before:.0} events/s before, {during:.0} during, {after:.0} after \
         ({:.0}% of before)",
        100.0 * after / before
    );
}
