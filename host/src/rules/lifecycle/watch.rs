//! `--plugin-watch`: a replaced plugin file is deployed like `plugin deploy`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::{Candidate, RulesAction, RulesRequest};

/// Polls the plugin file on a thread of its own; a changed file is deployed
/// (read by the compile thread, within the job's size limit), and must be
/// applied within `timeout`.
pub fn watch_plugin_file(path: PathBuf, requests: mpsc::Sender<RulesRequest>, timeout: Duration) {
    let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
    std::thread::spawn(move || {
        let mut last = stamp(&path);
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = stamp(&path);
            if now.is_none() || now == last {
                continue;
            }
            // Let the writer finish: deploy once the file stops changing.
            std::thread::sleep(Duration::from_millis(300));
            if stamp(&path) != now {
                continue;
            }
            last = now;
            let action = RulesAction::Deploy(Candidate::File(path.clone()));
            let (request, answer) = RulesRequest::new(action, timeout);
            if requests.send(request).is_err() {
                return;
            }
            match answer.blocking_recv() {
                Ok(Ok(_)) => tracing::info!(path = %path.display(), "watched plugin deployed"),
                Ok(Err(error)) => tracing::warn!(%error, "watched plugin refused"),
                Err(_) => return,
            }
        }
    });
}
