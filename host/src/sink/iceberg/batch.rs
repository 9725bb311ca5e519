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

use super::attributes::attribute_array;
use super::schema::*;
use super::IcebergContext;
use crate::rules::contract::AttributeValue;
use crate::sink::{RejectedEvent, SessionRow, SinkError, UnwritableRow};

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

/// The earliest session time the table takes: 0001-01-01T00:00:00Z. Spark, and
/// pyiceberg through Python's `datetime`, read dates of the years 1 to 9999
/// only; iceberg-rust's own partitioning panics past the year 262143.
pub const EARLIEST_SESSION_MS: i64 = -62_135_596_800_000;

/// The latest session time the table takes: 9999-12-31T23:59:59.999Z.
pub const LATEST_SESSION_MS: i64 = 253_402_300_799_999;

/// Most text (all string columns together) in one sessions batch. Arrow's string
/// arrays address their bytes with `i32`, and building past that panics; batches
/// of at most this stay far from it and bound a batch's memory. A session with
/// more text than this alone is refused.
pub const MAX_BATCH_TEXT_BYTES: usize = 64 << 20;

/// Whether the sessions table can store `row`: times the table's readers can
/// represent, a count that fits the `int` column, text that fits a batch.
pub(super) fn check_session(row: &SessionRow) -> Result<(), UnwritableRow> {
    for (which, ms) in [("start", row.start_ms), ("end", row.end_ms)] {
        if !(EARLIEST_SESSION_MS..=LATEST_SESSION_MS).contains(&ms) {
            return Err(UnwritableRow::TimeOutOfRange {
                which,
                ms,
                first_year: 1,
                last_year: 9999,
            });
        }
    }
    let max = i32::MAX.unsigned_abs();
    if row.event_count > max {
        return Err(UnwritableRow::CountOutOfRange { count: row.event_count, max });
    }
    let bytes = text_bytes(row);
    if bytes > MAX_BATCH_TEXT_BYTES {
        return Err(UnwritableRow::TooMuchText { bytes, max: MAX_BATCH_TEXT_BYTES });
    }
    Ok(())
}

/// Bytes the row adds to the batch's string arrays.
fn text_bytes(row: &SessionRow) -> usize {
    let pages: usize = row.pages.iter().map(|page| page.len()).sum();
    let attributes: usize = row
        .attributes
        .iter()
        .map(|(_, value)| match value {
            AttributeValue::String(s) => s.len(),
            AttributeValue::StringList(list) => list.iter().map(String::len).sum(),
            _ => 0,
        })
        .sum();
    row.uuid.len()
        + row.session_id.len()
        + row.end_reason.len()
        + row.rule_version.len()
        + pages
        + attributes
}

/// Splits rows into consecutive runs of at most `max` bytes of text each (a row
/// larger than `max` alone makes a run of its own); returns where each run but
/// the first starts.
fn run_starts(bytes: impl Iterator<Item = usize>, max: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut in_run = 0usize;
    for (i, row_bytes) in bytes.enumerate() {
        if in_run > 0 && in_run.saturating_add(row_bytes) > max {
            starts.push(i);
            in_run = 0;
        }
        in_run = in_run.saturating_add(row_bytes);
    }
    starts
}

/// A session with its partition values, in the order it is written.
struct Placed<'a> {
    row: &'a SessionRow,
    date: i32,
    bucket: i32,
}

