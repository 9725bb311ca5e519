//! The active rules and their history: swapping in a new version, and rolling
//! back, without the engine noticing (it only sees [`RulesRuntime`]).

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::contract::{Batch, BatchResult};
use super::{ComponentRules, PluginError, RulesRuntime};

/// One change of rules, for `plugin status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapEvent {
    /// `started`, `deployed`, `rolled back` or `refused`.
    pub action: String,
    /// The version concerned.
    pub rule_version: String,
    /// When, seconds since the epoch.
    pub at_unix_s: u64,
    /// Why, for refusals.
    pub detail: Option<String>,
}

/// The rules in force, the ones before them, and what happened.
pub struct RulesSlot {
    active: ComponentRules,
    previous: Vec<ComponentRules>,
    history: Vec<SwapEvent>,
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl RulesSlot {
    /// Starts with `rules`.
    pub fn new(rules: ComponentRules) -> Self {
        let history = vec![SwapEvent {
            action: "started".into(),
            rule_version: rules.rule_version().to_owned(),
            at_unix_s: now_s(),
            detail: None,
        }];
        Self { active: rules, previous: Vec::new(), history }
    }

    /// Checks `candidate` on a sample batch (a dry run: its output is dropped),
    /// then makes it the active rules. On failure the running rules stay.
    pub fn deploy(
        &mut self,
        mut candidate: ComponentRules,
        texts: &[Arc<str>],
        sample: Option<&Batch>,
    ) -> Result<String, PluginError> {
        if let Some(sample) = sample {
            let mut dry = sample.clone();
            if let Err(error) = candidate.process(texts, &mut dry) {
                self.record("refused", candidate.rule_version(), Some(error.to_string()));
                return Err(PluginError::Refused(format!("dry run failed: {error}")));
            }
        }
        let version = candidate.rule_version().to_owned();
        let old = std::mem::replace(&mut self.active, candidate);
        self.previous.push(old);
        self.record("deployed", &version, None);
        Ok(version)
    }

    /// Makes the previous rules active again.
    pub fn rollback(&mut self, reason: Option<String>) -> Result<String, PluginError> {
        let Some(previous) = self.previous.pop() else {
            return Err(PluginError::Refused("no previous version to roll back to".into()));
        };
        self.active = previous;
        let version = self.active.rule_version().to_owned();
        self.record("rolled back", &version, reason);
        Ok(version)
    }

    /// Notes a refused candidate that never got as far as [`RulesSlot::deploy`].
    pub fn refused(&mut self, what: &str, error: &PluginError) {
        self.record("refused", what, Some(error.to_string()));
    }

    /// The history, oldest first.
    pub fn history(&self) -> &[SwapEvent] {
        &self.history
    }

    fn record(&mut self, action: &str, version: &str, detail: Option<String>) {
        self.history.push(SwapEvent {
            action: action.into(),
            rule_version: version.into(),
            at_unix_s: now_s(),
            detail,
        });
    }
}

impl RulesRuntime for RulesSlot {
    fn rule_version(&self) -> &str {
        self.active.rule_version()
    }

    fn process(
        &mut self,
        texts: &[Arc<str>],
        batch: &mut Batch,
    ) -> Result<BatchResult, PluginError> {
        self.active.process(texts, batch)
    }
}
