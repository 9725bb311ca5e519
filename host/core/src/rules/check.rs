//! What the host checks in a plugin's answer before it touches state.
//!
//! A plugin may come from anywhere, so its answer to a batch is trusted for
//! nothing: each [`Rule`] below is checked, and an answer that breaks one is a
//! plugin fault ([`RulesError::Contract`], naming the rule and the user), never
//! applied and never written. The engine keeps the batch queued and retries
//! it, so no event is lost; the job's fault policy then rolls back or stops.
//!
//! Every check is linear in the size of the batch and the answer: closed
//! sessions are grouped per user with a counting sort, and page handles are
//! checked against a table indexed by handle, not searched.
//!
//! A wake-up time at or before the batch's watermark is refused rather than
//! taken as "now": the engine wakes a user once the watermark reaches the
//! time, so such a time would wake the user again on every advance without
//! the watermark moving, a busy loop, for an answer no correct rule needs
//! (the SDK asks for the millisecond after the session's expiry).

use std::fmt;

use super::contract::{
    Batch, BatchResult, ClosedSession, Declarations, EndReason, Event, SessionState, UserOutcome,
    UserSlice,
};
use super::declare::check_attributes;
use super::rule::{
    broken, quote, Rule, MAX_END_REASON_BYTES, MAX_PLUGIN_NAME_BYTES, MAX_STATE_DATA_BYTES,
};
use super::{RulesError, Texts};

/// Checks the plugin's name and version, which make up the rule version
/// written with every session and in every snapshot summary.
pub fn check_plugin_info(name: &str, version: &str) -> Result<(), RulesError> {
    let fits = |text: &str, extra: &[char]| {
        !text.is_empty()
            && text.len() <= MAX_PLUGIN_NAME_BYTES
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c))
    };
    if !fits(name, &[]) {
        return Err(broken(
            Rule::PluginName,
            None,
            format_args!(
                "name {} is not 1 to {MAX_PLUGIN_NAME_BYTES} of [A-Za-z0-9._-]",
                quote(name)
            ),
        ));
    }
    if !fits(version, &['+']) {
        return Err(broken(
            Rule::PluginVersion,
            None,
            format_args!(
                "version {} is not 1 to {MAX_PLUGIN_NAME_BYTES} of [A-Za-z0-9._+-]",
                quote(version)
            ),
        ));
    }
    Ok(())
}

/// Buffers the checks reuse from batch to batch, so that checking allocates
/// nothing once warm. One per runtime.
#[derive(Debug, Default)]
pub struct CheckScratch {
    /// Per text handle, the stamp of the user (or session) that last marked it:
    /// a page belongs to the user being checked when it holds the user's stamp.
    marks: Vec<u32>,
    /// The last stamp handed out.
    stamp: u32,
    /// Closed sessions grouped by user: user `u`'s are `order[first[u]..first[u + 1]]`,
    /// in the order the plugin gave them.
    first: Vec<u32>,
    order: Vec<u32>,
}

impl CheckScratch {
    /// A stamp no handle holds yet.
    fn fresh_stamp(&mut self) -> u32 {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Once in four billion: old stamps could come round again.
            self.marks.fill(0);
            self.stamp = 1;
        }
        self.stamp
    }

    /// Groups `closed` by user (a counting sort, stable), checking each names
    /// a user of the batch.
    fn group(&mut self, closed: &[ClosedSession], users: usize) -> Result<(), RulesError> {
        self.first.clear();
        self.first.resize(users + 2, 0);
        for (index, session) in closed.iter().enumerate() {
            let user = session.user as usize;
            if user >= users {
                return Err(broken(
                    Rule::ForeignUser,
                    Some(session.user),
                    format_args!(
                        "closed session {index} is for a user the batch of {users} does not have"
                    ),
                ));
            }
            self.first[user + 2] += 1;
        }
        for u in 2..self.first.len() {
            self.first[u] += self.first[u - 1];
        }
        // `first[u + 1]` is now where user `u`'s run starts: filling moves it
        // to the run's end, which is where user `u + 1`'s run starts.
        self.order.clear();
        self.order.resize(closed.len(), 0);
        for (index, session) in closed.iter().enumerate() {
            let slot = &mut self.first[session.user as usize + 1];
            self.order[*slot as usize] = index as u32;
            *slot += 1;
        }
        Ok(())
    }
}

/// A session of one user, closed or open, as the checks see it.
struct Span<'a> {
    start_ms: i64,
    end_ms: i64,
    event_count: u32,
    pages: &'a [u32],
    what: Which,
}

/// Which session of a user, for messages.
#[derive(Clone, Copy)]
enum Which {
    /// The closed session at this index of the answer.
    Closed(u32),
    /// The session left open.
    Open,
}

