//! The tables' columns, partition spec and properties, and the check that an
//! existing table still matches what the sink writes.

use std::collections::HashMap;

use iceberg::spec::{
    FormatVersion, ListType, NestedField, PartitionSpec, PrimitiveType, Schema, Transform, Type,
};
use iceberg::table::Table;
use iceberg::TableCreation;

use crate::sink::SinkError;

/// Number of `user_hash_bucket` values. Fixed because it is part of the stored data:
/// changing it would make old and new rows disagree on a user's bucket.
pub const USER_HASH_BUCKETS: u32 = 100;

/// Width of the truncate transform over `user_hash_bucket`: ten buckets share a partition,
/// capping files per day and commit at `USER_HASH_BUCKETS / 10`.
pub const BUCKET_GROUP_WIDTH: u32 = 10;

// Sessions table columns.
pub(super) const COL_UUID: &str = "uuid";
pub(super) const COL_SESSION_ID: &str = "session_id";
pub(super) const COL_START_MS: &str = "session_start_time_ms";
pub(super) const COL_END_MS: &str = "session_end_time_ms";
pub(super) const COL_DURATION: &str = "session_duration_seconds";
pub(super) const COL_EVENT_COUNT: &str = "event_count";
pub(super) const COL_PAGES: &str = "pages_visited";
pub(super) const COL_DATE: &str = "session_date";
pub(super) const COL_BUCKET: &str = "user_hash_bucket";
pub(super) const COL_END_REASON: &str = "end_reason";
pub(super) const COL_RULE_VERSION: &str = "rule_version";
pub(super) const COL_START_TS: &str = "session_start_time";

// Rejected table columns.
pub(super) const COL_RAW: &str = "raw";
pub(super) const COL_REASON: &str = "reason";
pub(super) const COL_SOURCE: &str = "source";
pub(super) const COL_PARTITION: &str = "partition";
pub(super) const COL_POSITION: &str = "position";
pub(super) const COL_REJECTED_AT: &str = "rejected_at_ms";

fn string_type() -> Type {
    Type::Primitive(PrimitiveType::String)
}

pub(super) fn sessions_schema() -> iceberg::Result<Schema> {
    let long = || Type::Primitive(PrimitiveType::Long);
    let int = || Type::Primitive(PrimitiveType::Int);
    let pages =
        Type::List(ListType::new(NestedField::list_element(13, string_type(), true).into()));
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, COL_UUID, string_type())
                .with_doc("User id from the input events")
                .into(),
            NestedField::required(2, COL_SESSION_ID, string_type())
                .with_doc("Deterministic session id: replaying the same input yields the same id")
                .into(),
            NestedField::required(3, COL_START_MS, long())
                .with_doc("Time of the first event, epoch milliseconds")
                .into(),
            NestedField::required(4, COL_END_MS, long())
                .with_doc("Time of the last event, epoch milliseconds")
                .into(),
            NestedField::required(5, COL_DURATION, Type::Primitive(PrimitiveType::Double))
                .with_doc("(end - start) / 1000")
                .into(),
            NestedField::required(6, COL_EVENT_COUNT, int())
                .with_doc("Accepted, de-duplicated events in the session")
                .into(),
            NestedField::required(7, COL_PAGES, pages)
                .with_doc("Distinct pages in order of first visit")
                .into(),
            NestedField::required(8, COL_DATE, Type::Primitive(PrimitiveType::Date))
                .with_doc("UTC date of the session start")
                .into(),
            NestedField::required(9, COL_BUCKET, int())
                .with_doc("Iceberg bucket[100] of uuid")
                .into(),
            NestedField::required(10, COL_END_REASON, string_type())
                .with_doc("Why the session ended: inactivity, max_duration, end_of_input, ...")
                .into(),
            NestedField::required(11, COL_RULE_VERSION, string_type())
                .with_doc("Name, version and content hash of the rules that cut the session")
                .into(),
            NestedField::optional(12, COL_START_TS, Type::Primitive(PrimitiveType::Timestamptz))
                .with_doc("Session start as a timestamp, for engines' time functions")
                .into(),
        ])
        .build()
}

