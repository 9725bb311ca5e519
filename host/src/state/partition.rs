//! One partition's state in storage every member of a group reaches: a
//! chain of files, the first the partition's whole state
//! ([`crate::engine::Engine::take_everything`]), each later one the changes
//! of one checkpoint. A new owner folds the chain into an engine.
//!
//! The files come from shared storage, so nothing in them is trusted: a file
//! that does not decode, whose texts do not follow on from the chain's, or
//! that stores a text twice, is refused as corrupt, by its name.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{encoding, DistinctTexts, StateError};
use crate::engine::{Engine, EngineChanges, EngineClocks, EngineConfig, UserState};
use crate::rules::contract::EventField;

/// Marks the layout of a file, so a future one is refused, not misread.
const LAYOUT: u32 = 1;

/// A file as written.
#[derive(Serialize)]
struct FileRef<'a> {
    layout: u32,
    clocks: &'a EngineClocks,
    first_text: u32,
    replace_texts: bool,
    new_texts: Vec<&'a str>,
    users: Vec<(&'a str, Vec<u8>)>,
    deletes: Vec<&'a str>,
    fields: &'a [EventField],
}

/// A file as read back.
#[derive(Deserialize)]
struct File {
    layout: u32,
    clocks: EngineClocks,
    first_text: u32,
    replace_texts: bool,
    new_texts: Vec<String>,
    users: Vec<(String, Vec<u8>)>,
    deletes: Vec<String>,
    fields: Vec<EventField>,
}

/// The bytes of one file of a chain: `changes` (all of them, for the first
/// file) and the clocks after them.
pub fn encode_partition_file(
    changes: &EngineChanges,
    clocks: &EngineClocks,
) -> Result<Vec<u8>, StateError> {
    let users = changes
        .upserts
        .iter()
        .map(|user| Ok((&*user.uuid, encoding::encode_user(user)?)))
        .collect::<Result<Vec<_>, postcard::Error>>()
        .map_err(|e| corrupt("user", e))?;
    let file = FileRef {
        layout: LAYOUT,
        clocks,
        first_text: changes.first_text,
        replace_texts: changes.replace_texts,
        new_texts: changes.new_texts.iter().map(|t| &**t).collect(),
        users,
        deletes: changes.deletes.iter().map(|u| &**u).collect(),
        fields: &changes.fields,
    };
    encoding::encode(&file).map_err(|e| corrupt("partition state", e))
}

/// A partition's state, folded from its chain one file at a time.
#[derive(Default)]
pub struct PartitionState {
    texts: Vec<String>,
    distinct: DistinctTexts,
    users: HashMap<Arc<str>, UserState>,
    clocks: EngineClocks,
    fields: Vec<EventField>,
    files: usize,
}

impl PartitionState {
    /// Applies the next file of the chain, `name` (for messages).
    pub fn apply(&mut self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let corrupt = |what, e: &dyn std::fmt::Display| StateError::Corrupt {
            path: name.to_owned(),
            what,
            message: e.to_string(),
        };
        let file: File = encoding::decode(bytes).map_err(|e| corrupt("partition state", &e))?;
        if file.layout != LAYOUT {
            let layout = format!("unknown layout {}", file.layout);
            return Err(corrupt("partition state", &layout));
        }
        if self.files == 0 && !file.replace_texts {
            return Err(corrupt("partition state", &"the chain does not start with a whole state"));
        }
        if file.replace_texts {
            self.texts.clear();
            self.distinct = DistinctTexts::default();
            self.users.clear();
        }
        if file.first_text as usize != self.texts.len() {
            let gap = format!("texts from {} follow {}", file.first_text, self.texts.len());
            return Err(corrupt("partition state", &gap));
        }
        for text in &file.new_texts {
            self.distinct.check(text).map_err(|e| corrupt("text", &e))?;
        }
        self.texts.extend(file.new_texts);
        for (uuid, record) in file.users {
            let user = encoding::decode_user(&uuid, &record).map_err(|e| corrupt("user", &e))?;
            self.users.insert(user.uuid.clone(), user);
        }
        for uuid in file.deletes {
            self.users.remove(uuid.as_str());
        }
        self.clocks = file.clocks;
        self.fields = file.fields;
        self.files += 1;
        Ok(())
    }

