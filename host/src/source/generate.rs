//! Realistic clickstream for demos, tests and benchmarks: users browse in
//! visits separated by gaps past the inactivity timeout, some visits run past
//! the maximum duration (marathons), a visitor sometimes pauses within the
//! timeout, producers retry (duplicates), some events arrive late, a few
//! records are malformed.
//!
//! The rate holds over any minute, from the first one: a scheduler keeps the
//! visitors browsing at once at the number the rate needs, starting the visit
//! of a rested user (one whose last visit ended more than 31 minutes ago)
//! whenever a visit ends or pauses. When there are too few users for the rate
//! at realistic length and pace, visits grow longer and then faster
//! ([`VisitShape`]). Below about 50 users the rate holds on average only:
//! too few visitors browse at once for each minute to get its share.

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

const MINUTE_MS: f64 = 60_000.0;
/// Share of visits that are marathons: past the default 2 h maximum.
const MARATHON_SHARE: f64 = 0.02;
/// Events of a marathon (before scaling), 40-80 s apart: about 2.5 h.
const MARATHON_EVENTS: f64 = 150.0;
const MARATHON_GAP_MS: (f64, f64) = (40_000.0, 80_000.0);
/// Events of an ordinary visit (before scaling), uniform.
const VISIT_EVENTS: (u32, u32) = (2, 30);
/// Gap between a visitor's events (before scaling), uniform: mean 10 s.
const BROWSE_GAP_MS: (f64, f64) = (2_000.0, 18_000.0);
/// Chance per event (before scaling) that the visitor pauses, and how long:
/// within the default 30 min timeout, so the session goes on.
const PAUSE_CHANCE: f64 = 0.003;
const PAUSE_MS: (f64, f64) = (3.0 * MINUTE_MS, 20.0 * MINUTE_MS);
/// Rest between a user's visits: past the default 30 min timeout.
const REST_MS: (f64, f64) = (31.0 * MINUTE_MS, 61.0 * MINUTE_MS);
/// Headroom of users over what the rate needs, so a rested user is always at hand.
const USERS_HEADROOM: f64 = 1.5;
/// The most of their time users spend in visits when there are few of them.
const MAX_BUSY: f64 = 0.6;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Distinct users.
    pub num_users: u32,
    /// Events per second of event time, across all users (duplicate copies not
    /// counted).
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
            num_users: 500,
            rate: 2.0,
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

fn uniform(rng: &mut SmallRng, (low, high): (f64, f64)) -> f64 {
    rng.random_range(low..high)
}

fn mean((low, high): (f64, f64)) -> f64 {
    (low + high) / 2.0
}

/// How each visit is drawn, for a rate and a number of users.
#[derive(Debug, Clone, Copy)]
struct VisitShape {
    /// Ordinary visits last this many times their realistic length (same pace).
    length: f64,
    /// Visitors browse this many times faster than realistic (closer events).
    pace: f64,
}

impl VisitShape {
    /// The realistic shape while there are enough users for the rate. With
    /// fewer, ordinary visits grow longer first, up to [`MAX_BUSY`] of a
    /// user's time, so that many visitors share the rate and none of them
    /// weighs much in it; then visitors browse faster.
    fn for_rate(users: u32, rate: f64) -> Self {
        let wanted = USERS_HEADROOM * rate / f64::from(users.max(1));
        let realistic = Self { length: 1.0, pace: 1.0 };
        if realistic.events_per_user_per_s() >= wanted {
            return realistic;
        }
        let busiest = Self { length: Self::length_for_busy(MAX_BUSY), pace: 1.0 };
        let at_most = busiest.events_per_user_per_s();
        if at_most < wanted {
            return Self { pace: wanted / at_most, ..busiest };
        }
        // The events a user gives grow with the length: bisect for it.
        let (mut low, mut high) = (1.0, busiest.length);
        for _ in 0..50 {
            let mid = (low + high) / 2.0;
            let shape = Self { length: mid, pace: 1.0 };
            if shape.events_per_user_per_s() < wanted {
                low = mid;
            } else {
                high = mid;
            }
        }
        Self { length: high, pace: 1.0 }
    }

    /// Mean events of an ordinary visit.
    fn visit_events(&self) -> f64 {
        f64::from(VISIT_EVENTS.0 + VISIT_EVENTS.1 - 1) / 2.0 * self.length
    }

    /// Mean time of an ordinary visit and of a marathon, and of a rest, ms.
    fn mean_times_ms(&self) -> (f64, f64, f64) {
        let visit = self.visit_events() * (mean(BROWSE_GAP_MS) + PAUSE_CHANCE * mean(PAUSE_MS));
        (visit, MARATHON_EVENTS * mean(MARATHON_GAP_MS), mean(REST_MS))
    }

    /// Events a second one user gives, cycling through visits and rests.
    fn events_per_user_per_s(&self) -> f64 {
        let events =
            (1.0 - MARATHON_SHARE) * self.visit_events() + MARATHON_SHARE * MARATHON_EVENTS;
        let (visit, marathon, rest) = self.mean_times_ms();
        let cycle = (1.0 - MARATHON_SHARE) * visit + MARATHON_SHARE * marathon + rest;
        self.pace * events / cycle * 1000.0
    }

