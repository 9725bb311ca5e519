//! Rules compiled into the host: the same Rust rules as the component, without
//! the sandbox, to measure what the component boundary costs.

use sessionize_sdk::contract as sdk;
use sessionize_sdk::testing::NativePlugin;
use sessionize_sdk::{Rules, Settings};

use super::contract::{
    Batch, BatchResult, ClosedSession, EndReason, SessionState, Settings as JobSettings,
    UserOutcome,
};
use super::{check_result, CheckScratch, RulesError, RulesRuntime, Texts, TextsSent};

/// A [`Rules`] type called directly, behind the same interface as a component.
pub struct NativeRules<R> {
    plugin: NativePlugin<R>,
    rule_version: String,
    texts_sent: TextsSent,
    check: CheckScratch,
}

impl<R: Rules + Send> NativeRules<R> {
    /// Configures the rules; `name` is recorded as the rule version.
    pub fn new(name: &str, settings: &JobSettings) -> Result<Self, RulesError> {
        let mut sdk_settings =
            Settings::new(settings.inactivity_timeout_ms, settings.max_duration_ms);
        for (key, value) in &settings.params {
            sdk_settings = sdk_settings.with_param(key, value);
        }
        let plugin = NativePlugin::new(&sdk_settings).map_err(RulesError::Refused)?;
        Ok(Self {
            plugin,
            rule_version: format!("{name}+native"),
            texts_sent: TextsSent::default(),
            check: CheckScratch::default(),
        })
    }
}

impl<R: Rules + Send> RulesRuntime for NativeRules<R> {
    fn rule_version(&self) -> &str {
        &self.rule_version
    }

    fn process(&mut self, texts: Texts<'_>, batch: &mut Batch) -> Result<BatchResult, RulesError> {
        if self.texts_sent.is_stale(texts) {
            self.plugin.forget_texts();
        }
        let sdk_batch = sdk::Batch {
            new_texts: self.texts_sent.unsent(texts),
            watermark: batch.watermark,
            end_of_input: batch.end_of_input,
            users: batch
                .users
                .iter()
                .map(|u| sdk::UserSlice {
                    state: u.state.as_ref().map(to_sdk_state),
                    event_count: u.event_count,
                })
                .collect(),
            events: batch
                .events
                .iter()
                .map(|e| sdk::Event {
                    timestamp_ms: e.timestamp_ms,
                    page_name: e.page_name,
                    event_name: e.event_name,
                    event_type: e.event_type,
                })
                .collect(),
        };
        self.texts_sent.took(texts);
        let result = self.plugin.process(sdk_batch).map_err(RulesError::Failed)?;
        let result = BatchResult {
            users: result
                .users
                .into_iter()
                .map(|u| UserOutcome { state: u.state.map(from_sdk_state), wake_at: u.wake_at })
                .collect(),
            closed: result
                .closed
                .into_iter()
                .map(|c| ClosedSession {
                    user: c.user,
                    start_ms: c.start_ms,
                    end_ms: c.end_ms,
                    event_count: c.event_count,
                    pages: c.pages,
                    end_reason: match c.end_reason {
                        sdk::EndReason::Inactivity => EndReason::Inactivity,
                        sdk::EndReason::MaxDuration => EndReason::MaxDuration,
                        sdk::EndReason::EndOfInput => EndReason::EndOfInput,
                        sdk::EndReason::Custom(reason) => EndReason::Custom(reason),
                    },
                })
                .collect(),
        };
        check_result(&mut self.check, texts, batch, &result)?;
        Ok(result)
    }
}

fn to_sdk_state(s: &SessionState) -> sdk::SessionState {
    sdk::SessionState {
        start_ms: s.start_ms,
        last_ms: s.last_ms,
        event_count: s.event_count,
        pages: s.pages.clone(),
        data: s.data.clone(),
    }
}

fn from_sdk_state(s: sdk::SessionState) -> SessionState {
    SessionState {
        start_ms: s.start_ms,
        last_ms: s.last_ms,
        event_count: s.event_count,
        pages: s.pages,
        data: s.data,
    }
}
