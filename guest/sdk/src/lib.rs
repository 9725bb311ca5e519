//! Write Sessionize rules plugins.
//!
//! A plugin is one type that implements [`Rules`] and one [`export_rules!`] line:
//!
//! ```
//! use sessionize_sdk::{EndReason, Expiry, Rules, Session, Settings};
//!
//! /// Cut sessions after 30 minutes of silence (or whatever the job configures).
//! pub struct Inactivity {
//!     timeout_ms: i64,
//! }
//!
//! impl Rules for Inactivity {
//!     fn new(settings: &Settings) -> Result<Self, String> {
//!         Ok(Self { timeout_ms: settings.inactivity_timeout_ms })
//!     }
//!     fn expiry(&self, session: &Session) -> Expiry {
//!         Expiry { at: session.last_ms() + self.timeout_ms, reason: EndReason::Inactivity }
//!     }
//! }
//!
//! sessionize_sdk::export_rules!(Inactivity);
//! ```
//!
//! The SDK does the rest: it walks each user's events in order, keeps the open
//! session's count, pages and times, closes sessions when the host's watermark
//! passes their expiry, and speaks the WIT contract (`wit/sessionize.wit`). The
//! host stores every open session, so a plugin holds no state between calls.
//!
//! Off wasm the same rules run natively through [`testing::Harness`], so a plugin's
//! unit tests are plain `cargo test`.

// The generated bindings name this crate by its path, from inside it as well.
extern crate self as sessionize_sdk;

mod carry;
mod declare;
mod fold;
pub mod testing;

pub use declare::{Attribute, AttributeKind, Declare, Field, FieldKind};

use std::cell::RefCell;

#[doc(hidden)]
pub mod __private {
    //! Plumbing for [`export_rules!`](crate::export_rules); not part of the API.
    pub use wit_bindgen;

    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "session-rules",
            pub_export_macro: true,
            export_macro_name: "__export_session_rules",
            default_bindings_module: "sessionize_sdk::__private::bindings",
            runtime_path: "sessionize_sdk::__private::wit_bindgen::rt",
            additional_derives: [PartialEq],
        });
    }

    pub use crate::fold::Plugin;
}

use __private::bindings::sessionize::plugin::types as wit;

pub use wit::EndReason;

/// How serious a log line is.
pub use wit::LogLevel;

/// The raw contract records, for hosts and tests that drive a plugin natively.
pub mod contract {
    pub use super::wit::{
        AttributeType, AttributeValue, Batch, BatchResult, ClosedSession, Declarations, EndReason,
        Event, EventField, FieldType, FieldValues, PluginInfo, SessionAttribute, SessionState,
        Settings, UserOutcome, UserSlice,
    };
}

/// Session rules: where sessions split and when they can no longer grow.
///
/// Every method sees events of one user in (time, event id) order. Sessions are
/// final when returned closed: the host writes them as they are.
pub trait Rules: Sized + 'static {
    /// Builds the rules from the job's settings, or says why they are unusable.
    fn new(settings: &Settings) -> Result<Self, String>;

    /// The event fields the rules read ([`Event::get`]) and the session
    /// attributes they write ([`Session::set`]), each a [`Field`] or an
    /// [`Attribute`] constant. By default, none: the rules see 0.1's event.
    fn declare(&self, declare: &mut Declare) {
        let _ = declare;
    }

    /// The latest event time that may still join `session`, and the reason the
    /// session ends once time passes it. The SDK closes the session with that
    /// reason when the host's watermark passes `at`, or when a later event
    /// arrives: so the reason never depends on how input was batched.
    fn expiry(&self, session: &Session) -> Expiry;

    /// Called before `event` joins the open `session`: return a reason to close
    /// the session first and start a new one with `event`. By default an event
    /// after the session's [`expiry`](Rules::expiry) splits.
    fn split(&self, session: &Session, event: &Event) -> Option<EndReason> {
        let expiry = self.expiry(session);
        (event.timestamp_ms() > expiry.at).then_some(expiry.reason)
    }

    /// Called after `event` joined `session` (or started it): return a reason to
    /// close the session right after this event, for example on a logout page.
    fn ends_after(&self, session: &Session, event: &Event) -> Option<EndReason> {
        let _ = (session, event);
        None
    }

    /// Called after `event` joined `session`: keep custom aggregates in
    /// [`Session::data_mut`].
    fn observe(&self, session: &mut Session, event: &Event) {
        let _ = (session, event);
    }
}

