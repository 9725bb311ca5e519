//! The conversion rules in Rust, Python and JavaScript (guest/conversion-rules,
//! guest/python-conversion, guest/js-conversion, each on its language's SDK),
//! run as the real components: the same sessions with the same attributes, and
//! a session that one language started continues in any other, as it does
//! when a hot swap changes the language (the open session's attribute values
//! travel in its `data`, in the layout the three SDKs share).
//!
//! Run `guest/build.sh`, the Python and the JavaScript builds first (the test
//! script does).

use std::path::PathBuf;
use std::sync::Arc;

use sessionize::rules::contract::{
    AttributeValue, Batch, ClosedSession, EndReason, Event, FieldValues, Settings, UserSlice,
};
use sessionize::rules::{ComponentLoader, ComponentRules, RulesRuntime, SandboxLimits, Texts};

const MIN: i64 = 60_000;
const LANGUAGES: [&str; 3] = ["conversion_rules", "python_conversion", "js_conversion"];
const TEXTS: [&str; 6] = ["home", "hotel", "confirmation", "booking", "view", ""];

/// An event: minute, page, event type (text handles), event_details.event_value.
type TestEvent = (i64, Option<u32>, Option<u32>, Option<f64>);

/// One user's events: bookings with and without a value, an empty page name,
/// a confirmation, and a gap past the inactivity timeout that starts a second
/// session.
const EVENTS: [TestEvent; 9] = [
    (0, Some(0), Some(4), Some(1.0)),
    (1, Some(1), Some(3), Some(100.5)),
    (2, None, Some(3), Some(20.25)),
    (3, Some(5), Some(4), None),
    (4, Some(2), None, None),
    (5, Some(1), Some(3), None),
    (50, Some(0), Some(4), Some(7.0)),
    (51, Some(5), Some(3), Some(0.125)),
    (52, Some(1), None, None),
];

fn load(name: &str) -> ComponentRules {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest/dist")
        .join(format!("{name}.wasm"));
    assert!(path.exists(), "{} missing: run the guest builds (tests/run.sh does)", path.display());
    let settings =
        Settings { inactivity_timeout_ms: 30 * MIN, max_duration_ms: 120 * MIN, params: vec![] };
    let loader = Arc::new(ComponentLoader::new().unwrap());
    loader.load_file(&path, &settings, SandboxLimits::default()).unwrap()
}

/// A batch of `EVENTS[range]` for one user, continuing `state`.
fn batch(range: std::ops::Range<usize>, state: Option<UserSlice>, end_of_input: bool) -> Batch {
    let chosen = &EVENTS[range];
    let events: Vec<Event> = chosen
        .iter()
        .map(|&(minute, page, kind, _)| Event {
            timestamp_ms: minute * MIN,
            page_name: page,
            event_name: None,
            event_type: kind,
        })
        .collect();
    let values = chosen.iter().map(|&(_, _, _, value)| value).collect();
    let slice = match state {
        Some(mut slice) => {
            slice.event_count = events.len() as u32;
            slice
        }
        None => UserSlice { state: None, event_count: events.len() as u32 },
    };
    Batch {
        new_texts: vec![],
        watermark: chosen.first().map_or(0, |e| e.0 * MIN),
        end_of_input,
        users: vec![slice],
        events,
        fields: vec![FieldValues::Float(values)],
    }
}

/// The sessions `first` closes over `EVENTS[..at]` and `second`, continuing
/// the session `first` left open, over the rest.
fn handed_over(
    first: &mut ComponentRules,
    second: &mut ComponentRules,
    at: usize,
    texts: &[Arc<str>],
) -> Vec<ClosedSession> {
    let mut before = batch(0..at, None, false);
    let result = first.process(Texts::first(texts), &mut before).unwrap();
    let open = result.users[0].state.clone();
    assert!(open.is_some(), "the session must still be open at event {at}");
    let mut after = batch(at..EVENTS.len(), Some(UserSlice { state: open, event_count: 0 }), true);
    let mut closed = result.closed;
    closed.extend(second.process(Texts::first(texts), &mut after).unwrap().closed);
    closed
}