impl fmt::Display for Which {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Which::Closed(index) => write!(f, "closed session {index}"),
            Which::Open => f.write_str("open session"),
        }
    }
}

/// What the checks know about the user being checked.
struct UserBounds {
    user: u32,
    /// Earliest and latest time a session of the user may hold; `None` for a
    /// user with neither a stored session nor events.
    times: Option<(i64, i64)>,
    /// The stamp its pages hold in [`CheckScratch::marks`].
    stamp: u32,
    /// Where the previous session (in the plugin's order) ended.
    previous_end: Option<i64>,
}

/// Checks `result`, the plugin's answer to `batch`, against every [`Rule`]
/// that concerns an answer: nothing of it may touch state otherwise.
/// `texts` are the texts the batch's handles refer to; `declared` what the
/// plugin declared.
pub fn check_result(
    scratch: &mut CheckScratch,
    texts: Texts<'_>,
    declared: &Declarations,
    batch: &Batch,
    result: &BatchResult,
) -> Result<(), RulesError> {
    let users = batch.users.len();
    if result.users.len() != users {
        return Err(broken(
            Rule::OutcomeCount,
            None,
            format_args!("{} outcomes for {users} users", result.users.len()),
        ));
    }
    scratch.group(&result.closed, users)?;
    let handles = texts.strings.len();
    if scratch.marks.len() != handles {
        scratch.marks.resize(handles, 0);
    }
    let mut next_event = 0usize;
    for (index, (slice, outcome)) in batch.users.iter().zip(&result.users).enumerate() {
        let events_end = next_event + slice.event_count as usize;
        let events = batch.events.get(next_event..events_end).unwrap_or_default();
        next_event = events_end;
        let user = index as u32;
        let (mut bounds, before) = brought(scratch, user, slice, events);
        let after = check_made(scratch, declared, batch, result, &mut bounds, outcome)?;
        if after != before {
            return Err(broken(
                Rule::EventsConserved,
                Some(user),
                format_args!(
                    "its sessions hold {after} events, but it had {} stored and {} in the batch",
                    before - u64::from(slice.event_count),
                    slice.event_count
                ),
            ));
        }
        if let Some(at) = outcome.wake_at.filter(|&at| at <= batch.watermark) {
            return Err(broken(
                Rule::WakeAfterWatermark,
                Some(user),
                format_args!("wake-up at {at} is not after the watermark {}", batch.watermark),
            ));
        }
    }
    Ok(())
}

/// What `user` brought to the batch (its stored session and its `events`):
/// the bounds its sessions must keep within, and how many events it had.
fn brought(
    scratch: &mut CheckScratch,
    user: u32,
    slice: &UserSlice,
    events: &[Event],
) -> (UserBounds, u64) {
    let stamp = scratch.fresh_stamp();
    let mut times: Option<(i64, i64)> = None;
    let mut widen = |from: i64, to: i64| {
        times = Some(times.map_or((from, to), |(lo, hi)| (lo.min(from), hi.max(to))));
    };
    let mut before = u64::from(slice.event_count);
    if let Some(stored) = &slice.state {
        widen(stored.start_ms, stored.last_ms);
        before += u64::from(stored.event_count);
        mark(&mut scratch.marks, &stored.pages, stamp);
    }
    for event in events {
        widen(event.timestamp_ms, event.timestamp_ms);
        mark(&mut scratch.marks, event.page_name.as_slice(), stamp);
    }
    (UserBounds { user, times, stamp, previous_end: None }, before)
}

/// Checks what the plugin made of one user (its closed sessions and its
/// open one) and returns the events those hold.
fn check_made(
    scratch: &mut CheckScratch,
    declared: &Declarations,
    batch: &Batch,
    result: &BatchResult,
    bounds: &mut UserBounds,
    outcome: &UserOutcome,
) -> Result<u64, RulesError> {
    let user = bounds.user;
    let index = user as usize;
    let mut after = 0u64;
    for position in scratch.first[index] as usize..scratch.first[index + 1] as usize {
        let closed_index = scratch.order[position];
        let Some(closed) = result.closed.get(closed_index as usize) else { continue };
        let span = Span {
            start_ms: closed.start_ms,
            end_ms: closed.end_ms,
            event_count: closed.event_count,
            pages: &closed.pages,
            what: Which::Closed(closed_index),
        };
        check_span(scratch, bounds, &span)?;
        check_end_reason(user, closed_index, &closed.end_reason)?;
        check_attributes(declared, closed_index, closed)?;
        after += u64::from(closed.event_count);
    }
    if let Some(open) = &outcome.state {
        check_open(scratch, bounds, open, batch.end_of_input)?;
        after += u64::from(open.event_count);
    }
    Ok(after)
}

