//! A misbehaving plugin, for the host's tests. Parameter `fault` picks how it
//! misbehaves once a batch holds an event on page `boom`; before that it
//! behaves like the default rules.
//!
//! - In the sandbox: `trap` (a panic), `loop` (never returns), `oom` (allocates
//!   without bound), `log-flood` (10,000 long log lines in one call, and as many on stdout),
//!   `leak` (keeps 1 MiB for good per `boom` event, as a runtime whose
//!   garbage collector lags behind does, while its answers stay right).
//! - In its answer, for the first user with a `boom` event, one rule of the
//!   contract broken (the host must refuse the batch, naming the rule):
//!   `missing-outcome`, `foreign-user`, `empty-session`, `end-before-start`,
//!   `outside-events`, `overlap`, `lose-events`, `past-wake`, `keep-open`,
//!   `huge-data`, `foreign-page`, `repeated-page`, `long-reason`.
//! - In its identity: `long-name`, `bad-version`.
//! - In its declarations: `retyped-revenue` declares attribute `revenue` as a
//!   long (the conversion rules' is a double), for the table's type check.
//!
//! The answers are made by the SDK's own loop and then spoilt, so this plugin
//! implements the contract's export itself (through the SDK's hidden
//! plumbing) instead of `export_rules!`: the SDK cannot be made to misbehave.

use std::cell::RefCell;

use sessionize_sdk::__private::bindings::exports::sessionize::plugin::rules::Guest;
use sessionize_sdk::__private::Plugin;
use sessionize_sdk::contract::{
    AttributeType, Batch, BatchResult, ClosedSession, Declarations, EndReason, PluginInfo,
    SessionAttribute, SessionState, Settings as WitSettings,
};
use sessionize_sdk::{log, Event, Expiry, Limits, LogLevel, Rules, Session, Settings};

/// How the plugin misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Trap,
    Loop,
    OutOfMemory,
    Leak,
    LogFlood,
    MissingOutcome,
    ForeignUser,
    EmptySession,
    EndBeforeStart,
    OutsideEvents,
    Overlap,
    LoseEvents,
    PastWake,
    KeepOpen,
    HugeData,
    ForeignPage,
    RepeatedPage,
    LongReason,
    LongName,
    BadVersion,
    RetypedRevenue,
}

const FAULTS: [(&str, Fault); 21] = [
    ("retyped-revenue", Fault::RetypedRevenue),
    ("trap", Fault::Trap),
    ("loop", Fault::Loop),
    ("oom", Fault::OutOfMemory),
    ("leak", Fault::Leak),
    ("log-flood", Fault::LogFlood),
    ("missing-outcome", Fault::MissingOutcome),
    ("foreign-user", Fault::ForeignUser),
    ("empty-session", Fault::EmptySession),
    ("end-before-start", Fault::EndBeforeStart),
    ("outside-events", Fault::OutsideEvents),
    ("overlap", Fault::Overlap),
    ("lose-events", Fault::LoseEvents),
    ("past-wake", Fault::PastWake),
    ("keep-open", Fault::KeepOpen),
    ("huge-data", Fault::HugeData),
    ("foreign-page", Fault::ForeignPage),
    ("repeated-page", Fault::RepeatedPage),
    ("long-reason", Fault::LongReason),
    ("long-name", Fault::LongName),
    ("bad-version", Fault::BadVersion),
];

impl Fault {
    fn from_settings(settings: &Settings) -> Result<Self, String> {
        let name = settings.param("fault").unwrap_or("trap");
        FAULTS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f).ok_or_else(|| {
            let known: Vec<&str> = FAULTS.iter().map(|(n, _)| *n).collect();
            format!("unknown fault {name:?}: use one of {}", known.join(", "))
        })
    }
}

/// The default limits plus the faults that happen inside the rules.
pub struct FaultyRules {
    limits: Limits,
    fault: Fault,
}

impl Rules for FaultyRules {
    fn new(settings: &Settings) -> Result<Self, String> {
        Ok(Self {
            limits: Limits::from_settings(settings)?,
            fault: Fault::from_settings(settings)?,
        })
    }

    fn expiry(&self, session: &Session) -> Expiry {
        self.limits.expiry(session)
    }

    fn observe(&self, session: &mut Session, event: &Event) {
        if event.page_name() != Some("boom") {
            return;
        }
        match self.fault {
            Fault::Trap => panic!("faulty plugin: boom"),
            Fault::Loop => loop {
                std::hint::black_box(session.event_count());
            },
            Fault::OutOfMemory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Fault::Leak => std::mem::forget(std::hint::black_box(vec![1u8; 1 << 20])),
            Fault::LogFlood => {
                let line = "flood ".repeat(2_000);
                for i in 0..10_000 {
                    log(LogLevel::Info, &format!("{i}: {line}"));
                    println!("{i}");
                }
            }
            _ => {}
        }
    }
}

/// The SDK's loop over [`FaultyRules`]: the well-behaved answer, to spoil.
struct Sdk;

impl Plugin for Sdk {
    type Rules = FaultyRules;
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
}

/// What the instance remembers beyond the SDK's own state.
struct Instance {
    fault: Fault,
    /// Texts the host sent so far, and the handle of `boom` among them.
    texts: u32,
    boom: Option<u32>,
}

