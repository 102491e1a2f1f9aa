//! Raft (Ongaro and Ousterhout, 2014): a replicated state machine. Client
//! operations are log entries; a leader elected by a majority with the
//! election restriction (§5.4.1) replicates them, an entry is committed once a
//! majority holds it, and every node applies committed entries in order, so
//! a cas is decided when it is applied, identically everywhere.
//!
//! Switches the claims use: `commit_rule` (§5.4.2: a leader counts replicas
//! only for entries of its own term, and opens its term with a no-op; off, it
//! commits earlier terms' entries by counting, and Figure 8 loses committed
//! writes), `read` (`read-index`, §6.4: the leader confirms it still leads by
//! a heartbeat round before answering; `lease`: it answers alone while a
//! majority acknowledged it within `lease_ms` by its own clock, which clock
//! skew breaks), `pre_vote` (§9.6) and `check_quorum` (a leader that has not
//! heard from a majority for an election timeout steps down). Lagging
//! followers behind the compacted log get a snapshot of the state machine.
//!
//! Membership changes one server at a time (Ongaro's thesis §4.1, §4.2.1):
//! a configuration is a log entry, in force from the moment a node holds it;
//! a leader appends one only when the last has committed and it has
//! committed an entry of its own term (the fix to the single-server change
//! bug, raft-dev 2015). A new node joins as a learner that replicates
//! without voting, and becomes a voter once it is close to the leader's log.
//! A removed leader steps down when its removal commits (§4.2.2); nodes
//! refuse votes to candidates outside their configuration, so a removed node
//! that never heard of its removal cannot depose a leader (§4.2.3).

use crate::config::{ClusterConfig, RaftOptions, RaftRead};
use crate::msg::{apply_op_kv, NodeId, Op, ReadFrom, Refusal, Reply, Request, Response, Value};
use crate::protocol::{self, AdminOp, AdminReply, ClientId, CoreStatus, Membership, Protocol};
use crate::quorum;
use crate::seeded::SeededRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Entries a leader ships in one message.
const MAX_BATCH: usize = 256;

