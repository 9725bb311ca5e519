//! A deterministic simulation of a fleet: members that claim partitions,
//! read them, checkpoint, hand them over, crash, freeze and come back, are
//! given a partition another still holds (as Tansu does), and take deploys and
//! rollbacks; a scripted coordinator; maintenance between steps; and a store
//! that loses compare-and-swap races, reports commits that did not land as
//! failed, and fails reads. Everything runs the real code (the member's
//! checkpoints, its rules exchange and lifecycle, the engines, the ingest
//! step) over [`MemoryGroupStore`], one step at a time, in an order drawn
//! from a seed.
//!
//! Checked after every step: no commit of a partition passed without the
//! newest claim on it (a fenced member never commits; no partition's output
//! comes from two owners at once); maintenance removed no file the group's
//! progress or rules record names. At the end, every partition read to its
//! end by a live member: every record in exactly one committed session, equal
//! to one engine reading each partition without interruption; and every
//! member holding partitions runs the rules the record names.
//!
//! A failing schedule prints its seed: `SIM_SEED=<seed> cargo test -p
//! sessionize --lib simulation` replays it alone. `SIM_SCHEDULES` sets how
//! many schedules run (default 10,000).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use default_rules::DefaultRules;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::checkpoint::{CheckpointStore, GroupCheckpointer, RulesExchange};
use crate::clock::wall_clock_ms;
use crate::engine::{Engine, EngineConfig};
use crate::event::{EventBlock, EventLimits};
use crate::group::GroupStore;
use crate::job::ingest::{ingest, Intake};
use crate::job::streaming::Engines;
use crate::rules::contract::Settings;
use crate::rules::lifecycle::{Candidate, MemberRules, RulesAction, RulesArchive};
use crate::sink::{MemoryGroupStore, SessionRow, SinkRetryPolicy, StoreFaults};
use sessionize_native::NativeRules;

const GROUP: &str = "sim";
/// Rules versions operators deploy (all cut sessions alike: the default
/// rules), and the archive of their components, shared by every schedule.
struct Versions {
    names: Vec<String>,
    archive: Arc<RulesArchive>,
    _dir: tempfile::TempDir,
}

fn versions() -> &'static Versions {
    static VERSIONS: OnceLock<Versions> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let archive = Arc::new(RulesArchive::open(dir.path()).expect("an archive"));
        let names = (1..=3)
            .map(|n| {
                let bytes = format!("component {n}");
                let hash = hex::encode(&Sha256::digest(bytes.as_bytes())[..6]);
                let name = format!("rules@{n}+{hash}");
                archive.keep(&name, bytes.as_bytes()).expect("kept");
                name
            })
            .collect();
        Versions { names, archive, _dir: dir }
    })
}
/// Store steps after which maintenance takes a file nobody names for an orphan.
const ORPHAN_AGE: u64 = 4;

/// The size of one schedule.
#[derive(Debug, Clone, Copy)]
struct Shape {
    partitions: i32,
    events: usize,
    members: usize,
    steps: usize,
}

/// One member: its checkpoints, engines, rules, and where it reads.
struct Member {
    id: String,
    checkpointer: GroupCheckpointer,
    engines: Engines,
    rules: MemberRules,
    running: String,
    offsets: BTreeMap<i32, i64>,
    frozen: bool,
}

/// The fleet, its store and input, and the coordinator's assignment.
struct Fleet {
    rng: SmallRng,
    seed: u64,
    store: MemoryGroupStore,
    input: Vec<Vec<Vec<u8>>>,
    members: BTreeMap<usize, Member>,
    next_member: usize,
    runtime: tokio::runtime::Runtime,
    native: NativeRules<DefaultRules>,
    /// Claims the store let commit, per partition: (epoch, owner) in order.
    owners: BTreeMap<i32, Vec<(u64, String)>>,
    checked_log: usize,
}

