//! What the benchmarks share: the data set, the rules, the memory probe.

use std::path::PathBuf;

use sessionize::generate::GeneratorConfig;
use sessionize::plugin::contract::Settings;

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

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
pub fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1024)
}