/// A learner this close to the leader's last index is promoted to voter.
const PROMOTE_WITHIN_ENTRIES: u64 = MAX_BATCH as u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// What a new leader appends to commit its predecessors' entries (§5.4.2, §8).
    Noop,
    Op(Op),
    /// The configuration from this entry on: voters (`members`) and learners (`joining`).
    Config(Membership),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub command: Command,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Append {
        term: u64,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
        /// The leader's round number, echoed back: a read waits for a
        /// majority to answer a round that began after it arrived.
        round: u64,
        sent_ms: u64,
    },
    AppendResp {
        term: u64,
        ok: bool,
        /// When `ok`, the follower's log matches the leader's up to here;
        /// otherwise where the leader should look next.
        index: u64,
        round: u64,
        sent_ms: u64,
    },
    Snapshot {
        term: u64,
        index: u64,
        index_term: u64,
        kv: Vec<(String, Value)>,
        /// The configuration as of `index`.
        config: Membership,
        round: u64,
        sent_ms: u64,
    },
    Vote {
        term: u64,
        last_index: u64,
        last_term: u64,
        /// A pre-vote (§9.6): would you vote for me at `term`? Nobody's term changes.
        pre: bool,
    },
    VoteResp {
        term: u64,
        granted: bool,
        pre: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    Meta {
        term: u64,
        voted_for: Option<NodeId>,
    },
    Append(Vec<Entry>),
    /// Drops entries with an index at or above this one.
    TruncateFrom(u64),
    Snapshot {
        index: u64,
        term: u64,
        kv: Vec<(String, Value)>,
        config: Membership,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A write this node appended as leader: it is answered when its index is
/// applied, whatever this node's role by then, since an entry is identified
/// by its index and term (§5.3).
struct Waiting {
    term: u64,
    client: ClientId,
    id: u64,
    deadline_ms: u64,
}

/// An admin request the leader answers once a committed configuration has
/// `node` as a voter (`voter`) or without it.
struct AdminWait {
    admin: ClientId,
    node: NodeId,
    voter: bool,
    deadline_ms: u64,
}

struct PendingRead {
    client: ClientId,
    request: Request,
    /// The commit index when it arrived: it is served once that is applied.
    read_index: u64,
    /// The heartbeat round a majority must answer first.
    round: u64,
    deadline_ms: u64,
}

pub struct Raft {
    id: NodeId,
    n: u32,
    opts: RaftOptions,
    rng: SeededRng,
    started: bool,

    term: u64,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    last_heard_leader_ms: Option<u64>,
    election_deadline_ms: u64,
    votes: Vec<NodeId>,

    /// Entries `log_start + 1 ..`; those up to `log_start` are in `kv`.
    log: VecDeque<Entry>,
    log_start: u64,
    log_start_term: u64,
    commit: u64,
    applied: u64,
    kv: BTreeMap<String, Value>,
    /// The configuration as of `log_start`, and the one in force (the last
    /// in the log), from the entry at `config_index` (`log_start` or below:
    /// from `base_config`).
    base_config: Membership,
    config: Membership,
    config_index: u64,

    // Leader state.
    next_index: HashMap<NodeId, u64>,
    match_index: HashMap<NodeId, u64>,
    /// Per follower: the latest round it answered, and when (by this node's
    /// clock) the leader sent the newest message it answered.
    acked_round: HashMap<NodeId, u64>,
    acked_sent_ms: HashMap<NodeId, u64>,
    round: u64,
    /// A round must start at the next flush (reads are waiting for one).
    round_wanted: bool,
    /// The first index of this leader's term: until it commits, the leader
    /// does not know what its predecessors committed (§6.4).
    term_start: u64,
    next_heartbeat_ms: u64,
    became_leader_ms: u64,
    waiting: BTreeMap<u64, Waiting>,
    reads: Vec<PendingRead>,
    admin_waits: Vec<AdminWait>,
    /// Every entry applied, in order, for the tests' state-machine safety check.
    #[cfg(test)]
    applied_trace: Vec<Entry>,
}

type Input = protocol::Input<Msg>;
type Effect = protocol::Effect<Msg, WalRecord>;

fn send(to: NodeId, msg: Msg) -> Effect {
    Effect::Send { to, msg }
}

fn persist(rec: WalRecord) -> Effect {
    Effect::Persist(rec)
}

fn reply(client: ClientId, id: u64, reply: Reply) -> Effect {
    Effect::Reply {
        client,
        response: Response { id, reply },
    }
}

impl Raft {
    pub fn new(
        id: NodeId,
        n: u32,
        opts: RaftOptions,
        seed: u64,
        recovered: Vec<WalRecord>,
    ) -> Self {
        let everyone = Membership {
            members: (0..n).collect(),
            joining: Vec::new(),
        };
        let mut node = Raft {
            id,
            n,
            opts,
            rng: SeededRng::new(seed),
            started: false,
            term: 0,
            voted_for: None,
            role: Role::Follower,
            leader: None,
            last_heard_leader_ms: None,
            election_deadline_ms: 0,
            votes: Vec::new(),
            log: VecDeque::new(),
            log_start: 0,
            log_start_term: 0,
            commit: 0,
            applied: 0,
            kv: BTreeMap::new(),
            base_config: everyone.clone(),
            config: everyone,
            config_index: 0,
            next_index: HashMap::new(),
            match_index: HashMap::new(),
            acked_round: HashMap::new(),
            acked_sent_ms: HashMap::new(),
            round: 0,
            round_wanted: false,
            term_start: 0,
            next_heartbeat_ms: 0,
            became_leader_ms: 0,
            waiting: BTreeMap::new(),
            reads: Vec::new(),
            admin_waits: Vec::new(),
            #[cfg(test)]
            applied_trace: Vec::new(),
        };
        for rec in recovered {
            node.replay(rec);
        }
        node.refresh_config();
        node
    }

    fn replay(&mut self, rec: WalRecord) {
        match rec {
            WalRecord::Meta { term, voted_for } => {
                self.term = term;
                self.voted_for = voted_for;
            }
            WalRecord::Append(entries) => {
                for e in entries {
                    if e.index <= self.log_start || e.index > self.last_index() + 1 {
                        continue;
                    }
                    self.truncate_from(e.index);
                    self.push_entry(e);
                }
            }
            WalRecord::TruncateFrom(i) => self.truncate_from(i),
            WalRecord::Snapshot {
                index,
                term,
                kv,
                config,
            } => self.install(index, term, kv, config),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn commit_index(&self) -> u64 {
        self.commit
    }

    /// The entries this node holds in memory, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.iter()
    }

    pub fn kv(&self) -> &BTreeMap<String, Value> {
        &self.kv
    }

    /// Every other node of the cluster file, member or not.
    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.n).filter(move |p| *p != self.id)
    }

    /// The nodes a leader replicates to: voters and learners but itself.
    fn replicas(&self) -> Vec<NodeId> {
        self.config
            .members
            .iter()
            .chain(&self.config.joining)
            .copied()
            .filter(|p| *p != self.id)
            .collect()
    }

    fn is_voter(&self, node: NodeId) -> bool {
        self.config.members.contains(&node)
    }

    fn majority(&self) -> usize {
        quorum::majority(self.config.members.len())
    }

    /// The value a majority of voters reach: the majority-th highest of
    /// `of(voter)`, this node counting as `own` when it votes.
    fn voters_reach(&self, own: u64, of: impl Fn(NodeId) -> u64) -> u64 {
        let values = self
            .config
            .members
            .iter()
            .map(|v| if *v == self.id { own } else { of(*v) });
        quorum::kth_highest(values, self.majority()).unwrap_or(0)
    }

    /// The configuration in force at `index` (the last at or before it).
    fn config_at(&self, index: u64) -> Membership {
        if index >= self.config_index {
            return self.config.clone();
        }
        self.log
            .iter()
            .rev()
            .filter(|e| e.index <= index)
            .find_map(|e| match &e.command {
                Command::Config(c) => Some(c.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.base_config.clone())
    }

    /// Finds the configuration in force after the log changed.
    fn refresh_config(&mut self) {
        let last = self.log.iter().rev().find_map(|e| match &e.command {
            Command::Config(c) => Some((e.index, c.clone())),
            _ => None,
        });
        (self.config_index, self.config) =
            last.unwrap_or_else(|| (self.log_start, self.base_config.clone()));
    }

    pub fn last_index(&self) -> u64 {
        self.log.back().map_or(self.log_start, |e| e.index)
    }

    fn last_term(&self) -> u64 {
        self.log.back().map_or(self.log_start_term, |e| e.term)
    }

    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.log_start {
            Some(self.log_start_term)
        } else if index < self.log_start || index > self.last_index() {
            None
        } else {
            self.log
                .get((index - self.log_start - 1) as usize)
                .map(|e| e.term)
        }
    }

    fn entry(&self, index: u64) -> Option<&Entry> {
        index
            .checked_sub(self.log_start + 1)
            .and_then(|i| self.log.get(i as usize))
    }

    fn truncate_from(&mut self, index: u64) {
        if index <= self.log_start {
            self.log.clear();
        } else {
            self.log.truncate((index - self.log_start - 1) as usize);
        }
        if self.config_index >= index {
            self.refresh_config();
        }
    }

    fn push_entry(&mut self, e: Entry) {
        if let Command::Config(c) = &e.command {
            self.config = c.clone();
            self.config_index = e.index;
        }
        self.log.push_back(e);
    }

    /// Replaces the state machine with a snapshot at `index`. A log suffix
    /// that agrees with the snapshot's last entry is kept (§7).
    fn install(&mut self, index: u64, term: u64, kv: Vec<(String, Value)>, config: Membership) {
        let keep_suffix = self.term_at(index) == Some(term);
        if keep_suffix && index >= self.log_start {
            let drop = (index - self.log_start) as usize;
            self.log.drain(..drop.min(self.log.len()));
        } else {
            self.log.clear();
        }
        self.kv = kv.into_iter().collect();
        self.log_start = index;
        self.log_start_term = term;
        self.applied = index;
        self.commit = self.commit.max(index);
        if !keep_suffix {
            self.commit = index;
        }
        self.base_config = config;
        self.refresh_config();
    }

    fn election_timeout(&mut self) -> u64 {
        let t = self.opts.election_timeout_ms;
        t + self.rng.below(t.max(1))
    }

    fn meta(&self) -> Effect {
        persist(WalRecord::Meta {
            term: self.term,
            voted_for: self.voted_for,
        })
    }

    fn apply_committed(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let upto = self.commit.min(self.last_index());
        while self.applied < upto {
            let Some(entry) = self.entry(self.applied + 1).cloned() else {
                break;
            };
            let Entry { term, command, .. } = entry.clone();
            #[cfg(test)]
            self.applied_trace.push(entry);
            self.applied += 1;
            let waiter = self.waiting.remove(&self.applied);
            if let Some(w) = waiter.as_ref().filter(|w| w.term != term) {
                fx.push(reply(
                    w.client,
                    w.id,
                    Reply::Unknown("another leader's entry took its place in the log".into()),
                ));
            }
            let waiter = waiter.filter(|w| w.term == term);
            let Command::Op(op) = &command else {
                continue;
            };
            let outcome = apply_op_kv(op, &self.kv);
            let answer = match outcome {
                Ok((writes, result)) => {
                    for (k, v) in writes {
                        self.kv.insert(k, v);
                    }
                    Reply::Ok(result)
                }
                // Every replica refuses it alike: it did not happen.
                Err(refusal) => Reply::NotDone(refusal),
            };
            if let Some(w) = waiter {
                fx.push(reply(w.client, w.id, answer));
            }
        }
        if self.role == Role::Leader {
            self.serve_reads(now, fx);
        }
        // Keep `log_keep` applied entries for lagging followers; fold older ones away.
        let keep = self.opts.log_keep.max(1);
        if self.applied > self.log_start + 2 * keep {
            let new_start = self.applied - keep;
            let drop = (new_start - self.log_start) as usize;
            self.log_start_term = self.log[drop - 1].term;
            for e in self.log.drain(..drop) {
                if let Command::Config(c) = e.command {
                    self.base_config = c;
                }
            }
            self.log_start = new_start;
        }
    }

    /// Gives up on the reads this node took as leader (its writes are
    /// answered when their index is applied, or at their deadline).
    fn abandon_reads(&mut self, fx: &mut Vec<Effect>) {
        for r in std::mem::take(&mut self.reads) {
            // A read has no effect: one not answered did not happen.
            fx.push(reply(
                r.client,
                r.request.id,
                Reply::NotDone(Refusal::NotLeader { leader: None }),
            ));
        }
    }

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>, fx: &mut Vec<Effect>) {
        if self.role == Role::Leader {
            self.abandon_reads(fx);
            for w in std::mem::take(&mut self.admin_waits) {
                fx.push(Effect::AdminReply {
                    admin: w.admin,
                    reply: AdminReply::Unknown(
                        "leadership changed before the configuration committed".into(),
                    ),
                });
            }
        }
        self.role = Role::Follower;
        self.leader = leader;
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            fx.push(self.meta());
        }
    }

    fn start_election(&mut self, now: u64, pre: bool, fx: &mut Vec<Effect>) {
        self.leader = None;
        self.election_deadline_ms = now + self.election_timeout();
        self.votes = vec![self.id];
        if pre {
            self.role = Role::PreCandidate;
        } else {
            self.role = Role::Candidate;
            self.term += 1;
            self.voted_for = Some(self.id);
            fx.push(self.meta());
        }
        if self.votes.len() >= self.majority() {
            self.won(now, pre, fx);
            return;
        }
        let msg = Msg::Vote {
            term: if pre { self.term + 1 } else { self.term },
            last_index: self.last_index(),
            last_term: self.last_term(),
            pre,
        };
        for p in self.config.members.clone() {
            if p != self.id {
                fx.push(send(p, msg.clone()));
            }
        }
    }

    fn won(&mut self, now: u64, pre: bool, fx: &mut Vec<Effect>) {
        if pre {
            self.start_election(now, false, fx);
        } else {
            self.become_leader(now, fx);
        }
    }

    fn become_leader(&mut self, now: u64, fx: &mut Vec<Effect>) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.became_leader_ms = now;
        let peers: Vec<NodeId> = self.peers().collect();
        let next = self.last_index() + 1;
        self.next_index = peers.iter().map(|p| (*p, next)).collect();
        self.match_index = peers.iter().map(|p| (*p, 0)).collect();
        self.acked_round = peers.iter().map(|p| (*p, 0)).collect();
        self.acked_sent_ms = peers.iter().map(|p| (*p, 0)).collect();
        self.round = 0;
        self.round_wanted = false;
        self.term_start = next;
        if self.opts.commit_rule {
            self.append(Command::Noop, fx);
        }
        self.broadcast(now, fx);
        self.advance_commit(now, fx);
    }

    fn append(&mut self, command: Command, fx: &mut Vec<Effect>) -> u64 {
        let index = self.last_index() + 1;
        let entry = Entry {
            index,
            term: self.term,
            command,
        };
        self.push_entry(entry.clone());
        fx.push(persist(WalRecord::Append(vec![entry])));
        index
    }

    /// One heartbeat round: every follower gets what it lacks (or nothing).
    fn broadcast(&mut self, now: u64, fx: &mut Vec<Effect>) {
        self.round += 1;
        self.round_wanted = false;
        for p in self.replicas() {
            self.send_append(p, now, fx);
        }
        self.next_heartbeat_ms = now + self.opts.heartbeat_ms;
    }

    fn send_append(&mut self, to: NodeId, now: u64, fx: &mut Vec<Effect>) {
        let next = self
            .next_index
            .get(&to)
            .copied()
            .unwrap_or(self.last_index() + 1);
        if next <= self.log_start {
            let kv = self
                .kv
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            fx.push(send(
                to,
                Msg::Snapshot {
                    term: self.term,
                    index: self.applied,
                    index_term: self.term_at(self.applied).unwrap_or(0),
                    kv,
                    config: self.config_at(self.applied),
                    round: self.round,
                    sent_ms: now,
                },
            ));
            self.next_index.insert(to, self.applied + 1);
            return;
        }
        let prev_index = next - 1;
        let prev_term = self.term_at(prev_index).unwrap_or(0);
        let last = self.last_index().min(prev_index + MAX_BATCH as u64);
        let entries: Vec<Entry> = (next..=last)
            .filter_map(|i| self.entry(i).cloned())
            .collect();
        self.next_index.insert(to, last + 1);
        fx.push(send(
            to,
            Msg::Append {
                term: self.term,
                prev_index,
                prev_term,
                entries,
                commit: self.commit,
                round: self.round,
                sent_ms: now,
            },
        ));
    }

    fn advance_commit(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let matched = |p: NodeId| self.match_index.get(&p).copied().unwrap_or(0);
        let candidate = self
            .voters_reach(self.last_index(), matched)
            .min(self.last_index());
        // §5.4.2: only an entry of this term is committed by counting replicas.
        let countable = !self.opts.commit_rule || self.term_at(candidate) == Some(self.term);
        if candidate > self.commit && countable {
            self.commit = candidate;
            self.apply_committed(now, fx);
            self.after_commit(now, fx);
        }
    }

    /// Answers the admin requests the committed configuration settles; a
    /// leader whose removal committed steps down (thesis §4.2.2).
    fn after_commit(&mut self, now: u64, fx: &mut Vec<Effect>) {
        if self.role != Role::Leader {
            return;
        }
        if !self.admin_waits.is_empty() {
            let committed = self.config_at(self.commit);
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.admin_waits)
                .into_iter()
                .partition(|w| {
                    let voter = committed.members.contains(&w.node);
                    let learner = committed.joining.contains(&w.node);
                    if w.voter {
                        voter
                    } else {
                        !voter && !learner
                    }
                });
            self.admin_waits = waiting;
            for w in done {
                fx.push(Effect::AdminReply {
                    admin: w.admin,
                    reply: AdminReply::Members(committed.clone()),
                });
            }
        }
        if self.commit >= self.config_index && !self.is_voter(self.id) {
            let term = self.term;
            self.become_follower(term, None, fx);
            self.election_deadline_ms = now + self.election_timeout();
            return;
        }
        self.maybe_promote(fx);
    }

    /// Whether this leader may append a configuration now: the last one has
    /// committed, and so has an entry of its own term (every entry from
    /// `term_start` on is this leader's).
    fn may_reconfigure(&self) -> bool {
        self.role == Role::Leader
            && self.config_index <= self.commit
            && self.commit >= self.term_start
    }

    /// Promotes a learner that has caught up, one at a time.
    fn maybe_promote(&mut self, fx: &mut Vec<Effect>) {
        if !self.may_reconfigure() {
            return;
        }
        let last = self.last_index();
        let ready = self.config.joining.iter().copied().find(|l| {
            self.match_index.get(l).copied().unwrap_or(0) + PROMOTE_WITHIN_ENTRIES >= last
        });
        if let Some(l) = ready {
            let mut next = self.config.clone();
            next.joining.retain(|j| *j != l);
            next.members.push(l);
            next.members.sort_unstable();
            self.append(Command::Config(next), fx);
        }
    }

    fn on_admin_op(&mut self, now: u64, admin: ClientId, op: AdminOp, fx: &mut Vec<Effect>) {
        let answer = |reply: AdminReply| Effect::AdminReply { admin, reply };
        if self.role != Role::Leader {
            fx.push(answer(AdminReply::NotLeader {
                leader: self.leader,
            }));
            return;
        }
        let (node, voter) = match op {
            AdminOp::Members => {
                fx.push(answer(AdminReply::Members(self.config.clone())));
                return;
            }
            AdminOp::Remove(n) => (n, false),
            AdminOp::Add(n) => (n, true),
            AdminOp::Partitions | AdminOp::Rebalance(_) | AdminOp::Settle => {
                fx.push(answer(AdminReply::Refused(
                    "this cluster is not sharded".into(),
                )));
                return;
            }
        };
        if node >= self.n {
            fx.push(answer(AdminReply::Refused(format!(
                "node {node} is not in the cluster file"
            ))));
            return;
        }
        let is_voter = self.is_voter(node);
        let is_learner = self.config.joining.contains(&node);
        let settled = if voter {
            is_voter
        } else {
            !is_voter && !is_learner
        };
        let committed = self.config_index <= self.commit;
        if settled && committed {
            fx.push(answer(AdminReply::Members(self.config.clone())));
            return;
        }
        let wait = AdminWait {
            admin,
            node,
            voter,
            deadline_ms: now + self.opts.request_timeout_ms.max(1) * 10,
        };
        // Already on its way (a learner being caught up, or the entry appended).
        if settled || (voter && is_learner) {
            self.admin_waits.push(wait);
            self.maybe_promote(fx);
            return;
        }
        if !self.may_reconfigure() {
            fx.push(answer(AdminReply::Refused(
                "a configuration change is in progress; try again".into(),
            )));
            return;
        }
        let mut next = self.config.clone();
        if voter {
            next.joining.push(node);
            next.joining.sort_unstable();
            let last = self.last_index();
            self.next_index.insert(node, last + 1);
            self.match_index.insert(node, 0);
        } else {
            next.members.retain(|m| *m != node);
            next.joining.retain(|m| *m != node);
            if next.members.is_empty() {
                fx.push(answer(AdminReply::Refused(
                    "the last voter cannot be removed".into(),
                )));
                return;
            }
        }
        self.append(Command::Config(next), fx);
        self.admin_waits.push(wait);
        self.advance_commit(now, fx);
    }

    /// Whether a majority answered round `round` (this node counts itself).
    fn round_confirmed(&self, round: u64) -> bool {
        let acked = |p: NodeId| self.acked_round.get(&p).copied().unwrap_or(0);
        self.voters_reach(u64::MAX, acked) >= round
    }

    /// Until when a majority's acknowledgements keep this leader's lease, by its own clock.
    fn lease_until_ms(&self) -> u64 {
        let acked = |p: NodeId| self.acked_sent_ms.get(&p).copied().unwrap_or(0);
        match self.voters_reach(u64::MAX, acked) {
            u64::MAX => u64::MAX,
            t if t >= self.became_leader_ms => t + self.opts.lease_ms,
            _ => 0,
        }
    }

    /// Whether an entry of this term is committed: until then the leader
    /// does not know what its predecessors committed, and a read could miss
    /// it (§6.4, §8), whichever commit rule it follows.
    /// Without the §5.4.2 rule a leader believes what a majority holds is
    /// committed, so it believes it knows once its log as of the election is
    /// counted (the belief Figure 8 refutes).
    fn knows_commit(&self) -> bool {
        if self.opts.commit_rule {
            self.commit >= self.term_start
        } else {
            self.commit + 1 >= self.term_start
        }
    }

    fn serve_reads(&mut self, now: u64, fx: &mut Vec<Effect>) {
        if self.reads.is_empty() || !self.knows_commit() {
            return;
        }
        let lease = self.opts.read == RaftRead::Lease && now < self.lease_until_ms();
        let mut waiting = Vec::new();
        for r in std::mem::take(&mut self.reads) {
            if (lease || self.round_confirmed(r.round)) && self.applied >= r.read_index {
                self.serve_local(r.client, &r.request, fx);
            } else {
                waiting.push(r);
            }
        }
        self.reads = waiting;
    }

    fn serve_local(&self, client: ClientId, req: &Request, fx: &mut Vec<Effect>) {
        let r = match apply_op_kv(&req.op, &self.kv) {
            Ok((_, result)) => Reply::Ok(result),
            Err(refusal) => Reply::NotDone(refusal),
        };
        fx.push(reply(client, req.id, r));
    }

    fn on_client(&mut self, now: u64, client: ClientId, req: Request, fx: &mut Vec<Effect>) {
        let read_only = req.op.is_read_only();
        let read_from = req.options.read_from.unwrap_or(self.opts.read_from);
        if read_only && read_from != ReadFrom::Leader {
            // This node's applied state, however stale: what the client asked for.
            self.serve_local(client, &req, fx);
            return;
        }
        if self.role != Role::Leader {
            // A leader not heard from for an election timeout may be gone
            // (or this node removed): no hint beats a stale one.
            let leader = self.leader.filter(|_| self.heard_leader_recently(now));
            fx.push(reply(
                client,
                req.id,
                Reply::NotDone(Refusal::NotLeader { leader }),
            ));
            return;
        }
        if read_only {
            self.reads.push(PendingRead {
                client,
                read_index: self.commit,
                round: self.round + 1,
                request: req,
                deadline_ms: now + self.opts.request_timeout_ms,
            });
            self.round_wanted = true;
            self.serve_reads(now, fx);
            return;
        }
        let index = self.append(Command::Op(req.op), fx);
        self.waiting.insert(
            index,
            Waiting {
                term: self.term,
                client,
                id: req.id,
                deadline_ms: now + self.opts.request_timeout_ms,
            },
        );
        // Followers get the entry at the next `Flush`, batched with its neighbours.
        self.advance_commit(now, fx);
    }

    fn heard_leader(&mut self, now: u64, from: NodeId, term: u64, fx: &mut Vec<Effect>) {
        if term > self.term || self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from), fx);
        }
        self.last_heard_leader_ms = Some(now);
        self.election_deadline_ms = now + self.election_timeout();
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
        round: u64,
        sent_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        let resp = |me: &Self, ok: bool, index: u64| {
            send(
                from,
                Msg::AppendResp {
                    term: me.term,
                    ok,
                    index,
                    round,
                    sent_ms,
                },
            )
        };
        // Entries follow `prev_index` one by one, or the message is no leader's.
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| Some(e.index) == prev_index.checked_add(1 + i as u64));
        if !contiguous {
            return;
        }
        if term < self.term {
            fx.push(resp(self, false, self.last_index()));
            return;
        }
        self.heard_leader(now, from, term, fx);
        if prev_index > self.last_index() {
            fx.push(resp(self, false, self.last_index()));
            return;
        }
        // What this node compacted was committed, so it matches any leader's log.
        let (prev_index, prev_term, entries) = if prev_index < self.log_start {
            let skip = (self.log_start - prev_index) as usize;
            (
                self.log_start,
                self.log_start_term,
                entries.into_iter().skip(skip).collect(),
            )
        } else {
            (prev_index, prev_term, entries)
        };
        if self.term_at(prev_index) != Some(prev_term) && prev_index <= self.applied {
            self.discard_applied(fx);
            fx.push(resp(self, false, 0));
            return;
        }
        if self.term_at(prev_index) != Some(prev_term) {
            // Skip back over the whole conflicting term in one round trip.
            let conflict = self.term_at(prev_index);
            let mut first = prev_index;
            while first > self.log_start + 1 && self.term_at(first - 1) == conflict {
                first -= 1;
            }
            fx.push(resp(self, false, first - 1));
            return;
        }
        let last_new = prev_index + entries.len() as u64;
        let mut fresh = Vec::new();
        for e in entries {
            if e.index <= self.last_index() {
                if self.term_at(e.index) == Some(e.term) {
                    continue;
                }
                if e.index <= self.applied {
                    self.discard_applied(fx);
                    fx.push(resp(self, false, 0));
                    return;
                }
                self.truncate_from(e.index);
                fx.push(persist(WalRecord::TruncateFrom(e.index)));
            }
            self.push_entry(e.clone());
            fresh.push(e);
        }
        if !fresh.is_empty() {
            fx.push(persist(WalRecord::Append(fresh)));
        }
        let new_commit = commit.min(last_new);
        if new_commit > self.commit {
            self.commit = new_commit;
            self.apply_committed(now, fx);
        }
        fx.push(resp(self, true, last_new));
    }

    /// A leader's log contradicts entries this node applied: only a leader
    /// that broke §5.4.2 sends that (Figure 8). What was applied cannot be
    /// unapplied, so the node starts over from the leader's log, and the
    /// committed write is gone.
    fn discard_applied(&mut self, fx: &mut Vec<Effect>) {
        self.log.clear();
        self.log_start = 0;
        self.log_start_term = 0;
        self.kv.clear();
        self.applied = 0;
        self.commit = 0;
        fx.push(persist(WalRecord::TruncateFrom(1)));
        self.base_config = Membership {
            members: (0..self.n).collect(),
            joining: Vec::new(),
        };
        self.refresh_config();
        fx.push(persist(WalRecord::Snapshot {
            index: 0,
            term: 0,
            kv: Vec::new(),
            config: self.base_config.clone(),
        }));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_snapshot(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        index: u64,
        index_term: u64,
        kv: Vec<(String, Value)>,
        config: Membership,
        round: u64,
        sent_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        let resp = |me: &Self, ok: bool, index: u64| {
            send(
                from,
                Msg::AppendResp {
                    term: me.term,
                    ok,
                    index,
                    round,
                    sent_ms,
                },
            )
        };
        if term < self.term {
            fx.push(resp(self, false, self.last_index()));
            return;
        }
        self.heard_leader(now, from, term, fx);
        // A snapshot behind what this node applied in agreement adds nothing.
        if index <= self.applied && self.term_at(index) == Some(index_term) {
            fx.push(resp(self, true, index));
            return;
        }
        fx.push(persist(WalRecord::Snapshot {
            index,
            term: index_term,
            kv: kv.clone(),
            config: config.clone(),
        }));
        self.install(index, index_term, kv, config);
        // Which entries the snapshot holds is not known, so neither is their fate.
        let covered: Vec<u64> = self.waiting.range(..=index).map(|(i, _)| *i).collect();
        for i in covered {
            if let Some(w) = self.waiting.remove(&i) {
                fx.push(reply(
                    w.client,
                    w.id,
                    Reply::Unknown(
                        "a snapshot replaced the log before the entry was applied".into(),
                    ),
                ));
            }
        }
        fx.push(resp(self, true, index));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append_resp(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        ok: bool,
        index: u64,
        round: u64,
        sent_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        if term > self.term {
            self.become_follower(term, None, fx);
            self.election_deadline_ms = now + self.election_timeout();
            return;
        }
        if self.role != Role::Leader || term < self.term {
            return;
        }
        let r = self.acked_round.entry(from).or_insert(0);
        *r = (*r).max(round);
        let t = self.acked_sent_ms.entry(from).or_insert(0);
        *t = (*t).max(sent_ms);
        if ok {
            let m = self.match_index.entry(from).or_insert(0);
            *m = (*m).max(index);
            let m = *m;
            let next = self.next_index.entry(from).or_insert(m + 1);
            *next = (*next).max(m + 1);
            self.advance_commit(now, fx);
            if self.config.joining.contains(&from) {
                self.maybe_promote(fx);
            }
            if self.role != Role::Leader {
                return;
            }
            if self.next_index[&from] <= self.last_index() && index + 1 == self.next_index[&from] {
                self.send_append(from, now, fx);
            }
        } else {
            let next = self.next_index.entry(from).or_insert(index + 1);
            *next = (*next).min(index + 1).max(1);
            self.send_append(from, now, fx);
        }
        self.serve_reads(now, fx);
    }

    fn heard_leader_recently(&self, now: u64) -> bool {
        self.role == Role::Leader
            || (self.leader.is_some()
                && self
                    .last_heard_leader_ms
                    .is_some_and(|t| now < t + self.opts.election_timeout_ms))
    }

    #[allow(clippy::too_many_arguments)]
    fn on_vote(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        last_index: u64,
        last_term: u64,
        pre: bool,
        fx: &mut Vec<Effect>,
    ) {
        let answer = |me: &Self, granted: bool| {
            send(
                from,
                Msg::VoteResp {
                    term: if pre && granted { term } else { me.term },
                    granted,
                    pre,
                },
            )
        };
        // A node that hears its leader ignores candidates (§6 and §9.6): what
        // keeps a partitioned node from deposing a healthy leader, and what a
        // lease relies on.
        let sticky = (self.opts.pre_vote || self.opts.read == RaftRead::Lease)
            && self.heard_leader_recently(now);
        if term < self.term || sticky || !self.is_voter(from) {
            fx.push(answer(self, false));
            return;
        }
        let up_to_date = (last_term, last_index) >= (self.last_term(), self.last_index());
        if pre {
            fx.push(answer(self, up_to_date && term > self.term));
            return;
        }
        if term > self.term {
            self.become_follower(term, None, fx);
        }
        let granted = up_to_date && self.voted_for.is_none_or(|v| v == from);
        if granted {
            self.voted_for = Some(from);
            self.election_deadline_ms = now + self.election_timeout();
            fx.push(self.meta());
        }
        fx.push(answer(self, granted));
    }

    fn on_vote_resp(
        &mut self,
        now: u64,
        from: NodeId,
        term: u64,
        granted: bool,
        pre: bool,
        fx: &mut Vec<Effect>,
    ) {
        if term > self.term && !(pre && granted) {
            self.become_follower(term, None, fx);
            return;
        }
        let wanted = if pre {
            self.role == Role::PreCandidate && term == self.term + 1
        } else {
            self.role == Role::Candidate && term == self.term
        };
        if wanted && granted && self.is_voter(from) && !self.votes.contains(&from) {
            self.votes.push(from);
            if self.votes.len() >= self.majority() {
                self.won(now, pre, fx);
            }
        }
    }

    fn on_tick(&mut self, now: u64, fx: &mut Vec<Effect>) {
        // Writes that waited too long get an unknown outcome; they stay in the log.
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in expired {
            if let Some(w) = self.waiting.remove(&i) {
                fx.push(reply(
                    w.client,
                    w.id,
                    Reply::Unknown("the entry was not committed in time".into()),
                ));
            }
        }
        let (late, reads): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads)
            .into_iter()
            .partition(|r| r.deadline_ms <= now);
        self.reads = reads;
        for r in late {
            fx.push(reply(
                r.client,
                r.request.id,
                Reply::NotDone(Refusal::NoQuorum {
                    needed: self.majority() as u32,
                    got: 1,
                }),
            ));
        }
        let (late, waits): (Vec<_>, Vec<_>) = std::mem::take(&mut self.admin_waits)
            .into_iter()
            .partition(|w| w.deadline_ms <= now);
        self.admin_waits = waits;
        for w in late {
            fx.push(Effect::AdminReply {
                admin: w.admin,
                reply: AdminReply::Unknown("the configuration did not commit in time".into()),
            });
        }
        if self.role == Role::Leader {
            let heard = self
                .config
                .members
                .iter()
                .filter(|p| {
                    **p == self.id
                        || self
                            .acked_sent_ms
                            .get(p)
                            .is_some_and(|t| now < t + self.opts.election_timeout_ms)
                })
                .count();
            let leading_long_enough = now >= self.became_leader_ms + self.opts.election_timeout_ms;
            if self.opts.check_quorum && leading_long_enough && heard < self.majority() {
                let term = self.term;
                self.become_follower(term, None, fx);
                self.election_deadline_ms = now + self.election_timeout();
                return;
            }
            if now >= self.next_heartbeat_ms {
                self.broadcast(now, fx);
            }
            self.maybe_promote(fx);
        } else if now >= self.election_deadline_ms {
            if self.is_voter(self.id) {
                self.start_election(now, self.opts.pre_vote, fx);
            } else {
                // A learner or a removed node waits to hear from a leader.
                self.election_deadline_ms = now + self.election_timeout();
            }
        }
    }
}