    /// The length at which a user spends `busy` of the time in visits.
    fn length_for_busy(busy: f64) -> f64 {
        let (visit, marathon, rest) = Self { length: 1.0, pace: 1.0 }.mean_times_ms();
        let in_visits = busy / (1.0 - busy) * rest;
        ((in_visits - MARATHON_SHARE * marathon) / ((1.0 - MARATHON_SHARE) * visit)).max(1.0)
    }

    /// Events of a new visit.
    fn events(&self, marathon: bool, rng: &mut SmallRng) -> u64 {
        let events = if marathon {
            MARATHON_EVENTS
        } else {
            f64::from(rng.random_range(VISIT_EVENTS.0..VISIT_EVENTS.1)) * self.length
        };
        // Saturates for absurd rates; the cap on --rate keeps it finite.
        ((events * self.pace).round() as u64).max(1)
    }

    /// Events a second of a visitor browsing (not pausing) in this kind of visit.
    fn rate_per_s(&self, marathon: bool) -> f64 {
        let range = if marathon { MARATHON_GAP_MS } else { BROWSE_GAP_MS };
        self.pace * 1000.0 / mean(range)
    }

    /// Time to a visitor's next event while browsing.
    fn gap(&self, marathon: bool, rng: &mut SmallRng) -> i64 {
        let range = if marathon { MARATHON_GAP_MS } else { BROWSE_GAP_MS };
        (uniform(rng, range) / self.pace).round() as i64
    }

    /// Chance that a visitor pauses after an event: the same pauses an hour
    /// whatever the pace.
    fn pause_chance(&self) -> f64 {
        (PAUSE_CHANCE / self.pace).min(1.0)
    }
}

/// What a user is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activity {
    /// Between visits.
    Resting,
    /// In a visit, an event every few seconds.
    Browsing { marathon: bool },
    /// In a visit, away for a while within the timeout.
    Pausing,
}

/// Per-user browsing state.
struct Browser {
    uuid: String,
    page: usize,
    activity: Activity,
    events_left: u64,
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
        Self { uuid, page: 0, activity: Activity::Resting, events_left: 0 }
    }

    /// Moves on to the page of the next event: mostly the next page, sometimes any.
    fn browse(&mut self, rng: &mut SmallRng) {
        self.page = if rng.random_bool(0.7) {
            (self.page + 1) % PAGES.len()
        } else {
            rng.random_range(0..PAGES.len())
        };
    }
}

/// The users: who is doing what, and when each one acts next.
struct Crowd {
    browsers: Vec<Browser>,
    shape: VisitShape,
    /// The events a second to keep.
    rate: f64,
    /// Visitors browsing now, in ordinary visits and in marathons.
    browsing: [u64; 2],
    /// Next event of each user in a visit, browsing or pausing.
    next: BinaryHeap<Reverse<(i64, u32)>>,
    /// Resting users, by when they may visit again.
    rested: BinaryHeap<Reverse<(i64, u32)>>,
    /// Event time the scheduler has reached.
    now: i64,
    start_ms: i64,
}

impl Crowd {
    /// Every user resting and free to visit: the first visits start at once,
    /// each part-way through, as if the traffic had been going on before.
    fn new(config: &GeneratorConfig, rng: &mut SmallRng) -> Self {
        let browsers: Vec<Browser> = (0..config.num_users).map(|i| Browser::new(rng, i)).collect();
        let rested = (0..config.num_users)
            .map(|u| Reverse((config.start_ms - uniform(rng, (0.0, 30.0 * MINUTE_MS)) as i64, u)))
            .collect();
        Self {
            browsers,
            shape: VisitShape::for_rate(config.num_users, config.rate),
            rate: config.rate,
            browsing: [0, 0],
            next: BinaryHeap::new(),
            rested,
            now: config.start_ms,
            start_ms: config.start_ms,
        }
    }

    /// Events a second the visitors browsing now give together.
    fn browsing_rate(&self) -> f64 {
        self.browsing[0] as f64 * self.shape.rate_per_s(false)
            + self.browsing[1] as f64 * self.shape.rate_per_s(true)
    }

    /// The next event's time and user, after starting the visits the rate
    /// needs by then; `None` once nobody will act again.
    fn next_event(&mut self, rng: &mut SmallRng) -> Option<(i64, u32)> {
        let next_at = self.next.peek().map(|Reverse((t, _))| *t);
        let ready_at = self.rested.peek().map(|Reverse((t, _))| (*t).max(self.now));
        let short = self.browsing_rate() < self.rate;
        self.now = match (next_at, ready_at) {
            (Some(next), Some(ready)) if short && ready < next => ready,
            (Some(next), _) => next,
            (None, Some(ready)) => ready,
            (None, None) => return None,
        };
        while self.browsing_rate() < self.rate {
            match self.rested.peek() {
                Some(&Reverse((ready, user))) if ready <= self.now => {
                    self.rested.pop();
                    self.start_visit(user, rng);
                }
                _ => break,
            }
        }
        self.next.pop().map(|Reverse(event)| event)
    }

