//! How a member of a consumer group starts: a new member id, the group's
//! rules (not the command line's, once the group has some), and the
//! checkpoints that share state through the warehouse.

use std::path::Path;
use std::sync::Arc;

use super::{JobError, DEFAULT_RULES};
use crate::checkpoint::{fetch_component, GroupCheckpointer, RulesExchange};
use crate::engine::EngineConfig;
use crate::group::{GroupStore, GroupView, RulesRecord};
use crate::rules::lifecycle::{read_component, RulesArchive, RulesLoader, RulesSlot};
use crate::rules::{ComponentRules, RulesRuntime};
use crate::sink::{Sink, SinkError};

/// What a member needs of the job's configuration.
pub(super) struct Membership<'a> {
    /// The consumer group.
    pub(super) group: &'a str,
    /// `--plugin`, if given.
    pub(super) plugin: Option<&'a Path>,
    /// `--max-component-mib`, in bytes.
    pub(super) max_component_bytes: u64,
    /// The engine's settings.
    pub(super) engine: EngineConfig,
}

/// A member as it joins: its checkpoints, and why it runs its own rules
/// rather than the group's, if it does.
pub(super) struct Joined {
    /// The member's checkpoint store.
    pub(super) checkpointer: GroupCheckpointer,
    /// Why the group's rules could not be had (see [`start_member`]).
    pub(super) diverged: Option<String>,
    /// The group as the member found it (a rollback sent to it before its
    /// first commit goes to the rules the record kept).
    pub(super) fleet: GroupView,
}

/// Joins as a new member: switches `slot` to the group's rules if it has
/// rules other than the command line's, keeps the starting component in
/// `archive` (to be published if the group has none), and returns the
/// member's checkpoint store.
///
/// Rules the group recorded that this member cannot use (too large for its
/// `--max-component-mib`, refused by its settings, missing) do not stop it:
/// it starts with the same version from its archive if it ran it before,
/// else with its command line's, and says so (log, `plugin status`,
/// `/readyz`, a metric) until it can follow the group.
pub(super) async fn start_member(
    member: &Membership<'_>,
    sink: &mut (impl Sink + GroupStore<Error = SinkError>),
    loader: &RulesLoader,
    archive: &Arc<RulesArchive>,
    slot: &mut RulesSlot,
) -> Result<Joined, JobError> {
    // A new member each start: its claims fence whatever an earlier run of
    // this instance still held.
    let owner = uuid::Uuid::new_v4().to_string();
    tracing::info!(group = member.group, member = owner, "joining as a group member");
    let given = given_component(member)?;
    archive.keep(slot.rule_version(), &given)?;
    let fleet = sink.view(member.group).await.map_err(|source| JobError::Group {
        why: format!("cannot read the group's record: {source}"),
    })?;
    let (followed_seq, diverged) = match &fleet.rules {
        None => (0, None),
        Some(rules) if rules.version == slot.rule_version() => (rules.seq, None),
        Some(rules) => match group_rules(member, sink, loader, archive, rules).await {
            Ok(group_rules) => {
                tracing::info!(
                    rules = group_rules.rule_version(),
                    given = slot.rule_version(),
                    "starting with the group's rules, not the ones given: change them with \
                     `sessionize plugin deploy` to any member"
                );
                slot.resume(group_rules);
                (rules.seq, None)
            }
            Err(why) => {
                tracing::error!(
                    rules = rules.version,
                    running = slot.rule_version(),
                    why,
                    "cannot use the group's rules: starting with this member's own, until it can"
                );
                // Tried again with the next record (or with each checkpoint
                // while the record is the same: the fetch may heal).
                (0, Some(format!("cannot use {}: {why}", rules.version)))
            }
        },
    };
    let exchange =
        RulesExchange::new(member.group, archive.clone(), member.max_component_bytes, followed_seq)
            .unusable(diverged.clone());
    let checkpointer =
        GroupCheckpointer::new(member.group, &owner, member.engine).exchanging_rules(exchange);
    Ok(Joined { checkpointer, diverged, fleet })
}

/// The group's `rules`, from the store or, failing that, from this
/// member's archive; why neither, in a sentence.
async fn group_rules(
    member: &Membership<'_>,
    sink: &mut (impl Sink + GroupStore<Error = SinkError>),
    loader: &RulesLoader,
    archive: &RulesArchive,
    rules: &RulesRecord,
) -> Result<ComponentRules, String> {
    let fetched = fetch_component(sink, member.group, rules, member.max_component_bytes).await;
    let (bytes, why) = match fetched {
        Ok(bytes) => (bytes, None),
        Err(error) => match archive.find(&rules.version) {
            Ok(Some(bytes)) => (bytes, Some(error.why)),
            _ => return Err(error.why),
        },
    };
    if let Some(why) = why {
        tracing::warn!(
            rules = rules.version,
            why,
            "the group's rules taken from this member's archive"
        );
    }
    let loaded = tokio::task::block_in_place(|| loader.load(&bytes)).map_err(|e| e.to_string())?;
    archive.keep(loaded.rule_version(), &bytes).map_err(|e| e.to_string())?;
    Ok(loaded)
}

/// The bytes of the rules the command line gives.
fn given_component(member: &Membership<'_>) -> Result<Vec<u8>, JobError> {
    match (member.plugin, DEFAULT_RULES) {
        (Some(path), _) => read_component(path, member.max_component_bytes).map_err(|e| {
            JobError::Group { why: format!("cannot read plugin {}: {e}", path.display()) }
        }),
        (None, Some(bytes)) => Ok(bytes.to_vec()),
        (None, None) => Err(JobError::NoDefaultRules),
    }
}
