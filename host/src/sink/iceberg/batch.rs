//! Rows to Arrow record batches in the table's current column order, and the
//! `user_hash_bucket` column computed with Iceberg's own transform.

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    new_null_array, Array, ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, FieldRef, SchemaRef as ArrowSchemaRef};
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::Transform;
use iceberg::table::Table;
use iceberg::transform::create_transform_function;
use iceberg::ErrorKind;

use super::schema::*;
use super::IcebergContext;
use crate::sink::{RejectedEvent, SessionRow, SinkError};

const MS_PER_DAY: i64 = 86_400_000;

/// Iceberg's `bucket[100]` of each user id (Murmur3 x86 32-bit, seed 0, as the Iceberg spec
/// defines it), computed by iceberg-rust's own transform so the stored column always agrees
/// with what any Iceberg engine computes for `bucket(100, uuid)`. Null ids give null buckets.
pub fn user_hash_bucket(uuids: &StringArray) -> Result<Int32Array, SinkError> {
    let context = || format!("computing bucket[{USER_HASH_BUCKETS}] of user ids");
    let function =
        create_transform_function(&Transform::Bucket(USER_HASH_BUCKETS)).context(context)?;
    let input: ArrayRef = Arc::new(uuids.clone());
    let output = function.transform(input).context(context)?;
    output.as_any().downcast_ref::<Int32Array>().cloned().ok_or_else(|| SinkError::Iceberg {
        context: context(),
        source: Box::new(iceberg::Error::new(
            ErrorKind::Unexpected,
            format!("bucket transform returned {} instead of Int32", output.data_type()),
        )),
    })
}

/// `bucket[100]` of a single user id, for callers (tests, query helpers) that have one id
/// rather than an Arrow array.
pub fn user_hash_bucket_of(uuid: &str) -> Result<i32, SinkError> {
    let buckets = user_hash_bucket(&StringArray::from(vec![uuid]))?;
    if buckets.len() == 1 && buckets.is_valid(0) {
        Ok(buckets.value(0))
    } else {
        Err(SinkError::Iceberg {
            context: format!("computing bucket[{USER_HASH_BUCKETS}] of user id {uuid}"),
            source: Box::new(iceberg::Error::new(
                ErrorKind::Unexpected,
                "bucket transform returned null",
            )),
        })
    }
}

fn arrow_schema(table: &Table) -> Result<ArrowSchemaRef, SinkError> {
    schema_to_arrow_schema(table.metadata().current_schema())
        .map(Arc::new)
        .context(|| format!("converting the schema of {} to Arrow", table.identifier()))
}

/// Assembles a batch in the table's current column order, filling columns the sink does not
/// know (added later by someone else) with nulls when they are optional.
fn assemble_batch(
    table: &Table,
    rows: usize,
    mut column: impl FnMut(&Field) -> Result<Option<ArrayRef>, SinkError>,
) -> Result<RecordBatch, SinkError> {
    let schema = arrow_schema(table)?;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match column(field)? {
            Some(array) => columns.push(array),
            None if field.is_nullable() => columns.push(new_null_array(field.data_type(), rows)),
            None => {
                return Err(SinkError::Schema {
                    table: table.identifier().to_string(),
                    detail: format!("required column {} is not written by the sink", field.name()),
                })
            }
        }
    }
    RecordBatch::try_new(schema, columns)
        .map_err(|source| SinkError::Arrow { table: table.identifier().to_string(), source })
}

fn session_date(row: &SessionRow) -> Result<i32, SinkError> {
    i32::try_from(row.start_ms.div_euclid(MS_PER_DAY)).map_err(|_| SinkError::InvalidRow {
        uuid: row.uuid.clone(),
        session_id: row.session_id.clone(),
        detail: format!("start {} ms is outside the date range", row.start_ms),
    })
}