    /// `user` starts a visit now (part-way through one at the start).
    fn start_visit(&mut self, user: u32, rng: &mut SmallRng) {
        let marathon = rng.random_bool(MARATHON_SHARE);
        let mut events = self.shape.events(marathon, rng);
        let opening = self.now == self.start_ms;
        if opening {
            events = rng.random_range(1..=events);
        }
        let browser = &mut self.browsers[user as usize];
        browser.activity = Activity::Browsing { marathon };
        browser.events_left = events;
        browser.page = if opening { rng.random_range(0..PAGES.len()) } else { 0 };
        self.browsing[usize::from(marathon)] += 1;
        let gap = self.shape.gap(marathon, rng);
        // Part-way through a visit, the first event may come any time within a gap.
        let first = self.now + if opening { rng.random_range(0..=gap) } else { gap };
        self.next.push(Reverse((first, user)));
    }

    /// After `user`'s event at `t`: the visit goes on, pauses or ends.
    fn after_event(&mut self, user: u32, t: i64, rng: &mut SmallRng) {
        if self.browsers[user as usize].activity == Activity::Pausing {
            self.browsers[user as usize].activity = Activity::Browsing { marathon: false };
            self.browsing[0] += 1;
        }
        // Visitors coming back from a pause push the rate over: an ordinary
        // visit ends early while the others keep the rate without it.
        let spare = self.browsing_rate() - self.shape.rate_per_s(false) >= self.rate;
        let pause_chance = self.shape.pause_chance();
        let browser = &mut self.browsers[user as usize];
        let Activity::Browsing { marathon } = browser.activity else { return };
        browser.events_left = browser.events_left.saturating_sub(1);
        if browser.events_left == 0 || (spare && !marathon) {
            browser.activity = Activity::Resting;
            self.browsing[usize::from(marathon)] -= 1;
            let rest = uniform(rng, REST_MS) as i64;
            self.rested.push(Reverse((t + rest, user)));
        } else if !marathon && rng.random_bool(pause_chance) {
            browser.browse(rng);
            browser.activity = Activity::Pausing;
            self.browsing[0] -= 1;
            let pause = uniform(rng, PAUSE_MS) as i64;
            self.next.push(Reverse((t + pause, user)));
        } else {
            browser.browse(rng);
            let gap = self.shape.gap(marathon, rng);
            self.next.push(Reverse((t + gap, user)));
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

/// Lines on their way out: some held back to arrive late, some sent twice.
struct Delivery<'a> {
    out: &'a mut dyn Write,
    /// Late lines by when they are delivered.
    held: BinaryHeap<Reverse<(i64, String)>>,
    written: u64,
}

impl Delivery<'_> {
    /// Delivers the held lines due by `t`.
    fn release(&mut self, t: i64) -> io::Result<()> {
        while self.held.peek().is_some_and(|Reverse((due, _))| *due <= t) {
            if let Some(Reverse((_, line))) = self.held.pop() {
                self.write(&line)?;
            }
        }
        Ok(())
    }

    /// Sends `line` of an event at `t` now, late, and now and then twice.
    fn send(
        &mut self,
        line: &str,
        t: i64,
        config: &GeneratorConfig,
        rng: &mut SmallRng,
    ) -> io::Result<()> {
        if rng.random_bool(config.late_rate) {
            // Up to 15 min late: some within the default 10 min lateness, some beyond.
            self.held.push(Reverse((t + rng.random_range(60_000..900_000), line.to_owned())));
        } else {
            self.write(line)?;
        }
        if rng.random_bool(config.duplicate_rate) {
            self.write(line)?;
        }
        Ok(())
    }

    fn write(&mut self, line: &str) -> io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.written += 1;
        Ok(())
    }

    /// Delivers every line still held; returns the lines written.
    fn finish(mut self) -> io::Result<u64> {
        self.release(i64::MAX)?;
        Ok(self.written)
    }
}

/// Writes `config`'s events as JSON lines to `out`, in delivery order. Returns
/// the number of lines written.
pub fn generate(config: &GeneratorConfig, out: &mut dyn Write) -> io::Result<u64> {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let end_ms = config.start_ms.saturating_add((config.duration_s as i64).saturating_mul(1000));
    let mut crowd = Crowd::new(config, &mut rng);
    let mut delivery = Delivery { out, held: BinaryHeap::new(), written: 0 };
    let mut line = String::with_capacity(512);
    let mut seq = 0u64;
    while let Some((t, user)) = crowd.next_event(&mut rng) {
        if t >= end_ms || config.max_events.is_some_and(|max| delivery.written >= max) {
            break;
        }
        delivery.release(t)?;
        seq += 1;
        record(&mut line, &mut rng, config.malformed_rate, &crowd.browsers[user as usize], t, seq);
        delivery.send(&line, t, config, &mut rng)?;
        crowd.after_event(user, t, &mut rng);
    }
    delivery.finish()
}
