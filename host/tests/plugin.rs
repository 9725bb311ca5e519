//! The real components built from `guest/` (run `guest/build.sh` first; the test
//! script does) against the same rules compiled natively, and the sandbox.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use default_rules::DefaultRules;
use sessionize::engine::{Admission, Engine, EngineConfig, EngineError, Sample};
use sessionize::event::parse;
use sessionize::rules::contract::{Batch, Event, Settings, UserSlice};
use sessionize::rules::lifecycle::RulesSlot;
use sessionize::rules::{
    ComponentLoader, ComponentRules, RulesError, RulesRuntime, SandboxLimits, Texts,
};
use sessionize::sink::SessionRow;
use sessionize::source::generate::{generate, GeneratorConfig};
use sessionize_native::NativeRules;

const MIN: i64 = 60_000;

fn component_path(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest/dist")
        .join(format!("{name}.wasm"));
    assert!(path.exists(), "{} missing: run guest/build.sh", path.display());
    path
}

fn settings(params: &[(&str, &str)]) -> Settings {
    Settings {
        inactivity_timeout_ms: 30 * MIN,
        max_duration_ms: 120 * MIN,
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn load(
    name: &str,
    params: &[(&str, &str)],
    limits: SandboxLimits,
) -> Result<ComponentRules, RulesError> {
    let loader = Arc::new(ComponentLoader::new()?);
    loader.load_file(&component_path(name), &settings(params), limits)
}

fn sessionize(lines: &[u8], rules: &mut dyn RulesRuntime) -> Vec<SessionRow> {
    let mut engine = Engine::new(EngineConfig::default());
    let mut rows = Vec::new();
    for (i, line) in lines.split(|&b| b == b'\n').enumerate() {
        if let Ok(event) = parse(line) {
            engine.offer(0, &event);
        }
        if i % 5000 == 4999 {
            rows.extend(engine.advance(rules, false).unwrap());
        }
    }
    rows.extend(engine.advance(rules, true).unwrap());
    rows
}

fn without_version(rows: &[SessionRow]) -> Vec<SessionRow> {
    let mut rows: Vec<_> = rows
        .iter()
        .cloned()
        .map(|mut r| {
            r.rule_version = Arc::from("");
            r
        })
        .collect();
    rows.sort_by(|a, b| (&a.uuid, a.start_ms).cmp(&(&b.uuid, b.start_ms)));
    rows
}

#[test]
fn component_and_native_rules_cut_the_same_sessions() {
    let mut lines = Vec::new();
    generate(&GeneratorConfig::sample(), &mut lines).unwrap();
    let mut component = load("default_rules", &[], SandboxLimits::default()).unwrap();
    assert!(
        component.rule_version().starts_with("default-rules@0.1.0+"),
        "{}",
        component.rule_version()
    );
    let mut native = NativeRules::<DefaultRules>::new("default-rules", &settings(&[])).unwrap();
    let from_component = sessionize(&lines, &mut component);
    let from_native = sessionize(&lines, &mut native);
    assert!(from_component.len() > 1000, "{} sessions", from_component.len());
    assert_eq!(without_version(&from_component), without_version(&from_native));
    for reason in ["inactivity", "max_duration", "end_of_input"] {
        assert!(from_component.iter().any(|r| r.end_reason == reason), "no {reason} session");
    }
}

fn batch(pages: &[(i64, Option<u32>)], texts: usize) -> (Vec<Arc<str>>, Batch) {
    let texts: Vec<Arc<str>> =
        ["home", "logout", "boom", "signout"].iter().take(texts).map(|t| Arc::from(*t)).collect();
    let events: Vec<Event> = pages
        .iter()
        .map(|&(t, page)| Event {
            timestamp_ms: t,
            page_name: page,
            event_name: None,
            event_type: None,
        })
        .collect();
    let batch = Batch {
        new_texts: vec![],
        watermark: 0,
        end_of_input: true,
        users: vec![UserSlice { state: None, event_count: events.len() as u32 }],
        events,
        fields: vec![],
    };
    (texts, batch)
}

#[test]
fn logout_rules_end_the_session_on_the_configured_page() {
    let mut rules = load("logout_rules", &[], SandboxLimits::default()).unwrap();
    let (texts, mut b) = batch(&[(0, Some(0)), (MIN, Some(1)), (2 * MIN, Some(0))], 4);
    let result = rules.process(Texts::first(&texts), &mut b).unwrap();
    let counts: Vec<_> = result.closed.iter().map(|c| c.event_count).collect();
    assert_eq!(counts, [2, 1]);
    assert!(
        matches!(&result.closed[0].end_reason, sessionize::rules::contract::EndReason::Custom(r) if r == "logout")
    );

    let mut rules =
        load("logout_rules", &[("logout_page", "signout")], SandboxLimits::default()).unwrap();
    let result = rules.process(Texts::first(&texts), &mut b).unwrap();
    assert_eq!(result.closed.len(), 1);
    let refused = load("logout_rules", &[("logout_page", "")], SandboxLimits::default());
    assert!(matches!(refused, Err(RulesError::Refused(m)) if m.contains("logout_page")));
}

/// A fault, then a clean batch: the failed call reports what happened and the
/// runtime rebuilds its instance, with the text table sent again.
fn fault_then_recover(fault: &str, limits: SandboxLimits) -> RulesError {
    let mut rules = load("faulty", &[("fault", fault)], limits).unwrap();
    let (texts, mut boom) = batch(&[(0, Some(0)), (MIN, Some(2))], 3);
    let error = rules.process(Texts::first(&texts), &mut boom).unwrap_err();
    let (texts, mut clean) = batch(&[(0, Some(0)), (MIN, Some(1))], 3);
    let result = rules.process(Texts::first(&texts), &mut clean).unwrap();
    assert_eq!(result.closed.len(), 1);
    assert_eq!(result.closed[0].pages, [0, 1]);
    error
}

#[test]
fn a_trapping_plugin_is_reported_and_its_instance_rebuilt() {
    let error = fault_then_recover("trap", SandboxLimits::default());
    assert!(matches!(&error, RulesError::Trapped(_)), "{error}");
}

#[test]
fn a_looping_plugin_is_interrupted_at_its_time_budget() {
    let limits = SandboxLimits { call_timeout: Duration::from_millis(200), ..Default::default() };
    let error = fault_then_recover("loop", limits);
    assert!(matches!(error, RulesError::Timeout(_)), "{error}");
}

#[test]
fn a_plugin_cannot_grow_past_its_memory_limit() {
    let limits = SandboxLimits { memory_bytes: 16 << 20, ..Default::default() };
    let error = fault_then_recover("oom", limits);
    assert!(matches!(error, RulesError::OutOfMemory(16)), "{error}");
}

/// A runtime whose garbage outlives its calls (a lagging collector) grows
/// with every batch; the host replaces an instance that holds more than half
/// its limit before the next call, so such rules run on any length of input.
#[test]
fn an_instance_that_keeps_growing_is_replaced_before_it_meets_its_limit() {
    let limits = SandboxLimits { memory_bytes: 16 << 20, ..Default::default() };
    let mut rules = load("faulty", &[("fault", "leak")], limits).unwrap();
    // Each batch keeps 3 MiB for good: 30 batches keep 90 MiB.
    for _ in 0..30 {
        let (texts, mut b) =
            batch(&[(0, Some(0)), (MIN, Some(2)), (2 * MIN, Some(2)), (3 * MIN, Some(2))], 3);
        let result = rules.process(Texts::first(&texts), &mut b).unwrap();
        assert_eq!(result.closed.len(), 1);
        assert_eq!(result.closed[0].pages, [0, 2]);
        assert_eq!(result.closed[0].event_count, 4);
    }
}

#[test]
fn bytes_that_are_not_a_rules_component_are_refused() {
    let loader = Arc::new(ComponentLoader::new().unwrap());
    let error =
        loader.load(b"\0asm\x01\0\0\0", &settings(&[]), SandboxLimits::default()).err().unwrap();
    assert!(matches!(error, RulesError::Invalid(_)), "{error}");
    let error = loader.load(b"hello", &settings(&[]), SandboxLimits::default()).err().unwrap();
    assert!(error.to_string().starts_with("not a Sessionize rules component"), "{error}");
}

#[test]
fn the_rules_slot_swaps_refuses_and_rolls_back_within_its_reserve() {
    let loader = Arc::new(ComponentLoader::new().unwrap());
    let load = |name: &str, params: &[(&str, &str)]| {
        loader
            .load_file(&component_path(name), &settings(params), SandboxLimits::default())
            .unwrap()
    };
    let mut slot = RulesSlot::new(load("default_rules", &[]));
    let default_version = slot.rule_version().to_owned();
    let (texts, sample) = batch(&[(0, Some(0)), (MIN, Some(2))], 3);

    // A candidate that fails the dry run is refused; the running rules stay.
    let refused = slot.deploy(
        load("faulty", &[("fault", "trap")]),
        Texts::first(&texts),
        Some(Sample { batch: &sample, fields: &[] }),
    );
    assert!(matches!(refused, Err(RulesError::Refused(ref m)) if m.contains("dry run")));
    assert_eq!(slot.rule_version(), default_version);

    // Twelve swaps: only the last eight versions are kept for rollback.
    for i in 0..12 {
        let name = if i % 2 == 0 { "logout_rules" } else { "default_rules" };
        slot.deploy(
            load(name, &[]),
            Texts::first(&texts),
            Some(Sample { batch: &sample, fields: &[] }),
        )
        .unwrap();
    }
    for _ in 0..8 {
        slot.rollback(None).unwrap();
    }
    assert!(slot.rollback(None).is_err(), "a ninth rollback has nothing to go back to");
    // After rolling back, the version in force still cuts sessions.
    let (texts, mut b) = batch(&[(0, Some(0)), (MIN, Some(1))], 3);
    assert_eq!(slot.process(Texts::first(&texts), &mut b).unwrap().closed.len(), 1);

    let history: Vec<_> = slot.history().collect();
    assert_eq!(history.first().unwrap().action, "started");
    assert_eq!(history.iter().filter(|e| e.action == "refused").count(), 1);
    let swaps: Vec<_> =
        history.iter().filter(|e| e.action == "deployed" || e.action == "rolled back").collect();
    assert_eq!(swaps.len(), 20);
    assert!(swaps.iter().all(|e| e.pause_us.is_some()), "every swap records its pause");
}

// The host does not trust what a plugin returns: each rule of the contract
// broken by `faulty` (on the user with a `boom` event) is refused, naming the
// rule and the user, and the batch is left as it was.

const TEXTS: [&str; 4] = ["home", "logout", "boom", "signout"];

/// Two users with two events each, the second on `boom` last. Without
/// `end_of_input` the watermark stays before their sessions expire, so both
/// stay open.
fn boom_batch(end_of_input: bool) -> (Vec<Arc<str>>, Batch) {
    let texts = TEXTS.iter().map(|t| Arc::from(*t)).collect();
    let event = |timestamp_ms, page| Event {
        timestamp_ms,
        page_name: Some(page),
        event_name: None,
        event_type: None,
    };
    let batch = Batch {
        new_texts: vec![],
        watermark: 2 * MIN,
        end_of_input,
        users: vec![
            UserSlice { state: None, event_count: 2 },
            UserSlice { state: None, event_count: 2 },
        ],
        events: vec![event(0, 0), event(MIN, 0), event(0, 0), event(MIN, 2)],
        fields: vec![],
    };
    (texts, batch)
}

/// What `faulty` with `fault` answers to [`boom_batch`]: it must be a contract
/// fault naming `rule` and `user`; the batch must come back unchanged, and
/// the same instance must still process a clean batch.
fn assert_refused(fault: &str, end_of_input: bool, rule: &str, user: Option<u32>) {
    let mut rules = load("faulty", &[("fault", fault)], SandboxLimits::default()).unwrap();
    let (texts, mut boom) = boom_batch(end_of_input);
    let before = boom.clone();
    let error = rules.process(Texts::first(&texts), &mut boom).unwrap_err();
    let RulesError::Contract(message) = &error else {
        panic!("fault {fault}: {error} is not a contract fault")
    };
    assert!(message.contains(&format!("rule {rule}")), "fault {fault}: {message}");
    if let Some(user) = user {
        assert!(message.contains(&format!("user {user}")), "fault {fault}: {message}");
    }
    // (but for the texts the runtime filled in for the instance)
    let left = Batch { new_texts: vec![], ..boom.clone() };
    assert_eq!(left, before, "fault {fault}: a refused batch is left as it was");
    // A retry sees the same batch (the instance's text table did not fall
    // out of step with the host's) and is refused the same way.
    let again = rules.process(Texts::first(&texts), &mut boom).unwrap_err();
    assert_eq!(again.to_string(), error.to_string(), "fault {fault}");

    let (texts, mut clean) = batch(&[(0, Some(0)), (MIN, Some(1))], TEXTS.len());
    let result = rules.process(Texts::first(&texts), &mut clean).unwrap();
    assert_eq!(result.closed.len(), 1);
    assert_eq!(result.closed[0].pages, [0, 1], "fault {fault}: the text table stays in step");
}

#[test]
fn an_answer_without_one_outcome_per_user_is_refused() {
    assert_refused("missing-outcome", true, "outcome-count", None);
}

#[test]
fn a_session_closed_for_a_user_not_in_the_batch_is_refused() {
    assert_refused("foreign-user", true, "foreign-user", Some(2));
}

#[test]
fn a_session_without_events_is_refused() {
    assert_refused("empty-session", true, "empty-session", Some(1));
}

#[test]
fn a_session_that_ends_before_it_starts_is_refused() {
    assert_refused("end-before-start", true, "end-before-start", Some(1));
}

#[test]
fn a_session_outside_its_users_events_is_refused() {
    assert_refused("outside-events", true, "outside-events", Some(1));
}

#[test]
fn overlapping_sessions_of_one_user_are_refused() {
    assert_refused("overlap", true, "overlapping-sessions", Some(1));
}

#[test]
fn an_answer_that_loses_events_is_refused() {
    assert_refused("lose-events", true, "events-conserved", Some(1));
}

#[test]
fn a_wake_up_at_or_before_the_watermark_is_refused() {
    assert_refused("past-wake", false, "wake-after-watermark", Some(1));
}

#[test]
fn a_session_left_open_at_the_end_of_input_is_refused() {
    assert_refused("keep-open", true, "open-at-end-of-input", Some(1));
}

#[test]
fn oversized_session_data_is_refused() {
    assert_refused("huge-data", false, "data-size", Some(1));
}

#[test]
fn a_page_the_user_never_visited_is_refused() {
    assert_refused("foreign-page", true, "foreign-page", Some(1));
}

#[test]
fn a_page_listed_twice_in_one_session_is_refused() {
    assert_refused("repeated-page", true, "repeated-page", Some(1));
}

#[test]
fn an_oversized_or_multi_line_end_reason_is_refused() {
    assert_refused("long-reason", true, "end-reason", Some(1));
}

#[test]
fn a_plugin_whose_name_or_version_is_unfit_for_a_rule_version_is_refused_at_load() {
    for (fault, rule) in [("long-name", "plugin-name"), ("bad-version", "plugin-version")] {
        let error = load("faulty", &[("fault", fault)], SandboxLimits::default()).err().unwrap();
        let RulesError::Contract(message) = &error else { panic!("fault {fault}: {error}") };
        assert!(message.contains(&format!("rule {rule}")), "fault {fault}: {message}");
        assert!(message.len() < 500, "the message quotes a bounded part: {message}");
    }
}

#[test]
fn a_dry_run_refuses_a_candidate_that_breaks_the_contract() {
    let loader = Arc::new(ComponentLoader::new().unwrap());
    let load = |name: &str, params: &[(&str, &str)]| {
        loader
            .load_file(&component_path(name), &settings(params), SandboxLimits::default())
            .unwrap()
    };
    let mut slot = RulesSlot::new(load("default_rules", &[]));
    let (texts, sample) = boom_batch(true);
    let refused = slot.deploy(
        load("faulty", &[("fault", "lose-events")]),
        Texts::first(&texts),
        Some(Sample { batch: &sample, fields: &[] }),
    );
    let Err(RulesError::Refused(message)) = refused else { panic!("{refused:?}") };
    assert!(message.contains("dry run") && message.contains("rule events-conserved"), "{message}");
    assert!(slot.rule_version().starts_with("default-rules@"), "{}", slot.rule_version());
}

fn event_line(uuid: &str, id: u32, at: i64, page: &str) -> String {
    format!(r#"{{"uuid":"{uuid}","event_id":"{id}","event_timestamp":{at},"page_name":"{page}"}}"#)
}

#[test]
fn a_refused_batch_is_never_applied_stays_queued_and_is_retried() {
    let mut faulty = load("faulty", &[("fault", "lose-events")], SandboxLimits::default()).unwrap();
    let mut engine = Engine::new(EngineConfig::default());
    for line in [
        event_line("alice", 1, 0, "home"),
        event_line("bob", 2, 0, "home"),
        event_line("bob", 3, MIN, "boom"),
    ] {
        engine.offer(0, &parse(line.as_bytes()).unwrap());
    }
    for _ in 0..2 {
        let error = engine.advance(&mut faulty, true).unwrap_err();
        assert!(error.to_string().contains("rule events-conserved"), "{error}");
        assert!(matches!(engine.take_changes(), Err(EngineError::Busy)), "the batch stays queued");
    }
    // Rules that keep the contract get the same batch: nothing was lost.
    let mut good = load("default_rules", &[], SandboxLimits::default()).unwrap();
    let rows = engine.advance(&mut good, true).unwrap();
    let mut counts: Vec<_> = rows.iter().map(|r| (r.uuid.as_str(), r.event_count)).collect();
    counts.sort();
    assert_eq!(counts, [("alice", 1), ("bob", 2)]);
}

/// What the test input holds for one user: accepted events and their times
/// and pages (copies included, since the earliest copy's time is kept).
#[derive(Default)]
struct UserInput {
    accepted: u32,
    first_ms: i64,
    last_ms: i64,
    pages: std::collections::HashSet<String>,
}

/// Every rule of the contract, seen from the rows: what the table would hold.
fn assert_valid_rows(rows: &[SessionRow], input: &std::collections::HashMap<String, UserInput>) {
    let mut by_user: std::collections::HashMap<&str, Vec<&SessionRow>> = Default::default();
    for row in rows {
        let user = &input[&row.uuid];
        assert!(row.rule_version.starts_with("chaos@"), "{row:?}");
        assert!(row.event_count >= 1, "{row:?}");
        assert!(row.start_ms <= row.end_ms, "{row:?}");
        assert!(user.first_ms <= row.start_ms && row.end_ms <= user.last_ms, "{row:?}");
        let distinct: std::collections::HashSet<_> = row.pages.iter().collect();
        assert_eq!(distinct.len(), row.pages.len(), "{row:?}");
        assert!(row.pages.iter().all(|p| user.pages.contains(&**p)), "{row:?}");
        let reason = &row.end_reason;
        assert!(!reason.is_empty() && reason.len() <= 64, "{row:?}");
        assert!(!reason.chars().any(char::is_control), "{row:?}");
        by_user.entry(&row.uuid).or_default().push(row);
    }
    for (uuid, user) in input {
        let mut sessions = by_user.remove(uuid.as_str()).unwrap_or_default();
        let events: u32 = sessions.iter().map(|r| r.event_count).sum();
        assert_eq!(events, user.accepted, "{uuid}: every accepted event in exactly one session");
        sessions.sort_by_key(|r| (r.start_ms, r.end_ms));
        for pair in sessions.windows(2) {
            assert!(pair[0].end_ms <= pair[1].start_ms, "{uuid}: {pair:?}");
        }
    }
}

#[test]
fn random_answers_never_make_the_host_panic_or_write_an_invalid_row() {
    let config = GeneratorConfig {
        num_users: 25,
        rate: 0.5,
        duration_s: 3 * 3600,
        malformed_rate: 0.0,
        ..GeneratorConfig::sample()
    };
    let mut lines = Vec::new();
    generate(&config, &mut lines).unwrap();
    let loader = Arc::new(ComponentLoader::new().unwrap());
    let (mut calls, mut batches, mut refused, mut written) = (0u64, 0u64, 0u64, 0usize);
    for seed in 0..24 {
        let seed = seed.to_string();
        let mut chaos = loader
            .load_file(
                &component_path("chaos"),
                &settings(&[("seed", &seed)]),
                SandboxLimits::default(),
            )
            .unwrap();
        let mut engine = Engine::new(EngineConfig::default());
        let mut input: std::collections::HashMap<String, UserInput> = Default::default();
        let mut rows = Vec::new();
        let mut advance = |engine: &mut Engine, end_of_input: bool, rows: &mut Vec<SessionRow>| {
            calls += 1;
            match engine.advance(&mut chaos, end_of_input) {
                Ok(closed) => {
                    rows.extend(closed);
                    true
                }
                Err(EngineError::Rules(RulesError::Contract(_))) => {
                    refused += 1;
                    false
                }
                Err(EngineError::Rules(RulesError::Failed(_))) => false,
                Err(other) => panic!("seed {seed}: {other}"),
            }
        };
        for (i, line) in lines.split(|&b| b == b'\n').enumerate() {
            let Ok(event) = parse(line) else { continue };
            let admission = engine.offer(0, &event);
            if !matches!(admission, Admission::Late { .. }) {
                let user = input.entry(event.uuid.to_string()).or_insert_with(|| UserInput {
                    first_ms: i64::MAX,
                    last_ms: i64::MIN,
                    ..UserInput::default()
                });
                user.accepted += u32::from(admission == Admission::Accepted);
                user.first_ms = user.first_ms.min(event.timestamp_ms);
                user.last_ms = user.last_ms.max(event.timestamp_ms);
                user.pages.extend(event.page_name.as_deref().map(str::to_owned));
            }
            if i % 100 == 99 {
                advance(&mut engine, false, &mut rows);
            }
        }
        let mut attempts = 0;
        while !advance(&mut engine, true, &mut rows) {
            attempts += 1;
            assert!(attempts < 1_000, "seed {seed}: the end of input never got through");
        }
        assert_valid_rows(&rows, &input);
        written += rows.len();
        batches += engine.stats().plugin_calls;
    }
    eprintln!(
        "{batches} batches in {calls} advances, {refused} refused, {written} sessions written"
    );
    assert!(batches >= 500, "{batches} batches");
    assert!(refused * 4 >= calls, "most batches are refused: {refused} of {calls}");
    assert!(written > 1_000, "yet sessions are written: {written}");
}

/// The plugin's lines that reached the host log (events with a `plugin` field).
#[derive(Clone, Default)]
struct PluginLog(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PluginLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Line {
            message: String,
            from_plugin: bool,
        }
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "plugin" => self.from_plugin = true,
                    _ => {}
                }
            }
        }
        let mut line = Line::default();
        event.record(&mut line);
        if line.from_plugin {
            self.0.lock().unwrap().push(line.message);
        }
    }
}