impl Protocol for Raft {
    type Msg = Msg;
    type Record = WalRecord;

    fn has_leader(_cfg: &ClusterConfig) -> bool {
        true
    }

    fn has_membership(_cfg: &ClusterConfig) -> bool {
        true
    }

    fn on_admin(&mut self, now_ms: u64, admin: ClientId, op: AdminOp) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.on_admin_op(now_ms, admin, op, &mut fx);
        fx
    }

    fn read_from(cfg: &ClusterConfig) -> Option<ReadFrom> {
        Some(cfg.raft.read_from)
    }

    fn describe(cfg: &ClusterConfig) -> String {
        let o = &cfg.raft;
        format!(
            "raft (reads by {}, pre-vote {}, check-quorum {}, §5.4.2 commit rule {})",
            match o.read {
                RaftRead::ReadIndex => "read-index",
                RaftRead::Lease => "lease",
            },
            if o.pre_vote { "on" } else { "off" },
            if o.check_quorum { "on" } else { "off" },
            if o.commit_rule { "on" } else { "off" },
        )
    }

    fn from_config(
        cfg: &ClusterConfig,
        node: NodeId,
        seed: u64,
        recovered: Vec<WalRecord>,
    ) -> Self {
        Raft::new(
            node,
            cfg.nodes.len() as u32,
            cfg.raft.clone(),
            seed,
            recovered,
        )
    }

    fn step(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        let mut fx = Vec::new();
        if !self.started {
            self.started = true;
            self.election_deadline_ms = now_ms + self.election_timeout();
        }
        match input {
            Input::Tick => self.on_tick(now_ms, &mut fx),
            Input::Flush => {
                if self.role == Role::Leader {
                    let last = self.last_index();
                    if self.round_wanted {
                        self.broadcast(now_ms, &mut fx);
                    } else {
                        for p in self.replicas() {
                            // New entries, in one message per follower that is keeping up.
                            let next = self.next_index.get(&p).copied().unwrap_or(0);
                            if next <= last {
                                self.send_append(p, now_ms, &mut fx);
                            }
                        }
                    }
                }
            }
            Input::Client { client, request } => self.on_client(now_ms, client, request, &mut fx),
            Input::Peer { from, msg } => match msg {
                Msg::Append {
                    term,
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                    round,
                    sent_ms,
                } => self.on_append(
                    now_ms, from, term, prev_index, prev_term, entries, commit, round, sent_ms,
                    &mut fx,
                ),
                Msg::AppendResp {
                    term,
                    ok,
                    index,
                    round,
                    sent_ms,
                } => self.on_append_resp(now_ms, from, term, ok, index, round, sent_ms, &mut fx),
                Msg::Snapshot {
                    term,
                    index,
                    index_term,
                    kv,
                    config,
                    round,
                    sent_ms,
                } => self.on_snapshot(
                    now_ms, from, term, index, index_term, kv, config, round, sent_ms, &mut fx,
                ),
                Msg::Vote {
                    term,
                    last_index,
                    last_term,
                    pre,
                } => self.on_vote(now_ms, from, term, last_index, last_term, pre, &mut fx),
                Msg::VoteResp { term, granted, pre } => {
                    self.on_vote_resp(now_ms, from, term, granted, pre, &mut fx)
                }
            },
        }
        fx
    }

    fn status(&self) -> CoreStatus {
        CoreStatus {
            role: match self.role {
                Role::Follower => "follower",
                Role::PreCandidate => "pre-candidate",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
            }
            .into(),
            epoch: self.term,
            leader: self.leader,
            keys: self.kv.len() as u64,
            commit_index: self.commit,
            last_index: self.last_index(),
        }
    }

    fn data_digest(&self) -> Option<u64> {
        Some(crate::seeded::stable_hash(&crate::codec::encode(&self.kv)))
    }

    fn snapshot_records(&self) -> Vec<WalRecord> {
        let kv = self
            .kv
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let tail: Vec<Entry> = self
            .log
            .iter()
            .filter(|e| e.index > self.applied)
            .cloned()
            .collect();
        vec![
            WalRecord::Meta {
                term: self.term,
                voted_for: self.voted_for,
            },
            WalRecord::Snapshot {
                index: self.applied,
                term: self.term_at(self.applied).unwrap_or(0),
                kv,
                config: self.config_at(self.applied),
            },
            WalRecord::Append(tail),
        ]
    }
}

