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
/// that ends its rule version, and the version the command line last gave.
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
    /// Written beside and renamed, so a crash never leaves half a component.
    pub fn keep(&self, rule_version: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let Some(hash) = hash_of(rule_version) else { return Ok(()) };
        let path = self.dir.join(format!("{hash}.wasm"));
        if path.exists() {
            return Ok(());
        }
        let scratch = self.dir.join(format!("{hash}.wasm.partial"));
        let fail = |source| ArchiveError { path: path.clone(), source };
        std::fs::write(&scratch, bytes).map_err(fail)?;
        std::fs::rename(&scratch, &path).map_err(fail)
    }

    /// The kept component of `rule_version`, if its bytes still match.
    pub fn find(&self, rule_version: &str) -> Option<Vec<u8>> {
        let hash = hash_of(rule_version)?;
        let bytes = std::fs::read(self.dir.join(format!("{hash}.wasm"))).ok()?;
        let actual = hex::encode(&Sha256::digest(&bytes)[..hash.len() / 2]);
        (actual == hash).then_some(bytes)
    }

    /// Records `given` as the rules the command line gave this start; returns
    /// what it gave the previous start.
    pub fn note_start(&self, given: &str) -> Result<Option<String>, ArchiveError> {
        let path = self.dir.join("started-with");
        let previous = std::fs::read_to_string(&path).ok();
        std::fs::write(&path, given).map_err(|source| ArchiveError { path, source })?;
        Ok(previous)
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
        assert_eq!(archive.find(&version), Some(bytes));
        assert_eq!(archive.find("rules@1.0.0+000000000000"), None, "unknown hash");
        assert_eq!(archive.find("no hash"), None);
        assert_eq!(archive.note_start("a").unwrap(), None);
        assert_eq!(archive.note_start("b").unwrap().as_deref(), Some("a"));
    }
}
