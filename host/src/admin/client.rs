//! `sessionize plugin ...`: one request to a running job's admin endpoint,
//! found through the address and token the job wrote to its state directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::COMPONENT_NAME_HEADER;
use crate::rules::lifecycle::read_component;

/// The largest component the client sends: the largest any job takes
/// (`--max-component-mib` at most 4096); the job refuses what exceeds its own limit.
const MAX_UPLOAD_BYTES: u64 = 4096 << 20;

/// What to ask the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCall {
    /// Upload the component in this file and swap it in.
    Deploy(PathBuf),
    /// The active rules and their history.
    Status,
    /// Back to the previous rules.
    Rollback,
}

/// Why the job could not be asked, or what it refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A local file could not be read.
    #[error("{what}: {cause}")]
    Local {
        /// What could not be read, and what to do about it.
        what: String,
        /// Why (printed above, so not a `source`).
        cause: std::io::Error,
    },
    /// The endpoint did not answer.
    #[error("cannot reach the job at {url}: {cause}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// Why (printed above, so not a `source`).
        cause: Box<ureq::Error>,
    },
    /// The job answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Sends `call` to the job whose state directory is `state_dir` and returns
/// its answer. `token` overrides the one in `<state-dir>/admin.token`.
/// `timeout` bounds the whole exchange (the job answers a request it could
/// not apply in its own time before that).
pub fn ask_job(
    state_dir: &Path,
    token: Option<&str>,
    call: &AdminCall,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let local = |what: String| move |cause| ClientError::Local { what, cause };
    let upload = match call {
        AdminCall::Deploy(path) => {
            let bytes = read_component(path, MAX_UPLOAD_BYTES)
                .map_err(local(format!("cannot read plugin {}", path.display())))?;
            // A header carries printable ASCII only.
            let name = path.file_name().map_or_else(String::new, |n| {
                n.to_string_lossy().chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect()
            });
            Some((name, bytes))
        }
        AdminCall::Status | AdminCall::Rollback => None,
    };
    let route = match call {
        AdminCall::Deploy(_) => "deploy",
        AdminCall::Status => "status",
        AdminCall::Rollback => "rollback",
    };
    let addr_file = state_dir.join("admin.addr");
    let addr = std::fs::read_to_string(&addr_file).map_err(local(format!(
        "no running job found: {} is missing (is `sessionize run` up with --state-dir {}?)",
        addr_file.display(),
        state_dir.display()
    )))?;
    let token = match token {
        Some(token) => token.to_owned(),
        None => std::fs::read_to_string(state_dir.join("admin.token")).map_err(local(
            "cannot read the admin token: give --admin-token-file or set SESSIONIZE_ADMIN_TOKEN"
                .into(),
        ))?,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let url = format!("http://{}/plugin/{route}", addr.trim());
    let auth = format!("Bearer {}", token.trim());
    let unreachable = |cause| ClientError::Unreachable { url: url.clone(), cause: Box::new(cause) };
    let response = match (call, upload) {
        (_, Some((name, bytes))) => agent
            .post(&url)
            .header("authorization", &auth)
            .header(COMPONENT_NAME_HEADER, &name)
            // The job refuses a wrong token or too large a component before
            // the body is sent.
            .header("expect", "100-continue")
            .content_type("application/wasm")
            .send(&bytes[..]),
        (AdminCall::Rollback, None) => agent.post(&url).header("authorization", &auth).send_empty(),
        (_, None) => agent.get(&url).header("authorization", &auth).call(),
    }
    .map_err(unreachable)?;
    let ok = response.status().is_success();
    let text = response.into_body().read_to_string().map_err(unreachable)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if !ok {
        let error = value
            .get("error")
            .and_then(|e| e.as_str())
            .map_or_else(|| value.to_string(), str::to_owned);
        return Err(ClientError::Refused(error));
    }
    Ok(value)
}
