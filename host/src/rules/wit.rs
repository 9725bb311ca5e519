//! The generated bindings of `wit/sessionize.wit`, and the one place where the
//! host's contract types become wasmtime's and back. Session states are moved
//! across, not copied: a batch lends them to the call and gets them back.

use super::contract;

/// Host-side bindings of `wit/sessionize.wit`.
#[allow(missing_docs, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "session-rules",
    });
}

pub(super) use bindings::sessionize::plugin::{host, types};
pub(super) use bindings::{SessionRules, SessionRulesPre};

/// Runs `call` on `batch` in the generated form, built in `scratch` (reused
/// from call to call, so the hot path allocates nothing once warm). The
/// batch's session states move into it and back afterwards, so a failed call
/// leaves `batch` as it was (a retry sends the same), and a successful one
/// costs no copy of them.
pub(super) fn lend<R>(
    batch: &mut contract::Batch,
    scratch: &mut types::Batch,
    call: impl FnOnce(&types::Batch) -> R,
) -> R {
    scratch.new_texts = std::mem::take(&mut batch.new_texts);
    scratch.watermark = batch.watermark;
    scratch.end_of_input = batch.end_of_input;
    scratch.users.clear();
    scratch.users.extend(batch.users.iter_mut().map(|u| types::UserSlice {
        state: u.state.take().map(state_to_wit),
        event_count: u.event_count,
    }));
    scratch.events.clear();
    scratch.events.extend(batch.events.iter().map(|e| types::Event {
        timestamp_ms: e.timestamp_ms,
        page_name: e.page_name,
        event_name: e.event_name,
        event_type: e.event_type,
    }));
    let outcome = call(scratch);
    for (user, lent) in batch.users.iter_mut().zip(scratch.users.drain(..)) {
        user.state = lent.state.map(state_from_wit);
    }
    batch.new_texts = std::mem::take(&mut scratch.new_texts);
    outcome
}

/// An empty batch in the generated form, to build batches in.
pub(super) fn empty_batch() -> types::Batch {
    types::Batch {
        new_texts: Vec::new(),
        watermark: 0,
        end_of_input: false,
        users: Vec::new(),
        events: Vec::new(),
    }
}

/// The plugin's answer in the host's terms.
pub(super) fn result_from_wit(result: types::BatchResult) -> contract::BatchResult {
    contract::BatchResult {
        users: result
            .users
            .into_iter()
            .map(|u| contract::UserOutcome {
                state: u.state.map(state_from_wit),
                wake_at: u.wake_at,
            })
            .collect(),
        closed: result
            .closed
            .into_iter()
            .map(|c| contract::ClosedSession {
                user: c.user,
                start_ms: c.start_ms,
                end_ms: c.end_ms,
                event_count: c.event_count,
                pages: c.pages,
                end_reason: match c.end_reason {
                    types::EndReason::Inactivity => contract::EndReason::Inactivity,
                    types::EndReason::MaxDuration => contract::EndReason::MaxDuration,
                    types::EndReason::EndOfInput => contract::EndReason::EndOfInput,
                    types::EndReason::Custom(reason) => contract::EndReason::Custom(reason),
                },
            })
            .collect(),
    }
}

/// The job's settings in the generated form.
pub(super) fn settings_to_wit(settings: &contract::Settings) -> types::Settings {
    types::Settings {
        inactivity_timeout_ms: settings.inactivity_timeout_ms,
        max_duration_ms: settings.max_duration_ms,
        params: settings.params.clone(),
    }
}

fn state_to_wit(s: contract::SessionState) -> types::SessionState {
    types::SessionState {
        start_ms: s.start_ms,
        last_ms: s.last_ms,
        event_count: s.event_count,
        pages: s.pages,
        data: s.data,
    }
}

fn state_from_wit(s: types::SessionState) -> contract::SessionState {
    contract::SessionState {
        start_ms: s.start_ms,
        last_ms: s.last_ms,
        event_count: s.event_count,
        pages: s.pages,
        data: s.data,
    }
}