#[cfg(test)]
mod tests {
    //! Raft's safety properties (Figure 3 of the paper) checked after every
    //! step of random runs: messages delayed, reordered and dropped, nodes
    //! partitioned, crashed and restarted from what they persisted.

    use super::*;
    use crate::msg::{OpResult, RequestOptions};
    use std::collections::BTreeSet;

    struct Net {
        n: u32,
        opts: RaftOptions,
        nodes: Vec<Option<Raft>>,
        disks: Vec<Vec<WalRecord>>,
        /// (deliver at, sequence, from, to, message)
        queue: BTreeMap<(u64, u64), (NodeId, NodeId, Msg)>,
        seq: u64,
        now: u64,
        rng: SeededRng,
        blocked: BTreeSet<(NodeId, NodeId)>,
        loss_percent: u64,
        /// Term → the node that led it.
        leaders: BTreeMap<u64, NodeId>,
        /// Index → the entry committed there, as first seen on any node,
        /// with that node's term then (the commit's term or later).
        committed: BTreeMap<u64, (Entry, u64)>,
        /// Values whose put was acknowledged.
        acked: Vec<i64>,
        /// Client request id → the value it put.
        puts: BTreeMap<u64, i64>,
        /// What admin requests were answered, oldest first.
        admin_replies: Vec<AdminReply>,
    }

