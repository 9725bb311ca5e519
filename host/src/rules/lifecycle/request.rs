//! What operators ask of the running rules, from the admin endpoint or the
//! plugin-file watcher, and where the answer goes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The job's answer: JSON on success, a sentence on failure.
pub type Reply = oneshot::Sender<Result<serde_json::Value, Refusal>>;

/// Where the answer to a request arrives.
pub type Answer = oneshot::Receiver<Result<serde_json::Value, Refusal>>;

/// Why a request was not done, in a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The job looked at it and said no.
    #[error("{0}")]
    Refused(String),
    /// Its deadline passed before the job could apply it: nothing changed.
    #[error("{0}")]
    TimedOut(String),
}

impl From<&str> for Refusal {
    fn from(sentence: &str) -> Self {
        Refusal::Refused(sentence.to_owned())
    }
}

impl From<String> for Refusal {
    fn from(sentence: String) -> Self {
        Refusal::Refused(sentence)
    }
}

/// A component offered for deploy.
#[derive(Debug)]
pub enum Candidate {
    /// Bytes uploaded through the admin endpoint (already within the size limit).
    Uploaded {
        /// What the uploader called it, for messages and the history.
        name: String,
        /// The component.
        bytes: Vec<u8>,
    },
    /// A file on the job's own machine (`--plugin-watch`), read with the
    /// job's size limit when its turn comes.
    File(PathBuf),
}

impl Candidate {
    /// How messages and the history name it.
    pub fn name(&self) -> String {
        match self {
            Candidate::Uploaded { name, .. } => name.clone(),
            Candidate::File(path) => path.display().to_string(),
        }
    }
}

/// What is asked of the rules.
#[derive(Debug)]
pub enum RulesAction {
    /// Load, check and swap in this component.
    Deploy(Candidate),
    /// Go back to the previous rules.
    Rollback,
    /// Report the active rules and the history.
    Status,
}

/// A request, where its answer goes, and until when it may be applied.
#[derive(Debug)]
pub struct RulesRequest {
    /// What to do.
    pub action: RulesAction,
    /// Where the answer goes.
    pub reply: Reply,
    /// When it was accepted.
    pub accepted: Instant,
    /// Past this, the request is answered as not applied instead of applied:
    /// whoever asked has been told it timed out.
    pub deadline: Instant,
}

impl RulesRequest {
    /// A request accepted now that must be applied within `timeout`, and where
    /// its answer will arrive.
    pub fn new(action: RulesAction, timeout: Duration) -> (Self, Answer) {
        let (reply, answer) = oneshot::channel();
        let accepted = Instant::now();
        // A timeout too long to represent waits as good as forever.
        let deadline =
            accepted.checked_add(timeout).unwrap_or(accepted + Duration::from_secs(1 << 32));
        (Self { action, reply, accepted, deadline }, answer)
    }
}

/// Where an answer goes, with the request's deadline.
pub(crate) struct PendingReply {
    reply: Reply,
    accepted: Instant,
    deadline: Instant,
}

impl PendingReply {
    /// The reply part of `request`.
    pub(crate) fn of(request: RulesRequest) -> (RulesAction, Self) {
        let RulesRequest { action, reply, accepted, deadline } = request;
        (action, Self { reply, accepted, deadline })
    }

    /// Why the request must no longer be applied, if so: its deadline passed,
    /// or whoever asked stopped waiting.
    pub(crate) fn expired(&self) -> Option<Refusal> {
        if self.reply.is_closed() {
            let why = "not applied: whoever asked stopped waiting for the answer";
            return Some(Refusal::TimedOut(why.into()));
        }
        (Instant::now() > self.deadline).then(|| {
            Refusal::TimedOut(format!(
                "not applied: the job could not apply it within {:.0?} of the request \
                 (it is busy with earlier requests or cannot reach a checkpoint); nothing \
                 changed, try again",
                self.deadline.duration_since(self.accepted)
            ))
        })
    }

    /// Sends the answer (nobody may be waiting any more: that is fine).
    pub(crate) fn send(self, answer: Result<serde_json::Value, Refusal>) {
        let _ = self.reply.send(answer);
    }
}
