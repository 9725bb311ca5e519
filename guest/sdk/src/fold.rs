//! Applies a [`Rules`] type to a contract batch: the loop every plugin shares.

use std::any::Any;
use std::cell::RefCell;

use crate::__private::bindings::exports::sessionize::plugin::rules::Guest;
use crate::wit::{
    Batch, BatchResult, ClosedSession, EndReason, PluginInfo, SessionState, UserOutcome,
};
use crate::{install_panic_hook, Event, Rules, Session, Settings, TextTable};

/// Binds a [`Rules`] type to the contract; implemented by [`export_rules!`](crate::export_rules).
pub trait Plugin {
    /// The rules to export.
    type Rules: Rules;
    /// Plugin name recorded with every session.
    const NAME: &'static str;
    /// Plugin version recorded with every session.
    const VERSION: &'static str;
}

/// What an instance keeps between calls: its rules and its text table.
struct Instance {
    rules: Box<dyn Any>,
    texts: TextTable,
}

thread_local! {
    static INSTANCE: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

impl<P: Plugin> Guest for P {
    fn info() -> PluginInfo {
        PluginInfo { name: P::NAME.to_owned(), version: P::VERSION.to_owned() }
    }

    fn configure(settings: crate::wit::Settings) -> Result<(), String> {
        install_panic_hook();
        let rules = P::Rules::new(&Settings::from(settings))?;
        INSTANCE.with(|slot| {
            *slot.borrow_mut() =
                Some(Instance { rules: Box::new(rules), texts: TextTable::default() })
        });
        Ok(())
    }

    fn process(batch: Batch) -> Result<BatchResult, String> {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            let instance = slot.as_mut().ok_or("process called before configure")?;
            let rules = instance
                .rules
                .downcast_ref::<P::Rules>()
                .ok_or("instance holds rules of another type")?;
            process(rules, &mut instance.texts, batch)
        })
    }
}

/// Applies `rules` to every user of `batch`.
pub(crate) fn process<R: Rules>(
    rules: &R,
    texts: &mut TextTable,
    batch: Batch,
) -> Result<BatchResult, String> {
    texts.extend(batch.new_texts);
    let texts = &*texts;
    let mut outcomes = Vec::with_capacity(batch.users.len());
    let mut closed = Vec::new();
    let mut next = 0usize;
    for (index, user) in batch.users.into_iter().enumerate() {
        let end = next + user.event_count as usize;
        let events = batch.events.get(next..end).ok_or_else(|| {
            format!("user {index} claims events {next}..{end} of {}", batch.events.len())
        })?;
        next = end;
        let index = index as u32;
        let mut open = user.state;
        for raw in events {
            let event = Event { raw, texts };
            let mut state = match open.take() {
                None => start(raw),
                Some(mut state) => {
                    let split = rules.split(&Session { state: &mut state, texts }, &event);
                    match split {
                        Some(reason) => {
                            closed.push(close(index, state, reason));
                            start(raw)
                        }
                        None => {
                            extend(&mut state, raw);
                            state
                        }
                    }
                }
            };
            let mut session = Session { state: &mut state, texts };
            rules.observe(&mut session, &event);
            match rules.ends_after(&session, &event) {
                Some(reason) => closed.push(close(index, state, reason)),
                None => open = Some(state),
            }
        }
        let mut wake_at = None;
        if let Some(mut state) = open.take() {
            let expiry = rules.expiry(&Session { state: &mut state, texts });
            if batch.watermark > expiry.at {
                closed.push(close(index, state, expiry.reason));
            } else if batch.end_of_input {
                closed.push(close(index, state, EndReason::EndOfInput));
            } else {
                wake_at = Some(expiry.at.saturating_add(1));
                open = Some(state);
            }
        }
        outcomes.push(UserOutcome { state: open, wake_at });
    }
    if next != batch.events.len() {
        return Err(format!("users claim {next} of {} events", batch.events.len()));
    }
    Ok(BatchResult { users: outcomes, closed })
}

fn start(event: &crate::wit::Event) -> SessionState {
    SessionState {
        start_ms: event.timestamp_ms,
        last_ms: event.timestamp_ms,
        event_count: 1,
        pages: event.page_name.into_iter().collect(),
        data: Vec::new(),
    }
}

fn extend(state: &mut SessionState, event: &crate::wit::Event) {
    state.last_ms = state.last_ms.max(event.timestamp_ms);
    state.event_count += 1;
    if let Some(page) = event.page_name {
        if !state.pages.contains(&page) {
            state.pages.push(page);
        }
    }
}

fn close(user: u32, state: SessionState, end_reason: EndReason) -> ClosedSession {
    ClosedSession {
        user,
        start_ms: state.start_ms,
        end_ms: state.last_ms,
        event_count: state.event_count,
        pages: state.pages,
        end_reason,
    }
}
