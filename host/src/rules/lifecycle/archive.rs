//! Components deployed live, kept in the job's state directory, so that a job
//! restarted with the same command line resumes with the rules its last
//! checkpoint was cut by, not with the ones it was first started with.
//!
//! A rule version names its component by the first 12 hex digits of its
//! SHA-256 only; the archive names each file by the full hash, and a
//! component read back must hash to exactly that.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::loader::read_component;

/// Largest archived component read back (the largest `--max-component-mib`).
const MAX_ARCHIVED_BYTES: u64 = 4096 << 20;

/// Why the archive could not be read or written, or refused what it holds.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file or directory could not be read or written.
    #[error("rules archive {}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why (printed above, so not a `source`).
        cause: std::io::Error,
    },
    /// A kept component's bytes no longer hash to the name it was kept under.
    #[error(
        "rules archive {}: the component hashes to {actual}, not to the {expected} it was \
         kept under when deployed (damaged or replaced): not used",
        path.display()
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The full SHA-256 recorded when it was deployed.
        expected: String,
        /// The SHA-256 of what is there now.
        actual: String,
    },
    /// More than one kept component matches a rule version's short hash.
    #[error(
        "rules archive {}: {count} components match {rule_version}: which one was deployed is \
         unknown, none is used",
        dir.display()
    )]
    Ambiguous {
        /// The archive.
        dir: PathBuf,
        /// The rule version looked for.
        rule_version: String,
        /// How many matched.
        count: usize,
    },
    /// The bytes given to keep are not the component the rule version names.
    #[error("rules archive: these bytes are not the component of {0}")]
    NotTheVersion(String),
}

/// `<state-dir>/rules/`: one file per deployed component, named by its full
/// SHA-256, and a `<short hash>.failed` marker for rules that stopped the job.
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

