//! Benchmark: Kafka to Iceberg on a pre-filled topic (1,000,000 events, 4
//! partitions), against a bare rdkafka consumer reading the same topic from the
//! same broker in the same run; Kafka in, Kafka out (`--sink kafka`: sessions
//! to a topic, no table), against a bare loop that consumes every event and
//! produces it to another topic; the latency from a session closing to its
//! Iceberg commit; and peak memory with 1,000,000 open sessions in state.
//!
//!     guest/build.sh && cargo bench -p sessionize --bench kafka
//!
//! Starts its own broker (memory storage) on loopback: Tansu, or nisshi with
//! `BENCH_BROKER=nisshi`; `TANSU_BIN` / `NISSHI_BIN` point at the binaries
//! (tests/bench/run.sh installs Tansu into ~/.cache/sessionize/tansu).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sessionize::checkpoint::Checkpointer;
use sessionize::engine::{Engine, EngineConfig};
use sessionize::event::Event;
use sessionize::job::streaming::{run_streaming, StreamParts};
use sessionize::rules::lifecycle::{RulesLifecycle, RulesSlot};
use sessionize::rules::{ComponentLoader, SandboxLimits};
use sessionize::sink::topic::{SessionsTopic, TopicConfig};
use sessionize::sink::NoTable;
use sessionize::source::file::FileSource;
use sessionize::source::generate::generate;
use sessionize::source::kafka::{KafkaConfig, KafkaSource};
use sessionize::state::{StagedOutput, StateStore};
use sessionize::tools::produce::{ensure_topic, produce};

const TOPIC: &str = "bench";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--open-sessions") {
        return open_sessions();
    }
    let events: u64 =
        std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("sessionize-kafka-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = 19_000 + (std::process::id() % 1000) as u16;
    let servers = format!("127.0.0.1:{port}");
    let mut broker = common::start_broker(&dir, port)?;
    let outcome = bench(&servers, &dir, events);
    let _ = broker.kill();
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    let status = Command::new(std::env::current_exe()?).arg("--open-sessions").status()?;
    if !status.success() {
        bail!("open-sessions run failed");
    }
    Ok(())
}

fn bench(servers: &str, dir: &Path, events: u64) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(ensure_topic(servers, TOPIC, 4))?;
    let config = common::bench_events(events);
    let mut lines = Vec::new();
    generate(&config, &mut lines)?;
    let started = Instant::now();
    let sent = produce(servers, TOPIC, FileSource::from_bytes("bench", lines), false)?;
    println!("produced {sent} events in {:.2?}", started.elapsed());

    let bare_before = bare_consumer(servers, sent)?;
    println!("bare rdkafka consumer: {bare_before:.0} events/s");
    let pipeline = run_pipeline(&runtime, servers, dir)?;
    let bare_after = bare_consumer(servers, sent)?;
    println!("bare rdkafka consumer again: {bare_after:.0} events/s");
    let bare = bare_before.max(bare_after);
    println!("pipeline: {:.0}% of the faster bare run", 100.0 * pipeline / bare);

    let transform = bare_transform(servers, sent)?;
    println!("bare consume-and-produce loop: {transform:.0} events/s");
    let to_topic = run_to_topic(&runtime, servers, dir)?;
    println!("Kafka in, Kafka out: {:.0}% of the bare loop", 100.0 * to_topic / transform);
    Ok(())
}

/// A consumer configured as the job's, assigned every partition of the
/// benchmark's topic from its first record.
fn consumer_from_the_beginning(servers: &str, group: &str) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..4 {
        assignment.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// The ceiling: a bare consumer, configured as the job's, reading the same topic.
fn bare_consumer(servers: &str, sent: u64) -> Result<f64> {
    let consumer = consumer_from_the_beginning(servers, "bare")?;
    let started = Instant::now();
    let mut read = 0u64;
    while read < sent {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => bail!("bare consumer: {e}"),
            None => bail!("bare consumer stalled at {read}"),
        }
    }
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

/// The ceiling of a stream transform: consume every event and produce it, as
/// it came, to another topic (idempotent producer, `acks=all`, as the job's),
/// until every record is acknowledged.
fn bare_transform(servers: &str, sent: u64) -> Result<f64> {
    let consumer = consumer_from_the_beginning(servers, "bare-transform")?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let started = Instant::now();
    let mut read = 0u64;
    while read < sent {
        let message = match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => message,
            Some(Err(e)) => bail!("bare transform: {e}"),
            None => bail!("bare transform stalled at {read}"),
        };
        let mut record = BaseRecord::<[u8], [u8]>::to("bench-copy")
            .payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        while let Err((e, again)) = producer.send(record) {
            if !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::QueueFull))
            {
                bail!("bare transform: {e}");
            }
            producer.poll(Duration::from_millis(10));
            record = again;
        }
        producer.poll(Duration::ZERO);
        read += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

