//! The durable state store (redb): open sessions and queued events per user, the
//! text table, event-time clocks, the last checkpoint, and output staged for an
//! Iceberg commit. One redb transaction per checkpoint: either all of a
//! checkpoint is on disk or none of it.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::engine::{EngineChanges, EngineClocks, UserState};
use crate::rules::contract::{EventField, SessionAttribute};
use crate::sink::{RejectedEvent, SessionRow};

mod encoding;
mod partition;

pub use partition::{encode_partition_file, PartitionState};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const TEXTS: TableDefinition<u32, &str> = TableDefinition::new("texts");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const STAGED: TableDefinition<u64, &[u8]> = TableDefinition::new("staged");
const CHECKPOINT_KEY: &str = "checkpoint";
/// The declared fields the stored waiting events carry values of.
const FIELDS_KEY: &str = "fields";
const JOB_ID_KEY: &str = "job-id";

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database could not be opened, read or written.
    #[error("state store {path}: {message}")]
    Storage {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A stored record does not decode: the file is from another version, or damaged.
    #[error("state store {path}: undecodable {what}: {message}")]
    Corrupt {
        /// The database file.
        path: String,
        /// Which record.
        what: &'static str,
        /// The decoder's complaint.
        message: String,
    },
}

/// The last durable checkpoint: where the input stood and what the state was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Increases by one per checkpoint; the Iceberg commit of its output carries it.
    pub id: u64,
    /// Next offset to read, per input partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Event-time clocks after the checkpoint.
    pub clocks: EngineClocks,
    /// The rules in force.
    pub rule_version: String,
    /// The rules the job's command line gave (they differ from the rules in
    /// force after a live deploy).
    pub given_rules: String,
}

/// Output of a checkpoint, kept until its Iceberg commit is known to be done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StagedOutput {
    /// Sessions the checkpoint closed.
    pub sessions: Vec<SessionRow>,
    /// Records the checkpoint rejected.
    pub rejected: Vec<RejectedEvent>,
    /// The attribute columns of the rules in force at the cut, which the
    /// table must have once the output is published (even with no row).
    #[serde(skip)]
    pub columns: Vec<SessionAttribute>,
}

/// Everything needed to resume after a stop or a crash.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The last checkpoint, if one was ever written.
    pub checkpoint: Option<CheckpointRecord>,
    /// Output staged by that checkpoint and perhaps not yet in Iceberg.
    pub staged: Option<StagedOutput>,
    /// The text table.
    pub texts: Vec<String>,
    /// Every user with something open or queued.
    pub users: Vec<UserState>,
    /// The declared fields their waiting events carry values of.
    pub fields: Vec<EventField>,
}

/// The redb-backed state store.
pub struct StateStore {
    db: Database,
    path: String,
}

impl StateStore {
    /// The store file's size, if it can be read.
    pub fn file_size(&self) -> Option<u64> {
        std::fs::metadata(&self.path).ok().map(|m| m.len())
    }

