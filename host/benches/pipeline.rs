//! Benchmark: a bounded run of 1,000,000 generated events, file to Iceberg, with
//! the default rules as the component and compiled natively, and the
//! conversion rules (a declared field and four attribute columns) as the
//! component.
//!
//!     guest/build.sh && cargo bench -p sessionize --bench pipeline
//!
//! Each variant runs in its own child process so its peak memory is its own.
//! Set `BENCH_EVENTS` to change the size, `BENCH_ROUNDS` the repetitions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

mod common;

use anyhow::{bail, Context, Result};
use default_rules::DefaultRules;
use sessionize::engine::{Engine, EngineConfig};
use sessionize::job::bounded::{run_bounded, Shard};
use sessionize::job::Intake;
use sessionize::rules::{ComponentLoader, RulesRuntime, SandboxLimits};
use sessionize::sink::iceberg::{IcebergSink, SinkConfig};
use sessionize::source::file::FileSource;
use sessionize::source::generate::generate;
use sessionize_native::NativeRules;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--variant") {
        let variant = args.get(i + 1).context("--variant needs a value")?;
        let input = PathBuf::from(args.get(i + 2).context("--variant needs an input")?);
        return run_variant(variant, &input);
    }
    let events: u64 =
        std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rounds: usize =
        std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir = std::env::temp_dir().join("sessionize-bench");
    std::fs::create_dir_all(&dir)?;
    let input = dir.join(format!("events-{events}.jsonl"));
    if !input.exists() {
        let config = common::bench_events(events);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&input)?);
        generate(&config, &mut out)?;
        std::io::Write::flush(&mut out)?;
    }
    println!("input: {} ({} MB)", input.display(), std::fs::metadata(&input)?.len() >> 20);
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>10}",
        "rules", "events/s", "wall ms", "plugin ms", "peak MiB"
    );
    let exe = std::env::current_exe()?;
    for variant in ["component", "native", "conversion"] {
        for _ in 0..rounds {
            let status = Command::new(&exe).args(["--variant", variant]).arg(&input).status()?;
            if !status.success() {
                bail!("{variant} run failed");
            }
        }
    }
    Ok(())
}

fn run_variant(variant: &str, input: &Path) -> Result<()> {
    let settings = common::default_settings();
    let mut rules: Box<dyn RulesRuntime> = match variant {
        "component" | "conversion" => {
            let path = if variant == "component" {
                common::default_component()
            } else {
                common::conversion_component()
            };
            let loader = Arc::new(ComponentLoader::new()?);
            Box::new(
                loader
                    .load_file(&path, &settings, SandboxLimits::default())
                    .with_context(|| format!("{}: run guest/build.sh", path.display()))?,
            )
        }
        "native" => Box::new(NativeRules::<DefaultRules>::new("default-rules", &settings)?),
        other => bail!("unknown variant {other}"),
    };
    let warehouse =
        std::env::temp_dir().join(format!("sessionize-bench/wh-{variant}-{}", std::process::id()));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = Instant::now();
    let mut sink = runtime.block_on(IcebergSink::open(&SinkConfig::new(&warehouse)))?;
    let mut engine = Engine::new(EngineConfig::default());
    let source = FileSource::open(input)?;
    // One engine: the bench measures the per-event path, not the split.
    let shards = vec![Shard { engine: &mut engine, rules: rules.as_mut() }];
    let summary = run_bounded(
        runtime.handle(),
        source,
        &Intake::default(),
        shards,
        &mut sink,
        HashMap::new(),
        Default::default(),
    )?;
    let wall = started.elapsed();
    let _ = std::fs::remove_dir_all(&warehouse);
    println!(
        "{:<10} {:>12.0} {:>12} {:>12} {:>10}",
        variant,
        summary.read as f64 / wall.as_secs_f64(),
        wall.as_millis(),
        summary.engine.rules_time.as_millis(),
        common::peak_rss_mib()
    );
    Ok(())
}
