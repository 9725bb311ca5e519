//! `sessionize plugin ...`: one request to a running job's admin endpoint,
//! found through the address and token the job wrote to its state directory.

use std::path::{Path, PathBuf};

/// What to ask the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCall {
    /// Swap in the component at this path.
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
    #[error("{what}")]
    Local {
        /// What could not be read, and what to do about it.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint did not answer.
    #[error("cannot reach the job at {url}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// Why.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The job answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Sends `call` to the job whose state directory is `state_dir` and returns
/// its answer. `token` overrides the one in `<state-dir>/admin.token`.
pub fn ask_job(
    state_dir: &Path,
    token: Option<&str>,
    call: &AdminCall,
) -> Result<serde_json::Value, ClientError> {
    let local = |what: String| move |source| ClientError::Local { what, source };
    let (route, body) = match call {
        AdminCall::Deploy(path) => {
            let path = std::fs::canonicalize(path)
                .map_err(local(format!("cannot read plugin {}", path.display())))?;
            ("deploy", Some(serde_json::json!({ "path": path })))
        }
        AdminCall::Status => ("status", None),
        AdminCall::Rollback => ("rollback", Some(serde_json::json!({}))),
    };
    let addr_file = state_dir.join("admin.addr");
    let addr = std::fs::read_to_string(&addr_file).map_err(local(format!(
        "no running job found: {} is missing (is `sessionize run` up with --state-dir {}?)",
        addr_file.display(),
        state_dir.display()
    )))?;
    let token = match token {
        Some(token) => token.to_owned(),
        None => std::fs::read_to_string(state_dir.join("admin.token"))
            .map_err(local("cannot read the admin token: pass --admin-token".into()))?,
    };
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{}/plugin/{route}", addr.trim());
    let auth = format!("Bearer {}", token.trim());
    let response = match body {
        Some(body) => agent.post(&url).header("authorization", &auth).send_json(body),
        None => agent.get(&url).header("authorization", &auth).call(),
    }
    .map_err(|source| ClientError::Unreachable { url: url.clone(), source: Box::new(source) })?;
    let ok = response.status().is_success();
    let text = response.into_body().read_to_string().map_err(|source| {
        ClientError::Unreachable { url: url.clone(), source: Box::new(source) }
    })?;
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
