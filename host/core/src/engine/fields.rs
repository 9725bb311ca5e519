//! Declared event fields in the engine: the values each waiting event
//! carries, and mapping them when the rules in force declare other fields
//! (after a swap, a rollback, or a restart with other rules). A field the
//! new rules add is absent in events that arrived before; one they drop is
//! forgotten.

use std::sync::Arc;

use super::users::FieldRow;
use super::Engine;
use crate::event::{Captured, FieldPaths, Fields};
use crate::rules::contract::{EventField, FieldValue, FieldValues};

impl Engine {
    /// The values of the engine's fields in `fields` (parsed for the same
    /// fields, or mapped by path and type from others), strings interned.
    pub(super) fn field_values(&mut self, fields: Option<Fields<'_>>) -> FieldRow {
        if self.fields.is_empty() {
            return FieldRow::new();
        }
        let Some(fields) = fields else { return FieldRow::from_elem(None, self.fields.len()) };
        let same = std::ptr::eq(fields.paths(), &*self.fields) || *fields.paths() == *self.fields;
        let mut values = FieldRow::with_capacity(self.fields.len());
        for (index, field) in self.fields.fields().iter().enumerate() {
            let from = if same { Some(index) } else { position(fields.paths().fields(), field) };
            let value = from.and_then(|i| fields.get(i)).map(|captured| match captured {
                Captured::Str(s) => FieldValue::Text(self.texts.intern(&s)),
                Captured::Integer(n) => FieldValue::Integer(n),
                Captured::Float(x) => FieldValue::Float(x),
                Captured::Boolean(b) => FieldValue::Boolean(b),
            });
            values.push(value);
        }
        values
    }

    /// Makes `declared` the fields events carry: maps every waiting event's
    /// values, and the columns of batches built but not yet applied.
    pub(super) fn remap_fields(&mut self, declared: &[EventField]) {
        let old = std::mem::replace(&mut self.fields, Arc::new(FieldPaths::new(declared)));
        let from: Vec<Option<usize>> =
            declared.iter().map(|field| position(old.fields(), field)).collect();
        for user in self.users.ids() {
            let slot = self.users.slot_mut(user);
            if slot.pending.is_empty() {
                continue;
            }
            for pending in slot.pending.iter_mut() {
                let values = from.iter().map(|i| i.and_then(|i| *pending.fields.get(i)?));
                pending.fields = values.collect();
            }
            // Stored in the old layout: the next checkpoint writes it anew.
            self.users.mark_dirty(user);
        }
        for flight in &mut self.in_flight {
            flight.refit_fields(old.fields(), declared);
        }
        // The sample's columns are the old fields': the next batch takes a new one.
        self.sample = None;
    }

    /// Empty columns for the engine's fields.
    pub(super) fn empty_columns(&self) -> Vec<FieldValues> {
        self.fields.fields().iter().map(|f| FieldValues::with_capacity(f.field_type, 0)).collect()
    }
}

/// Where `field` (same path, same type) is among `fields`.
fn position(fields: &[EventField], field: &EventField) -> Option<usize> {
    fields.iter().position(|f| f == field)
}
