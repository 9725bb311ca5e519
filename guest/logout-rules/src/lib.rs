//! The seed's custom rules: a visit to the logout page (parameter `logout_page`,
//! default `logout`) ends the session right after that event, on top of the
//! inactivity timeout and the maximum duration.

use sessionize_sdk::{EndReason, Event, Expiry, Limits, Rules, Session, Settings};

/// Logout page ends the session; otherwise inactivity and maximum duration.
pub struct LogoutRules {
    limits: Limits,
    logout_page: String,
}

impl Rules for LogoutRules {
    fn new(settings: &Settings) -> Result<Self, String> {
        let logout_page = settings.param("logout_page").unwrap_or("logout");
        if logout_page.is_empty() {
            return Err("parameter logout_page must not be empty".into());
        }
        Ok(Self { limits: Limits::from_settings(settings)?, logout_page: logout_page.to_owned() })
    }

    fn expiry(&self, session: &Session) -> Expiry {
        self.limits.expiry(session)
    }

    fn ends_after(&self, _session: &Session, event: &Event) -> Option<EndReason> {
        (event.page_name() == Some(&self.logout_page)).then(|| EndReason::Custom("logout".into()))
    }
}

sessionize_sdk::export_rules!(LogoutRules);

#[cfg(test)]
mod tests {
    use super::LogoutRules;
    use sessionize_sdk::testing::{at, Harness};
    use sessionize_sdk::{EndReason, Settings};

    const MIN: i64 = 60_000;

    fn harness(settings: Settings) -> Harness<LogoutRules> {
        match Harness::new(&settings) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn logout_page_ends_the_session_after_it() {
        let mut h = harness(Settings::new(30 * MIN, 120 * MIN));
        let closed =
            h.finish(&[at(0).page("home"), at(MIN).page("logout"), at(2 * MIN).page("home")]);
        let cut: Vec<_> =
            closed.iter().map(|c| (c.start_ms, c.event_count, c.end_reason.clone())).collect();
        assert_eq!(
            cut,
            vec![(0, 2, EndReason::Custom("logout".into())), (2 * MIN, 1, EndReason::EndOfInput)]
        );
        assert_eq!(closed[0].pages, ["home", "logout"]);
    }

    #[test]
    fn logout_page_is_configurable() {
        let mut h =
            harness(Settings::new(30 * MIN, 120 * MIN).with_param("logout_page", "signout"));
        let closed = h.finish(&[at(0).page("logout"), at(MIN).page("signout"), at(2 * MIN)]);
        assert_eq!(closed.iter().map(|c| c.event_count).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn still_splits_on_inactivity_and_max_duration() {
        let mut h = harness(Settings::new(30 * MIN, 60 * MIN));
        let times = [0, 31, 50, 70, 91, 122].map(|m| at(m * MIN));
        let closed = h.finish(&times);
        let spans: Vec<_> = closed
            .iter()
            .map(|c| (c.start_ms / MIN, c.end_ms / MIN, c.end_reason.clone()))
            .collect();
        // 122 is more than 30 min after 91, but the session already hit its
        // 60 min cap at 91: the limit reached first names the reason.
        assert_eq!(
            spans,
            [
                (0, 0, EndReason::Inactivity),
                (31, 91, EndReason::MaxDuration),
                (122, 122, EndReason::EndOfInput)
            ]
        );
    }

    #[test]
    fn empty_logout_page_is_refused() {
        assert!(Harness::<LogoutRules>::new(&Settings::new(1, 1).with_param("logout_page", ""))
            .is_err());
    }
}
