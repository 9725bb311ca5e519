//! Realistic clickstream for demos, tests and benchmarks: users browse in bursts
//! separated by long gaps, some sessions run past the maximum duration, producers
//! retry (duplicates), some events arrive late, a few records are malformed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const PAGES: &[&str] = &[
    "home",
    "search",
    "results",
    "hotel_details",
    "room_select",
    "checkout",
    "payment",
    "confirmation",
    "account",
    "help",
    "deals",
    "reviews",
    "map",
    "logout",
];
const EVENTS: &[(&str, &str)] = &[
    ("page_view", "view"),
    ("click", "interaction"),
    ("scroll", "interaction"),
    ("search_submit", "search"),
    ("add_to_cart", "commerce"),
];

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Distinct users.
    pub num_users: u32,
    /// Events per second of event time, across all users.
    pub rate: f64,
    /// Event-time span, seconds.
    pub duration_s: u64,
    /// First event time, epoch ms.
    pub start_ms: i64,
    /// Share of events sent twice.
    pub duplicate_rate: f64,
    /// Share of events delivered late (some beyond the 10 min default lateness).
    pub late_rate: f64,
    /// Share of records that are malformed.
    pub malformed_rate: f64,
    /// Random seed: the same seed gives the same output.
    pub seed: u64,
    /// Stop after this many lines.
    pub max_events: Option<u64>,
}

impl GeneratorConfig {
    /// The `--sample` / `--test-mode` data set: small, fixed, covers every case.
    pub fn sample() -> Self {
        Self {
            num_users: 200,
            rate: 20.0,
            duration_s: 6 * 3600,
            start_ms: 1_735_689_600_000, // 2025-01-01T00:00:00Z
            duplicate_rate: 0.01,
            late_rate: 0.005,
            malformed_rate: 0.001,
            seed: 42,
            max_events: None,
        }
    }
}

/// Per-user browsing state.
struct Browser {
    uuid: String,
    page: usize,
    /// Whether the current burst is a marathon session (past the max duration).
    marathon: bool,
    burst_left: u32,
}

impl Browser {
    /// A user with a random uuid-shaped id (the `i`th, so ids are distinct).
    fn new(rng: &mut SmallRng, i: u32) -> Self {
        let uuid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            rng.random::<u32>(),
            i & 0xffff,
            rng.random_range(0..0xfff),
            rng.random_range(0..0xfff),
            rng.random::<u64>() & 0xffff_ffff_ffff
        );
        Self { uuid, page: 0, marathon: false, burst_left: 0 }
    }

    /// Moves on to the page of the next event: a new visit starts on the
    /// first page; within one, mostly the next page, sometimes any.
    fn browse(&mut self, rng: &mut SmallRng) {
        if self.burst_left == 0 {
            self.burst_left = rng.random_range(3..40);
            self.marathon = rng.random_bool(0.03);
            if self.marathon {
                self.burst_left = 200;
            }
            self.page = 0;
        } else {
            self.page = if rng.random_bool(0.7) {
                (self.page + 1) % PAGES.len()
            } else {
                rng.random_range(0..PAGES.len())
            };
        }
        self.burst_left -= 1;
    }

    /// How long until this user's next event.
    fn gap(&self, rng: &mut SmallRng, per_user_gap_ms: f64) -> i64 {
        if self.burst_left == 0 {
            // Between visits: well past the inactivity timeout.
            rng.random_range(31 * 60_000..(per_user_gap_ms as i64 * 20).max(32 * 60_000))
        } else if self.marathon {
            rng.random_range(20_000..60_000)
        } else {
            rng.random_range(1_000..(per_user_gap_ms as i64).clamp(2_000, 20 * 60_000))
        }
    }
}

/// Writes into `line` the record of `b`'s event at `t` (or, now and then, a
/// malformed record).
fn record(
    line: &mut String,
    rng: &mut SmallRng,
    malformed_rate: f64,
    b: &Browser,
    t: i64,
    seq: u64,
) {
    line.clear();
    if rng.random_bool(malformed_rate) {
        line.push_str(match rng.random_range(0..4) {
            0 => "{\"uuid\": \"broken\", \"event_timestamp\": \"yesterday\"}",
            1 => "{\"event_timestamp\": 1}",
            2 => "not json at all",
            _ => "{\"uuid\": \"\", \"event_timestamp\": 5}",
        });
        line.push('\n');
    } else {
        let (name, kind) = EVENTS[rng.random_range(0..EVENTS.len())];
        let ts = if rng.random_bool(0.5) { format!("\"{t}\"") } else { t.to_string() };
        line.push_str(&format!(
            "{{\"uuid\":\"{}\",\"event_id\":\"e{:012}\",\"event_timestamp\":{},\"page_name\":\"{}\",\"event_details\":{{\"event_name\":\"{}\",\"event_type\":\"{}\",\"event_value\":{}}}}}\n",
            b.uuid, seq, ts, PAGES[b.page], name, kind, rng.random_range(0..1000)
        ));
    }
}

/// Writes `config`'s events as JSON lines to `out`, in delivery order. Returns
/// the number of lines written.
pub fn generate(config: &GeneratorConfig, out: &mut dyn Write) -> io::Result<u64> {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let end_ms = config.start_ms + (config.duration_s as i64) * 1000;
    let per_user_gap_ms = (config.num_users as f64 / config.rate.max(1e-9) * 1000.0).max(1.0);
    let mut browsers: Vec<Browser> =
        (0..config.num_users).map(|i| Browser::new(&mut rng, i)).collect();
    // Next event time per user; a heap yields events in time order.
    let mut next: BinaryHeap<Reverse<(i64, u32)>> = (0..config.num_users)
        .map(|u| {
            Reverse((config.start_ms + rng.random_range(0..(per_user_gap_ms as i64 * 4).max(1)), u))
        })
        .collect();
    // Late events are held back and delivered after later ones.
    let mut held: BinaryHeap<Reverse<(i64, String)>> = BinaryHeap::new();
    let mut line = String::with_capacity(512);
    let mut written = 0u64;
    let mut event_seq = 0u64;
    while let Some(Reverse((t, u))) = next.pop() {
        if t >= end_ms || config.max_events.is_some_and(|max| written >= max) {
            continue;
        }
        while held.peek().is_some_and(|Reverse((due, _))| *due <= t) {
            if let Some(Reverse((_, held_line))) = held.pop() {
                out.write_all(held_line.as_bytes())?;
                written += 1;
            }
        }
        let b = &mut browsers[u as usize];
        b.browse(&mut rng);
        event_seq += 1;
        record(&mut line, &mut rng, config.malformed_rate, b, t, event_seq);
        if rng.random_bool(config.late_rate) {
            // Up to 15 min late: some within the default 10 min lateness, some beyond.
            held.push(Reverse((t + rng.random_range(60_000..900_000), line.clone())));
        } else {
            out.write_all(line.as_bytes())?;
            written += 1;
        }
        if rng.random_bool(config.duplicate_rate) {
            out.write_all(line.as_bytes())?;
            written += 1;
        }
        next.push(Reverse((t + b.gap(&mut rng, per_user_gap_ms), u)));
    }
    while let Some(Reverse((_, held_line))) = held.pop() {
        out.write_all(held_line.as_bytes())?;
        written += 1;
    }
    Ok(written)
}