fn native() -> NativeRules<DefaultRules> {
    let settings = Settings {
        inactivity_timeout_ms: 30 * 60_000,
        max_duration_ms: 2 * 3_600_000,
        params: vec![],
    };
    NativeRules::new("default-rules", &settings).expect("the default rules configure")
}

/// Each partition's records: JSON events of its own users, in time order.
fn input(rng: &mut SmallRng, partitions: i32, events: usize) -> Vec<Vec<Vec<u8>>> {
    (0..partitions)
        .map(|p| {
            let mut t = 1_735_689_600_000_i64 + rng.random_range(0..3_600_000);
            (0..events)
                .map(|n| {
                    t += rng.random_range(1_000..2_400_000);
                    let user = rng.random_range(0..4);
                    let page = rng.random_range(0..5);
                    format!(
                        r#"{{"uuid":"p{p}-u{user}","event_id":"e{n}","event_timestamp":{t},"page_name":"page{page}"}}"#
                    )
                    .into_bytes()
                })
                .collect()
        })
        .collect()
}

impl Fleet {
    fn new(seed: u64, shape: Shape) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let faults = StoreFaults {
            lose_race: rng.random_range(0.0..0.2),
            lost_answer: rng.random_range(0.0..0.15),
            failed_read: rng.random_range(0.0..0.1),
            fail_commits_from: None,
        };
        let input = input(&mut rng, shape.partitions, shape.events);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build();
        let mut fleet = Self {
            store: MemoryGroupStore::with_faults(faults, seed),
            rng,
            seed,
            input,
            members: BTreeMap::new(),
            next_member: 0,
            runtime: runtime.expect("a runtime"),
            native: native(),
            owners: BTreeMap::new(),
            checked_log: 0,
        };
        for _ in 0..shape.members {
            fleet.join();
        }
        fleet
    }

    /// A new member (a restarted instance is a new member too).
    fn join(&mut self) {
        let slot = self.next_member;
        self.next_member += 1;
        let id = format!("m{slot}-{}", self.seed);
        let view = self.runtime.block_on(self.store.view(GROUP)).unwrap_or_default();
        let first = versions().names[0].clone();
        let running = view.rules.as_ref().map_or(first, |r| r.version.clone());
        let seq = view.rules.as_ref().map_or(0, |r| r.seq);
        let exchange = RulesExchange::new(GROUP, versions().archive.clone(), 1 << 20, seq);
        let mut checkpointer =
            GroupCheckpointer::new(GROUP, &id, EngineConfig::default()).exchanging_rules(exchange);
        let quick = SinkRetryPolicy {
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            budget: Duration::from_secs(3600),
        };
        checkpointer.set_sink_retry(quick);
        let mut rules = MemberRules::default();
        rules.start_with(&running, None, view);
        let engines = Engines::per_partition(GroupCheckpointer::WHOLE_STATE_EVERY);
        let member = Member {
            id,
            checkpointer,
            engines,
            rules,
            running,
            offsets: BTreeMap::new(),
            frozen: false,
        };
        self.members.insert(slot, member);
    }

    fn live(&self) -> Vec<usize> {
        self.members.iter().filter(|(_, m)| !m.frozen).map(|(&s, _)| s).collect()
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.rng.random_range(0..from.len())])
    }

    /// One step, drawn at random.
    fn step(&mut self) -> Result<(), String> {
        self.store.tick();
        let live = self.live();
        let Some(slot) = self.pick(&live) else {
            self.join();
            return Ok(());
        };
        match self.rng.random_range(0..100) {
            0..=34 => {
                let n = self.rng.random_range(1..6);
                self.read(slot, n);
            }
            35..=59 => self.checkpoint(slot),
            60..=74 => self.rebalance(slot),
            75..=78 => self.crash(slot),
            79..=81 => self.join(),
            82..=85 => self.toggle_freeze(),
            86..=90 => self.maintain()?,
            91..=95 => self.deploy(slot),
            _ => self.roll_back(slot),
        }
        self.check_commits()
    }

    /// The member reads up to `n` records of one of its partitions.
    fn read(&mut self, slot: usize, n: usize) {
        let Some(member) = self.members.get_mut(&slot) else { return };
        let held = member.engines.held();
        if held.is_empty() {
            return;
        }
        let p = held[self.rng.random_range(0..held.len())];
        let from = member.offsets.get(&p).copied().unwrap_or(0);
        let records = &self.input[p as usize];
        let to = (from as usize + n).min(records.len());
        let mut block = EventBlock::new(n, EventLimits::default());
        for (i, record) in records.iter().enumerate().take(to).skip(from as usize) {
            block.push(p, i as i64, record);
        }
        let mut dead_letters = Vec::new();
        let engines = &mut member.engines;
        let now = wall_clock_ms();
        ingest(&block, now, &Intake::default(), engines, "sim", &mut dead_letters, |_| {});
        member.engines.route_dead_letters(&mut dead_letters);
        member.offsets.insert(p, to as i64);
        let advanced = member.engines.advance(&mut self.native, false);
        assert!(advanced.is_ok(), "the default rules failed: {advanced:?}");
    }

    /// The member cuts a checkpoint and completes it; a member whose
    /// checkpoint fails for good stops (it is restarted as a new member).
    fn checkpoint(&mut self, slot: usize) {
        let Some(member) = self.members.get_mut(&slot) else { return };
        let cut = member.engines.cut(&member.offsets, &member.running, &[]);
        let Ok(mut cut) = cut else { panic!("a cut failed: {:?}", cut.err()) };
        cut.publish = member.rules.take_publish();
        let completed = self.runtime.block_on(member.checkpointer.complete(&mut self.store, cut));
        let Ok(completed) = completed else {
            self.members.remove(&slot);
            return;
        };
        member.engines.drop_partitions(&completed.fenced);
        for p in &completed.fenced {
            member.offsets.remove(p);
        }
        if let Some(update) = completed.fleet {
            if let Some(request) = member.rules.take_in(*update, &member.running) {
                if let RulesAction::Deploy(Candidate::Uploaded { name, .. }) = request.action {
                    // Followed at this checkpoint boundary (the real job's dry run passes).
                    member.running = name.trim_start_matches("group: ").to_owned();
                }
            }
        }
    }

    /// The coordinator moves a partition to `to`: the member holding it
    /// hands it over (a last checkpoint), unless it is frozen, dead, or the
    /// coordinator gives the partition out twice.
    fn rebalance(&mut self, to: usize) {
        let p = self.rng.random_range(0..self.input.len() as i32);
        let twice = self.rng.random_bool(0.15);
        let holder =
            self.members.iter().find(|(_, m)| m.engines.held().contains(&p)).map(|(&s, _)| s);
        if holder == Some(to) {
            return;
        }
        if let Some(from) = holder.filter(|&h| !twice && !self.members[&h].frozen) {
            self.hand_over(from, p);
        }
        self.claim(to, p);
    }

    /// `from` gives `p` up: a last checkpoint, then it drops and releases it.
    fn hand_over(&mut self, from: usize, p: i32) {
        self.checkpoint(from);
        if let Some(member) = self.members.get_mut(&from) {
            member.engines.drop_partitions(&[p]);
            member.checkpointer.release(&[p]);
            member.offsets.remove(&p);
        }
    }

    /// `slot` claims partition `p` and restores it (an unreadable one is
    /// simply not restored: it is claimed again in a later rebalance).
    fn claim(&mut self, slot: usize, p: i32) {
        let Some(member) = self.members.get_mut(&slot) else { return };
        let claimed = self.runtime.block_on(member.checkpointer.claim(&mut self.store, &[p]));
        let Ok(claimed) = claimed else {
            // A claim that fails stops the member, as it stops the real job.
            self.members.remove(&slot);
            return;
        };
        for restored in &claimed.restored {
            member.offsets.insert(restored.partition, restored.offset.unwrap_or(0));
        }
        member.engines.restore(claimed.restored);
    }

    fn crash(&mut self, slot: usize) {
        self.members.remove(&slot);
    }

    fn toggle_freeze(&mut self) {
        let slots: Vec<usize> = self.members.keys().copied().collect();
        if let Some(slot) = self.pick(&slots) {
            if let Some(member) = self.members.get_mut(&slot) {
                member.frozen = !member.frozen;
            }
        }
    }

    fn deploy(&mut self, slot: usize) {
        let names = &versions().names;
        let version = &names[self.rng.random_range(0..names.len())];
        self.deploy_version(slot, version);
    }

    /// An operator deploys `version` on the member: in force there at once.
    fn deploy_version(&mut self, slot: usize, version: &str) {
        if let Some(member) = self.members.get_mut(&slot) {
            member.running = version.to_owned();
            member.rules.changed_here(version);
        }
    }

    fn roll_back(&mut self, slot: usize) {
        if let Some(member) = self.members.get_mut(&slot) {
            let _ = member.rules.roll_back_group();
        }
    }

    /// Maintenance, then the check that it kept everything the group names.
    fn maintain(&mut self) -> Result<(), String> {
        self.store.maintain(ORPHAN_AGE);
        for (p, entry) in self.store.progress(GROUP) {
            let Some(chain) = entry.state else { continue };
            for seq in chain.first..=chain.last {
                if !self.store.has_state(GROUP, p, chain.epoch, seq) {
                    return Err(format!(
                        "maintenance removed {p}/{}-{seq}, which progress names",
                        chain.epoch
                    ));
                }
            }
        }
        let view = self.runtime.block_on(self.store.view(GROUP)).unwrap_or_default();
        for sha256 in view.rules.iter().flat_map(|r| r.components()) {
            if !self.store.has_component(GROUP, sha256) {
                return Err(format!(
                    "maintenance removed component {sha256}, which the record names"
                ));
            }
        }
        Ok(())
    }

    /// Every commit since the last check was made under the newest claim on
    /// each of its partitions, and epochs only grow.
    fn check_commits(&mut self) -> Result<(), String> {
        for commit in &self.store.log[self.checked_log..] {
            for (&p, &epoch) in &commit.claimed {
                if commit.epochs_then.get(&p) != Some(&epoch) {
                    return Err(format!(
                        "{} committed partition {p} under epoch {epoch}, not the newest",
                        commit.owner
                    ));
                }
                let owners = self.owners.entry(p).or_default();
                if let Some((last, owner)) = owners.last() {
                    if epoch < *last || (epoch == *last && owner != &commit.owner) {
                        return Err(format!("partition {p}: {} committed under epoch {epoch} after {owner} under {last}", commit.owner));
                    }
                }
                owners.push((epoch, commit.owner.clone()));
            }
        }
        self.checked_log = self.store.log.len();
        Ok(())
    }

    /// Every partition read to its end by a live member, the input ended,
    /// and more checkpoints, with no faults, until every partition's
    /// progress is at its end. A member still holding a partition another
    /// claimed since is fenced at its next commit; the partition then goes
    /// to a member anew, as the coordinator's next assignment would.
    fn drain(&mut self) -> Result<(), String> {
        self.store = std::mem::take(&mut self.store).without_faults();
        for member in self.members.values_mut() {
            member.frozen = false;
        }
        if self.members.is_empty() {
            self.join();
        }
        for _ in 0..5 {
            self.assign_all();
            let slots: Vec<usize> = self.members.keys().copied().collect();
            for &slot in &slots {
                while self.unread(slot) > 0 {
                    self.read(slot, 1_000);
                }
                let Some(member) = self.members.get_mut(&slot) else { continue };
                let ended = member.engines.advance(&mut self.native, true);
                assert!(ended.is_ok(), "the default rules failed: {ended:?}");
            }
            for _ in 0..3 {
                for &slot in &slots {
                    self.checkpoint(slot);
                    self.check_commits()?;
                }
            }
            if self.at_end() {
                return Ok(());
            }
        }
        Err("the partitions never all reached their end".into())
    }

    /// Gives every partition whose newest claim no live member holds to one.
    fn assign_all(&mut self) {
        let progress = self.store.progress(GROUP);
        let slots: Vec<usize> = self.members.keys().copied().collect();
        for p in 0..self.input.len() as i32 {
            let owner = progress.get(&p).map(|e| e.owner.as_str());
            let held = self
                .members
                .values()
                .any(|m| Some(m.id.as_str()) == owner && m.engines.held().contains(&p));
            if !held {
                self.move_partition(p, slots[p as usize % slots.len()]);
            }
        }
    }

    /// Whether every partition's committed progress is at its end.
    fn at_end(&self) -> bool {
        let progress = self.store.progress(GROUP);
        self.input.iter().enumerate().all(|(p, records)| {
            progress.get(&(p as i32)).and_then(|e| e.offset) == Some(records.len() as i64)
        })
    }

    /// Moves `p` to `to` with a hand-over from whoever holds it.
    fn move_partition(&mut self, p: i32, to: usize) {
        let holders: Vec<usize> = self
            .members
            .iter()
            .filter(|(_, m)| m.engines.held().contains(&p))
            .map(|(&s, _)| s)
            .collect();
        for from in holders {
            self.hand_over(from, p);
        }
        self.claim(to, p);
    }

    fn unread(&self, slot: usize) -> usize {
        let Some(member) = self.members.get(&slot) else { return 0 };
        member
            .engines
            .held()
            .iter()
            .map(|&p| {
                self.input[p as usize].len() - member.offsets.get(&p).copied().unwrap_or(0) as usize
            })
            .sum()
    }

    /// The end's checks (see the module docs).
    fn check_end(&mut self) -> Result<(), String> {
        let uninterrupted = self.uninterrupted();
        let committed: Vec<&SessionRow> = self.store.log.iter().flat_map(|c| &c.sessions).collect();
        let ids: BTreeSet<&str> = committed.iter().map(|s| s.session_id.as_str()).collect();
        if ids.len() != committed.len() {
            return Err(format!("{} sessions committed, {} distinct", committed.len(), ids.len()));
        }
        let key =
            |s: &SessionRow| (s.uuid.clone(), s.start_ms, s.end_ms, s.event_count, s.pages.clone());
        let mut got: Vec<_> = committed.into_iter().map(key).collect();
        got.sort();
        let mut want: Vec<_> = uninterrupted.iter().map(key).collect();
        want.sort();
        if got != want {
            let (g, w) = (got.len(), want.len());
            let missing: Vec<_> = want.iter().filter(|k| !got.contains(k)).take(3).collect();
            let extra: Vec<_> = got.iter().filter(|k| !want.contains(k)).take(3).collect();
            return Err(format!(
                "{g} sessions committed, {w} in an uninterrupted run; missing {missing:?}, \
                 not expected {extra:?}"
            ));
        }
        let record = self.runtime.block_on(self.store.view(GROUP)).unwrap_or_default();
        let version = record.rules.map(|r| r.version);
        for member in self.members.values().filter(|m| !m.engines.held().is_empty()) {
            if version.as_deref().is_some_and(|v| v != member.running) {
                return Err(format!(
                    "{} runs {}, the record says {version:?}",
                    member.id, member.running
                ));
            }
        }
        Ok(())
    }

    /// Each partition read by one engine from start to end.
    fn uninterrupted(&mut self) -> Vec<SessionRow> {
        let mut rows = Vec::new();
        for (p, records) in self.input.iter().enumerate() {
            let mut engine = Engine::new(EngineConfig::default());
            for record in records {
                if let Ok(event) = crate::event::parse(record) {
                    engine.offer(p, &event);
                }
            }
            rows.extend(engine.advance(&mut self.native, true).unwrap_or_default());
        }
        rows
    }
}

