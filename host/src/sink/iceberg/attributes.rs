//! Session attributes (contract 0.2) as columns of the sessions table: the
//! check a deploy gets (a type that conflicts with a column is refused), the
//! schema update that adds what is missing, and the Arrow arrays of values.
//!
//! Columns are only ever added, as optional: an attribute a later version no
//! longer declares keeps its column and is written as null, so readers see
//! old rows with values and new rows with nulls, never a dropped column.

use std::sync::Arc;

use super::table_catalog::TableCatalog;
use arrow_array::builder::{BooleanBuilder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float64Array, Int64Array};
use arrow_schema::{DataType, Field};
use iceberg::spec::{ListType, NestedField, PrimitiveType, Schema, Type};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};

use super::schema::{same_shape, sessions_schema, COL_BUCKET};
use super::IcebergContext;
use crate::rules::contract::{AttributeType, AttributeValue, SessionAttribute};
use crate::sink::{SessionRow, SinkError};

fn iceberg_type(attribute_type: AttributeType) -> Type {
    let string = || Type::Primitive(PrimitiveType::String);
    match attribute_type {
        AttributeType::String => string(),
        AttributeType::Long => Type::Primitive(PrimitiveType::Long),
        AttributeType::Double => Type::Primitive(PrimitiveType::Double),
        AttributeType::Boolean => Type::Primitive(PrimitiveType::Boolean),
        AttributeType::StringList => {
            Type::List(ListType::new(NestedField::list_element(0, string(), false).into()))
        }
    }
}

/// The columns of `schema` that `attributes` need and it lacks; or, if one
/// cannot be written (a column the sink fills itself, or one of another
/// type), the sentence that says so.
pub(crate) fn missing_columns<'a>(
    schema: &Schema,
    attributes: impl IntoIterator<Item = (&'a str, AttributeType, Option<&'a str>)>,
) -> Result<Vec<AddColumn>, String> {
    let own = sessions_schema().map_err(|e| e.to_string())?;
    let mut missing: Vec<AddColumn> = Vec::new();
    let mut named: Vec<(&str, AttributeType)> = Vec::new();
    for (name, attribute_type, doc) in attributes {
        // The partition fields' names too: engines resolve them beside the columns.
        let partition_field = name == format!("{COL_BUCKET}_trunc");
        if own.field_by_name(name).is_some() || partition_field {
            return Err(format!(
                "attribute {name} is a column the sink writes itself; name it otherwise"
            ));
        }
        if let Some((_, other)) = named.iter().find(|(n, t)| *n == name && *t != attribute_type) {
            return Err(format!(
                "attribute {name} is written both as a {} and as a {}",
                other.name(),
                attribute_type.name()
            ));
        }
        let wanted = iceberg_type(attribute_type);
        match schema.field_by_name(name) {
            Some(column) if same_shape(&column.field_type, &wanted) => {}
            Some(column) => {
                return Err(format!(
                    "attribute {name} is a {}, but column {name} of the sessions table is {}; \
                     a column keeps its type, so name the attribute otherwise",
                    attribute_type.name(),
                    column.field_type
                ))
            }
            None if named.iter().any(|(n, _)| *n == name) => {}
            None => {
                named.push((name, attribute_type));
                let column = AddColumn::builder().name(name).field_type(wanted);
                missing.push(match doc {
                    Some(doc) if !doc.is_empty() => column.doc(doc).build(),
                    _ => column.build(),
                });
            }
        }
    }
    Ok(missing)
}

/// Whether the sessions table (as `schema`) can take `declared`, for a
/// deploy to ask before the swap.
pub(crate) fn check_declared(schema: &Schema, declared: &[SessionAttribute]) -> Result<(), String> {
    let wanted = declared.iter().map(|a| (a.name.as_str(), a.attribute_type, None));
    missing_columns(schema, wanted).map(|_| ())
}

/// Adds the columns `declared` and the attributes of `rows` need to the
/// sessions table; returns the table as committed (unchanged if nothing was
/// missing).
pub(super) async fn add_attribute_columns(
    catalog: &TableCatalog,
    table: Table,
    declared: &[SessionAttribute],
    rows: &[SessionRow],
) -> Result<Table, SinkError> {
    let from_rows = rows
        .iter()
        .flat_map(|row| row.attributes.iter())
        .map(|(name, value)| (&**name, value.attribute_type(), None));
    let wanted = declared
        .iter()
        .map(|a| (a.name.as_str(), a.attribute_type, Some(a.doc.as_str())))
        .chain(from_rows);
    let schema = table.metadata().current_schema().clone();
    let missing = missing_columns(&schema, wanted)
        .map_err(|detail| SinkError::Schema { table: table.identifier().to_string(), detail })?;
    if missing.is_empty() {
        return Ok(table);
    }
    let context = || format!("adding attribute columns to {}", table.identifier());
    let tx = Transaction::new(&table);
    let mut update = tx.update_schema();
    for column in missing {
        update = update.add_column(column);
    }
    let tx = update.apply(tx).context(context)?;
    let table = tx.commit(catalog).await.context(context)?;
    tracing::info!(
        table = %table.identifier(),
        schema = table.metadata().current_schema_id(),
        "attribute columns added"
    );
    Ok(table)
}

