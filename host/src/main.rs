//! The `sessionize` command.

mod cli;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{
    Cli, Command, GenerateArgs, GeneratorArgs, OnPluginFailure, PluginCommand, ProduceArgs, RunArgs,
};
use sessionize::admin::{new_token, publish_credentials, serve, watch_plugin_file};
use sessionize::checkpoint::{Checkpointer, Resumed};
use sessionize::engine::{Engine, EngineConfig};
use sessionize::generate::{generate, GeneratorConfig};
use sessionize::pipeline::{run_bounded, Output};
use sessionize::plugin::contract::Settings;
use sessionize::plugin::{
    ComponentRules, PluginError, PluginLimits, RulesArchive, RulesEngine, RulesRuntime, RulesSlot,
};
use sessionize::produce::{ensure_topic, produce};
use sessionize::sink::iceberg::{IcebergSink, SinkConfig};
use sessionize::source::file::FileSource;
use sessionize::source::kafka::{KafkaConfig, KafkaSource};
use sessionize::state::StateStore;
use sessionize::streaming::{
    run_streaming, FaultPolicy, RulesLoader, StreamConfig, StreamError, StreamParts, StreamSummary,
    SwapControl,
};

/// The default rules component, built from `guest/default-rules`.
#[cfg(embedded_rules)]
const DEFAULT_RULES: Option<&[u8]> = Some(include_bytes!(env!("SESSIONIZE_DEFAULT_RULES")));
#[cfg(not(embedded_rules))]
const DEFAULT_RULES: Option<&[u8]> = None;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = match &cli.command {
        Command::Run(args) => args.log_level.as_str(),
        Command::Generate(_) => "warn",
        Command::Produce(_) => "info",
        Command::Plugin(_) => "warn",
    };
    let filter = EnvFilter::try_from_env("SESSIONIZE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{log_level},iceberg=warn,sqlx=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let outcome = match cli.command {
        Command::Run(args) => run(*args),
        Command::Generate(args) => generate_command(&args),
        Command::Produce(args) => produce_command(&args),
        Command::Plugin(command) => plugin_command(command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> Result<()> {
    let source = if args.test_mode && args.kafka_servers.is_none() {
        let mut sample = Vec::new();
        generate(&GeneratorConfig::sample(), &mut sample).context("generating the sample")?;
        FileSource::from_bytes("test-mode sample", sample)
    } else if let Some(path) = &args.input {
        FileSource::open(path)?
    } else {
        return run_kafka(args).await;
    };
    let (engine, settings, limits) = rules_setup(&args)?;
    // Plugin calls block: never on an async task.
    let mut rules = tokio::task::block_in_place(|| load_rules(&args, &engine, &settings, limits))?;
    tracing::info!(rules = rules.rule_version(), "rules loaded");
    let mut sink = open_sink(&args).await?;
    let mut engine = Engine::new(EngineConfig {
        allowed_lateness_ms: duration_ms(args.allowed_lateness),
        ..EngineConfig::default()
    });
    let props = HashMap::from([
        ("sessionize.rule-version".to_owned(), rules.rule_version().to_owned()),
        ("sessionize.source".to_owned(), source.name().to_owned()),
    ]);
    let handle = tokio::runtime::Handle::current();
    let summary = tokio::task::block_in_place(|| {
        run_bounded(&handle, source, &mut engine, &mut rules, Output::Iceberg(&mut sink), props)
    })?;
    println!("{summary}");
    println!(
        "table:             {}.{} in {}",
        args.iceberg_database,
        args.iceberg_table,
        args.warehouse.display()
    );
    Ok(())
}

/// The streaming job: Kafka to Iceberg with checkpoints, until SIGINT/SIGTERM
/// (or the topic's end with `--test-mode`).
async fn run_kafka(args: RunArgs) -> Result<()> {
    let (engine, settings, limits) = rules_setup(&args)?;
    // Plugin calls block: never on an async task.
    let given = tokio::task::block_in_place(|| load_rules(&args, &engine, &settings, limits))?;
    let archive = Arc::new(RulesArchive::open(&args.state_dir)?);
    let mut rules = RulesSlot::new(given);
    tracing::info!(rules = rules.rule_version(), "rules loaded");
    let mut sink = open_sink(&args).await?;
    let store = StateStore::open(&args.state_dir)?;
    let config = EngineConfig {
        allowed_lateness_ms: duration_ms(args.allowed_lateness),
        ..EngineConfig::default()
    };
    let (mut checkpointer, resumed) = Checkpointer::recover(store, &mut sink, config).await?;
    checkpointer.set_given_rules(rules.rule_version());
    if let Some(live) = tokio::task::block_in_place(|| {
        deployed_before_restart(&archive, &resumed, rules.rule_version()).and_then(|bytes| {
            engine
                .load(&bytes, &settings, limits)
                .map_err(|error| tracing::warn!(%error, "rules of the last checkpoint refused"))
                .ok()
        })
    }) {
        tracing::info!(rules = live.rule_version(), "resuming with the rules deployed live");
        rules.resume(live);
    }
    let kept = archive.clone();
    let loader: RulesLoader = Arc::new(move |path: &Path| {
        let bytes = std::fs::read(path)
            .map_err(|source| PluginError::Read { path: path.display().to_string(), source })?;
        let loaded = engine.load(&bytes, &settings, limits)?;
        // Kept so that a restart continues with it once a checkpoint was cut by it.
        if let Err(error) = kept.keep(loaded.rule_version(), &bytes) {
            tracing::warn!(%error, "a restart would not find these rules");
        }
        Ok(loaded)
    });
    tracing::info!(
        checkpoint = resumed.checkpoint_id,
        open_users = resumed.open_users,
        offsets = ?resumed.offsets,
        "state recovered"
    );
    let kafka = KafkaConfig {
        servers: args.kafka_servers.clone().unwrap_or_else(|| "localhost:9092".into()),
        topic: args.kafka_topic.clone(),
        group: args.kafka_group.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let stream = StreamConfig {
        max_events_per_batch: args.max_events_per_batch.max(1),
        checkpoint_interval: args.checkpoint_interval,
        idle_timeout: args.idle_timeout,
        until_end: args.test_mode,
        rules_attempts: args.plugin_attempts,
        on_rules_failure: match args.on_plugin_failure {
            OnPluginFailure::Rollback => FaultPolicy::Rollback,
            OnPluginFailure::Stop => FaultPolicy::Stop,
        },
    };
    let (requests_tx, requests) = std::sync::mpsc::channel();
    let token = args.admin_token.clone().unwrap_or_else(new_token);
    let admin = serve(args.admin_addr, token.clone(), requests_tx.clone()).await?;
    publish_credentials(&args.state_dir, admin, &token)?;
    if args.plugin_watch {
        if let Some(path) = args.plugin.clone() {
            watch_plugin_file(path, requests_tx);
        }
    }
    let swap = Some(SwapControl { requests, loader });
    let handle = tokio::runtime::Handle::current();
    let offsets = resumed.offsets.clone();
    let summary = tokio::task::block_in_place(|| -> Result<StreamSummary> {
        let source = KafkaSource::connect(&kafka, &offsets, Duration::from_secs(30))?;
        let parts = StreamParts {
            source,
            engine: resumed.engine,
            checkpointer,
            rules: &mut rules,
            sink: &mut sink,
            swap,
        };
        let outcome = run_streaming(&handle, parts, stream, offsets.clone(), &stop);
        if let Err(StreamError::RulesFailed { rules, .. }) = &outcome {
            // Not to be resumed on restart: the restart would fail the same way.
            if let Err(error) = archive.mark_failed(rules) {
                tracing::warn!(%error, "a restart may resume the failed rules");
            }
        }
        Ok(outcome?)
    })?;
    println!("{summary}");
    Ok(())
}

async fn open_sink(args: &RunArgs) -> Result<IcebergSink> {
    let sink_config = SinkConfig {
        warehouse: args.warehouse.clone(),
        database: args.iceberg_database.clone(),
        table: args.iceberg_table.clone(),
        rejected_table: "rejected_events".into(),
    };
    IcebergSink::open(&sink_config)
        .await
        .with_context(|| format!("opening the Iceberg tables in {}", args.warehouse.display()))
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The plugin engine, settings and limits every rules version of this job uses.
fn rules_setup(args: &RunArgs) -> Result<(Arc<RulesEngine>, Settings, PluginLimits)> {
    let settings = Settings {
        inactivity_timeout_ms: duration_ms(args.inactivity_timeout),
        max_duration_ms: duration_ms(args.max_session_duration),
        params: args.plugin_params.clone(),
    };
    let limits = PluginLimits {
        memory_bytes: args.plugin_memory_mib << 20,
        call_timeout: args.plugin_timeout,
    };
    Ok((Arc::new(RulesEngine::new()?), settings, limits))
}

/// `sessionize plugin ...`: one request to the running job's admin endpoint.
fn plugin_command(command: PluginCommand) -> Result<()> {
    let (job, method, route, body) = match &command {
        PluginCommand::Deploy { path, job } => {
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("cannot read plugin {}", path.display()))?;
            (job, "POST", "deploy", Some(serde_json::json!({ "path": path })))
        }
        PluginCommand::Status { job } => (job, "GET", "status", None),
        PluginCommand::Rollback { job } => (job, "POST", "rollback", Some(serde_json::json!({}))),
    };
    let addr_file = job.state_dir.join("admin.addr");
    let addr = std::fs::read_to_string(&addr_file).with_context(|| {
        format!(
            "no running job found: {} is missing (is `sessionize run` up with --state-dir {}?)",
            addr_file.display(),
            job.state_dir.display()
        )
    })?;
    let token = match &job.admin_token {
        Some(token) => token.clone(),
        None => std::fs::read_to_string(job.state_dir.join("admin.token"))
            .context("cannot read the admin token: pass --admin-token")?,
    };
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{}/plugin/{route}", addr.trim());
    let auth = format!("Bearer {}", token.trim());
    let response = match body {
        Some(body) if method == "POST" => {
            agent.post(&url).header("authorization", &auth).send_json(body)
        }
        _ => agent.get(&url).header("authorization", &auth).call(),
    }
    .with_context(|| format!("cannot reach the job at {url}"))?;
    let ok = response.status().is_success();
    let text = response.into_body().read_to_string().context("reading the job's answer")?;
    let value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if !ok {
        let error = value
            .get("error")
            .and_then(|e| e.as_str())
            .map_or_else(|| value.to_string(), str::to_owned);
        bail!("{error}");
    }
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    Ok(())
}

/// The rules the command line gives: `--plugin`, or the built-in default rules.
fn load_rules(
    args: &RunArgs,
    engine: &Arc<RulesEngine>,
    settings: &Settings,
    limits: PluginLimits,
) -> Result<ComponentRules> {
    let rules = match (&args.plugin, DEFAULT_RULES) {
        (Some(path), _) => engine
            .load_file(path, settings, limits)
            .with_context(|| format!("loading plugin {}", path.display()))?,
        (None, Some(bytes)) => {
            engine.load(bytes, settings, limits).context("loading the built-in default rules")?
        }
        (None, None) => bail!(
            "this binary was built without the default rules: run guest/build.sh and rebuild, \
             or pass --plugin PATH"
        ),
    };
    Ok(rules)
}

/// The component a restarted job continues with, if its last checkpoint was
/// cut by rules deployed live and the command line gives what it gave at the
/// previous start. A changed `--plugin` wins: the operator asked for it.
fn deployed_before_restart(
    archive: &RulesArchive,
    resumed: &Resumed,
    given: &str,
) -> Option<Vec<u8>> {
    let checkpointed = resumed.rule_version.as_str();
    if checkpointed.is_empty() || checkpointed == given {
        return None;
    }
    if resumed.given_rules != given {
        tracing::info!(
            checkpointed,
            given,
            "the rules given have changed since the last start: using them"
        );
        return None;
    }
    let bytes = archive.find(checkpointed);
    if bytes.is_none() {
        tracing::warn!(
            checkpointed,
            given,
            "rules of the last checkpoint not in the state directory: using the rules given"
        );
    }
    bytes
}

fn generator_config(args: &GeneratorArgs) -> Result<GeneratorConfig> {
    let config = if args.sample {
        GeneratorConfig::sample()
    } else {
        GeneratorConfig {
            num_users: args.num_users,
            rate: args.rate,
            duration_s: args.duration.as_secs(),
            malformed_rate: args.malformed_rate,
            late_rate: args.late_rate,
            seed: args.seed,
            max_events: args.events,
            ..GeneratorConfig::sample()
        }
    };
    for (flag, rate) in
        [("--malformed-rate", config.malformed_rate), ("--late-rate", config.late_rate)]
    {
        if !(0.0..=1.0).contains(&rate) {
            bail!("{flag} must be between 0 and 1, got {rate}");
        }
    }
    if config.num_users == 0 || config.rate.is_nan() || config.rate <= 0.0 {
        bail!("--num-users and --rate must be greater than zero");
    }
    Ok(config)
}

fn produce_command(args: &ProduceArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ensure_topic(&args.kafka_servers, &args.topic, args.partitions))?;
    let (source, pace) = match &args.input {
        Some(path) => (FileSource::open(path)?, false),
        None => {
            let mut config = generator_config(&args.generator)?;
            if !args.fast {
                config.start_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, duration_ms);
            }
            let mut lines = Vec::new();
            generate(&config, &mut lines).context("generating events")?;
            (FileSource::from_bytes("generated", lines), !args.fast)
        }
    };
    let started = std::time::Instant::now();
    let sent = produce(&args.kafka_servers, &args.topic, source, pace)?;
    println!("sent {sent} events to {} in {:.2?}", args.topic, started.elapsed());
    Ok(())
}

fn generate_command(args: &GenerateArgs) -> Result<()> {
    let config = generator_config(&args.generator)?;
    let written = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let n = generate(&config, &mut out)?;
            out.flush()?;
            n
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = generate(&config, &mut out)?;
            out.flush()?;
            n
        }
    };
    tracing::info!(written, "events generated");
    Ok(())
}
