//! Benchmark: one very hot user (a bot, an `anonymous` uuid) with many events
//! waiting for the watermark. Duplicate detection must stay O(1) per event:
//! the time per event should stay flat as the user's waiting events grow 10x.
//!
//!     cargo bench -p sessionize-core --bench hot_user

use std::time::Instant;

use sessionize_core::engine::{Admission, Engine, EngineConfig};
use sessionize_core::event::Event;

/// Offers `n` events of one user inside the lateness window (none released),
/// every tenth sent twice; returns nanoseconds per offered event.
fn ns_per_event(n: usize) -> f64 {
    let mut engine = Engine::new(EngineConfig::default());
    let ids: Vec<String> = (0..n).map(|i| format!("event-{i}")).collect();
    let started = Instant::now();
    let mut offered = 0u64;
    let mut duplicates = 0u64;
    for (i, id) in ids.iter().enumerate() {
        let event = Event {
            uuid: "anonymous".into(),
            event_id: Some(id.as_str().into()),
            // 1 ms apart: up to 600,000 events stay inside the 10-minute lateness.
            timestamp_ms: 1_700_000_000_000 + i as i64,
            page_name: Some("home".into()),
            event_name: None,
            event_type: None,
        };
        engine.offer(0, &event);
        offered += 1;
        if i % 10 == 0 {
            duplicates += u64::from(engine.offer(0, &event) == Admission::Duplicate);
            offered += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(duplicates, n.div_ceil(10) as u64, "every resent event is a duplicate");
    elapsed.as_nanos() as f64 / offered as f64
}

fn main() {
    let large: usize =
        std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let small = large / 10;
    let (small_ns, large_ns) = (ns_per_event(small), ns_per_event(large));
    println!("one user, {small} waiting events: {small_ns:.0} ns per event");
    println!(
        "one user, {large} waiting events: {large_ns:.0} ns per event ({:.1}x)",
        large_ns / small_ns
    );
}
