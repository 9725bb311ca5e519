//! What rules may declare (contract 0.2), and the check of every closed
//! session's attribute values against the declarations.
//!
//! Declarations come from a plugin, so they are checked like its answers: a
//! path or a name the host could not use refuses the plugin at load, before
//! it sees an event; a value of the wrong type breaks [`Rule::AttributeType`].

use super::contract::{AttributeValue, ClosedSession, Declarations};
use super::rule::{broken, quote};
use super::{Rule, RulesError};

/// Most event fields one plugin may declare.
pub const MAX_FIELDS: usize = 64;

/// Most session attributes one plugin may declare.
pub const MAX_ATTRIBUTES: usize = 64;

/// Longest field path, in bytes.
pub const MAX_FIELD_PATH_BYTES: usize = 256;

/// Longest attribute (column) name, in bytes.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 64;

/// Longest attribute doc line, in bytes.
pub const MAX_ATTRIBUTE_DOC_BYTES: usize = 1024;

/// Most text one attribute value may hold (a string, or a list's strings
/// together): a column value, not a document.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 16 << 10;

/// Checks what a plugin declared: paths the host can extract, names that are
/// column names, no repeats, within the limits.
pub fn check_declarations(declared: &Declarations) -> Result<(), RulesError> {
    let refuse = |detail: String| Err(RulesError::Declarations(detail));
    if declared.fields.len() > MAX_FIELDS {
        return refuse(format!("{} event fields, at most {MAX_FIELDS}", declared.fields.len()));
    }
    for (index, field) in declared.fields.iter().enumerate() {
        let path = &field.path;
        if path.is_empty() || path.len() > MAX_FIELD_PATH_BYTES {
            return refuse(format!(
                "field path {} is not 1 to {MAX_FIELD_PATH_BYTES} bytes",
                quote(path)
            ));
        }
        if path.split('.').any(str::is_empty) {
            return refuse(format!("field path {} has an empty key", quote(path)));
        }
        if declared.fields[..index].iter().any(|f| f.path == *path) {
            return refuse(format!("field path {} is declared twice", quote(path)));
        }
    }
    if declared.attributes.len() > MAX_ATTRIBUTES {
        return refuse(format!(
            "{} session attributes, at most {MAX_ATTRIBUTES}",
            declared.attributes.len()
        ));
    }
    for (index, attribute) in declared.attributes.iter().enumerate() {
        let name = &attribute.name;
        if !is_column_name(name) {
            return refuse(format!(
                "attribute name {} is not 1 to {MAX_ATTRIBUTE_NAME_BYTES} of [a-z0-9_] \
                 starting with a letter",
                quote(name)
            ));
        }
        if declared.attributes[..index].iter().any(|a| a.name == *name) {
            return refuse(format!("attribute {name} is declared twice"));
        }
        let doc = &attribute.doc;
        if doc.len() > MAX_ATTRIBUTE_DOC_BYTES || doc.chars().any(char::is_control) {
            return refuse(format!(
                "the doc of attribute {name} is not one line of at most \
                 {MAX_ATTRIBUTE_DOC_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

/// `[a-z][a-z0-9_]*`, at most [`MAX_ATTRIBUTE_NAME_BYTES`]: a column name every
/// engine takes unquoted.
fn is_column_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= MAX_ATTRIBUTE_NAME_BYTES
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Checks the attribute values of one closed session: one per declared
/// attribute, each of its declared type, within [`MAX_ATTRIBUTE_VALUE_BYTES`].
pub(super) fn check_attributes(
    declared: &Declarations,
    index: u32,
    closed: &ClosedSession,
) -> Result<(), RulesError> {
    let user = Some(closed.user);
    if closed.attributes.len() != declared.attributes.len() {
        return Err(broken(
            Rule::AttributeCount,
            user,
            format_args!(
                "closed session {index} has {} attribute values, the plugin declared {}",
                closed.attributes.len(),
                declared.attributes.len()
            ),
        ));
    }
    for (value, attribute) in closed.attributes.iter().zip(&declared.attributes) {
        let Some(value) = value else { continue };
        if value.attribute_type() != attribute.attribute_type {
            return Err(broken(
                Rule::AttributeType,
                user,
                format_args!(
                    "closed session {index} gives attribute {} a {}, declared {}",
                    attribute.name,
                    value.attribute_type().name(),
                    attribute.attribute_type.name()
                ),
            ));
        }
        let bytes = match value {
            AttributeValue::String(s) => s.len(),
            AttributeValue::StringList(list) => list.iter().map(String::len).sum(),
            _ => 0,
        };
        if bytes > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(broken(
                Rule::AttributeType,
                user,
                format_args!(
                    "closed session {index} gives attribute {} {bytes} bytes of text, at most \
                     {MAX_ATTRIBUTE_VALUE_BYTES}",
                    attribute.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::contract::{
        AttributeType, EndReason, EventField, FieldType, SessionAttribute,
    };

    fn attribute(name: &str, attribute_type: AttributeType) -> SessionAttribute {
        SessionAttribute { name: name.into(), attribute_type, doc: "a column".into() }
    }

    fn refusal(declared: &Declarations) -> String {
        match check_declarations(declared) {
            Ok(()) => panic!("accepted {declared:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn declarations_the_host_cannot_use_are_refused_with_the_reason() {
        let field = |path: &str| EventField { path: path.into(), field_type: FieldType::Float };
        let ok = Declarations {
            fields: vec![field("event_details.event_value"), field("booking_details.amount")],
            attributes: vec![attribute("revenue", AttributeType::Double)],
        };
        assert!(check_declarations(&ok).is_ok());
        let with_fields = |f: Vec<EventField>| Declarations { fields: f, ..ok.clone() };
        assert!(refusal(&with_fields(vec![field("a..b")])).contains("has an empty key"));
        assert!(refusal(&with_fields(vec![field("")])).contains("is not 1 to 256 bytes"));
        assert!(refusal(&with_fields(vec![field("a"), field("a")])).contains("declared twice"));
        assert!(refusal(&with_fields((0..65).map(|i| field(&format!("f{i}"))).collect()))
            .contains("65 event fields, at most 64"));
        let with_attributes =
            |a: Vec<SessionAttribute>| Declarations { attributes: a, ..ok.clone() };
        for bad in ["Revenue", "1st", "", "total-revenue", "a b", &"x".repeat(65)] {
            let message = refusal(&with_attributes(vec![attribute(bad, AttributeType::Long)]));
            assert!(message.contains("is not 1 to 64 of [a-z0-9_]"), "{bad}: {message}");
        }
        let twice =
            vec![attribute("x", AttributeType::Long), attribute("x", AttributeType::Double)];
        assert!(refusal(&with_attributes(twice)).contains("attribute x is declared twice"));
        let mut multiline = attribute("x", AttributeType::Long);
        multiline.doc = "one\ntwo".into();
        assert!(refusal(&with_attributes(vec![multiline])).contains("not one line"));
    }

    #[test]
    fn attribute_values_must_match_the_declarations() {
        let declared = Declarations {
            fields: Vec::new(),
            attributes: vec![
                attribute("converted", AttributeType::Boolean),
                attribute("revenue", AttributeType::Double),
            ],
        };
        let closed = |attributes| ClosedSession {
            user: 3,
            start_ms: 0,
            end_ms: 0,
            event_count: 1,
            pages: Vec::new(),
            end_reason: EndReason::Inactivity,
            attributes,
        };
        let ok = closed(vec![Some(AttributeValue::Boolean(true)), None]);
        assert!(check_attributes(&declared, 0, &ok).is_ok());
        let short = check_attributes(&declared, 2, &closed(vec![None])).unwrap_err().to_string();
        assert_eq!(
            short,
            "plugin broke the contract: rule attribute-count, user 3: closed session 2 has 1 \
             attribute values, the plugin declared 2"
        );
        let wrong = closed(vec![None, Some(AttributeValue::Long(5))]);
        let wrong = check_attributes(&declared, 0, &wrong).unwrap_err().to_string();
        assert!(wrong.ends_with("gives attribute revenue a long, declared double"), "{wrong}");
        let declared = Declarations {
            fields: Vec::new(),
            attributes: vec![attribute("tags", AttributeType::StringList)],
        };
        let big = closed(vec![Some(AttributeValue::StringList(vec!["x".repeat(9 << 10); 2]))]);
        let big = check_attributes(&declared, 0, &big).unwrap_err().to_string();
        assert!(big.contains("18432 bytes of text, at most 16384"), "{big}");
    }
}
