//! What operators ask of the running rules, from the admin endpoint or the
//! plugin-file watcher, and where the answer goes.

use std::path::PathBuf;

use tokio::sync::oneshot;

/// The job's answer: JSON on success, a sentence on failure.
pub type Reply = oneshot::Sender<Result<serde_json::Value, String>>;

/// What is asked of the rules.
#[derive(Debug)]
pub enum RulesAction {
    /// Load, check and swap in the component at this path.
    Deploy(PathBuf),
    /// Go back to the previous rules.
    Rollback,
    /// Report the active rules and the history.
    Status,
}

/// A request and where its answer goes.
#[derive(Debug)]
pub struct RulesRequest {
    /// What to do.
    pub action: RulesAction,
    /// Where the answer goes.
    pub reply: Reply,
}
