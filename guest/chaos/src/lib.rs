//! A plugin that answers every batch with random but well-typed results, for the
//! host's contract checks: whatever it returns, the host must refuse what breaks
//! a rule and never write an invalid row.
//!
//! Each answer starts as the default rules' (the SDK's loop) and is then, by
//! the throw of a die: kept as it is, refused with an error, replaced by
//! noise, or changed in one to three random places (a user index, a time, a
//! count, a page, an end reason, the stored data, a wake-up time, a session
//! dropped, doubled, merged or reopened, ...). Some changes keep the contract
//! (closing a session early, dropping a page, merging two sessions), most do
//! not. Parameter `seed` (a number, default 0) seeds the die: the same seed
//! gives the same answers to the same batches.
//!
//! Like `faulty`, it implements the contract's export itself, through the SDK's
//! hidden plumbing, since the SDK cannot be made to misbehave.

use std::cell::RefCell;

use sessionize_sdk::__private::bindings::exports::sessionize::plugin::rules::Guest;
use sessionize_sdk::__private::Plugin;
use sessionize_sdk::contract::{
    Batch, BatchResult, ClosedSession, Declarations, EndReason, PluginInfo, SessionState,
    Settings as WitSettings, UserOutcome,
};
use sessionize_sdk::{Expiry, Limits, Rules, Session, Settings};

/// The default limits: the well-behaved answer each batch starts from.
pub struct Limited(Limits);

impl Rules for Limited {
    fn new(settings: &Settings) -> Result<Self, String> {
        Limits::from_settings(settings).map(Self)
    }

    fn expiry(&self, session: &Session) -> Expiry {
        self.0.expiry(session)
    }
}

struct Sdk;

impl Plugin for Sdk {
    type Rules = Limited;
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
}

/// SplitMix64: small, seedable, and the same on every platform.
struct Die(u64);

impl Die {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A time near `around`, or now and then one far from anything.
    fn time(&mut self, around: i64) -> i64 {
        match self.below(10) {
            0 => [i64::MIN, i64::MAX, 0, -1][self.index(4)],
            1 => self.next() as i64,
            _ => around.saturating_add(self.below(240_001) as i64 - 120_000),
        }
    }

