//! The plugin runtime: runs the session rules, as a sandboxed WebAssembly
//! component ([`ComponentRules`]) or compiled into the host ([`NativeRules`], the
//! benchmark's baseline).

use std::sync::Arc;

mod archive;
mod component;
mod native;
mod sandbox;
mod swap;

pub use archive::{ArchiveError, RulesArchive};
pub use component::{ComponentRules, PluginLimits, RulesEngine};
pub use native::NativeRules;
pub use swap::{RulesSlot, SwapEvent};

/// Host-side bindings of `wit/sessionize.wit`.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "session-rules",
    });
}

/// The contract's records as the host builds and reads them.
pub mod contract {
    pub use super::bindings::sessionize::plugin::types::{
        Batch, BatchResult, ClosedSession, EndReason, Event, LogLevel, PluginInfo, SessionState,
        Settings, UserOutcome, UserSlice,
    };
}

/// Why a plugin could not be loaded or could not process a batch.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
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
    /// nothing of the batch took effect, and the runtime is ready for the next
    /// call (a trapped instance is rebuilt).
    fn process(
        &mut self,
        texts: &[Arc<str>],
        batch: &mut contract::Batch,
    ) -> Result<contract::BatchResult, PluginError>;
}

/// The strings of `texts` from handle `known` on: what an instance that has
/// seen `known` texts must receive next.
pub(crate) fn unsent_texts(texts: &[Arc<str>], known: usize) -> Vec<String> {
    texts.get(known..).unwrap_or_default().iter().map(|t| t.to_string()).collect()
}

/// Checks the outcome count against the batch, so a buggy plugin cannot make the
/// host misattribute sessions.
pub(crate) fn check_result(
    batch: &contract::Batch,
    result: &contract::BatchResult,
) -> Result<(), PluginError> {
    if result.users.len() != batch.users.len() {
        return Err(PluginError::Contract(format!(
            "{} outcomes for {} users",
            result.users.len(),
            batch.users.len()
        )));
    }
    if let Some(bad) = result.closed.iter().find(|c| c.user as usize >= batch.users.len()) {
        return Err(PluginError::Contract(format!("closed session for unknown user {}", bad.user)));
    }
    Ok(())
}
