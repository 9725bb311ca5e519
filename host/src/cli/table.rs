//! The flags that say where the tables are, shared by `run` and `maintain`.

use clap::Args;
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
