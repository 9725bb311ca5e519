//! Command-line interface: flags, their defaults, and what they mean, and the
//! one place where flags become the library's configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use sessionize::admin::{AdminCall, AdminConfig};
use sessionize::engine::EngineConfig;
use sessionize::event::EventLimits;
use sessionize::job::streaming::{FaultPolicy, StreamConfig};
use sessionize::job::{Input, Intake, JobConfig, MaintenanceSchedule};
use sessionize::rules::contract::Settings;
use sessionize::rules::SandboxLimits;
use sessionize::sink::topic::TopicConfig;
use sessionize::source::generate::GeneratorConfig;
use sessionize::source::kafka::KafkaConfig;

mod plugin_test;
mod query;
mod status;
mod table;
mod token;

pub use plugin_test::PluginTestArgs;
pub use query::QueryArgs;
pub use status::StatusArgs;
pub use table::{MaintainArgs, MaintenanceArgs, TableArgs};
pub use token::AdminTokenArgs;

/// Real-time user sessionization: clickstream in, one row per session out, with
/// the session rules in a hot-swappable WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "sessionize", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text, or as one JSON object per line for log shippers
    /// (a bounded run's progress bar shows only with text, on a terminal).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sessionize events into the Iceberg table.
    Run(Box<RunArgs>),
    /// Write realistic clickstream as JSON lines.
    Generate(GenerateArgs),
    /// Send clickstream to a Kafka topic, keyed by uuid (creates the topic).
    Produce(ProduceArgs),
    /// Copy a topic not keyed by uuid into one that is, until stopped
    /// (creates the topic).
    Repartition(RepartitionArgs),
    /// Compact the tables' small files and expire old snapshots (safe while
    /// jobs write to them).
    Maintain(Box<MaintainArgs>),
    /// Manage the rules of a running job: deploy, status, rollback.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run SQL over the tables and print the rows (a table, CSV or JSON lines;
    /// in builds with the `query` feature).
    Query(Box<QueryArgs>),
    /// Ask a job's status endpoint whether it is healthy: exit 0 if so, 1
    /// with the reason if not (a container's HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
}

/// `sessionize healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// What to ask: the job's /healthz (or /readyz).
    #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
    pub url: String,
    /// How long to wait for the answer: seconds, or with a unit.
    #[arg(long, default_value = "5", value_parser = seconds)]
    pub timeout: Duration,
}

/// `sessionize plugin ...`: talks to a running job's admin endpoint.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Swap in a new rules component (checked first; refused if unfit).
    Deploy {
        /// The component (.wasm).
        path: PathBuf,
        /// How to reach the job.
        #[command(flatten)]
        job: JobAddress,
    },
    /// Show the active rules and the history of swaps.
    Status {
        /// How to reach the job.
        #[command(flatten)]
        job: JobAddress,
    },
    /// Go back to the previous rules.
    Rollback {
        /// How to reach the job.
        #[command(flatten)]
        job: JobAddress,
    },
    /// Run rules over a file and print the sessions, or with --against what
    /// changes against other rules (no job, Kafka or table): the dry run
    /// before a deploy.
    Test(Box<PluginTestArgs>),
    /// Start a rules plugin project: the rules, a unit test that passes, and
    /// how to build, try and deploy it.
    New {
        /// The plugin's name (lowercase, dashes: checkout-rules).
        name: String,
        /// Its language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: PluginLang,
        /// Where the project's directory is made.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The SDK (guest/sdk of a Sessionize checkout, or guest/python-sdk
        /// for --lang python, guest/js-sdk for --lang js); default: the one
        /// this binary was built from.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest/sdk"))]
        sdk: PathBuf,
    },
}

/// `plugin new --lang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PluginLang {
    /// On the Rust SDK.
    Rust,
    /// On componentize-py.
    Python,
    /// On the JavaScript SDK and componentize-js.
    Js,
}