/// The sessions as batches of at most `max_text` bytes of text, sorted by (date,
/// bucket, uuid, start) so each data file holds a contiguous key range: tight
/// min/max statistics for pruning and better compression. Every row is checked
/// first, so nothing the writer would choke on reaches it. Batches are built
/// one at a time, as the writer takes them.
pub(super) fn sessions_batches<'a>(
    table: &'a Table,
    sessions: &'a [SessionRow],
    max_text: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch, SinkError>> + 'a, SinkError> {
    for row in sessions {
        check_session(row).map_err(|reason| SinkError::InvalidRow {
            uuid: row.uuid.clone(),
            session_id: row.session_id.clone(),
            reason,
        })?;
    }
    let uuids = StringArray::from_iter_values(sessions.iter().map(|s| s.uuid.as_str()));
    let buckets = user_hash_bucket(&uuids)?;
    let mut placed: Vec<Placed<'a>> = sessions
        .iter()
        .enumerate()
        .map(|(i, row)| Placed {
            row,
            date: row.start_ms.div_euclid(MS_PER_DAY) as i32,
            bucket: buckets.value(i),
        })
        .collect();
    let key = |p: &Placed<'a>| {
        (p.date, p.bucket, p.row.uuid.as_str(), p.row.start_ms, p.row.session_id.as_str())
    };
    placed.sort_unstable_by(|a, b| key(a).cmp(&key(b)));

    let mut ends = run_starts(placed.iter().map(|p| text_bytes(p.row)), max_text);
    ends.push(placed.len());
    let mut start = 0;
    Ok(ends.into_iter().map(move |end| {
        let run = &placed[start..end];
        start = end;
        sessions_batch(table, run)
    }))
}

fn sessions_batch(table: &Table, rows: &[Placed<'_>]) -> Result<RecordBatch, SinkError> {
    assemble_batch(table, rows.len(), |field| {
        let array: ArrayRef = match field.name().as_str() {
            COL_UUID => Arc::new(StringArray::from_iter_values(rows.iter().map(|p| &p.row.uuid))),
            COL_SESSION_ID => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|p| &p.row.session_id)))
            }
            COL_START_MS => {
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|p| p.row.start_ms)))
            }
            COL_END_MS => Arc::new(Int64Array::from_iter_values(rows.iter().map(|p| p.row.end_ms))),
            COL_DURATION => Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|p| p.row.end_ms.saturating_sub(p.row.start_ms) as f64 / 1000.0),
            )),
            // Checked to fit: the cast cannot wrap.
            COL_EVENT_COUNT => Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|p| p.row.event_count as i32),
            )),
            COL_PAGES => Arc::new(pages_array(table, field, rows)?),
            COL_DATE => Arc::new(Date32Array::from_iter_values(rows.iter().map(|p| p.date))),
            COL_BUCKET => Arc::new(Int32Array::from_iter_values(rows.iter().map(|p| p.bucket))),
            COL_END_REASON => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|p| &p.row.end_reason)))
            }
            COL_RULE_VERSION => {
                Arc::new(StringArray::from_iter_values(rows.iter().map(|p| &*p.row.rule_version)))
            }
            COL_START_TS => {
                let timezone = match field.data_type() {
                    DataType::Timestamp(_, timezone) => timezone.clone(),
                    _ => None,
                };
                // Checked to be in range: the product cannot overflow.
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|p| p.row.start_ms.saturating_mul(1000)),
                    )
                    .with_timezone_opt(timezone),
                )
            }
            _ => {
                // Not a column of the sink's own: an attribute's, if any row has it.
                let rows: Vec<&SessionRow> = rows.iter().map(|p| p.row).collect();
                return Ok(attribute_array(field, &rows));
            }
        };
        Ok(Some(array))
    })
}

/// The list column must use the table's own element field (name, nullability and field-id
/// metadata), or Arrow rejects the batch as not matching the schema.
fn pages_array(
    table: &Table,
    field: &Field,
    rows: &[Placed<'_>],
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
    let pages: usize = rows.iter().map(|p| p.row.pages.len()).sum();
    let mut builder =
        ListBuilder::with_capacity(StringBuilder::with_capacity(pages, pages * 16), rows.len())
            .with_field(element);
    for placed in rows {
        for page in &placed.row.pages {
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

#[cfg(test)]
mod tests {
    use super::run_starts;

    #[test]
    fn runs_hold_at_most_the_text_limit_and_an_oversized_row_stands_alone() {
        assert_eq!(run_starts([4, 4, 4, 4].into_iter(), 8), [2]);
        assert_eq!(run_starts([4, 5, 3, 20, 1].into_iter(), 8), [1, 3, 4]);
        assert_eq!(run_starts([8].into_iter(), 8), Vec::<usize>::new());
        assert_eq!(run_starts(std::iter::empty(), 8), Vec::<usize>::new());
    }
}
