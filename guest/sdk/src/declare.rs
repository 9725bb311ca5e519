//! Declared event fields and session attributes (contract 0.2), as typed
//! constants: a plugin names each once and reads or writes it through the
//! constant, so a type mismatch is a compile error, not a runtime surprise.

use std::marker::PhantomData;

use crate::wit::{self, AttributeValue, FieldValues};
use crate::TextTable;

/// An event field the rules read, by its dotted path and its type:
/// `Field<f64>` (any number), `Field<i64>` (whole numbers), `Field<bool>`,
/// `Field<str>` (strings).
///
/// ```
/// use sessionize_sdk::Field;
/// const EVENT_VALUE: Field<f64> = Field::new("event_details.event_value");
/// ```
pub struct Field<T: FieldKind + ?Sized> {
    path: &'static str,
    kind: PhantomData<fn() -> Box<T>>,
}

impl<T: FieldKind + ?Sized> Field<T> {
    /// The field at `path`, keys separated by dots from the event's top level.
    pub const fn new(path: &'static str) -> Self {
        Self { path, kind: PhantomData }
    }

    /// Its path.
    pub fn path(&self) -> &'static str {
        self.path
    }
}

/// A type an event field can have.
pub trait FieldKind {
    /// What reading the field gives.
    type Value<'a>;
    #[doc(hidden)]
    const TYPE: wit::FieldType;
    #[doc(hidden)]
    fn read<'a>(
        column: &'a FieldValues,
        event: usize,
        texts: &'a TextTable,
    ) -> Option<Self::Value<'a>>;
}

impl FieldKind for f64 {
    type Value<'a> = f64;
    const TYPE: wit::FieldType = wit::FieldType::Float;
    fn read(column: &FieldValues, event: usize, _: &TextTable) -> Option<f64> {
        match column {
            FieldValues::Float(values) => values.get(event).copied().flatten(),
            _ => None,
        }
    }
}

impl FieldKind for i64 {
    type Value<'a> = i64;
    const TYPE: wit::FieldType = wit::FieldType::Integer;
    fn read(column: &FieldValues, event: usize, _: &TextTable) -> Option<i64> {
        match column {
            FieldValues::Integer(values) => values.get(event).copied().flatten(),
            _ => None,
        }
    }
}

impl FieldKind for bool {
    type Value<'a> = bool;
    const TYPE: wit::FieldType = wit::FieldType::Boolean;
    fn read(column: &FieldValues, event: usize, _: &TextTable) -> Option<bool> {
        match column {
            FieldValues::Boolean(values) => values.get(event).copied().flatten(),
            _ => None,
        }
    }
}

impl FieldKind for str {
    type Value<'a> = &'a str;
    const TYPE: wit::FieldType = wit::FieldType::String;
    fn read<'a>(column: &'a FieldValues, event: usize, texts: &'a TextTable) -> Option<&'a str> {
        match column {
            FieldValues::String(values) => texts.get(values.get(event).copied().flatten()?),
            _ => None,
        }
    }
}

/// A session attribute the rules compute, written as an optional column of
/// the sessions table: `Attribute<bool>`, `Attribute<i64>` (long),
/// `Attribute<f64>` (double), `Attribute<String>`, `Attribute<Vec<String>>`.
///
/// ```
/// use sessionize_sdk::Attribute;
/// const CONVERTED: Attribute<bool> = Attribute::new("converted", "Reached a confirmation");
/// ```
pub struct Attribute<T: AttributeKind> {
    name: &'static str,
    doc: &'static str,
    kind: PhantomData<fn() -> T>,
}

impl<T: AttributeKind> Attribute<T> {
    /// The attribute written to column `name` (`[a-z][a-z0-9_]*`), documented by `doc`.
    pub const fn new(name: &'static str, doc: &'static str) -> Self {
        Self { name, doc, kind: PhantomData }
    }

