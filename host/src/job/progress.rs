//! How far a bounded run has got, for whoever shows it (the command's
//! progress bar): plain counters, updated once per block of records.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters a bounded run keeps up to date while it runs.
#[derive(Debug, Default)]
pub struct RunProgress {
    events: AtomicU64,
    bytes: AtomicU64,
    total_bytes: AtomicU64,
    done: AtomicBool,
}

impl RunProgress {
    /// Records read so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Bytes of input read so far (compressed bytes for gzip).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The input's size, when it has one (standard input has none).
    pub fn total_bytes(&self) -> Option<u64> {
        Some(self.total_bytes.load(Ordering::Relaxed)).filter(|&total| total > 0)
    }

    /// Whether the run has read all its input and is finishing (or failed).
    pub fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self, total_bytes: Option<u64>) {
        self.total_bytes.store(total_bytes.unwrap_or(0), Ordering::Relaxed);
    }

    pub(crate) fn advance(&self, events: u64, bytes: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
