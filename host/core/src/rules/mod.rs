//! The rules as the engine calls them: the contract's records in plain Rust
//! ([`contract`]) and the [`RulesRuntime`] trait every runtime implements
//! (rules compiled into the process are in the `sessionize-native` crate).
//! [`check_result`] is what every runtime checks in a plugin's answer before
//! the engine may apply it. The WebAssembly runtime lives in the host crate.

use std::sync::Arc;

mod check;
pub mod contract;
mod declare;
mod rule;

pub use check::{check_plugin_info, check_result, CheckScratch};
pub use declare::{
    check_declarations, MAX_ATTRIBUTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_FIELDS, MAX_FIELD_PATH_BYTES,
};
pub use rule::{Rule, MAX_END_REASON_BYTES, MAX_PLUGIN_NAME_BYTES, MAX_STATE_DATA_BYTES};

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
    /// The plugin declared fields or attributes the host cannot use.
    #[error("the plugin's declarations cannot be used: {0}")]
    Declarations(String),
    /// The sessions table cannot take the plugin's attributes (a column of
    /// the same name has another type).
    #[error("the sessions table cannot take the plugin's attributes: {0}")]
    Columns(String),
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
    /// The plugin's answer (or name) broke a rule of the contract: the message
    /// names the [`Rule`] and the user. Nothing of the answer was applied.
    #[error("plugin broke the contract: {0}")]
    Contract(String),
}

/// What rules that declare nothing (0.1 plugins) declare.
pub static NO_DECLARATIONS: contract::Declarations =
    contract::Declarations { fields: Vec::new(), attributes: Vec::new() };

/// Session rules the engine can call: one call per batch of many users' events.
pub trait RulesRuntime: Send {
    /// `name@version+hash`: recorded with every session the rules cut.
    fn rule_version(&self) -> &str;

    /// Applies the rules to `batch`, first sending the strings of `texts` the
    /// instance has not seen (the runtime fills `batch.new_texts`); texts of
    /// another generation than the instance's mean it starts a new table. On
    /// error nothing of the batch took effect, `batch` is as it was, and the
    /// runtime is ready for the next call (a trapped instance is rebuilt).
    fn process(
        &mut self,
        texts: Texts<'_>,
        batch: &mut contract::Batch,
    ) -> Result<contract::BatchResult, RulesError>;

    /// The event fields the rules read and the session attributes they
    /// write (contract 0.2); none for 0.1 plugins. The same for the rules'
    /// whole life.
    fn declarations(&self) -> &contract::Declarations {
        &NO_DECLARATIONS
    }

    /// Drops what the rules hold while they are not in force (a component's
    /// instance and its memory); the next call builds it again.
    fn release_instance(&mut self) {}

    /// Gets ready for the next call now rather than on it.
    fn warm_up(&mut self) -> Result<(), RulesError> {
        Ok(())
    }
}

/// The engine's text table as the rules see it: strings by handle, and the
/// generation the handles belong to.
///
/// The engine drops texts nothing refers to any more and renumbers the rest
/// (page names can be URLs that never repeat); handles sent under an earlier
/// generation then mean nothing, and an instance that holds them must start a
/// new table.
#[derive(Debug, Clone, Copy)]
pub struct Texts<'a> {
    /// Strings by handle.
    pub strings: &'a [Arc<str>],
    /// Bumped each time handles are renumbered.
    pub generation: u64,
}

impl<'a> Texts<'a> {
    /// Texts of the first generation (tests, and runtimes fed by hand).
    pub fn first(strings: &'a [Arc<str>]) -> Self {
        Self { strings, generation: 0 }
    }
}

/// How much of the engine's text table an instance holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextsSent {
    generation: u64,
    count: usize,
}

impl TextsSent {
    /// Whether the instance's table belongs to another generation than `texts`
    /// and must be started afresh.
    pub fn is_stale(&self, texts: Texts<'_>) -> bool {
        self.count > 0 && self.generation != texts.generation
    }

    /// The strings the instance must receive next.
    pub fn unsent(&self, texts: Texts<'_>) -> Vec<String> {
        let from = if self.generation == texts.generation { self.count } else { 0 };
        texts.strings.get(from..).unwrap_or_default().iter().map(|t| t.to_string()).collect()
    }

    /// Notes that the instance took every string of `texts`.
    pub fn took(&mut self, texts: Texts<'_>) {
        *self = Self { generation: texts.generation, count: texts.strings.len() };
    }
}
