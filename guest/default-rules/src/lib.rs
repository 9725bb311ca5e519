//! The default sessionization rules: a session ends after a period of inactivity
//! (`--inactivity-timeout`, 30 min) and is split before it would exceed the
//! maximum duration (`--max-session-duration`, 2 h). A gap of exactly the timeout,
//! or an event exactly the maximum after the start, stays in the session.

use sessionize_sdk::{Expiry, Limits, Rules, Session, Settings};

/// Inactivity timeout plus maximum duration, nothing else.
pub struct DefaultRules(Limits);

impl Rules for DefaultRules {
    fn new(settings: &Settings) -> Result<Self, String> {
        Limits::from_settings(settings).map(Self)
    }

    fn expiry(&self, session: &Session) -> Expiry {
        self.0.expiry(session)
    }
}

sessionize_sdk::export_rules!(DefaultRules);

#[cfg(test)]
mod tests {
    use super::DefaultRules;
    use sessionize_sdk::testing::{at, Closed, Harness};
    use sessionize_sdk::{EndReason, Settings};

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    fn harness() -> Harness<DefaultRules> {
        match Harness::new(&Settings::new(30 * MIN, 2 * HOUR)) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }

    fn spans(closed: &[Closed]) -> Vec<(i64, i64, u32, EndReason)> {
        closed.iter().map(|c| (c.start_ms, c.end_ms, c.event_count, c.end_reason.clone())).collect()
    }

    #[test]
    fn gap_of_exactly_the_timeout_stays() {
        let closed = harness().finish(&[at(0), at(30 * MIN)]);
        assert_eq!(spans(&closed), vec![(0, 30 * MIN, 2, EndReason::EndOfInput)]);
    }

    #[test]
    fn gap_one_ms_over_the_timeout_splits() {
        let closed = harness().finish(&[at(0), at(30 * MIN + 1)]);
        assert_eq!(
            spans(&closed),
            vec![
                (0, 0, 1, EndReason::Inactivity),
                (30 * MIN + 1, 30 * MIN + 1, 1, EndReason::EndOfInput)
            ]
        );
    }

    #[test]
    fn event_exactly_max_duration_after_start_stays() {
        let events: Vec<_> = (0..=8).map(|i| at(i * 15 * MIN)).collect();
        let closed = harness().finish(&events);
        assert_eq!(spans(&closed), vec![(0, 2 * HOUR, 9, EndReason::EndOfInput)]);
    }

    #[test]
    fn event_one_ms_past_max_duration_splits() {
        let mut events: Vec<_> = (0..8).map(|i| at(i * 15 * MIN)).collect();
        events.push(at(2 * HOUR + 1));
        let closed = harness().finish(&events);
        assert_eq!(
            spans(&closed),
            vec![
                (0, 105 * MIN, 8, EndReason::MaxDuration),
                (2 * HOUR + 1, 2 * HOUR + 1, 1, EndReason::EndOfInput)
            ]
        );
    }

    #[test]
    fn watermark_past_expiry_closes_as_inactive_and_not_before() {
        let mut h = harness();
        assert!(h
            .feed(
                &[at(0).page("home"), at(MIN).page("search"), at(2 * MIN).page("home")],
                30 * MIN + 2 * MIN
            )
            .is_empty());
        assert!(h.open_session().is_some());
        let closed = h.feed(&[], 32 * MIN + 1);
        assert_eq!(spans(&closed), vec![(0, 2 * MIN, 3, EndReason::Inactivity)]);
        assert_eq!(closed[0].pages, ["home", "search"]);
        assert!(h.open_session().is_none());
    }
}
