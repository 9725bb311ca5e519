//! Components deployed live, kept in the job's state directory, so that a job
//! restarted with the same command line resumes with the rules its last
//! checkpoint was cut by, not with the ones it was first started with.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why the archive could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("rules archive {path}: {source}")]
pub struct ArchiveError {
    path: PathBuf,
    source: std::io::Error,
}

/// `<state-dir>/rules/`: one file per deployed component, named by the hash
/// that ends its rule version.
pub struct RulesArchive {
    dir: PathBuf,
}

/// The hash part of a rule version (`name@version+hash`).
fn hash_of(rule_version: &str) -> Option<&str> {
    rule_version
        .rsplit_once('+')
        .map(|(_, hash)| hash)
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl RulesArchive {
    /// Opens (creating) the archive in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, ArchiveError> {
        let dir = state_dir.join("rules");
        std::fs::create_dir_all(&dir)
            .map_err(|source| ArchiveError { path: dir.clone(), source })?;
        Ok(Self { dir })
    }

    /// Keeps `bytes`, the component of `rule_version`, unless already kept.
    /// Written beside, synced and renamed, so a crash never leaves half a
    /// component under the final name.
    pub fn keep(&self, rule_version: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        use std::io::Write;
        let Some(hash) = hash_of(rule_version) else { return Ok(()) };
        // A failure marker from an earlier run no longer applies to a fresh deploy.
        let _ = std::fs::remove_file(self.dir.join(format!("{hash}.failed")));
        let path = self.dir.join(format!("{hash}.wasm"));
        if self.read(hash).is_some() {
            return Ok(());
        }
        let fail = |source| ArchiveError { path: path.clone(), source };
        let mut scratch = tempfile::NamedTempFile::new_in(&self.dir).map_err(fail)?;
        scratch.write_all(bytes).and_then(|()| scratch.as_file().sync_all()).map_err(fail)?;
        scratch.persist(&path).map_err(|e| fail(e.error))?;
        Ok(())
    }

    /// The kept component of `rule_version`, unless it is marked as failed or
    /// its bytes no longer match.
    pub fn find(&self, rule_version: &str) -> Option<Vec<u8>> {
        let hash = hash_of(rule_version)?;
        if self.dir.join(format!("{hash}.failed")).exists() {
            return None;
        }
        self.read(hash)
    }

    /// Marks `rule_version` as the rules that stopped the job, so a restart
    /// does not resume with them.
    pub fn mark_failed(&self, rule_version: &str) -> Result<(), ArchiveError> {
        let Some(hash) = hash_of(rule_version) else { return Ok(()) };
        let path = self.dir.join(format!("{hash}.failed"));
        std::fs::write(&path, rule_version).map_err(|source| ArchiveError { path, source })
    }

    fn read(&self, hash: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.dir.join(format!("{hash}.wasm"))).ok()?;
        let actual = hex::encode(&Sha256::digest(&bytes)[..hash.len() / 2]);
        (actual == hash).then_some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_and_finds_by_the_hash_in_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let archive = RulesArchive::open(dir.path()).unwrap();
        let bytes = b"component bytes".to_vec();
        let hash = hex::encode(&Sha256::digest(&bytes)[..6]);
        let version = format!("rules@1.0.0+{hash}");
        assert_eq!(archive.find(&version), None);
        archive.keep(&version, &bytes).unwrap();
        assert_eq!(archive.find(&version), Some(bytes.clone()));
        assert_eq!(archive.find("rules@1.0.0+000000000000"), None, "unknown hash");
        assert_eq!(archive.find("no hash"), None);
        archive.mark_failed(&version).unwrap();
        assert_eq!(archive.find(&version), None, "rules that stopped the job are not resumed");
        archive.keep(&version, &bytes).unwrap();
        assert_eq!(archive.find(&version).as_deref(), Some(&bytes[..]), "deployed again");
        // A damaged file is neither used nor kept in place of the real one.
        std::fs::write(dir.path().join(format!("rules/{hash}.wasm")), b"damaged").unwrap();
        assert_eq!(archive.find(&version), None);
        archive.keep(&version, &bytes).unwrap();
        assert_eq!(archive.find(&version), Some(bytes.clone()));
    }
}