/// Where a running job's admin endpoint is, and its token.
#[derive(Debug, Args)]
pub struct JobAddress {
    /// The job's state directory: holds admin.addr and admin.token.
    #[arg(long, env = "SESSIONIZE_STATE_DIR", default_value = "./state")]
    pub state_dir: PathBuf,
    /// Where the admin token comes from.
    #[command(flatten)]
    pub token: AdminTokenArgs,
    /// How long to wait for the job's answer: seconds, or with a unit (2m).
    #[arg(long, default_value = "120", value_parser = seconds)]
    pub timeout: Duration,
}

/// `sessionize produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:9092")]
    pub kafka_servers: String,
    /// Topic to write to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "clickstream-events")]
    pub topic: String,
    /// Partitions of the topic, if it has to be created (1 to 10000).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Send the lines of this file (gzip too, `-` for stdin) instead of
    /// generating events.
    #[arg(long, value_name = "PATH|-")]
    pub input: Option<PathBuf>,
    /// Generator settings, as for `generate`.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Send as fast as possible instead of pacing generated events in real
    /// time (event times then start at 2025-01-01).
    #[arg(long)]
    pub fast: bool,
}

/// `sessionize repartition`.
#[derive(Debug, Args)]
pub struct RepartitionArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:9092")]
    pub kafka_servers: String,
    /// The topic as its producers write it.
    #[arg(long)]
    pub from_topic: String,
    /// The topic keyed by uuid, for `sessionize run --kafka-topic`.
    #[arg(long)]
    pub to_topic: String,
    /// Partitions of the topic keyed by uuid, if it has to be created (1 to 10000).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Consumer group of the repartition step: instances with the same one
    /// share the input topic's partitions.
    #[arg(long, default_value = "sessionize-repartition")]
    pub kafka_group: String,
    /// Time between commits of the input offsets (what a crash sends again):
    /// seconds, or with a unit (500ms, 1m).
    #[arg(long, default_value = "1", value_parser = seconds)]
    pub commit_interval: Duration,
}