/// When an open session stops accepting events, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    /// The latest event time that may still join the session.
    pub at: i64,
    /// The reason recorded when the session closes at this point.
    pub reason: EndReason,
}

/// The two standard limits, inactivity and maximum duration, for rules that
/// build on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest silence that keeps a session open.
    pub inactivity_timeout_ms: i64,
    /// Longest a session may last, first event to last.
    pub max_duration_ms: i64,
}

impl Limits {
    /// The job's limits; both must be positive.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        if settings.inactivity_timeout_ms <= 0 || settings.max_duration_ms <= 0 {
            return Err("inactivity timeout and maximum duration must be positive".into());
        }
        Ok(Self {
            inactivity_timeout_ms: settings.inactivity_timeout_ms,
            max_duration_ms: settings.max_duration_ms,
        })
    }

    /// Whichever limit comes first ends the session, and names the reason: a gap
    /// of exactly the timeout, or an event exactly the maximum after the start,
    /// stays in the session.
    pub fn expiry(&self, session: &Session) -> Expiry {
        let idle = session.last_ms().saturating_add(self.inactivity_timeout_ms);
        let longest = session.start_ms().saturating_add(self.max_duration_ms);
        if longest < idle {
            Expiry { at: longest, reason: EndReason::MaxDuration }
        } else {
            Expiry { at: idle, reason: EndReason::Inactivity }
        }
    }
}

/// The job's configuration as a plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Silence after which a session ends (`--inactivity-timeout`).
    pub inactivity_timeout_ms: i64,
    /// Longest a session may last (`--max-session-duration`).
    pub max_duration_ms: i64,
    params: Vec<(String, String)>,
}

impl Settings {
    /// Settings with the given timeouts and no parameters.
    pub fn new(inactivity_timeout_ms: i64, max_duration_ms: i64) -> Self {
        Self { inactivity_timeout_ms, max_duration_ms, params: Vec::new() }
    }

    /// Adds a plugin parameter, as `--plugin-param key=value` does.
    pub fn with_param(mut self, key: &str, value: &str) -> Self {
        self.params.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The value of a plugin parameter, if the job set it.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl From<wit::Settings> for Settings {
    fn from(s: wit::Settings) -> Self {
        Self {
            inactivity_timeout_ms: s.inactivity_timeout_ms,
            max_duration_ms: s.max_duration_ms,
            params: s.params,
        }
    }
}

/// Interned strings the host has sent this instance.
#[derive(Debug, Default, Clone)]
pub struct TextTable(Vec<String>);

impl TextTable {
    /// The string behind a handle; `None` for a handle the host never sent.
    pub fn get(&self, handle: u32) -> Option<&str> {
        self.0.get(handle as usize).map(String::as_str)
    }

    pub(crate) fn extend(&mut self, texts: Vec<String>) {
        self.0.extend(texts);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The handle of `text`, adding it if it is new (native tests only: on wasm
    /// the host owns the table).
    pub(crate) fn intern(&mut self, text: &str) -> u32 {
        match self.0.iter().position(|t| t == text) {
            Some(i) => i as u32,
            None => {
                self.0.push(text.to_owned());
                (self.0.len() - 1) as u32
            }
        }
    }
}

/// One event, as the rules see it.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    raw: &'a wit::Event,
    texts: &'a TextTable,
    /// The batch's declared field columns, and this event's index in them.
    columns: &'a [wit::FieldValues],
    index: usize,
    declared: &'a Declare,
}

impl<'a> Event<'a> {
    /// Event time, epoch milliseconds.
    pub fn timestamp_ms(&self) -> i64 {
        self.raw.timestamp_ms
    }

    /// The page the event happened on; none for an empty page name, which
    /// names no page.
    pub fn page_name(&self) -> Option<&'a str> {
        self.raw.page_name.and_then(|h| self.texts.get(h)).filter(|page| !page.is_empty())
    }

    /// The page's handle, for the session's pages: none where
    /// [`Event::page_name`] is none.
    pub(crate) fn page_handle(&self) -> Option<u32> {
        self.page_name().and(self.raw.page_name)
    }

    /// `event_details.event_name`.
    pub fn event_name(&self) -> Option<&'a str> {
        self.raw.event_name.and_then(|h| self.texts.get(h))
    }

    /// `event_details.event_type`.
    pub fn event_type(&self) -> Option<&'a str> {
        self.raw.event_type.and_then(|h| self.texts.get(h))
    }

