//! The engine's semantics, through the real default rules (compiled natively here;
//! the host's `plugin.rs` runs the same rules as a component).

use std::collections::HashMap;

use default_rules::DefaultRules;
use proptest::prelude::*;
use sessionize_core::engine::{
    session_id, Admission, Engine, EngineChanges, EngineConfig, UserState,
};
use sessionize_core::event::{Event, UserSplit};
use sessionize_core::rows::SessionRow;
use sessionize_core::rules::contract::Settings;
use sessionize_native::NativeRules;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn rules() -> NativeRules<DefaultRules> {
    let settings =
        Settings { inactivity_timeout_ms: 30 * MIN, max_duration_ms: 2 * HOUR, params: vec![] };
    NativeRules::new("default-rules", &settings).unwrap()
}

fn ev<'a>(uuid: &'a str, id: &'a str, t: i64, page: &'a str) -> Event<'a> {
    Event {
        uuid: uuid.into(),
        event_id: (!id.is_empty()).then(|| id.into()),
        timestamp_ms: t,
        page_name: (!page.is_empty()).then(|| page.into()),
        event_name: None,
        event_type: None,
    }
}

/// Comparable view of a session.
type Span = (String, i64, i64, u32, Vec<String>, String);

fn spans(rows: &[SessionRow]) -> Vec<Span> {
    let mut out: Vec<Span> = rows
        .iter()
        .map(|r| {
            (
                r.uuid.clone(),
                r.start_ms,
                r.end_ms,
                r.event_count,
                r.pages.iter().map(|p| p.to_string()).collect(),
                r.end_reason.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Offers events in order, advancing every `every` events, then ends the input.
fn run(events: &[Event<'_>], config: EngineConfig, every: usize) -> (Vec<SessionRow>, Engine) {
    let mut engine = Engine::new(config);
    let mut rules = rules();
    let mut rows = Vec::new();
    for (i, e) in events.iter().enumerate() {
        engine.offer(0, e);
        if (i + 1) % every.max(1) == 0 {
            rows.extend(engine.advance(&mut rules, false).unwrap());
        }
    }
    rows.extend(engine.advance(&mut rules, true).unwrap());
    (rows, engine)
}

#[test]
fn duplicates_count_once_whichever_copy_arrives_first() {
    let events = [ev("u", "a", 0, "home"), ev("u", "b", MIN, "search"), ev("u", "a", 0, "home")];
    let (rows, engine) = run(&events, EngineConfig::default(), 1);
    assert_eq!(
        spans(&rows),
        vec![("u".into(), 0, MIN, 2, vec!["home".into(), "search".into()], "end_of_input".into())]
    );
    assert_eq!(engine.stats().duplicates, 1);
    // Events without an id are never duplicates; the same id for another user is no duplicate.
    let events = [ev("u", "", 0, ""), ev("u", "", 0, ""), ev("v", "a", 0, ""), ev("u", "a", 0, "")];
    let (rows, engine) = run(&events, EngineConfig::default(), 1);
    assert_eq!(rows.iter().map(|r| r.event_count).sum::<u32>(), 4);
    assert_eq!(engine.stats().duplicates, 0);
}

/// A user with many events waiting (their duplicates are found through an
/// index, not a scan) still counts each copy once, keeps the earliest copy,
/// and goes on doing so after some of its events were released.
#[test]
fn a_hot_users_duplicates_count_once_before_and_after_a_release() {
    let ids: Vec<String> = (0..200).map(|i| format!("e{i}")).collect();
    let mut events = Vec::new();
    // 100 events a minute apart; every one of them sent twice, the copy later.
    for (i, id) in ids[..100].iter().enumerate() {
        events.push(ev("bot", id, i as i64 * 1000, "home"));
    }
    for (i, id) in ids[..100].iter().enumerate().rev() {
        events.push(ev("bot", id, i as i64 * 1000 + 500, "home"));
    }
    // Three hours later: the first hundred are released; then a hundred more,
    // half of them sent twice, and a copy of the first claiming an earlier time.
    for (i, id) in ids[100..].iter().enumerate() {
        events.push(ev("bot", id, 3 * HOUR + i as i64 * 1000, "page"));
        if i % 2 == 0 {
            events.push(ev("bot", id, 3 * HOUR + i as i64 * 1000, "page"));
        }
    }
    events.push(ev("bot", "e100", 3 * HOUR - 5000, "page"));
    let (rows, engine) = run(&events, EngineConfig::default(), 7);
    assert_eq!(engine.stats().duplicates, 100 + 50 + 1);
    assert_eq!(rows.iter().map(|r| r.event_count).sum::<u32>(), 200);
    let (one_by_one, _) = run(&events, EngineConfig::default(), 1);
    assert_eq!(spans(&rows), spans(&one_by_one));
    // The earliest copy of each event counts: the first session ends with the
    // original e99, the second starts at the early copy of e100.
    let starts: Vec<(i64, i64)> = rows.iter().map(|r| (r.start_ms, r.end_ms)).collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts.contains(&(0, 99_000)), "{starts:?}");
    assert!(starts.contains(&(3 * HOUR - 5000, 3 * HOUR + 99_000)), "{starts:?}");
}

/// What a state store keeps of an engine's changes (the host's redb store
/// follows the same rules).
#[derive(Default)]
struct Store {
    texts: Vec<String>,
    users: HashMap<String, UserState>,
}

impl Store {
    fn apply(&mut self, changes: EngineChanges) {
        if changes.replace_texts {
            self.texts.clear();
        }
        assert_eq!(changes.first_text as usize, self.texts.len(), "a gap in the text table");
        self.texts.extend(changes.new_texts.iter().map(|t| t.to_string()));
        for uuid in changes.deletes {
            self.users.remove(&*uuid);
        }
        for user in changes.upserts {
            self.users.insert(user.uuid.to_string(), user);
        }
    }
}

/// Page names that never repeat (URLs with query strings) do not make the
/// text table grow for the life of the job: texts no open session or waiting
/// event refers to are dropped, the rest renumbered, and neither the sessions
/// nor a restart from what was checkpointed after a renumbering can tell.
#[test]
fn distinct_page_names_do_not_grow_the_text_table() {
    // Users of ten events each, a tenth of a second apart: at any time about
    // 25,000 events (30 min idle + 10 min lateness) belong to open sessions.
    let total = 300_000;
    let events: Vec<(String, String, i64, String)> = (0..total)
        .map(|i| {
            let page = format!("https://shop.example/item?id={i}&ref=campaign-{}", i % 97);
            (format!("user{}", i / 10), format!("e{i}"), i as i64 * 100, page)
        })
        .collect();
    let config = EngineConfig::default();
    let mut engine = Engine::new(config);
    let mut rules = rules();
    let mut store = Store::default();
    let (mut rows, mut largest, mut restarted) = (Vec::new(), 0, false);
    for (i, (u, id, t, p)) in events.iter().enumerate() {
        engine.offer(0, &ev(u, id, *t, p));
        if (i + 1) % 1_000 == 0 {
            rows.extend(engine.advance(&mut rules, false).unwrap());
            largest = largest.max(engine.texts().strings.len());
            store.apply(engine.take_changes().unwrap());
            if engine.texts().generation > 0 && !restarted {
                // A restart from the store, right after a renumbering.
                restarted = true;
                let users = std::mem::take(&mut store.users);
                engine = Engine::restore(
                    config,
                    store.texts.clone(),
                    engine.clocks(),
                    users.values().cloned(),
                );
                store.users = users;
                rules = self::rules();
            }
        }
    }
    rows.extend(engine.advance(&mut rules, true).unwrap());
    assert!(restarted, "the table was never compacted");
    assert!(largest < 100_000, "the table held {largest} texts at once");
    assert_eq!(rows.iter().map(|r| r.event_count as usize).sum::<usize>(), total);
    assert_eq!(spans(&rows), reference(&events, config.allowed_lateness_ms));
}

#[test]
fn lateness_is_measured_against_the_greatest_time_seen_before() {
    let mut engine =
        Engine::new(EngineConfig { allowed_lateness_ms: 10 * MIN, ..Default::default() });
    assert_eq!(engine.offer(0, &ev("u", "1", 60 * MIN, "")), Admission::Accepted);
    // Exactly the allowed lateness behind: accepted. One ms more: late.
    assert_eq!(engine.offer(0, &ev("u", "2", 50 * MIN, "")), Admission::Accepted);
    assert_eq!(engine.offer(0, &ev("v", "3", 50 * MIN - 1, "")), Admission::Late { behind_ms: 1 });
    // Another partition has its own clock.
    assert_eq!(engine.offer(1, &ev("v", "4", 0, "")), Admission::Accepted);
    assert_eq!(engine.stats().late, 1);
}

/// An event stamped ahead of the wall clock (within the job's bound) does not
/// make the present late: it waits for its time and joins its user's session.
#[test]
fn an_event_from_the_future_waits_instead_of_making_the_present_late() {
    let now = 10 * HOUR;
    let mut engine = Engine::new(EngineConfig::default());
    engine.limit_clocks_to(now);
    let mut rules = rules();
    assert_eq!(engine.offer(0, &ev("fast", "", now + 50 * MIN, "ahead")), Admission::Accepted);
    for i in 0..10 {
        let e = ev("u", "", now - 5 * MIN + i * 30_000, "home");
        assert_eq!(engine.offer(0, &e), Admission::Accepted, "event {i}");
    }
    let early = engine.advance(&mut rules, false).unwrap();
    assert!(early.is_empty(), "{early:?}");
    let rows = engine.advance(&mut rules, true).unwrap();
    assert_eq!(rows.iter().map(|r| r.event_count).sum::<u32>(), 11);
    assert_eq!(engine.stats().late, 0);
}

#[test]
fn events_behind_the_watermark_are_late_on_every_partition() {
    let mut engine =
        Engine::new(EngineConfig { allowed_lateness_ms: 10 * MIN, ..Default::default() });
    let mut rules = rules();
    engine.offer(0, &ev("u", "1", 60 * MIN, ""));
    engine.advance(&mut rules, false).unwrap();
    assert_eq!(engine.watermark(), 50 * MIN);
    assert!(matches!(engine.offer(1, &ev("u", "2", 50 * MIN - 1, "")), Admission::Late { .. }));
}

#[test]
fn sessions_close_once_the_watermark_passes_them_not_before() {
    let mut engine =
        Engine::new(EngineConfig { allowed_lateness_ms: 10 * MIN, ..Default::default() });
    let mut rules = rules();
    engine.offer(0, &ev("u", "1", 0, "home"));
    engine.offer(0, &ev("v", "2", 40 * MIN, ""));
    // Watermark 30 min: u's session (expires at 30 min) may still grow.
    assert!(engine.advance(&mut rules, false).unwrap().is_empty());
    engine.offer(0, &ev("v", "3", 40 * MIN + 1, ""));
    let rows = engine.advance(&mut rules, false).unwrap();
    assert_eq!(spans(&rows), vec![("u".into(), 0, 0, 1, vec!["home".into()], "inactivity".into())]);
    assert_eq!(rows[0].session_id, session_id("u", 0));
}

#[test]
fn boundaries_split_exactly_as_specified() {
    // Gap of exactly 30 min stays, 30 min + 1 ms splits; exactly 2 h from the
    // start stays, one ms more splits as max_duration.
    let mut events =
        vec![ev("a", "1", 0, ""), ev("a", "2", 30 * MIN, ""), ev("a", "3", 60 * MIN + 1, "")];
    events.extend((0..=8).map(|i| ev("b", "", i * 15 * MIN, "")));
    events.extend((0..8).map(|i| ev("c", "", i * 15 * MIN, "")));
    events.push(ev("c", "x", 2 * HOUR + 1, ""));
    events.sort_by_key(|e| e.timestamp_ms);
    let (rows, _) = run(&events, EngineConfig::default(), 3);
    let got: Vec<_> = spans(&rows).into_iter().map(|(u, s, e, n, _, r)| (u, s, e, n, r)).collect();
    let want = [
        ("a", 0, 30 * MIN, 2, "inactivity"),
        // The final watermark (2 h + 1 ms - 10 min) is past this one's expiry.
        ("a", 60 * MIN + 1, 60 * MIN + 1, 1, "inactivity"),
        ("b", 0, 2 * HOUR, 9, "end_of_input"),
        ("c", 0, 105 * MIN, 8, "max_duration"),
        ("c", 2 * HOUR + 1, 2 * HOUR + 1, 1, "end_of_input"),
    ];
    let want: Vec<_> =
        want.iter().map(|&(u, s, e, n, r)| (u.to_owned(), s, e, n, r.to_owned())).collect();
    assert_eq!(got, want);
}

#[test]
fn session_ids_are_deterministic_and_unique_per_user_and_start() {
    assert_eq!(session_id("u", 5), session_id("u", 5));
    assert_ne!(session_id("u", 5), session_id("u", 6));
    assert_ne!(session_id("u", 5), session_id("v", 5));
    assert_eq!(session_id("u", 5).len(), 36);
}

/// The specification, written as plainly as possible: an independent oracle.
fn reference<'a>(events: &'a [(String, String, i64, String)], lateness: i64) -> Vec<Span> {
    let mut by_user: HashMap<&str, Vec<(i64, &str, &str)>> = HashMap::new();
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (u, id, t, p) in events {
        if !id.is_empty() {
            if let Some(&i) = seen.get(&(u.as_str(), id.as_str())) {
                let v = by_user.get_mut(u.as_str()).unwrap();
                v[i].0 = v[i].0.min(*t);
                continue;
            }
            seen.insert((u, id), by_user.get(u.as_str()).map_or(0, Vec::len));
        }
        by_user.entry(u).or_default().push((*t, id, p));
    }
    let watermark = events.iter().map(|e| e.2).max().unwrap_or(0) - lateness;
    let mut out = Vec::new();
    for (u, mut evs) in by_user {
        let key = |e: &(i64, &'a str, &'a str)| {
            (e.0, (!e.1.is_empty()).then_some(e.1), (!e.2.is_empty()).then_some(e.2))
        };
        evs.sort_by(|a, b| key(a).cmp(&key(b)));
        let mut cur: Option<(i64, i64, u32, Vec<String>)> = None;
        let expiry = |s: &(i64, i64, u32, Vec<String>)| {
            let (idle, longest) = (s.1 + 30 * MIN, s.0 + 2 * HOUR);
            if longest < idle {
                (longest, "max_duration")
            } else {
                (idle, "inactivity")
            }
        };
        for (t, _, p) in evs {
            if let Some(s) = &mut cur {
                let (at, reason) = expiry(s);
                if t > at {
                    out.push((u.to_owned(), s.0, s.1, s.2, s.3.clone(), reason.to_owned()));
                } else {
                    s.1 = t;
                    s.2 += 1;
                    if !p.is_empty() && !s.3.iter().any(|x| x == p) {
                        s.3.push(p.to_owned());
                    }
                    continue;
                }
            }
            cur = Some((t, t, 1, if p.is_empty() { vec![] } else { vec![p.to_owned()] }));
        }
        if let Some(s) = cur {
            let (at, reason) = expiry(&s);
            let reason = if watermark > at { reason } else { "end_of_input" };
            out.push((u.to_owned(), s.0, s.1, s.2, s.3, reason.to_owned()));
        }
    }
    out.sort();
    out
}

/// An event as the tests write it: user, event id (empty: none), time, page
/// (empty: none).
type TestEvent = (String, String, i64, String);

/// `events` in order of arrival: each arrives `jitter` (cycled) after its time.
fn arrival_order(events: &[TestEvent], jitter: &[i64]) -> Vec<TestEvent> {
    let mut keyed: Vec<_> =
        events.iter().enumerate().map(|(i, e)| (e.2 + jitter[i % jitter.len()], i)).collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| events[i].clone()).collect()
}

/// Users the generated events belong to: few, so users share many events,
/// and enough that a split over 2 to 4 engines gives each engine some.
const USERS: u8 = 8;

fn arb_events() -> impl Strategy<Value = Vec<TestEvent>> {
    let event = (0..USERS, 0..40u16, 0..(5 * HOUR), 0..5u8, any::<bool>());
    prop::collection::vec(event, 1..120).prop_map(|raw| {
        let mut out: Vec<TestEvent> = raw
            .into_iter()
            .map(|(u, id, t, p, has_page)| {
                // Coarse times make ties and exact-boundary gaps common.
                let t = (t / (5 * MIN)) * (5 * MIN) + (t % 3);
                let page = if has_page { format!("p{p}") } else { String::new() };
                (
                    format!("user{u}"),
                    if id % 7 == 0 { String::new() } else { format!("e{id}") },
                    t,
                    page,
                )
            })
            .collect();
        // Duplicates are exact copies (a producer retrying).
        let copies: Vec<_> =
            out.iter().filter(|e| e.2 % 2 == 0 && !e.1.is_empty()).cloned().collect();
        out.extend(copies);
        // Distinct ids must mean distinct events: reuse of an id with other content
        // is not what the generator models.
        let mut by_id: HashMap<(String, String), (i64, String)> = HashMap::new();
        out.retain(|e| {
            e.1.is_empty()
                || by_id.entry((e.0.clone(), e.1.clone())).or_insert((e.2, e.3.clone()))
                    == &(e.2, e.3.clone())
        });
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arrival order within the lateness bound and batch sizes do not change the
    /// sessions, and they match the specification's oracle.
    #[test]
    fn sessions_do_not_depend_on_arrival_order_or_batching(
        events in arb_events(),
        jitter in prop::collection::vec(0..(10 * MIN), 240),
        every in 1usize..60,
        max_batch in 1usize..50,
    ) {
        let lateness = 10 * MIN;
        let mut in_order = events.clone();
        in_order.sort_by_key(|e| e.2);
        // Shuffled within the bound: arrival = time + jitter < time + lateness.
        let shuffled = arrival_order(&events, &jitter);

        let run_one = |v: &[TestEvent], every: usize, max_batch: usize| {
            let evs: Vec<Event<'_>> = v.iter().map(|(u, id, t, p)| ev(u, id, *t, p)).collect();
            let config = EngineConfig { allowed_lateness_ms: lateness, max_batch_events: max_batch };
            let (rows, engine) = run(&evs, config, every);
            prop_assert_eq!(engine.stats().late, 0);
            Ok(spans(&rows))
        };
        let baseline = run_one(&in_order, 1_000_000, 1_000_000)?;
        let permuted = run_one(&shuffled, every, max_batch)?;
        prop_assert_eq!(&baseline, &permuted);
        prop_assert_eq!(&baseline, &reference(&events, lateness));
    }
}

/// The specification's lateness, as plainly as possible: in arrival order, an
/// event more than `lateness` behind the greatest time accepted before it is
/// late. Returns the events on time and how many were late.
fn judge_lateness(arrivals: &[TestEvent], lateness: i64) -> (Vec<TestEvent>, u64) {
    let mut greatest = i64::MIN;
    let mut on_time = Vec::new();
    for event in arrivals {
        if event.2 < greatest.saturating_sub(lateness) {
            continue;
        }
        greatest = greatest.max(event.2);
        on_time.push(event.clone());
    }
    let late = (arrivals.len() - on_time.len()) as u64;
    (on_time, late)
}

/// Runs `arrivals` through `count` engines that split the users between them:
/// each admits its own users' events and times the others'. Every engine
/// advances every `every` events, then the input ends.
fn run_split(
    arrivals: &[TestEvent],
    count: usize,
    every: usize,
    config: EngineConfig,
) -> (Vec<SessionRow>, u64) {
    let splits: Vec<UserSplit> = (0..count).map(|i| UserSplit::new(i, count)).collect();
    let mut engines: Vec<Engine> = (0..count).map(|_| Engine::new(config)).collect();
    let mut all_rules: Vec<_> = (0..count).map(|_| rules()).collect();
    let mut rows = Vec::new();
    for (i, (u, id, t, p)) in arrivals.iter().enumerate() {
        let event = ev(u, id, *t, p);
        for (split, engine) in splits.iter().zip(&mut engines) {
            if split.owns(u) {
                engine.offer(0, &event);
            } else {
                engine.observe_time(0, *t);
            }
        }
        if (i + 1) % every.max(1) == 0 {
            for (engine, rules) in engines.iter_mut().zip(&mut all_rules) {
                rows.extend(engine.advance(rules, false).unwrap());
            }
        }
    }
    for (engine, rules) in engines.iter_mut().zip(&mut all_rules) {
        rows.extend(engine.advance(rules, true).unwrap());
    }
    (rows, engines.iter().map(|e| e.stats().late).sum())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Users split over engines, with events arriving up to three times the
    /// lateness out of order: the late events and the sessions are the
    /// specification's, whatever the number of engines.
    #[test]
    fn users_split_over_engines_give_the_specifications_sessions(
        events in arb_events(),
        jitter in prop::collection::vec(0..(30 * MIN), 240),
        count in 1usize..5,
        every in 1usize..60,
        max_batch in 1usize..50,
    ) {
        let lateness = 10 * MIN;
        let arrivals = arrival_order(&events, &jitter);
        let (on_time, late) = judge_lateness(&arrivals, lateness);
        let config = EngineConfig { allowed_lateness_ms: lateness, max_batch_events: max_batch };
        let (rows, engines_late) = run_split(&arrivals, count, every, config);
        prop_assert_eq!(engines_late, late);
        prop_assert_eq!(spans(&rows), reference(&on_time, lateness));
    }
}

/// The generated users land on more than one engine for every count the
/// split test tries: otherwise it would never see an engine time another
/// engine's events.
#[test]
fn the_test_users_are_spread_over_every_count_of_engines() {
    for count in 2..5 {
        let owners: std::collections::HashSet<usize> = (0..USERS)
            .map(|u| {
                let user = format!("user{u}");
                (0..count).find(|&i| UserSplit::new(i, count).owns(&user)).unwrap()
            })
            .collect();
        assert!(owners.len() > 1, "{count} engines: every test user on one engine");
    }
}

#[test]
fn a_users_events_on_another_partition_are_counted() {
    let mut engine = Engine::new(EngineConfig::default());
    engine.register_partitions([0, 1]);
    for (partition, uuid, t) in [(0, "u", 1_000), (0, "v", 1_000), (1, "u", 2_000), (1, "v", 2_000)]
    {
        assert_eq!(engine.offer(partition, &ev(uuid, &t.to_string(), t, "p")), Admission::Accepted);
    }
    // Back on its first partition: not counted again.
    engine.offer(0, &ev("u", "3", 3_000, "p"));
    engine.offer(1, &ev("w", "4", 3_000, "p"));
    assert_eq!(engine.stats().off_partition, 2);
}
