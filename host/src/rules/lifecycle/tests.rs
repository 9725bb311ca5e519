//! The lifecycle over rules compiled into the host: no wasm needed to see a
//! candidate refused by its dry run, a rollback after failures, and the answers.

use std::sync::{mpsc, Arc};

use default_rules::DefaultRules;

use super::*;
use crate::rules::contract::{BatchResult, Event, Settings, UserSlice};
use crate::rules::NativeRules;

/// Rules that fail every batch.
struct Failing;

impl RulesRuntime for Failing {
    fn rule_version(&self) -> &str {
        "failing@1"
    }

    fn process(&mut self, _: &[Arc<str>], _: &mut Batch) -> Result<BatchResult, RulesError> {
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
    };
    (vec![Arc::from("home")], batch)
}

#[test]
fn a_candidate_that_fails_its_dry_run_is_refused_and_the_rules_stay() {
    let mut slot = RulesSlot::new(native("first"));
    let (texts, sample) = sample();
    let refused = slot.deploy(Failing, &texts, Some(&sample));
    assert!(matches!(refused, Err(RulesError::Refused(ref m)) if m.contains("dry run")));
    assert_eq!(slot.rule_version(), "first+native");
    slot.deploy(native("second"), &texts, Some(&sample)).unwrap();
    assert_eq!(slot.rule_version(), "second+native");
    let actions: Vec<_> = slot.history().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["started", "refused", "deployed"]);
}

#[test]
fn repeated_failures_roll_back_to_the_previous_rules_while_there_are_any() {
    let mut lifecycle = RulesLifecycle::new(RulesSlot::new(native("first")));
    let (texts, sample) = sample();
    // Without a sample there is no dry run: the failing rules get in.
    lifecycle.rules().deploy(Failing, &texts, None).unwrap();
    assert!(lifecycle.rules().process(&texts, &mut sample.clone()).is_err());
    assert_eq!(lifecycle.roll_back_after_failure("always".into()).as_deref(), Some("first+native"));
    assert!(lifecycle.rules().process(&texts, &mut sample.clone()).is_ok());
    assert_eq!(lifecycle.roll_back_after_failure("again".into()), None, "nothing older");
}

#[test]
fn a_requested_rollback_waits_for_the_boundary_and_is_answered_there() {
    let mut slot = RulesSlot::new(native("first"));
    slot.resume(native("second"));
    let (requests_tx, requests) = mpsc::channel();
    let mut lifecycle = RulesLifecycle::new(slot).accepting(requests);
    let (reply, answer) = tokio::sync::oneshot::channel();
    requests_tx.send(RulesRequest { action: RulesAction::Rollback, reply }).unwrap();
    lifecycle.serve_requests(0, 0);
    assert_eq!(lifecycle.rule_version(), "second+native", "not before the boundary");
    let change = lifecycle.next_change().expect("the rollback is queued");
    assert_eq!(change.compile_time(), None);
    let (texts, sample) = sample();
    assert!(lifecycle.apply(change, &texts, Some(&sample)).is_some());
    assert_eq!(lifecycle.rule_version(), "first+native");
    assert_eq!(answer.blocking_recv().unwrap().unwrap()["active"], "first+native");
}
