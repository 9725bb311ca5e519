//! The wire form of an event: only the fields validation needs, borrowed from
//! the record where JSON allows, plus the declared fields (found in the same
//! pass); everything else skipped undecoded.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::fields::{capture_or_skip, capture_scalar, Found, Key, PathNode, Scalar};

/// The fields we read; every other field is skipped without being decoded.
#[derive(Default)]
pub(super) struct Wire<'a> {
    pub(super) uuid: Value<'a>,
    pub(super) event_id: Value<'a>,
    pub(super) event_timestamp: Value<'a>,
    pub(super) page_name: Value<'a>,
    pub(super) event_details: Details<'a>,
}

/// Parses `record` into its [`Wire`] form, handing each declared field under
/// `paths` to `found`.
/// `record` is a `str`: serde_json then checks no string's UTF-8 again.
pub(super) fn read<'a>(
    record: &'a str,
    paths: &PathNode,
    found: Found<'_, 'a>,
) -> Result<Wire<'a>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(record);
    let wire = WireSeed { node: paths, found }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(wire)
}

struct WireSeed<'n, 'f, 'a> {
    node: &'n PathNode,
    found: Found<'f, 'a>,
}

impl<'de> DeserializeSeed<'de> for WireSeed<'_, '_, 'de> {
    type Value = Wire<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Wire<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WireSeed<'_, '_, 'de> {
    type Value = Wire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'de>, A::Error> {
        let found = self.found;
        let mut wire = Wire::default();
        let mut seen = [false; 5];
        while let Some(Key(key)) = map.next_key()? {
            let node = self.node.child(&key);
            let (slot, name) = match key.as_ref() {
                "uuid" => (Some((0, &mut wire.uuid)), "uuid"),
                "event_id" => (Some((1, &mut wire.event_id)), "event_id"),
                "event_timestamp" => (Some((2, &mut wire.event_timestamp)), "event_timestamp"),
                "page_name" => (Some((3, &mut wire.page_name)), "page_name"),
                "event_details" => (None, "event_details"),
                _ => {
                    capture_or_skip(&mut map, node, &mut *found)?;
                    continue;
                }
            };
            let index = slot.as_ref().map_or(4, |(i, _)| *i);
            if std::mem::replace(&mut seen[index], true) {
                return Err(de::Error::duplicate_field(name));
            }
            match slot {
                Some((_, value)) => {
                    *value = map.next_value()?;
                    if let (Some(node), Some(scalar)) = (node, value.scalar()) {
                        capture_scalar(node, scalar, &mut *found);
                    }
                }
                None => {
                    let seed = DetailsSeed { node, found: &mut *found };
                    wire.event_details = map.next_value_seed(seed)?;
                }
            }
        }
        Ok(wire)
    }
}

/// Any JSON value, keeping only what validation needs.
#[derive(Default)]
pub(super) enum Value<'a> {
    #[default]
    Null,
    Str(Cow<'a, str>),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    Array,
    Object,
}

impl<'a> Value<'a> {
    /// The value as a declared field could take it, if it is a scalar.
    fn scalar(&self) -> Option<Scalar<'a>> {
        Some(match self {
            Value::Str(s) => Scalar::Str(s.clone()),
            Value::Unsigned(n) => Scalar::Unsigned(*n),
            Value::Signed(n) => Scalar::Signed(*n),
            Value::Float(x) => Scalar::Float(*x),
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Null | Value::Array | Value::Object => return None,
        })
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Str(_) => "a string",
            Value::Unsigned(_) | Value::Signed(_) | Value::Float(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Array => "an array",
            Value::Object => "an object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Value::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 { Value::Unsigned(v as u64) } else { Value::Signed(v) })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Object)
    }
}

/// `event_details`: an object with the two fields we read, or something else.
#[derive(Default)]
pub(super) enum Details<'a> {
    #[default]
    Absent,
    Object {
        event_name: Value<'a>,
        event_type: Value<'a>,
    },
    NotObject(&'static str),
}

/// `event_details`, with the declared fields under it.
struct DetailsSeed<'n, 'f, 'a> {
    node: Option<&'n PathNode>,
    found: Found<'f, 'a>,
}

impl<'de> DeserializeSeed<'de> for DetailsSeed<'_, '_, 'de> {
    type Value = Details<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Details<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DetailsSeed<'_, '_, 'de> {
    type Value = Details<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let found = self.found;
        let (mut event_name, mut event_type) = (Value::Null, Value::Null);
        while let Some(Key(key)) = map.next_key()? {
            let node = self.node.and_then(|n| n.child(&key));
            let value = match key.as_ref() {
                "event_name" => &mut event_name,
                "event_type" => &mut event_type,
                _ => {
                    capture_or_skip(&mut map, node, &mut *found)?;
                    continue;
                }
            };
            *value = map.next_value()?;
            if let (Some(node), Some(scalar)) = (node, value.scalar()) {
                capture_scalar(node, scalar, &mut *found);
            }
        }
        Ok(Details::Object { event_name, event_type })
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Details::Absent)
    }
    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
        Ok(Details::NotObject("a string"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Details::NotObject("a string"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Details::NotObject("a number"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Details::NotObject("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Details::NotObject("a number"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Details::NotObject("a boolean"))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Details::NotObject("an array"))
    }
}
