//! The job: wires source, engine, rules, sink, state and checkpoints together.
//!
//! Two runs share one ingest step ([`ingest`]): the bounded run
//! ([`bounded::run_bounded`]) reads a file to its end and commits what it
//! closed; the streaming run ([`streaming::run_streaming`]) polls Kafka and
//! cuts checkpoints until stopped. [`run`] assembles either from a
//! [`JobConfig`], as `sessionize run` does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{self, AdminConfig, AdminError};
use crate::checkpoint::{CheckpointError, CheckpointStore, Checkpointer, GroupCheckpointer};
use crate::engine::{Engine, EngineConfig};
use crate::group::GroupView;
use crate::metrics::{JobMetrics, Readiness};
use crate::rules::contract::Settings;
use crate::rules::lifecycle::{
    deployed_before_restart, watch_plugin_file, ArchiveError, CheckpointedRules, RulesArchive,
    RulesLifecycle, RulesLoader, RulesSlot,
};
use crate::rules::{ComponentLoader, ComponentRules, RulesError, RulesRuntime, SandboxLimits};
use crate::sink::iceberg::{IcebergSink, SinkConfig};
use crate::sink::topic::{SessionsTopic, TopicConfig};
use crate::sink::{NoTable, Sink, SinkError};
use crate::source::file::{FileSource, FileSourceError};
use crate::source::generate::{generate, GeneratorConfig};
use crate::source::kafka::{KafkaConfig, KafkaSource, KafkaSourceError};
use crate::state::{StateError, StateStore};
use crate::status::{self, StatusConfig, StatusError};
use streaming::Engines;

pub mod bounded;
mod group;
pub(crate) mod ingest;
mod maintenance;
mod progress;
#[cfg(test)]
mod simulation;
pub mod streaming;
mod summary;

pub use ingest::Intake;
pub use maintenance::MaintenanceSchedule;
pub use progress::RunProgress;
pub use summary::{RunSummary, Stalls, StreamSummary};

/// The default rules component, built from `guest/default-rules`.
#[cfg(embedded_rules)]
const DEFAULT_RULES: Option<&[u8]> = Some(include_bytes!(env!("SESSIONIZE_DEFAULT_RULES")));
#[cfg(not(embedded_rules))]
const DEFAULT_RULES: Option<&[u8]> = None;

/// Everything `sessionize run` configures.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The Iceberg tables.
    pub sink: SinkConfig,
    /// Lateness and batching.
    pub engine: EngineConfig,
    /// What the rules are configured with.
    pub settings: Settings,
    /// Sandbox limits per rules instance.
    pub limits: SandboxLimits,
    /// `--plugin`, or the built-in default rules.
    pub plugin: Option<PathBuf>,
    /// Engines a bounded run splits its users over; `None`: one per two cores.
    pub engines: Option<usize>,
    /// Swap the rules whenever the `plugin` file is replaced (streaming).
    pub plugin_watch: bool,
    /// Set for a member of a consumer group (`--scale-out`): how long it
    /// may be silent before the group gives its partitions to the others.
    pub scale_out: Option<Duration>,
    /// The durable state of a streaming job.
    pub state_dir: PathBuf,
    /// Kafka input.
    pub kafka: KafkaConfig,
    /// What both runs admit (`stream.intake`), and how the streaming loop
    /// paces itself.
    pub stream: streaming::StreamConfig,
    /// The admin endpoint of a streaming job.
    pub admin: AdminConfig,
    /// The largest rules component the job takes, from a file or uploaded.
    pub max_component_bytes: u64,
    /// Table maintenance a streaming job runs itself, if any.
    pub maintenance: Option<MaintenanceSchedule>,
    /// Where a bounded run reports how far it has got, if anyone watches.
    pub progress: Option<Arc<RunProgress>>,
    /// The metrics and status endpoint, and what readiness means.
    pub status: StatusConfig,
    /// Whether sessions go to the Iceberg tables (`--sink`: by default).
    pub to_table: bool,
    /// The Kafka topics sessions (and dead letters) go to, if any.
    pub topic: Option<TopicConfig>,
}

