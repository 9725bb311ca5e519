//! The flags of `sessionize plugin test`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sessionize::engine::EngineConfig;
use sessionize::rules::contract::Settings;

/// Rules over a file, with no job, Kafka or table.
#[derive(Debug, Clone, Args)]
pub struct PluginTestArgs {
    /// The rules to try: a component (.wasm), or `builtin` for the default rules.
    #[arg(value_name = "PLUGIN|builtin")]
    pub plugin: PathBuf,
    /// JSON lines (gzip too) to sessionize.
    #[arg(long, value_name = "PATH")]
    pub input: PathBuf,
    /// Compare with these rules (a component, or `builtin`) and print what
    /// changes, instead of the sessions.
    #[arg(long, value_name = "PLUGIN|builtin")]
    pub against: Option<PathBuf>,
    /// Examples shown per kind of change.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
    /// Silence that ends a session: minutes, or with a unit (45m, 90s, 1h).
    #[arg(long, default_value = "30", value_parser = super::minutes)]
    pub inactivity_timeout: Duration,
    /// Longest a session may last: hours, or with a unit (90m, 2h).
    #[arg(long, default_value = "2", value_parser = super::hours)]
    pub max_session_duration: Duration,
    /// How late an event may arrive behind the newest: minutes, or with a unit.
    #[arg(long, default_value = "10", value_parser = super::minutes)]
    pub allowed_lateness: Duration,
    /// A parameter for the rules, `key=value` (repeatable; both rules get them).
    #[arg(long = "plugin-param", value_name = "KEY=VALUE", value_parser = super::key_value)]
    pub plugin_params: Vec<(String, String)>,
}

impl PluginTestArgs {
    /// What the rules are configured with.
    pub fn settings(&self) -> Settings {
        Settings {
            inactivity_timeout_ms: millis(self.inactivity_timeout),
            max_duration_ms: millis(self.max_session_duration),
            params: self.plugin_params.clone(),
        }
    }

    /// The engine, as `run` sets it up.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            allowed_lateness_ms: millis(self.allowed_lateness),
            ..EngineConfig::default()
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
