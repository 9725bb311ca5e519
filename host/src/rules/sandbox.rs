//! What WASI gives a plugin: nothing that would make its output depend on the
//! machine or the moment. No files, no network, no environment; clocks frozen
//! at the epoch and randomness from a fixed seed, so replaying input after a
//! crash closes the same sessions; stdout and stderr captured for the host log.
//! What a plugin logs (through the `log` import, stdout and stderr) is held to
//! a budget of lines per call ([`LogBudget`]): a flood costs the host one
//! summary line, and is counted.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rand_wasi::rngs::StdRng;
use rand_wasi::SeedableRng;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::WasiCtx;

/// Most bytes of stdout or stderr kept per call; the rest is counted, not kept,
/// so a chatty plugin cannot grow the host's memory.
const OUTPUT_KEPT: usize = 64 << 10;

/// Most lines a plugin may send to the host log in one call, through the `log`
/// import, stdout and stderr together: a plugin that logs per event would
/// otherwise write the host log full, and slow every batch down with it.
pub(super) const LOG_LINES_PER_CALL: u32 = 100;

/// Longest log line passed on, in bytes; the rest of a line is cut.
pub(super) const LOG_LINE_BYTES: usize = 1024;

/// The seed behind the plugin's random numbers: the same stream in every
/// instance (a rebuilt instance starts it again).
const RANDOM_SEED: u64 = 0x5e55_10e5;

/// The WASI context of one plugin instance, and its captured output.
pub(super) struct Sandbox {
    pub(super) wasi: WasiCtx,
    pub(super) output: GuestOutput,
}

impl Sandbox {
    pub(super) fn new() -> Self {
        let output = GuestOutput::default();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.stdout.clone())
            .stderr(output.stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(StdRng::seed_from_u64(RANDOM_SEED))
            .insecure_random(StdRng::seed_from_u64(RANDOM_SEED))
            .insecure_random_seed(u128::from(RANDOM_SEED));
        Self { wasi: wasi.build(), output }
    }
}

/// What the plugin wrote to stdout and stderr since the last [`GuestOutput::log`].
#[derive(Clone, Default)]
pub(super) struct GuestOutput {
    stdout: CapturedStream,
    stderr: CapturedStream,
}

impl GuestOutput {
    /// Sends what the plugin wrote to the host log, one event per line,
    /// under the plugin's name, within `budget`.
    pub(super) fn log(&self, plugin: &str, budget: &mut LogBudget) {
        for line in self.stdout.take_lines() {
            if budget.take() {
                let line = clip(&line);
                tracing::info!(plugin, stream = "stdout", "{line}");
            }
        }
        for line in self.stderr.take_lines() {
            if budget.take() {
                let line = clip(&line);
                tracing::warn!(plugin, stream = "stderr", "{line}");
            }
        }
    }
}

/// How many log lines a plugin instance has left in the current call, and
/// how many it was refused.
#[derive(Debug, Default)]
pub(super) struct LogBudget {
    used: u32,
    dropped: u64,
    /// Lines dropped over the life of the rules (shared by the instances a
    /// runtime builds, so that a rebuilt instance does not reset it).
    total_dropped: Arc<AtomicU64>,
}

impl LogBudget {
    /// A budget that adds what it drops to `total_dropped`.
    pub(super) fn new(total_dropped: Arc<AtomicU64>) -> Self {
        Self { used: 0, dropped: 0, total_dropped }
    }