    /// Its column's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A type a session attribute can have.
pub trait AttributeKind: Sized {
    /// What reading the attribute gives: the value, or a borrow of a string
    /// or list (reading costs no copy).
    type Ref<'a>;
    #[doc(hidden)]
    const TYPE: wit::AttributeType;
    #[doc(hidden)]
    fn view(value: &AttributeValue) -> Option<Self::Ref<'_>>;
    #[doc(hidden)]
    fn from_value(value: &AttributeValue) -> Option<Self>;
    #[doc(hidden)]
    fn into_value(self) -> AttributeValue;
}

macro_rules! attribute_kind {
    ($type:ty, $ref:ty, $variant:ident, $view:expr, $copy:expr) => {
        impl AttributeKind for $type {
            type Ref<'a> = $ref;
            const TYPE: wit::AttributeType = wit::AttributeType::$variant;
            fn view(value: &AttributeValue) -> Option<Self::Ref<'_>> {
                match value {
                    AttributeValue::$variant(v) => Some($view(v)),
                    _ => None,
                }
            }
            fn from_value(value: &AttributeValue) -> Option<Self> {
                match value {
                    AttributeValue::$variant(v) => Some($copy(v)),
                    _ => None,
                }
            }
            fn into_value(self) -> AttributeValue {
                AttributeValue::$variant(self)
            }
        }
    };
}

attribute_kind!(bool, bool, Boolean, copy, copy);
attribute_kind!(i64, i64, Long, copy, copy);
attribute_kind!(f64, f64, Double, copy, copy);
attribute_kind!(String, &'a str, String, String::as_str, String::clone);
attribute_kind!(Vec<String>, &'a [String], StringList, Vec::as_slice, Vec::clone);

fn copy<T: Copy>(value: &T) -> T {
    *value
}

/// What a plugin declares in [`Rules::declare`](crate::Rules::declare).
#[derive(Debug, Default, Clone)]
pub struct Declare {
    pub(crate) fields: Vec<(&'static str, wit::FieldType)>,
    pub(crate) attributes: Vec<(&'static str, wit::AttributeType, &'static str)>,
}

impl Declare {
    /// The rules read `field`: the host extracts it from every event.
    pub fn field<T: FieldKind + ?Sized>(&mut self, field: &Field<T>) -> &mut Self {
        self.fields.push((field.path, T::TYPE));
        self
    }

    /// The rules write `attribute` for every session (null where unset).
    pub fn attribute<T: AttributeKind>(&mut self, attribute: &Attribute<T>) -> &mut Self {
        self.attributes.push((attribute.name, T::TYPE, attribute.doc));
        self
    }

    /// Index of the field at `path` among the declared ones. Called per
    /// event: the constant's own string is found by address first.
    pub(crate) fn field_index(&self, path: &'static str) -> Option<usize> {
        let same = |p: &&str| std::ptr::eq(p.as_ptr(), path.as_ptr()) && p.len() == path.len();
        (self.fields.iter().position(|(p, _)| same(p)))
            .or_else(|| self.fields.iter().position(|(p, _)| *p == path))
    }

    /// Index of the attribute `name` among the declared ones (by address
    /// first, as [`Declare::field_index`]).
    pub(crate) fn attribute_index(&self, name: &'static str) -> Option<usize> {
        let same = |n: &&str| std::ptr::eq(n.as_ptr(), name.as_ptr()) && n.len() == name.len();
        (self.attributes.iter().position(|(n, _, _)| same(n)))
            .or_else(|| self.attributes.iter().position(|(n, _, _)| *n == name))
    }

    /// In the contract's form.
    pub(crate) fn to_wit(&self) -> wit::Declarations {
        wit::Declarations {
            fields: self
                .fields
                .iter()
                .map(|(path, type_)| wit::EventField { path: (*path).into(), type_: *type_ })
                .collect(),
            attributes: self
                .attributes
                .iter()
                .map(|(name, type_, doc)| wit::SessionAttribute {
                    name: (*name).into(),
                    type_: *type_,
                    doc: (*doc).into(),
                })
                .collect(),
        }
    }
}
