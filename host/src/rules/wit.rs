//! The generated bindings of both contract versions (`wit/sessionize.wit`,
//! 0.2, and `wit/v0.1/sessionize.wit`), and the one place where the host's
//! contract types become wasmtime's and back. Session states are moved
//! across, not copied: a batch lends them to the call and gets them back.
//!
//! The two versions share every record but three (the batch's field
//! columns, the closed session's attributes, `configure`'s declarations),
//! so one macro writes the conversions for both and each version adds its own.

use super::contract;

/// Host-side bindings of contract 0.2.
#[allow(missing_docs, clippy::all)]
pub(super) mod v02 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "session-rules",
    });
}

/// Host-side bindings of contract 0.1.
#[allow(missing_docs, clippy::all)]
pub(super) mod v01 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "session-rules",
    });
}

/// The conversions both versions share, in a module of their own.
macro_rules! shared_conversions {
    ($types:path) => {
        use super::contract;
        use $types as types;

        /// Runs `call` on `batch` in the generated form, built in `scratch`
        /// (reused from call to call, so the hot path allocates nothing once
        /// warm). The batch's session states move into it and back
        /// afterwards, so a failed call leaves `batch` as it was (a retry
        /// sends the same), and a successful one costs no copy of them.
        pub(in crate::rules) fn lend<R>(
            batch: &mut contract::Batch,
            scratch: &mut types::Batch,
            call: impl FnOnce(&types::Batch) -> R,
        ) -> R {
            scratch.new_texts = std::mem::take(&mut batch.new_texts);
            scratch.watermark = batch.watermark;
            scratch.end_of_input = batch.end_of_input;
            scratch.users.clear();
            scratch.users.extend(batch.users.iter_mut().map(|u| types::UserSlice {
                state: u.state.take().map(state_to_wit),
                event_count: u.event_count,
            }));
            scratch.events.clear();
            scratch.events.extend(batch.events.iter().map(|e| types::Event {
                timestamp_ms: e.timestamp_ms,
                page_name: e.page_name,
                event_name: e.event_name,
                event_type: e.event_type,
            }));
            lend_fields(batch, scratch);
            let outcome = call(scratch);
            for (user, lent) in batch.users.iter_mut().zip(scratch.users.drain(..)) {
                user.state = lent.state.map(state_from_wit);
            }
            batch.new_texts = std::mem::take(&mut scratch.new_texts);
            return_fields(batch, scratch);
            outcome
        }

        /// The job's settings in the generated form.
        pub(in crate::rules) fn settings_to_wit(settings: &contract::Settings) -> types::Settings {
            types::Settings {
                inactivity_timeout_ms: settings.inactivity_timeout_ms,
                max_duration_ms: settings.max_duration_ms,
                params: settings.params.clone(),
            }
        }

        /// The plugin's answer in the host's terms.
        pub(in crate::rules) fn result_from_wit(
            result: types::BatchResult,
        ) -> contract::BatchResult {
            contract::BatchResult {
                users: result
                    .users
                    .into_iter()
                    .map(|u| contract::UserOutcome {
                        state: u.state.map(state_from_wit),
                        wake_at: u.wake_at,
                    })
                    .collect(),
                closed: result
                    .closed
                    .into_iter()
                    .map(|mut c| {
                        let attributes = attributes_from_wit(&mut c);
                        contract::ClosedSession {
                            user: c.user,
                            start_ms: c.start_ms,
                            end_ms: c.end_ms,
                            event_count: c.event_count,
                            pages: c.pages,
                            end_reason: match c.end_reason {
                                types::EndReason::Inactivity => contract::EndReason::Inactivity,
                                types::EndReason::MaxDuration => contract::EndReason::MaxDuration,
                                types::EndReason::EndOfInput => contract::EndReason::EndOfInput,
                                types::EndReason::Custom(reason) => {
                                    contract::EndReason::Custom(reason)
                                }
                            },
                            attributes,
                        }
                    })
                    .collect(),
            }
        }

        /// A log line's level, as `tracing` has them.
        pub(in crate::rules) fn log_level(level: types::LogLevel) -> tracing::Level {
            match level {
                types::LogLevel::Error => tracing::Level::ERROR,
                types::LogLevel::Warn => tracing::Level::WARN,
                types::LogLevel::Info => tracing::Level::INFO,
                types::LogLevel::Debug => tracing::Level::DEBUG,
                types::LogLevel::Trace => tracing::Level::TRACE,
            }
        }

        fn state_to_wit(s: contract::SessionState) -> types::SessionState {
            types::SessionState {
                start_ms: s.start_ms,
                last_ms: s.last_ms,
                event_count: s.event_count,
                pages: s.pages,
                data: s.data,
            }
        }

        fn state_from_wit(s: types::SessionState) -> contract::SessionState {
            contract::SessionState {
                start_ms: s.start_ms,
                last_ms: s.last_ms,
                event_count: s.event_count,
                pages: s.pages,
                data: s.data,
            }
        }
    };
}

