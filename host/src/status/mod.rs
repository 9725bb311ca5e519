//! The status endpoint of a job (`--metrics-addr`): `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for orchestrators, and `/`, a read-only page for
//! people. Nothing here changes the job: deploys and rollbacks stay on the
//! admin endpoint, behind its token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::{JobMetrics, Readiness};

mod chart;
mod page;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How the status endpoint is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusConfig {
    /// Where it listens (`--metrics-addr`); `None` is off.
    pub addr: Option<SocketAddr>,
    /// What `/readyz` requires.
    pub readiness: Readiness,
    /// Whether the page shows the raw text of rejected records even when it
    /// is served beyond loopback (`--status-raw-records`).
    pub raw_records: bool,
}

/// Why the status endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} for metrics and status: {cause} (choose another address with \
     --metrics-addr, or turn it off with --metrics-addr off)"
)]
pub struct StatusError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub cause: std::io::Error,
}

/// What the handlers share.
#[derive(Clone)]
struct Served {
    metrics: Arc<JobMetrics>,
    /// Whether the page may show raw input (see [`StatusConfig::raw_records`]).
    raw_records: bool,
}

/// Serves `metrics` on `addr` (port 0 picks a free one) until the process
/// ends, sampling the charted values once a second. Returns the bound address.
///
/// Rejected records are raw input, often personal data: served beyond
/// loopback (as Prometheus scraping wants), the page leaves their text out
/// unless `raw_records` says otherwise.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<JobMetrics>,
    raw_records: bool,
) -> Result<SocketAddr, StatusError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|cause| StatusError { addr, cause })?;
    let bound = listener.local_addr().map_err(|cause| StatusError { addr, cause })?;
    let raw_records = raw_records || bound.ip().is_loopback();
    if !raw_records {
        tracing::warn!(
            addr = %bound,
            "the status page is reachable beyond loopback: it leaves out the raw text of \
             rejected records (--status-raw-records shows it)"
        );
    }
    let served = Served { metrics: metrics.clone(), raw_records };
    let app = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(served);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics and status endpoint stopped");
        }
    });
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every_second.tick().await;
            metrics.sample();
        }
    });
    tracing::info!(addr = %bound, "metrics at http://{bound}/metrics, status page at http://{bound}/");
    Ok(bound)
}

async fn prometheus(State(served): State<Served>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], served.metrics.encode()).into_response()
}

/// 200 when ready; 503 with one line per reason when not.
async fn ready(State(served): State<Served>) -> Response {
    match served.metrics.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reasons) => {
            let body: String = reasons.iter().map(|r| format!("not ready: {r}\n")).collect();
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

async fn status_page(State(served): State<Served>) -> Html<String> {
    Html(page::render(&served.metrics, served.raw_records).into_string())
}
