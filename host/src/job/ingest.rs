//! The ingest step both runs share: a block of parsed records into the engine,
//! and every record that is not accepted into the dead letters with its reason.

use std::time::Duration;

use crate::engine::{Admission, Engine};
use crate::event::{BlockRecord, Event, EventBlock, EventLimits, Fields, UserSplit};
use crate::sink::RejectedEvent;

/// What the job admits beyond a well-formed event: bounds on records and
/// fields, and how far ahead of the wall clock an event may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intake {
    /// Record and field sizes.
    pub limits: EventLimits,
    /// Events further ahead of the wall clock are refused (`--max-future-skew`):
    /// a timestamp in micro- or nanoseconds would otherwise hold its
    /// partition's clock years ahead.
    pub max_future_skew: Duration,
}

impl Default for Intake {
    fn default() -> Self {
        Self { limits: EventLimits::default(), max_future_skew: Duration::from_secs(3600) }
    }
}

/// Records of a block that were not admitted as events, by class.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// `(class, count)`, a handful of classes at most.
    by_class: Vec<(&'static str, u64)>,
}

impl Rejected {
    fn add(&mut self, class: &'static str) {
        match self.by_class.iter_mut().find(|(c, _)| *c == class) {
            Some((_, count)) => *count += 1,
            None => self.by_class.push((class, 1)),
        }
    }

    /// How many.
    pub(crate) fn total(&self) -> u64 {
        self.by_class.iter().map(|(_, n)| n).sum()
    }

    /// Counts by class (the metrics' reason label).
    pub(crate) fn by_class(&self) -> &[(&'static str, u64)] {
        &self.by_class
    }
}

/// Where ingest offers events: one engine, a group member's engines, or one
/// engine of a run whose users are split over several.
pub(crate) trait Admit {
    /// Keeps event-time clocks at or before `now_ms` (the wall clock).
    fn limit_clocks_to(&mut self, now_ms: i64);

    /// The users whose events (and dead letters) are this engine's; another
    /// engine's are only timed ([`Admit::observe_time`]).
    fn split(&self) -> UserSplit {
        UserSplit::WHOLE
    }

    /// Times an event another engine owns: clocks move as it moves them.
    fn observe_time(&mut self, _partition: i32, _timestamp_ms: i64) {}

    /// Admits or drops one event of `partition`; `None` when the partition
    /// is not this run's to read (its owner reads it).
    fn admit(&mut self, partition: i32, event: &Event<'_>, fields: Fields<'_>)
        -> Option<Admission>;
}

impl Admit for Engine {
    fn limit_clocks_to(&mut self, now_ms: i64) {
        Engine::limit_clocks_to(self, now_ms);
    }