#[test]
fn a_log_flood_is_cut_to_a_budget_per_call_and_counted() {
    use tracing_subscriber::layer::SubscriberExt;
    // The host passes on 100 lines per call (`log` and stdout together), at
    // most 1 KiB each.
    const PASSED: usize = 100;
    let log = PluginLog::default();
    let subscriber = tracing_subscriber::registry().with(log.clone());
    let dropped = tracing::subscriber::with_default(subscriber, || {
        let mut rules =
            load("faulty", &[("fault", "log-flood")], SandboxLimits::default()).unwrap();
        let (texts, mut boom) = boom_batch(true);
        // A flood is no fault: the answer is used.
        let result = rules.process(Texts::first(&texts), &mut boom).unwrap();
        assert_eq!(result.closed.len(), 2);
        rules.log_lines_dropped()
    });
    let lines = log.0.lock().unwrap();
    assert_eq!(lines.len(), PASSED + 1, "100 lines and one that counts the rest");
    assert!(lines.iter().all(|l| l.len() <= 1100), "lines are cut");
    let summary = lines.last().unwrap();
    // 10,000 log lines and 10,000 stdout lines (of which the sandbox kept
    // what fits in 64 KiB).
    assert!(dropped >= 10_000 - PASSED as u64, "{dropped} counted");
    assert!(summary.contains(&format!("logged {dropped} more lines")), "{summary}");
}

