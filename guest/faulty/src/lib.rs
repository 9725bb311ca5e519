//! A misbehaving plugin, for the host's sandbox tests. Parameter `fault` picks
//! how it fails once it sees an event on page `boom`: `trap` (a panic), `loop`
//! (never returns), `oom` (allocates without bound). Before that it behaves
//! like the default rules.

use sessionize_sdk::{Event, Expiry, Limits, Rules, Session, Settings};

/// The default limits plus a fault on demand.
pub struct FaultyRules {
    limits: Limits,
    fault: Fault,
}

enum Fault {
    Trap,
    Loop,
    OutOfMemory,
}

impl Rules for FaultyRules {
    fn new(settings: &Settings) -> Result<Self, String> {
        let fault = match settings.param("fault").unwrap_or("trap") {
            "trap" => Fault::Trap,
            "loop" => Fault::Loop,
            "oom" => Fault::OutOfMemory,
            other => return Err(format!("unknown fault {other:?}: use trap, loop or oom")),
        };
        Ok(Self { limits: Limits::from_settings(settings)?, fault })
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
        }
    }
}

sessionize_sdk::export_rules!(FaultyRules);
