//! The flags that say where the tables are, shared by `run` and `maintain`,
//! and `maintain`'s own.

use clap::Args;
use sessionize::checkpoint::JOB_ID_KEY;
use sessionize::sink::iceberg::maintain::{CompactionOptions, ExpiryOptions};
use sessionize::sink::iceberg::{CatalogUri, S3Options, SinkConfig, Warehouse};

/// Where the Iceberg tables are: warehouse, catalog, object store, names.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// Where the tables' files go: a directory (holding catalog.db too), or
    /// s3://bucket/prefix (then give --catalog-uri).
    #[arg(long, env = "ICEBERG_WAREHOUSE", default_value = "./warehouse")]
    pub warehouse: Warehouse,
    /// The catalog, shared by every writer and reader of the tables:
    /// sqlite:///path/catalog.db or postgres://user:password@host:port/db
    /// [default: sqlite in the warehouse directory].
    #[arg(long, env = "ICEBERG_CATALOG_URI")]
    pub catalog_uri: Option<CatalogUri>,
    /// Endpoint of an S3-compatible store (http://127.0.0.1:9000); credentials
    /// come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// Region requests to the store are signed for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Address the bucket as endpoint/bucket rather than bucket.endpoint,
    /// which most S3-compatible stores need (always so for an endpoint that
    /// is an IP address or localhost).
    #[arg(long)]
    pub s3_path_style: bool,
    /// Iceberg namespace.
    #[arg(long, default_value = "sessions")]
    pub iceberg_database: String,
    /// Iceberg table for sessions.
    #[arg(long, default_value = "user_sessions")]
    pub iceberg_table: String,
}

impl TableArgs {
    /// The sink's configuration these flags (and the AWS environment) describe.
    pub fn sink_config(&self) -> SinkConfig {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        SinkConfig {
            warehouse: self.warehouse.clone(),
            catalog: self.catalog_uri.clone(),
            s3: S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: Some(self.s3_region.clone()),
                path_style: self.s3_path_style,
                access_key_id: env("AWS_ACCESS_KEY_ID"),
                secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
                session_token: env("AWS_SESSION_TOKEN"),
            },
            database: self.iceberg_database.clone(),
            table: self.iceberg_table.clone(),
            rejected_table: "rejected_events".into(),
        }
    }
}

/// `sessionize maintain`: compaction and snapshot expiry, safe beside running jobs.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Where the tables are.
    #[command(flatten)]
    pub table: TableArgs,
    /// What maintenance does.
    #[command(flatten)]
    pub maintenance: MaintenanceArgs,
}

/// What maintenance does: `maintain`'s, and `run --maintain-every`'s.
#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// Size compaction cuts new data files at, MiB; files at least this
    /// large are left alone (1 to 4096).
    #[arg(long, default_value_t = 128, value_parser = super::u32_in(1..=4096))]
    pub target_file_mib: u32,
    /// Compact a partition once it holds this many smaller files (2 or more).
    #[arg(long, default_value_t = 5, value_parser = super::u32_in(2..=1_000_000))]
    pub min_input_files: u32,
    /// Expire snapshots older than this: hours, or with a unit (30m, 7d).
    /// Every snapshot stays in the table's metadata file, which each commit
    /// rewrites, so a job that commits every few seconds wants this short.
    #[arg(long, default_value = "1d", value_parser = super::hours)]
    pub keep_snapshots_for: std::time::Duration,
    /// Keep at least the newest this many snapshots whatever their age.
    #[arg(long, default_value_t = 100, value_parser = super::u32_in(1..=1_000_000))]
    pub keep_snapshots: u32,
    /// Delete files under the tables that nothing references (left by a
    /// writer that died before committing them) once they are this old: hours,
    /// or with a unit; at least 10m, as younger ones may be a commit in flight.
    #[arg(long, default_value = "3d", value_parser = orphan_age)]
    pub orphans_older_than: std::time::Duration,
    /// Do not look for orphan files.
    #[arg(long)]
    pub no_orphans: bool,
    /// Do not compact.
    #[arg(long)]
    pub no_compaction: bool,
    /// Do not expire snapshots or delete files.
    #[arg(long)]
    pub no_expiry: bool,
}

impl MaintenanceArgs {
    /// What compaction rewrites.
    pub fn compaction(&self) -> CompactionOptions {
        CompactionOptions {
            target_file_bytes: u64::from(self.target_file_mib) << 20,
            min_input_files: self.min_input_files as usize,
        }
    }

    /// What expiry keeps.
    pub fn expiry(&self) -> ExpiryOptions {
        ExpiryOptions {
            older_than: self.keep_snapshots_for,
            retain_last: self.keep_snapshots as usize,
            writer_key: JOB_ID_KEY.to_owned(),
            orphans_older_than: (!self.no_orphans).then_some(self.orphans_older_than),
        }
    }
}

/// An orphan age of at least ten minutes.
fn orphan_age(text: &str) -> Result<std::time::Duration, String> {
    let age = super::hours(text)?;
    if age < std::time::Duration::from_secs(600) {
        return Err("must be at least 10m: a younger file may belong to a commit in flight".into());
    }
    Ok(age)
}
