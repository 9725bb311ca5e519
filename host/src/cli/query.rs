//! `sessionize query`'s flags.

use clap::Args;
#[cfg(feature = "query")]
use sessionize::query::OutputFormat;

use super::TableArgs;

/// `sessionize query`: SQL over the job's tables.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL: one SELECT (or EXPLAIN, SHOW TABLES, DESCRIBE) over the
    /// tables, named namespace.table (sessions.user_sessions,
    /// sessions.rejected_events); nothing that changes them.
    #[arg(value_name = "SQL")]
    pub sql: String,
    /// How to print the rows: a text table, CSV with a header, or one JSON
    /// object per line.
    #[arg(long, value_enum, default_value = "table")]
    pub format: QueryFormat,
    /// Print to stderr how many data files each table scan read, of the files
    /// in the table's current snapshot (filters on session_date and
    /// user_hash_bucket skip whole files).
    #[arg(long)]
    pub stats: bool,
    /// Where the tables are: the same flags as `run`.
    #[command(flatten)]
    pub table: TableArgs,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryFormat {
    /// A text table with a header.
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON lines: one object per row.
    Json,
}

#[cfg(feature = "query")]
impl QueryArgs {
    /// The output format these flags ask for.
    pub fn output_format(&self) -> OutputFormat {
        match self.format {
            QueryFormat::Table => OutputFormat::Table,
            QueryFormat::Csv => OutputFormat::Csv,
            QueryFormat::Json => OutputFormat::Json,
        }
    }
}
