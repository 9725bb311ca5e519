//! How a member of a consumer group starts: a new member id, the group's
//! rules (not the command line's, once the group has some), and the
//! checkpoints that share state through the warehouse.

use std::path::Path;
use std::sync::Arc;

use super::{JobError, DEFAULT_RULES};
use crate::checkpoint::{fetch_component, Completer, GroupCheckpointer, RulesExchange};
use crate::engine::EngineConfig;
use crate::rules::lifecycle::{read_component, RulesArchive, RulesLoader, RulesSlot};
use crate::rules::RulesRuntime;
use crate::sink::Sink;

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

/// Joins as a new member: switches `slot` to the group's rules if it has
/// rules other than the command line's, keeps the starting component in
/// `archive` (to be published if the group has none), and returns the
/// member's checkpoint completer.
pub(super) async fn start_member(
    member: &Membership<'_>,
    sink: &mut impl Sink,
    loader: &RulesLoader,
    archive: &Arc<RulesArchive>,
    slot: &mut RulesSlot,
) -> Result<Completer, JobError> {
    // A new member each start: its claims fence whatever an earlier run of
    // this instance still held.
    let owner = uuid::Uuid::new_v4().to_string();
    tracing::info!(group = member.group, member = owner, "joining as a group member");
    let given = given_component(member)?;
    archive.keep(slot.rule_version(), &given)?;
    let fleet = sink.fleet(member.group).await.map_err(|source| JobError::Group {
        why: format!("cannot read the group's record: {source}"),
    })?;
    let followed_seq = match &fleet.rules {
        None => 0,
        Some(rules) if rules.version == slot.rule_version() => rules.seq,
        Some(rules) => {
            let bytes = fetch_component(sink, member.group, rules, member.max_component_bytes)
                .await
                .map_err(|error| JobError::Group {
                    why: format!("cannot fetch the group's rules {}: {}", rules.version, error.why),
                })?;
            let group_rules =
                tokio::task::block_in_place(|| loader.load(&bytes)).map_err(|source| {
                    JobError::Rules {
                        context: format!("loading the group's rules {}", rules.version),
                        source,
                    }
                })?;
            archive.keep(group_rules.rule_version(), &bytes)?;
            tracing::info!(
                rules = group_rules.rule_version(),
                given = slot.rule_version(),
                "starting with the group's rules, not the ones given: change them with \
                 `sessionize plugin deploy` to any member"
            );
            slot.resume(group_rules);
            rules.seq
        }
    };
    let exchange =
        RulesExchange::new(member.group, archive.clone(), member.max_component_bytes, followed_seq);
    let checkpointer =
        GroupCheckpointer::new(member.group, &owner, member.engine).exchanging_rules(exchange);
    Ok(Completer::Group(checkpointer))
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
