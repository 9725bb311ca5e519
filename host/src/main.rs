//! The `sessionize` command: parses the command line and dispatches to the library.

mod cli;
mod terminal;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{
    Cli, Command, GenerateArgs, HealthcheckArgs, LogFormat, MaintainArgs, PluginCommand,
    ProduceArgs, RepartitionArgs, RunArgs,
};
use sessionize::job::{self, Input, RunProgress, Summary};
use sessionize::sink::iceberg::maintain::TableMaintenance;
use sessionize::source::file::FileSource;
use sessionize::source::generate::generate;
use sessionize::tools::produce::{ensure_topic, produce};
use sessionize::tools::repartition::{repartition, Repartition};
use terminal::ProgressDisplay;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = match &cli.command {
        Command::Run(args) => args.log_level.as_str(),
        Command::Generate(_) => "warn",
        Command::Produce(_) | Command::Repartition(_) => "info",
        Command::Plugin(_) => "warn",
        Command::Maintain(_) => "info",
        Command::Query(_) | Command::Healthcheck(_) => "warn",
    };
    let filter = EnvFilter::try_from_env("SESSIONIZE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("{log_level},iceberg=warn,sqlx=warn,opendal=error"))
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // One JSON object per line, for log shippers.
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let progress = cli.log_format == LogFormat::Text && std::io::stderr().is_terminal();
    let outcome = match cli.command {
        Command::Run(args) => run(&args, progress),
        Command::Generate(args) => generate_command(&args),
        Command::Produce(args) => produce_command(&args),
        Command::Repartition(args) => repartition_command(&args),
        Command::Plugin(command) => plugin_command(&command),
        Command::Maintain(args) => maintain_command(&args),
        Command::Query(args) => query_command(&args),
        Command::Healthcheck(args) => healthcheck_command(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// `error` and its causes, `: `-separated, each said once: a cause whose text
/// an earlier message already contains (many errors print their source, and
/// return it as their source too) is left out.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// The async runtime of `run` and `maintain` (two workers: the heavy work
/// runs on the job's own threads).
fn two_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `sessionize run`; a bounded run shows its progress on a terminal when
/// `progress` says one is watching.
fn run(args: &RunArgs, progress: bool) -> Result<()> {
    args.check().map_err(anyhow::Error::msg)?;
    let runtime = two_thread_runtime()?;
    let mut config = args.job_config();
    config.admin.token = args.token.token()?;
    let input = args.input();
    let display = match (&input, progress) {
        (Input::File(_) | Input::Sample, true) => {
            let counters = Arc::new(RunProgress::default());
            config.progress = Some(counters.clone());
            Some(ProgressDisplay::show(counters))
        }
        _ => None,
    };
    let outcome = runtime.block_on(job::run(&config, input));
    drop(display);
    let summary = outcome?;
    println!("{summary}");
    if let Summary::Bounded(_) = summary {
        println!(
            "table:             {}.{} in {}",
            config.sink.database, config.sink.table, config.sink.warehouse
        );
    }
    Ok(())
}

/// `sessionize healthcheck`.
fn healthcheck_command(args: &HealthcheckArgs) -> Result<()> {
    let answer = sessionize::tools::healthcheck::check(&args.url, args.timeout)?;
    println!("{answer}");
    Ok(())
}

/// `sessionize maintain`.
fn maintain_command(args: &MaintainArgs) -> Result<()> {
    let runtime = two_thread_runtime()?;
    let config = args.table.sink_config();
    runtime.block_on(async {
        let tables = TableMaintenance::open(&config)
            .await
            .with_context(|| format!("opening the tables in {}", config.warehouse))?;
        if !args.maintenance.no_compaction {
            for report in tables.compact(args.maintenance.compaction()).await? {
                println!(
                    "compacted {}: {} files in {} partitions -> {} files ({} rows, {} -> {} \
                     bytes, {} -> {} manifests, {} lost races)",
                    report.table,
                    report.files_removed,
                    report.partitions,
                    report.files_added,
                    report.rows,
                    report.bytes_removed,
                    report.bytes_added,
                    report.manifests.0,
                    report.manifests.1,
                    report.lost_races
                );
            }
        }
        if !args.maintenance.no_expiry {
            for report in tables.expire(&args.maintenance.expiry()).await? {
                println!(
                    "expired {}: {} -> {} snapshots; deleted {} data files ({} bytes), {} \
                     manifests and lists, {} metadata files, {} orphan files",
                    report.table,
                    report.snapshots.0,
                    report.snapshots.1,
                    report.data_files_deleted,
                    report.bytes_deleted,
                    report.manifests_deleted,
                    report.metadata_files_deleted,
                    report.orphans_deleted
                );
            }
        }
        Ok(())
    })
}

/// `sessionize query`: the rows to stdout, `--stats` to stderr.
#[cfg(feature = "query")]
fn query_command(args: &cli::QueryArgs) -> Result<()> {
    use sessionize::query::{run_query, write_result};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let config = args.table.sink_config();
    let result = runtime.block_on(run_query(&config, &args.sql, args.stats))?;
    write_result(&result, args.output_format(), &mut std::io::stdout().lock())?;
    for scan in &result.scans {
        eprintln!("{scan}");
    }
    if args.stats && result.scans.is_empty() {
        eprintln!("files scanned: none (the query read no table)");
    }
    Ok(())
}

/// `sessionize query` in a build without the query engine.
#[cfg(not(feature = "query"))]
fn query_command(_args: &cli::QueryArgs) -> Result<()> {
    anyhow::bail!(
        "this sessionize was built without the query engine (DataFusion, the cargo feature \
         `query`, left out of the default build because it doubles a cold build): rebuild with \
         `cargo build --release --features query`, or install with \
         `cargo install --path host --features query`"
    )
}

/// `sessionize plugin ...`.
fn plugin_command(command: &PluginCommand) -> Result<()> {
    let Some((call, job)) = command.call() else {
        return match command {
            PluginCommand::Test(args) => plugin_test_command(args),
            PluginCommand::New { name, lang, dir, sdk } => {
                plugin_new_command(name, *lang, dir, sdk)
            }
            _ => Ok(()),
        };
    };
    let token = job.token.token()?;
    let answer = sessionize::admin::ask_job(&job.state_dir, token.as_deref(), &call, job.timeout)?;
    println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    Ok(())
}

/// `sessionize plugin new`.
fn plugin_new_command(
    name: &str,
    lang: cli::PluginLang,
    dir: &std::path::Path,
    sdk: &std::path::Path,
) -> Result<()> {
    use sessionize::tools::scaffold::{new_js_plugin, new_python_plugin, new_rust_plugin};
    // The default --sdk names the Rust SDK; the others are beside it.
    let beside = |other: &str| match sdk.file_name() {
        Some(last) if last == "sdk" => sdk.with_file_name(other),
        _ => sdk.to_owned(),
    };
    let project = match lang {
        cli::PluginLang::Rust => new_rust_plugin(name, dir, sdk)?,
        cli::PluginLang::Python => new_python_plugin(name, dir, &beside("python-sdk"))?,
        cli::PluginLang::Js => new_js_plugin(name, dir, &beside("js-sdk"))?,
    };
    let next = match lang {
        cli::PluginLang::Rust => "cargo test, then build, try, deploy",
        cli::PluginLang::Python | cli::PluginLang::Js => "./test.sh, then ./build.sh, try, deploy",
    };
    println!("made {}: see its README.md ({next})", project.display());
    Ok(())
}

/// `sessionize plugin test`: the sessions as JSON lines, or with --against
/// what changes, on stdout.
fn plugin_test_command(args: &cli::PluginTestArgs) -> Result<()> {
    use sessionize::job::{load_rules, rules_loader, Intake};
    use sessionize::rules::lifecycle::DEFAULT_MAX_COMPONENT_BYTES;
    use sessionize::tools::plugin_test::{run_rules, write_comparison, write_sessions};
    let runtime = two_thread_runtime()?;
    let limits = sessionize::rules::SandboxLimits::default();
    let compiled = sessionize::job::user_compiled_dir();
    let loader =
        rules_loader(args.settings(), limits, DEFAULT_MAX_COMPONENT_BYTES, compiled.as_deref())?;
    let intake = Intake::default();
    let run = |plugin: &std::path::Path| -> Result<_> {
        let plugin = (plugin != std::path::Path::new("builtin")).then_some(plugin);
        let mut rules = load_rules(&loader, plugin)?;
        Ok(run_rules(runtime.handle(), &mut rules, &args.input, args.engine(), &intake)?)
    };
    let candidate = run(&args.plugin)?;
    let mut out = std::io::stdout().lock();
    match &args.against {
        Some(other) => {
            let other = run(other)?;
            write_comparison(&mut out, &other, &candidate, args.examples)?;
        }
        None => {
            write_sessions(&mut out, &candidate)?;
            eprintln!(
                "{}: {} sessions from {} events read",
                candidate.rule_version,
                candidate.sessions.len(),
                candidate.summary.read
            );
        }
    }
    Ok(())
}

/// `sessionize produce`.
fn repartition_command(args: &RepartitionArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ensure_topic(&args.kafka_servers, &args.to_topic, args.partitions))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let config = Repartition {
        servers: args.kafka_servers.clone(),
        from: args.from_topic.clone(),
        to: args.to_topic.clone(),
        group: args.kafka_group.clone(),
        commit_every: args.commit_interval,
    };
    tracing::info!(from = config.from, to = config.to, "repartitioning by uuid until stopped");
    let done = repartition(&config, &stop)?;
    println!(
        "wrote {} events to {} keyed by uuid, {} without a uuid unkeyed",
        done.keyed, config.to, done.unkeyed
    );
    Ok(())
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
            let mut config = args.generator.config().map_err(|e| anyhow!(e))?;
            if !args.fast {
                config.start_ms = sessionize::clock::wall_clock_ms();
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

/// `sessionize generate`.
fn generate_command(args: &GenerateArgs) -> Result<()> {
    let config = args.generator.config().map_err(|e| anyhow!(e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening the tables: {source}")]
    struct PrintsItsSource {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let locked = std::io::Error::other("database is locked");
        let error = anyhow::Error::new(PrintsItsSource { source: locked }).context("starting");
        assert_eq!(error_chain(&error), "starting: opening the tables: database is locked");
        let plain = anyhow!("no such file").context("cannot read x").context("loading");
        assert_eq!(error_chain(&plain), "loading: cannot read x: no such file");
    }
}
