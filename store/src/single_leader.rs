//! Single-leader replication: a leader orders writes into a log and ships it
//! to followers; it acks a write after all (`sync`), k (`semi-sync`) or no
//! (`async`) followers have it. Heartbeats, elections after a timeout, fencing
//! epochs (switchable) and read leases (switchable).

use crate::config::{ClusterConfig, Replication, SingleLeaderOptions};
use crate::msg::{apply_op, NodeId, ReadFrom, Refusal, Reply, Request, Response, Value};
use crate::protocol::{self, ClientId, CoreStatus, Protocol};
use crate::quorum;
use crate::seeded::SeededRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Entries a leader ships in one message.
const MAX_BATCH: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub epoch: u64,
    /// The new value of every key the operation wrote.
    pub writes: Vec<(String, Value)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Append {
        epoch: u64,
        prev_index: u64,
        prev_epoch: u64,
        entries: Vec<Entry>,
        commit: u64,
        sent_ms: u64,
    },
    AppendResp {
        epoch: u64,
        /// The follower took the sender as its leader (counts towards the lease).
        recognized: bool,
        ok: bool,
        /// The follower's matching index when `ok`, else where to resume.
        last_index: u64,
        need_snapshot: bool,
        sent_ms: u64,
    },
    Snapshot {
        epoch: u64,
        index: u64,
        index_epoch: u64,
        kv: Vec<(String, Value)>,
        sent_ms: u64,
    },
    Vote {
        epoch: u64,
        last_index: u64,
        last_epoch: u64,
    },
    VoteResp {
        epoch: u64,
        granted: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    Meta {
        epoch: u64,
        voted_for: Option<NodeId>,
    },
    Append(Vec<Entry>),
    /// Drops entries with an index at or above this one.
    TruncateFrom(u64),
    Snapshot {
        index: u64,
        epoch: u64,
        kv: Vec<(String, Value)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

struct Waiting {
    client: ClientId,
    response: Response,
    deadline_ms: u64,
}

pub struct SingleLeader {
    id: NodeId,
    n: u32,
    opts: SingleLeaderOptions,
    rng: SeededRng,
    started: bool,

    epoch: u64,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    last_heard_leader_ms: u64,
    election_deadline_ms: u64,
    votes: BTreeSet<NodeId>,

    /// Entries `log_start + 1 ..`; those up to `log_start` are folded into `kv`.
    log: VecDeque<Entry>,
    log_start: u64,
    log_start_epoch: u64,
    commit: u64,
    applied: u64,
    kv: BTreeMap<String, Value>,

    // Leader state.
    next_index: HashMap<NodeId, u64>,
    match_index: HashMap<NodeId, u64>,
    acked_sent_ms: HashMap<NodeId, u64>,
    /// Followers that applied entries the leader does not have: they get a snapshot.
    needs_snapshot: BTreeSet<NodeId>,
    /// Followers whose log position is being searched for: one message in flight, no pipelining.
    probing: BTreeSet<NodeId>,
    lease_until_ms: u64,
    next_heartbeat_ms: u64,
    /// Async batching: when the next batch of new entries may ship.
    next_ship_ms: u64,
    /// Values written by entries not yet applied, so later writes build on them.
    overlay: HashMap<String, (Value, u64)>,
    waiting: BTreeMap<u64, Vec<Waiting>>,
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

impl SingleLeader {
    /// `seed` drives this node's election jitter; nodes of a cluster need
    /// different ones.
    pub fn new(
        id: NodeId,
        n: u32,
        opts: SingleLeaderOptions,
        seed: u64,
        recovered: Vec<WalRecord>,
    ) -> Self {
        let mut node = SingleLeader {
            id,
            n,
            opts,
            rng: SeededRng::new(seed),
            started: false,
            epoch: 0,
            voted_for: None,
            role: Role::Follower,
            leader: None,
            last_heard_leader_ms: 0,
            election_deadline_ms: 0,
            votes: BTreeSet::new(),
            log: VecDeque::new(),
            log_start: 0,
            log_start_epoch: 0,
            commit: 0,
            applied: 0,
            kv: BTreeMap::new(),
            next_index: HashMap::new(),
            match_index: HashMap::new(),
            acked_sent_ms: HashMap::new(),
            needs_snapshot: BTreeSet::new(),
            probing: BTreeSet::new(),
            lease_until_ms: 0,
            next_heartbeat_ms: 0,
            next_ship_ms: 0,
            overlay: HashMap::new(),
            waiting: BTreeMap::new(),
        };
        for rec in recovered {
            node.replay(rec);
        }
        node
    }

    fn replay(&mut self, rec: WalRecord) {
        match rec {
            WalRecord::Meta { epoch, voted_for } => {
                self.epoch = epoch;
                self.voted_for = voted_for;
            }
            WalRecord::Append(entries) => {
                for e in entries {
                    if e.index <= self.log_start || e.index > self.last_index() + 1 {
                        continue;
                    }
                    self.truncate_from(e.index);
                    self.log.push_back(e);
                }
            }
            WalRecord::TruncateFrom(i) => self.truncate_from(i),
            WalRecord::Snapshot { index, epoch, kv } => self.install(index, epoch, kv),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.n).filter(move |p| *p != self.id)
    }

    fn majority(&self) -> usize {
        quorum::majority(self.n as usize)
    }

    fn last_index(&self) -> u64 {
        self.log.back().map_or(self.log_start, |e| e.index)
    }

    fn last_epoch(&self) -> u64 {
        self.log.back().map_or(self.log_start_epoch, |e| e.epoch)
    }

    fn epoch_at(&self, index: u64) -> Option<u64> {
        if index == self.log_start {
            Some(self.log_start_epoch)
        } else if index < self.log_start || index > self.last_index() {
            None
        } else {
            self.log
                .get((index - self.log_start - 1) as usize)
                .map(|e| e.epoch)
        }
    }

    fn truncate_from(&mut self, index: u64) {
        if index <= self.log_start {
            self.log.clear();
        } else {
            self.log.truncate((index - self.log_start - 1) as usize);
        }
    }

    fn install(&mut self, index: u64, epoch: u64, kv: Vec<(String, Value)>) {
        self.kv = kv.into_iter().collect();
        self.log.clear();
        self.log_start = index;
        self.log_start_epoch = epoch;
        self.applied = index;
        self.commit = index;
    }

    fn election_timeout(&mut self) -> u64 {
        let t = self.opts.election_timeout_ms;
        t + self.rng.below(t.max(1))
    }

    fn meta(&self) -> Effect {
        persist(WalRecord::Meta {
            epoch: self.epoch,
            voted_for: self.voted_for,
        })
    }

    fn apply_committed(&mut self, fx: &mut Vec<Effect>) {
        let upto = self.commit.min(self.last_index());
        while self.applied < upto {
            // A peer's message can claim anything; an entry we do not hold is not applied.
            let Some(entry) = self
                .applied
                .checked_sub(self.log_start)
                .and_then(|i| self.log.get(i as usize))
            else {
                break;
            };
            self.applied += 1;
            for (k, v) in &entry.writes {
                self.kv.insert(k.clone(), v.clone());
            }
        }
        if self.role == Role::Leader {
            let applied = self.applied;
            self.overlay.retain(|_, (_, idx)| *idx > applied);
            while let Some((&idx, _)) = self.waiting.first_key_value() {
                if idx > applied {
                    break;
                }
                for w in self.waiting.remove(&idx).unwrap_or_default() {
                    fx.push(Effect::Reply {
                        client: w.client,
                        response: w.response,
                    });
                }
            }
        }
        // Keep `log_keep` applied entries for lagging followers; fold older ones away.
        let keep = self.opts.log_keep.max(1);
        if self.applied > self.log_start + 2 * keep {
            let new_start = self.applied - keep;
            let drop = (new_start - self.log_start) as usize;
            self.log_start_epoch = self.log[drop - 1].epoch;
            self.log.drain(..drop);
            self.log_start = new_start;
        }
    }

    fn fail_waiting(&mut self, why: &str, fx: &mut Vec<Effect>) {
        for (_, ws) in std::mem::take(&mut self.waiting) {
            for w in ws {
                fx.push(reply(
                    w.client,
                    w.response.id,
                    Reply::Unknown(why.to_string()),
                ));
            }
        }
        self.overlay.clear();
    }

    fn step_down(&mut self, epoch: u64, leader: Option<NodeId>, fx: &mut Vec<Effect>) {
        if self.role == Role::Leader {
            self.fail_waiting("leadership lost before the write was acknowledged", fx);
        }
        self.role = Role::Follower;
        self.leader = leader;
        if epoch > self.epoch {
            self.epoch = epoch;
            self.voted_for = None;
            fx.push(self.meta());
        }
    }

    fn start_election(&mut self, now: u64, fx: &mut Vec<Effect>) {
        self.role = Role::Candidate;
        self.leader = None;
        self.epoch += 1;
        self.voted_for = Some(self.id);
        self.votes = BTreeSet::from([self.id]);
        self.election_deadline_ms = now + self.election_timeout();
        fx.push(self.meta());
        if self.votes.len() >= self.majority() {
            self.become_leader(now, fx);
            return;
        }
        let msg = Msg::Vote {
            epoch: self.epoch,
            last_index: self.last_index(),
            last_epoch: self.last_epoch(),
        };
        for p in self.peers().collect::<Vec<_>>() {
            fx.push(send(p, msg.clone()));
        }
    }

    fn become_leader(&mut self, now: u64, fx: &mut Vec<Effect>) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        // It won with a log at least as up to date as a majority's: commit all of it.
        self.commit = self.last_index();
        self.apply_committed(fx);
        let next = self.last_index() + 1;
        let peers: Vec<NodeId> = self.peers().collect();
        self.next_index = peers.iter().map(|p| (*p, next)).collect();
        self.match_index = peers.iter().map(|p| (*p, 0)).collect();
        self.acked_sent_ms = peers.iter().map(|p| (*p, 0)).collect();
        self.needs_snapshot.clear();
        self.probing.clear();
        self.lease_until_ms = if peers.is_empty() { u64::MAX } else { 0 };
        self.overlay.clear();
        for p in peers {
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
        if next <= self.log_start || self.needs_snapshot.remove(&to) {
            let kv = self
                .kv
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let index_epoch = self.epoch_at(self.applied).unwrap_or(0);
            fx.push(send(
                to,
                Msg::Snapshot {
                    epoch: self.epoch,
                    index: self.applied,
                    index_epoch,
                    kv,
                    sent_ms: now,
                },
            ));
            self.next_index.insert(to, self.applied + 1);
            return;
        }
        let prev_index = next - 1;
        let prev_epoch = self.epoch_at(prev_index).unwrap_or(0);
        let last = self.last_index().min(prev_index + MAX_BATCH as u64);
        let entries: Vec<Entry> = (next..=last)
            .map(|i| self.log[(i - self.log_start - 1) as usize].clone())
            .collect();
        self.next_index.insert(to, last + 1);
        fx.push(send(
            to,
            Msg::Append {
                epoch: self.epoch,
                prev_index,
                prev_epoch,
                entries,
                commit: self.commit,
                sent_ms: now,
            },
        ));
    }

    fn advance_commit(&mut self, fx: &mut Vec<Effect>) {
        let needed = quorum::follower_acks_needed(self.opts.replication, self.n as usize - 1);
        let candidate = if needed == 0 {
            self.last_index()
        } else {
            quorum::kth_highest(self.match_index.values().copied(), needed).unwrap_or(0)
        };
        let candidate = candidate.min(self.last_index());
        if candidate > self.commit {
            self.commit = candidate;
            self.apply_committed(fx);
        }
    }

    fn update_lease(&mut self) {
        let needed = self.majority() - 1;
        if needed == 0 {
            self.lease_until_ms = u64::MAX;
            return;
        }
        if let Some(t) = quorum::kth_highest(self.acked_sent_ms.values().copied(), needed) {
            if t > 0 {
                self.lease_until_ms = self.lease_until_ms.max(t + self.opts.lease_ms);
            }
        }
    }

    fn serve_read(&self, client: ClientId, req: &Request, fx: &mut Vec<Effect>) {
        let r = match crate::msg::apply_op_kv(&req.op, &self.kv) {
            Ok((_, result)) => Reply::Ok(result),
            Err(refusal) => Reply::NotDone(refusal),
        };
        fx.push(reply(client, req.id, r));
    }

    fn on_client(&mut self, now: u64, client: ClientId, req: Request, fx: &mut Vec<Effect>) {
        let read_only = req.op.is_read_only();
        let read_from = req.options.read_from.unwrap_or(self.opts.read_from);
        if read_only && read_from != crate::msg::ReadFrom::Leader {
            self.serve_read(client, &req, fx);
            return;
        }
        if self.role != Role::Leader {
            fx.push(reply(
                client,
                req.id,
                Reply::NotDone(Refusal::NotLeader {
                    leader: self.leader,
                }),
            ));
            return;
        }
        if read_only {
            if self.opts.leases && now >= self.lease_until_ms {
                fx.push(reply(client, req.id, Reply::NotDone(Refusal::NoLease)));
            } else {
                self.serve_read(client, &req, fx);
            }
            return;
        }
        let overlay = &self.overlay;
        let kv = &self.kv;
        let outcome = apply_op(&req.op, |k| {
            overlay
                .get(k)
                .map(|(v, _)| v.clone())
                .or_else(|| kv.get(k).cloned())
        });
        let (writes, result) = match outcome {
            Ok(x) => x,
            Err(refusal) => {
                fx.push(reply(client, req.id, Reply::NotDone(refusal)));
                return;
            }
        };
        let index = self.last_index() + 1;
        for (k, v) in &writes {
            self.overlay.insert(k.clone(), (v.clone(), index));
        }
        let entry = Entry {
            index,
            epoch: self.epoch,
            writes,
        };
        self.log.push_back(entry.clone());
        fx.push(persist(WalRecord::Append(vec![entry])));
        self.waiting.entry(index).or_default().push(Waiting {
            client,
            response: Response {
                id: req.id,
                reply: Reply::Ok(result),
            },
            deadline_ms: now + self.opts.request_timeout_ms,
        });
        // Followers get the entry at the next `Flush`, batched with its neighbours.
        self.advance_commit(fx);
    }

    fn follow(&mut self, now: u64, from: NodeId, epoch: u64, fx: &mut Vec<Effect>) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.voted_for = None;
            fx.push(self.meta());
        }
        if self.role == Role::Leader {
            self.fail_waiting("leadership lost before the write was acknowledged", fx);
        }
        self.role = Role::Follower;
        self.leader = Some(from);
        self.last_heard_leader_ms = now;
        self.election_deadline_ms = now + self.election_timeout();
    }

    /// Whether a message from a would-be leader at `epoch` is to be obeyed.
    fn accepts_leader(&self, from: NodeId, epoch: u64) -> bool {
        if self.role == Role::Leader && from != self.id {
            // A leader yields only to a newer epoch; without fencing it does not
            // even learn of one through refusals, only by direct contact.
            return epoch > self.epoch;
        }
        !(self.opts.fencing && epoch < self.epoch)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        now: u64,
        from: NodeId,
        epoch: u64,
        prev_index: u64,
        prev_epoch: u64,
        entries: Vec<Entry>,
        commit: u64,
        sent_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        let resp = |me: &Self, recognized: bool, ok: bool, last_index: u64, need_snapshot: bool| {
            send(
                from,
                Msg::AppendResp {
                    epoch: me.epoch,
                    recognized,
                    ok,
                    last_index,
                    need_snapshot,
                    sent_ms,
                },
            )
        };
        // Entries follow `prev_index` one by one, or the message is not a
        // leader's (a leader never sends anything else): it is dropped.
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| Some(e.index) == prev_index.checked_add(1 + i as u64));
        if !contiguous {
            return;
        }
        if !self.accepts_leader(from, epoch) {
            fx.push(resp(self, false, false, self.last_index(), false));
            return;
        }
        self.follow(now, from, epoch, fx);
        if prev_index > self.last_index() {
            fx.push(resp(self, true, false, self.last_index(), false));
            return;
        }
        if prev_index > self.log_start && self.epoch_at(prev_index) != Some(prev_epoch) {
            if prev_index <= self.applied {
                fx.push(resp(self, true, false, self.applied, true));
            } else {
                // Skip back over the whole conflicting epoch in one round trip.
                let conflict = self.epoch_at(prev_index);
                let mut first = prev_index;
                while first > self.applied + 1
                    && first > self.log_start + 1
                    && self.epoch_at(first - 1) == conflict
                {
                    first -= 1;
                }
                self.truncate_from(first);
                fx.push(persist(WalRecord::TruncateFrom(first)));
                fx.push(resp(self, true, false, first - 1, false));
            }
            return;
        }
        let last_new = prev_index + entries.len() as u64;
        let mut fresh = Vec::new();
        for e in entries {
            if e.index <= self.log_start {
                continue;
            }
            if e.index <= self.last_index() {
                if self.epoch_at(e.index) == Some(e.epoch) {
                    continue;
                }
                if e.index <= self.applied {
                    if !fresh.is_empty() {
                        fx.push(persist(WalRecord::Append(fresh)));
                    }
                    fx.push(resp(self, true, false, self.applied, true));
                    return;
                }
                self.truncate_from(e.index);
                fx.push(persist(WalRecord::TruncateFrom(e.index)));
            }
            self.log.push_back(e.clone());
            fresh.push(e);
        }
        if !fresh.is_empty() {
            fx.push(persist(WalRecord::Append(fresh)));
        }
        let new_commit = commit.min(last_new);
        if new_commit > self.commit {
            self.commit = new_commit;
            self.apply_committed(fx);
        }
        fx.push(resp(self, true, true, last_new, false));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_snapshot(
        &mut self,
        now: u64,
        from: NodeId,
        epoch: u64,
        index: u64,
        index_epoch: u64,
        kv: Vec<(String, Value)>,
        sent_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        if !self.accepts_leader(from, epoch) {
            fx.push(send(
                from,
                Msg::AppendResp {
                    epoch: self.epoch,
                    recognized: false,
                    ok: false,
                    last_index: self.last_index(),
                    need_snapshot: false,
                    sent_ms,
                },
            ));
            return;
        }
        self.follow(now, from, epoch, fx);
        fx.push(persist(WalRecord::Snapshot {
            index,
            epoch: index_epoch,
            kv: kv.clone(),
        }));
        self.install(index, index_epoch, kv);
        fx.push(send(
            from,
            Msg::AppendResp {
                epoch: self.epoch,
                recognized: true,
                ok: true,
                last_index: index,
                need_snapshot: false,
                sent_ms,
            },
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append_resp(
        &mut self,
        now: u64,
        from: NodeId,
        epoch: u64,
        recognized: bool,
        ok: bool,
        last_index: u64,
        need_snapshot: bool,
        sent_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        if self.opts.fencing && epoch > self.epoch {
            self.step_down(epoch, None, fx);
            return;
        }
        if self.role != Role::Leader || !recognized {
            return;
        }
        let acked = self.acked_sent_ms.entry(from).or_insert(0);
        *acked = (*acked).max(sent_ms);
        self.update_lease();
        if ok {
            self.probing.remove(&from);
            let m = self.match_index.entry(from).or_insert(0);
            *m = (*m).max(last_index);
            let m = *m;
            let next = self.next_index.entry(from).or_insert(m + 1);
            *next = (*next).max(m + 1);
            self.advance_commit(fx);
            if self.next_index[&from] <= self.last_index()
                && last_index + 1 == self.next_index[&from]
            {
                self.send_append(from, now, fx);
            }
        } else {
            self.probing.insert(from);
            if need_snapshot {
                self.needs_snapshot.insert(from);
            }
            let resume = if need_snapshot {
                self.log_start
            } else {
                last_index + 1
            };
            let next = self.next_index.entry(from).or_insert(resume);
            *next = (*next).min(resume).max(1);
            self.send_append(from, now, fx);
        }
    }

    fn on_vote(
        &mut self,
        now: u64,
        from: NodeId,
        epoch: u64,
        last_index: u64,
        last_epoch: u64,
        fx: &mut Vec<Effect>,
    ) {
        let deny = |me: &Self| {
            send(
                from,
                Msg::VoteResp {
                    epoch: me.epoch,
                    granted: false,
                },
            )
        };
        if epoch < self.epoch {
            fx.push(deny(self));
            return;
        }
        // A live leader (or a follower that heard one recently) does not vote: this
        // is what makes the leader's lease safe.
        let sticky = self.role == Role::Leader
            || (self.leader.is_some()
                && now < self.last_heard_leader_ms + self.opts.election_timeout_ms);
        if sticky {
            fx.push(deny(self));
            return;
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.voted_for = None;
            self.role = Role::Follower;
            self.leader = None;
        }
        let up_to_date = (last_epoch, last_index) >= (self.last_epoch(), self.last_index());
        let granted = up_to_date && self.voted_for.is_none_or(|v| v == from);
        if granted {
            self.voted_for = Some(from);
            self.election_deadline_ms = now + self.election_timeout();
        }
        fx.push(self.meta());
        fx.push(send(
            from,
            Msg::VoteResp {
                epoch: self.epoch,
                granted,
            },
        ));
    }

    fn on_vote_resp(
        &mut self,
        now: u64,
        from: NodeId,
        epoch: u64,
        granted: bool,
        fx: &mut Vec<Effect>,
    ) {
        if epoch > self.epoch {
            if self.role != Role::Leader || self.opts.fencing {
                self.step_down(epoch, None, fx);
            }
            return;
        }
        if self.role == Role::Candidate && epoch == self.epoch && granted {
            self.votes.insert(from);
            if self.votes.len() >= self.majority() {
                self.become_leader(now, fx);
            }
        }
    }

    fn on_tick(&mut self, now: u64, fx: &mut Vec<Effect>) {
        // Writes that waited too long get an unknown outcome; they stay in the log.
        let mut expired = Vec::new();
        for (idx, ws) in self.waiting.iter_mut() {
            ws.retain(|w| {
                if w.deadline_ms <= now {
                    expired.push((w.client, w.response.id));
                    false
                } else {
                    true
                }
            });
            if ws.is_empty() {
                expired.push((u64::MAX, *idx));
            }
        }
        for (client, id) in expired {
            if client == u64::MAX {
                self.waiting.remove(&id);
            } else {
                fx.push(reply(
                    client,
                    id,
                    Reply::Unknown("replication did not complete in time".into()),
                ));
            }
        }
        if self.role == Role::Leader {
            if now >= self.next_heartbeat_ms {
                for p in self.peers().collect::<Vec<_>>() {
                    self.send_append(p, now, fx);
                }
                self.next_heartbeat_ms = now + self.opts.heartbeat_ms;
            }
        } else if now >= self.election_deadline_ms {
            self.start_election(now, fx);
        }
    }
}

impl Protocol for SingleLeader {
    type Msg = Msg;
    type Record = WalRecord;

    fn has_leader(_cfg: &ClusterConfig) -> bool {
        true
    }

    fn read_from(cfg: &ClusterConfig) -> Option<ReadFrom> {
        Some(cfg.single_leader.read_from)
    }

    fn describe(cfg: &ClusterConfig) -> String {
        let o = &cfg.single_leader;
        format!(
            "single-leader {} (fencing {}, leases {}, reads from {:?})",
            String::from(o.replication),
            if o.fencing { "on" } else { "off" },
            if o.leases { "on" } else { "off" },
            o.read_from
        )
    }

    fn from_config(
        cfg: &ClusterConfig,
        node: NodeId,
        seed: u64,
        recovered: Vec<WalRecord>,
    ) -> Self {
        let n = cfg.nodes.len() as u32;
        SingleLeader::new(node, n, cfg.single_leader.clone(), seed, recovered)
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
                let batching =
                    self.opts.replication == Replication::Async && self.opts.async_ship_ms > 0;
                if batching && now_ms < self.next_ship_ms {
                    // Shipped with the next batch (or heartbeat).
                } else if self.role == Role::Leader {
                    if batching {
                        self.next_ship_ms = now_ms + self.opts.async_ship_ms;
                    }
                    let last = self.last_index();
                    for p in self.peers().collect::<Vec<_>>() {
                        // Everything not yet shipped, in one message per follower.
                        if !self.probing.contains(&p)
                            && self.next_index.get(&p).is_some_and(|n| *n <= last)
                        {
                            self.send_append(p, now_ms, &mut fx);
                        }
                    }
                }
            }
            Input::Client { client, request } => self.on_client(now_ms, client, request, &mut fx),
            Input::Peer { from, msg } => match msg {
                Msg::Append {
                    epoch,
                    prev_index,
                    prev_epoch,
                    entries,
                    commit,
                    sent_ms,
                } => self.on_append(
                    now_ms, from, epoch, prev_index, prev_epoch, entries, commit, sent_ms, &mut fx,
                ),
                Msg::AppendResp {
                    epoch,
                    recognized,
                    ok,
                    last_index,
                    need_snapshot,
                    sent_ms,
                } => self.on_append_resp(
                    now_ms,
                    from,
                    epoch,
                    recognized,
                    ok,
                    last_index,
                    need_snapshot,
                    sent_ms,
                    &mut fx,
                ),
                Msg::Snapshot {
                    epoch,
                    index,
                    index_epoch,
                    kv,
                    sent_ms,
                } => self.on_snapshot(
                    now_ms,
                    from,
                    epoch,
                    index,
                    index_epoch,
                    kv,
                    sent_ms,
                    &mut fx,
                ),
                Msg::Vote {
                    epoch,
                    last_index,
                    last_epoch,
                } => self.on_vote(now_ms, from, epoch, last_index, last_epoch, &mut fx),
                Msg::VoteResp { epoch, granted } => {
                    self.on_vote_resp(now_ms, from, epoch, granted, &mut fx)
                }
            },
        }
        fx
    }

    fn status(&self) -> CoreStatus {
        CoreStatus {
            role: match self.role {
                Role::Follower => "follower",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
            }
            .into(),
            epoch: self.epoch,
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
                epoch: self.epoch,
                voted_for: self.voted_for,
            },
            WalRecord::Snapshot {
                index: self.applied,
                epoch: self.epoch_at(self.applied).unwrap_or(0),
                kv,
            },
            WalRecord::Append(tail),
        ]
    }
}
