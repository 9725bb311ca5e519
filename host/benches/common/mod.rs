//! What the benchmarks share: the data set, the rules, the memory probe.
// Each benchmark uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use sessionize::checkpoint::{Checkpointer, Resumed};
use sessionize::engine::EngineConfig;
use sessionize::job::streaming::{FaultPolicy, StreamConfig};
use sessionize::job::Intake;
use sessionize::rules::contract::Settings;
use sessionize::sink::iceberg::{IcebergSink, SinkConfig};
use sessionize::source::generate::GeneratorConfig;
use sessionize::source::kafka::{KafkaConfig, KafkaSource};
use sessionize::state::StateStore;

/// The benchmark data set: 10,000 users over up to two days, `events` lines.
pub fn bench_events(events: u64) -> GeneratorConfig {
    GeneratorConfig {
        num_users: 10_000,
        rate: 100.0,
        duration_s: 2 * 86_400,
        max_events: Some(events),
        ..GeneratorConfig::sample()
    }
}

/// The default limits: 30 min inactivity, 2 h maximum.
pub fn default_settings() -> Settings {
    Settings { inactivity_timeout_ms: 30 * 60_000, max_duration_ms: 2 * 3_600_000, params: vec![] }
}

/// The default rules component built by `guest/build.sh`.
pub fn default_component() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest/dist/default_rules.wasm")
}

/// The conversion rules (contract 0.2: one declared field, four attributes).
#[allow(dead_code)] // Used by the pipeline benchmark only.
pub fn conversion_component() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest/dist/conversion_rules.wasm")
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
pub fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1024)
}

/// A broker with memory storage on loopback `port`: Tansu, the one the
/// published figures were measured on, or nisshi (`BENCH_BROKER=nisshi`), the
/// one the tests run. `TANSU_BIN` / `NISSHI_BIN` point at the binaries
/// (tests/bench/run.sh and tests/run.sh install them into ~/.cache/sessionize).
pub fn start_broker(dir: &Path, port: u16) -> Result<Child> {
    let name = match std::env::var("BENCH_BROKER").as_deref() {
        Ok("nisshi") => "nisshi",
        Ok("tansu") | Err(_) => "tansu",
        Ok(other) => anyhow::bail!("BENCH_BROKER={other}: give tansu or nisshi"),
    };
    let variable = format!("{}_BIN", name.to_uppercase());
    let binary = std::env::var_os(&variable).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(format!(".cache/sessionize/{name}/bin/{name}"))
    });
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&binary)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", &format!("memory://{name}/")])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!("starting {} (tests/bench/run.sh installs it)", binary.display())
        })?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

/// What a fresh streaming job over `topic` starts with: an empty warehouse and
/// state store under `dir`, and a consumer at the topic's beginning.
pub struct FreshJob {
    pub sink: IcebergSink,
    pub checkpointer: Checkpointer,
    pub resumed: Resumed,
    pub source: KafkaSource,
}

impl FreshJob {
    pub fn new(
        runtime: &tokio::runtime::Runtime,
        servers: &str,
        topic: &str,
        dir: &Path,
    ) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir.join("warehouse"));
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let mut sink =
            runtime.block_on(IcebergSink::open(&SinkConfig::new(dir.join("warehouse"))))?;
        let store = StateStore::open(&dir.join("state"))?;
        let (checkpointer, resumed) =
            runtime.block_on(Checkpointer::recover(store, &mut sink, EngineConfig::default()))?;
        let kafka = KafkaConfig {
            servers: servers.into(),
            topic: topic.into(),
            group: "sessionize".into(),
        };
        let source = KafkaSource::connect(&kafka, &Default::default(), Duration::from_secs(10))?;
        Ok(Self { sink, checkpointer, resumed, source })
    }
}

/// The benchmarks' pacing: batches of 50,000, a checkpoint every second.
pub fn stream_config(until_end: bool) -> StreamConfig {
    StreamConfig {
        max_events_per_batch: 50_000,
        checkpoint_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        until_end,
        rules_attempts: 3,
        on_rules_failure: FaultPolicy::Rollback,
        intake: Intake::default(),
        max_partition_drift: Duration::from_secs(600),
    }
}