/// Runs one schedule of `shape` drawn from `seed`.
fn schedule(seed: u64, shape: Shape) -> Result<(), String> {
    let mut fleet = Fleet::new(seed, shape);
    for step in 0..shape.steps {
        fleet.step().map_err(|e| format!("step {step}: {e}"))?;
    }
    fleet.drain()?;
    fleet.check_end()
}

/// Runs `seed`'s schedule; on a failure, says how to replay it.
fn run(seed: u64, shape: Shape) {
    let outcome = std::panic::catch_unwind(|| schedule(seed, shape));
    let why = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(why)) => why,
        Err(panic) => format!(
            "panicked: {:?}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or(panic.downcast_ref::<&str>().copied())
        ),
    };
    panic!(
        "schedule {seed} failed: {why}\n  replay it: SIM_SEED={seed} cargo test -p sessionize --lib simulation"
    );
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn many_small_fleets_keep_every_invariant() {
    let shape = Shape { partitions: 3, events: 24, members: 2, steps: 40 };
    if let Some(seed) = env("SIM_SEED") {
        return run(seed, shape);
    }
    for seed in 0..env("SIM_SCHEDULES").unwrap_or(10_000) {
        run(seed, shape);
    }
}

#[test]
fn a_hundred_members_on_a_thousand_partitions() {
    let shape = Shape { partitions: 1_000, events: 3, members: 100, steps: 3_000 };
    run(env("SIM_SEED").unwrap_or(7), shape);
}