/// `sessionize run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline to run, as the Spark job named it; there is one, and
    /// naming it is optional.
    #[arg(value_parser = ["user_sessionization_pipeline"])]
    pub pipeline: Option<String>,
    /// Kafka bootstrap servers [default: localhost:9092]. Given with
    /// --test-mode, the job reads the topic up to its current end and stops.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_servers: Option<String>,
    /// Kafka topic to read.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "clickstream-events")]
    pub kafka_topic: String,
    /// Where closed sessions go: the Iceberg table, a Kafka topic
    /// (--sessions-topic, on the --kafka-servers brokers), or both
    /// (iceberg,kafka). The topic is delivered at least once.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "iceberg")]
    pub sink: Vec<SinkKind>,
    /// With --sink kafka: the topic closed sessions go to, one record per
    /// session keyed by uuid.
    #[arg(long, default_value = "user-sessions")]
    pub sessions_topic: String,
    /// With --sink kafka: a topic dead letters go to as well.
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// Consumer group the job commits its offsets to (for lag monitoring; the
    /// job itself resumes from its checkpoints).
    #[arg(long, default_value = "sessionize")]
    pub kafka_group: String,
    /// Share the topic with every instance started with the same
    /// --kafka-group and tables: the group assigns the partitions, and a
    /// partition's open sessions move with it through the warehouse
    /// (docs/scale-out.md).
    #[arg(long, conflicts_with_all = ["test_mode", "input"])]
    pub scale_out: bool,
    /// With --scale-out: a member silent this long loses its partitions to
    /// the others: seconds, or with a unit (6 to 300 s).
    #[arg(long, default_value = "10", value_parser = session_timeout, requires = "scale_out")]
    pub group_session_timeout: Duration,
    /// Most Kafka messages taken per batch (1 to 1000000).
    #[arg(long, default_value_t = 50_000, value_parser = u32_in(1..=1_000_000))]
    pub max_events_per_batch: u32,
    /// Time between checkpoints: seconds, or with a unit (500ms, 1m).
    #[arg(long, default_value = "30", value_parser = seconds)]
    pub checkpoint_interval: Duration,
    /// A Kafka partition silent this long stops holding the watermark back:
    /// seconds, or with a unit.
    #[arg(long, default_value = "60", value_parser = seconds)]
    pub idle_timeout: Duration,
    /// Directory of the durable state store (open sessions, checkpoints).
    #[arg(long, env = "SESSIONIZE_STATE_DIR", default_value = "./state")]
    pub state_dir: PathBuf,
    /// Admin endpoint address (`sessionize plugin ...`); port 0 picks a free
    /// one. The address is written to <state-dir>/admin.addr. Loopback only,
    /// unless --admin-allow-remote.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_addr: std::net::SocketAddr,
    /// Where the admin token comes from (default: generated). The job
    /// writes it to <state-dir>/admin.token, 0600.
    #[command(flatten)]
    pub token: AdminTokenArgs,
    /// Accept an --admin-addr beyond loopback (plain HTTP: anyone who reaches
    /// it with the token can change the rules).
    #[arg(long)]
    pub admin_allow_remote: bool,
    /// How long an admin request may take to be applied before the client is
    /// told it was not: seconds, or with a unit (2m).
    #[arg(long, default_value = "60", value_parser = seconds)]
    pub admin_timeout: Duration,
    /// Largest rules component the job takes (an upload through `plugin
    /// deploy`, or the --plugin file), MiB (1 to 4096).
    #[arg(long, default_value_t = 64, value_parser = u32_in(1..=4096))]
    pub max_component_mib: u32,
    /// Metrics, health and the status page.
    #[command(flatten)]
    pub status: StatusArgs,
    /// Watch the --plugin file and hot-swap the rules when it changes.
    #[arg(long, requires = "plugin")]
    pub plugin_watch: bool,
    /// Read JSON lines (gzip too) from this file, or `-` for standard input,
    /// instead of Kafka; the run ends with the input.
    #[arg(long, value_name = "PATH|-")]
    pub input: Option<PathBuf>,
    /// Process a generated sample once and stop (no Kafka needed); with
    /// --kafka-servers, consume what is in the topic now, flush, and stop.
    #[arg(long)]
    pub test_mode: bool,
    /// Where the tables are.
    #[command(flatten)]
    pub table: TableArgs,
    /// Compact and expire the tables this often while streaming, on a thread
    /// of its own (as `sessionize maintain` does): minutes, or with a unit.
    #[arg(long, value_parser = minutes)]
    pub maintain_every: Option<Duration>,
    /// What --maintain-every does.
    #[command(flatten)]
    pub maintenance: MaintenanceArgs,
    /// Silence that ends a session: minutes, or with a unit (45m, 90s, 1h).
    #[arg(long, default_value = "30", value_parser = minutes)]
    pub inactivity_timeout: Duration,
    /// Longest a session may last: hours, or with a unit (90m, 2h).
    #[arg(long, default_value = "2", value_parser = hours)]
    pub max_session_duration: Duration,
    /// How late an event may arrive behind its partition's newest: minutes, or
    /// with a unit.
    #[arg(long, default_value = "10", value_parser = minutes)]
    pub allowed_lateness: Duration,
    /// A Kafka partition whose event time runs further ahead of the slowest
    /// one is paused until the others catch up, so one lagging partition
    /// cannot make the job hold the others' events without limit: minutes,
    /// or with a unit.
    #[arg(long, default_value = "10", value_parser = minutes)]
    pub max_partition_drift: Duration,
    /// Events stamped further ahead of the wall clock are dead-lettered (a
    /// timestamp in micro- or nanoseconds): minutes, or with a unit.
    /// Backfills of past data are unaffected.
    #[arg(long, default_value = "1h", value_parser = minutes)]
    pub max_future_skew: Duration,
    /// Largest record (JSON line or Kafka message) accepted, bytes; larger
    /// ones are dead-lettered.
    #[arg(long, default_value_t = 1 << 20, value_parser = u32_in(256..=(64 << 20)))]
    pub max_record_bytes: u32,
    /// Longest uuid accepted, bytes.
    #[arg(long, default_value_t = 256, value_parser = u32_in(1..=65_536))]
    pub max_uuid_bytes: u32,
    /// Longest event id, page name, event name or type accepted, bytes.
    #[arg(long, default_value_t = 8192, value_parser = u32_in(1..=(1 << 20)))]
    pub max_text_bytes: u32,
    /// Rules component (.wasm); default: the built-in default rules.
    #[arg(long, value_name = "PATH")]
    pub plugin: Option<PathBuf>,
    /// A parameter for the rules plugin, `key=value` (repeatable).
    #[arg(long = "plugin-param", value_name = "KEY=VALUE", value_parser = key_value)]
    pub plugin_params: Vec<(String, String)>,
    /// Engines a run over a file splits its users over, each with its own
    /// instance of the rules (1 to 256); default: one per two cores.
    #[arg(long, value_name = "N", value_parser = u32_in(1..=256))]
    pub engines: Option<u32>,
    /// Memory limit of the rules plugin, MiB (1 to 4096).
    #[arg(long, default_value_t = 64, value_parser = u32_in(1..=4096))]
    pub plugin_memory_mib: u32,
    /// Time budget of one plugin call: seconds, or with a unit (500ms).
    #[arg(long, default_value = "5", value_parser = seconds)]
    pub plugin_timeout: Duration,
    /// Attempts at a batch the rules keep failing (trap, time budget, memory)
    /// before --on-plugin-failure applies.
    #[arg(long, default_value_t = 3, value_parser = u32_in(1..=u64::from(u32::MAX)))]
    pub plugin_attempts: u32,
    /// When the rules keep failing a batch: roll back to the previous version
    /// (stopping if there is none), or stop at the last checkpoint.
    #[arg(long, value_enum, default_value = "rollback")]
    pub on_plugin_failure: OnPluginFailure,
    /// Log level: error, warn, info, debug or trace (any case: INFO too).
    #[arg(
        long,
        default_value = "info",
        ignore_case = true,
        value_parser = PossibleValuesParser::new(["error", "warn", "info", "debug", "trace"])
            .map(|level| level.to_ascii_lowercase())
    )]
    pub log_level: String,
}

