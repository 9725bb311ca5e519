//! A proptest-driven fuzz harness over what producers control: record parsing
//! and the engine's offer/advance. CI runs a bounded number of cases; a longer
//! run: `PROPTEST_CASES=200000 cargo test --release -p sessionize-core --test fuzz`.

use default_rules::DefaultRules;
use proptest::prelude::*;
use sessionize_core::engine::{Admission, Engine, EngineConfig};
use sessionize_core::event::{parse, Event, EventBlock, EventLimits};
use sessionize_core::rules::contract::Settings;
use sessionize_native::NativeRules;

const MIN: i64 = 60_000;

fn rules() -> NativeRules<DefaultRules> {
    let settings =
        Settings { inactivity_timeout_ms: 30 * MIN, max_duration_ms: 120 * MIN, params: vec![] };
    NativeRules::new("default-rules", &settings).unwrap()
}

/// JSON values of every kind, nested a little.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        "[0-9]{0,22}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof!["event_name", "event_type", "event_value", ".{0,6}"],
                inner,
                0..4
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Records shaped like events, with any value in any field.
fn event_like() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        "uuid",
        "event_id",
        "event_timestamp",
        "page_name",
        "event_details",
        "booking_details",
        ".{0,4}"
    ];
    prop::collection::btree_map(field, json_value(), 0..7)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()).to_string().into_bytes())
}

/// 512 cases unless `PROPTEST_CASES` asks for more (a fixed count would win
/// over the variable).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Any bytes: parsed or rejected, never a panic; a block gives back one
    /// record for each pushed, whatever its size.
    #[test]
    fn any_bytes_are_parsed_or_rejected(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
    ) {
        let limits = EventLimits { max_record_bytes: 200, ..EventLimits::default() };
        let mut block = EventBlock::new(records.len(), limits);
        for (i, record) in records.iter().enumerate() {
            let _ = parse(record);
            let _ = limits.parse(record);
            block.push(0, i as i64, record);
        }
        prop_assert_eq!(block.records().count(), records.len());
    }

    /// Event-shaped records: what is accepted honours the event's invariants
    /// and the limits; what is rejected says why.
    #[test]
    fn accepted_events_honour_the_invariants(record in event_like()) {
        let limits = EventLimits { max_record_bytes: 4096, max_uuid_bytes: 8, max_text_bytes: 10 };
        match limits.parse(&record) {
            Ok(event) => {
                prop_assert!(!event.uuid.is_empty() && event.uuid.len() <= 8);
                prop_assert!(event.timestamp_ms >= 0);
                for text in [&event.event_id, &event.page_name, &event.event_name, &event.event_type] {
                    prop_assert!(text.as_ref().is_none_or(|t| t.len() <= 10));
                }
            }
            Err(reason) => prop_assert!(!reason.to_string().is_empty()),
        }
    }

    /// Arbitrary events (any time, partition, id, page), offered and advanced in
    /// any rhythm: no panic, and every accepted event ends in exactly one session.
    #[test]
    fn every_accepted_event_ends_in_one_session(
        events in prop::collection::vec(
            (0..6u8, 0..3usize, prop_oneof![
                0..(10 * 24 * 60 * MIN),
                Just(0i64),
                (i64::MAX - 10 * 24 * 60 * MIN)..=i64::MAX,
            ], prop::option::of(0..20u8), prop::option::of(0..5u8), any::<bool>()),
            0..200,
        ),
        max_batch in 1usize..40,
        lateness in prop_oneof![Just(0i64), 1..(60 * MIN)],
    ) {
        let mut engine = Engine::new(EngineConfig { allowed_lateness_ms: lateness, max_batch_events: max_batch });
        engine.register_partitions(0..3);
        let mut rules = rules();
        let mut rows = Vec::new();
        let mut accepted = 0u64;
        for (user, partition, t, id, page, advance) in events {
            let uuid = format!("user{user}");
            let id = id.map(|i| format!("e{i}"));
            let page = page.map(|p| format!("https://p/{p}"));
            let event = Event {
                uuid: uuid.as_str().into(),
                event_id: id.as_deref().map(Into::into),
                timestamp_ms: t,
                page_name: page.as_deref().map(Into::into),
                event_name: None,
                event_type: None,
            };
            if engine.offer(partition, &event) == Admission::Accepted {
                accepted += 1;
            }
            if advance {
                rows.extend(engine.advance(&mut rules, false).unwrap());
            }
        }
        rows.extend(engine.advance(&mut rules, true).unwrap());
        prop_assert_eq!(rows.iter().map(|r| u64::from(r.event_count)).sum::<u64>(), accepted);
        for row in &rows {
            prop_assert!(row.start_ms <= row.end_ms, "{:?}", row);
        }
    }
}
