//! The admin endpoint of a running job, and its client: `plugin deploy`,
//! `plugin rollback`, `plugin status`.
//!
//! Loopback only unless the operator says otherwise (`--admin-allow-remote`).
//! Every request must carry the job's token (generated at start into
//! `<state-dir>/admin.token`, mode 0600, or given in `--admin-token-file` or `SESSIONIZE_ADMIN_TOKEN`), checked
//! in constant time before any body is read. A deploy uploads the component's
//! bytes, up to `--max-component-mib`; the job reads no path it is sent. Each
//! request must be applied within `--admin-timeout`, or the client is told it
//! was not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::rules::lifecycle::{Candidate, Refusal, RulesAction, RulesRequest};

mod client;

pub use client::{ask_job, AdminCall, ClientError};

/// The header an upload names its component in (for messages and the history).
pub(crate) const COMPONENT_NAME_HEADER: &str = "x-sessionize-component";

/// How the admin endpoint is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where it listens (`--admin-addr`); port 0 picks a free one.
    pub addr: SocketAddr,
    /// The token (`--admin-token-file` or `SESSIONIZE_ADMIN_TOKEN`); generated when absent.
    pub token: Option<String>,
    /// Whether an address other than loopback is accepted (`--admin-allow-remote`).
    pub allow_remote: bool,
    /// How long a request may take to be applied (`--admin-timeout`).
    pub request_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            allow_remote: false,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address is not loopback and the operator did not allow it.
    #[error(
        "{0} is not a loopback address: the admin endpoint speaks plain HTTP, and anyone who \
         reaches it with the token can change the rules. Listen on 127.0.0.1 (and reach it \
         through an SSH tunnel), or pass --admin-allow-remote to accept the risk"
    )]
    Remote(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr} for the admin endpoint: {cause} (choose another with --admin-addr)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (printed above, so not a `source`).
        cause: std::io::Error,
    },
    /// The token file could not be written.
    #[error("cannot write {}: {cause}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why (printed above, so not a `source`).
        cause: std::io::Error,
    },
}

/// Refuses an address beyond loopback unless `config` allows it; returns
/// whether it is beyond loopback.
pub fn check_addr(config: &AdminConfig) -> Result<bool, AdminError> {
    if config.addr.ip().is_loopback() {
        return Ok(false);
    }
    if !config.allow_remote {
        return Err(AdminError::Remote(config.addr));
    }
    Ok(true)
}

/// The `authorization` header a request must carry, hashed: comparing two
/// digests takes the same time whatever the header holds.
struct TokenCheck {
    expected: [u8; 32],
}

impl TokenCheck {
    fn new(token: &str) -> Self {
        Self { expected: Sha256::digest(format!("Bearer {token}")).into() }
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let given = headers.get(AUTHORIZATION).map_or(&b""[..], |v| v.as_bytes());
        let given: [u8; 32] = Sha256::digest(given).into();
        given.ct_eq(&self.expected).into()
    }
}

#[derive(Clone)]
struct AdminState {
    token: Arc<TokenCheck>,
    requests: mpsc::Sender<RulesRequest>,
    request_timeout: Duration,
    max_upload_bytes: u64,
}

/// Writes `token` to `dir/admin.token` readable by the owner only, and the
/// address to `dir/admin.addr`, where `sessionize plugin` finds them.
pub(crate) fn publish_credentials(
    dir: &Path,
    addr: SocketAddr,
    token: &str,
) -> Result<(), AdminError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("admin.token");
    let fail = |cause| AdminError::TokenFile { path: path.clone(), cause };
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(fail)?;
    file.write_all(token.as_bytes()).map_err(fail)?;
    let addr_path = dir.join("admin.addr");
    std::fs::write(&addr_path, addr.to_string())
        .map_err(|cause| AdminError::TokenFile { path: addr_path, cause })
}

