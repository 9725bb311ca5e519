//! Run rules natively: for plugin unit tests, and for hosts that compare a
//! plugin's native speed with its component.

use crate::contract::{Batch, BatchResult, EndReason, SessionState, UserSlice};
use crate::{Rules, Settings, TextTable};

/// A plugin's rules behind the contract's `process`, without wasm.
pub struct NativePlugin<R> {
    rules: R,
    texts: TextTable,
}

impl<R: Rules> NativePlugin<R> {
    /// Configures the rules as `configure` would.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        Ok(Self { rules: R::new(settings)?, texts: TextTable::default() })
    }

    /// Applies the rules to a contract batch, as the component's `process` does.
    pub fn process(&mut self, batch: Batch) -> Result<BatchResult, String> {
        crate::fold::process(&self.rules, &mut self.texts, batch)
    }

    /// Empties the text table, as a fresh instance's would be.
    pub fn forget_texts(&mut self) {
        self.texts = TextTable::default();
    }
}

/// An event for a test: a time and, optionally, a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestEvent {
    /// Event time, epoch milliseconds.
    pub timestamp_ms: i64,
    /// Page name.
    pub page: Option<&'static str>,
}

/// An event at `timestamp_ms` with no page.
pub fn at(timestamp_ms: i64) -> TestEvent {
    TestEvent { timestamp_ms, page: None }
}

impl TestEvent {
    /// The same event on `page`.
    pub fn page(self, page: &'static str) -> Self {
        Self { page: Some(page), ..self }
    }
}

/// A session a test saw closed, with its pages spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Time of the first event.
    pub start_ms: i64,
    /// Time of the last event.
    pub end_ms: i64,
    /// Events in the session.
    pub event_count: u32,
    /// Distinct pages in order of first visit.
    pub pages: Vec<String>,
    /// Why it ended.
    pub end_reason: EndReason,
}

/// Feeds one user's events through a plugin's rules, natively.
pub struct Harness<R> {
    plugin: NativePlugin<R>,
    state: Option<SessionState>,
}

impl<R: Rules> Harness<R> {
    /// Rules configured with `settings`.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        Ok(Self { plugin: NativePlugin::new(settings)?, state: None })
    }

    /// Applies `events` (in order) with the watermark at `watermark`, and returns
    /// the sessions that closed.
    pub fn feed(&mut self, events: &[TestEvent], watermark: i64) -> Vec<Closed> {
        self.call(events, watermark, false)
    }

    /// Ends the input: applies `events` and closes whatever is still open.
    pub fn finish(&mut self, events: &[TestEvent]) -> Vec<Closed> {
        let watermark = events.iter().map(|e| e.timestamp_ms).max().unwrap_or(i64::MIN);
        self.call(events, watermark, true)
    }

    /// The session left open, if any.
    pub fn open_session(&self) -> Option<&SessionState> {
        self.state.as_ref()
    }

    fn call(&mut self, events: &[TestEvent], watermark: i64, end_of_input: bool) -> Vec<Closed> {
        let texts = &mut self.plugin.texts;
        let known = texts.len();
        let events: Vec<_> = events
            .iter()
            .map(|e| crate::contract::Event {
                timestamp_ms: e.timestamp_ms,
                page_name: e.page.map(|p| texts.intern(p)),
                event_name: None,
                event_type: None,
            })
            .collect();
        // The fold appends `new_texts` to the table itself, as on wasm.
        let new_texts = self.plugin.texts.0.split_off(known);
        let batch = Batch {
            new_texts,
            watermark,
            end_of_input,
            users: vec![UserSlice { state: self.state.take(), event_count: events.len() as u32 }],
            events,
        };
        let result = match self.plugin.process(batch) {
            Ok(result) => result,
            Err(message) => panic!("rules refused the batch: {message}"),
        };
        self.state = result.users.into_iter().next().and_then(|u| u.state);
        result
            .closed
            .into_iter()
            .map(|c| Closed {
                start_ms: c.start_ms,
                end_ms: c.end_ms,
                event_count: c.event_count,
                pages: c
                    .pages
                    .iter()
                    .filter_map(|h| self.plugin.texts.get(*h).map(str::to_owned))
                    .collect(),
                end_reason: c.end_reason,
            })
            .collect()
    }
}
