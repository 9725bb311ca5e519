//! The active rules and their history: swapping in a new version, and rolling
//! back, without the engine noticing (it only sees [`RulesRuntime`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Sample;
use crate::rules::contract::{AttributeType, Batch, BatchResult, Declarations, SessionAttribute};
use crate::rules::{RulesError, RulesRuntime, Texts};

/// Rules of any runtime, as the slot keeps them.
type BoxedRules = Box<dyn RulesRuntime>;

/// One change of rules, for `plugin status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapEvent {
    /// `started`, `resumed`, `deployed`, `rolled back` or `refused`.
    pub action: String,
    /// The version concerned.
    pub rule_version: String,
    /// When, seconds since the epoch.
    pub at_unix_s: u64,
    /// Why, for refusals and rollbacks.
    pub detail: Option<String>,
    /// How long the switch held up the event flow (dry run included), for
    /// deploys and rollbacks, microseconds.
    pub pause_us: Option<u64>,
}

/// Versions kept for rollback; older ones are dropped.
const VERSIONS_KEPT: usize = 8;
/// History entries kept for `plugin status`.
const HISTORY_KEPT: usize = 256;

/// Hears how long each call into the rules in force took (the job's metrics).
pub type CallObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// The rules in force, the ones before them, and what happened.
pub struct RulesSlot {
    active: BoxedRules,
    previous: Vec<BoxedRules>,
    history: VecDeque<SwapEvent>,
    calls: Option<CallObserver>,
}

fn now_s() -> u64 {
    crate::clock::wall_clock_s() as u64
}

impl RulesSlot {
    /// Starts with `rules`.
    pub fn new(rules: impl RulesRuntime + 'static) -> Self {
        let mut slot = Self {
            active: Box::new(rules),
            previous: Vec::new(),
            history: VecDeque::new(),
            calls: None,
        };
        let version = slot.active.rule_version().to_owned();
        slot.record("started", &version, None, None);
        slot
    }

    /// Reports the duration of every call into the rules in force to `observer`
    /// (dry runs of candidates are not counted).
    pub fn report_calls_to(&mut self, observer: CallObserver) {
        self.calls = Some(observer);
    }

    /// Continues with `live`, rules a previous run of the job deployed, keeping
    /// the rules it started with for rollback.
    pub fn resume(&mut self, live: impl RulesRuntime + 'static) {
        let live: BoxedRules = Box::new(live);
        let version = live.rule_version().to_owned();
        let mut given = std::mem::replace(&mut self.active, live);
        given.release_instance();
        self.previous.push(given);
        self.record("resumed", &version, Some("deployed live before the restart".into()), None);
    }

    /// Checks `candidate` on a sample batch (a dry run: its output is dropped),
    /// then makes it the active rules. On failure the running rules stay.
    pub fn deploy(
        &mut self,
        candidate: impl RulesRuntime + 'static,
        texts: Texts<'_>,
        sample: Option<Sample<'_>>,
    ) -> Result<String, RulesError> {
        let mut candidate: BoxedRules = Box::new(candidate);
        let started = Instant::now();
        if let Some(sample) = sample {
            let mut dry = sample.batch.clone();
            dry.refit_fields(sample.fields, &candidate.declarations().fields);
            if let Err(error) = candidate.process(texts, &mut dry) {
                self.record("refused", candidate.rule_version(), Some(error.to_string()), None);
                return Err(RulesError::Refused(format!("dry run failed: {error}")));
            }
        }
        let version = candidate.rule_version().to_owned();
        let mut old = std::mem::replace(&mut self.active, candidate);
        // A version in reserve needs no live instance: rollback rebuilds it.
        old.release_instance();
        self.previous.push(old);
        if self.previous.len() > VERSIONS_KEPT {
            self.previous.remove(0);
        }
        self.record("deployed", &version, None, Some(started));
        Ok(version)
    }

    /// Why rules declaring `attributes` cannot join the versions kept here:
    /// one of them writes an attribute of the same name with another type
    /// (its rows may not be in the table yet, and a rollback would write
    /// that type again).
    pub fn attribute_conflict(&self, attributes: &[SessionAttribute]) -> Option<String> {
        let kept = std::iter::once(&self.active).chain(self.previous.iter().rev());
        for rules in kept {
            for theirs in &rules.declarations().attributes {
                let conflict = |a: &&SessionAttribute| {
                    a.name == theirs.name && a.attribute_type != theirs.attribute_type
                };
                if let Some(ours) = attributes.iter().find(conflict) {
                    let (t, o): (AttributeType, AttributeType) =
                        (ours.attribute_type, theirs.attribute_type);
                    return Some(format!(
                        "attribute {} is a {}, but {} (in force or kept for rollback) writes it \
                         as a {}; name the attribute otherwise",
                        ours.name,
                        t.name(),
                        rules.rule_version(),
                        o.name()
                    ));
                }
            }
        }
        None
    }

    /// Makes the previous rules active again. Its instance is built here, so
    /// the first batch after the rollback does not pay for it.
    pub fn rollback(&mut self, reason: Option<String>) -> Result<String, RulesError> {
        let started = Instant::now();
        let Some(mut previous) = self.previous.pop() else {
            return Err(RulesError::Refused("no previous version to roll back to".into()));
        };
        if let Err(error) = previous.warm_up() {
            tracing::warn!(rules = previous.rule_version(), %error, "previous rules did not start again; retried on the next batch");
        }
        self.active = previous;
        let version = self.active.rule_version().to_owned();
        self.record("rolled back", &version, reason, Some(started));
        Ok(version)
    }

    /// Notes a refused candidate that never got as far as [`RulesSlot::deploy`].
    pub fn refused(&mut self, what: &str, error: &RulesError) {
        self.record("refused", what, Some(error.to_string()), None);
    }

    /// The most recent history, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &SwapEvent> {
        self.history.iter()
    }

    fn record(
        &mut self,
        action: &str,
        version: &str,
        detail: Option<String>,
        started: Option<Instant>,
    ) {
        if self.history.len() == HISTORY_KEPT {
            self.history.pop_front();
        }
        self.history.push_back(SwapEvent {
            action: action.into(),
            rule_version: version.into(),
            at_unix_s: now_s(),
            detail,
            pause_us: started.map(|s| u64::try_from(s.elapsed().as_micros()).unwrap_or(u64::MAX)),
        });
    }
}

impl RulesRuntime for RulesSlot {
    fn rule_version(&self) -> &str {
        self.active.rule_version()
    }

    fn declarations(&self) -> &Declarations {
        self.active.declarations()
    }

    fn process(&mut self, texts: Texts<'_>, batch: &mut Batch) -> Result<BatchResult, RulesError> {
        let Some(calls) = &self.calls else { return self.active.process(texts, batch) };
        let started = Instant::now();
        let result = self.active.process(texts, batch);
        calls(started.elapsed());
        result
    }
}
