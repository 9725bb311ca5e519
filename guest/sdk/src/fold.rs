//! Applies a [`Rules`] type to a contract batch: the loop every plugin shares.

use std::any::Any;
use std::cell::RefCell;

use crate::__private::bindings::exports::sessionize::plugin::rules::Guest;
use crate::wit::{
    AttributeValue, Batch, BatchResult, ClosedSession, Declarations, EndReason, PluginInfo,
    SessionState, UserOutcome,
};
use crate::{carry, install_panic_hook, Declare, Event, Rules, Session, Settings, TextTable};

/// Binds a [`Rules`] type to the contract; implemented by [`export_rules!`](crate::export_rules).
pub trait Plugin {
    /// The rules to export.
    type Rules: Rules;
    /// Plugin name recorded with every session.
    const NAME: &'static str;
    /// Plugin version recorded with every session.
    const VERSION: &'static str;
}

/// What an instance keeps between calls: its rules, what they declared, and
/// its text table.
struct Instance {
    rules: Box<dyn Any>,
    declared: Declare,
    texts: TextTable,
}

thread_local! {
    static INSTANCE: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

impl<P: Plugin> Guest for P {
    fn info() -> PluginInfo {
        PluginInfo { name: P::NAME.to_owned(), version: P::VERSION.to_owned() }
    }

    fn configure(settings: crate::wit::Settings) -> Result<Declarations, String> {
        install_panic_hook();
        let rules = P::Rules::new(&Settings::from(settings))?;
        let mut declared = Declare::default();
        rules.declare(&mut declared);
        let declarations = declared.to_wit();
        INSTANCE.with(|slot| {
            *slot.borrow_mut() =
                Some(Instance { rules: Box::new(rules), declared, texts: TextTable::default() })
        });
        Ok(declarations)
    }

    fn process(batch: Batch) -> Result<BatchResult, String> {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            let instance = slot.as_mut().ok_or("process called before configure")?;
            let rules = instance
                .rules
                .downcast_ref::<P::Rules>()
                .ok_or("instance holds rules of another type")?;
            process(rules, &instance.declared, &mut instance.texts, batch)
        })
    }
}

/// An open session while the SDK works on it: the stored record, with its
/// attribute values taken out of `data`.
struct Open {
    state: SessionState,
    attributes: Vec<Option<AttributeValue>>,
}

/// Applies `rules` (which declared `declared`) to every user of `batch`.
pub(crate) fn process<R: Rules>(
    rules: &R,
    declared: &Declare,
    texts: &mut TextTable,
    batch: Batch,
) -> Result<BatchResult, String> {
    texts.extend(batch.new_texts);
    let texts = &*texts;
    let names = &declared.attributes;
    let columns = &batch.fields;
    if columns.len() != declared.fields.len() {
        return Err(format!(
            "the batch has {} field columns, the rules declared {}",
            columns.len(),
            declared.fields.len()
        ));
    }
    let mut outcomes = Vec::with_capacity(batch.users.len());
    let mut closed = Vec::new();
    let mut next = 0usize;
    for (index, user) in batch.users.into_iter().enumerate() {
        let end = next + user.event_count as usize;
        let events = batch.events.get(next..end).ok_or_else(|| {
            format!("user {index} claims events {next}..{end} of {}", batch.events.len())
        })?;
        let first = next;
        next = end;
        let index = index as u32;
        let mut open = user.state.map(|mut state| {
            let (attributes, own) = carry::split(std::mem::take(&mut state.data), names);
            state.data = own;
            Open { state, attributes }
        });
        for (offset, raw) in events.iter().enumerate() {
            let event = Event { raw, texts, columns, index: first + offset, declared };
            let mut current = match open.take() {
                None => start(&event, names.len()),
                Some(mut current) => {
                    match rules.split(&session(&mut current, declared, texts), &event) {
                        Some(reason) => {
                            closed.push(close(index, current, reason));
                            start(&event, names.len())
                        }
                        None => {
                            extend(&mut current.state, &event);
                            current
                        }
                    }
                }
            };
            rules.observe(&mut session(&mut current, declared, texts), &event);
            match rules.ends_after(&session(&mut current, declared, texts), &event) {
                Some(reason) => closed.push(close(index, current, reason)),
                None => open = Some(current),
            }
        }
        let mut wake_at = None;
        let mut stored = None;
        if let Some(mut current) = open.take() {
            let expiry = rules.expiry(&session(&mut current, declared, texts));
            if batch.watermark > expiry.at {
                closed.push(close(index, current, expiry.reason));
            } else if batch.end_of_input {
                closed.push(close(index, current, EndReason::EndOfInput));
            } else {
                wake_at = Some(expiry.at.saturating_add(1));
                let Open { mut state, attributes } = current;
                state.data = carry::join(&attributes, names, std::mem::take(&mut state.data));
                stored = Some(state);
            }
        }
        outcomes.push(UserOutcome { state: stored, wake_at });
    }
    if next != batch.events.len() {
        return Err(format!("users claim {next} of {} events", batch.events.len()));
    }
    Ok(BatchResult { users: outcomes, closed })
}

fn session<'a>(open: &'a mut Open, declared: &'a Declare, texts: &'a TextTable) -> Session<'a> {
    Session { state: &mut open.state, attributes: &mut open.attributes, declared, texts }
}

fn start(event: &Event, attributes: usize) -> Open {
    Open {
        state: SessionState {
            start_ms: event.timestamp_ms(),
            last_ms: event.timestamp_ms(),
            event_count: 1,
            pages: event.page_handle().into_iter().collect(),
            data: Vec::new(),
        },
        attributes: vec![None; attributes],
    }
}

fn extend(state: &mut SessionState, event: &Event) {
    state.last_ms = state.last_ms.max(event.timestamp_ms());
    state.event_count += 1;
    if let Some(page) = event.page_handle() {
        if !state.pages.contains(&page) {
            state.pages.push(page);
        }
    }
}

fn close(user: u32, open: Open, end_reason: EndReason) -> ClosedSession {
    let Open { state, attributes } = open;
    ClosedSession {
        user,
        start_ms: state.start_ms,
        end_ms: state.last_ms,
        event_count: state.event_count,
        pages: state.pages,
        end_reason,
        attributes,
    }
}