/// Gives `handles` (those within the table) the stamp `stamp`.
fn mark(marks: &mut [u32], handles: &[u32], stamp: u32) {
    for &handle in handles {
        if let Some(mark) = marks.get_mut(handle as usize) {
            *mark = stamp;
        }
    }
}

/// The checks every session of a user gets, closed or open, in the plugin's order.
fn check_span(
    scratch: &mut CheckScratch,
    bounds: &mut UserBounds,
    span: &Span<'_>,
) -> Result<(), RulesError> {
    let user = Some(bounds.user);
    let what = span.what;
    if span.event_count == 0 {
        return Err(broken(Rule::EmptySession, user, format_args!("{what} holds no event")));
    }
    if span.start_ms > span.end_ms {
        return Err(broken(
            Rule::EndBeforeStart,
            user,
            format_args!("{what} starts at {} after it ends at {}", span.start_ms, span.end_ms),
        ));
    }
    match bounds.times {
        Some((lo, hi)) if lo <= span.start_ms && span.end_ms <= hi => {}
        Some((lo, hi)) => {
            return Err(broken(
                Rule::OutsideEvents,
                user,
                format_args!(
                    "{what} spans {}..={}, its user's events {lo}..={hi}",
                    span.start_ms, span.end_ms
                ),
            ))
        }
        None => {
            return Err(broken(
                Rule::OutsideEvents,
                user,
                format_args!("{what} is for a user with no events and no stored session"),
            ))
        }
    }
    check_pages(scratch, bounds, span)?;
    if let Some(previous_end) = bounds.previous_end {
        if span.start_ms < previous_end {
            return Err(broken(
                Rule::OverlappingSessions,
                user,
                format_args!(
                    "{what} starts at {}, before the session before it ends at {previous_end}",
                    span.start_ms
                ),
            ));
        }
    }
    bounds.previous_end = Some(span.end_ms);
    Ok(())
}

/// Each page of `span` is one of its user's, listed once.
fn check_pages(
    scratch: &mut CheckScratch,
    bounds: &UserBounds,
    span: &Span<'_>,
) -> Result<(), RulesError> {
    let session = scratch.fresh_stamp();
    let mut outcome = Ok(());
    let mut marked = 0;
    for &page in span.pages {
        match scratch.marks.get_mut(page as usize) {
            Some(mark) if *mark == bounds.stamp => {
                *mark = session;
                marked += 1;
            }
            Some(mark) if *mark == session => {
                outcome = Err(broken(
                    Rule::RepeatedPage,
                    Some(bounds.user),
                    format_args!("{} lists page {page} twice", span.what),
                ));
                break;
            }
            _ => {
                outcome = Err(broken(
                    Rule::ForeignPage,
                    Some(bounds.user),
                    format_args!(
                        "{} lists page {page}, which none of its user's events visited",
                        span.what
                    ),
                ));
                break;
            }
        }
    }
    // The pages go back to the user, for its next session.
    mark(&mut scratch.marks, &span.pages[..marked], bounds.stamp);
    outcome
}

fn check_end_reason(user: u32, closed: u32, reason: &EndReason) -> Result<(), RulesError> {
    let EndReason::Custom(name) = reason else { return Ok(()) };
    if name.trim().is_empty()
        || name.len() > MAX_END_REASON_BYTES
        || name.chars().any(char::is_control)
    {
        return Err(broken(
            Rule::EndReasonName,
            Some(user),
            format_args!(
                "closed session {closed} ends for {}: not one line of 1 to {MAX_END_REASON_BYTES} bytes",
                quote(name)
            ),
        ));
    }
    Ok(())
}