/// `sessionize generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to generate.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Generator settings shared by `generate` and `produce`.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// Distinct users (at least 1).
    #[arg(long, default_value_t = 1000, value_parser = u32_in(1..=u64::from(u32::MAX)))]
    pub num_users: u32,
    /// Events per second of event time, across all users.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Event-time span: seconds, or with a unit (6h, 1d).
    #[arg(long, default_value = "1h", value_parser = seconds)]
    pub duration: Duration,
    /// Stop after this many lines.
    #[arg(long)]
    pub events: Option<u64>,
    /// The small fixed sample `run --test-mode` uses (overrides the sizes).
    #[arg(long)]
    pub sample: bool,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of records that are malformed.
    #[arg(long, default_value_t = 0.001)]
    pub malformed_rate: f64,
    /// Share of events delivered late (up to 15 min; some beyond the lateness).
    #[arg(long, default_value_t = 0.005)]
    pub late_rate: f64,
}

impl RunArgs {
    /// What to read.
    pub fn input(&self) -> Input {
        if self.test_mode && self.kafka_servers.is_none() {
            Input::Sample
        } else if let Some(path) = &self.input {
            Input::File(path.clone())
        } else {
            Input::Kafka
        }
    }

    /// Refuses flags that cannot go together, with what to give instead.
    pub fn check(&self) -> Result<(), String> {
        let to_topic = self.sink.contains(&SinkKind::Kafka);
        if to_topic && self.input() != Input::Kafka {
            return Err("--sink kafka writes the sessions of Kafka input: give --kafka-servers \
                        (a run over a file or a sample writes the table)"
                .into());
        }
        if self.engines.is_some() && self.input() == Input::Kafka {
            return Err("--engines splits the users of a run over a file (--input, or \
                        --test-mode without --kafka-servers); a Kafka job runs an engine \
                        per partition: drop --engines"
                .into());
        }
        if self.scale_out && !self.sink.contains(&SinkKind::Iceberg) {
            return Err("--scale-out keeps each partition's open sessions beside the table: \
                        use --sink iceberg,kafka"
                .into());
        }
        if self.dead_letter_topic.is_some() && !to_topic {
            return Err("--dead-letter-topic goes with --sink kafka (or iceberg,kafka)".into());
        }
        Ok(())
    }

