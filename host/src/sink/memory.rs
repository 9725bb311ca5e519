//! A group's store in memory: the protocol's rules over plain maps, with the
//! faults a real store has injected on request (a lost compare-and-swap, a
//! commit that lands but reports an error, a read that fails), for the tests
//! and the simulation. Every commit is kept in a log, so a test can check who
//! committed what for which partition under which claim.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{carries, CommitStats, RejectedEvent, SessionRow, Sink, SinkError};
use crate::group::{
    advanced, claim, fenced, holds, Claimed, CommitOutcome, GroupProgress, GroupStore, GroupView,
    MemberCommit,
};

/// How often each fault strikes, out of one (0: never).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreFaults {
    /// A claim or commit loses the compare-and-swap (nothing changes).
    pub lose_race: f64,
    /// A claim or commit lands, but the caller is told it failed.
    pub lost_answer: f64,
    /// A state file cannot be read this time.
    pub failed_read: f64,
    /// Every [`Sink::commit`] from this one on (counting from 1) fails, for
    /// good: a sink whose error does not clear.
    pub fail_commits_from: Option<usize>,
}

/// One commit a member made.
#[derive(Debug, Clone)]
pub struct LoggedCommit {
    /// The member.
    pub owner: String,
    /// The partitions it committed for, with the epoch of its claim on each.
    pub claimed: BTreeMap<i32, u64>,
    /// The sessions it committed.
    pub sessions: Vec<SessionRow>,
    /// The dead letters it committed.
    pub rejected: Vec<RejectedEvent>,
    /// The newest epoch of each of those partitions when it landed.
    pub epochs_then: BTreeMap<i32, u64>,
}

/// One group's shared state.
#[derive(Debug, Default)]
struct Group {
    progress: GroupProgress,
    view: GroupView,
}

/// One commit through [`Sink::commit`]: its sessions, dead letters and properties.
pub type SinkCommit = (Vec<SessionRow>, Vec<RejectedEvent>, HashMap<String, String>);

/// A key of a state file: group, partition, epoch, number in the chain.
type StateKey = (String, i32, u64, u64);

/// The store (see the module docs).
#[derive(Debug)]
pub struct MemoryGroupStore {
    groups: HashMap<String, Group>,
    states: HashMap<StateKey, (Vec<u8>, u64)>,
    components: HashMap<(String, String), Vec<u8>>,
    faults: StoreFaults,
    rng: SmallRng,
    /// Steps of the store's clock (state files remember when they were written).
    clock: u64,
    /// Every member commit, in order.
    pub log: Vec<LoggedCommit>,
    /// Commits through [`Sink::commit`] (a job that is no group member).
    pub sink_commits: Vec<SinkCommit>,
}

impl Default for MemoryGroupStore {
    fn default() -> Self {
        Self::with_faults(StoreFaults::default(), 0)
    }
}

impl MemoryGroupStore {
    /// An empty store whose faults strike as `faults` says, drawn from `seed`.
    pub fn with_faults(faults: StoreFaults, seed: u64) -> Self {
        Self {
            groups: HashMap::new(),
            states: HashMap::new(),
            components: HashMap::new(),
            faults,
            rng: SmallRng::seed_from_u64(seed),
            clock: 0,
            log: Vec::new(),
            sink_commits: Vec::new(),
        }
    }

    /// The same store, its faults gone (a fleet's end, checked).
    pub fn without_faults(mut self) -> Self {
        self.faults = StoreFaults::default();
        self
    }

    /// The sessions of every [`Sink::commit`], in order.
    pub fn sessions(&self) -> Vec<SessionRow> {
        self.sink_commits.iter().flat_map(|(sessions, _, _)| sessions.iter().cloned()).collect()
    }

    /// Whether a fault of probability `p` strikes now.
    fn strikes(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn lost_race() -> SinkError {
        SinkError::LostRaces { what: "a simulated store".into(), races: 1 }
    }

    /// Where `group`'s partitions stand.
    pub fn progress(&self, group: &str) -> GroupProgress {
        self.groups.get(group).map(|g| g.progress.clone()).unwrap_or_default()
    }

    /// Advances the store's clock by one step.
    pub fn tick(&mut self) {
        self.clock += 1;
    }

    /// Whether the state file is there.
    pub fn has_state(&self, group: &str, partition: i32, epoch: u64, seq: u64) -> bool {
        self.states.contains_key(&(group.to_owned(), partition, epoch, seq))
    }

    /// Whether the component is there.
    pub fn has_component(&self, group: &str, sha256: &str) -> bool {
        self.components.contains_key(&(group.to_owned(), sha256.to_owned()))
    }

    /// Maintenance: deletes the state files no group's progress names that
    /// were written more than `older_than` steps ago, and the components no
    /// group's record names. Returns the files deleted.
    pub fn maintain(&mut self, older_than: u64) -> usize {
        let before = self.states.len() + self.components.len();
        let groups = &self.groups;
        let now = self.clock;
        self.states.retain(|(group, partition, epoch, seq), (_, written)| {
            let named =
                groups.get(group).and_then(|g| g.progress.get(partition)).and_then(|e| e.state);
            let in_chain =
                named.is_some_and(|c| c.epoch == *epoch && (c.first..=c.last).contains(seq));
            in_chain || now.saturating_sub(*written) <= older_than
        });
        self.components.retain(|(group, sha256), _| {
            let record = groups.get(group).and_then(|g| g.view.rules.as_ref());
            record.is_some_and(|r| r.components().any(|named| named == sha256))
        });
        before - self.states.len() - self.components.len()
    }
}

impl GroupStore for MemoryGroupStore {
    type Error = SinkError;

