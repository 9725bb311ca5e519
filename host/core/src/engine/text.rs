//! Interned strings: page names, event names and types repeat across millions of
//! events, so they are stored once and travel to the plugin as small handles.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Strings by handle, append-only: handles stay valid for the life of the job.
#[derive(Debug, Default)]
pub(crate) struct TextTable {
    texts: Vec<Arc<str>>,
    handles: FxHashMap<Arc<str>, u32>,
}

impl TextTable {
    /// The handle of `text`, adding it on first sight.
    pub(crate) fn intern(&mut self, text: &str) -> u32 {
        if let Some(&handle) = self.handles.get(text) {
            return handle;
        }
        let handle = self.texts.len() as u32;
        let text: Arc<str> = Arc::from(text);
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
}
