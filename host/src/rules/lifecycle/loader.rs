//! Turning components into configured rules for one job: its settings, its
//! sandbox limits, the largest component it takes, and the archive every
//! deployed version is kept in.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::{Candidate, RulesArchive};
use crate::rules::contract::Settings;
use crate::rules::{ComponentLoader, ComponentRules, RulesError, RulesRuntime, SandboxLimits};

/// The largest component a job takes unless told otherwise (`--max-component-mib`).
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Compiles and configures rules with the job's settings and limits.
#[derive(Clone)]
pub struct RulesLoader {
    loader: Arc<ComponentLoader>,
    settings: Settings,
    limits: SandboxLimits,
    max_component_bytes: u64,
    archive: Option<Arc<RulesArchive>>,
}

impl RulesLoader {
    /// A loader for rules with these settings and limits, taking components
    /// of up to [`DEFAULT_MAX_COMPONENT_BYTES`].
    pub fn new(loader: Arc<ComponentLoader>, settings: Settings, limits: SandboxLimits) -> Self {
        Self {
            loader,
            settings,
            limits,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            archive: None,
        }
    }

    /// Refuses components larger than `max_bytes`, from a file or uploaded.
    pub fn taking_at_most(mut self, max_bytes: u64) -> Self {
        self.max_component_bytes = max_bytes;
        self
    }

    /// Keeps every candidate deployed from a file or an upload in `archive`,
    /// so that a restart can continue with it once a checkpoint was cut by it.
    pub fn keeping_in(mut self, archive: Arc<RulesArchive>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// Rules from component bytes (not kept in the archive).
    pub fn load(&self, bytes: &[u8]) -> Result<ComponentRules, RulesError> {
        self.loader.load(bytes, &self.settings, self.limits)
    }

    /// Rules from a file on this machine, read within the size limit; kept in
    /// the archive once they load.
    pub fn load_file(&self, path: &Path) -> Result<ComponentRules, RulesError> {
        let bytes = read_component(path, self.max_component_bytes)
            .map_err(|source| RulesError::Read { path: path.display().to_string(), source })?;
        self.load_kept(&bytes)
    }

    /// A deploy candidate, uploaded or from a file; kept in the archive once it loads.
    pub fn load_candidate(&self, candidate: Candidate) -> Result<ComponentRules, RulesError> {
        match candidate {
            Candidate::File(path) => self.load_file(&path),
            Candidate::Uploaded { name, bytes } => {
                let size = bytes.len() as u64;
                if size > self.max_component_bytes {
                    let source = too_large(size, self.max_component_bytes);
                    return Err(RulesError::Read { path: name, source });
                }
                self.load_kept(&bytes)
            }
        }
    }

    fn load_kept(&self, bytes: &[u8]) -> Result<ComponentRules, RulesError> {
        let loaded = self.load(bytes)?;
        if let Some(archive) = &self.archive {
            if let Err(error) = archive.keep(loaded.rule_version(), bytes) {
                tracing::warn!(%error, "a restart would not find these rules");
            }
        }
        Ok(loaded)
    }
}

/// The bytes of the component file at `path`, refusing what is not a regular
/// file (a named pipe would block, a device like `/dev/zero` never ends) and
/// what is larger than `max_bytes`.
pub(crate) fn read_component(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Opening a named pipe without O_NONBLOCK waits for a writer; a regular
    // file does not care.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a component is a .wasm file, not a pipe, device or directory)",
        ));
    }
    if metadata.len() > max_bytes {
        return Err(too_large(metadata.len(), max_bytes));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // The file may grow while it is read: never past the limit.
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64, max_bytes));
    }
    Ok(bytes)
}

/// The sentence for a component over the limit.
pub(crate) fn too_large(size: u64, max_bytes: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{size} bytes, over the limit of {} (raise it with --max-component-mib)",
            mib_text(max_bytes)
        ),
    )
}

/// `max_bytes` for people: whole MiB when it is whole.
pub(crate) fn mib_text(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.wasm");
        std::fs::write(&file, vec![7u8; 1000]).unwrap();
        assert_eq!(read_component(&file, 1000).unwrap().len(), 1000);
        let error = read_component(&file, 999).unwrap_err();
        assert!(error.to_string().contains("1000 bytes, over the limit of 999 bytes"), "{error}");
        let error = read_component(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let error = read_component(dir.path(), 1 << 20).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        // A named pipe nobody writes to: refused at once, not waited on.
        let pipe = dir.path().join("rules.pipe");
        let status = std::process::Command::new("mkfifo").arg(&pipe).status().unwrap();
        assert!(status.success());
        let error = read_component(&pipe, 1 << 20).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }
}
