//! The lifecycle over rules compiled into the host: no wasm needed to see a
//! candidate refused by its dry run, a rollback after failures, and the answers.

use std::sync::{mpsc, Arc};

use default_rules::DefaultRules;

use super::*;

/// A deadline no test reaches.
const LONG: Duration = Duration::from_secs(300);
use crate::rules::contract::{
    AttributeType, Batch, BatchResult, Declarations, Event, SessionAttribute, Settings, UserSlice,
};
use sessionize_native::NativeRules;

/// Rules that fail every batch.
struct Failing;

impl RulesRuntime for Failing {
    fn rule_version(&self) -> &str {
        "failing@1"
    }

    fn process(&mut self, _: Texts<'_>, _: &mut Batch) -> Result<BatchResult, RulesError> {
        Err(RulesError::Failed("always".into()))
    }
}

fn native(name: &str) -> NativeRules<DefaultRules> {
    let settings =
        Settings { inactivity_timeout_ms: 1_800_000, max_duration_ms: 7_200_000, params: vec![] };
    NativeRules::new(name, &settings).unwrap()
}

fn sample() -> (Vec<Arc<str>>, Batch) {
    let event =
        |t| Event { timestamp_ms: t, page_name: Some(0), event_name: None, event_type: None };
    let batch = Batch {
        new_texts: vec![],
        watermark: 0,
        end_of_input: false,
        users: vec![UserSlice { state: None, event_count: 2 }],
        events: vec![event(0), event(60_000)],
        fields: vec![],
    };
    (vec![Arc::from("home")], batch)
}

#[test]
fn a_candidate_that_fails_its_dry_run_is_refused_and_the_rules_stay() {
    let mut slot = RulesSlot::new(native("first"));
    let (texts, sample) = sample();
    let refused =
        slot.deploy(Failing, Texts::first(&texts), Some(Sample { batch: &sample, fields: &[] }));
    assert!(matches!(refused, Err(RulesError::Refused(ref m)) if m.contains("dry run")));
    assert_eq!(slot.rule_version(), "first+native");
    slot.deploy(
        native("second"),
        Texts::first(&texts),
        Some(Sample { batch: &sample, fields: &[] }),
    )
    .unwrap();
    assert_eq!(slot.rule_version(), "second+native");
    let actions: Vec<_> = slot.history().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["started", "refused", "deployed"]);
}

#[test]
fn repeated_failures_roll_back_to_the_previous_rules_while_there_are_any() {
    let mut lifecycle = RulesLifecycle::new(RulesSlot::new(native("first")));
    let (texts, sample) = sample();
    // Without a sample there is no dry run: the failing rules get in.
    lifecycle.rules().deploy(Failing, Texts::first(&texts), None).unwrap();
    assert!(lifecycle.rules().process(Texts::first(&texts), &mut sample.clone()).is_err());
    assert_eq!(lifecycle.roll_back_after_failure("always".into()).as_deref(), Some("first+native"));
    assert!(lifecycle.rules().process(Texts::first(&texts), &mut sample.clone()).is_ok());
    assert_eq!(lifecycle.roll_back_after_failure("again".into()), None, "nothing older");
}

#[test]
fn a_requested_rollback_waits_for_the_boundary_and_is_answered_there() {
    let mut slot = RulesSlot::new(native("first"));
    slot.resume(native("second"));
    let (requests_tx, requests) = mpsc::channel();
    let mut lifecycle = RulesLifecycle::new(slot).accepting(requests);
    let (request, answer) = RulesRequest::new(RulesAction::Rollback, LONG);
    requests_tx.send(request).unwrap();
    lifecycle.serve_requests(0, 0);
    assert_eq!(lifecycle.rule_version(), "second+native", "not before the boundary");
    let change = next_change(&mut lifecycle);
    assert_eq!(change.compile_time(), None);
    let (texts, sample) = sample();
    assert!(lifecycle
        .apply(change, Texts::first(&texts), Some(Sample { batch: &sample, fields: &[] }))
        .is_some());
    assert_eq!(lifecycle.rule_version(), "first+native");
    assert_eq!(answer.blocking_recv().unwrap().unwrap()["active"], "first+native");
}

/// A built component from `guest/dist` (built by `guest/build.sh`).
fn component(name: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest/dist")
        .join(format!("{name}.wasm"));
    assert!(path.exists(), "{} missing: run guest/build.sh", path.display());
    path
}

