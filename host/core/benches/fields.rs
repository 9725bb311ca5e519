//! Benchmark: what declared event fields (contract 0.2) cost per event, from
//! the record to the engine: parsing into a block (where the fields are
//! found) and offering to the engine (where strings are interned), with no
//! field, one, and four declared.
//!
//!     cargo bench -p sessionize-core --bench fields

use std::sync::Arc;
use std::time::Instant;

use sessionize_core::engine::{Engine, EngineConfig};
use sessionize_core::event::{BlockRecord, EventBlock, EventLimits, FieldPaths};
use sessionize_core::rules::contract::{EventField, FieldType};

/// Records shaped like the generator's, with a booking's details on some.
fn records(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let booking = if i % 10 == 0 {
                format!(r#","booking_details":{{"booking_id":"b{i}","amount":{}.5,"currency":"EUR"}}"#, i % 900)
            } else {
                String::new()
            };
            format!(
                r#"{{"uuid":"user-{:06}","event_id":"e{i:012}","event_timestamp":{},"page_name":"page-{}","event_details":{{"event_name":"click","event_type":"interaction","event_value":{}}}{booking}}}"#,
                i % 50_000,
                1_735_689_600_000 + i as i64 * 10,
                i % 14,
                i % 1000
            )
        })
        .collect()
}

/// Nanoseconds per record to parse into blocks and offer to an engine.
fn ns_per_event(lines: &[String], fields: &[EventField]) -> f64 {
    let paths = Arc::new(FieldPaths::new(fields));
    let mut engine = Engine::new(EngineConfig::default());
    engine.declare_fields(fields);
    let started = Instant::now();
    let mut parsing = std::time::Duration::ZERO;
    for chunk in lines.chunks(8192) {
        let parse = Instant::now();
        let mut block =
            EventBlock::new(chunk.len(), EventLimits::default()).with_fields(paths.clone());
        for (i, line) in chunk.iter().enumerate() {
            block.push(0, i as i64, line.as_bytes());
        }
        parsing += parse.elapsed();
        for record in block.records() {
            if let BlockRecord::Event(partition, _, _, event, fields) = record {
                engine.offer_with_fields(partition as usize, &event, Some(fields));
            }
        }
    }
    if std::env::var_os("BENCH_SPLIT").is_some() {
        println!(
            "    parse {:.0} ns, offer {:.0} ns per event",
            parsing.as_nanos() as f64 / lines.len() as f64,
            (started.elapsed() - parsing).as_nanos() as f64 / lines.len() as f64
        );
    }
    started.elapsed().as_nanos() as f64 / lines.len() as f64
}

fn main() {
    let n: usize =
        std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(500_000);
    let lines = records(n);
    let field = |path: &str, field_type| EventField { path: path.into(), field_type };
    let one = [field("event_details.event_value", FieldType::Float)];
    let four = [
        field("event_details.event_value", FieldType::Float),
        field("booking_details.booking_id", FieldType::String),
        field("booking_details.amount", FieldType::Float),
        field("booking_details.currency", FieldType::String),
    ];
    // Best of three, to see past the machine's noise.
    let best = |fields: &[EventField]| {
        (0..3).map(|_| ns_per_event(&lines, fields)).fold(f64::MAX, f64::min)
    };
    let (none, one_ns, four_ns) = (best(&[]), best(&one), best(&four));
    println!("{n} events, parse + offer, best of 3:");
    println!("  no declared field:    {none:.0} ns per event");
    println!("  one (a number):       {one_ns:.0} ns per event (+{:.0})", one_ns - none);
    println!(
        "  four (2 numbers, 2 strings): {four_ns:.0} ns per event (+{:.0}, {:+.1}%)",
        four_ns - none,
        (four_ns / none - 1.0) * 100.0
    );
}