    /// Opens (creating if needed) the store in `dir/state.redb`. A directory
    /// it creates is owner-only (it holds open sessions and the admin token);
    /// an existing one that others can enter is used, with a warning.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let path = dir.join("state.redb");
        let name = path.display().to_string();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| storage(&name, e))?;
        let mode = std::fs::metadata(dir).map_err(|e| storage(&name, e))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the state directory is open to other users, and it holds open sessions and \
                 the admin token: chmod 700 it"
            );
        }
        let db = Database::create(&path).map_err(|e| storage(&name, e))?;
        let store = Self { db, path: name };
        // Create the tables so that reads of a fresh store find them.
        let txn = store.db.begin_write().map_err(|e| store.fail(e))?;
        {
            txn.open_table(USERS).map_err(|e| store.fail(e))?;
            txn.open_table(TEXTS).map_err(|e| store.fail(e))?;
            txn.open_table(META).map_err(|e| store.fail(e))?;
            txn.open_table(STAGED).map_err(|e| store.fail(e))?;
        }
        txn.commit().map_err(|e| store.fail(e))?;
        Ok(store)
    }

    /// This store's job id: created with the store, recorded with every Iceberg
    /// commit, so a new job (fresh state) never mistakes another's commits for its own.
    pub fn job_id(&self) -> Result<String, StateError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let id = {
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            let existing =
                meta.get(JOB_ID_KEY).map_err(|e| self.fail(e))?.map(|v| v.value().to_vec());
            match existing {
                Some(bytes) => String::from_utf8(bytes).map_err(|e| self.corrupt("job id", e))?,
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    meta.insert(JOB_ID_KEY, id.as_bytes()).map_err(|e| self.fail(e))?;
                    id
                }
            }
        };
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(id)
    }

    fn fail(&self, e: impl std::fmt::Display) -> StateError {
        storage(&self.path, e)
    }

    fn corrupt(&self, what: &'static str, e: impl std::fmt::Display) -> StateError {
        StateError::Corrupt { path: self.path.clone(), what, message: e.to_string() }
    }

    /// Reads everything back, as a restarting job needs it.
    pub fn recover(&self) -> Result<Recovered, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let meta = txn.open_table(META).map_err(|e| self.fail(e))?;
        let checkpoint: Option<CheckpointRecord> =
            match meta.get(CHECKPOINT_KEY).map_err(|e| self.fail(e))? {
                Some(bytes) => Some(
                    encoding::decode(bytes.value()).map_err(|e| self.corrupt("checkpoint", e))?,
                ),
                None => None,
            };
        let fields: Vec<EventField> = match meta.get(FIELDS_KEY).map_err(|e| self.fail(e))? {
            Some(bytes) => {
                encoding::decode(bytes.value()).map_err(|e| self.corrupt("declared fields", e))?
            }
            None => Vec::new(),
        };
        let staged_table = txn.open_table(STAGED).map_err(|e| self.fail(e))?;
        let staged = match &checkpoint {
            Some(c) => match staged_table.get(c.id).map_err(|e| self.fail(e))? {
                Some(bytes) => Some(
                    encoding::decode_staged(bytes.value())
                        .map_err(|e| self.corrupt("staged output", e))?,
                ),
                None => None,
            },
            None => None,
        };
        let mut texts = Vec::new();
        let mut distinct = DistinctTexts::default();
        for entry in
            txn.open_table(TEXTS).map_err(|e| self.fail(e))?.iter().map_err(|e| self.fail(e))?
        {
            let (handle, text) = entry.map_err(|e| self.fail(e))?;
            if handle.value() as usize != texts.len() {
                return Err(
                    self.corrupt("text table", format!("gap before handle {}", handle.value()))
                );
            }
            distinct.check(text.value()).map_err(|e| self.corrupt("text table", e))?;
            texts.push(text.value().to_owned());
        }
        let mut users = Vec::new();
        for entry in
            txn.open_table(USERS).map_err(|e| self.fail(e))?.iter().map_err(|e| self.fail(e))?
        {
            let (uuid, record) = entry.map_err(|e| self.fail(e))?;
            let user = encoding::decode_user(uuid.value(), record.value())
                .map_err(|e| self.corrupt("user", e))?;
            users.push(user);
        }
        Ok(Recovered { checkpoint, staged, texts, users, fields })
    }

    /// Writes a checkpoint atomically: the engine's changes, the new checkpoint
    /// record, and its output staged for Iceberg.
    pub fn write_checkpoint(
        &self,
        changes: &EngineChanges,
        checkpoint: &CheckpointRecord,
        staged: &StagedOutput,
    ) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut users = txn.open_table(USERS).map_err(|e| self.fail(e))?;
            for user in &changes.upserts {
                let record = encoding::encode_user(user)
                    .map_err(|e| self.fail(format!("cannot encode a user: {e}")))?;
                users.insert(&*user.uuid, record.as_slice()).map_err(|e| self.fail(e))?;
            }
            for uuid in &changes.deletes {
                users.remove(&**uuid).map_err(|e| self.fail(e))?;
            }
            let mut texts = txn.open_table(TEXTS).map_err(|e| self.fail(e))?;
            if changes.replace_texts {
                // Renumbered: the users written above refer to the new handles.
                texts.retain(|_, _| false).map_err(|e| self.fail(e))?;
            }
            for (i, text) in changes.new_texts.iter().enumerate() {
                texts.insert(changes.first_text + i as u32, &**text).map_err(|e| self.fail(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            let bytes = encoding::encode(checkpoint).map_err(|e| self.corrupt("checkpoint", e))?;
            meta.insert(CHECKPOINT_KEY, bytes.as_slice()).map_err(|e| self.fail(e))?;
            let bytes = encoding::encode(&changes.fields)
                .map_err(|e| self.corrupt("declared fields", e))?;
            meta.insert(FIELDS_KEY, bytes.as_slice()).map_err(|e| self.fail(e))?;
            let mut staged_table = txn.open_table(STAGED).map_err(|e| self.fail(e))?;
            let bytes =
                encoding::encode_staged(staged).map_err(|e| self.corrupt("staged output", e))?;
            staged_table.insert(checkpoint.id, bytes.as_slice()).map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Forgets a checkpoint's staged output once Iceberg holds it.
    pub fn clear_staged(&self, checkpoint_id: u64) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut staged = txn.open_table(STAGED).map_err(|e| self.fail(e))?;
            staged.retain(|id, _| id > checkpoint_id).map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }
}

fn storage(path: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Storage { path: path.to_owned(), message: e.to_string() }
}
/// Texts a store holds, each once: interning a second copy would give it the
/// first one's handle and shift every later handle, so a restored session
/// would name the wrong pages.
#[derive(Default)]
pub(crate) struct DistinctTexts(std::collections::HashSet<String>);

impl DistinctTexts {
    /// Takes `text` in, or says it was there already.
    pub(crate) fn check(&mut self, text: &str) -> Result<(), String> {
        if self.0.contains(text) {
            return Err(format!("the text {:?} is stored twice", clipped(text)));
        }
        self.0.insert(text.to_owned());
        Ok(())
    }
}

/// The start of `text`, for a message.
fn clipped(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