    /// The job these flags describe.
    pub fn job_config(&self) -> JobConfig {
        let servers = self.kafka_servers.clone().unwrap_or_else(|| "localhost:9092".into());
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        JobConfig {
            sink: self.table.sink_config(),
            engine: EngineConfig {
                allowed_lateness_ms: ms(self.allowed_lateness),
                ..EngineConfig::default()
            },
            settings: Settings {
                inactivity_timeout_ms: ms(self.inactivity_timeout),
                max_duration_ms: ms(self.max_session_duration),
                params: self.plugin_params.clone(),
            },
            limits: SandboxLimits {
                // At most 4096 MiB (the parser checks): fits a usize.
                memory_bytes: (self.plugin_memory_mib as usize) << 20,
                call_timeout: self.plugin_timeout,
            },
            plugin: self.plugin.clone(),
            engines: self.engines.map(|n| n as usize),
            plugin_watch: self.plugin_watch,
            scale_out: self.scale_out.then_some(self.group_session_timeout),
            state_dir: self.state_dir.clone(),
            to_table: self.sink.contains(&SinkKind::Iceberg),
            topic: self.sink.contains(&SinkKind::Kafka).then(|| TopicConfig {
                servers: servers.clone(),
                sessions: self.sessions_topic.clone(),
                dead_letters: self.dead_letter_topic.clone(),
            }),
            kafka: KafkaConfig {
                servers,
                topic: self.kafka_topic.clone(),
                group: self.kafka_group.clone(),
            },
            stream: StreamConfig {
                max_events_per_batch: self.max_events_per_batch as usize,
                checkpoint_interval: self.checkpoint_interval,
                idle_timeout: self.idle_timeout,
                until_end: self.test_mode,
                rules_attempts: self.plugin_attempts,
                on_rules_failure: match self.on_plugin_failure {
                    OnPluginFailure::Rollback => FaultPolicy::Rollback,
                    OnPluginFailure::Stop => FaultPolicy::Stop,
                },
                intake: Intake {
                    limits: EventLimits {
                        max_record_bytes: self.max_record_bytes as usize,
                        max_uuid_bytes: self.max_uuid_bytes as usize,
                        max_text_bytes: self.max_text_bytes as usize,
                    },
                    max_future_skew: self.max_future_skew,
                },
                max_partition_drift: self.max_partition_drift,
            },
            admin: AdminConfig {
                addr: self.admin_addr,
                token: None,
                allow_remote: self.admin_allow_remote,
                request_timeout: self.admin_timeout,
            },
            max_component_bytes: u64::from(self.max_component_mib) << 20,
            progress: None,
            status: self
                .status
                .status_config(self.input() == Input::Kafka, self.checkpoint_interval),
            maintenance: self.maintain_every.map(|every| MaintenanceSchedule {
                every,
                compaction: (!self.maintenance.no_compaction)
                    .then(|| self.maintenance.compaction()),
                expiry: (!self.maintenance.no_expiry).then(|| self.maintenance.expiry()),
            }),
        }
    }
}

