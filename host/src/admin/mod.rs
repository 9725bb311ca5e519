//! The admin endpoint of a running job, and its client: `plugin deploy`,
//! `plugin rollback`, `plugin status`. Loopback only by default, and every request must carry the
//! job's token (generated at start into `<state-dir>/admin.token`, mode 0600, or
//! given with `--admin-token`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::rules::lifecycle::{RulesAction, RulesRequest};

mod client;

pub use client::{ask_job, AdminCall, ClientError};

/// The body of `POST /plugin/deploy`.
#[derive(Debug, Serialize, Deserialize)]
struct DeployBody {
    /// Path of the component, as the job sees it.
    path: PathBuf,
}

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} for the admin endpoint: {source} (choose another with --admin-addr)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The token file could not be written.
    #[error("cannot write {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct AdminState {
    token: String,
    requests: mpsc::Sender<RulesRequest>,
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
    let fail = |source| AdminError::TokenFile { path: path.clone(), source };
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
        .map_err(|source| AdminError::TokenFile { path: addr_path, source })
}

/// A fresh random token.
pub(crate) fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Binds the endpoint and serves it on the current tokio runtime. Returns the
/// bound address (port 0 picks a free one).
pub(crate) async fn serve(
    addr: SocketAddr,
    token: String,
    requests: mpsc::Sender<RulesRequest>,
) -> Result<SocketAddr, AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
    let app = Router::new()
        .route("/plugin/status", get(status))
        .route("/plugin/deploy", post(deploy))
        .route("/plugin/rollback", post(rollback))
        .with_state(AdminState { token, requests });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "admin endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "admin endpoint listening");
    Ok(bound)
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", state.token);
    headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v == expected)
}

async fn ask(state: AdminState, headers: HeaderMap, action: RulesAction) -> Reply {
    if !authorized(&state, &headers) {
        let error = "missing or wrong token: use the one in <state-dir>/admin.token";
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": error })));
    }
    let (reply, answer) = oneshot::channel();
    if state.requests.send(RulesRequest { action, reply }).is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "the job is stopping" })),
        );
    }
    match answer.await {
        Ok(Ok(value)) => (StatusCode::OK, Json(value)),
        Ok(Err(error)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({ "error": error })))
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "the job stopped before answering" })),
        ),
    }
}

async fn status(State(state): State<AdminState>, headers: HeaderMap) -> Reply {
    ask(state, headers, RulesAction::Status).await
}

async fn deploy(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Json(body): Json<DeployBody>,
) -> Reply {
    ask(state, headers, RulesAction::Deploy(body.path)).await
}

async fn rollback(State(state): State<AdminState>, headers: HeaderMap) -> Reply {
    ask(state, headers, RulesAction::Rollback).await
}
