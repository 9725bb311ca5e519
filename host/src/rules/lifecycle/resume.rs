//! Which rules a restarted job continues with.

use super::RulesArchive;

/// What the last checkpoint says about the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointedRules {
    /// The rules the last checkpoint was cut by (empty for a fresh job).
    pub in_force: String,
    /// The rules the command line gave the run that cut it.
    pub given: String,
}

/// The component a restarted job continues with, if its last checkpoint was
/// cut by rules deployed live and the command line gives what it gave at the
/// previous start (`given`). A changed `--plugin` wins: the operator asked for it.
pub fn deployed_before_restart(
    archive: &RulesArchive,
    checkpointed: &CheckpointedRules,
    given: &str,
) -> Option<Vec<u8>> {
    let in_force = checkpointed.in_force.as_str();
    if in_force.is_empty() || in_force == given {
        return None;
    }
    if checkpointed.given != given {
        tracing::info!(
            checkpointed = in_force,
            given,
            "the rules given have changed since the last start: using them"
        );
        return None;
    }
    match archive.find(in_force) {
        Ok(Some(bytes)) => Some(bytes),
        Ok(None) => {
            tracing::warn!(
                checkpointed = in_force,
                given,
                "rules of the last checkpoint not in the state directory: using the rules given"
            );
            None
        }
        Err(error) => {
            tracing::warn!(checkpointed = in_force, given, %error, "using the rules given");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn archived(dir: &std::path::Path, bytes: &[u8]) -> (RulesArchive, String) {
        let archive = RulesArchive::open(dir).unwrap();
        let version = format!("live@1.0.0+{}", hex::encode(&Sha256::digest(bytes)[..6]));
        archive.keep(&version, bytes).unwrap();
        (archive, version)
    }

    #[test]
    fn a_restart_with_the_same_command_line_continues_with_the_live_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, live) = archived(dir.path(), b"live component");
        let checkpointed = CheckpointedRules { in_force: live, given: "given@1+aa".into() };
        assert_eq!(
            deployed_before_restart(&archive, &checkpointed, "given@1+aa").as_deref(),
            Some(&b"live component"[..])
        );
    }

    #[test]
    fn a_changed_plugin_on_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, live) = archived(dir.path(), b"live component");
        let checkpointed = CheckpointedRules { in_force: live, given: "given@1+aa".into() };
        assert_eq!(deployed_before_restart(&archive, &checkpointed, "other@2+bb"), None);
    }

    #[test]
    fn nothing_to_resume_for_a_fresh_job_or_the_given_rules_or_failed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, live) = archived(dir.path(), b"live component");
        let fresh = CheckpointedRules::default();
        assert_eq!(deployed_before_restart(&archive, &fresh, "given@1+aa"), None);
        let same = CheckpointedRules { in_force: "given@1+aa".into(), given: "given@1+aa".into() };
        assert_eq!(deployed_before_restart(&archive, &same, "given@1+aa"), None);
        archive.mark_failed(&live).unwrap();
        let failed = CheckpointedRules { in_force: live, given: "given@1+aa".into() };
        assert_eq!(deployed_before_restart(&archive, &failed, "given@1+aa"), None);
    }

    #[test]
    fn rules_missing_from_the_archive_fall_back_to_the_given_ones() {
        let dir = tempfile::tempdir().unwrap();
        let archive = RulesArchive::open(dir.path()).unwrap();
        let checkpointed = CheckpointedRules {
            in_force: "gone@1+0123456789ab".into(),
            given: "given@1+aa".into(),
        };
        assert_eq!(deployed_before_restart(&archive, &checkpointed, "given@1+aa"), None);
    }
}
