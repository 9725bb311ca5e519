//! Run rules natively: for plugin unit tests, and for hosts that compare a
//! plugin's native speed with its component.

use crate::contract::{
    AttributeValue, Batch, BatchResult, Declarations, EndReason, FieldType, FieldValues,
    SessionState, UserSlice,
};
use crate::{Attribute, AttributeKind, Declare, Rules, Settings, TextTable};

/// A plugin's rules behind the contract's `process`, without wasm.
pub struct NativePlugin<R> {
    rules: R,
    declared: Declare,
    texts: TextTable,
}

impl<R: Rules> NativePlugin<R> {
    /// Configures the rules as `configure` would.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let rules = R::new(settings)?;
        let mut declared = Declare::default();
        rules.declare(&mut declared);
        Ok(Self { rules, declared, texts: TextTable::default() })
    }

    /// What the rules declared, as `configure` returns it.
    pub fn declarations(&self) -> Declarations {
        self.declared.to_wit()
    }

    /// Applies the rules to a contract batch, as the component's `process` does.
    pub fn process(&mut self, batch: Batch) -> Result<BatchResult, String> {
        crate::fold::process(&self.rules, &self.declared, &mut self.texts, batch)
    }

    /// Empties the text table, as a fresh instance's would be.
    pub fn forget_texts(&mut self) {
        self.texts = TextTable::default();
    }
}

/// An event for a test: a time and, optionally, a page, an event type and
/// values of declared fields.
#[derive(Debug, Clone, PartialEq)]
pub struct TestEvent {
    /// Event time, epoch milliseconds.
    pub timestamp_ms: i64,
    /// Page name.
    pub page: Option<&'static str>,
    /// `event_details.event_type`.
    pub event_type: Option<&'static str>,
    /// Declared fields' values, by path.
    pub fields: Vec<(&'static str, TestValue)>,
}

/// A declared field's value in a [`TestEvent`].
#[derive(Debug, Clone, PartialEq)]
pub enum TestValue {
    /// A string.
    String(&'static str),
    /// A whole number.
    Integer(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Boolean(bool),
}

/// An event at `timestamp_ms` with no page.
pub fn at(timestamp_ms: i64) -> TestEvent {
    TestEvent { timestamp_ms, page: None, event_type: None, fields: Vec::new() }
}

impl TestEvent {
    /// The same event on `page`.
    pub fn page(self, page: &'static str) -> Self {
        Self { page: Some(page), ..self }
    }

    /// The same event with `event_details.event_type` set.
    pub fn event_type(self, event_type: &'static str) -> Self {
        Self { event_type: Some(event_type), ..self }
    }

    /// The same event with the field at `path` holding `value`.
    pub fn with(mut self, path: &'static str, value: TestValue) -> Self {
        self.fields.push((path, value));
        self
    }
}

/// A session a test saw closed, with its pages spelled out.
#[derive(Debug, Clone, PartialEq)]
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
    /// The declared attributes' values, by name (unset ones left out).
    pub attributes: Vec<(String, AttributeValue)>,
}

impl Closed {
    /// The session's value of `attribute`, if the rules set it.
    pub fn get<T: AttributeKind>(&self, attribute: &Attribute<T>) -> Option<T> {
        let (_, value) = self.attributes.iter().find(|(name, _)| name == attribute.name())?;
        T::from_value(value)
    }
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
        let mut fields: Vec<FieldValues> = self
            .plugin
            .declared
            .fields
            .iter()
            .map(|(_, field_type)| match field_type {
                FieldType::String => FieldValues::String(Vec::new()),
                FieldType::Integer => FieldValues::Integer(Vec::new()),
                FieldType::Float => FieldValues::Float(Vec::new()),
                FieldType::Boolean => FieldValues::Boolean(Vec::new()),
            })
            .collect();
        for event in events {
            for ((path, _), column) in self.plugin.declared.fields.iter().zip(&mut fields) {
                let value = event.fields.iter().find(|(p, _)| p == path).map(|(_, v)| v);
                match (column, value) {
                    (FieldValues::String(c), Some(TestValue::String(s))) => {
                        c.push(Some(texts.intern(s)))
                    }
                    (FieldValues::String(c), _) => c.push(None),
                    (FieldValues::Integer(c), Some(TestValue::Integer(n))) => c.push(Some(*n)),
                    (FieldValues::Integer(c), _) => c.push(None),
                    (FieldValues::Float(c), Some(TestValue::Float(x))) => c.push(Some(*x)),
                    (FieldValues::Float(c), Some(TestValue::Integer(n))) => c.push(Some(*n as f64)),
                    (FieldValues::Float(c), _) => c.push(None),
                    (FieldValues::Boolean(c), Some(TestValue::Boolean(b))) => c.push(Some(*b)),
                    (FieldValues::Boolean(c), _) => c.push(None),
                }
            }
        }
        let events: Vec<_> = events
            .iter()
            .map(|e| crate::contract::Event {
                timestamp_ms: e.timestamp_ms,
                page_name: e.page.map(|p| texts.intern(p)),
                event_name: None,
                event_type: e.event_type.map(|t| texts.intern(t)),
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
            fields,
        };
        let result = match self.plugin.process(batch) {
            Ok(result) => result,
            Err(message) => panic!("rules refused the batch: {message}"),
        };
        self.state = result.users.into_iter().next().and_then(|u| u.state);
        let names = &self.plugin.declared.attributes;
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
                attributes: names
                    .iter()
                    .zip(c.attributes)
                    .filter_map(|((name, _, _), value)| Some((name.to_string(), value?)))
                    .collect(),
            })
            .collect()
    }
}
