//! The rules in force and how they change while a job runs, all in one place:
//!
//! - requests ([`RulesRequest`]) arrive from the admin endpoint or the plugin
//!   watcher ([`watch_plugin_file`]), each with a deadline;
//! - deploys and rollbacks go through one compile thread in the order they were
//!   accepted: a deploy is compiled and configured there ([`RulesLoader`]), and
//!   each waits as a [`Change`] for the next checkpoint boundary;
//! - at the boundary the job applies it: a dry run on a sample of the latest
//!   batch, then the switch ([`RulesSlot`], which keeps versions for rollback);
//! - deployed components are kept in the state directory ([`RulesArchive`]) so
//!   a restart can resume with them ([`deployed_before_restart`]);
//! - a member of a consumer group publishes an operator's change to the group
//!   and follows what other members published ([`GroupUpdate`]).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::engine::Sample;
use crate::group::{GroupUpdate, GroupView, Publish};
use crate::rules::{ComponentRules, RulesError, RulesRuntime, Texts};
use crate::sink::ColumnCheck;

mod archive;
mod group;
mod loader;
mod request;
mod resume;
mod slot;
mod watch;

pub use archive::{ArchiveError, RulesArchive};
pub(crate) use group::MemberRules;
use group::Origin;
pub(crate) use loader::{mib_text, read_component};
pub use loader::{RulesLoader, DEFAULT_MAX_COMPONENT_BYTES};
use request::PendingReply;
pub use request::{Answer, Candidate, Refusal, Reply, RulesAction, RulesRequest};
pub use resume::{deployed_before_restart, CheckpointedRules};
pub use slot::{CallObserver, RulesSlot, SwapEvent};
pub use watch::watch_plugin_file;

/// Deploys and rollbacks that may wait for the compile thread; more are
/// refused, so that uploads cannot pile up in memory.
const QUEUE_LEN: usize = 8;

/// A change of rules waiting for the next checkpoint boundary.
pub struct Change(ChangeKind);

impl Change {
    /// How long compiling the candidate took (on its own thread), for a deploy.
    pub fn compile_time(&self) -> Option<Duration> {
        match &self.0 {
            ChangeKind::Deploy(_, _, _, took, _) => Some(*took),
            ChangeKind::Rollback(_) => None,
        }
    }
}

enum ChangeKind {
    /// A compiled (or refused) component, its name, how long compiling
    /// took, and who asked.
    Deploy(Box<Result<ComponentRules, RulesError>>, String, PendingReply, Duration, Origin),
    /// Back to the previous version.
    Rollback(PendingReply),
}

/// A request waiting for the compile thread.
enum Queued {
    Deploy(Candidate, PendingReply, Origin),
    Rollback(PendingReply),
}

impl Queued {
    fn refuse(self, why: String) {
        let why = Refusal::Refused(why);
        match self {
            Queued::Deploy(_, reply, _) | Queued::Rollback(reply) => reply.send(Err(why)),
        }
    }
}

/// The rules of a running job, and the changes asked of them.
pub struct RulesLifecycle {
    slot: RulesSlot,
    requests: Option<mpsc::Receiver<RulesRequest>>,
    loader: Option<RulesLoader>,
    /// To the compile thread, started with the first deploy or rollback.
    queue: Option<mpsc::SyncSender<Queued>>,
    changes_tx: mpsc::Sender<Change>,
    changes: mpsc::Receiver<Change>,
    /// Whether the sessions table can take a candidate's attributes.
    columns: Option<ColumnCheck>,
    /// The group's rules, for a member of a consumer group.
    group: Option<MemberRules>,
}

impl RulesLifecycle {
    /// Rules that change only by rollback after failures.
    pub fn new(slot: RulesSlot) -> Self {
        let (changes_tx, changes) = mpsc::channel();
        Self {
            slot,
            requests: None,
            loader: None,
            queue: None,
            changes_tx,
            changes,
            columns: None,
            group: None,
        }
    }