    impl Net {
        fn new(n: u32, opts: RaftOptions, seed: u64) -> Net {
            Net {
                n,
                nodes: (0..n)
                    .map(|i| {
                        Some(Raft::new(
                            i,
                            n,
                            opts.clone(),
                            seed ^ u64::from(i),
                            Vec::new(),
                        ))
                    })
                    .collect(),
                opts,
                disks: vec![Vec::new(); n as usize],
                queue: BTreeMap::new(),
                seq: 0,
                now: 0,
                rng: SeededRng::new(seed),
                blocked: BTreeSet::new(),
                loss_percent: 5,
                leaders: BTreeMap::new(),
                committed: BTreeMap::new(),
                acked: Vec::new(),
                puts: BTreeMap::new(),
                admin_replies: Vec::new(),
            }
        }

        fn admin(&mut self, node: NodeId, op: AdminOp) {
            let Some(raft) = self.nodes[node as usize].as_mut() else {
                return;
            };
            let mut fx = raft.on_admin(self.now, 0, op);
            fx.extend(raft.step(self.now, Input::Flush));
            self.perform(node, fx);
        }

        fn input(&mut self, node: NodeId, input: Input) {
            let Some(raft) = self.nodes[node as usize].as_mut() else {
                return;
            };
            let mut fx = raft.step(self.now, input);
            fx.extend(raft.step(self.now, Input::Flush));
            self.perform(node, fx);
        }

