//! The rules in force and how they change while a job runs, all in one place:
//!
//! - requests ([`RulesRequest`]) arrive from the admin endpoint or the plugin
//!   watcher ([`watch_plugin_file`]);
//! - a deploy is compiled and configured on a thread of its own ([`RulesLoader`]),
//!   then waits as a [`Change`] for the next checkpoint boundary;
//! - at the boundary the job applies it: a dry run on a sample of the latest
//!   batch, then the switch ([`RulesSlot`], which keeps versions for rollback);
//! - deployed components are kept in the state directory ([`RulesArchive`]) so
//!   a restart can resume with them ([`deployed_before_restart`]).

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::rules::contract::Batch;
use crate::rules::{ComponentRules, RulesError, RulesRuntime};

mod archive;
mod loader;
mod request;
mod resume;
mod slot;
mod watch;

pub use archive::{ArchiveError, RulesArchive};
pub use loader::RulesLoader;
pub use request::{Reply, RulesAction, RulesRequest};
pub use resume::{deployed_before_restart, CheckpointedRules};
pub use slot::{RulesSlot, SwapEvent};
pub use watch::watch_plugin_file;

/// A change of rules waiting for the next checkpoint boundary.
pub struct Change(ChangeKind);

impl Change {
    /// How long compiling the candidate took (on its own thread), for a deploy.
    pub fn compile_time(&self) -> Option<Duration> {
        match &self.0 {
            ChangeKind::Deploy(.., took) => Some(*took),
            ChangeKind::Rollback(_) => None,
        }
    }
}

enum ChangeKind {
    /// A compiled (or refused) component, and how long compiling took.
    Deploy(Box<Result<ComponentRules, RulesError>>, PathBuf, Reply, Duration),
    /// Back to the previous version.
    Rollback(Reply),
}

/// The rules of a running job, and the changes asked of them.
pub struct RulesLifecycle {
    slot: RulesSlot,
    requests: Option<mpsc::Receiver<RulesRequest>>,
    loader: Option<RulesLoader>,
    changes_tx: mpsc::Sender<Change>,
    changes: mpsc::Receiver<Change>,
}

impl RulesLifecycle {
    /// Rules that change only by rollback after failures.
    pub fn new(slot: RulesSlot) -> Self {
        let (changes_tx, changes) = mpsc::channel();
        Self { slot, requests: None, loader: None, changes_tx, changes }
    }

    /// Also takes `requests` (deploys need [`RulesLifecycle::loading_with`]).
    pub fn accepting(mut self, requests: mpsc::Receiver<RulesRequest>) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Loads deploy candidates with `loader`.
    pub fn loading_with(mut self, loader: RulesLoader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// The rules in force, for the engine.
    pub fn rules(&mut self) -> &mut RulesSlot {
        &mut self.slot
    }

    /// `name@version+hash` of the rules in force.
    pub fn rule_version(&self) -> &str {
        self.slot.rule_version()
    }

    /// Answers status requests at once, queues rollbacks, and starts compiling
    /// deploy candidates on threads of their own. `events_read` and
    /// `checkpoints` go into the status.
    pub fn serve_requests(&mut self, events_read: u64, checkpoints: u64) {
        let Some(requests) = &self.requests else { return };
        while let Ok(request) = requests.try_recv() {
            match request.action {
                RulesAction::Status => {
                    let _ = request.reply.send(Ok(serde_json::json!({
                        "active": self.slot.rule_version(),
                        "history": self.slot.history().collect::<Vec<_>>(),
                        "events_read": events_read,
                        "checkpoints": checkpoints,
                    })));
                }
                RulesAction::Rollback => {
                    let _ = self.changes_tx.send(Change(ChangeKind::Rollback(request.reply)));
                }
                RulesAction::Deploy(path) => {
                    let Some(loader) = self.loader.clone() else {
                        let _ = request.reply.send(Err("this job takes no deploys".into()));
                        continue;
                    };
                    let changes = self.changes_tx.clone();
                    let reply = request.reply;
                    std::thread::spawn(move || {
                        let started = Instant::now();
                        let loaded = loader.load_file(&path);
                        let took = started.elapsed();
                        let change = ChangeKind::Deploy(Box::new(loaded), path, reply, took);
                        let _ = changes.send(Change(change));
                    });
                }
            }
        }
    }

    /// The next change ready to apply, if any.
    pub fn next_change(&mut self) -> Option<Change> {
        self.changes.try_recv().ok()
    }

    /// Applies `change` at a checkpoint boundary and answers its request.
    /// A candidate gets a dry run on `sample` (over `texts`) first. Returns how
    /// long the switch held up the event flow, if the rules changed.
    pub fn apply(
        &mut self,
        change: Change,
        texts: &[Arc<str>],
        sample: Option<&Batch>,
    ) -> Option<Duration> {
        let started = Instant::now();
        match change.0 {
            ChangeKind::Rollback(reply) => match self.slot.rollback(Some("requested".into())) {
                Ok(version) => {
                    let pause = started.elapsed();
                    tracing::info!(rules = version, ?pause, "rules rolled back");
                    let _ = reply.send(Ok(serde_json::json!({ "active": version })));
                    Some(pause)
                }
                Err(error) => {
                    let _ = reply.send(Err(error.to_string()));
                    None
                }
            },
            ChangeKind::Deploy(loaded, path, reply, _) => {
                let outcome = loaded.and_then(|c| self.slot.deploy(c, texts, sample));
                let (answer, pause) = match outcome {
                    Ok(version) => {
                        // The event flow waits only for the dry run and the switch.
                        let pause = started.elapsed();
                        tracing::info!(rules = version, path = %path.display(), ?pause, "rules swapped");
                        (Ok(serde_json::json!({ "active": version })), Some(pause))
                    }
                    Err(error) => {
                        self.slot.refused(&path.display().to_string(), &error);
                        tracing::warn!(path = %path.display(), %error, "candidate rules refused");
                        let message = format!(
                            "{} refused: {error}; {} stays active",
                            path.display(),
                            self.slot.rule_version()
                        );
                        (Err(message), None)
                    }
                };
                let _ = reply.send(answer);
                pause
            }
        }
    }

    /// The rules failed a batch too often: goes back to the previous version,
    /// if there is one, and returns it.
    pub fn roll_back_after_failure(&mut self, failure: String) -> Option<String> {
        let failed = self.slot.rule_version().to_owned();
        let version = self.slot.rollback(Some(failure)).ok()?;
        tracing::warn!(failed, rules = version, "rolled back after repeated failures");
        Some(version)
    }
}

#[cfg(test)]
mod tests;