/// The next change the compile thread hands on, waiting for it.
fn next_change(lifecycle: &mut RulesLifecycle) -> Change {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(change) = lifecycle.next_change() {
            return change;
        }
        assert!(Instant::now() < deadline, "no change ready in time");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Applies changes as the event loop does at successive boundaries until
/// `count` were applied.
fn apply_changes(lifecycle: &mut RulesLifecycle, count: usize) {
    let (texts, sample) = sample();
    for _ in 0..count {
        let change = next_change(lifecycle);
        lifecycle.apply(change, Texts::first(&texts), Some(Sample { batch: &sample, fields: &[] }));
    }
}

/// A lifecycle over native `first` rules that takes deploys.
fn taking_deploys() -> (RulesLifecycle, mpsc::Sender<RulesRequest>) {
    let settings =
        Settings { inactivity_timeout_ms: 1_800_000, max_duration_ms: 7_200_000, params: vec![] };
    let loader = RulesLoader::new(
        Arc::new(crate::rules::ComponentLoader::new().unwrap()),
        settings,
        crate::rules::SandboxLimits::default(),
    );
    let (requests_tx, requests) = mpsc::channel();
    let lifecycle = RulesLifecycle::new(RulesSlot::new(native("first")))
        .accepting(requests)
        .loading_with(loader);
    (lifecycle, requests_tx)
}

fn deploy_file(name: &str) -> RulesAction {
    RulesAction::Deploy(Candidate::File(component(name)))
}

#[test]
fn a_deploy_then_a_rollback_are_applied_in_that_order() {
    let (mut lifecycle, requests_tx) = taking_deploys();
    let (request, deployed) = RulesRequest::new(deploy_file("logout_rules"), LONG);
    requests_tx.send(request).unwrap();
    let (request, rolled_back) = RulesRequest::new(RulesAction::Rollback, LONG);
    requests_tx.send(request).unwrap();
    lifecycle.serve_requests(0, 0);
    apply_changes(&mut lifecycle, 2);
    let deployed = deployed.blocking_recv().unwrap().expect("the deploy is applied");
    assert!(deployed["active"].as_str().unwrap().starts_with("logout-rules@"), "{deployed}");
    let rolled_back = rolled_back.blocking_recv().unwrap().expect("then the rollback");
    assert_eq!(rolled_back["active"], "first+native");
    assert_eq!(lifecycle.rule_version(), "first+native");
}

#[test]
fn a_request_past_its_deadline_is_answered_as_not_applied() {
    let (mut lifecycle, requests_tx) = taking_deploys();
    let (request, deployed) = RulesRequest::new(deploy_file("logout_rules"), LONG);
    requests_tx.send(request).unwrap();
    let (request, rolled_back) = RulesRequest::new(RulesAction::Rollback, Duration::ZERO);
    requests_tx.send(request).unwrap();
    lifecycle.serve_requests(0, 0);
    std::thread::sleep(Duration::from_millis(5));
    apply_changes(&mut lifecycle, 2);
    assert!(deployed.blocking_recv().unwrap().is_ok());
    match rolled_back.blocking_recv().unwrap() {
        Err(Refusal::TimedOut(why)) => assert!(why.contains("not applied"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(lifecycle.rule_version().starts_with("logout-rules@"), "the rollback did not land");
}

#[test]
fn a_request_whose_asker_stopped_waiting_is_not_applied() {
    let (mut lifecycle, requests_tx) = taking_deploys();
    let (request, deployed) = RulesRequest::new(deploy_file("logout_rules"), LONG);
    requests_tx.send(request).unwrap();
    let (request, rolled_back) = RulesRequest::new(RulesAction::Rollback, LONG);
    requests_tx.send(request).unwrap();
    lifecycle.serve_requests(0, 0);
    drop(deployed);
    // The deploy is skipped before or after compiling, depending on timing;
    // either way the rollback behind it comes next and finds nothing deployed.
    let (texts, sample) = sample();
    loop {
        let change = next_change(&mut lifecycle);
        let is_rollback = change.compile_time().is_none();
        lifecycle.apply(change, Texts::first(&texts), Some(Sample { batch: &sample, fields: &[] }));
        if is_rollback {
            break;
        }
    }
    assert_eq!(lifecycle.rule_version(), "first+native");
    assert!(rolled_back.blocking_recv().unwrap().is_err(), "nothing was deployed to roll back");
}

#[test]
fn a_watched_file_that_is_not_a_regular_file_is_refused_with_the_reason() {
    let (mut lifecycle, requests_tx) = taking_deploys();
    let action = RulesAction::Deploy(Candidate::File("/dev/zero".into()));
    let (request, answer) = RulesRequest::new(action, LONG);
    requests_tx.send(request).unwrap();
    lifecycle.serve_requests(0, 0);
    apply_changes(&mut lifecycle, 1);
    let why = answer.blocking_recv().unwrap().unwrap_err().to_string();
    assert!(why.contains("/dev/zero refused") && why.contains("not a regular file"), "{why}");
    assert_eq!(lifecycle.rule_version(), "first+native");
}

/// Rules that declare one attribute and are never called.
struct Declaring(&'static str, crate::rules::contract::Declarations);

impl Declaring {
    fn new(version: &'static str, name: &str, attribute_type: AttributeType) -> Self {
        let attribute = SessionAttribute { name: name.into(), attribute_type, doc: String::new() };
        Self(version, Declarations { fields: vec![], attributes: vec![attribute] })
    }
}

impl RulesRuntime for Declaring {
    fn rule_version(&self) -> &str {
        self.0
    }

    fn declarations(&self) -> &Declarations {
        &self.1
    }

    fn process(&mut self, _: Texts<'_>, _: &mut Batch) -> Result<BatchResult, RulesError> {
        Err(RulesError::Failed("not called".into()))
    }
}

#[test]
fn an_attribute_cannot_change_type_while_a_kept_version_writes_it() {
    // Two deploys before the first's columns reach the table: the table
    // cannot tell, the versions kept can.
    let mut slot = RulesSlot::new(native("first"));
    let long = Declaring::new("a@1", "x", AttributeType::Long);
    slot.deploy(long, Texts::first(&[]), None).unwrap();
    let double = Declaring::new("b@1", "x", AttributeType::Double);
    assert_eq!(
        slot.attribute_conflict(&double.declarations().attributes).as_deref(),
        Some(
            "attribute x is a double, but a@1 (in force or kept for rollback) writes it as a \
             long; name the attribute otherwise"
        )
    );
    let same = Declaring::new("c@1", "x", AttributeType::Long);
    assert_eq!(slot.attribute_conflict(&same.declarations().attributes), None);
}
