//! A group member's exchange of rules with its group's store (see
//! [`crate::group::GroupView`]): with its checkpoints it publishes the rules
//! an operator gave it, and learns of rules another member published.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::group::{GroupStore, GroupUpdate, GroupView, Publish, PublishKind, RulesRecord};
use crate::rules::lifecycle::RulesArchive;
use crate::sink::SinkError;

/// Uploads what a member publishes and fetches what it follows.
pub(crate) struct RulesExchange {
    group: String,
    /// Where the components of the rules this member ran are kept.
    archive: Arc<RulesArchive>,
    max_component_bytes: u64,
    /// The newest record taken in (followed, or already run).
    followed_seq: u64,
    /// Waiting to be published (again after a failed upload); once its
    /// `sha256` is set, its component is where every member reaches it (a
    /// commit that failed after the upload does not upload it again).
    to_publish: Option<Publish>,
    /// Publish requests settled (see [`GroupUpdate::settled`]).
    settled: u64,
    /// Why the group's rules cannot be fetched, until they change or can be.
    unusable: Option<String>,
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
            settled: 0,
            unusable: None,
        }
    }

    /// A member that started without the group's rules: why not.
    pub(crate) fn unusable(mut self, why: Option<String>) -> Self {
        self.unusable = why;
        self
    }

    /// Publishes `publish` with the next checkpoint that commits (a newer
    /// request replaces an older one not yet published). A deploy is made
    /// against the newest record this member has taken in.
    pub(crate) fn queue(&mut self, mut publish: Publish) {
        if publish.kind != PublishKind::Rollback {
            publish.based_on = self.followed_seq;
            publish.sha256 = None;
        }
        if self.to_publish.replace(publish).is_some() {
            self.settled += 1;
        }
    }

    /// Drops the request waiting: it cannot be published.
    fn give_up(&mut self) {
        if self.to_publish.take().is_some() {
            self.settled += 1;
        }
    }

    /// Puts the component of the rules waiting to be published where every
    /// member reaches it (a rollback's is there already), and says what the
    /// commit should carry. A failed upload is tried again with the next
    /// checkpoint.
    pub(crate) async fn upload(
        &mut self,
        store: &mut impl GroupStore<Error = SinkError>,
    ) -> Option<Publish> {
        let pending = self.to_publish.as_mut()?;
        if pending.sha256.is_some() {
            return Some(pending.clone());
        }
        let version = pending.version.clone();
        let bytes = match self.archive.find(&version) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                tracing::warn!(
                    rules = version,
                    "rules not in the archive: not published to the group"
                );
                self.give_up();
                return None;
            }
            Err(error) => {
                tracing::warn!(rules = version, %error, "rules not published to the group");
                self.give_up();
                return None;
            }
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        match store.write_component(&self.group, &sha256, bytes).await {
            Ok(()) => {
                pending.sha256 = Some(sha256);
                Some(pending.clone())
            }
            Err(error) => {
                tracing::warn!(rules = version, %error, "uploading rules failed; tried again with the next checkpoint");
                None
            }
        }
    }

    /// Takes in what a commit found: `running` made its output, and
    /// `published` is what it carried of this member's (settled then: taken
    /// in by the group, or refused). Fetches the component of a record this
    /// member does not run yet.
    pub(crate) async fn take_in(
        &mut self,
        store: &mut impl GroupStore<Error = SinkError>,
        view: GroupView,
        running: &str,
        published: Option<&Publish>,
    ) -> GroupUpdate {
        let mut refused = None;
        if let Some(publish) = published {
            if publish.kind != PublishKind::Start && !view.holds(publish) {
                let newest = view.rules.as_ref().map_or("none".into(), |r| r.version.clone());
                let why = format!(
                    "the {} of {} made here was not published: the group's rules changed to \
                     {newest} meanwhile, which this member follows; check `sessionize plugin \
                     status` and change them again if need be",
                    if publish.kind == PublishKind::Rollback { "rollback" } else { "deploy" },
                    publish.version,
                );
                tracing::error!("{why}");
                refused = Some(why);
            }
            self.give_up();
        }
        let follow = self.follow(store, &view, running).await;
        let unusable = self.unusable.clone();
        GroupUpdate { view, follow, settled: self.settled, refused, unusable }
    }

    /// The component of the group's rules, if this member should follow them.
    async fn follow(
        &mut self,
        store: &mut impl GroupStore<Error = SinkError>,
        view: &GroupView,
        running: &str,
    ) -> Option<(String, Vec<u8>)> {
        let rules = view.rules.as_ref()?;
        if rules.version == running {
            self.followed_seq = rules.seq;
            self.unusable = None;
            return None;
        }
        if rules.seq == self.followed_seq {
            return None;
        }
        match fetch_component(store, &self.group, rules, self.max_component_bytes).await {
            Ok(bytes) => {
                self.followed_seq = rules.seq;
                self.unusable = None;
                Some((rules.version.clone(), bytes))
            }
            Err(FetchError { why, lasting: true }) => {
                self.followed_seq = rules.seq;
                tracing::error!(
                    rules = rules.version,
                    by = rules.by,
                    why,
                    "not following the group's rules: the rules in force stay"
                );
                self.unusable = Some(format!("cannot use {}: {why}", rules.version));
                None
            }
            Err(FetchError { why, lasting: false }) => {
                tracing::warn!(
                    rules = rules.version,
                    by = rules.by,
                    why,
                    "cannot follow the group's rules yet; tried again with the next checkpoint"
                );
                self.unusable = Some(format!("cannot fetch {} yet: {why}", rules.version));
                None
            }
        }
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
    store: &mut impl GroupStore<Error = SinkError>,
    group: &str,
    rules: &RulesRecord,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchError> {
    let lasting = |why| FetchError { why, lasting: true };
    if !rules.names_a_file() {
        return Err(lasting(format!("the record names no component ({:?})", rules.sha256)));
    }
    let bytes = match store.read_component(group, &rules.sha256, max_bytes).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let lasting = matches!(error, SinkError::Refused(_));
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