thread_local! {
    static INSTANCE: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

/// The exported plugin: the SDK's answers, spoilt on `boom`.
pub struct Faulty;

impl Guest for Faulty {
    fn info() -> PluginInfo {
        let mut info = <Sdk as Guest>::info();
        match INSTANCE.with(|i| i.borrow().as_ref().map(|i| i.fault)) {
            Some(Fault::LongName) => info.name = "faulty".repeat(2_000),
            Some(Fault::BadVersion) => info.version = "0.1.0\nrule_version=forged".into(),
            _ => {}
        }
        info
    }

    fn configure(settings: WitSettings) -> Result<Declarations, String> {
        let fault = Fault::from_settings(&Settings::from(settings.clone()))?;
        let mut declared = <Sdk as Guest>::configure(settings)?;
        if fault == Fault::RetypedRevenue {
            declared.attributes.push(SessionAttribute {
                name: "revenue".into(),
                type_: AttributeType::Long,
                doc: "Revenue in cents".into(),
            });
        }
        INSTANCE.with(|i| *i.borrow_mut() = Some(Instance { fault, texts: 0, boom: None }));
        Ok(declared)
    }

    fn process(batch: Batch) -> Result<BatchResult, String> {
        let (fault, boom) = INSTANCE.with(|i| {
            let mut i = i.borrow_mut();
            let instance = i.as_mut().ok_or("process called before configure")?;
            for text in &batch.new_texts {
                if text == "boom" {
                    instance.boom = Some(instance.texts);
                }
                instance.texts += 1;
            }
            Ok::<_, String>((instance.fault, instance.boom))
        })?;
        let boom_user = boom.and_then(|boom| first_user_on(&batch, boom));
        let watermark = batch.watermark;
        let users = batch.users.len() as u32;
        let mut result = <Sdk as Guest>::process(batch)?;
        if let Some(user) = boom_user {
            spoil(fault, &mut result, user, users, watermark);
        }
        Ok(result)
    }
}

/// The index of the first user with an event on page `boom`.
fn first_user_on(batch: &Batch, boom: u32) -> Option<u32> {
    let mut next = 0usize;
    for (index, user) in batch.users.iter().enumerate() {
        let end = next + user.event_count as usize;
        if batch.events.get(next..end)?.iter().any(|e| e.page_name == Some(boom)) {
            return Some(index as u32);
        }
        next = end;
    }
    None
}

/// Breaks one rule of the contract in `result`, for `user`.
fn spoil(fault: Fault, result: &mut BatchResult, user: u32, users: u32, watermark: i64) {
    let index = user as usize;
    match fault {
        Fault::MissingOutcome => {
            result.users.pop();
        }
        Fault::PastWake => {
            if let Some(outcome) = result.users.get_mut(index) {
                outcome.wake_at = Some(watermark);
            }
        }
        Fault::HugeData => {
            if let Some(state) = result.users.get_mut(index).and_then(|o| o.state.as_mut()) {
                state.data = vec![7; 1 << 20];
            }
        }
        Fault::KeepOpen => {
            if let Some(at) = result.closed.iter().rposition(|c| c.user == user) {
                let closed = result.closed.remove(at);
                let state = SessionState {
                    start_ms: closed.start_ms,
                    last_ms: closed.end_ms,
                    event_count: closed.event_count,
                    pages: closed.pages,
                    data: Vec::new(),
                };
                if let Some(outcome) = result.users.get_mut(index) {
                    outcome.state = Some(state);
                }
            }
        }
        Fault::LoseEvents => {
            if let Some(at) = result.closed.iter().rposition(|c| c.user == user) {
                result.closed.remove(at);
            } else if let Some(state) = result.users.get_mut(index).and_then(|o| o.state.as_mut()) {
                state.event_count += 1;
            }
        }
        Fault::EmptySession => {
            if let Some(last) = result.closed.iter().rfind(|c| c.user == user) {
                let empty = ClosedSession {
                    start_ms: last.end_ms,
                    event_count: 0,
                    pages: Vec::new(),
                    ..last.clone()
                };
                result.closed.push(empty);
            }
        }
        Fault::Overlap => {
            // Two sessions over the same span, the events shared out: every
            // count still adds up, yet the user was in both at once.
            if let Some(at) = result.closed.iter().position(|c| c.user == user) {
                let mut twin = result.closed[at].clone();
                if twin.event_count > 1 && twin.start_ms < twin.end_ms {
                    twin.event_count = 1;
                    result.closed[at].event_count -= 1;
                    result.closed.insert(at + 1, twin);
                }
            }
        }
        _ => {
            for closed in result.closed.iter_mut().filter(|c| c.user == user) {
                spoil_closed(fault, closed, users);
            }
        }
    }
}

/// Breaks a rule in one of the user's closed sessions.
fn spoil_closed(fault: Fault, closed: &mut ClosedSession, users: u32) {
    match fault {
        Fault::ForeignUser => closed.user = users,
        Fault::EndBeforeStart => closed.end_ms = closed.start_ms - 1,
        Fault::OutsideEvents => closed.end_ms += 3_600_000,
        Fault::ForeignPage => closed.pages.push(u32::MAX),
        Fault::RepeatedPage => {
            if let Some(&first) = closed.pages.first() {
                closed.pages.push(first);
            }
        }
        Fault::LongReason => {
            closed.end_reason = EndReason::Custom("logout\n".repeat(1_000));
        }
        _ => {}
    }
}

#[cfg(target_arch = "wasm32")]
sessionize_sdk::__private::bindings::__export_session_rules!(
    Faulty with_types_in sessionize_sdk::__private::bindings
);
