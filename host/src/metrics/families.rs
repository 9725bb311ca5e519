//! What a job exposes, under which names: the label sets and the
//! registration of every metric (names, help, units).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::{Registry, Unit};

use super::JobMetrics;

/// `outcome` of `sessionize_events_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Outcome {
    pub(super) outcome: &'static str,
}

/// `reason` of `sessionize_events_rejected_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Reason {
    pub(super) reason: &'static str,
}

/// `end_reason` of `sessionize_sessions_closed_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndReason {
    pub(super) end_reason: String,
}

/// `partition` of the per-partition gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Partition {
    pub(super) partition: i32,
}

/// `kind` of `sessionize_plugin_faults_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FaultKind {
    pub(super) kind: &'static str,
}

/// `action` of `sessionize_rules_changes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RulesAction {
    pub(super) action: String,
}

/// `rule_version` of `sessionize_rules_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RuleVersion {
    pub(super) rule_version: String,
}

/// Every `kind` of `sessionize_plugin_faults_total`.
pub(super) const FAULT_KINDS: [&str; 6] =
    ["failed", "timeout", "out_of_memory", "trapped", "contract", "invalid"];

/// Registers the metrics of `m` under the `sessionize_` prefix, and starts the
/// series whose labels are known at zero.
pub(super) fn register(r: &mut Registry, m: &JobMetrics) {
    register_input(r, m);
    register_engine(r, m);
    register_checkpoints(r, m);
    register_rules(r, m);
    start_at_zero(m);
}

/// What was read and what became of it.
fn register_input(r: &mut Registry, m: &JobMetrics) {
    r.register("events_read", "Records read from the input", m.read.clone());
    r.register(
        "events_off_partition",
        "Events of a user on another partition than the user's first (input not keyed by user)",
        m.off_partition.clone(),
    );
    r.register(
        "events",
        "Events by outcome: accepted (queued for the rules), late, duplicate, rejected",
        m.events.clone(),
    );
    r.register(
        "events_rejected",
        "Records that were not valid events, by reason",
        m.rejected.clone(),
    );
    r.register(
        "sessions_closed",
        "Sessions the rules closed, by end reason",
        m.sessions_closed.clone(),
    );
    r.register(
        "consumer_lag",
        "Events in the partition not yet read (the partition's end minus the next offset)",
        m.lag.clone(),
    );
    r.register(
        "committed_offset",
        "Next offset to read, per partition, as of the last published checkpoint",
        m.committed.clone(),
    );
}

/// The engine's clocks and what it holds.
fn register_engine(r: &mut Registry, m: &JobMetrics) {
    r.register_with_unit(
        "watermark_timestamp",
        "The watermark (event time every event still to come is at or after), epoch",
        Unit::Seconds,
        m.watermark.clone(),
    );
    r.register_with_unit(
        "watermark_delay",
        "How far the watermark is behind the wall clock",
        Unit::Seconds,
        m.watermark_delay.clone(),
    );
    r.register("open_sessions", "Users with an open session", m.open_sessions.clone());
    r.register(
        "users_waiting",
        "Users with accepted events waiting for the watermark, which belong to no session \
         yet (a user may also have an open session, and then counts in both)",
        m.users_waiting.clone(),
    );
    r.register(
        "pending_events",
        "Accepted events waiting for the watermark",
        m.pending_events.clone(),
    );
    r.register(
        "users_in_memory",
        "Users the engine holds (open session, waiting events, or changed since the last checkpoint)",
        m.users_in_memory.clone(),
    );
    r.register(
        "text_table_entries",
        "Distinct texts interned (page names, event names and types)",
        m.texts.clone(),
    );
    r.register_with_unit(
        "state_store_size",
        "Size of the state store file",
        Unit::Bytes,
        m.state_bytes.clone(),
    );
}

/// Checkpoints and the commits they publish.
fn register_checkpoints(r: &mut Registry, m: &JobMetrics) {
    r.register("checkpoints", "Checkpoints completed", m.checkpoints.clone());
    r.register_with_unit(
        "checkpoint_duration",
        "Time to complete a checkpoint (state write and Iceberg commit)",
        Unit::Seconds,
        m.checkpoint_duration.clone(),
    );
    r.register_with_unit(
        "iceberg_commit_duration",
        "Time to publish a checkpoint's output to Iceberg, retries included",
        Unit::Seconds,
        m.commit_duration.clone(),
    );
    r.register_with_unit(
        "session_visibility_delay",
        "Time from a session's close to its visibility in the table (oldest of each checkpoint)",
        Unit::Seconds,
        m.visibility_delay.clone(),
    );
    r.register_with_unit(
        "last_checkpoint_timestamp",
        "When the last checkpoint completed, epoch",
        Unit::Seconds,
        m.last_checkpoint_time.clone(),
    );
}

/// The rules component and the group's rules.
fn register_rules(r: &mut Registry, m: &JobMetrics) {
    r.register("plugin_calls", "Calls into the rules component", m.plugin_calls.clone());
    r.register_with_unit(
        "plugin_call_duration",
        "Time of one call into the rules component (one batch)",
        Unit::Seconds,
        m.plugin_call_duration.clone(),
    );
    r.register(
        "plugin_faults",
        "Batches the rules failed, by kind (failed, timeout, out_of_memory, trapped, contract)",
        m.plugin_faults.clone(),
    );
    r.register(
        "rules_changes",
        "Changes of rules, by action (deployed, rolled_back, refused)",
        m.rules_changes.clone(),
    );
    r.register(
        "rules_info",
        "The rules in force (value 1, version in the label)",
        m.rules_info.clone(),
    );
    r.register(
        "group_rules_followed",
        "1 while a group member runs its group's rules (or is no member), 0 while it cannot",
        m.group_rules_followed.clone(),
    );
    r.register(
        "partitions_unreadable",
        "Partitions a group member holds but cannot restore (their state cannot be read)",
        m.partitions_unreadable.clone(),
    );
    r.register(
        "group_publishes_refused",
        "Rules changes made here that the group refused (it had newer rules by then)",
        m.publishes_refused.clone(),
    );
}

/// Series whose labels are known start at zero, so that a rate over them
/// works from the first scrape and dashboards show 0, not "no data".
fn start_at_zero(m: &JobMetrics) {
    m.group_rules_followed.set(1);
    for outcome in ["accepted", "late", "duplicate", "rejected"] {
        let _ = m.events.get_or_create(&Outcome { outcome });
    }
    for kind in FAULT_KINDS {
        let _ = m.plugin_faults.get_or_create(&FaultKind { kind });
    }
    for action in ["deployed", "rolled_back", "refused"] {
        let _ = m.rules_changes.get_or_create(&RulesAction { action: action.to_owned() });
    }
}