impl PluginCommand {
    /// The request, and the job to send it to; `None` for `plugin test` and
    /// `plugin new`, which need no job.
    pub fn call(&self) -> Option<(AdminCall, &JobAddress)> {
        match self {
            PluginCommand::Deploy { path, job } => Some((AdminCall::Deploy(path.clone()), job)),
            PluginCommand::Status { job } => Some((AdminCall::Status, job)),
            PluginCommand::Rollback { job } => Some((AdminCall::Rollback, job)),
            PluginCommand::Test(_) | PluginCommand::New { .. } => None,
        }
    }
}

/// The most events a second `generate` and `produce` make: far beyond any
/// broker here, and low enough that a visit's event count stays finite.
const MAX_RATE: f64 = 10_000_000.0;

impl GeneratorArgs {
    /// The generator these flags describe, or a sentence saying what is wrong.
    pub fn config(&self) -> Result<GeneratorConfig, String> {
        let config = if self.sample {
            GeneratorConfig::sample()
        } else {
            GeneratorConfig {
                num_users: self.num_users,
                rate: self.rate,
                duration_s: self.duration.as_secs(),
                malformed_rate: self.malformed_rate,
                late_rate: self.late_rate,
                seed: self.seed,
                max_events: self.events,
                ..GeneratorConfig::sample()
            }
        };
        for (flag, rate) in
            [("--malformed-rate", config.malformed_rate), ("--late-rate", config.late_rate)]
        {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{flag} must be between 0 and 1, got {rate}"));
            }
        }
        if config.num_users == 0 || config.rate.is_nan() || config.rate <= 0.0 {
            return Err("--num-users and --rate must be greater than zero".into());
        }
        if config.rate > MAX_RATE {
            return Err(format!(
                "--rate must be at most {MAX_RATE} events a second (got {})",
                config.rate
            ));
        }
        Ok(config)
    }
}

fn with_unit(text: &str, unit: Duration) -> Result<Duration, String> {
    let text = text.trim();
    let too_large = || format!("{text} {} is too large", unit_name(unit));
    if let Ok(n) = text.parse::<u64>() {
        return n.checked_mul(unit.as_secs()).map(Duration::from_secs).ok_or_else(too_large);
    }
    if let Ok(n) = text.parse::<f64>() {
        if n.is_finite() && n >= 0.0 {
            return Duration::try_from_secs_f64(n * unit.as_secs_f64()).map_err(|_| too_large());
        }
    }
    humantime::parse_duration(text).map_err(|e| {
        format!(
            "{e}: give a number ({} by default) or a number with a unit, like 45m, 90s, 2h",
            unit_name(unit)
        )
    })
}

fn unit_name(unit: Duration) -> &'static str {
    match unit.as_secs() {
        3600 => "hours",
        60 => "minutes",
        _ => "seconds",
    }
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be greater than zero".into())
    } else {
        Ok(d)
    }
}

fn minutes(text: &str) -> Result<Duration, String> {
    with_unit(text, Duration::from_secs(60)).and_then(positive)
}

fn hours(text: &str) -> Result<Duration, String> {
    with_unit(text, Duration::from_secs(3600)).and_then(positive)
}

fn seconds(text: &str) -> Result<Duration, String> {
    with_unit(text, Duration::from_secs(1)).and_then(positive)
}

