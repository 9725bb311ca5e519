//! Declared event fields (contract 0.2): the paths the rules in force read,
//! found in the same pass that parses the record, so an event costs only for
//! the fields some rule declared.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::rules::contract::{EventField, FieldType};

/// The fields to extract from every event, as a tree of keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldPaths {
    fields: Vec<EventField>,
    root: PathNode,
}

/// One key of the tree: the declared fields that end here (their index and
/// type) and the keys below it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct PathNode {
    leaves: Vec<(usize, FieldType)>,
    children: Vec<(Box<str>, PathNode)>,
}

impl PathNode {
    /// The node under `key`, if a declared path goes through it.
    pub(super) fn child(&self, key: &str) -> Option<&PathNode> {
        self.children.iter().find(|(k, _)| &**k == key).map(|(_, node)| node)
    }
}

impl FieldPaths {
    /// The paths of `fields`, in their order: value `i` of an event is field `i`'s.
    pub fn new(fields: &[EventField]) -> Self {
        let mut root = PathNode::default();
        for (index, field) in fields.iter().enumerate() {
            let mut node = &mut root;
            for key in field.path.split('.') {
                let at = match node.children.iter().position(|(k, _)| &**k == key) {
                    Some(at) => at,
                    None => {
                        node.children.push((key.into(), PathNode::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
            }
            node.leaves.push((index, field.field_type));
        }
        Self { fields: fields.to_vec(), root }
    }

    /// The declared fields, in order.
    pub fn fields(&self) -> &[EventField] {
        &self.fields
    }

    /// How many fields each event carries.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether no field is declared.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub(super) fn root(&self) -> &PathNode {
        &self.root
    }
}

/// A declared field's value as found in a record, of the declared type.
#[derive(Debug, Clone, PartialEq)]
pub enum Captured<'a> {
    /// A string, borrowed from the record where it had no escapes.
    Str(Cow<'a, str>),
    /// An integer.
    Integer(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Boolean(bool),
}

/// Hears each declared field found: its index and value.
pub(super) type Found<'f, 'a> = &'f mut dyn FnMut(usize, Captured<'a>);

/// Gives the fields that end at `node` the scalar `value`, where its type is
/// theirs.
pub(super) fn capture_scalar<'a>(node: &PathNode, value: Scalar<'a>, found: Found<'_, 'a>) {
    for &(index, field_type) in &node.leaves {
        let captured = match (field_type, &value) {
            (FieldType::String, Scalar::Str(s)) => Captured::Str(s.clone()),
            (FieldType::Integer, Scalar::Unsigned(n)) => match i64::try_from(*n) {
                Ok(n) => Captured::Integer(n),
                Err(_) => continue,
            },
            (FieldType::Integer, Scalar::Signed(n)) => Captured::Integer(*n),
            (FieldType::Float, Scalar::Unsigned(n)) => Captured::Float(*n as f64),
            (FieldType::Float, Scalar::Signed(n)) => Captured::Float(*n as f64),
            (FieldType::Float, Scalar::Float(x)) => Captured::Float(*x),
            (FieldType::Boolean, Scalar::Bool(b)) => Captured::Boolean(*b),
            _ => continue,
        };
        found(index, captured);
    }
}

/// A JSON scalar, as the capture sees it.
pub(super) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
}

/// Reads any JSON value at `node`: scalars go to the fields ending there,
/// objects are searched for the keys below it, everything else is skipped.
pub(super) struct Capture<'n, 'f, 'a> {
    pub(super) node: &'n PathNode,
    pub(super) found: Found<'f, 'a>,
}

