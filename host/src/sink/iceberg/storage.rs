//! Where the tables' files live: a local directory or an S3 bucket, through
//! iceberg-rust's own storage layer (`iceberg-storage-opendal` for S3).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use iceberg::io::{
    FileIOBuilder, LocalFsStorageFactory, StorageFactory, S3_ACCESS_KEY_ID, S3_ENDPOINT,
    S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY, S3_SESSION_TOKEN,
};
use iceberg_storage_opendal::OpenDalStorageFactory;

use super::remedy::hinted_error;
use crate::sink::SinkError;

/// Where the warehouse is: the root under which every table's data and
/// metadata files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warehouse {
    /// A local directory (created if missing).
    Local(PathBuf),
    /// A bucket and a key prefix in S3 or an S3-compatible store.
    S3 {
        /// The bucket; it must exist.
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/`.
        prefix: String,
    },
}

/// A warehouse location the sink cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarehouseError {
    /// A URL scheme other than `file` and `s3`.
    #[error("warehouse {0:?}: only a local path, file:///path or s3://bucket/prefix is supported")]
    Scheme(String),
    /// `s3://` without a bucket.
    #[error("warehouse {0:?} names no bucket: write s3://bucket or s3://bucket/prefix")]
    NoBucket(String),
}

impl FromStr for Warehouse {
    type Err = WarehouseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(WarehouseError::NoBucket(text.to_owned()));
            }
            return Ok(Warehouse::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(Warehouse::Local(PathBuf::from(path)));
        }
        // `C:\...` and plain relative paths have no `://`.
        if text.contains("://") {
            return Err(WarehouseError::Scheme(text.to_owned()));
        }
        Ok(Warehouse::Local(PathBuf::from(text)))
    }
}

impl fmt::Display for Warehouse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warehouse::Local(path) => write!(f, "{}", path.display()),
            Warehouse::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Warehouse::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl From<PathBuf> for Warehouse {
    fn from(path: PathBuf) -> Self {
        Warehouse::Local(path)
    }
}

impl From<&Path> for Warehouse {
    fn from(path: &Path) -> Self {
        Warehouse::Local(path.to_path_buf())
    }
}

impl From<&PathBuf> for Warehouse {
    fn from(path: &PathBuf) -> Self {
        Warehouse::Local(path.clone())
    }
}

/// How to reach an S3-compatible store. Every field left empty falls back
/// to the AWS SDK's usual sources (environment, profile), through opendal.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible store (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// Region the requests are signed for.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`,
    /// which most S3-compatible stores need.
    pub path_style: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

// Keeps the secret out of logs and error reports.
impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The warehouse as an Iceberg location, the storage factory that reaches it
/// and the FileIO properties it needs.
pub(super) struct Storage {
    /// `file:///abs/path` or `s3://bucket/prefix`.
    pub(super) location: String,
    pub(super) factory: Arc<dyn StorageFactory>,
    pub(super) props: HashMap<String, String>,
    /// The bucket and how to reach it, for listing (FileIO cannot list).
    s3: Option<(String, S3Options)>,
}

impl Storage {
    /// Resolves `warehouse` (creating a local directory) with `s3`'s settings.
    pub(super) fn new(warehouse: &Warehouse, s3: &S3Options) -> Result<Self, SinkError> {
        match warehouse {
            Warehouse::Local(path) => {
                let path = prepare_directory(path)?;
                let text = path.to_str().ok_or_else(|| SinkError::NonUtf8Path(path.clone()))?;
                Ok(Self {
                    location: format!("file://{}", text.trim_end_matches('/')),
                    factory: Arc::new(LocalFsStorageFactory),
                    props: HashMap::new(),
                    s3: None,
                })
            }
            Warehouse::S3 { bucket, .. } => {
                let mut props = HashMap::new();
                let mut set = |key: &str, value: &Option<String>| {
                    if let Some(value) = value {
                        props.insert(key.to_owned(), value.clone());
                    }
                };
                set(S3_ENDPOINT, &s3.endpoint);
                set(S3_REGION, &s3.region);
                set(S3_ACCESS_KEY_ID, &s3.access_key_id);
                set(S3_SECRET_ACCESS_KEY, &s3.secret_access_key);
                set(S3_SESSION_TOKEN, &s3.session_token);
                let path_style =
                    s3.path_style || s3.endpoint.as_deref().is_some_and(names_no_domain);
                props.insert(S3_PATH_STYLE_ACCESS.to_owned(), path_style.to_string());
                Ok(Self {
                    location: warehouse.to_string(),
                    factory: Arc::new(OpenDalStorageFactory::S3 {
                        customized_credential_load: None,
                    }),
                    props,
                    s3: Some((bucket.clone(), S3Options { path_style, ..s3.clone() })),
                })
            }
        }
    }