/// The conversion rules' sessions for `EVENTS`, from their documentation
/// (guest/conversion-rules): a gap over 30 minutes splits (the events span
/// less than the maximum duration); pages are the distinct non-empty ones;
/// `converted` is a booking or the confirmation page; `revenue` sums the
/// bookings' values; entry and exit are the first and last page.
fn model() -> Vec<ClosedSession> {
    let mut sessions: Vec<Vec<TestEvent>> = vec![];
    for &event in &EVENTS {
        match sessions.last_mut() {
            Some(open) if event.0 - open.last().map_or(0, |e| e.0) <= 30 => open.push(event),
            _ => sessions.push(vec![event]),
        }
    }
    let count = sessions.len();
    let page = |e: &TestEvent| e.1.filter(|&p| !TEXTS[p as usize].is_empty());
    let text = |p: u32| AttributeValue::String(TEXTS[p as usize].to_owned());
    sessions
        .into_iter()
        .enumerate()
        .map(|(i, events)| {
            let booking = |e: &&TestEvent| e.2.is_some_and(|t| TEXTS[t as usize] == "booking");
            let mut pages: Vec<u32> = vec![];
            events.iter().filter_map(page).for_each(|p| {
                if !pages.contains(&p) {
                    pages.push(p)
                }
            });
            let converted = events.iter().any(|e| booking(&e))
                || pages.iter().any(|&p| TEXTS[p as usize] == "confirmation");
            let revenue: f64 = events.iter().filter(booking).filter_map(|e| e.3).sum();
            ClosedSession {
                user: 0,
                start_ms: events[0].0 * MIN,
                end_ms: events[events.len() - 1].0 * MIN,
                event_count: events.len() as u32,
                end_reason: if i + 1 < count {
                    EndReason::Inactivity
                } else {
                    EndReason::EndOfInput
                },
                attributes: vec![
                    Some(AttributeValue::Boolean(converted)),
                    Some(AttributeValue::Double(revenue)),
                    events.iter().find_map(page).map(text),
                    events.iter().rev().find_map(page).map(text),
                ],
                pages,
            }
        })
        .collect()
}

#[test]
fn three_languages_cut_the_same_sessions_and_continue_each_others() {
    let texts: Vec<Arc<str>> = TEXTS.iter().map(|t| Arc::from(*t)).collect();
    let mut rules: Vec<ComponentRules> = LANGUAGES.iter().map(|name| load(name)).collect();
    // The Rust component's sessions in one call must be the model's; they
    // are then the reference for every language and every hand-over.
    let mut whole = batch(0..EVENTS.len(), None, true);
    let reference = rules[0].process(Texts::first(&texts), &mut whole).unwrap().closed;
    assert_eq!(reference, model());
    assert_eq!(reference.len(), 2);
    for language in 1..LANGUAGES.len() {
        let mut whole = batch(0..EVENTS.len(), None, true);
        let closed = rules[language].process(Texts::first(&texts), &mut whole).unwrap().closed;
        assert_eq!(closed, reference, "{} in one call", LANGUAGES[language]);
    }
    // Every ordered pair, handing over inside the first session (after its
    // attributes were set) and inside the second.
    for from in 0..LANGUAGES.len() {
        for to in 0..LANGUAGES.len() {
            if from == to {
                continue;
            }
            for at in [3, 7] {
                let (a, b) = if from < to {
                    let (left, right) = rules.split_at_mut(to);
                    (&mut left[from], &mut right[0])
                } else {
                    let (left, right) = rules.split_at_mut(from);
                    (&mut right[0], &mut left[to])
                };
                let closed = handed_over(a, b, at, &texts);
                assert_eq!(
                    closed, reference,
                    "{} -> {} after event {at}",
                    LANGUAGES[from], LANGUAGES[to]
                );
            }
        }
    }
}