    /// A declared field's value: `None` where the event lacks it or holds
    /// another type. Panics if [`Rules::declare`] did not declare `field`.
    pub fn get<T: FieldKind + ?Sized>(&self, field: &Field<T>) -> Option<T::Value<'a>> {
        let Some(column) = self.declared.field_index(field.path()) else {
            panic!("field {} is read but not declared in Rules::declare", field.path())
        };
        T::read(self.columns.get(column)?, self.index, self.texts)
    }
}

/// The open session of the user whose events are being applied.
pub struct Session<'a> {
    state: &'a mut wit::SessionState,
    /// Values of the declared attributes, in declaration order.
    attributes: &'a mut Vec<Option<wit::AttributeValue>>,
    declared: &'a Declare,
    texts: &'a TextTable,
}

impl Session<'_> {
    /// Time of the first event.
    pub fn start_ms(&self) -> i64 {
        self.state.start_ms
    }

    /// Time of the latest event.
    pub fn last_ms(&self) -> i64 {
        self.state.last_ms
    }

    /// Events so far.
    pub fn event_count(&self) -> u32 {
        self.state.event_count
    }

    /// Distinct pages in order of first visit.
    pub fn pages(&self) -> impl Iterator<Item = &str> + '_ {
        self.state.pages.iter().filter_map(|h| self.texts.get(*h))
    }

    /// Plugin-private bytes, kept by the host with the session.
    pub fn data(&self) -> &[u8] {
        &self.state.data
    }

    /// Plugin-private bytes, to update in [`Rules::observe`].
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.state.data
    }

    /// A declared attribute's value so far, if set. Panics if
    /// [`Rules::declare`] did not declare `attribute`.
    pub fn get<T: AttributeKind>(&self, attribute: &Attribute<T>) -> Option<T::Ref<'_>> {
        let value = self.attributes.get(self.attribute_index(attribute))?.as_ref()?;
        T::view(value)
    }

    /// Sets a declared string attribute to `value`, reusing the string it
    /// held: no allocation per event for an attribute that follows the
    /// events (an exit page). Panics if [`Rules::declare`] did not declare it.
    pub fn set_str(&mut self, attribute: &Attribute<String>, value: &str) {
        let index = self.attribute_index(attribute);
        let Some(slot) = self.attributes.get_mut(index) else { return };
        match slot {
            Some(wit::AttributeValue::String(held)) => {
                held.clear();
                held.push_str(value);
            }
            _ => *slot = Some(wit::AttributeValue::String(value.to_owned())),
        }
    }

    /// Sets a declared attribute, written with the session when it closes.
    /// Panics if [`Rules::declare`] did not declare `attribute`.
    pub fn set<T: AttributeKind>(&mut self, attribute: &Attribute<T>, value: T) {
        let index = self.attribute_index(attribute);
        if let Some(slot) = self.attributes.get_mut(index) {
            *slot = Some(value.into_value());
        }
    }

    fn attribute_index<T: AttributeKind>(&self, attribute: &Attribute<T>) -> usize {
        match self.declared.attribute_index(attribute.name()) {
            Some(index) => index,
            None => {
                panic!("attribute {} is used but not declared in Rules::declare", attribute.name())
            }
        }
    }
}

/// Writes a line to the host's log (stderr when running natively).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    __private::bindings::sessionize::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

thread_local! {
    static PANIC_HOOK: RefCell<bool> = const { RefCell::new(false) };
}

/// Sends panic messages to the host's log: a panicking plugin traps, and without
/// this the host would only see "unreachable executed".
pub(crate) fn install_panic_hook() {
    PANIC_HOOK.with(|installed| {
        if !installed.replace(true) {
            std::panic::set_hook(Box::new(|info| log(LogLevel::Error, &info.to_string())));
        }
    });
}

/// Exports a [`Rules`] type as the plugin's implementation of the contract.
///
/// The plugin's name and version are the crate's (`CARGO_PKG_NAME`,
/// `CARGO_PKG_VERSION`); the host records them with every session.
#[macro_export]
macro_rules! export_rules {
    ($rules:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SessionizePlugin;
            impl $crate::__private::Plugin for __SessionizePlugin {
                type Rules = $rules;
                const NAME: &'static str = env!("CARGO_PKG_NAME");
                const VERSION: &'static str = env!("CARGO_PKG_VERSION");
            }
            $crate::__private::bindings::__export_session_rules!(
                __SessionizePlugin with_types_in $crate::__private::bindings
            );
        };
    };
}