    /// The local directory, if the warehouse is one.
    pub(super) fn local_directory(&self) -> Option<&str> {
        self.location.strip_prefix("file://")
    }

    /// Writes, reads back and deletes a small object, so that wrong
    /// credentials, a missing bucket or an unreachable endpoint stop the job
    /// at start with a sentence, not at its first commit.
    pub(super) async fn probe(&self) -> Result<(), SinkError> {
        if self.local_directory().is_some() {
            return Ok(());
        }
        let io = FileIOBuilder::new(self.factory.clone()).with_props(self.props.clone()).build();
        let path = format!("{}/.sessionize/probe-{}", self.location, uuid::Uuid::new_v4().simple());
        let context = || format!("writing a test object to {}", self.location);
        let result = async {
            let output = io.new_output(&path)?;
            output.write(Bytes::from_static(b"sessionize")).await?;
            io.new_input(&path)?.read().await?;
            io.delete(&path).await
        }
        .await;
        result.map_err(|source| hinted_error(context(), source))
    }
}

/// Whether an endpoint URL's host is an IP address or `localhost`, where
/// `bucket.host` cannot resolve, so only path-style addressing can work (the
/// AWS SDKs decide the same way).
fn names_no_domain(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => return v6.contains(']'),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok()
}

impl Storage {
    /// Now, by the store's clock: the time it gives an object written under
    /// `location` now. File ages are the store's times, so they are measured
    /// against it, not against this machine's clock.
    pub(super) async fn clock(&self, location: &str) -> Result<SystemTime, SinkError> {
        let path =
            format!("{location}/metadata/.sessionize-clock-{}", uuid::Uuid::new_v4().simple());
        let io = FileIOBuilder::new(self.factory.clone()).with_props(self.props.clone()).build();
        let context = || format!("reading the store's clock at {location}");
        io.new_output(&path)
            .map_err(|e| hinted_error(context(), e))?
            .write(Bytes::from_static(b"now"))
            .await
            .map_err(|e| hinted_error(context(), e))?;
        let written = self.modified(&path).await;
        if let Err(error) = io.delete(&path).await {
            tracing::warn!(path, %error, "could not delete the store's clock probe");
        }
        written.map_err(|detail| SinkError::Maintenance(format!("{}: {detail}", context())))
    }

    /// When the store last wrote the object at `path`.
    async fn modified(&self, path: &str) -> Result<SystemTime, String> {
        match &self.s3 {
            None => {
                let local = path.strip_prefix("file://").ok_or("not a local location")?;
                std::fs::metadata(local).and_then(|m| m.modified()).map_err(|e| e.to_string())
            }
            Some((bucket, options)) => {
                let key =
                    path.strip_prefix(&format!("s3://{bucket}/")).ok_or("not in the bucket")?;
                let operator = s3_operator(bucket, options).map_err(|e| e.to_string())?;
                let stat = operator.stat(key).await.map_err(|e| e.to_string())?;
                stat.last_modified()
                    .map(Into::into)
                    .ok_or_else(|| "the store gives no times".into())
            }
        }
    }