/// Builds the sessions batch sorted by (date, bucket, uuid, start) so each data file holds
/// a contiguous key range: tight min/max statistics for pruning and better compression.
pub(super) fn sessions_batch(
    table: &Table,
    sessions: &[SessionRow],
) -> Result<RecordBatch, SinkError> {
    let uuids = StringArray::from_iter_values(sessions.iter().map(|s| s.uuid.as_str()));
    let buckets = user_hash_bucket(&uuids)?;
    let dates = sessions.iter().map(session_date).collect::<Result<Vec<_>, _>>()?;

    let mut order: Vec<usize> = (0..sessions.len()).collect();
    let key = |i: usize| {
        let s = &sessions[i];
        (dates[i], buckets.value(i), s.uuid.as_str(), s.start_ms, s.session_id.as_str())
    };
    order.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)));
    let rows: Vec<&SessionRow> = order.iter().map(|&i| &sessions[i]).collect();

    let mut event_counts = Vec::with_capacity(rows.len());
    for row in &rows {
        event_counts.push(i32::try_from(row.event_count).map_err(|_| SinkError::InvalidRow {
            uuid: row.uuid.clone(),
            session_id: row.session_id.clone(),
            detail: format!("event_count {} exceeds the int column", row.event_count),
        })?);
    }

    assemble_batch(table, rows.len(), |field| {
        let array: ArrayRef = match field.name().as_str() {
            COL_UUID => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.uuid))),
            COL_SESSION_ID => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.session_id)))
            }
            COL_START_MS => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.start_ms))),
            COL_END_MS => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.end_ms))),
            COL_DURATION => Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.end_ms.saturating_sub(r.start_ms) as f64 / 1000.0),
            )),
            COL_EVENT_COUNT => Arc::new(Int32Array::from(event_counts.clone())),
            COL_PAGES => Arc::new(pages_array(table, field, &rows)?),
            COL_DATE => Arc::new(Date32Array::from_iter_values(order.iter().map(|&i| dates[i]))),
            COL_BUCKET => {
                Arc::new(Int32Array::from_iter_values(order.iter().map(|&i| buckets.value(i))))
            }
            COL_END_REASON => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.end_reason)))
            }
            COL_RULE_VERSION => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &*r.rule_version)))
            }
            COL_START_TS => {
                let timezone = match field.data_type() {
                    DataType::Timestamp(_, timezone) => timezone.clone(),
                    _ => None,
                };
                // Null rather than a failed commit for starts beyond the microsecond range.
                Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        rows.iter().map(|r| r.start_ms.checked_mul(1000)),
                    )
                    .with_timezone_opt(timezone),
                )
            }
            _ => return Ok(None),
        };
        Ok(Some(array))
    })
}

/// The list column must use the table's own element field (name, nullability and field-id
/// metadata), or Arrow rejects the batch as not matching the schema.
fn pages_array(
    table: &Table,
    field: &Field,
    rows: &[&SessionRow],
) -> Result<arrow_array::ListArray, SinkError> {
    let element: FieldRef = match field.data_type() {
        DataType::List(element) => element.clone(),
        other => {
            return Err(SinkError::Schema {
                table: table.identifier().to_string(),
                detail: format!("column {COL_PAGES} is {other}, not a list"),
            })
        }
    };
    let pages: usize = rows.iter().map(|r| r.pages.len()).sum();
    let mut builder =
        ListBuilder::with_capacity(StringBuilder::with_capacity(pages, pages * 16), rows.len())
            .with_field(element);
    for row in rows {
        for page in &row.pages {
            builder.values().append_value(page);
        }
        builder.append(true);
    }
    Ok(builder.finish())
}

pub(super) fn rejected_batch(
    table: &Table,
    rejected: &[RejectedEvent],
    rejected_at_ms: i64,
) -> Result<RecordBatch, SinkError> {
    assemble_batch(table, rejected.len(), |field| {
        let array: ArrayRef = match field.name().as_str() {
            COL_RAW => Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| &r.raw))),
            COL_REASON => {
                Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| &r.reason)))
            }
            COL_SOURCE => {
                Arc::new(StringArray::from_iter_values(rejected.iter().map(|r| &r.source)))
            }
            COL_PARTITION => {
                Arc::new(Int32Array::from_iter_values(rejected.iter().map(|r| r.partition)))
            }
            COL_POSITION => {
                Arc::new(Int64Array::from_iter_values(rejected.iter().map(|r| r.position)))
            }
            COL_REJECTED_AT => Arc::new(Int64Array::from_value(rejected_at_ms, rejected.len())),
            _ => return Ok(None),
        };
        Ok(Some(array))
    })
}