/// The job with `--sink kafka`: the same rules, state store and checkpoints,
/// its sessions to a topic and no table.
fn run_to_topic(runtime: &tokio::runtime::Runtime, servers: &str, dir: &Path) -> Result<f64> {
    let mut rules = default_rules()?;
    let topic = runtime.block_on(SessionsTopic::connect(TopicConfig {
        servers: servers.into(),
        sessions: "bench-sessions".into(),
        dead_letters: None,
    }))?;
    let _ = std::fs::remove_dir_all(dir.join("topic-state"));
    let store = StateStore::open(&dir.join("topic-state"))?;
    let mut sink = NoTable::default();
    let (checkpointer, resumed) = runtime.block_on(Checkpointer::recover_publishing(
        store,
        &mut sink,
        EngineConfig::default(),
        Some(topic),
    ))?;
    let kafka = KafkaConfig {
        servers: servers.into(),
        topic: TOPIC.into(),
        group: "sessionize-to-topic".into(),
    };
    let source = KafkaSource::connect(&kafka, &Default::default(), Duration::from_secs(10))?;
    let parts = StreamParts::whole(
        source,
        resumed.engine,
        checkpointer,
        &mut rules,
        &mut sink,
        Default::default(),
    );
    let stream = common::stream_config(true);
    let started = Instant::now();
    let summary =
        run_streaming(runtime.handle(), parts, stream, BTreeMap::new(), &AtomicBool::new(false))?;
    let rate = summary.read as f64 / started.elapsed().as_secs_f64();
    println!(
        "Kafka in, Kafka out: {rate:.0} events/s, {} sessions to the topic, {} checkpoints",
        summary.sessions_written, summary.checkpoints
    );
    Ok(rate)
}

/// The default rules component, loaded as a streaming job loads its rules.
fn default_rules() -> Result<RulesLifecycle> {
    let component = common::default_component();
    let rules = Arc::new(ComponentLoader::new()?)
        .load_file(&component, &common::default_settings(), SandboxLimits::default())
        .with_context(|| format!("{}: run guest/build.sh", component.display()))?;
    Ok(RulesLifecycle::new(RulesSlot::new(rules)))
}

fn run_pipeline(runtime: &tokio::runtime::Runtime, servers: &str, dir: &Path) -> Result<f64> {
    // The pipeline: component rules, state store, checkpoints, Iceberg.
    let mut rules = default_rules()?;
    let mut job = common::FreshJob::new(runtime, servers, TOPIC, dir)?;
    let stream = common::stream_config(true);
    let parts = StreamParts::whole(
        job.source,
        job.resumed.engine,
        job.checkpointer,
        &mut rules,
        &mut job.sink,
        Default::default(),
    );
    let started = Instant::now();
    let summary =
        run_streaming(runtime.handle(), parts, stream, BTreeMap::new(), &AtomicBool::new(false))?;
    let rate = summary.read as f64 / started.elapsed().as_secs_f64();
    println!(
        "pipeline: {rate:.0} events/s, {} sessions, {} checkpoints \
         every {:?}, sessions visible at most {:.2?} after closing",
        summary.sessions_written,
        summary.checkpoints,
        stream.checkpoint_interval,
        summary.max_visibility_latency
    );
    Ok(rate)
}

/// 1,000,000 users with one event each, all open, checkpointed into the store.
fn open_sessions() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sessionize-open-{}", std::process::id()));
    let settings = common::default_settings();
    let component = common::default_component();
    let mut rules = Arc::new(ComponentLoader::new()?).load_file(
        &component,
        &settings,
        SandboxLimits::default(),
    )?;
    let mut engine = Engine::new(EngineConfig::default());
    let base = 1_735_689_600_000i64;
    let pages = ["home", "search", "results", "hotel_details"];
    for i in 0..1_000_000i64 {
        let uuid = format!("{:032x}", i * 7919);
        let event = Event {
            uuid: uuid.as_str().into(),
            event_id: None,
            timestamp_ms: base + i,
            page_name: Some(pages[(i % 4) as usize].into()),
            event_name: None,
            event_type: None,
        };
        engine.offer(0, &event);
    }
    // 20 minutes later on the clock: every event released, every session still open.
    engine.offer(
        0,
        &Event {
            uuid: "clock".into(),
            event_id: None,
            timestamp_ms: base + 20 * 60_000 + 1_000_000,
            page_name: None,
            event_name: None,
            event_type: None,
        },
    );
    let closed = engine.advance(&mut rules, false)?;
    println!("  engine alone: peak {} MiB", common::peak_rss_mib());
    let changes = engine.take_changes()?;
    let open = changes.upserts.iter().filter(|user| user.state.is_some()).count();
    let store = StateStore::open(&dir)?;
    let started = Instant::now();
    store.write_checkpoint(&changes, &Default::default(), &StagedOutput::default())?;
    let write = started.elapsed();
    drop(changes);
    println!(
        "open sessions: {open} in state ({} closed), checkpoint write {:.2?}, state file {} MiB, \
         peak memory {} MiB",
        closed.len(),
        write,
        std::fs::metadata(dir.join("state.redb"))?.len() >> 20,
        common::peak_rss_mib()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