    /// A member of a consumer group: publishes its starting rules unless the
    /// group has some, publishes what an operator changes here, and follows
    /// what other members publish ([`RulesLifecycle::take_in_group`]).
    /// `diverged`: why it started without the group's rules, if it did;
    /// `found`: the group as it found it.
    pub fn in_group(mut self, diverged: Option<String>, found: GroupView) -> Self {
        let mut member = MemberRules::default();
        member.start_with(self.slot.rule_version(), diverged, found);
        self.group = Some(member);
        self
    }

    /// Whether these are a consumer group member's rules.
    pub fn is_group_member(&self) -> bool {
        self.group.is_some()
    }

    /// Why this group member does not run its group's rules, if it does not.
    pub fn group_diverged(&self) -> Option<&str> {
        self.group.as_ref()?.diverged()
    }

    /// Rules to publish to the group with the next checkpoint.
    pub fn take_publish(&mut self) -> Option<Publish> {
        self.group.as_mut()?.take_publish()
    }

    /// Takes in what a commit saw of the group, and queues the deploy of
    /// rules another member published, to be applied at a checkpoint boundary.
    pub fn take_in_group(&mut self, update: GroupUpdate) {
        let Some(member) = &mut self.group else { return };
        let Some(request) = member.take_in(update, self.slot.rule_version()) else { return };
        let (action, reply) = PendingReply::of(request);
        if let RulesAction::Deploy(candidate) = action {
            self.enqueue(Queued::Deploy(candidate, reply, Origin::Group));
        }
    }

