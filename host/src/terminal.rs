//! A bounded run's progress bar on a terminal: events per second, bytes read
//! of the input's size, and the time left. Drawn by indicatif from the run's
//! counters, on a thread of its own, and cleared before the summary prints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sessionize::job::RunProgress;

/// The bar, while it is shown; dropping it clears it.
pub struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    /// Shows `progress` on standard error until dropped.
    pub fn show(progress: Arc<RunProgress>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || draw(&progress, &stopped))
            .ok();
        Self { stop, thread }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn draw(progress: &RunProgress, stop: &AtomicBool) {
    let started = Instant::now();
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    // Sized once the run knows its input's size; a pipe has none.
    let mut sized: Option<bool> = None;
    while !stop.load(Ordering::Relaxed) {
        let total = progress.total_bytes();
        if sized != Some(total.is_some()) && (sized.is_none() || total.is_some()) {
            let template = match total {
                Some(total) => {
                    bar.set_length(total);
                    "{bar:30} {bytes}/{total_bytes}  {msg}  ETA {eta}"
                }
                None => "{spinner} {bytes} read  {msg}",
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            sized = Some(total.is_some());
        }
        bar.set_position(progress.bytes());
        let seconds = started.elapsed().as_secs_f64().max(1e-3);
        let events = progress.events();
        let rate = events as f64 / seconds;
        let state = if progress.done() { ", writing the last sessions" } else { "" };
        bar.set_message(format!("{events} events, {rate:.0} events/s{state}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}
