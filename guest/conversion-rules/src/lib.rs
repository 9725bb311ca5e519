//! Conversion rules: the default session boundaries (inactivity, maximum
//! duration), and four attributes on every session, written as columns of
//! the sessions table:
//!
//! - `converted`: the session reached the `confirmation` page or had a
//!   booking event (`event_details.event_type` = `booking`);
//! - `revenue`: the sum of `event_details.event_value` over booking events;
//! - `entry_page`, `exit_page`: the page of the first and the last event
//!   that had one.

use sessionize_sdk::{Attribute, Declare, Event, Expiry, Field, Limits, Rules, Session, Settings};

const EVENT_VALUE: Field<f64> = Field::new("event_details.event_value");

const CONVERTED: Attribute<bool> =
    Attribute::new("converted", "Reached the confirmation page or had a booking event");
const REVENUE: Attribute<f64> =
    Attribute::new("revenue", "Sum of event_details.event_value over booking events");
const ENTRY_PAGE: Attribute<String> = Attribute::new("entry_page", "Page of the first event");
const EXIT_PAGE: Attribute<String> = Attribute::new("exit_page", "Page of the last event");

/// Default boundaries, conversion attributes.
pub struct ConversionRules(Limits);

impl Rules for ConversionRules {
    fn new(settings: &Settings) -> Result<Self, String> {
        Limits::from_settings(settings).map(Self)
    }

    fn declare(&self, declare: &mut Declare) {
        declare
            .field(&EVENT_VALUE)
            .attribute(&CONVERTED)
            .attribute(&REVENUE)
            .attribute(&ENTRY_PAGE)
            .attribute(&EXIT_PAGE);
    }

    fn expiry(&self, session: &Session) -> Expiry {
        self.0.expiry(session)
    }

    fn observe(&self, session: &mut Session, event: &Event) {
        let booking = event.event_type() == Some("booking");
        let converted = booking || event.page_name() == Some("confirmation");
        session.set(&CONVERTED, converted || session.get(&CONVERTED).unwrap_or(false));
        let value = if booking { event.get(&EVENT_VALUE).unwrap_or(0.0) } else { 0.0 };
        session.set(&REVENUE, session.get(&REVENUE).unwrap_or(0.0) + value);
        if let Some(page) = event.page_name() {
            if session.get(&ENTRY_PAGE).is_none() {
                session.set_str(&ENTRY_PAGE, page);
            }
            session.set_str(&EXIT_PAGE, page);
        }
    }
}

sessionize_sdk::export_rules!(ConversionRules);

#[cfg(test)]
mod tests {
    use super::*;
    use sessionize_sdk::testing::{at, Harness, TestValue};

    const MIN: i64 = 60_000;

    fn harness() -> Harness<ConversionRules> {
        match Harness::new(&Settings::new(30 * MIN, 120 * MIN)) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_booking_converts_and_counts_its_value() {
        let value = |v| TestValue::Float(v);
        let events = [
            at(0).page("home").with("event_details.event_value", value(5.0)),
            at(MIN)
                .page("hotel")
                .event_type("booking")
                .with("event_details.event_value", value(120.5)),
            at(2 * MIN).event_type("booking").with("event_details.event_value", value(9.5)),
            at(3 * MIN).page("account"),
        ];
        let closed = harness().finish(&events);
        assert_eq!(closed.len(), 1);
        let session = &closed[0];
        assert_eq!(session.get(&CONVERTED), Some(true));
        assert_eq!(session.get(&REVENUE), Some(130.0));
        assert_eq!(session.get(&ENTRY_PAGE).as_deref(), Some("home"));
        assert_eq!(session.get(&EXIT_PAGE).as_deref(), Some("account"));
    }

    #[test]
    fn a_confirmation_page_converts_and_carries_across_calls() {
        let mut h = harness();
        assert!(h.feed(&[at(0).page("search"), at(MIN).page("confirmation")], MIN).is_empty());
        let closed = h.feed(&[at(2 * MIN).page("home")], 40 * MIN);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].get(&CONVERTED), Some(true));
        assert_eq!(closed[0].get(&REVENUE), Some(0.0));
        assert_eq!(closed[0].get(&ENTRY_PAGE).as_deref(), Some("search"));
        assert_eq!(closed[0].get(&EXIT_PAGE).as_deref(), Some("home"));
    }

    #[test]
    fn an_empty_page_name_is_no_page() {
        let events = [at(0).page(""), at(MIN).page("home"), at(2 * MIN).page("")];
        let closed = harness().finish(&events);
        assert_eq!(closed[0].pages, ["home"]);
        assert_eq!(closed[0].get(&ENTRY_PAGE).as_deref(), Some("home"));
        assert_eq!(closed[0].get(&EXIT_PAGE).as_deref(), Some("home"));
    }

    #[test]
    fn a_session_without_pages_or_bookings_has_no_pages_and_did_not_convert() {
        let closed = harness()
            .finish(&[at(0), at(MIN).with("event_details.event_value", TestValue::Float(3.0))]);
        assert_eq!(closed[0].get(&CONVERTED), Some(false));
        assert_eq!(closed[0].get(&REVENUE), Some(0.0));
        assert_eq!(closed[0].get(&ENTRY_PAGE), None);
    }
}