/// A fleet of `members` with no faults and no partitions assigned yet.
fn quiet_fleet(members: usize) -> Fleet {
    let mut fleet = Fleet::new(1, Shape { partitions: 2, events: 10, members, steps: 0 });
    fleet.store = std::mem::take(&mut fleet.store).without_faults();
    fleet
}

fn record_version(fleet: &mut Fleet) -> Option<String> {
    let view = fleet.runtime.block_on(fleet.store.view(GROUP)).unwrap_or_default();
    view.rules.map(|r| r.version)
}

/// Fleet-safety issue, item 2: a member that accepted v2 before v3 went out
/// through another member publishes after it; the group keeps v3.
#[test]
fn a_publish_made_against_an_older_record_does_not_roll_the_group_back() {
    let names = &versions().names;
    let mut fleet = quiet_fleet(2);
    fleet.claim(1, 0);
    fleet.checkpoint(1);
    fleet.deploy_version(0, &names[1]);
    fleet.deploy_version(1, &names[2]);
    fleet.checkpoint(1);
    assert_eq!(record_version(&mut fleet).as_ref(), Some(&names[2]));
    fleet.checkpoint(0);
    assert_eq!(record_version(&mut fleet).as_ref(), Some(&names[2]));
    fleet.checkpoint(0);
    assert_eq!(fleet.members[&0].running, names[2], "the refused member follows the group");
}

/// Fleet-safety issue, item 3: a rollback sent to a member that joined
/// later goes to the group's previous rules.
#[test]
fn a_rollback_on_a_member_that_joined_later_goes_to_the_groups_previous_rules() {
    let names = &versions().names;
    let mut fleet = quiet_fleet(1);
    fleet.claim(0, 0);
    fleet.checkpoint(0);
    fleet.deploy_version(0, &names[1]);
    fleet.checkpoint(0);
    fleet.join();
    fleet.claim(1, 1);
    fleet.roll_back(1);
    fleet.checkpoint(1);
    assert_eq!(record_version(&mut fleet).as_ref(), Some(&names[0]));
    fleet.checkpoint(0);
    assert_eq!(fleet.members[&0].running, names[0]);
}