    /// Every file under `location` (a table's), with its last modification.
    pub(super) async fn list(
        &self,
        location: &str,
    ) -> Result<Vec<(String, SystemTime)>, SinkError> {
        let listing_error =
            |detail: String| SinkError::Maintenance(format!("listing {location}: {detail}"));
        match &self.s3 {
            None => {
                let root = location
                    .strip_prefix("file://")
                    .ok_or_else(|| listing_error("not a local location".into()))?;
                let mut files = Vec::new();
                for entry in walkdir::WalkDir::new(root) {
                    let entry = match entry {
                        Ok(entry) => entry,
                        // A table that has written nothing yet has no directory.
                        Err(e)
                            if e.io_error().map(std::io::Error::kind)
                                == Some(std::io::ErrorKind::NotFound) =>
                        {
                            continue
                        }
                        Err(e) => return Err(listing_error(e.to_string())),
                    };
                    if !entry.file_type().is_file() {
                        continue;
                    }
                    let modified = entry
                        .metadata()
                        .map_err(|e| listing_error(e.to_string()))?
                        .modified()
                        .map_err(|e| listing_error(e.to_string()))?;
                    let Some(path) = entry.path().to_str() else {
                        continue; // not a name the table could reference
                    };
                    files.push((format!("file://{path}"), modified));
                }
                Ok(files)
            }
            Some((bucket, options)) => {
                let prefix = location
                    .strip_prefix(&format!("s3://{bucket}/"))
                    .ok_or_else(|| listing_error("not in the warehouse's bucket".into()))?;
                let operator =
                    s3_operator(bucket, options).map_err(|e| listing_error(e.to_string()))?;
                let mut lister = operator
                    .lister_with(&format!("{}/", prefix.trim_end_matches('/')))
                    .recursive(true)
                    .await
                    .map_err(|e| listing_error(e.to_string()))?;
                let mut files = Vec::new();
                while let Some(entry) = lister.next().await {
                    let entry = entry.map_err(|e| listing_error(e.to_string()))?;
                    if !entry.metadata().is_file() {
                        continue;
                    }
                    let modified = match entry.metadata().last_modified() {
                        Some(modified) => modified,
                        None => operator
                            .stat(entry.path())
                            .await
                            .map_err(|e| listing_error(e.to_string()))?
                            .last_modified()
                            .ok_or_else(|| listing_error("the store gives no times".into()))?,
                    };
                    files.push((format!("s3://{bucket}/{}", entry.path()), modified.into()));
                }
                Ok(files)
            }
        }
    }
}

/// An opendal operator on `bucket`, configured as iceberg-storage-opendal
/// configures its own from the same settings.
fn s3_operator(bucket: &str, options: &S3Options) -> opendal::Result<opendal::Operator> {
    let mut builder = opendal::services::S3::default().bucket(bucket).root("/");
    if let Some(endpoint) = &options.endpoint {
        builder = builder.endpoint(endpoint);
    }
    if let Some(region) = &options.region {
        builder = builder.region(region);
    }
    if let Some(key) = &options.access_key_id {
        builder = builder.access_key_id(key);
    }
    if let Some(secret) = &options.secret_access_key {
        builder = builder.secret_access_key(secret);
    }
    if let Some(token) = &options.session_token {
        builder = builder.session_token(token);
    }
    if !options.path_style {
        builder = builder.enable_virtual_host_style();
    }
    Ok(opendal::Operator::new(builder)?.finish())
}

fn prepare_directory(path: &Path) -> Result<PathBuf, SinkError> {
    let io_error = |source| SinkError::Warehouse { path: path.to_path_buf(), source };
    std::fs::create_dir_all(path).map_err(io_error)?;
    // Table locations are stored as absolute `file://` URLs so that readers started from
    // another working directory find the files.
    std::fs::canonicalize(path).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warehouses_parse_from_paths_and_urls() {
        assert_eq!("./wh".parse(), Ok(Warehouse::Local("./wh".into())));
        assert_eq!("file:///tmp/wh".parse(), Ok(Warehouse::Local("/tmp/wh".into())));
        assert_eq!(
            "s3://lake/teams/web/".parse(),
            Ok(Warehouse::S3 { bucket: "lake".into(), prefix: "teams/web".into() })
        );
        assert_eq!(
            "s3://lake".parse::<Warehouse>().map(|w| w.to_string()),
            Ok("s3://lake".to_owned())
        );
        assert!(matches!("s3:///x".parse::<Warehouse>(), Err(WarehouseError::NoBucket(_))));
        assert!(matches!("gs://lake".parse::<Warehouse>(), Err(WarehouseError::Scheme(_))));
    }

    #[test]
    fn endpoints_without_a_domain_need_path_style() {
        assert!(names_no_domain("http://127.0.0.1:9000"));
        assert!(names_no_domain("http://localhost:9000/"));
        assert!(names_no_domain("http://[::1]:9000"));
        assert!(!names_no_domain("https://s3.eu-west-1.amazonaws.com"));
        assert!(!names_no_domain("https://minio.internal:9000"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let options = S3Options {
            secret_access_key: Some("hunter2".into()),
            session_token: Some("tok".into()),
            ..S3Options::default()
        };
        let text = format!("{options:?}");
        assert!(!text.contains("hunter2") && !text.contains("tok\""), "{text}");
    }
}