/// Conversions for contract 0.2 components.
pub(super) mod convert02 {
    shared_conversions!(super::v02::sessionize::plugin::types);

    /// An empty batch in the generated form, to build batches in.
    pub(in crate::rules) fn empty_batch() -> types::Batch {
        types::Batch {
            new_texts: Vec::new(),
            watermark: 0,
            end_of_input: false,
            users: Vec::new(),
            events: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// The field columns move into the call and back, like the states.
    fn lend_fields(batch: &mut contract::Batch, scratch: &mut types::Batch) {
        scratch.fields.clear();
        scratch.fields.extend(batch.fields.drain(..).map(|column| match column {
            contract::FieldValues::Text(v) => types::FieldValues::String(v),
            contract::FieldValues::Integer(v) => types::FieldValues::Integer(v),
            contract::FieldValues::Float(v) => types::FieldValues::Float(v),
            contract::FieldValues::Boolean(v) => types::FieldValues::Boolean(v),
        }));
    }

    fn return_fields(batch: &mut contract::Batch, scratch: &mut types::Batch) {
        batch.fields.extend(scratch.fields.drain(..).map(|column| match column {
            types::FieldValues::String(v) => contract::FieldValues::Text(v),
            types::FieldValues::Integer(v) => contract::FieldValues::Integer(v),
            types::FieldValues::Float(v) => contract::FieldValues::Float(v),
            types::FieldValues::Boolean(v) => contract::FieldValues::Boolean(v),
        }));
    }

    /// The closed session's attribute values, moved out of it.
    fn attributes_from_wit(
        closed: &mut types::ClosedSession,
    ) -> Vec<Option<contract::AttributeValue>> {
        std::mem::take(&mut closed.attributes)
            .into_iter()
            .map(|value| {
                value.map(|value| match value {
                    types::AttributeValue::String(s) => contract::AttributeValue::String(s),
                    types::AttributeValue::Long(n) => contract::AttributeValue::Long(n),
                    types::AttributeValue::Double(x) => contract::AttributeValue::Double(x),
                    types::AttributeValue::Boolean(b) => contract::AttributeValue::Boolean(b),
                    types::AttributeValue::StringList(l) => contract::AttributeValue::StringList(l),
                })
            })
            .collect()
    }

    /// What the plugin declared, in the host's terms.
    pub(in crate::rules) fn declarations_from_wit(
        declared: types::Declarations,
    ) -> contract::Declarations {
        contract::Declarations {
            fields: declared
                .fields
                .into_iter()
                .map(|f| contract::EventField {
                    path: f.path,
                    field_type: match f.type_ {
                        types::FieldType::String => contract::FieldType::String,
                        types::FieldType::Integer => contract::FieldType::Integer,
                        types::FieldType::Float => contract::FieldType::Float,
                        types::FieldType::Boolean => contract::FieldType::Boolean,
                    },
                })
                .collect(),
            attributes: declared
                .attributes
                .into_iter()
                .map(|a| contract::SessionAttribute {
                    name: a.name,
                    attribute_type: match a.type_ {
                        types::AttributeType::String => contract::AttributeType::String,
                        types::AttributeType::Long => contract::AttributeType::Long,
                        types::AttributeType::Double => contract::AttributeType::Double,
                        types::AttributeType::Boolean => contract::AttributeType::Boolean,
                        types::AttributeType::StringList => contract::AttributeType::StringList,
                    },
                    doc: a.doc,
                })
                .collect(),
        }
    }
}

/// Conversions for contract 0.1 components: no fields, no attributes.
pub(super) mod convert01 {
    shared_conversions!(super::v01::sessionize::plugin::types);

    /// An empty batch in the generated form, to build batches in.
    pub(in crate::rules) fn empty_batch() -> types::Batch {
        types::Batch {
            new_texts: Vec::new(),
            watermark: 0,
            end_of_input: false,
            users: Vec::new(),
            events: Vec::new(),
        }
    }

    fn lend_fields(_: &mut contract::Batch, _: &mut types::Batch) {}

    fn return_fields(_: &mut contract::Batch, _: &mut types::Batch) {}

    fn attributes_from_wit(_: &mut types::ClosedSession) -> Vec<Option<contract::AttributeValue>> {
        Vec::new()
    }
}