        fn perform(&mut self, node: NodeId, fx: Vec<Effect>) {
            for effect in fx {
                match effect {
                    Effect::Persist(rec) => self.disks[node as usize].push(rec),
                    Effect::Send { to, msg } => {
                        if self.blocked.contains(&(node, to))
                            || self.rng.below(100) < self.loss_percent
                        {
                            continue;
                        }
                        let at = self.now + 1 + self.rng.below(10);
                        self.seq += 1;
                        self.queue.insert((at, self.seq), (node, to, msg));
                    }
                    Effect::Reply { response, .. } => {
                        if let (Reply::Ok(OpResult::Done), Some(v)) =
                            (&response.reply, self.puts.get(&response.id))
                        {
                            self.acked.push(*v);
                        }
                    }
                    Effect::AdminReply { reply, .. } => self.admin_replies.push(reply),
                }
            }
        }

        fn put(&mut self, node: NodeId, id: u64, value: i64) {
            self.puts.insert(id, value);
            let request = Request {
                id,
                op: Op::Put {
                    key: format!("k{}", value % 3),
                    value: Value::Int(value),
                },
                options: RequestOptions::default(),
            };
            self.input(
                node,
                Input::Client {
                    client: id,
                    request,
                },
            );
        }

        fn run_ms(&mut self, ms: u64) {
            for _ in 0..ms {
                self.now += 1;
                while let Some((&key, _)) = self.queue.first_key_value() {
                    if key.0 > self.now {
                        break;
                    }
                    let (from, to, msg) = self.queue.remove(&key).unwrap();
                    self.input(to, Input::Peer { from, msg });
                }
                if self.now.is_multiple_of(5) {
                    for node in 0..self.n {
                        self.input(node, Input::Tick);
                    }
                }
                self.check();
            }
        }