/// What a job reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A generated sample, once (`--test-mode` without Kafka).
    Sample,
    /// A file of JSON lines, or `-` for standard input.
    File(PathBuf),
    /// The Kafka topic.
    Kafka,
}

/// What a job did.
#[derive(Debug, Clone)]
pub enum Summary {
    /// A bounded run's counters.
    Bounded(RunSummary),
    /// A streaming run's counters.
    Streaming(Box<StreamSummary>),
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Summary::Bounded(summary) => summary.fmt(f),
            Summary::Streaming(summary) => summary.fmt(f),
        }
    }
}

/// Why a job could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The rules could not be loaded.
    #[error("{context}")]
    Rules {
        /// Which rules.
        context: String,
        /// Why.
        #[source]
        source: RulesError,
    },
    /// The rules declare an attribute the sessions table cannot take.
    #[error("{rules} cannot write to the sessions table: {why}")]
    Columns {
        /// The rules.
        rules: String,
        /// Which column, and why.
        why: String,
    },
    /// The table maintenance thread could not start.
    #[error("cannot start table maintenance: {0}")]
    Maintenance(String),
    /// No rules were given and none are built in.
    #[error(
        "this binary was built without the default rules: run guest/build.sh and rebuild, \
         or pass --plugin PATH"
    )]
    NoDefaultRules,
    /// The sample could not be generated.
    #[error("generating the sample")]
    Sample(#[source] std::io::Error),
    /// The tables could not be opened.
    #[error("opening the Iceberg tables in {warehouse}")]
    Sink {
        /// The warehouse.
        warehouse: String,
        /// Why.
        #[source]
        source: SinkError,
    },
    /// The sessions' topic could not be set up.
    #[error("setting up the sessions' topic on {servers}")]
    Topic {
        /// The brokers.
        servers: String,
        /// Why.
        #[source]
        source: SinkError,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    /// The input file could not be read.
    #[error(transparent)]
    Input(#[from] FileSourceError),
    /// Kafka could not be reached.
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    /// The state directory could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The archive of deployed rules could not be used.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Recovery failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The admin endpoint could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The metrics and status endpoint could not start.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The address of the status endpoint could not be written.
    #[error("cannot write {path}: {source}")]
    StatusAddress {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A consumer group's member could not start.
    #[error("joining the consumer group: {why}")]
    Group {
        /// Why, in a sentence.
        why: String,
    },
    /// The bounded run failed.
    #[error(transparent)]
    Bounded(#[from] bounded::BoundedError),
    /// The streaming run failed.
    #[error(transparent)]
    Streaming(#[from] streaming::StreamError),
}

/// Runs a job on `input`; a streaming job runs until SIGINT/SIGTERM (or the
/// topic's end with `until_end`). Needs a multi-threaded tokio runtime: plugin
/// calls block, and run off the async tasks.
pub async fn run(config: &JobConfig, input: Input) -> Result<Summary, JobError> {
    let source = match input {
        Input::Sample => {
            let mut sample = Vec::new();
            generate(&GeneratorConfig::sample(), &mut sample).map_err(JobError::Sample)?;
            FileSource::from_bytes("test-mode sample", sample)
        }
        Input::File(path) => FileSource::open(&path)?,
        Input::Kafka => {
            return run_kafka(config).await.map(|summary| Summary::Streaming(Box::new(summary)))
        }
    };
    run_file(config, source).await.map(Summary::Bounded)
}

async fn run_file(config: &JobConfig, source: FileSource) -> Result<RunSummary, JobError> {
    let metrics = match config.status.addr {
        Some(addr) => {
            // One partition and no checkpoints: ready for as long as it runs.
            let always = Readiness { max_lag: u64::MAX, max_checkpoint_age: Duration::MAX };
            let metrics = Arc::new(JobMetrics::new(always));
            metrics.set_partitions(&[0]);
            status::serve(addr, metrics.clone(), config.status.raw_records).await?;
            Some(metrics)
        }
        None => None,
    };
    // A bounded run keeps no state directory: compiled components are kept
    // in the user's cache, so an hourly run compiles a component once.
    let compiled = user_compiled_dir();
    let loader = rules_loader(
        config.settings.clone(),
        config.limits,
        config.max_component_bytes,
        compiled.as_deref(),
    )?;
    // Plugin calls block: never on an async task.
    let plugin = config.plugin.as_deref();
    let rules = tokio::task::block_in_place(|| load_rules(&loader, plugin))?;
    tracing::info!(rules = rules.rule_version(), "rules loaded");
    let mut sink = open_sink(config).await?;
    check_columns(&sink, &rules)?;
    let props = HashMap::from([
        ("sessionize.rule-version".to_owned(), rules.rule_version().to_owned()),
        ("sessionize.source".to_owned(), source.name().to_owned()),
    ]);
    // Unless told, an engine per two cores, each with its own instance of the
    // rules: parsing takes about as much as the engines, on the other half
    // (on two cores a second engine only added switching: docs/benchmarks.md).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = config.engines.unwrap_or(cores / 2).max(1);
    let mut all_rules = tokio::task::block_in_place(|| more_instances(&rules, count - 1))?;
    all_rules.insert(0, rules);
    let mut engines: Vec<Engine> = all_rules.iter().map(|_| Engine::new(config.engine)).collect();
    let shards = engines
        .iter_mut()
        .zip(&mut all_rules)
        .map(|(engine, rules)| bounded::Shard { engine, rules })
        .collect();
    let handle = tokio::runtime::Handle::current();
    let summary = tokio::task::block_in_place(|| {
        let intake = &config.stream.intake;
        let watchers =
            bounded::Watchers { progress: config.progress.as_deref(), metrics: metrics.as_deref() };
        bounded::run_bounded(&handle, source, intake, shards, &mut sink, props, watchers)
    })?;
    Ok(summary)
}

/// `count` more instances of `rules`, for engines of their own.
fn more_instances(rules: &ComponentRules, count: usize) -> Result<Vec<ComponentRules>, JobError> {
    (0..count)
        .map(|_| {
            rules.another_instance().map_err(|source| JobError::Rules {
                context: "starting another instance of the rules".into(),
                source,
            })
        })
        .collect()
}

/// The streaming job: Kafka to Iceberg with checkpoints.
async fn run_kafka(config: &JobConfig) -> Result<StreamSummary, JobError> {
    // Before anything starts: an endpoint the operator did not mean to expose.
    admin::check_addr(&config.admin)?;
    // Before the status address is published (tests and supervisors take it
    // as "started"): a SIGTERM from then on stops the job cleanly once it runs.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(JobError::Signals)?;
    }
    // Then the status endpoint, so that a busy port stops the job at once and
    // a slow recovery shows as not ready.
    let metrics = Arc::new(JobMetrics::new(config.status.readiness));
    let status_addr = match config.status.addr {
        Some(addr) => Some(status::serve(addr, metrics.clone(), config.status.raw_records).await?),
        None => None,
    };
    let compiled = config.state_dir.join("compiled");
    let loader = rules_loader(
        config.settings.clone(),
        config.limits,
        config.max_component_bytes,
        Some(&compiled),
    )?;
    let plugin = config.plugin.as_deref();
    let given = tokio::task::block_in_place(|| load_rules(&loader, plugin))?;
    let archive = Arc::new(RulesArchive::open(&config.state_dir)?);
    if let Some(addr) = status_addr {
        publish_status_address(&config.state_dir, addr)?;
    }
    let mut slot = RulesSlot::new(given);
    let observer = metrics.clone();
    slot.report_calls_to(Arc::new(move |took| observer.observe_plugin_call(took)));
    tracing::info!(rules = slot.rule_version(), "rules loaded");
    let start = Start { loader: &loader, archive: &archive, metrics: &metrics, stop: &stop };
    let topic = match &config.topic {
        Some(topic) => Some(
            SessionsTopic::connect(topic.clone())
                .await
                .map_err(|source| JobError::Topic { servers: topic.servers.clone(), source })?,
        ),
        None => None,
    };
    if !config.to_table {
        return stream_without_table(config, &start, slot, topic, metrics.clone()).await;
    }
    let mut sink = open_sink(config).await?;
    check_columns(&sink, &slot)?;
    let _maintenance = match &config.maintenance {
        Some(schedule) => Some(
            maintenance::MaintenanceThread::start(config.sink.clone(), schedule.clone())
                .map_err(|e| JobError::Maintenance(e.to_string()))?,
        ),
        None => None,
    };
    if config.scale_out.is_some() {
        let mut resumed = join_group(config, &start, &mut sink, &mut slot, topic).await?;
        let rules = rules_lifecycle(config, &start, slot, &sink, resumed.group.take()).await?;
        stream(config, resumed, rules, &archive, sink, metrics, stop)
    } else {
        let resumed = recover(config, &start, &mut sink, &mut slot, topic).await?;
        let rules = rules_lifecycle(config, &start, slot, &sink, None).await?;
        stream(config, resumed, rules, &archive, sink, metrics, stop)
    }
}

/// `--sink kafka`: sessions to the topic only; the state in the job's own
/// store (a group member's state lives beside a table, so `--scale-out`
/// needs one).
async fn stream_without_table(
    config: &JobConfig,
    start: &Start<'_>,
    mut slot: RulesSlot,
    topic: Option<SessionsTopic>,
    metrics: Arc<JobMetrics>,
) -> Result<StreamSummary, JobError> {
    let mut sink = NoTable::default();
    let resumed = recover(config, start, &mut sink, &mut slot, topic).await?;
    let rules = rules_lifecycle(config, start, slot, &sink, None).await?;
    stream(config, resumed, rules, start.archive, sink, metrics, start.stop.clone())
}

/// What the steps of a streaming job's start share.
struct Start<'a> {
    loader: &'a RulesLoader,
    archive: &'a Arc<RulesArchive>,
    metrics: &'a Arc<JobMetrics>,
    /// Set by SIGINT or SIGTERM, from before the job's start.
    stop: &'a Arc<AtomicBool>,
}

/// Where a streaming job resumes: its engines, its checkpoint store, the
/// offsets to read from, and (for a group member) how it joined.
struct Resumed<C> {
    engines: Engines,
    store: C,
    offsets: BTreeMap<i32, i64>,
    /// Why a member runs its own rules, and the group as it found it.
    group: Option<(Option<String>, GroupView)>,
}

/// Joins the group as a new member: no engines until it claims partitions.
async fn join_group(
    config: &JobConfig,
    start: &Start<'_>,
    sink: &mut IcebergSink,
    slot: &mut RulesSlot,
    topic: Option<SessionsTopic>,
) -> Result<Resumed<GroupCheckpointer>, JobError> {
    let member = group::Membership {
        group: &config.kafka.group,
        plugin: config.plugin.as_deref(),
        max_component_bytes: config.max_component_bytes,
        engine: config.engine,
    };
    let joined = group::start_member(&member, sink, start.loader, start.archive, slot).await?;
    start.metrics.observe_group_rules(joined.diverged.clone());
    Ok(Resumed {
        engines: Engines::per_partition(GroupCheckpointer::WHOLE_STATE_EVERY),
        store: match topic {
            Some(topic) => joined.checkpointer.publishing_to(topic),
            None => joined.checkpointer,
        },
        offsets: BTreeMap::new(),
        group: Some((joined.diverged, joined.fleet)),
    })
}

/// Recovers the job's own state store: one engine over the whole topic.
async fn recover(
    config: &JobConfig,
    start: &Start<'_>,
    sink: &mut impl Sink,
    slot: &mut RulesSlot,
    topic: Option<SessionsTopic>,
) -> Result<Resumed<Checkpointer>, JobError> {
    let store = StateStore::open(&config.state_dir)?;
    let (mut checkpointer, resumed) =
        Checkpointer::recover_publishing(store, sink, config.engine, topic).await?;
    checkpointer.set_given_rules(slot.rule_version());
    let checkpointed = CheckpointedRules {
        in_force: resumed.rule_version.clone(),
        given: resumed.given_rules.clone(),
    };
    tokio::task::block_in_place(|| {
        resume_live_rules(start.archive, &checkpointed, start.loader, slot)
    });
    tracing::info!(
        checkpoint = resumed.checkpoint_id,
        open_users = resumed.open_users,
        offsets = ?resumed.offsets,
        "state recovered"
    );
    Ok(Resumed {
        engines: Engines::for_topic(resumed.engine),
        store: checkpointer,
        offsets: resumed.offsets,
        group: None,
    })
}

/// The rules and the changes operators ask of them: the admin endpoint, the
/// plugin watcher, and (for a group member) the group's rules.
async fn rules_lifecycle(
    config: &JobConfig,
    start: &Start<'_>,
    slot: RulesSlot,
    sink: &impl Sink,
    group: Option<(Option<String>, GroupView)>,
) -> Result<RulesLifecycle, JobError> {
    let (requests_tx, requests) = std::sync::mpsc::channel();
    let token = config.admin.token.clone().unwrap_or_else(admin::new_token);
    let addr = admin::serve(&config.admin, &token, config.max_component_bytes, requests_tx.clone())
        .await?;
    admin::publish_credentials(&config.state_dir, addr, &token)?;
    if config.plugin_watch {
        if let Some(path) = config.plugin.clone() {
            watch_plugin_file(path, requests_tx, config.admin.request_timeout);
        }
    }
    let mut rules = RulesLifecycle::new(slot)
        .accepting(requests)
        .loading_with(start.loader.clone().keeping_in(start.archive.clone()))
        .checking_columns_with(sink.column_check());
    if let Some((diverged, fleet)) = group {
        rules = rules.in_group(diverged, fleet);
    }
    Ok(rules)
}

/// Runs the event loop until SIGINT or SIGTERM (or the end, with `--test-mode`).
fn stream<C: CheckpointStore<K>, K: Send>(
    config: &JobConfig,
    resumed: Resumed<C>,
    mut rules: RulesLifecycle,
    archive: &RulesArchive,
    mut sink: K,
    metrics: Arc<JobMetrics>,
    stop: Arc<AtomicBool>,
) -> Result<StreamSummary, JobError> {
    let handle = tokio::runtime::Handle::current();
    let Resumed { engines, store, offsets, .. } = resumed;
    tokio::task::block_in_place(|| {
        let wait = Duration::from_secs(30);
        let source = match config.scale_out {
            Some(timeout) => KafkaSource::join(&config.kafka, wait, timeout)?,
            None => KafkaSource::connect(&config.kafka, &offsets, wait)?,
        };
        let parts = streaming::StreamParts {
            source,
            engines,
            store,
            rules: &mut rules,
            sink: &mut sink,
            metrics,
        };
        let outcome =
            streaming::run_streaming(&handle, parts, config.stream, offsets.clone(), &stop);
        if let Err(streaming::StreamError::RulesFailed { rules, .. }) = &outcome {
            // Not to be resumed on restart: the restart would fail the same way.
            if let Err(error) = archive.mark_failed(rules) {
                tracing::warn!(%error, "a restart may resume the failed rules");
            }
        }
        Ok(outcome?)
    })
}

/// Refuses to start with rules whose attributes the sessions table cannot
/// take (a column of that name with another type).
fn check_columns(sink: &impl Sink, rules: &dyn RulesRuntime) -> Result<(), JobError> {
    let check = sink.column_check();
    check(&rules.declarations().attributes)
        .map_err(|why| JobError::Columns { rules: rules.rule_version().to_owned(), why })
}

/// Writes where the status endpoint listens to `<state-dir>/metrics.addr`,
/// for scripts (and tests) that start the job on a free port.
fn publish_status_address(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
) -> Result<(), JobError> {
    let path = dir.join("metrics.addr");
    std::fs::write(&path, addr.to_string())
        .map_err(|source| JobError::StatusAddress { path: path.display().to_string(), source })
}

/// Continues with the rules deployed live before a restart, if the last
/// checkpoint was cut by them and the command line has not changed.
fn resume_live_rules(
    archive: &RulesArchive,
    checkpointed: &CheckpointedRules,
    loader: &RulesLoader,
    slot: &mut RulesSlot,
) {
    let Some(bytes) = deployed_before_restart(archive, checkpointed, slot.rule_version()) else {
        return;
    };
    match loader.load(&bytes) {
        Ok(live) => {
            tracing::info!(rules = live.rule_version(), "resuming with the rules deployed live");
            slot.resume(live);
        }
        Err(error) => tracing::warn!(%error, "rules of the last checkpoint refused"),
    }
}

async fn open_sink(config: &JobConfig) -> Result<IcebergSink, JobError> {
    IcebergSink::open(&config.sink)
        .await
        .map_err(|source| JobError::Sink { warehouse: config.sink.warehouse.to_string(), source })
}

/// The loader every rules version of a job (or of `plugin test`) goes through;
/// with `compiled`, compiled components are kept there for the next start.
pub fn rules_loader(
    settings: Settings,
    limits: SandboxLimits,
    max_component_bytes: u64,
    compiled: Option<&Path>,
) -> Result<RulesLoader, JobError> {
    let mut loader = ComponentLoader::new()
        .map_err(|source| JobError::Rules { context: "starting wasmtime".into(), source })?;
    if let Some(dir) = compiled {
        loader = loader.keeping_compiled_in(dir);
    }
    Ok(RulesLoader::new(Arc::new(loader), settings, limits).taking_at_most(max_component_bytes))
}

/// Where runs without a state directory (bounded runs, `plugin test`) keep
/// compiled components: in the project's cache, `$SESSIONIZE_CACHE` (default
/// `~/.cache/sessionize`, as the scripts have it). None without a home: then
/// they compile.
pub fn user_compiled_dir() -> Option<PathBuf> {
    compiled_dir_from(|name| std::env::var_os(name).filter(|v| !v.is_empty()))
}

fn compiled_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let cache = var("SESSIONIZE_CACHE")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache/sessionize")))?;
    Some(cache.join("compiled"))
}

/// The rules a command line gives: `plugin`, or the built-in default rules.
pub fn load_rules(loader: &RulesLoader, plugin: Option<&Path>) -> Result<ComponentRules, JobError> {
    match (plugin, DEFAULT_RULES) {
        (Some(path), _) => loader.load_file(path).map_err(|source| JobError::Rules {
            context: format!("loading plugin {}", path.display()),
            source,
        }),
        (None, Some(bytes)) => loader.load(bytes).map_err(|source| JobError::Rules {
            context: "loading the built-in default rules".into(),
            source,
        }),
        (None, None) => Err(JobError::NoDefaultRules),
    }
}

#[cfg(test)]
mod compiled_dir_tests {
    use std::ffi::OsString;

    use super::compiled_dir_from;

    fn lookup<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn the_project_cache_else_home() {
        let all = [("SESSIONIZE_CACHE", "/c"), ("HOME", "/h")];
        assert_eq!(compiled_dir_from(lookup(&all)).unwrap(), std::path::Path::new("/c/compiled"));
        let found = compiled_dir_from(lookup(&all[1..])).unwrap();
        assert_eq!(found, std::path::Path::new("/h/.cache/sessionize/compiled"));
        assert!(compiled_dir_from(lookup(&[])).is_none());
    }
}