/// The checks of the session the plugin leaves open, which the host stores.
fn check_open(
    scratch: &mut CheckScratch,
    bounds: &mut UserBounds,
    open: &SessionState,
    end_of_input: bool,
) -> Result<(), RulesError> {
    let span = Span {
        start_ms: open.start_ms,
        end_ms: open.last_ms,
        event_count: open.event_count,
        pages: &open.pages,
        what: Which::Open,
    };
    check_span(scratch, bounds, &span)?;
    let user = Some(bounds.user);
    if open.data.len() > MAX_STATE_DATA_BYTES {
        return Err(broken(
            Rule::DataSize,
            user,
            format_args!(
                "open session carries {} bytes of data, more than {MAX_STATE_DATA_BYTES}",
                open.data.len()
            ),
        ));
    }
    if end_of_input {
        return Err(broken(
            Rule::OpenAtEndOfInput,
            user,
            format_args!("a session is left open at the end of input"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::rules::contract::{Event, UserOutcome, UserSlice};

    fn closed(
        user: u32,
        start_ms: i64,
        end_ms: i64,
        event_count: u32,
        pages: &[u32],
    ) -> ClosedSession {
        ClosedSession {
            user,
            start_ms,
            end_ms,
            event_count,
            pages: pages.to_vec(),
            end_reason: EndReason::Inactivity,
            attributes: Vec::new(),
        }
    }

    /// Two users: one with a stored session (0..=10, 2 events, page 0) and an
    /// event at 20 on page 1; one with events at 5 and 6 on page 2.
    fn batch() -> Batch {
        let event = |timestamp_ms, page| Event {
            timestamp_ms,
            page_name: Some(page),
            event_name: None,
            event_type: None,
        };
        let stored =
            SessionState { start_ms: 0, last_ms: 10, event_count: 2, pages: vec![0], data: vec![] };
        Batch {
            new_texts: vec![],
            watermark: 30,
            end_of_input: false,
            users: vec![
                UserSlice { state: Some(stored), event_count: 1 },
                UserSlice { state: None, event_count: 2 },
            ],
            events: vec![event(20, 1), event(5, 2), event(6, 2)],
            fields: vec![],
        }
    }

    fn check(result: &BatchResult) -> Result<(), RulesError> {
        let texts: Vec<Arc<str>> = ["a", "b", "c", "d"].iter().map(|t| Arc::from(*t)).collect();
        check_result(
            &mut CheckScratch::default(),
            Texts::first(&texts),
            &Declarations::default(),
            &batch(),
            result,
        )
    }

    #[test]
    fn sessions_in_any_order_of_users_that_account_for_every_event_pass() {
        let result = BatchResult {
            users: vec![
                UserOutcome { state: None, wake_at: None },
                UserOutcome { state: None, wake_at: Some(31) },
            ],
            closed: vec![
                closed(1, 5, 6, 2, &[2]),
                closed(0, 0, 10, 2, &[0]),
                closed(0, 20, 20, 1, &[1]),
            ],
        };
        check(&result).unwrap();
    }

    #[test]
    fn a_session_may_continue_the_stored_one() {
        let open = SessionState {
            start_ms: 0,
            last_ms: 20,
            event_count: 3,
            pages: vec![1, 0],
            data: vec![],
        };
        let result = BatchResult {
            users: vec![
                UserOutcome { state: Some(open), wake_at: Some(31) },
                UserOutcome { state: None, wake_at: None },
            ],
            closed: vec![closed(1, 5, 6, 2, &[2])],
        };
        check(&result).unwrap();
    }

    #[test]
    fn the_scratch_carries_nothing_from_one_batch_to_the_next() {
        let texts: Vec<Arc<str>> = ["a", "b", "c"].iter().map(|t| Arc::from(*t)).collect();
        let mut scratch = CheckScratch::default();
        let good = BatchResult {
            users: vec![UserOutcome { state: None, wake_at: None }; 2],
            closed: vec![closed(0, 0, 20, 3, &[0, 1]), closed(1, 5, 6, 2, &[2])],
        };
        check_result(&mut scratch, Texts::first(&texts), &Declarations::default(), &batch(), &good)
            .unwrap();
        // Page 2 was user 1's in the last batch, not user 0's in this one.
        let foreign = BatchResult {
            users: vec![UserOutcome { state: None, wake_at: None }; 2],
            closed: vec![closed(0, 0, 20, 3, &[0, 2]), closed(1, 5, 6, 2, &[2])],
        };
        let error = check_result(
            &mut scratch,
            Texts::first(&texts),
            &Declarations::default(),
            &batch(),
            &foreign,
        )
        .unwrap_err();
        assert!(error.to_string().contains("rule foreign-page, user 0"), "{error}");
    }

    #[test]
    fn names_fit_for_a_rule_version_pass_and_others_do_not() {
        check_plugin_info("logout-rules", "0.1.0+build.5").unwrap();
        for (name, version, rule) in [
            ("", "1", "plugin-name"),
            ("a b", "1", "plugin-name"),
            ("a@b", "1", "plugin-name"),
            ("a", "", "plugin-version"),
            ("a", "1\n2", "plugin-version"),
        ] {
            let error = check_plugin_info(name, version).unwrap_err();
            assert!(error.to_string().contains(&format!("rule {rule}")), "{error}");
        }
        let long = "x".repeat(MAX_PLUGIN_NAME_BYTES + 1);
        assert!(check_plugin_info(&long, "1").is_err());
        assert!(check_plugin_info(&long[1..], "1").is_ok());
    }
}