impl<'de> DeserializeSeed<'de> for Capture<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Capture<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        capture_scalar(self.node, Scalar::Str(Cow::Borrowed(v)), self.found);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        capture_scalar(self.node, Scalar::Str(Cow::Owned(v.to_owned())), self.found);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        capture_scalar(self.node, Scalar::Unsigned(v), self.found);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        capture_scalar(self.node, Scalar::Signed(v), self.found);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        capture_scalar(self.node, Scalar::Float(v), self.found);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        capture_scalar(self.node, Scalar::Bool(v), self.found);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let found = self.found;
        while let Some(Key(key)) = map.next_key()? {
            capture_or_skip(&mut map, self.node.child(&key), &mut *found)?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the record unless it has escapes: serde's own
/// `Cow<str>` always copies, which would cost an allocation per key per event.
pub(super) struct Key<'a>(pub(super) Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads the next value of `map` at `node` (a declared path goes through
/// it), or skips it undecoded.
pub(super) fn capture_or_skip<'de, A: MapAccess<'de>>(
    map: &mut A,
    node: Option<&PathNode>,
    found: Found<'_, 'de>,
) -> Result<(), A::Error> {
    match node {
        Some(node) => map.next_value_seed(Capture { node, found }),
        None => map.next_value::<IgnoredAny>().map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventBlock, EventLimits};

    fn field(path: &str, field_type: FieldType) -> EventField {
        EventField { path: path.into(), field_type }
    }

    /// The values `paths` finds in `record`, by field index.
    fn found(
        record: &'static str,
        fields: &[EventField],
        limits: EventLimits,
    ) -> Vec<Option<Captured<'static>>> {
        let paths = FieldPaths::new(fields);
        let mut out = vec![None; fields.len()];
        limits
            .parse_with(record.as_bytes(), &paths, &mut |i, v| out[i] = Some(v))
            .map(|_| out)
            .unwrap_or_else(|e| panic!("{record}: {e}"))
    }

    #[test]
    fn declared_paths_are_found_typed_at_any_depth_and_others_are_absent() {
        let fields = [
            field("event_details.event_value", FieldType::Float),
            field("booking_details.amount", FieldType::Integer),
            field("booking_details.currency", FieldType::String),
            field("device.bot", FieldType::Boolean),
            field("page_name", FieldType::String),
            field("event_details.event_type", FieldType::String),
            field("missing.deeply", FieldType::Float),
        ];
        let record = r#"{"uuid":"u","event_timestamp":1,"page_name":"caf\u00e9",
            "event_details":{"event_type":"booking","event_value":120},
            "booking_details":{"amount":12.5,"currency":"EUR","extra":[1,{"amount":3}]},
            "device":{"bot":true},"missing":"not an object"}"#;
        let values = found(record, &fields, EventLimits::default());
        assert_eq!(
            values,
            vec![
                Some(Captured::Float(120.0)),
                None, // 12.5 is no integer
                Some(Captured::Str("EUR".into())),
                Some(Captured::Boolean(true)),
                Some(Captured::Str("café".into())),
                Some(Captured::Str("booking".into())),
                None,
            ]
        );
    }

    #[test]
    fn a_declared_string_over_the_text_limit_is_absent_not_a_rejection() {
        let limits = EventLimits { max_text_bytes: 4, ..EventLimits::default() };
        let fields = [field("referrer", FieldType::String), field("n", FieldType::Integer)];
        let record = r#"{"uuid":"u","event_timestamp":1,"referrer":"https://far.away","n":-7}"#;
        assert_eq!(found(record, &fields, limits), vec![None, Some(Captured::Integer(-7))]);
    }

    #[test]
    fn a_block_keeps_each_events_values_and_drops_a_rejected_records() {
        let paths = std::sync::Arc::new(FieldPaths::new(&[field("v", FieldType::Float)]));
        let mut block = EventBlock::new(3, EventLimits::default()).with_fields(paths);
        block.push(0, 1, br#"{"uuid":"a","event_timestamp":1,"v":1.5}"#);
        block.push(0, 2, br#"{"v":2.5}"#);
        block.push(0, 3, br#"{"uuid":"b","event_timestamp":2}"#);
        let values: Vec<_> = block
            .records()
            .filter_map(|r| match r {
                crate::event::BlockRecord::Event(.., fields) => Some(fields.get(0)),
                _ => None,
            })
            .collect();
        assert_eq!(values, vec![Some(Captured::Float(1.5)), None]);
    }
}