pub(super) fn sessions_creation(name: &str) -> iceberg::Result<TableCreation> {
    let schema = sessions_schema()?;
    let spec = PartitionSpec::builder(schema.clone())
        .add_partition_field(COL_DATE, COL_DATE, Transform::Identity)?
        .add_partition_field(
            COL_BUCKET,
            format!("{COL_BUCKET}_trunc"),
            Transform::Truncate(BUCKET_GROUP_WIDTH),
        )?
        .build()?;
    Ok(TableCreation::builder()
        .name(name.to_string())
        .schema(schema)
        .partition_spec(spec.into_unbound())
        .properties(table_properties())
        .format_version(FormatVersion::V2)
        .build())
}

pub(super) fn rejected_schema() -> iceberg::Result<Schema> {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, COL_RAW, string_type())
                .with_doc("The input record as read (lossily decoded if not UTF-8)")
                .into(),
            NestedField::required(2, COL_REASON, string_type())
                .with_doc("Why it was refused")
                .into(),
            NestedField::required(3, COL_SOURCE, string_type())
                .with_doc("File path or kafka:<topic>")
                .into(),
            NestedField::required(4, COL_PARTITION, Type::Primitive(PrimitiveType::Int))
                .with_doc("Input partition (0 for a file)")
                .into(),
            NestedField::required(5, COL_POSITION, Type::Primitive(PrimitiveType::Long))
                .with_doc("Line number (files, 1-based) or offset (Kafka)")
                .into(),
            NestedField::required(6, COL_REJECTED_AT, Type::Primitive(PrimitiveType::Long))
                .with_doc("Wall clock at commit, epoch milliseconds")
                .into(),
        ])
        .build()
}

pub(super) fn rejected_creation(name: &str) -> iceberg::Result<TableCreation> {
    Ok(TableCreation::builder()
        .name(name.to_string())
        .schema(rejected_schema()?)
        .properties(table_properties())
        .format_version(FormatVersion::V2)
        .build())
}

/// The compression codec is recorded so that other writers (pyiceberg, Spark)
/// compress like this sink does; iceberg-rust itself ignores the property,
/// hence [`writer_properties`]. iceberg-rust's own commit retry is off: it
/// would re-apply an append on a table another writer moved without the
/// job's check whether its checkpoint already landed, so the checkpoint's
/// publish loop retries instead.
pub(super) fn table_properties() -> HashMap<String, String> {
    HashMap::from([
        ("write.parquet.compression-codec".to_string(), "zstd".to_string()),
        ("commit.retry.num-retries".to_string(), "0".to_string()),
    ])
}

/// Fails early, with the column's name, when an existing table was created differently (or
/// evolved incompatibly) instead of failing later inside a write.
pub(super) fn check_columns(table: &Table, expected: &Schema) -> Result<(), SinkError> {
    let actual = table.metadata().current_schema();
    for field in expected.as_struct().fields() {
        let Some(found) = actual.field_by_name(&field.name) else {
            return Err(SinkError::Schema {
                table: table.identifier().to_string(),
                detail: format!("column {} is missing", field.name),
            });
        };
        if !same_shape(&found.field_type, &field.field_type) {
            return Err(SinkError::Schema {
                table: table.identifier().to_string(),
                detail: format!(
                    "column {} has type {} where {} is written",
                    field.name, found.field_type, field.field_type
                ),
            });
        }
    }
    Ok(())
}

/// Type equality ignoring field ids, which the catalog reassigns at creation.
pub(super) fn same_shape(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::List(a), Type::List(b)) => {
            same_shape(&a.element_field.field_type, &b.element_field.field_type)
        }
        (Type::Primitive(a), Type::Primitive(b)) => a == b,
        _ => false,
    }
}
