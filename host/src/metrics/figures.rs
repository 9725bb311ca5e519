//! What the metrics read of a run's engines after a batch.

use crate::engine::{Engine, EngineStats};

/// What the metrics read of a run's engines, summed over them.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineFigures {
    /// Counters so far.
    pub stats: EngineStats,
    /// Events accepted and not yet handed to the rules.
    pub waiting: u64,
    /// Users held in memory.
    pub users: usize,
    /// The least watermark.
    pub watermark: i64,
}

/// What a walk over the engines' users counts: now and then, not per batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineSize {
    /// Users with an open session.
    pub open_sessions: usize,
    /// Users with events waiting for the watermark (open session or not).
    pub users_waiting: usize,
    /// Distinct texts interned.
    pub texts: usize,
}

impl EngineFigures {
    /// The figures of engines over parts of one input, as one.
    /// The watermark is the least (none without engines).
    pub fn total(parts: &[EngineFigures]) -> Self {
        let mut total = Self {
            watermark: parts.iter().map(|p| p.watermark).min().unwrap_or(i64::MIN),
            ..Self::default()
        };
        for part in parts {
            total.stats += part.stats;
            total.waiting += part.waiting;
            total.users += part.users;
        }
        total
    }

    /// The figures of one engine.
    pub fn of(engine: &Engine) -> Self {
        Self {
            stats: engine.stats(),
            waiting: engine.events_waiting(),
            users: engine.users_in_memory(),
            watermark: engine.watermark(),
        }
    }
}
