//! What to do about a failure of the object store or the catalog's
//! database: the sentence a user gets beside the error.

use crate::sink::SinkError;

/// What to do about a failure of the object store or the catalog's
/// database, when its text says what it is. opendal and sqlx report these
/// only as text (an S3 error code, a PostgreSQL message), so matching the
/// text is all there is; each table applies only to its own layer's errors.
pub(super) fn failure_hint(message: &str) -> Option<&'static str> {
    const STORE: &[(&[&str], &str)] = &[
        (
            &["RequestTimeTooSkewed", "RequestExpired"],
            "the store refused the request's time: set this machine's clock right (NTP) and \
             start again",
        ),
        (
            &["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "PermissionDenied"],
            "the store refused the credentials: check AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY (and that the key may read and write the bucket)",
        ),
        (
            &["NoSuchBucket"],
            "the bucket does not exist: create it, or fix the bucket in --warehouse",
        ),
        (
            &["error sending request", "Connection refused", "dns error", "timed out"],
            "the store cannot be reached: check --s3-endpoint (AWS_ENDPOINT_URL) and that the \
             store is running",
        ),
    ];
    const CATALOG: &[(&[&str], &str)] = &[
        (
            &["password authentication failed", "no password supplied", "role \""],
            "the catalog database refused the user: check the user and password in --catalog-uri",
        ),
        (
            &["database \""],
            "the catalog database does not exist: create it (createdb) or fix --catalog-uri",
        ),
        (
            &["pool timed out", "Connection refused", "error communicating with database"],
            "the catalog database cannot be reached: check the host and port in --catalog-uri \
             and that the server is running",
        ),
    ];
    let hints = if message.contains("sqlx") {
        CATALOG
    } else if message.contains("service: s3") || message.contains("S3Error") {
        STORE
    } else {
        return None;
    };
    hints
        .iter()
        .find(|(needles, _)| needles.iter().any(|needle| message.contains(needle)))
        .map(|(_, hint)| *hint)
}

/// An iceberg-rust error, with a hint when its layer's failure is known.
pub(super) fn hinted_error(context: String, source: iceberg::Error) -> SinkError {
    match failure_hint(&full_message(&source)) {
        Some(hint) => SinkError::Backend { context, hint, source: Box::new(source) },
        None => SinkError::Iceberg { context, source: Box::new(source) },
    }
}

/// The error's message with its sources, where the store's own words are.
pub(super) fn full_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_catalog_errors_get_a_sentence() {
        let hint = |message| failure_hint(message).unwrap_or_default();
        let skew = "PermissionDenied (persistent), service: s3 => S3Error { code: \
                    \"RequestTimeTooSkewed\" }";
        assert!(hint(skew).contains("clock"));
        assert!(hint("service: s3 => S3Error { code: \"NoSuchBucket\" }").contains("bucket"));
        let refused = "service: s3 ... tcp connect error: Connection refused";
        assert!(hint(refused).contains("--s3-endpoint"));
        let pool =
            "hitting sqlx error, source: pool timed out while waiting for an open connection";
        assert!(hint(pool).contains("--catalog-uri"));
        let missing = "sqlx error, source: error returned from database: database \"x\" does not \
                       exist";
        assert!(hint(missing).contains("createdb"));
        assert_eq!(failure_hint("disk full"), None);
    }
}
