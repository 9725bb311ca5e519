//! The flags of the metrics and status endpoint (`sessionize run`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use sessionize::metrics::Readiness;
use sessionize::status::StatusConfig;

/// Where a streaming job serves metrics unless told otherwise (the port
/// OpenTelemetry's Prometheus exporter uses).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// `/metrics`, `/healthz`, `/readyz` and the status page.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Serve /metrics (Prometheus), /healthz, /readyz and a status page here;
    /// `off` for none. Default: 127.0.0.1:9464 for a Kafka job, off for a run
    /// over a file. Port 0 picks a free one; a Kafka job writes the address to
    /// <state-dir>/metrics.addr.
    #[arg(long, env = "SESSIONIZE_METRICS_ADDR", value_name = "ADDR|off", value_parser = metrics_addr)]
    pub metrics_addr: Option<MetricsAddr>,
    /// /readyz answers 503 while the job is more events than this behind the
    /// end of the topic.
    #[arg(long, default_value_t = 10_000, value_name = "EVENTS")]
    pub ready_max_lag: u64,
    /// /readyz answers 503 when no checkpoint has completed for this long:
    /// seconds, or with a unit. Default: three checkpoint intervals, at least 60 s.
    #[arg(long, value_parser = super::seconds)]
    pub ready_max_checkpoint_age: Option<Duration>,
    /// Show the raw text of rejected records on the status page even when
    /// --metrics-addr is beyond loopback (they are raw input, often personal
    /// data: left out there by default).
    #[arg(long)]
    pub status_raw_records: bool,
}

/// `--metrics-addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// No endpoint.
    Off,
    /// Listen here.
    At(SocketAddr),
}

impl StatusArgs {
    /// The endpoint of a streaming job (`streaming`) or a run over a file.
    pub fn status_config(&self, streaming: bool, checkpoint_interval: Duration) -> StatusConfig {
        let default = || DEFAULT_METRICS_ADDR.parse().ok();
        let addr = match self.metrics_addr {
            Some(MetricsAddr::Off) => None,
            Some(MetricsAddr::At(addr)) => Some(addr),
            None if streaming => default(),
            None => None,
        };
        let max_checkpoint_age = self
            .ready_max_checkpoint_age
            .unwrap_or_else(|| (checkpoint_interval * 3).max(Duration::from_secs(60)));
        StatusConfig {
            addr,
            readiness: Readiness { max_lag: self.ready_max_lag, max_checkpoint_age },
            raw_records: self.status_raw_records,
        }
    }
}

fn metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr::Off);
    }
    text.parse().map(MetricsAddr::At).map_err(|_| {
        format!("{text:?} is not an address: give IP:PORT (127.0.0.1:9464, 0.0.0.0:9464) or off")
    })
}
