//! A group member's side of the fleet's rules (see
//! [`crate::sink::iceberg::FleetView`]): with its checkpoints it publishes the
//! rules an operator gave it, and learns of rules another member published.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::rules::lifecycle::{RulesArchive, RulesToPublish};
use crate::sink::iceberg::{FleetRules, FleetView, Publish};
use crate::sink::{Sink, SinkError};

/// What a member's checkpoint learnt of its group's rules.
#[derive(Debug)]
pub(crate) struct FleetUpdate {
    /// The members and rules as the commit left them.
    pub(crate) view: FleetView,
    /// Rules another member published that this one does not run: their
    /// version and component, checked against the record's hash.
    pub(crate) follow: Option<(String, Vec<u8>)>,
    /// Publish requests this member has settled so far (published, given
    /// up, or replaced by a newer one), counted since it started.
    pub(crate) settled: u64,
}

/// Uploads what a member publishes and fetches what it follows.
pub(crate) struct RulesExchange {
    group: String,
    /// Where the components of the rules this member ran are kept.
    archive: Arc<RulesArchive>,
    max_component_bytes: u64,
    /// The newest record taken in (followed, or already run).
    followed_seq: u64,
    /// Waiting to be published (again after a failed upload).
    to_publish: Option<RulesToPublish>,
    /// Its component is beside the table already (a commit that failed
    /// after the upload does not upload it again).
    uploaded: Option<Publish>,
    /// Publish requests settled (see [`FleetUpdate::settled`]).
    settled: u64,
}

impl RulesExchange {
    /// For a member of `group` that started with the group's record
    /// `followed_seq` (0: none) in force.
    pub(crate) fn new(
        group: &str,
        archive: Arc<RulesArchive>,
        max_component_bytes: u64,
        followed_seq: u64,
    ) -> Self {
        Self {
            group: group.to_owned(),
            archive,
            max_component_bytes,
            followed_seq,
            to_publish: None,
            uploaded: None,
            settled: 0,
        }
    }

    /// Publishes `rules` with the next checkpoint that commits (a newer
    /// request replaces an older one not yet published).
    pub(crate) fn queue(&mut self, rules: RulesToPublish) {
        self.uploaded = None;
        if self.to_publish.replace(rules).is_some() {
            self.settled += 1;
        }
    }

    /// Drops the request waiting: it cannot be published.
    fn give_up(&mut self) {
        self.uploaded = None;
        if self.to_publish.take().is_some() {
            self.settled += 1;
        }
    }

    /// Puts the component of the rules waiting to be published beside the
    /// table, and says what the commit should record. A failed upload is
    /// tried again with the next checkpoint.
    pub(crate) async fn upload(&mut self, sink: &mut impl Sink) -> Option<Publish> {
        let to = self.to_publish.as_ref()?;
        if self.uploaded.is_some() {
            return self.uploaded.clone();
        }
        let bytes = match self.archive.find(&to.version) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                tracing::warn!(
                    rules = to.version,
                    "rules not in the archive: not published to the group"
                );
                self.give_up();
                return None;
            }
            Err(error) => {
                tracing::warn!(rules = to.version, %error, "rules not published to the group");
                self.give_up();
                return None;
            }
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        match sink.write_component(&self.group, &sha256, bytes).await {
            Ok(()) => {
                let publish =
                    Publish { version: to.version.clone(), sha256, only_if_none: to.only_if_none };
                self.uploaded = Some(publish.clone());
                Some(publish)
            }
            Err(error) => {
                tracing::warn!(rules = to.version, %error, "uploading rules failed; tried again with the next checkpoint");
                None
            }
        }
    }

    /// Takes in what a commit found: `running` made its output, and
    /// `published` says whether it carried this member's rules (settled
    /// then). Fetches the
    /// component of a record this member does not run yet.
    pub(crate) async fn take_in(
        &mut self,
        sink: &mut impl Sink,
        view: FleetView,
        running: &str,
        published: bool,
    ) -> FleetUpdate {
        if published {
            self.give_up();
        }
        let mut follow = None;
        if let Some(rules) = view.rules.as_ref().filter(|r| r.seq != self.followed_seq) {
            if rules.version == running {
                self.followed_seq = rules.seq;
            } else {
                match fetch_component(sink, &self.group, rules, self.max_component_bytes).await {
                    Ok(bytes) => {
                        self.followed_seq = rules.seq;
                        follow = Some((rules.version.clone(), bytes));
                    }
                    Err(FetchError { why, lasting: true }) => {
                        self.followed_seq = rules.seq;
                        tracing::error!(
                            rules = rules.version,
                            by = rules.by,
                            why,
                            "not following the group's rules: the rules in force stay"
                        );
                    }
                    Err(FetchError { why, lasting: false }) => {
                        tracing::warn!(rules = rules.version, by = rules.by, why, "cannot follow the group's rules yet; tried again with the next checkpoint");
                    }
                }
            }
        }
        FleetUpdate { view, follow, settled: self.settled }
    }
}

/// Why the component of the group's rules could not be had.
#[derive(Debug)]
pub(crate) struct FetchError {
    /// In a sentence.
    pub(crate) why: String,
    /// Whether trying again cannot help (no such component, not the one
    /// recorded, too large for this member).
    pub(crate) lasting: bool,
}

/// The component `rules` names, checked against its hash (the record and
/// the file come from storage others can write).
pub(crate) async fn fetch_component(
    sink: &mut impl Sink,
    group: &str,
    rules: &FleetRules,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchError> {
    let lasting = |why| FetchError { why, lasting: true };
    if !rules.names_a_file() {
        return Err(lasting(format!("the record names no component ({:?})", rules.sha256)));
    }
    let bytes = match sink.read_component(group, &rules.sha256, max_bytes).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let lasting = matches!(error, SinkError::Config(_));
            return Err(FetchError { why: error.to_string(), lasting });
        }
    };
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != rules.sha256 {
        let recorded = &rules.sha256;
        return Err(lasting(format!(
            "the component hashes to {actual}, not to the {recorded} recorded"
        )));
    }
    Ok(bytes)
}