/// A component whose module defines a hundred memories: each within the
/// per-instance limit, a hundred times the limit together. Refused at load,
/// before anything of it runs.
#[test]
fn a_component_with_many_memories_is_refused() {
    use wasm_encoder::{
        Component, InstanceSection, MemorySection, MemoryType, Module, ModuleSection,
    };
    let mut memories = MemorySection::new();
    for _ in 0..100 {
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    let mut module = Module::new();
    module.section(&memories);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
    component.section(&instances);
    let loader = Arc::new(ComponentLoader::new().unwrap());
    let refused = loader.load(&component.finish(), &settings(&[]), SandboxLimits::default());
    let Err(RulesError::Invalid(why)) = refused else { panic!("not refused as invalid") };
    assert!(why.contains("100 memories"), "{why}");
}

/// The `.cwasm` entries in `dir`.
fn compiled_entries(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    entries.sort();
    entries
}

#[test]
fn a_restarted_loader_takes_compiled_components_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SandboxLimits::default();
    let loader =
        |dir: &std::path::Path| Arc::new(ComponentLoader::new().unwrap().keeping_compiled_in(dir));
    let default = std::fs::read(component_path("default_rules")).unwrap();
    let logout = std::fs::read(component_path("logout_rules")).unwrap();
    let first = loader(dir.path());
    first.load(&default, &settings(&[]), limits).unwrap();
    let default_entry = compiled_entries(dir.path());
    assert_eq!(default_entry.len(), 1, "the compiled default rules are kept");
    first.load(&logout, &settings(&[]), limits).unwrap();
    let both = compiled_entries(dir.path());
    let logout_entry = both.iter().find(|p| **p != default_entry[0]).unwrap().clone();

    // The default rules' entry now holds the logout rules: a loader that
    // compiled the bytes it is given would not notice.
    std::fs::copy(&logout_entry, &default_entry[0]).unwrap();
    let restarted = loader(dir.path());
    let taken = restarted.load(&default, &settings(&[]), limits).unwrap();
    assert!(taken.rule_version().starts_with("logout"), "{}", taken.rule_version());

    // A damaged entry is compiled again, from the bytes given.
    let mut damaged = std::fs::read(&default_entry[0]).unwrap();
    damaged.truncate(damaged.len() / 2);
    std::fs::write(&default_entry[0], damaged).unwrap();
    let mut compiled = loader(dir.path()).load(&default, &settings(&[]), limits).unwrap();
    assert!(compiled.rule_version().starts_with("default"), "{}", compiled.rule_version());
    let mut lines = Vec::new();
    generate(&GeneratorConfig::sample(), &mut lines).unwrap();
    let mut native = NativeRules::<DefaultRules>::new("default-rules", &settings(&[])).unwrap();
    assert_eq!(
        without_version(&sessionize(&lines, &mut compiled)),
        without_version(&sessionize(&lines, &mut native))
    );
}
