//! The status page: the headline numbers, charts of the last minutes, the last
//! checkpoints, the rules' history and the latest dead letters. Rendered on the
//! server with maud (escaped by construction); it reloads itself every 5 s.

use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::chart::{compact, line_chart};
use crate::metrics::{JobMetrics, Overview, Sample};

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2430; background: #fafbfc; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
.ready { color: #1a7f37; } .not-ready { color: #b42318; }
.numbers { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .5em; }
.numbers div { background: #fff; border: 1px solid #d8dee4; border-radius: 6px; padding: .5em .7em; }
.numbers dt { color: #57606a; font-size: .85em; } .numbers dd { margin: 0; font-size: 1.3em; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(530px, 1fr)); gap: .5em; }
.chart .axis { stroke: #8c959f; } .chart .series { fill: none; stroke: #0969da; stroke-width: 1.5; }
.chart text { font-size: 11px; fill: #57606a; }
table { border-collapse: collapse; background: #fff; } td, th { border: 1px solid #d8dee4; padding: .25em .5em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } code { font-size: .9em; word-break: break-all; }
.empty { color: #57606a; }
";

/// The whole page.
pub(super) fn render(metrics: &JobMetrics, raw_records: bool) -> Markup {
    let overview = metrics.overview();
    let recent = metrics.recent();
    let samples: Vec<Sample> = recent.samples().copied().collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="5";
                title { "Sessionize status" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Sessionize" }
                (headline(&overview))
                (numbers(&overview))
                h2 { "The last minutes" }
                (charts(&samples))
                h2 { "Checkpoints" }
                (checkpoints(&recent))
                h2 { "Rules" }
                (rules(&recent))
                h2 { "Latest dead letters" }
                (dead_letters(&recent, raw_records))
            }
        }
    }
}

fn headline(overview: &Overview) -> Markup {
    html! {
        p {
            "Rules " code id="rule-version" { (overview.rule_version) } " · "
            @match &overview.readiness {
                Ok(()) => span.ready id="readiness" { "ready" },
                Err(why) => span.not-ready id="readiness" { "not ready: " (why.join("; ")) },
            }
        }
    }
}

fn numbers(o: &Overview) -> Markup {
    let cells: [(&str, &str, String); 12] = [
        ("events-read", "events read", o.read.to_string()),
        ("events-accepted", "accepted", o.accepted.to_string()),
        ("events-late", "late", o.late.to_string()),
        ("events-duplicate", "duplicates", o.duplicates.to_string()),
        ("events-rejected", "rejected", o.rejected.to_string()),
        ("sessions-closed", "sessions closed", o.sessions_closed.to_string()),
        ("open-sessions", "open sessions", o.open_sessions.to_string()),
        ("users-waiting", "users waiting", o.users_waiting.to_string()),
        ("pending-events", "events waiting", o.pending_events.to_string()),
        ("consumer-lag", "consumer lag", o.lag.to_string()),
        ("watermark-delay", "watermark delay (s)", format!("{:.1}", o.watermark_delay_s)),
        ("checkpoints", "checkpoints", o.checkpoints.to_string()),
    ];
    html! {
        dl.numbers {
            @for (id, label, value) in &cells {
                div { dt { (label) } dd id=(id) { (value) } }
            }
        }
    }
}

fn charts(samples: &[Sample]) -> Markup {
    // Throughput is the rate of a counter: one point per pair of samples.
    let rate: Vec<(f64, f64)> = samples
        .windows(2)
        .map(|w| {
            let seconds = (w[1].at_unix_s - w[0].at_unix_s).max(1e-3);
            (w[1].at_unix_s, w[1].events_read.saturating_sub(w[0].events_read) as f64 / seconds)
        })
        .collect();
    let series = |value: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.at_unix_s, value(s))).collect()
    };
    let current = rate.last().map_or(0.0, |p| p.1);
    html! {
        div.charts {
            figure {
                figcaption { "Throughput: " span id="throughput" { (compact(current.round())) } " events/s" }
                (line_chart("chart-throughput", &rate, "/s"))
            }
            figure {
                figcaption { "Consumer lag (events)" }
                (line_chart("chart-lag", &series(|s| s.lag as f64), ""))
            }
            figure {
                figcaption { "Open sessions" }
                (line_chart("chart-open-sessions", &series(|s| s.open_sessions as f64), ""))
            }
            figure {
                figcaption { "Watermark delay behind the wall clock" }
                (line_chart("chart-watermark-delay", &series(|s| s.watermark_delay_s), "s"))
            }
        }
    }
}

fn checkpoints(recent: &crate::metrics::Recent) -> Markup {
    html! {
        @if recent.checkpoints().next().is_none() {
            p.empty { "none completed yet" }
        } @else {
            table id="checkpoint-table" {
                tr { th { "id" } th { "completed" } th { "took (ms)" } th { "Iceberg commit (ms)" }
                     th { "visible after close (ms)" } th { "sessions" } th { "dead letters" } }
                @for c in recent.checkpoints() {
                    tr {
                        td.n { (c.id) } td { (clock(c.at_unix_s)) }
                        td.n { (c.took.as_millis()) } td.n { (c.commit_took.as_millis()) }
                        td.n { @if let Some(v) = c.visible_after { (v.as_millis()) } @else { "-" } }
                        td.n { (c.sessions) } td.n { (c.dead_letters) }
                    }
                }
            }
        }
    }
}

fn rules(recent: &crate::metrics::Recent) -> Markup {
    html! {
        table id="rules-table" {
            tr { th { "when" } th { "what" } th { "version" } th { "pause (ms)" } th { "detail" } }
            @for change in recent.rules() {
                tr {
                    td { (clock(change.at_unix_s as f64)) } td { (change.action) }
                    td { code { (change.rule_version) } }
                    td.n { @if let Some(us) = change.pause_us { (format!("{:.1}", us as f64 / 1000.0)) } @else { "-" } }
                    td { (change.detail.as_deref().unwrap_or("")) }
                }
            }
        }
    }
}

/// The latest dead letters; without `raw`, neither their text nor the
/// values their reasons quote.
fn dead_letters(recent: &crate::metrics::Recent, raw: bool) -> Markup {
    html! {
        @if recent.latest_dead_letters().next().is_none() {
            p.empty { "none" }
        } @else {
            table id="dead-letter-table" {
                tr { th { "reason" } th { "from" } th { "record" } }
                @for dead in recent.latest_dead_letters() {
                    tr {
                        @if raw {
                            td { (dead.reason) }
                        } @else {
                            td { (unquoted(&dead.reason)) }
                        }
                        td { (dead.source) " #" (dead.partition) " @" (dead.position) }
                        @if raw {
                            td { code { (dead.raw) } }
                        } @else {
                            td.empty { "not shown beyond loopback (--status-raw-records)" }
                        }
                    }
                }
            }
        }
    }
}

/// `reason` with what it quotes from the record (`"..."`) left out.
fn unquoted(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    for (i, part) in reason.split('"').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        } else {
            out.push_str("\"…\"");
        }
    }
    out
}

/// `2026-11-29T07:10:03Z`, from epoch seconds.
fn clock(at_unix_s: f64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs_f64(at_unix_s.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string()
}