    /// Refuses candidates whose attributes `check` says the sessions table
    /// cannot take, before their dry run.
    pub fn checking_columns_with(mut self, check: ColumnCheck) -> Self {
        self.columns = Some(check);
        self
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

    /// Answers status requests at once and queues deploys and rollbacks, in
    /// the order they were accepted, for the compile thread. `events_read` and
    /// `checkpoints` go into the status.
    pub fn serve_requests(&mut self, events_read: u64, checkpoints: u64) {
        if let Some(member) = &mut self.group {
            member.note_outcomes();
        }
        let Some(requests) = &self.requests else { return };
        let mut queued = Vec::new();
        while let Ok(request) = requests.try_recv() {
            let (action, reply) = PendingReply::of(request);
            match action {
                RulesAction::Status => {
                    let mut status = serde_json::json!({
                        "active": self.slot.rule_version(),
                        "history": self.slot.history().collect::<Vec<_>>(),
                        "events_read": events_read,
                        "checkpoints": checkpoints,
                    });
                    if let Some(member) = &self.group {
                        status["group"] = member.status();
                    }
                    reply.send(Ok(status));
                }
                RulesAction::Rollback => match &mut self.group {
                    // In a group, the group's record says what came before,
                    // not this member's history (a restarted member's holds
                    // its command line's rules).
                    Some(member) => reply.send(member.roll_back_group().map_err(Into::into)),
                    None => queued.push(Queued::Rollback(reply)),
                },
                RulesAction::Deploy(_) if self.loader.is_none() => {
                    reply.send(Err("this job takes no deploys".into()));
                }
                RulesAction::Deploy(candidate) => {
                    queued.push(Queued::Deploy(candidate, reply, Origin::Operator));
                }
            }
        }
        for request in queued {
            self.enqueue(request);
        }
    }

    /// Hands `request` to the compile thread (started on first use), or
    /// refuses it when too many wait.
    fn enqueue(&mut self, request: Queued) {
        if self.queue.is_none() {
            let (queue, waiting) = mpsc::sync_channel(QUEUE_LEN);
            let (loader, changes) = (self.loader.clone(), self.changes_tx.clone());
            let started = std::thread::Builder::new()
                .name("rules-compile".into())
                .spawn(move || compile_in_order(loader, waiting, changes));
            if let Err(error) = started {
                request.refuse(format!("cannot start the compile thread: {error}"));
                return;
            }
            self.queue = Some(queue);
        }
        let Some(queue) = &self.queue else { return };
        match queue.try_send(request) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(request)) => request.refuse(format!(
                "{QUEUE_LEN} requests are already waiting to be applied: try again once they are"
            )),
            Err(mpsc::TrySendError::Disconnected(request)) => {
                request.refuse("the compile thread has stopped".into());
            }
        }
    }

    /// The next change ready to apply, if any.
    pub fn next_change(&mut self) -> Option<Change> {
        self.changes.try_recv().ok()
    }

    /// Applies `change` at a checkpoint boundary and answers its request,
    /// unless its deadline has passed. A candidate gets a dry run on `sample`
    /// (over `texts`) first. Returns how long the switch held up the event
    /// flow, if the rules changed.
    pub fn apply(
        &mut self,
        change: Change,
        texts: Texts<'_>,
        sample: Option<Sample<'_>>,
    ) -> Option<Duration> {
        let started = Instant::now();
        match change.0 {
            ChangeKind::Rollback(reply) => {
                if let Some(why) = reply.expired() {
                    tracing::warn!(%why, "rollback not applied");
                    reply.send(Err(why));
                    return None;
                }
                match self.slot.rollback(Some("requested".into())) {
                    Ok(version) => {
                        let pause = started.elapsed();
                        if let Some(member) = &mut self.group {
                            member.changed_here(&version);
                        }
                        tracing::info!(rules = version, ?pause, "rules rolled back");
                        reply.send(Ok(serde_json::json!({ "active": version })));
                        Some(pause)
                    }
                    Err(error) => {
                        reply.send(Err(error.to_string().into()));
                        None
                    }
                }
            }
            ChangeKind::Deploy(loaded, name, reply, _, origin) => {
                if let Some(why) = reply.expired() {
                    tracing::warn!(candidate = name, %why, "deploy not applied");
                    reply.send(Err(why));
                    return None;
                }
                let columns = self.columns.clone();
                let outcome = loaded.and_then(|candidate| {
                    // The table first (its columns are what readers see), then
                    // the versions whose rows may not be in it yet.
                    let attributes = &candidate.declarations().attributes;
                    if let Some(check) = columns {
                        check(attributes).map_err(RulesError::Columns)?;
                    }
                    if let Some(conflict) = self.slot.attribute_conflict(attributes) {
                        return Err(RulesError::Columns(conflict));
                    }
                    self.slot.deploy(candidate, texts, sample)
                });
                let (answer, pause) = match outcome {
                    Ok(version) => {
                        // The event flow waits only for the dry run and the switch.
                        let pause = started.elapsed();
                        if let (Some(member), Origin::Operator) = (&mut self.group, origin) {
                            member.changed_here(&version);
                        }
                        tracing::info!(rules = version, candidate = name, ?pause, "rules swapped");
                        (Ok(serde_json::json!({ "active": version })), Some(pause))
                    }
                    Err(error) => {
                        self.slot.refused(&name, &error);
                        tracing::warn!(candidate = name, %error, "candidate rules refused");
                        let message = format!(
                            "{name} refused: {error}; {} stays active",
                            self.slot.rule_version()
                        );
                        (Err(message.into()), None)
                    }
                };
                reply.send(answer);
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

/// The compile thread: takes deploys and rollbacks in the order they were
/// accepted and hands them on as changes in that order, a deploy once compiled.
fn compile_in_order(
    loader: Option<RulesLoader>,
    waiting: mpsc::Receiver<Queued>,
    changes: mpsc::Sender<Change>,
) {
    for request in waiting {
        let change = match request {
            Queued::Rollback(reply) => ChangeKind::Rollback(reply),
            Queued::Deploy(candidate, reply, origin) => {
                // Not worth compiling: the answer would be "not applied" anyway.
                if let Some(why) = reply.expired() {
                    reply.send(Err(why));
                    continue;
                }
                let name = candidate.name();
                let Some(loader) = &loader else {
                    reply.send(Err("this job takes no deploys".into()));
                    continue;
                };
                let started = Instant::now();
                let loaded = loader.load_candidate(candidate);
                ChangeKind::Deploy(Box::new(loaded), name, reply, started.elapsed(), origin)
            }
        };
        if changes.send(Change(change)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