/// A fresh random token.
pub(crate) fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Binds the endpoint and serves it on the current tokio runtime, taking
/// uploads of up to `max_upload_bytes`. Returns the bound address (port 0
/// picks a free one).
pub(crate) async fn serve(
    config: &AdminConfig,
    token: &str,
    max_upload_bytes: u64,
    requests: mpsc::Sender<RulesRequest>,
) -> Result<SocketAddr, AdminError> {
    let addr = config.addr;
    if check_addr(config)? {
        tracing::warn!(
            %addr,
            "admin endpoint listens beyond loopback (--admin-allow-remote): anyone who reaches \
             it with the token can change the rules, and the token travels in clear text"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| AdminError::Bind { addr, cause })?;
    let bound = listener.local_addr().map_err(|cause| AdminError::Bind { addr, cause })?;
    let state = AdminState {
        token: Arc::new(TokenCheck::new(token)),
        requests,
        request_timeout: config.request_timeout,
        max_upload_bytes,
    };
    let app = Router::new()
        .route("/plugin/status", get(status))
        .route("/plugin/deploy", post(deploy))
        .route("/plugin/rollback", post(rollback))
        // Runs before any handler, so before any body is read.
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "admin endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "admin endpoint listening");
    Ok(bound)
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn refusal(status: StatusCode, error: &str) -> Reply {
    (status, Json(serde_json::json!({ "error": error })))
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if !state.token.admits(request.headers()) {
        let error = "missing or wrong token: use the one in <state-dir>/admin.token";
        return refusal(StatusCode::UNAUTHORIZED, error).into_response();
    }
    next.run(request).await
}

/// Passes `action` to the job and waits for its answer: the job answers a
/// request it could not apply by its deadline itself; the grace after it lets
/// that answer (or one whose dry run had already started) arrive.
async fn ask(state: &AdminState, action: RulesAction) -> Reply {
    let timeout = state.request_timeout;
    let (request, answer) = RulesRequest::new(action, timeout);
    if state.requests.send(request).is_err() {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, "the job is stopping");
    }
    let grace = timeout.min(Duration::from_secs(10));
    match tokio::time::timeout(timeout.saturating_add(grace), answer).await {
        Ok(Ok(Ok(value))) => (StatusCode::OK, Json(value)),
        Ok(Ok(Err(Refusal::Refused(error)))) => refusal(StatusCode::UNPROCESSABLE_ENTITY, &error),
        Ok(Ok(Err(Refusal::TimedOut(error)))) => refusal(StatusCode::GATEWAY_TIMEOUT, &error),
        Ok(Err(_)) => refusal(StatusCode::SERVICE_UNAVAILABLE, "the job stopped before answering"),
        Err(_) => refusal(
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "the job did not answer within {:.0?} (it may be stuck); it applies nothing \
                 asked more than {timeout:.0?} ago, unless it had already begun: see \
                 `sessionize plugin status`",
                timeout.saturating_add(grace)
            ),
        ),
    }
}

async fn status(State(state): State<AdminState>) -> Reply {
    ask(&state, RulesAction::Status).await
}

/// The body is the component; refused at once when it declares more than the
/// limit, and as soon as it exceeds the limit otherwise.
async fn deploy(State(state): State<AdminState>, request: Request) -> Reply {
    let limit = state.max_upload_bytes;
    let over_limit = |size: Option<u64>| {
        let size = size.map_or_else(|| "over".into(), |s| format!("{s} bytes,"));
        let error = format!(
            "the component is {size} over the limit of {} (start the job with a larger \
             --max-component-mib to deploy it)",
            crate::rules::lifecycle::mib_text(limit)
        );
        refusal(StatusCode::PAYLOAD_TOO_LARGE, &error)
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|&size| size > limit) {
        return over_limit(Some(size));
    }
    let name = component_name(request.headers());
    let mut bytes = Vec::with_capacity(declared.and_then(|s| usize::try_from(s).ok()).unwrap_or(0));
    let mut body = request.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                let error = format!("the upload broke off: {error}");
                return refusal(StatusCode::BAD_REQUEST, &error);
            }
        };
        if (bytes.len() + chunk.len()) as u64 > limit {
            return over_limit(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    ask(&state, RulesAction::Deploy(Candidate::Uploaded { name, bytes })).await
}

/// What the uploader called the component: printable ASCII, at most 200
/// characters, or `uploaded component`.
fn component_name(headers: &HeaderMap) -> String {
    let name: String = headers
        .get(COMPONENT_NAME_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect();
    let name = name.trim();
    if name.is_empty() {
        "uploaded component".into()
    } else {
        name.to_owned()
    }
}

async fn rollback(State(state): State<AdminState>) -> Reply {
    ask(&state, RulesAction::Rollback).await
}

#[cfg(test)]
mod tests;