    fn admit(
        &mut self,
        partition: i32,
        event: &Event<'_>,
        fields: Fields<'_>,
    ) -> Option<Admission> {
        Some(self.offer_with_fields(partition as usize, event, Some(fields)))
    }
}

/// Offers the events of `block` to `engine`, at `now_ms` on the wall clock;
/// rejected records, events too far in the future and late events go to
/// `dead_letters`, named after `source`. `seen` hears the partition of every
/// record. Returns the records that were not admitted as events (malformed,
/// too large, from the future).
pub(crate) fn ingest(
    block: &EventBlock,
    now_ms: i64,
    intake: &Intake,
    engine: &mut impl Admit,
    source: &str,
    dead_letters: &mut Vec<RejectedEvent>,
    mut seen: impl FnMut(i32),
) -> Rejected {
    let skew_ms = i64::try_from(intake.max_future_skew.as_millis()).unwrap_or(i64::MAX);
    let horizon = now_ms.saturating_add(skew_ms);
    // One test for every engine: an engine that timed an event its owner
    // refused (or the other way round) would drift from the others' clock.
    let on_time = |t: i64| t <= horizon;
    engine.limit_clocks_to(now_ms);
    let mut rejected = Rejected::default();
    let dead_letter = |partition, position, raw: &str, reason: String| RejectedEvent {
        raw: raw.to_owned(),
        reason,
        source: source.to_owned(),
        partition,
        position,
    };
    for record in block.records_split(engine.split()) {
        match record {
            BlockRecord::Elsewhere(partition, timestamp_ms) => {
                seen(partition);
                // Refused by its owner if it is from the future: no clock moves.
                if on_time(timestamp_ms) {
                    engine.observe_time(partition, timestamp_ms);
                }
            }
            BlockRecord::Event(partition, position, raw, event, fields) => {
                seen(partition);
                if !on_time(event.timestamp_ms) {
                    rejected.add("future_timestamp");
                    let reason = from_the_future(event.timestamp_ms, intake.max_future_skew);
                    dead_letters.push(dead_letter(partition, position, raw, reason));
                    continue;
                }
                let admission = engine.admit(partition, &event, fields);
                if let Some(Admission::Late { behind_ms }) = admission {
                    let reason = format!("late: {behind_ms} ms beyond the allowed lateness");
                    dead_letters.push(dead_letter(partition, position, raw, reason));
                }
            }
            BlockRecord::Rejected(partition, position, raw, reason) => {
                seen(partition);
                rejected.add(reason.class());
                dead_letters.push(dead_letter(partition, position, raw, reason.to_string()));
            }
        }
    }
    rejected
}

/// Why an event too far ahead is refused, naming the likely unit mistake:
/// epoch milliseconds today are about 1.8e12, microseconds 1.8e15,
/// nanoseconds 1.8e18.
fn from_the_future(timestamp_ms: i64, skew: Duration) -> String {
    let hint = match timestamp_ms {
        t if t >= 100_000_000_000_000_000 => ": it looks like nanoseconds, not milliseconds",
        t if t >= 100_000_000_000_000 => ": it looks like microseconds, not milliseconds",
        _ => "",
    };
    format!(
        "event_timestamp {timestamp_ms} is more than {} ahead of the wall clock \
         (--max-future-skew){hint}",
        humantime::format_duration(skew)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::wall_clock_ms;
    use crate::engine::EngineConfig;

    fn run(lines: &[String]) -> (Vec<RejectedEvent>, u64, Engine) {
        let mut block = EventBlock::new(lines.len(), EventLimits::default());
        for (i, line) in lines.iter().enumerate() {
            block.push(0, i as i64, line.as_bytes());
        }
        let mut engine = Engine::new(EngineConfig::default());
        let mut dead = Vec::new();
        let now = wall_clock_ms();
        let rejected = ingest(&block, now, &Intake::default(), &mut engine, "t", &mut dead, |_| ());
        assert_eq!(
            rejected.by_class().iter().map(|(_, n)| n).sum::<u64>(),
            dead.len() as u64 - engine.stats().late
        );
        (dead, rejected.total(), engine)
    }

    fn line(t: i64) -> String {
        format!(r#"{{"uuid":"u","event_timestamp":{t}}}"#)
    }

    #[test]
    fn timestamps_too_far_ahead_are_refused_naming_the_likely_unit() {
        let now = wall_clock_ms();
        let lines = [line(now * 1000), line(now * 1_000_000), line(now + 2 * 3_600_000), line(now)];
        let (dead, rejected, engine) = run(&lines);
        assert_eq!((rejected, engine.stats().accepted), (3, 1));
        let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
        assert!(reasons[0].ends_with("1h ahead of the wall clock (--max-future-skew): it looks like microseconds, not milliseconds"), "{reasons:?}");
        assert!(reasons[1].ends_with("it looks like nanoseconds, not milliseconds"), "{reasons:?}");
        assert!(reasons[2].ends_with("ahead of the wall clock (--max-future-skew)"), "{reasons:?}");
        assert_eq!(dead[2].position, 2);
    }

    #[test]
    fn a_microsecond_timestamp_does_not_make_later_events_late() {
        let now = wall_clock_ms();
        let mut lines = vec![line(now * 1000)];
        lines.extend((0..10).map(|i| line(now - 60_000 + i * 1000)));
        let (dead, _, engine) = run(&lines);
        assert_eq!(dead.len(), 1);
        assert_eq!((engine.stats().accepted, engine.stats().late), (10, 0));
    }
}
