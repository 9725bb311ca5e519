//! Table maintenance run by a streaming job itself, on its own thread and
//! runtime, so compaction and expiry never hold up the event loop or the
//! checkpoints (they meet only at the catalog, where a lost race is retried).

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sink::iceberg::maintain::{CompactionOptions, ExpiryOptions, TableMaintenance};
use crate::sink::iceberg::SinkConfig;

/// How often, and how, a job maintains its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceSchedule {
    /// Time between two rounds (the first comes one interval after start).
    pub every: Duration,
    /// What compaction rewrites (`None`: no compaction).
    pub compaction: Option<CompactionOptions>,
    /// What expiry keeps (`None`: no expiry).
    pub expiry: Option<ExpiryOptions>,
}

/// The thread; dropping it stops it after the round in progress.
pub(crate) struct MaintenanceThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MaintenanceThread {
    /// Starts maintaining the tables of `sink` on `schedule`.
    pub(crate) fn start(sink: SinkConfig, schedule: MaintenanceSchedule) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("maintenance".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::warn!(%error, "table maintenance not started");
                    return;
                }
            };
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(schedule.every) {
                runtime.block_on(round(&sink, &schedule));
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for MaintenanceThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One round; a failure is logged and the next round tries again.
async fn round(sink: &SinkConfig, schedule: &MaintenanceSchedule) {
    let outcome = async {
        let tables = TableMaintenance::open(sink).await?;
        if let Some(options) = schedule.compaction {
            for report in tables.compact(options).await? {
                tracing::info!(
                    table = report.table,
                    files_removed = report.files_removed,
                    files_added = report.files_added,
                    lost_races = report.lost_races,
                    "compaction"
                );
            }
        }
        if let Some(options) = &schedule.expiry {
            for report in tables.expire(options).await? {
                tracing::info!(
                    table = report.table,
                    snapshots_before = report.snapshots.0,
                    snapshots_after = report.snapshots.1,
                    data_files_deleted = report.data_files_deleted,
                    "snapshot expiry"
                );
            }
        }
        Ok::<_, crate::sink::SinkError>(())
    }
    .await;
    match outcome {
        Ok(()) => {}
        Err(error) => tracing::warn!(%error, "table maintenance failed; trying again next round"),
    }
}
