//! The real components built from `guest/` (run `guest/build.sh` first; the test
//! script does) against the same rules compiled natively, and the sandbox.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use default_rules::DefaultRules;
use sessionize::engine::{Engine, EngineConfig};
use sessionize::event::parse;
use sessionize::rules::contract::{Batch, Event, Settings, UserSlice};
use sessionize::rules::lifecycle::RulesSlot;
use sessionize::rules::{
    ComponentLoader, ComponentRules, NativeRules, RulesError, RulesRuntime, SandboxLimits,
};
use sessionize::sink::SessionRow;
use sessionize::tools::generate::{generate, GeneratorConfig};

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
    };
    (texts, batch)
}

#[test]
fn logout_rules_end_the_session_on_the_configured_page() {
    let mut rules = load("logout_rules", &[], SandboxLimits::default()).unwrap();
    let (texts, mut b) = batch(&[(0, Some(0)), (MIN, Some(1)), (2 * MIN, Some(0))], 4);
    let result = rules.process(&texts, &mut b).unwrap();
    let counts: Vec<_> = result.closed.iter().map(|c| c.event_count).collect();
    assert_eq!(counts, [2, 1]);
    assert!(
        matches!(&result.closed[0].end_reason, sessionize::rules::contract::EndReason::Custom(r) if r == "logout")
    );

    let mut rules =
        load("logout_rules", &[("logout_page", "signout")], SandboxLimits::default()).unwrap();
    let result = rules.process(&texts, &mut b).unwrap();
    assert_eq!(result.closed.len(), 1);
    let refused = load("logout_rules", &[("logout_page", "")], SandboxLimits::default());
    assert!(matches!(refused, Err(RulesError::Refused(m)) if m.contains("logout_page")));
}

/// A fault, then a clean batch: the failed call reports what happened and the
/// runtime rebuilds its instance, with the text table sent again.
fn fault_then_recover(fault: &str, limits: SandboxLimits) -> RulesError {
    let mut rules = load("faulty", &[("fault", fault)], limits).unwrap();
    let (texts, mut boom) = batch(&[(0, Some(0)), (MIN, Some(2))], 3);
    let error = rules.process(&texts, &mut boom).unwrap_err();
    let (texts, mut clean) = batch(&[(0, Some(0)), (MIN, Some(1))], 3);
    let result = rules.process(&texts, &mut clean).unwrap();
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
    let refused = slot.deploy(load("faulty", &[("fault", "trap")]), &texts, Some(&sample));
    assert!(matches!(refused, Err(RulesError::Refused(ref m)) if m.contains("dry run")));
    assert_eq!(slot.rule_version(), default_version);

    // Twelve swaps: only the last eight versions are kept for rollback.
    for i in 0..12 {
        let name = if i % 2 == 0 { "logout_rules" } else { "default_rules" };
        slot.deploy(load(name, &[]), &texts, Some(&sample)).unwrap();
    }
    for _ in 0..8 {
        slot.rollback(None).unwrap();
    }
    assert!(slot.rollback(None).is_err(), "a ninth rollback has nothing to go back to");
    // After rolling back, the version in force still cuts sessions.
    let (texts, mut b) = batch(&[(0, Some(0)), (MIN, Some(1))], 3);
    assert_eq!(slot.process(&texts, &mut b).unwrap().closed.len(), 1);

    let history: Vec<_> = slot.history().collect();
    assert_eq!(history.first().unwrap().action, "started");
    assert_eq!(history.iter().filter(|e| e.action == "refused").count(), 1);
    let swaps: Vec<_> =
        history.iter().filter(|e| e.action == "deployed" || e.action == "rolled back").collect();
    assert_eq!(swaps.len(), 20);
    assert!(swaps.iter().all(|e| e.pause_us.is_some()), "every swap records its pause");
}