    async fn claim(
        &mut self,
        group: &str,
        owner: &str,
        partitions: &[i32],
    ) -> Result<Claimed, SinkError> {
        if self.strikes(self.faults.lose_race) {
            return Err(Self::lost_race());
        }
        let lost_answer = self.strikes(self.faults.lost_answer);
        let state = self.groups.entry(group.to_owned()).or_default();
        let epochs: BTreeMap<i32, u64> = partitions
            .iter()
            .map(|&p| (p, state.progress.get(&p).map_or(0, |e| e.epoch) + 1))
            .collect();
        claim(&mut state.progress, owner, partitions, |p| epochs[&p]);
        if lost_answer {
            return Err(Self::lost_race());
        }
        let mut progress = state.progress.clone();
        progress.retain(|p, _| partitions.contains(p));
        Ok(Claimed { progress, dead_letters_to: BTreeMap::new(), view: state.view.clone() })
    }

    async fn commit_member(
        &mut self,
        commit: MemberCommit<'_>,
    ) -> Result<CommitOutcome, SinkError> {
        if self.strikes(self.faults.lose_race) {
            return Err(Self::lost_race());
        }
        let lost_answer = self.strikes(self.faults.lost_answer);
        let state = self.groups.entry(commit.group.to_owned()).or_default();
        if holds(&state.progress, commit.owner, commit.claimed, commit.progress, commit.checkpoint)
        {
            return Ok(CommitOutcome::Committed(state.view.clone()));
        }
        let lost = fenced(&state.progress, commit.owner, commit.claimed);
        if !lost.is_empty() {
            return Ok(CommitOutcome::Fenced(lost));
        }
        let progress = std::mem::take(&mut state.progress);
        state.progress = advanced(progress, commit.progress, commit.checkpoint);
        let partitions = commit.claimed.keys().copied().collect();
        state.view.record(
            commit.owner,
            commit.rules,
            commit.publish,
            partitions,
            self.clock as i64,
        );
        let epochs_then = commit
            .claimed
            .keys()
            .map(|p| (*p, state.progress.get(p).map_or(0, |e| e.epoch)))
            .collect();
        let view = state.view.clone();
        self.log.push(LoggedCommit {
            owner: commit.owner.to_owned(),
            claimed: commit.claimed.clone(),
            sessions: commit.sessions.to_vec(),
            rejected: commit.rejected.to_vec(),
            epochs_then,
        });
        if lost_answer {
            return Err(Self::lost_race());
        }
        Ok(CommitOutcome::Committed(view))
    }

    async fn write_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
        bytes: Vec<u8>,
    ) -> Result<(), SinkError> {
        self.states.insert((group.to_owned(), partition, epoch, seq), (bytes, self.clock));
        Ok(())
    }

    async fn read_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
    ) -> Result<Vec<u8>, SinkError> {
        if self.strikes(self.faults.failed_read) {
            return Err(SinkError::Refused("a simulated read failure".into()));
        }
        let key = (group.to_owned(), partition, epoch, seq);
        let missing = || SinkError::Refused(format!("no state file {partition}/{epoch}-{seq}"));
        self.states.get(&key).map(|(bytes, _)| bytes.clone()).ok_or_else(missing)
    }

    async fn delete_state(
        &mut self,
        group: &str,
        partition: i32,
        epoch: u64,
        seq: u64,
    ) -> Result<(), SinkError> {
        self.states.remove(&(group.to_owned(), partition, epoch, seq));
        Ok(())
    }

    async fn write_component(
        &mut self,
        group: &str,
        sha256: &str,
        bytes: Vec<u8>,
    ) -> Result<(), SinkError> {
        self.components.insert((group.to_owned(), sha256.to_owned()), bytes);
        Ok(())
    }

    async fn read_component(
        &mut self,
        group: &str,
        sha256: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, SinkError> {
        let bytes = self.components.get(&(group.to_owned(), sha256.to_owned()));
        match bytes {
            Some(bytes) if bytes.len() as u64 <= max_bytes => Ok(bytes.clone()),
            Some(bytes) => {
                Err(SinkError::Refused(format!("{} bytes, over {max_bytes}", bytes.len())))
            }
            None => Err(SinkError::Refused(format!("no component {sha256}"))),
        }
    }

    async fn view(&mut self, group: &str) -> Result<GroupView, SinkError> {
        Ok(self.groups.get(group).map(|g| g.view.clone()).unwrap_or_default())
    }
}

impl Sink for MemoryGroupStore {
    async fn commit(
        &mut self,
        sessions: &[SessionRow],
        rejected: &[RejectedEvent],
        properties: HashMap<String, String>,
    ) -> Result<CommitStats, SinkError> {
        if self.faults.fail_commits_from.is_some_and(|n| self.sink_commits.len() + 1 >= n) {
            return Err(SinkError::Config("the disk is on fire".into()));
        }
        self.sink_commits.push((sessions.to_vec(), rejected.to_vec(), properties));
        Ok(CommitStats::default())
    }

    async fn last_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        let ours = |(_, _, p): &&(_, _, HashMap<String, String>)| carries(p, key, value);
        Ok(self.sink_commits.iter().rev().find(ours).map(|(_, _, p)| p.clone()))
    }

    async fn last_rejected_commit_properties(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, String>>, SinkError> {
        self.last_commit_properties(key, value).await
    }
}
