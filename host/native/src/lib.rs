//! Rules compiled into the host: the same Rust rules as the component, behind
//! the engine's [`RulesRuntime`] without the sandbox. The engine's tests run
//! them, and the benchmark measures what the component boundary costs
//! against them.

use sessionize_core::rules::contract::{
    AttributeType, AttributeValue, Batch, BatchResult, ClosedSession, Declarations, EndReason,
    EventField, FieldType, FieldValues, SessionAttribute, SessionState, Settings as JobSettings,
    UserOutcome,
};
use sessionize_core::rules::{
    check_declarations, check_result, CheckScratch, RulesError, RulesRuntime, Texts, TextsSent,
};
use sessionize_sdk::contract as sdk;
use sessionize_sdk::testing::NativePlugin;
use sessionize_sdk::{Rules, Settings};

/// A [`Rules`] type called directly, behind the same interface as a component.
pub struct NativeRules<R> {
    plugin: NativePlugin<R>,
    rule_version: String,
    declarations: Declarations,
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
        let declarations = declarations_from_sdk(plugin.declarations());
        check_declarations(&declarations)?;
        Ok(Self {
            plugin,
            declarations,
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

    fn declarations(&self) -> &Declarations {
        &self.declarations
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
            fields: batch.fields.iter().map(column_to_sdk).collect(),
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
                    attributes: c
                        .attributes
                        .into_iter()
                        .map(|v| v.map(attribute_from_sdk))
                        .collect(),
                })
                .collect(),
        };
        check_result(&mut self.check, texts, &self.declarations, batch, &result)?;
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

fn column_to_sdk(column: &FieldValues) -> sdk::FieldValues {
    match column {
        FieldValues::Text(v) => sdk::FieldValues::String(v.clone()),
        FieldValues::Integer(v) => sdk::FieldValues::Integer(v.clone()),
        FieldValues::Float(v) => sdk::FieldValues::Float(v.clone()),
        FieldValues::Boolean(v) => sdk::FieldValues::Boolean(v.clone()),
    }
}

fn attribute_from_sdk(value: sdk::AttributeValue) -> AttributeValue {
    match value {
        sdk::AttributeValue::String(s) => AttributeValue::String(s),
        sdk::AttributeValue::Long(n) => AttributeValue::Long(n),
        sdk::AttributeValue::Double(x) => AttributeValue::Double(x),
        sdk::AttributeValue::Boolean(b) => AttributeValue::Boolean(b),
        sdk::AttributeValue::StringList(l) => AttributeValue::StringList(l),
    }
}

fn declarations_from_sdk(declared: sdk::Declarations) -> Declarations {
    Declarations {
        fields: declared
            .fields
            .into_iter()
            .map(|f| EventField {
                path: f.path,
                field_type: match f.type_ {
                    sdk::FieldType::String => FieldType::String,
                    sdk::FieldType::Integer => FieldType::Integer,
                    sdk::FieldType::Float => FieldType::Float,
                    sdk::FieldType::Boolean => FieldType::Boolean,
                },
            })
            .collect(),
        attributes: declared
            .attributes
            .into_iter()
            .map(|a| SessionAttribute {
                name: a.name,
                attribute_type: match a.type_ {
                    sdk::AttributeType::String => AttributeType::String,
                    sdk::AttributeType::Long => AttributeType::Long,
                    sdk::AttributeType::Double => AttributeType::Double,
                    sdk::AttributeType::Boolean => AttributeType::Boolean,
                    sdk::AttributeType::StringList => AttributeType::StringList,
                },
                doc: a.doc,
            })
            .collect(),
    }
}