/// Whether `name` is `<64 hex digits>.wasm`, and the digits.
fn full_hash_in(name: &str) -> Option<&str> {
    name.strip_suffix(".wasm").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl RulesArchive {
    /// Opens (creating, owner-only) the archive in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, ArchiveError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join("rules");
        // Creates the state directory too, when missing: owner-only as well.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|cause| ArchiveError::Io { path: dir.clone(), cause })?;
        Ok(Self { dir })
    }

    /// Keeps `bytes`, the component of `rule_version`, unless already kept.
    /// Written beside, synced and renamed, so a crash never leaves half a
    /// component under the final name.
    pub fn keep(&self, rule_version: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        use std::io::Write;
        let Some(hash) = hash_of(rule_version) else { return Ok(()) };
        let full = hex::encode(Sha256::digest(bytes));
        if !full.starts_with(&hash.to_ascii_lowercase()) {
            return Err(ArchiveError::NotTheVersion(rule_version.to_owned()));
        }
        // A failure marker from an earlier run no longer applies to a fresh deploy.
        let _ = std::fs::remove_file(self.dir.join(format!("{hash}.failed")));
        let path = self.dir.join(format!("{full}.wasm"));
        if self.read_verified(&path, &full).is_ok() {
            return Ok(());
        }
        let fail = |cause| ArchiveError::Io { path: path.clone(), cause };
        let mut scratch = tempfile::NamedTempFile::new_in(&self.dir).map_err(fail)?;
        scratch.write_all(bytes).and_then(|()| scratch.as_file().sync_all()).map_err(fail)?;
        scratch.persist(&path).map_err(|e| fail(e.error))?;
        Ok(())
    }

    /// The kept component of `rule_version`, if there is one and it is not
    /// marked as failed. A component that no longer hashes to what it was
    /// kept under is refused with an error.
    pub fn find(&self, rule_version: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let Some(hash) = hash_of(rule_version).map(str::to_ascii_lowercase) else {
            return Ok(None);
        };
        if self.dir.join(format!("{hash}.failed")).exists() {
            return Ok(None);
        }
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|cause| ArchiveError::Io { path: self.dir.clone(), cause })?;
        let mut matching: Vec<(PathBuf, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let full = full_hash_in(&name)?.to_ascii_lowercase();
                full.starts_with(&hash).then(|| (entry.path(), full))
            })
            .collect();
        match matching.len() {
            0 => Ok(None),
            1 => {
                let (path, full) = matching.remove(0);
                self.read_verified(&path, &full).map(Some)
            }
            count => Err(ArchiveError::Ambiguous {
                dir: self.dir.clone(),
                rule_version: rule_version.to_owned(),
                count,
            }),
        }
    }

    /// Marks `rule_version` as the rules that stopped the job, so a restart
    /// does not resume with them.
    pub fn mark_failed(&self, rule_version: &str) -> Result<(), ArchiveError> {
        let Some(hash) = hash_of(rule_version).map(str::to_ascii_lowercase) else { return Ok(()) };
        let path = self.dir.join(format!("{hash}.failed"));
        std::fs::write(&path, rule_version).map_err(|cause| ArchiveError::Io { path, cause })
    }

    /// The bytes at `path`, which must hash to `full`.
    fn read_verified(&self, path: &Path, full: &str) -> Result<Vec<u8>, ArchiveError> {
        let bytes = read_component(path, MAX_ARCHIVED_BYTES)
            .map_err(|cause| ArchiveError::Io { path: path.to_owned(), cause })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != full {
            return Err(ArchiveError::Mismatch {
                path: path.to_owned(),
                expected: full.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version_of(bytes: &[u8], hex_digits: usize) -> String {
        format!("rules@1.0.0+{}", &hex::encode(Sha256::digest(bytes))[..hex_digits])
    }

    #[test]
    fn keeps_and_finds_by_the_hash_in_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let archive = RulesArchive::open(dir.path()).unwrap();
        let bytes = b"component bytes".to_vec();
        let version = version_of(&bytes, 12);
        assert_eq!(archive.find(&version).unwrap(), None);
        archive.keep(&version, &bytes).unwrap();
        assert_eq!(archive.find(&version).unwrap(), Some(bytes.clone()));
        assert_eq!(archive.find("rules@1.0.0+000000000000").unwrap(), None, "unknown hash");
        assert_eq!(archive.find("no hash").unwrap(), None);
        archive.mark_failed(&version).unwrap();
        assert_eq!(
            archive.find(&version).unwrap(),
            None,
            "rules that stopped the job are not resumed"
        );
        archive.keep(&version, &bytes).unwrap();
        assert_eq!(archive.find(&version).unwrap().as_deref(), Some(&bytes[..]), "deployed again");
        // A damaged file is refused, and a fresh deploy puts the real one back.
        let kept = dir.path().join(format!("rules/{}.wasm", hex::encode(Sha256::digest(&bytes))));
        std::fs::write(&kept, b"damaged").unwrap();
        let error = archive.find(&version).unwrap_err();
        assert!(error.to_string().contains("damaged or replaced"), "{error}");
        archive.keep(&version, &bytes).unwrap();
        assert_eq!(archive.find(&version).unwrap(), Some(bytes.clone()));
        assert!(matches!(
            archive.keep(&version, b"other bytes"),
            Err(ArchiveError::NotTheVersion(_))
        ));
    }

    #[test]
    fn a_component_that_matches_the_short_hash_but_not_the_full_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = RulesArchive::open(dir.path()).unwrap();
        let kept = b"component 0".to_vec();
        // A version carries a short hash; find other bytes that share it.
        let version = version_of(&kept, 2);
        let other = (1..)
            .map(|i| format!("component {i}").into_bytes())
            .find(|b| version_of(b, 2) == version)
            .unwrap();
        archive.keep(&version, &kept).unwrap();
        for entry in std::fs::read_dir(dir.path().join("rules")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wasm") {
                std::fs::write(&path, &other).unwrap();
            }
        }
        let refused = archive.find(&version);
        assert!(matches!(refused, Err(ArchiveError::Mismatch { .. })), "{refused:?}");
    }

    #[test]
    fn the_state_directory_and_the_archive_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        RulesArchive::open(&state).unwrap();
        for path in [&state, &state.join("rules")] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
    }
}
