//! Printing a query's rows: a table for people, CSV, or JSON lines, with
//! arrow's own writers.

use std::io::Write;

use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder as JsonWriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;

use super::{QueryError, QueryResult};

/// How [`write_result`] prints the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A text table with a header, for people.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row and line.
    Json,
}

impl OutputFormat {
    fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "a table",
            OutputFormat::Csv => "CSV",
            OutputFormat::Json => "JSON lines",
        }
    }
}

/// Writes `result`'s rows to `out` as `format`. A reader that stops early (a
/// closed pipe, `| head`) is no error.
pub fn write_result(
    result: &QueryResult,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), QueryError> {
    let mut out = PipeWatch { out, closed: false };
    match write_rows(result, format, &mut out) {
        // A reader that went away: the writers report it each in its own way.
        Err(_) if out.closed => Ok(()),
        Err(source) => {
            // arrow-csv says so only in words.
            let nested = source.to_string().contains("not supported in CSV");
            let hint = if nested {
                " (CSV holds no lists: leave list columns such as pages_visited out, or use \
                 --format json)"
            } else {
                ""
            };
            Err(QueryError::Output { format: format.name(), hint, source })
        }
        Ok(()) => Ok(()),
    }
}

/// A writer that remembers whether its reader went away.
struct PipeWatch<'a> {
    out: &'a mut dyn Write,
    closed: bool,
}

impl PipeWatch<'_> {
    fn watch<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result {
            self.closed |= e.kind() == std::io::ErrorKind::BrokenPipe;
        }
        result
    }
}

impl Write for PipeWatch<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.out.write(buf);
        self.watch(result)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.out.flush();
        self.watch(result)
    }
}

fn write_rows(
    result: &QueryResult,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), ArrowError> {
    match format {
        OutputFormat::Table => {
            let table = pretty_format_batches_with_schema(result.schema.clone(), &result.batches)?;
            writeln!(out, "{table}")?;
        }
        OutputFormat::Csv => {
            let mut writer = CsvWriterBuilder::new().with_header(true).build(&mut *out);
            // An empty batch first: the header, also when there are no rows.
            writer.write(&RecordBatch::new_empty(result.schema.clone()))?;
            for batch in &result.batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            // Every column on every line, null ones too.
            let mut writer = JsonWriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, LineDelimited>(&mut *out);
            writer.write_batches(&result.batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Date32Array, Int32Array, ListBuilder, StringBuilder};
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn result() -> QueryResult {
        let schema = Arc::new(Schema::new(vec![
            Field::new("session_date", DataType::Date32, false),
            Field::new("sessions", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Date32Array::from(vec![20_090, 20_091])),
                Arc::new(Int32Array::from(vec![Some(3), None])),
            ],
        )
        .unwrap();
        QueryResult { schema, batches: vec![batch], scans: Vec::new() }
    }

    fn written(result: &QueryResult, format: OutputFormat) -> String {
        let mut out = Vec::new();
        write_result(result, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn results_print_as_a_table_csv_or_json_lines() {
        let table = written(&result(), OutputFormat::Table);
        assert!(table.contains("| session_date | sessions |"), "{table}");
        assert!(table.contains("| 2025-01-02   | 3        |"), "{table}");
        assert_eq!(
            written(&result(), OutputFormat::Csv),
            "session_date,sessions\n2025-01-02,3\n2025-01-03,\n"
        );
        assert_eq!(
            written(&result(), OutputFormat::Json),
            "{\"session_date\":\"2025-01-02\",\"sessions\":3}\n\
             {\"session_date\":\"2025-01-03\",\"sessions\":null}\n"
        );
    }

    #[test]
    fn no_rows_still_print_the_columns() {
        let empty = QueryResult { batches: Vec::new(), ..result() };
        assert!(written(&empty, OutputFormat::Table).contains("session_date"));
        assert_eq!(written(&empty, OutputFormat::Csv), "session_date,sessions\n");
        assert_eq!(written(&empty, OutputFormat::Json), "");
    }

    #[test]
    fn csv_refuses_lists_with_a_way_out() {
        let mut pages = ListBuilder::new(StringBuilder::new());
        pages.values().append_value("/home");
        pages.append(true);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "pages_visited",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            false,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(pages.finish())]).unwrap();
        let result = QueryResult { schema, batches: vec![batch], scans: Vec::new() };
        let error = write_result(&result, OutputFormat::Csv, &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("--format json"), "{error}");
        assert!(written(&result, OutputFormat::Json).contains("[\"/home\"]"));
    }

    #[test]
    fn a_reader_that_went_away_is_no_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for format in [OutputFormat::Table, OutputFormat::Csv, OutputFormat::Json] {
            assert!(write_result(&result(), format, &mut Closed).is_ok(), "{format:?}");
        }
    }
}
