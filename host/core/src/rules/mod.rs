//! The rules as the engine calls them: the contract's records in plain Rust
//! ([`contract`]), the [`RulesRuntime`] trait every runtime implements, and
//! [`NativeRules`], rules compiled into the process (tests, benchmark baseline).
//! The WebAssembly runtime lives in the host crate.

use std::sync::Arc;

pub mod contract;
mod native;

pub use native::NativeRules;

/// Why rules could not be loaded or could not process a batch.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The plugin path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a component, or not one that implements `sessionize:plugin/rules`.
    #[error("not a Sessionize rules component: {0}")]
    Invalid(String),
    /// The plugin refused the job's settings.
    #[error("plugin refused the settings: {0}")]
    Refused(String),
    /// The plugin returned an error for a batch.
    #[error("plugin failed the batch: {0}")]
    Failed(String),
    /// The plugin ran past its time budget for one call.
    #[error("plugin exceeded its {0:?} time budget for one batch")]
    Timeout(std::time::Duration),
    /// The plugin tried to grow its memory past the limit.
    #[error("plugin exceeded its memory limit of {0} MiB")]
    OutOfMemory(usize),
    /// The plugin trapped (panicked, hit unreachable, ...).
    #[error("plugin trapped: {0}")]
    Trapped(String),
    /// The plugin broke the contract (for example, wrong number of outcomes).
    #[error("plugin broke the contract: {0}")]
    Contract(String),
}

/// Session rules the engine can call: one call per batch of many users' events.
pub trait RulesRuntime: Send {
    /// `name@version+hash`: recorded with every session the rules cut.
    fn rule_version(&self) -> &str;

    /// Applies the rules to `batch`, first sending the strings of `texts` the
    /// instance has not seen (the runtime fills `batch.new_texts`). On error
    /// nothing of the batch took effect, `batch` is as it was, and the runtime
    /// is ready for the next call (a trapped instance is rebuilt).
    fn process(
        &mut self,
        texts: &[Arc<str>],
        batch: &mut contract::Batch,
    ) -> Result<contract::BatchResult, RulesError>;

    /// Drops what the rules hold while they are not in force (a component's
    /// instance and its memory); the next call builds it again.
    fn release_instance(&mut self) {}

    /// Gets ready for the next call now rather than on it.
    fn warm_up(&mut self) -> Result<(), RulesError> {
        Ok(())
    }
}

/// The strings of `texts` from handle `known` on: what an instance that has
/// seen `known` texts must receive next (for runtimes).
pub fn unsent_texts(texts: &[Arc<str>], known: usize) -> Vec<String> {
    texts.get(known..).unwrap_or_default().iter().map(|t| t.to_string()).collect()
}

/// Checks the outcome count against the batch, so a buggy plugin cannot make the
/// host misattribute sessions (for runtimes).
pub fn check_result(
    batch: &contract::Batch,
    result: &contract::BatchResult,
) -> Result<(), RulesError> {
    if result.users.len() != batch.users.len() {
        return Err(RulesError::Contract(format!(
            "{} outcomes for {} users",
            result.users.len(),
            batch.users.len()
        )));
    }
    if let Some(bad) = result.closed.iter().find(|c| c.user as usize >= batch.users.len()) {
        return Err(RulesError::Contract(format!("closed session for unknown user {}", bad.user)));
    }
    Ok(())
}