        fn crash(&mut self, node: NodeId) {
            self.nodes[node as usize] = None;
        }

        fn restart(&mut self, node: NodeId, seed: u64) {
            let records = self.disks[node as usize].clone();
            self.nodes[node as usize] =
                Some(Raft::new(node, self.n, self.opts.clone(), seed, records));
        }

        fn leader(&self) -> Option<NodeId> {
            (0..self.n).find(|i| {
                self.nodes[*i as usize]
                    .as_ref()
                    .is_some_and(|r| r.role == Role::Leader)
            })
        }

        /// Election safety, log matching, leader completeness and
        /// state-machine safety, over every live node.
        fn check(&mut self) {
            for r in self.nodes.iter_mut().flatten() {
                for e in std::mem::take(&mut r.applied_trace) {
                    let seen = self
                        .committed
                        .entry(e.index)
                        .or_insert_with(|| (e.clone(), r.term));
                    assert_eq!(
                        seen.0, e,
                        "node {} applied another entry at {}",
                        r.id, e.index
                    );
                }
            }
            let live: Vec<&Raft> = self.nodes.iter().flatten().collect();
            for r in &live {
                if r.role == Role::Leader {
                    let first = *self.leaders.entry(r.term).or_insert(r.id);
                    assert_eq!(
                        first, r.id,
                        "two leaders in term {} at {} ms",
                        r.term, self.now
                    );
                }
                for e in r.log.iter().filter(|e| e.index <= r.commit) {
                    let seen = self
                        .committed
                        .entry(e.index)
                        .or_insert_with(|| (e.clone(), r.term));
                    assert_eq!(
                        &seen.0, e,
                        "node {} committed another entry at {}",
                        r.id, e.index
                    );
                }
            }
            for r in live.iter().filter(|r| r.role == Role::Leader) {
                // Leader completeness (§5.4): leaders of later terms hold it.
                let later = self
                    .committed
                    .range(r.log_start + 1..)
                    .filter(|(_, (_, seen_term))| *seen_term < r.term);
                for (i, (e, _)) in later {
                    assert_eq!(
                        r.entry(*i),
                        Some(e),
                        "leader {} of term {} lacks committed entry {i}",
                        r.id,
                        r.term
                    );
                }
            }
            for (a, x) in live.iter().enumerate() {
                for y in live.iter().skip(a + 1) {
                    // Log matching: the same index and term mean the same prefix.
                    let lo = x.log_start.max(y.log_start) + 1;
                    let hi = x.last_index().min(y.last_index());
                    let mut matched = false;
                    for i in (lo..=hi).rev() {
                        let (ex, ey) = (x.entry(i), y.entry(i));
                        if matched {
                            assert_eq!(ex, ey, "logs of {} and {} differ at {i}", x.id, y.id);
                        } else if ex.map(|e| e.term) == ey.map(|e| e.term) {
                            assert_eq!(ex, ey, "same index {i} and term, different entries");
                            matched = true;
                        }
                    }
                }
            }
        }
    }

    fn run_random(opts: RaftOptions, n: u32, seed: u64) -> Net {
        run_random_with(opts, n, seed, false)
    }

    /// A random run; with `membership`, the leader is also asked to remove
    /// nodes (at most a minority at once) and to add them back.
    fn run_random_with(opts: RaftOptions, n: u32, seed: u64, membership: bool) -> Net {
        let mut net = Net::new(n, opts, seed);
        let mut removed: Vec<NodeId> = Vec::new();
        let mut id = 0u64;
        let mut down: Vec<(NodeId, u64)> = Vec::new();
        while net.now < 6000 {
            let r = net.rng.below(1000);
            if r < 4 && down.len() + 1 < n as usize {
                let victim = net
                    .leader()
                    .unwrap_or(net.rng.below(u64::from(n)) as NodeId);
                if net.nodes[victim as usize].is_some() {
                    net.crash(victim);
                    down.push((victim, net.now + 100 + net.rng.below(800)));
                }
            } else if r < 8 {
                let a = net.rng.below(u64::from(n)) as NodeId;
                for b in 0..n {
                    if b != a {
                        net.blocked.insert((a, b));
                        net.blocked.insert((b, a));
                    }
                }
            } else if r < 14 {
                net.blocked.clear();
            } else if r < 22 && membership {
                if let Some(leader) = net.leader() {
                    let back = !removed.is_empty()
                        && (net.rng.below(2) == 0 || removed.len() * 2 + 1 >= n as usize);
                    if back {
                        let node = removed.remove(net.rng.below(removed.len() as u64) as usize);
                        net.admin(leader, AdminOp::Add(node));
                    } else {
                        let node = net.rng.below(u64::from(n)) as NodeId;
                        if !removed.contains(&node) {
                            removed.push(node);
                            net.admin(leader, AdminOp::Remove(node));
                        }
                    }
                }
            }
            let now = net.now;
            for (node, at) in std::mem::take(&mut down) {
                if at <= now {
                    net.restart(node, seed ^ now);
                } else {
                    down.push((node, at));
                }
            }
            for _ in 0..2 {
                id += 1;
                let target = net
                    .leader()
                    .unwrap_or(net.rng.below(u64::from(n)) as NodeId);
                net.put(target, id, id as i64);
            }
            let pause_ms = 1 + net.rng.below(5);
            net.run_ms(pause_ms);
        }
        for (node, _) in down {
            net.restart(node, seed);
        }
        net.blocked.clear();
        net.loss_percent = 0;
        net.run_ms(1000);
        if membership {
            // Everyone back, one at a time, each asked until it is a voter.
            for node in 0..n {
                for _ in 0..20 {
                    let Some(leader) = net.leader() else {
                        net.run_ms(200);
                        continue;
                    };
                    if net.nodes[leader as usize]
                        .as_ref()
                        .is_some_and(|r| r.is_voter(node) && r.config_index <= r.commit)
                    {
                        break;
                    }
                    net.admin(leader, AdminOp::Add(node));
                    net.run_ms(200);
                }
            }
        }
        net.run_ms(2000);
        net
    }

    fn assert_acked_writes_committed(net: &Net, seed: u64) {
        let committed: BTreeSet<i64> = net
            .committed
            .values()
            .filter_map(|(e, _)| match &e.command {
                Command::Op(Op::Put {
                    value: Value::Int(v),
                    ..
                }) => Some(*v),
                _ => None,
            })
            .collect();
        assert!(
            !net.acked.is_empty(),
            "seed {seed}: nothing was acknowledged"
        );
        for v in &net.acked {
            assert!(
                committed.contains(v),
                "seed {seed}: acked put {v} was never committed"
            );
        }
    }