    /// Open sessions and users with waiting events.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// The engine the chain describes.
    pub fn into_engine(self, config: EngineConfig) -> Engine {
        Engine::restore(config, self.texts, self.clocks, self.users.into_values())
            .with_stored_fields(&self.fields)
    }
}

fn corrupt(what: &'static str, e: impl std::fmt::Display) -> StateError {
    StateError::Corrupt { path: "a partition's state file".into(), what, message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::rules::contract::Settings;
    use default_rules::DefaultRules;
    use sessionize_native::NativeRules;

    fn event(uuid: &str, t: i64, page: &str) -> Event<'static> {
        Event {
            uuid: uuid.to_owned().into(),
            event_id: Some(format!("{uuid}-{t}").into()),
            timestamp_ms: t,
            page_name: Some(page.to_owned().into()),
            event_name: None,
            event_type: None,
        }
    }

    fn rules() -> NativeRules<DefaultRules> {
        let settings =
            Settings { inactivity_timeout_ms: 1_000, max_duration_ms: 10_000, params: vec![] };
        NativeRules::new("default-rules", &settings).unwrap()
    }

    #[test]
    fn a_chain_of_a_whole_state_and_changes_restores_the_engine() {
        let mut native = rules();
        let mut engine = Engine::new(EngineConfig::default());
        engine.register_partitions([3]);
        for (i, user) in ["a", "b", "c"].iter().enumerate() {
            engine.offer(3, &event(user, 1_000 + i as i64, "home"));
        }
        engine.advance(&mut native, false).unwrap();
        let mut chain =
            vec![encode_partition_file(&engine.take_everything().unwrap(), &engine.clocks())
                .unwrap()];
        engine.offer(3, &event("d", 2_000, "cart"));
        engine.offer(3, &event("a", 2_500, "pay"));
        chain.push(
            encode_partition_file(&engine.take_changes().unwrap(), &engine.clocks()).unwrap(),
        );

        let mut state = PartitionState::default();
        for (i, file) in chain.iter().enumerate() {
            state.apply(&format!("1-{i}.state"), file).unwrap();
        }
        assert_eq!(state.users(), 4);
        let mut restored = state.into_engine(EngineConfig::default());
        let mut original = engine;
        let closed = |e: &mut Engine| {
            let mut rows = e.advance(&mut rules(), true).unwrap();
            rows.sort_by(|x, y| x.session_id.cmp(&y.session_id));
            rows.into_iter()
                .map(|r| (r.uuid, r.start_ms, r.event_count, r.pages))
                .collect::<Vec<_>>()
        };
        assert_eq!(closed(&mut restored), closed(&mut original));
    }

    #[test]
    fn a_chain_without_a_whole_state_first_or_with_a_gap_in_texts_is_refused() {
        let mut engine = Engine::new(EngineConfig::default());
        engine.offer(0, &event("a", 1, "home"));
        let changes = engine.take_changes().unwrap();
        let delta = encode_partition_file(&changes, &engine.clocks()).unwrap();
        assert!(PartitionState::default().apply("f", &delta).is_err());
        let whole = encode_partition_file(&engine.take_everything().unwrap(), &engine.clocks());
        let mut state = PartitionState::default();
        state.apply("f", &whole.unwrap()).unwrap();
        // The delta's texts start at 0 again: not a continuation.
        assert!(state.apply("f", &delta).is_err());
        assert!(PartitionState::default().apply("f", b"garbage").is_err());
    }

    #[test]
    fn a_file_that_stores_a_text_twice_is_refused_by_its_name() {
        let mut engine = Engine::new(EngineConfig::default());
        engine.offer(0, &event("a", 1, "home"));
        engine.offer(0, &event("b", 2, "cart"));
        let mut whole = engine.take_everything().unwrap();
        // "home" again: every later handle would shift by one.
        let home = whole.new_texts[0].clone();
        whole.new_texts.insert(1, home);
        let bytes = encode_partition_file(&whole, &engine.clocks()).unwrap();
        let error = PartitionState::default().apply("g/0/3-1.state", &bytes).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("g/0/3-1.state") && message.contains("twice"), "{message}");
    }
}