    /// Whether one more line fits in this call; if not, it is counted.
    pub(super) fn take(&mut self) -> bool {
        if self.used < LOG_LINES_PER_CALL {
            self.used += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Ends a call: says in one line how many lines were dropped, if any, and
    /// starts the next call's budget.
    pub(super) fn end_call(&mut self, plugin: &str) {
        if self.dropped > 0 {
            let dropped = self.dropped;
            tracing::warn!(
                plugin,
                dropped,
                "plugin logged {dropped} more lines in one call than the {LOG_LINES_PER_CALL} passed on; dropped"
            );
            self.total_dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.used = 0;
        self.dropped = 0;
    }
}

/// `line`, cut to [`LOG_LINE_BYTES`] (at a character boundary) with a note of
/// what was cut.
pub(super) fn clip(line: &str) -> Cow<'_, str> {
    if line.len() <= LOG_LINE_BYTES {
        return Cow::Borrowed(line);
    }
    let mut cut = LOG_LINE_BYTES;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}... ({} more bytes)", &line[..cut], line.len() - cut))
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// One output stream of the plugin, buffered in memory until logged.
#[derive(Clone, Default)]
struct CapturedStream(Arc<Mutex<Captured>>);

impl CapturedStream {
    fn push(&self, bytes: &[u8]) {
        let mut captured = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = OUTPUT_KEPT.saturating_sub(captured.bytes.len());
        let kept = bytes.len().min(room);
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }

    fn take_lines(&self) -> Vec<String> {
        let mut captured = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Captured { bytes, dropped } = std::mem::take(&mut *captured);
        drop(captured);
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<String> =
            text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
        if dropped > 0 {
            lines.push(format!("({dropped} more bytes of output dropped)"));
        }
        lines
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always room: what does not fit is counted and dropped.
        Ok(OUTPUT_KEPT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// A clock that always reads zero: time, for rules, is event time.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}

/// Most memories a plugin's modules may define together. A rules component
/// needs one (a language runtime's may bring an adapter's); more only serve
/// to multiply a per-memory limit.
pub(super) const MAX_MEMORIES: usize = 4;

/// Most elements one table may hold.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Most tables and instances one plugin instance may create.
const MAX_TABLES: usize = 64;
const MAX_INSTANCES: usize = 16;

/// What one plugin instance may take: its memory is counted over all its
/// memories together (with multi-memory, a component could otherwise declare
/// a hundred memories, each within the limit), at most [`MAX_MEMORIES`] of them.
#[derive(Debug)]
pub(super) struct PluginLimits {
    /// The budget, bytes over every memory.
    memory_bytes: usize,
    /// Bytes the memories hold now.
    memory_used: usize,
    /// Bytes the memories held after the instance's first answer (with the
    /// whole text table in it); none before.
    memory_fresh: Option<usize>,
}

impl PluginLimits {
    /// Limits with `memory_bytes` for all memories together.
    pub(super) fn new(memory_bytes: usize) -> Self {
        Self { memory_bytes, memory_used: 0, memory_fresh: None }
    }

    /// Notes a call the instance answered, and says whether the instance is
    /// now due for replacement. The first answer sets the mark: a fresh
    /// instance is sent the whole text table in its first batch, so what it
    /// holds after that is what any fresh instance needs. Later answers are
    /// crowded once the memories have grown by more than half of what the
    /// budget left above the mark (memories never shrink); however large an
    /// instance starts, it is never replaced after every call.
    pub(super) fn answered(&mut self) -> bool {
        let Some(fresh) = self.memory_fresh else {
            self.memory_fresh = Some(self.memory_used);
            return false;
        };
        let grown = self.memory_used.saturating_sub(fresh);
        grown > self.memory_bytes.saturating_sub(fresh) / 2
    }
}

impl wasmtime::ResourceLimiter for PluginLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self.memory_used.saturating_add(desired.saturating_sub(current));
        if used > self.memory_bytes || maximum.is_some_and(|max| desired > max) {
            // The phrase is how a failed call is told apart as out of memory.
            wasmtime::bail!(
                "forcing trap when growing memory to {desired} bytes: the plugin's memories \
                 would hold {used} bytes, over its {} MiB",
                self.memory_bytes >> 20
            );
        }
        self.memory_used = used;
        // Growth is rare (memories never shrink): a trail of it shows what a
        // plugin needs before it meets the limit.
        tracing::trace!(bytes = used, "plugin memory grows");
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("forcing trap when growing memory failed"))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS || maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!("forcing trap when growing a table to {desired} elements");
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod limit_tests {
    use wasmtime::ResourceLimiter;

    use super::*;

    #[test]
    fn memory_is_counted_over_every_memory() {
        let mib = 1 << 20;
        let mut limits = PluginLimits::new(64 * mib);
        assert!(limits.memory_growing(0, 40 * mib, None).unwrap());
        // A second memory of 40 MiB would be within a per-memory limit of 64.
        let error = limits.memory_growing(0, 40 * mib, None).unwrap_err().to_string();
        assert!(error.contains("forcing trap when growing memory"), "{error}");
        assert!(limits.memory_growing(0, 24 * mib, None).unwrap());
        assert!(limits.memory_growing(40 * mib, 40 * mib + 1, None).is_err());
        assert_eq!(limits.memories(), MAX_MEMORIES);
    }

    #[test]
    fn an_instance_is_crowded_once_it_grew_by_half_of_what_its_first_answer_left() {
        let mib = 1 << 20;
        let mut limits = PluginLimits::new(64 * mib);
        assert!(limits.memory_growing(0, 40 * mib, None).unwrap());
        // The first answer takes the mark: 24 MiB left, crowded past 12 more.
        assert!(!limits.answered());
        assert!(limits.memory_growing(40 * mib, 52 * mib, None).unwrap());
        assert!(!limits.answered());
        assert!(limits.memory_growing(52 * mib, 52 * mib + 1, None).unwrap());
        assert!(limits.answered());
    }
}