    fn count(&mut self, around: u32) -> u32 {
        match self.below(4) {
            0 => 0,
            1 => around.saturating_add(1),
            2 => around.saturating_sub(1),
            _ => self.below(8) as u32,
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = [0, 16, 4_000, 20_000][self.index(4)];
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn reason(&mut self) -> EndReason {
        match self.below(5) {
            0 => EndReason::Inactivity,
            1 => EndReason::MaxDuration,
            2 => EndReason::EndOfInput,
            3 => EndReason::Custom("logout".into()),
            _ => {
                let len = [0, 8, 100][self.index(3)];
                let chars = ['a', 'z', '-', ' ', '\n', '\u{7}', 'é', '界'];
                EndReason::Custom((0..len).map(|_| chars[self.index(chars.len())]).collect())
            }
        }
    }

    fn pages(&mut self, texts: u32) -> Vec<u32> {
        (0..self.below(4)).map(|_| self.below(u64::from(texts) + 2) as u32).collect()
    }
}

/// What the instance keeps: its die and how many texts the host sent.
struct Instance {
    die: Die,
    texts: u32,
}

thread_local! {
    static INSTANCE: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

/// The exported plugin.
pub struct Chaos;

impl Guest for Chaos {
    fn info() -> PluginInfo {
        <Sdk as Guest>::info()
    }

    fn configure(settings: WitSettings) -> Result<Declarations, String> {
        let seed = match Settings::from(settings.clone()).param("seed") {
            None => 0,
            Some(seed) => seed.parse().map_err(|_| format!("seed {seed:?} is not a number"))?,
        };
        let declared = <Sdk as Guest>::configure(settings)?;
        INSTANCE.with(|i| *i.borrow_mut() = Some(Instance { die: Die(seed), texts: 0 }));
        Ok(declared)
    }

    fn process(batch: Batch) -> Result<BatchResult, String> {
        let users = batch.users.len() as u32;
        let watermark = batch.watermark;
        let new_texts = batch.new_texts.len() as u32;
        let answer = <Sdk as Guest>::process(batch)?;
        INSTANCE.with(|i| {
            let mut i = i.borrow_mut();
            let instance = i.as_mut().ok_or("process called before configure")?;
            instance.texts += new_texts;
            let texts = instance.texts;
            let die = &mut instance.die;
            match die.below(100) {
                0..30 => Ok(answer),
                30..35 => Err("chaos: no answer this time".into()),
                35..45 => Ok(noise(die, users, watermark, texts)),
                _ => {
                    let mut answer = answer;
                    for _ in 0..=die.below(3) {
                        change(die, &mut answer, users, watermark, texts);
                    }
                    Ok(answer)
                }
            }
        })
    }
}

/// A result made of nothing but random values.
fn noise(die: &mut Die, users: u32, watermark: i64, texts: u32) -> BatchResult {
    let outcomes = (users as u64).saturating_sub(1) + die.below(3);
    BatchResult {
        users: (0..outcomes)
            .map(|_| UserOutcome {
                state: (die.below(2) == 0).then(|| SessionState {
                    start_ms: die.time(watermark),
                    last_ms: die.time(watermark),
                    event_count: die.count(2),
                    pages: die.pages(texts),
                    data: die.bytes(),
                }),
                wake_at: (die.below(2) == 0).then(|| die.time(watermark)),
            })
            .collect(),
        closed: (0..die.below(4))
            .map(|_| ClosedSession {
                user: die.below(u64::from(users) + 1) as u32,
                start_ms: die.time(watermark),
                end_ms: die.time(watermark),
                event_count: die.count(2),
                pages: die.pages(texts),
                end_reason: die.reason(),
                attributes: Vec::new(),
            })
            .collect(),
    }
}

/// Changes `answer` in one random place.
fn change(die: &mut Die, answer: &mut BatchResult, users: u32, watermark: i64, texts: u32) {
    let closed = die.index(answer.closed.len());
    let user = die.index(answer.users.len());
    let kind = die.below(16);
    match kind {
        0..=7 | 13 | 15 if !answer.closed.is_empty() => {
            change_closed(die, answer, kind, closed, users, texts);
        }
        14 if answer.closed.len() > closed + 1 => {
            // Merges two sessions in a row: fine when they are the same user's.
            let next = answer.closed.remove(closed + 1);
            let c = &mut answer.closed[closed];
            c.end_ms = next.end_ms;
            c.event_count = c.event_count.saturating_add(next.event_count);
            for page in next.pages {
                if !c.pages.contains(&page) {
                    c.pages.push(page);
                }
            }
        }
        8..=11 if !answer.users.is_empty() => {
            change_user(die, answer, kind, user, watermark, texts)
        }
        12 => {
            if die.below(2) == 0 {
                answer.users.pop();
            } else {
                answer.users.push(UserOutcome { state: None, wake_at: None });
            }
        }
        _ => {}
    }
}

/// Changes closed session `closed` of `answer` (there is one), as `kind` says.
fn change_closed(
    die: &mut Die,
    answer: &mut BatchResult,
    kind: u64,
    closed: usize,
    users: u32,
    texts: u32,
) {
    match kind {
        0 => answer.closed[closed].user = die.below(u64::from(users) + 2) as u32,
        1 => answer.closed[closed].start_ms = die.time(answer.closed[closed].start_ms),
        2 => answer.closed[closed].end_ms = die.time(answer.closed[closed].end_ms),
        3 => answer.closed[closed].event_count = die.count(answer.closed[closed].event_count),
        4 => {
            let pages = &mut answer.closed[closed].pages;
            match die.below(4) {
                0 => pages.push(die.below(u64::from(texts) + 2) as u32),
                1 if !pages.is_empty() => {
                    pages.remove(die.index(pages.len()));
                }
                2 if !pages.is_empty() => pages.push(pages[die.index(pages.len())]),
                _ => pages.clear(),
            }
        }
        5 => answer.closed[closed].end_reason = die.reason(),
        6 => {
            answer.closed.remove(closed);
        }
        7 => answer.closed.push(answer.closed[closed].clone()),
        13 => {
            // Reopens a closed session: fine unless the input ended or the
            // user has a session open already.
            let c = answer.closed.remove(closed);
            if let Some(outcome) = answer.users.get_mut(c.user as usize) {
                outcome.state = Some(SessionState {
                    start_ms: c.start_ms,
                    last_ms: c.end_ms,
                    event_count: c.event_count,
                    pages: c.pages,
                    data: Vec::new(),
                });
            }
        }
        _ => {
            // Splits a session in two at a random time.
            let c = answer.closed[closed].clone();
            if c.event_count > 1 {
                let at = die.time(c.start_ms);
                let first = ClosedSession { end_ms: at, event_count: 1, ..c.clone() };
                let second = ClosedSession { start_ms: at, event_count: c.event_count - 1, ..c };
                answer.closed[closed] = first;
                answer.closed.insert(closed + 1, second);
            }
        }
    }
}

/// Changes the outcome of user `user` of `answer` (there is one), as `kind` says.
fn change_user(
    die: &mut Die,
    answer: &mut BatchResult,
    kind: u64,
    user: usize,
    watermark: i64,
    texts: u32,
) {
    match kind {
        8 => {
            // Closing the open session early keeps the contract.
            if let Some(state) = answer.users[user].state.take() {
                answer.users[user].wake_at = None;
                answer.closed.push(ClosedSession {
                    user: user as u32,
                    start_ms: state.start_ms,
                    end_ms: state.last_ms,
                    event_count: state.event_count,
                    pages: state.pages,
                    end_reason: die.reason(),
                    attributes: Vec::new(),
                });
            }
        }
        9 => match answer.users[user].state.as_mut() {
            Some(state) => match die.below(5) {
                0 => state.start_ms = die.time(state.start_ms),
                1 => state.last_ms = die.time(state.last_ms),
                2 => state.event_count = die.count(state.event_count),
                3 => state.data = die.bytes(),
                _ => state.pages = die.pages(texts),
            },
            // A session out of nowhere.
            None => {
                answer.users[user].state = Some(SessionState {
                    start_ms: die.time(watermark),
                    last_ms: die.time(watermark),
                    event_count: die.count(1),
                    pages: die.pages(texts),
                    data: die.bytes(),
                });
            }
        },
        10 => answer.users[user].wake_at = Some(die.time(watermark)),
        _ => {
            let other = die.index(answer.users.len());
            answer.users.swap(user, other);
        }
    }
}

#[cfg(target_arch = "wasm32")]
sessionize_sdk::__private::bindings::__export_session_rules!(
    Chaos with_types_in sessionize_sdk::__private::bindings
);