/// The values of attribute `field` (an Arrow field of the table) in `rows`,
/// or `None` if the column is not an attribute type (the batch then writes
/// nulls). A value of another type than the column's is written as null:
/// the deploy check keeps that from happening.
pub(super) fn attribute_array<'a>(field: &Field, rows: &[&'a SessionRow]) -> Option<ArrayRef> {
    let name = field.name().as_str();
    let value = |row: &'a SessionRow| value_of(row, name);
    let array: ArrayRef = match field.data_type() {
        DataType::Utf8 => {
            let mut builder = StringBuilder::new();
            for row in rows {
                match value(row) {
                    Some(AttributeValue::String(s)) => builder.append_value(s),
                    _ => builder.append_null(),
                }
            }
            Arc::new(builder.finish())
        }
        DataType::Int64 => {
            Arc::new(Int64Array::from_iter(rows.iter().map(|row| match value(row) {
                Some(AttributeValue::Long(n)) => Some(*n),
                _ => None,
            })))
        }
        DataType::Float64 => {
            Arc::new(Float64Array::from_iter(rows.iter().map(|row| match value(row) {
                Some(AttributeValue::Double(x)) => Some(*x),
                _ => None,
            })))
        }
        DataType::Boolean => {
            let mut builder = BooleanBuilder::new();
            for row in rows {
                match value(row) {
                    Some(AttributeValue::Boolean(b)) => builder.append_value(*b),
                    _ => builder.append_null(),
                }
            }
            Arc::new(builder.finish())
        }
        DataType::List(element) if element.data_type() == &DataType::Utf8 => {
            let mut builder = ListBuilder::new(StringBuilder::new()).with_field(element.clone());
            for row in rows {
                match value(row) {
                    Some(AttributeValue::StringList(list)) => {
                        for s in list {
                            builder.values().append_value(s);
                        }
                        builder.append(true);
                    }
                    _ => builder.append(false),
                }
            }
            Arc::new(builder.finish())
        }
        _ => return None,
    };
    Some(array)
}

fn value_of<'r>(row: &'r SessionRow, name: &str) -> Option<&'r AttributeValue> {
    row.attributes.iter().find(|(n, _)| &**n == name).map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(name: &str, attribute_type: AttributeType) -> SessionAttribute {
        SessionAttribute { name: name.into(), attribute_type, doc: "d".into() }
    }

    #[test]
    fn a_deploy_may_add_columns_but_not_retype_or_take_the_sinks_own() {
        let mut schema = sessions_schema().unwrap();
        let ok = [attribute("revenue", AttributeType::Double)];
        assert_eq!(check_declared(&schema, &ok), Ok(()));
        for own in ["end_reason", "user_hash_bucket_trunc"] {
            let taken = check_declared(&schema, &[attribute(own, AttributeType::String)]);
            assert_eq!(
                taken.unwrap_err(),
                format!("attribute {own} is a column the sink writes itself; name it otherwise")
            );
        }
        let twice = [attribute("x", AttributeType::Long), attribute("x", AttributeType::Double)];
        assert_eq!(
            check_declared(&schema, &twice).unwrap_err(),
            "attribute x is written both as a long and as a double"
        );
        // Once the table has `revenue` as a double, a long of that name is refused.
        let fields = schema.as_struct().fields().to_vec();
        let mut with_revenue = fields.clone();
        with_revenue
            .push(NestedField::optional(99, "revenue", iceberg_type(AttributeType::Double)).into());
        schema = Schema::builder().with_fields(with_revenue).build().unwrap();
        assert_eq!(check_declared(&schema, &ok), Ok(()));
        let retyped = check_declared(&schema, &[attribute("revenue", AttributeType::Long)]);
        assert_eq!(
            retyped.unwrap_err(),
            "attribute revenue is a long, but column revenue of the sessions table is double; \
             a column keeps its type, so name the attribute otherwise"
        );
    }
}
