//! Interned strings: page names, event names and types repeat across millions of
//! events, so they are stored once and travel to the plugin as small handles.
//!
//! Some never repeat (URLs with query strings), so the table is compacted: once
//! it has grown to twice what open sessions and waiting events refer to, the
//! texts nothing refers to are dropped and the rest renumbered. Compaction costs
//! a pass over the engine's state, paid for by the texts added since the last.

use std::collections::HashMap;
use std::sync::Arc;

/// No compaction below these, so a table that small is never rebuilt.
const COMPACT_FROM_TEXTS: usize = 1 << 16;
const COMPACT_FROM_BYTES: usize = 16 << 20;

/// Strings by handle. Handles stay valid until [`TextTable::compact`].
#[derive(Debug, Default)]
pub(crate) struct TextTable {
    texts: Vec<Arc<str>>,
    /// Keyed by strings from outside: a randomly seeded hasher, so crafted
    /// keys cannot make every lookup collide.
    handles: HashMap<Arc<str>, u32, ahash::RandomState>,
    bytes: usize,
    /// Bumped by each compaction: handles of another generation mean nothing.
    generation: u64,
    /// Size after the last compaction, which the next waits to double.
    live_texts: usize,
    live_bytes: usize,
}

impl TextTable {
    /// The handle of `text`, adding it on first sight.
    pub(crate) fn intern(&mut self, text: &str) -> u32 {
        if let Some(&handle) = self.handles.get(text) {
            return handle;
        }
        let handle = self.texts.len() as u32;
        let text: Arc<str> = Arc::from(text);
        self.bytes += text.len();
        self.texts.push(text.clone());
        self.handles.insert(text, handle);
        handle
    }

    /// The string behind `handle`, if the table issued it.
    pub(crate) fn get(&self, handle: u32) -> Option<&Arc<str>> {
        self.texts.get(handle as usize)
    }

    /// Every string, in handle order.
    pub(crate) fn as_slice(&self) -> &[Arc<str>] {
        &self.texts
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the table has grown enough since the last compaction to make
    /// another worth its pass over the state.
    pub(crate) fn wants_compaction(&self) -> bool {
        let texts = self.texts.len() >= COMPACT_FROM_TEXTS.max(2 * self.live_texts);
        let bytes = self.bytes >= COMPACT_FROM_BYTES.max(2 * self.live_bytes);
        texts || bytes
    }

    /// Keeps only the texts `live` marks (indexed by handle), renumbered in
    /// handle order, and returns old handle -> new handle (`u32::MAX`: dropped).
    pub(crate) fn compact(&mut self, live: &[bool]) -> Vec<u32> {
        let mut renumbered = vec![u32::MAX; self.texts.len()];
        let old = std::mem::take(&mut self.texts);
        self.handles.clear();
        self.bytes = 0;
        for (handle, text) in old.into_iter().enumerate() {
            if live.get(handle).copied().unwrap_or(false) {
                renumbered[handle] = self.texts.len() as u32;
                self.bytes += text.len();
                self.handles.insert(text.clone(), self.texts.len() as u32);
                self.texts.push(text);
            }
        }
        self.handles.shrink_to_fit();
        self.texts.shrink_to_fit();
        self.generation += 1;
        self.live_texts = self.texts.len();
        self.live_bytes = self.bytes;
        renumbered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_live_texts_in_order_and_renumbers_them() {
        let mut table = TextTable::default();
        let handles: Vec<u32> = ["a", "b", "c", "d"].iter().map(|t| table.intern(t)).collect();
        let renumbered = table.compact(&[false, true, false, true]);
        assert_eq!(renumbered, vec![u32::MAX, 0, u32::MAX, 1]);
        assert_eq!(table.as_slice().iter().map(|t| &**t).collect::<Vec<_>>(), ["b", "d"]);
        assert_eq!(table.generation(), 1);
        // Interning finds the survivors under their new handles.
        assert_eq!(table.intern("d"), 1);
        assert_eq!(table.intern("a"), 2);
        assert_eq!(handles.len(), 4);
    }

    #[test]
    fn the_table_waits_to_double_before_compacting_again() {
        let mut table = TextTable::default();
        for i in 0..COMPACT_FROM_TEXTS - 1 {
            table.intern(&i.to_string());
        }
        assert!(!table.wants_compaction());
        table.intern("one more");
        assert!(table.wants_compaction());
        let live: Vec<bool> = (0..COMPACT_FROM_TEXTS).map(|i| i % 4 != 3).collect();
        table.compact(&live);
        assert!(!table.wants_compaction(), "{} live texts", table.as_slice().len());
    }

    #[test]
    fn tables_are_seeded_differently() {
        let (a, b) = (TextTable::default(), TextTable::default());
        assert_ne!(a.handles.hasher().hash_one("page"), b.handles.hasher().hash_one("page"));
    }
}
