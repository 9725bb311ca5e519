//! Turning component bytes into configured rules for one job: its settings, its
//! sandbox limits, and the archive every deployed version is kept in.

use std::path::Path;
use std::sync::Arc;

use super::RulesArchive;
use crate::rules::contract::Settings;
use crate::rules::{ComponentLoader, ComponentRules, RulesError, RulesRuntime, SandboxLimits};

/// Compiles and configures rules with the job's settings and limits.
#[derive(Clone)]
pub struct RulesLoader {
    loader: Arc<ComponentLoader>,
    settings: Settings,
    limits: SandboxLimits,
    archive: Option<Arc<RulesArchive>>,
}

impl RulesLoader {
    /// A loader for rules with these settings and limits.
    pub fn new(loader: Arc<ComponentLoader>, settings: Settings, limits: SandboxLimits) -> Self {
        Self { loader, settings, limits, archive: None }
    }

    /// Keeps every candidate loaded from a file in `archive`, so that a
    /// restart can continue with it once a checkpoint was cut by it.
    pub fn keeping_in(mut self, archive: Arc<RulesArchive>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// Rules from component bytes.
    pub fn load(&self, bytes: &[u8]) -> Result<ComponentRules, RulesError> {
        self.loader.load(bytes, &self.settings, self.limits)
    }

    /// A candidate from a file, kept in the archive once it loads.
    pub fn load_file(&self, path: &Path) -> Result<ComponentRules, RulesError> {
        let bytes = std::fs::read(path)
            .map_err(|source| RulesError::Read { path: path.display().to_string(), source })?;
        let loaded = self.load(&bytes)?;
        if let Some(archive) = &self.archive {
            if let Err(error) = archive.keep(loaded.rule_version(), &bytes) {
                tracing::warn!(%error, "a restart would not find these rules");
            }
        }
        Ok(loaded)
    }
}