/// A group member's session timeout: within what brokers accept by default
/// (Kafka's group.min.session.timeout.ms and a bound well under its maximum).
fn session_timeout(text: &str) -> Result<Duration, String> {
    let timeout = seconds(text)?;
    if !(Duration::from_secs(6)..=Duration::from_secs(300)).contains(&timeout) {
        return Err(format!(
            "{} is outside 6s to 300s: brokers refuse shorter, and a longer one leaves a dead \
             member's partitions unread that long",
            humantime::format_duration(timeout)
        ));
    }
    Ok(timeout)
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_default_unit_or_an_explicit_one() {
        assert_eq!(minutes("30"), Ok(Duration::from_secs(1800)));
        assert_eq!(minutes("45m"), Ok(Duration::from_secs(2700)));
        assert_eq!(minutes("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(hours("2"), Ok(Duration::from_secs(7200)));
        assert_eq!(hours("1.5"), Ok(Duration::from_secs(5400)));
        assert_eq!(hours("90m"), Ok(Duration::from_secs(5400)));
        assert!(minutes("0").is_err());
        assert!(minutes("soon").unwrap_err().contains("like 45m"));
    }

    #[test]
    fn repartition_needs_both_topics_and_a_positive_interval() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["sessionize", "repartition"].iter().chain(args))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(parse(&["--from-topic", "raw", "--to-topic", "clicks"]).is_ok());
        assert!(parse(&["--from-topic", "raw"]).unwrap_err().contains("--to-topic"));
        let zero = ["--from-topic", "raw", "--to-topic", "clicks", "--commit-interval", "0"];
        assert!(parse(&zero).is_err());
    }

    #[test]
    fn scale_out_takes_a_session_timeout_brokers_accept_and_no_test_mode() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["sessionize", "run"].iter().chain(args))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(parse(&["--scale-out", "--group-session-timeout", "6s"]).is_ok());
        let short = parse(&["--scale-out", "--group-session-timeout", "2s"]).unwrap_err();
        assert!(short.contains("outside 6s to 300s"), "{short}");
        assert!(parse(&["--scale-out", "--test-mode"]).unwrap_err().contains("cannot be used"));
        assert!(parse(&["--group-session-timeout", "10s"]).is_err());
    }

    #[test]
    fn large_durations_are_kept_or_refused_never_wrapped() {
        // 2^32 minutes: once truncated to zero minutes, then refused as zero.
        assert_eq!(minutes("4294967296"), Ok(Duration::from_secs(60 << 32)));
        assert!(seconds("1e30").unwrap_err().contains("too large"));
        assert!(hours("18446744073709551615").unwrap_err().contains("too large"));
    }

    #[test]
    fn counts_and_sizes_are_range_checked_by_the_parser() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["sessionize", "run", "--test-mode"].iter().chain(args))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for (flag, value, allowed) in [
            ("--plugin-memory-mib", "0", "1..=4096"),
            ("--plugin-memory-mib", "4097", "1..=4096"),
            ("--max-component-mib", "0", "1..=4096"),
            ("--max-events-per-batch", "0", "1..=1000000"),
            ("--plugin-attempts", "0", "1.."),
        ] {
            let error = parse(&[flag, value]).unwrap_err();
            assert!(error.contains(&format!("{value} is not in {allowed}")), "{error}");
        }
        assert!(parse(&["--plugin-memory-mib", "4096"]).is_ok());
        let error = Cli::try_parse_from(["sessionize", "produce", "--partitions", "0"])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains("1..=10000"), "{error}");
    }

    #[test]
    fn plugin_params_are_key_value() {
        assert_eq!(key_value("logout_page=bye"), Ok(("logout_page".into(), "bye".into())));
        assert!(key_value("=x").is_err());
        assert!(key_value("x").is_err());
    }
}

/// `--sink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    /// The Iceberg tables.
    Iceberg,
    /// A Kafka topic.
    Kafka,
}

/// `--on-plugin-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnPluginFailure {
    /// Roll back to the previous rules version.
    Rollback,
    /// Stop at the last checkpoint.
    Stop,
}

/// A `u32` flag's parser that checks the range on the number as given, so a
/// value past `u32::MAX` is told the allowed range too, not only "too large".
fn u32_in(range: impl std::ops::RangeBounds<u64>) -> clap::builder::RangedU64ValueParser<u32> {
    clap::builder::RangedU64ValueParser::new().range(range)
}
