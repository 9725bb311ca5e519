//! The sink of a job that writes its sessions to a Kafka topic only
//! (`--sink kafka`): no table, so a commit only records what it carried, for
//! the checkpoint protocol's check that it landed.

use std::collections::HashMap;

use super::{carries, CommitStats, RejectedEvent, SessionRow, Sink, SinkError};

/// A sink that keeps no rows (see the module docs). After a restart it
/// remembers nothing: output a crash left staged is published again, which
/// the topic's at-least-once delivery allows.
#[derive(Debug, Default)]
pub struct NoTable {
    last: Option<HashMap<String, String>>,
}

impl Sink for NoTable {
    async fn commit(
        &mut self,
        _sessions: &[SessionRow],
        _rejected: &[RejectedEvent],
        properties: HashMap<String, String>,
    ) -> Result<CommitStats, SinkError> {
        self.last = Some(properties);
        Ok(CommitStats::default())
    }

    async fn last_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        Ok(self.last.clone().filter(|last| carries(last, key, value)))
    }

    async fn last_rejected_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        self.last_commit_properties(key, value).await
    }
}
