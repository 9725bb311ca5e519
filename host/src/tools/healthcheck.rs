//! `sessionize healthcheck`: asks a job's status endpoint whether it is
//! healthy, for container runtimes whose slim images carry no HTTP client.

use std::time::Duration;

/// Why the job is not healthy, or could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Nothing answered.
    #[error("{url} cannot be reached: {cause}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// The client's error.
        cause: Box<ureq::Error>,
    },
    /// The job answered, and not with success.
    #[error("{url} answered {status}: {body}")]
    Unhealthy {
        /// What was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What the job said.
        body: String,
    },
}

/// Asks `url` (a job's `/healthz` or `/readyz`), waiting at most `timeout`;
/// returns what it answered when it answered with success.
pub fn check(url: &str, timeout: Duration) -> Result<String, HealthError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let unreachable =
        |cause| HealthError::Unreachable { url: url.to_owned(), cause: Box::new(cause) };
    let response = agent.get(url).call().map_err(unreachable)?;
    let status = response.status();
    let body = response.into_body().read_to_string().map_err(unreachable)?;
    let body = body.trim().to_owned();
    if !status.is_success() {
        return Err(HealthError::Unhealthy { url: url.to_owned(), status: status.as_u16(), body });
    }
    Ok(body)
}