    fn variants() -> Vec<RaftOptions> {
        let base = RaftOptions {
            log_keep: 20,
            ..RaftOptions::default()
        };
        vec![
            base.clone(),
            RaftOptions {
                pre_vote: false,
                check_quorum: false,
                ..base.clone()
            },
            RaftOptions {
                read: RaftRead::Lease,
                ..base
            },
        ]
    }

    #[test]
    fn safety_properties_hold_under_crashes_partitions_and_loss() {
        for opts in variants() {
            for n in [3, 5] {
                for seed in 1..=12u64 {
                    let net = run_random(opts.clone(), n, seed * 7919 + u64::from(n));
                    assert_acked_writes_committed(&net, seed);
                    assert!(
                        net.leaders.len() > 1,
                        "seed {seed}: the leader never changed"
                    );
                }
            }
        }
    }

    #[test]
    fn safety_properties_hold_through_membership_changes() {
        let mut changes = 0;
        for opts in variants() {
            for n in [3, 5] {
                for seed in 1..=8u64 {
                    let net = run_random_with(opts.clone(), n, seed * 104_729 + u64::from(n), true);
                    assert_acked_writes_committed(&net, seed);
                    let leader = net.leader().expect("a leader after the heal");
                    let r = net.nodes[leader as usize].as_ref().unwrap();
                    assert_eq!(
                        r.config.members,
                        (0..n).collect::<Vec<_>>(),
                        "seed {seed}: not every node is a voter again (last answers {:?})",
                        net.admin_replies.iter().rev().take(3).collect::<Vec<_>>()
                    );
                    changes += net
                        .admin_replies
                        .iter()
                        .filter(|a| matches!(a, AdminReply::Members(_)))
                        .count();
                }
            }
        }
        assert!(changes > 100, "only {changes} changes were carried out");
    }

    #[test]
    fn a_removed_node_neither_votes_nor_is_replicated_to_and_a_learner_catches_up() {
        let mut net = Net::new(3, RaftOptions::default(), 7);
        net.loss_percent = 0;
        net.run_ms(2000);
        let leader = net.leader().expect("a leader");
        let gone = (leader + 1) % 3;
        net.admin(leader, AdminOp::Remove(gone));
        net.run_ms(200);
        assert!(
            matches!(net.admin_replies.last(), Some(AdminReply::Members(m)) if !m.members.contains(&gone))
        );
        for id in 1..=50 {
            net.put(leader, id, id as i64);
        }
        net.run_ms(500);
        let behind = net.nodes[gone as usize].as_ref().unwrap().last_index();
        let ahead = net.nodes[leader as usize].as_ref().unwrap().last_index();
        assert!(
            behind + 50 <= ahead,
            "the removed node was still replicated to"
        );
        // The remaining two commit alone; the removed one cannot depose the leader.
        net.run_ms(3000);
        assert_eq!(net.leader(), Some(leader));
        net.admin(leader, AdminOp::Add(gone));
        net.run_ms(1000);
        assert!(
            matches!(net.admin_replies.last(), Some(AdminReply::Members(m)) if m.members.contains(&gone)),
            "{:?}",
            net.admin_replies
        );
        let r = net.nodes[gone as usize].as_ref().unwrap();
        assert_eq!(r.kv(), net.nodes[leader as usize].as_ref().unwrap().kv());
        assert!(r.is_voter(gone));
    }

    #[test]
    fn after_a_removal_the_remaining_majority_elects_a_new_leader() {
        let mut net = Net::new(5, RaftOptions::default(), 3);
        net.loss_percent = 0;
        net.run_ms(2000);
        let leader = net.leader().expect("a leader");
        let gone = (leader + 1) % 5;
        net.admin(leader, AdminOp::Remove(gone));
        net.run_ms(300);
        net.crash(leader);
        net.run_ms(3000);
        let next = net.leader();
        assert!(
            next.is_some_and(|l| l != leader),
            "no new leader: {:?}",
            net.nodes
                .iter()
                .flatten()
                .map(|x| (
                    x.id,
                    x.term,
                    x.role,
                    x.config.clone(),
                    x.commit,
                    x.last_index()
                ))
                .collect::<Vec<_>>()
        );
    }

    /// One change at a time: two uncommitted single-server changes could
    /// leave two configurations with disjoint majorities.
    #[test]
    fn a_second_change_waits_until_the_first_has_committed() {
        let mut net = Net::new(5, RaftOptions::default(), 5);
        net.loss_percent = 0;
        net.run_ms(2000);
        let leader = net.leader().expect("a leader");
        for p in 0..5 {
            if p != leader {
                net.blocked.insert((leader, p));
                net.blocked.insert((p, leader));
            }
        }
        let a = (leader + 1) % 5;
        let b = (leader + 2) % 5;
        net.admin(leader, AdminOp::Remove(a));
        net.admin(leader, AdminOp::Remove(b));
        assert!(
            matches!(net.admin_replies.last(), Some(AdminReply::Refused(why)) if why.contains("in progress")),
            "{:?}",
            net.admin_replies
        );
        let r = net.nodes[leader as usize].as_ref().unwrap();
        assert!(!r.is_voter(a) && r.is_voter(b));
        assert!(r.config_index > r.commit);
    }

    #[test]
    fn a_leader_that_removes_itself_steps_down_once_the_removal_commits() {
        let mut net = Net::new(3, RaftOptions::default(), 11);
        net.loss_percent = 0;
        net.run_ms(2000);
        let leader = net.leader().expect("a leader");
        net.admin(leader, AdminOp::Remove(leader));
        net.run_ms(2000);
        let next = net.leader().expect("a new leader");
        assert_ne!(next, leader);
        let r = net.nodes[next as usize].as_ref().unwrap();
        assert!(!r.config.members.contains(&leader));
        assert_eq!(r.config.members.len(), 2);
    }

    #[test]
    fn after_the_heal_every_node_applies_the_same_state() {
        for seed in 1..=8u64 {
            let net = run_random(RaftOptions::default(), 5, seed);
            let states: Vec<&BTreeMap<String, Value>> =
                net.nodes.iter().flatten().map(|r| &r.kv).collect();
            assert_eq!(states.len(), 5);
            assert!(
                states.windows(2).all(|w| w[0] == w[1]),
                "seed {seed}: replicas differ"
            );
        }
    }

    #[test]
    fn a_lagging_follower_is_caught_up_by_snapshot() {
        let opts = RaftOptions {
            log_keep: 5,
            ..RaftOptions::default()
        };
        let mut net = Net::new(3, opts, 42);
        net.loss_percent = 0;
        net.run_ms(2000);
        let leader = net.leader().expect("a leader");
        let lagging = (leader + 1) % 3;
        net.crash(lagging);
        for id in 1..=100 {
            net.put(leader, id, id as i64);
            net.run_ms(2);
        }
        net.run_ms(200);
        assert!(net.nodes[leader as usize].as_ref().unwrap().log_start > 0);
        net.restart(lagging, 7);
        net.run_ms(1000);
        let kv_leader = net.nodes[leader as usize].as_ref().unwrap().kv.clone();
        let follower = net.nodes[lagging as usize].as_ref().unwrap();
        assert_eq!(follower.kv, kv_leader);
        assert!(net.disks[lagging as usize]
            .iter()
            .any(|r| matches!(r, WalRecord::Snapshot { .. })));
    }
}
