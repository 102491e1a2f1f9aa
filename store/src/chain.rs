//! Chain replication (van Renesse and Schneider, 2004) with CRAQ reads
//! (Terrace and Freedman, 2009). Node 0 is the configuration master; the
//! others form the chain. A write enters at the head, which decides it
//! (a cas against the head's state) and sends its effect down the chain;
//! every node applies it on arrival and the tail's acknowledgement flows
//! back up, committing it at each node; the head answers the client then.
//! Reads are served by the tail (`reads = "tail"`), or by any chain node
//! whose keys are clean (`reads = "any"`, CRAQ), a dirty key's read going
//! to the tail for the committed version.
//!
//! The master pings every node; a chain node silent for
//! `failure_timeout_ms` is removed and a node that answers again is
//! appended as the new tail, each change a new epoch that the pings
//! carry. A node whose successor changes sends it its whole state first,
//! so a new tail starts from what its predecessor holds. A node serves
//! clients only within `lease_ms` of the master's last ping (shorter than
//! the failure timeout, so it stops before the master replaces it), and
//! takes chain messages of its own epoch only. `epochs = false` turns both
//! off: nodes the master replaced but could not tell keep serving, a stale
//! tail beside the real one (split brain).
//!
//! The master is also the chain's admin interface: `Remove` takes a node out
//! at once (a new epoch) and keeps it out whatever it answers; `Add` lets it
//! back, as the joining tail, and is answered once it holds its
//! predecessor's state.

use crate::config::{ChainOptions, ChainReads, ClusterConfig};
use crate::msg::{apply_op_kv, NodeId, Op, ReadFrom, Refusal, Reply, Request, Response, Value};
use crate::protocol::{self, AdminOp, AdminReply, ClientId, CoreStatus, Membership, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The master's node.
pub const MASTER: NodeId = 0;

/// Updates a node sends again in one round to a successor that has not acknowledged them.
const MAX_RESEND: usize = 256;

/// Out-of-order updates a node holds while one before them is missing.
const MAX_AHEAD: usize = 4096;

type Writes = Vec<(String, Value)>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Master → every node: the configuration, and a lease renewal.
    Ping {
        epoch: u64,
        chain: Vec<NodeId>,
    },
    /// `synced`: the node holds its predecessor's state in this epoch.
    Pong {
        epoch: u64,
        synced: bool,
    },
    /// Predecessor → successor: the effect of write `seq`.
    Update {
        epoch: u64,
        seq: u64,
        writes: Writes,
    },
    /// Successor → predecessor: the tail holds every write up to `seq`.
    Ack {
        epoch: u64,
        seq: u64,
    },
    /// Predecessor → a new successor: its whole state, at `seq`.
    Sync {
        epoch: u64,
        seq: u64,
        kv: Vec<(String, Value)>,
    },
    /// A successor holds a state at `seq` at least.
    SyncAck {
        epoch: u64,
        seq: u64,
    },
    /// Successor → predecessor: a gap or a restart; send the whole state.
    NeedSync {
        epoch: u64,
    },
    /// Any node → the tail: a read to answer from the committed state.
    Read {
        epoch: u64,
        fid: u64,
        op: Op,
    },
    ReadResp {
        fid: u64,
        reply: Reply,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    /// `joining` (the master's): appended nodes not yet known to hold their
    /// predecessor's state, which must not be all that is left; `removed`
    /// (the master's): nodes an admin took out, kept out until added back.
    Config {
        epoch: u64,
        chain: Vec<NodeId>,
        joining: Vec<NodeId>,
        removed: Vec<NodeId>,
    },
    Apply {
        seq: u64,
        writes: Writes,
    },
    /// The whole state at `seq`, replacing what was there.
    Install {
        seq: u64,
        kv: Vec<(String, Value)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Head,
    Middle,
    Tail,
    /// Head and tail at once: the only node of the chain.
    Single,
    /// Not in the chain (removed, or not yet told it was re-added).
    Out,
}

struct Waiting {
    client: ClientId,
    id: u64,
    result: Reply,
    deadline_ms: u64,
}

struct Forwarded {
    client: ClientId,
    id: u64,
    deadline_ms: u64,
}

pub struct Chain {
    id: NodeId,
    n: u32,
    opts: ChainOptions,
    epoch: u64,
    chain: Vec<NodeId>,
    kv: BTreeMap<String, Value>,
    /// The last write applied here.
    seq: u64,
    /// The last write known to be at the tail.
    acked: u64,
    /// Writes up to here came in a state transfer (or a restart): until
    /// they are acknowledged, no key here counts as clean.
    installed: u64,
    /// Applied here and sent down, not yet acknowledged by the tail.
    pending: BTreeMap<u64, Writes>,
    /// Updates that arrived ahead of a missing one (the network reorders).
    ahead: BTreeMap<u64, Writes>,
    /// This node holds its predecessor's state for the current epoch.
    synced: bool,
    /// The successor has acknowledged the state sent at its arrival.
    succ_synced: bool,
    /// The position of the last state sent to the successor.
    sync_sent_seq: u64,
    /// When the master's last ping arrived, by this node's clock.
    last_ping_ms: Option<u64>,
    waiting: BTreeMap<u64, Waiting>,
    forwarded: BTreeMap<u64, Forwarded>,
    next_fid: u64,
    next_tick_ms: u64,
    // Master state.
    last_pong_ms: BTreeMap<NodeId, u64>,
    joining: Vec<NodeId>,
    removed: Vec<NodeId>,
    /// `Add` requests answered once their node has joined: (admin, node, deadline).
    admin_waits: Vec<(ClientId, NodeId, u64)>,
    started_ms: Option<u64>,
}

type Input = protocol::Input<Msg>;
type Effect = protocol::Effect<Msg, WalRecord>;

fn send(to: NodeId, msg: Msg) -> Effect {
    Effect::Send { to, msg }
}

fn reply(client: ClientId, id: u64, reply: Reply) -> Effect {
    Effect::Reply {
        client,
        response: Response { id, reply },
    }
}

impl Chain {
    pub fn new(id: NodeId, n: u32, opts: ChainOptions, recovered: Vec<WalRecord>) -> Chain {
        let mut node = Chain {
            id,
            n,
            opts,
            epoch: 0,
            chain: (1..n.max(2)).collect(),
            kv: BTreeMap::new(),
            seq: 0,
            acked: 0,
            installed: 0,
            pending: BTreeMap::new(),
            ahead: BTreeMap::new(),
            synced: true,
            succ_synced: true,
            sync_sent_seq: 0,
            last_ping_ms: None,
            waiting: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            next_fid: 1,
            next_tick_ms: 0,
            last_pong_ms: BTreeMap::new(),
            joining: Vec::new(),
            removed: Vec::new(),
            admin_waits: Vec::new(),
            started_ms: None,
        };
        for rec in recovered {
            match rec {
                WalRecord::Config {
                    epoch,
                    chain,
                    joining,
                    removed,
                } => {
                    node.epoch = epoch;
                    node.chain = chain;
                    node.joining = joining;
                    node.removed = removed;
                }
                WalRecord::Apply { seq, writes } => {
                    node.kv.extend(writes);
                    node.seq = seq;
                }
                WalRecord::Install { seq, kv } => {
                    node.kv = kv.into_iter().collect();
                    node.seq = seq;
                }
            }
        }
        // What it held may be behind or ahead of its neighbours now: the
        // master re-adds it with a fresh state if it was removed meanwhile.
        node.synced = node.role() == Role::Head || node.role() == Role::Single;
        node.installed = node.seq;
        // What it had sent down and not seen acknowledged was not logged:
        // its successor gets its whole state instead.
        node.succ_synced = false;
        node
    }

    pub fn role(&self) -> Role {
        if self.id == MASTER {
            return Role::Master;
        }
        match self.chain.iter().position(|n| *n == self.id) {
            None => Role::Out,
            Some(_) if self.chain.len() == 1 => Role::Single,
            Some(0) => Role::Head,
            Some(i) if i + 1 == self.chain.len() => Role::Tail,
            Some(_) => Role::Middle,
        }
    }

    pub fn chain(&self) -> &[NodeId] {
        &self.chain
    }

    pub fn kv(&self) -> &BTreeMap<String, Value> {
        &self.kv
    }

    fn head(&self) -> Option<NodeId> {
        self.chain.first().copied()
    }

    fn tail(&self) -> Option<NodeId> {
        self.chain.last().copied()
    }

    fn neighbour(&self, offset: isize) -> Option<NodeId> {
        let i = self.chain.iter().position(|n| *n == self.id)? as isize + offset;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.chain.get(i))
            .copied()
    }

    fn is_tail(&self) -> bool {
        matches!(self.role(), Role::Tail | Role::Single)
    }

    fn is_head(&self) -> bool {
        matches!(self.role(), Role::Head | Role::Single)
    }

    /// Whether this node may answer clients: it holds a current lease from
    /// the master and its predecessor's state.
    fn serving(&self, now: u64) -> bool {
        let member = !matches!(self.role(), Role::Out | Role::Master);
        if !self.opts.epochs {
            return member;
        }
        self.synced
            && member
            && self
                .last_ping_ms
                .is_some_and(|t| now < t + self.opts.lease_ms)
    }

    fn epoch_ok(&self, epoch: u64) -> bool {
        !self.opts.epochs || epoch == self.epoch
    }

    fn dirty(&self, op: &Op) -> bool {
        if self.acked < self.installed {
            return true;
        }
        let keys = op.keys();
        self.pending
            .values()
            .any(|w| w.iter().any(|(k, _)| keys.contains(k)))
    }

    fn serve_local(&self, op: &Op) -> Reply {
        match apply_op_kv(op, &self.kv) {
            Ok((_, result)) => Reply::Ok(result),
            Err(refusal) => Reply::NotDone(refusal),
        }
    }

    fn not_head(&self) -> Reply {
        Reply::NotDone(Refusal::NotLeader {
            leader: self.head(),
        })
    }

    fn on_client(&mut self, now: u64, client: ClientId, req: Request, fx: &mut Vec<Effect>) {
        if req.op.is_read_only() {
            // A request may ask for any node's own state (a final read of each replica).
            let reads = match req.options.read_from {
                Some(ReadFrom::Any | ReadFrom::Followers) => ChainReads::Any,
                _ => self.opts.reads,
            };
            let local = match reads {
                ChainReads::Tail => self.is_tail(),
                ChainReads::Any => !self.dirty(&req.op),
            };
            if local && self.serving(now) {
                fx.push(reply(client, req.id, self.serve_local(&req.op)));
                return;
            }
            let Some(tail) = self.tail() else {
                fx.push(reply(client, req.id, self.not_head()));
                return;
            };
            let fid = self.next_fid;
            self.next_fid += 1;
            self.forwarded.insert(
                fid,
                Forwarded {
                    client,
                    id: req.id,
                    deadline_ms: now + self.opts.request_timeout_ms,
                },
            );
            let msg = Msg::Read {
                epoch: self.epoch,
                fid,
                op: req.op,
            };
            if tail == self.id {
                self.on_read(now, self.id, msg, fx);
            } else {
                fx.push(send(tail, msg));
            }
            return;
        }
        if !self.is_head() || !self.serving(now) {
            fx.push(reply(client, req.id, self.not_head()));
            return;
        }
        let (writes, result) = match apply_op_kv(&req.op, &self.kv) {
            Ok(done) => done,
            // Decided at the head, for every node: it did not happen.
            Err(refusal) => {
                fx.push(reply(client, req.id, Reply::NotDone(refusal)));
                return;
            }
        };
        let seq = self.seq + 1;
        self.waiting.insert(
            seq,
            Waiting {
                client,
                id: req.id,
                result: Reply::Ok(result),
                deadline_ms: now + self.opts.request_timeout_ms,
            },
        );
        self.take_update(seq, writes, fx);
    }

    fn apply(&mut self, seq: u64, writes: Writes, fx: &mut Vec<Effect>) {
        fx.push(Effect::Persist(WalRecord::Apply {
            seq,
            writes: writes.clone(),
        }));
        self.kv.extend(writes);
        self.seq = seq;
    }

    /// Everything up to `seq` is at the tail: answer its writers, tell the predecessor.
    fn commit(&mut self, seq: u64, fx: &mut Vec<Effect>) {
        self.pending.retain(|s, _| *s > seq);
        self.acked = self.acked.max(seq);
        let done: Vec<u64> = self.waiting.range(..=seq).map(|(s, _)| *s).collect();
        for s in done {
            if let Some(w) = self.waiting.remove(&s) {
                fx.push(reply(w.client, w.id, w.result));
            }
        }
        if let Some(prev) = self.neighbour(-1) {
            fx.push(send(
                prev,
                Msg::Ack {
                    epoch: self.epoch,
                    seq,
                },
            ));
        }
    }

    fn on_update(
        &mut self,
        from: NodeId,
        epoch: u64,
        seq: u64,
        writes: Writes,
        fx: &mut Vec<Effect>,
    ) {
        if !self.epoch_ok(epoch) || (self.opts.epochs && self.neighbour(-1) != Some(from)) {
            return;
        }
        if !self.synced {
            fx.push(send(from, Msg::NeedSync { epoch: self.epoch }));
            return;
        }
        if seq > self.seq + 1 {
            // Held until the missing ones arrive (the predecessor resends lost ones).
            if self.ahead.len() < MAX_AHEAD {
                self.ahead.insert(seq, writes);
            }
            return;
        }
        if seq <= self.seq {
            // A duplicate: the tail acknowledges it again.
            if self.is_tail() {
                self.commit(self.seq, fx);
            }
            return;
        }
        let mut next = Some(writes);
        let mut seq = seq;
        while let Some(writes) = next {
            self.take_update(seq, writes, fx);
            self.ahead.retain(|s, _| *s > seq);
            seq += 1;
            next = self.ahead.remove(&seq);
        }
    }

    fn take_update(&mut self, seq: u64, writes: Writes, fx: &mut Vec<Effect>) {
        self.apply(seq, writes.clone(), fx);
        if self.is_tail() {
            self.commit(seq, fx);
        } else {
            self.pending.insert(seq, writes.clone());
            if let Some(next) = self.neighbour(1) {
                fx.push(send(
                    next,
                    Msg::Update {
                        epoch: self.epoch,
                        seq,
                        writes,
                    },
                ));
            }
        }
    }

    fn on_ack(&mut self, from: NodeId, epoch: u64, seq: u64, fx: &mut Vec<Effect>) {
        if !self.epoch_ok(epoch) || (self.opts.epochs && self.neighbour(1) != Some(from)) {
            return;
        }
        if seq > self.seq {
            return;
        }
        self.commit(seq, fx);
    }

    fn on_sync(
        &mut self,
        from: NodeId,
        epoch: u64,
        seq: u64,
        kv: Vec<(String, Value)>,
        fx: &mut Vec<Effect>,
    ) {
        if !self.epoch_ok(epoch) || self.neighbour(-1) != Some(from) {
            return;
        }
        if self.synced && seq <= self.seq {
            fx.push(send(
                from,
                Msg::SyncAck {
                    epoch: self.epoch,
                    seq: self.seq,
                },
            ));
            if self.is_tail() {
                self.commit(self.seq, fx);
            }
            return;
        }
        fx.push(send(
            from,
            Msg::SyncAck {
                epoch: self.epoch,
                seq,
            },
        ));
        fx.push(Effect::Persist(WalRecord::Install {
            seq,
            kv: kv.clone(),
        }));
        self.kv = kv.into_iter().collect();
        self.seq = seq;
        self.installed = seq;
        self.synced = true;
        // What this node had sent on is replaced: its successor gets the new state.
        self.pending.clear();
        self.ahead.clear();
        if self.is_tail() {
            self.commit(seq, fx);
        } else {
            self.succ_synced = false;
            self.sync_successor(fx);
        }
    }

    fn sync_successor(&mut self, fx: &mut Vec<Effect>) {
        self.sync_sent_seq = self.seq;
        if let Some(next) = self.neighbour(1) {
            fx.push(send(
                next,
                Msg::Sync {
                    epoch: self.epoch,
                    seq: self.seq,
                    kv: self
                        .kv
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
            ));
        }
    }

    fn on_read(&mut self, now: u64, from: NodeId, msg: Msg, fx: &mut Vec<Effect>) {
        let Msg::Read { epoch, fid, op } = msg else {
            return;
        };
        let answer = if self.is_tail() && self.serving(now) && self.epoch_ok(epoch) {
            self.serve_local(&op)
        } else {
            Reply::NotDone(Refusal::NotLeader { leader: None })
        };
        if from == self.id {
            self.on_read_resp(fid, answer, fx);
        } else {
            fx.push(send(from, Msg::ReadResp { fid, reply: answer }));
        }
    }

    fn on_read_resp(&mut self, fid: u64, answer: Reply, fx: &mut Vec<Effect>) {
        if let Some(f) = self.forwarded.remove(&fid) {
            fx.push(reply(f.client, f.id, answer));
        }
    }

    /// A configuration from the master, newer than this node's.
    fn reconfigure(&mut self, epoch: u64, chain: Vec<NodeId>, fx: &mut Vec<Effect>) {
        let old_prev = self.neighbour(-1);
        let old_next = self.neighbour(1);
        let was_in = self.chain.contains(&self.id);
        self.epoch = epoch;
        self.chain = chain;
        self.ahead.clear();
        fx.push(Effect::Persist(WalRecord::Config {
            epoch,
            chain: self.chain.clone(),
            joining: Vec::new(),
            removed: Vec::new(),
        }));
        if self.role() == Role::Out {
            for (_, w) in std::mem::take(&mut self.waiting) {
                fx.push(reply(
                    w.client,
                    w.id,
                    Reply::Unknown(
                        "removed from the chain before the write was acknowledged".into(),
                    ),
                ));
            }
            self.pending.clear();
            self.synced = false;
            return;
        }
        if self.neighbour(-1).is_none() {
            // The master makes head only a node that held its predecessor's
            // state (never one still joining): what it has is the chain's.
            self.synced = true;
        } else if !was_in || self.neighbour(-1) != old_prev {
            // A new predecessor sends its state; until then this node waits.
            self.synced = false;
        }
        if !self.synced {
            return;
        }
        if self.is_tail() {
            // Whatever was on its way to a removed tail is at the tail now.
            self.commit(self.seq, fx);
        } else if self.neighbour(1) != old_next || !was_in {
            self.succ_synced = false;
            self.sync_successor(fx);
        }
    }

    fn on_ping(&mut self, now: u64, epoch: u64, chain: Vec<NodeId>, fx: &mut Vec<Effect>) {
        if epoch < self.epoch {
            return;
        }
        if epoch > self.epoch {
            self.reconfigure(epoch, chain, fx);
        }
        self.last_ping_ms = Some(now);
        fx.push(send(
            MASTER,
            Msg::Pong {
                epoch: self.epoch,
                synced: self.synced,
            },
        ));
    }

    fn master_tick(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let started = *self.started_ms.get_or_insert(now);
        let silent: Vec<NodeId> = self
            .chain
            .iter()
            .copied()
            .filter(|n| {
                let heard = self.last_pong_ms.get(n).copied().unwrap_or(started);
                now >= heard + self.opts.failure_timeout_ms
            })
            .collect();
        let mut changed = false;
        for n in silent {
            // The head after the change must hold the committed writes: one
            // still joining does not, and the last node is kept, however silent.
            let rest: Vec<NodeId> = self.chain.iter().copied().filter(|c| *c != n).collect();
            if rest.first().is_some_and(|h| !self.joining.contains(h)) {
                self.chain = rest;
                self.joining.retain(|j| *j != n);
                changed = true;
            }
        }
        if changed {
            self.new_epoch(fx);
        }
        self.answer_admins(now, fx);
        let ping = Msg::Ping {
            epoch: self.epoch,
            chain: self.chain.clone(),
        };
        for n in 1..self.n {
            fx.push(send(n, ping.clone()));
        }
    }

    fn new_epoch(&mut self, fx: &mut Vec<Effect>) {
        self.epoch += 1;
        self.persist_config(fx);
    }

    fn persist_config(&self, fx: &mut Vec<Effect>) {
        fx.push(Effect::Persist(WalRecord::Config {
            epoch: self.epoch,
            chain: self.chain.clone(),
            joining: self.joining.clone(),
            removed: self.removed.clone(),
        }));
    }

    fn membership(&self) -> Membership {
        Membership {
            members: self.chain.clone(),
            joining: self.joining.clone(),
        }
    }

    fn on_admin_op(&mut self, now: u64, admin: ClientId, op: AdminOp, fx: &mut Vec<Effect>) {
        let answer = |reply: AdminReply| Effect::AdminReply { admin, reply };
        if self.id != MASTER {
            fx.push(answer(AdminReply::NotLeader {
                leader: Some(MASTER),
            }));
            return;
        }
        let node = match op {
            AdminOp::Members => {
                fx.push(answer(AdminReply::Members(self.membership())));
                return;
            }
            AdminOp::Remove(n) | AdminOp::Add(n) => n,
            AdminOp::Partitions | AdminOp::Rebalance(_) | AdminOp::Settle => {
                fx.push(answer(AdminReply::Refused(
                    "this cluster is not sharded".into(),
                )));
                return;
            }
        };
        if node == MASTER || node >= self.n {
            fx.push(answer(AdminReply::Refused(format!(
                "node {node} is not a chain node (node {MASTER} is the master)"
            ))));
            return;
        }
        if let AdminOp::Add(_) = op {
            if self.removed.contains(&node) {
                self.removed.retain(|r| *r != node);
                self.persist_config(fx);
            }
            if self.chain.contains(&node) && !self.joining.contains(&node) {
                fx.push(answer(AdminReply::Members(self.membership())));
            } else {
                let deadline = now + 10 * self.opts.failure_timeout_ms.max(1_000);
                self.admin_waits.push((admin, node, deadline));
            }
            return;
        }
        if self.chain.contains(&node) {
            // The same rule as for a silent node: the head after the change
            // must hold the committed writes, and one node is always left.
            let rest: Vec<NodeId> = self.chain.iter().copied().filter(|c| *c != node).collect();
            match rest.first() {
                None => {
                    fx.push(answer(AdminReply::Refused(
                        "the last chain node cannot be removed".into(),
                    )));
                    return;
                }
                Some(h) if self.joining.contains(h) => {
                    fx.push(answer(AdminReply::Refused(
                        "the next head is still catching up; try again".into(),
                    )));
                    return;
                }
                Some(_) => {}
            }
            self.chain = rest;
            self.joining.retain(|j| *j != node);
            if !self.removed.contains(&node) {
                self.removed.push(node);
            }
            self.new_epoch(fx);
        } else if !self.removed.contains(&node) {
            self.removed.push(node);
            self.persist_config(fx);
        }
        fx.push(answer(AdminReply::Members(self.membership())));
    }

    /// Answers the `Add` requests whose node has joined, and the late ones.
    fn answer_admins(&mut self, now: u64, fx: &mut Vec<Effect>) {
        if self.admin_waits.is_empty() {
            return;
        }
        let m = self.membership();
        for (admin, node, deadline) in std::mem::take(&mut self.admin_waits) {
            let reply = if m.members.contains(&node) && !m.joining.contains(&node) {
                AdminReply::Members(m.clone())
            } else if deadline <= now {
                AdminReply::Unknown("the node has not joined the chain yet".into())
            } else {
                self.admin_waits.push((admin, node, deadline));
                continue;
            };
            fx.push(Effect::AdminReply { admin, reply });
        }
    }

    fn on_pong(&mut self, now: u64, from: NodeId, epoch: u64, synced: bool, fx: &mut Vec<Effect>) {
        self.last_pong_ms.insert(from, now);
        if !self.chain.contains(&from)
            && !self.removed.contains(&from)
            && from != MASTER
            && from < self.n
        {
            // Back: it joins at the tail, from the old tail's state.
            self.chain.push(from);
            self.joining.push(from);
            self.new_epoch(fx);
        } else if synced && epoch == self.epoch && self.joining.contains(&from) {
            self.joining.retain(|j| *j != from);
            self.persist_config(fx);
            self.answer_admins(now, fx);
        }
    }

    fn member_tick(&mut self, now: u64, fx: &mut Vec<Effect>) {
        if !self.synced {
            if let Some(prev) = self.neighbour(-1) {
                fx.push(send(prev, Msg::NeedSync { epoch: self.epoch }));
            }
        }
        // Resend what the successor has not acknowledged (messages get lost).
        if let Some(next) = self.neighbour(1) {
            if !self.succ_synced {
                if self.synced {
                    self.sync_successor(fx);
                }
            } else {
                for (seq, writes) in self.pending.iter().take(MAX_RESEND) {
                    fx.push(send(
                        next,
                        Msg::Update {
                            epoch: self.epoch,
                            seq: *seq,
                            writes: writes.clone(),
                        },
                    ));
                }
            }
        }
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now)
            .map(|(s, _)| *s)
            .collect();
        for s in late {
            if let Some(w) = self.waiting.remove(&s) {
                fx.push(reply(
                    w.client,
                    w.id,
                    Reply::Unknown("the tail did not acknowledge the write in time".into()),
                ));
            }
        }
    }

    fn expire_reads(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let late: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.deadline_ms <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in late {
            if let Some(f) = self.forwarded.remove(&i) {
                // A read that was not answered had no effect.
                fx.push(reply(
                    f.client,
                    f.id,
                    Reply::NotDone(Refusal::NotLeader { leader: None }),
                ));
            }
        }
    }
}

impl Protocol for Chain {
    type Msg = Msg;
    type Record = WalRecord;

    fn from_config(
        cfg: &ClusterConfig,
        node: NodeId,
        _seed: u64,
        recovered: Vec<WalRecord>,
    ) -> Self {
        Chain::new(node, cfg.nodes.len() as u32, cfg.chain.clone(), recovered)
    }

    fn has_membership(_cfg: &ClusterConfig) -> bool {
        true
    }

    fn on_admin(&mut self, now_ms: u64, admin: ClientId, op: AdminOp) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.on_admin_op(now_ms, admin, op, &mut fx);
        fx
    }

    fn has_leader(_cfg: &ClusterConfig) -> bool {
        true
    }

    fn refuse_node_count(nodes: usize) -> Option<String> {
        (nodes < 2).then(|| {
            format!("chain replication needs at least 2 nodes (the master and a chain node), not {nodes}")
        })
    }

    fn read_from(cfg: &ClusterConfig) -> Option<ReadFrom> {
        Some(match cfg.chain.reads {
            ChainReads::Tail => ReadFrom::Leader,
            ChainReads::Any => ReadFrom::Any,
        })
    }

    fn describe(cfg: &ClusterConfig) -> String {
        format!(
            "chain (node n1 the master; reads at {}; epoch checks {})",
            match cfg.chain.reads {
                ChainReads::Tail => "the tail",
                ChainReads::Any => "any node, CRAQ",
            },
            if cfg.chain.epochs { "on" } else { "off" }
        )
    }

    fn step(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Tick => {
                if now_ms >= self.next_tick_ms {
                    self.next_tick_ms = now_ms + self.opts.heartbeat_ms;
                    if self.id == MASTER {
                        self.master_tick(now_ms, &mut fx);
                    } else {
                        self.member_tick(now_ms, &mut fx);
                    }
                }
                self.expire_reads(now_ms, &mut fx);
            }
            Input::Flush => {}
            Input::Client { client, request } => self.on_client(now_ms, client, request, &mut fx),
            Input::Peer { from, msg } => match msg {
                Msg::Ping { epoch, chain } if from == MASTER && self.id != MASTER => {
                    self.on_ping(now_ms, epoch, chain, &mut fx)
                }
                Msg::Ping { .. } => {}
                Msg::Pong { epoch, synced } if self.id == MASTER => {
                    self.on_pong(now_ms, from, epoch, synced, &mut fx)
                }
                Msg::Pong { .. } => {}
                Msg::Update { epoch, seq, writes } => {
                    self.on_update(from, epoch, seq, writes, &mut fx)
                }
                Msg::Ack { epoch, seq } => self.on_ack(from, epoch, seq, &mut fx),
                Msg::Sync { epoch, seq, kv } => self.on_sync(from, epoch, seq, kv, &mut fx),
                Msg::SyncAck { epoch, seq } => {
                    if self.epoch_ok(epoch)
                        && self.neighbour(1) == Some(from)
                        && seq >= self.sync_sent_seq
                    {
                        self.succ_synced = true;
                    }
                }
                Msg::NeedSync { epoch } => {
                    if self.epoch_ok(epoch) && self.neighbour(1) == Some(from) && self.synced {
                        self.succ_synced = false;
                    }
                }
                msg @ Msg::Read { .. } => self.on_read(now_ms, from, msg, &mut fx),
                Msg::ReadResp { fid, reply } => self.on_read_resp(fid, reply, &mut fx),
            },
        }
        fx
    }

    fn status(&self) -> CoreStatus {
        CoreStatus {
            // The head takes the writes: it is what a harness calls the leader.
            role: match self.role() {
                Role::Master => "master",
                Role::Head | Role::Single => "leader",
                Role::Middle => "middle",
                Role::Tail => "tail",
                Role::Out => "out",
            }
            .into(),
            epoch: self.epoch,
            leader: self.head(),
            keys: self.kv.len() as u64,
            commit_index: self.seq - self.pending.len() as u64,
            last_index: self.seq,
        }
    }

    fn data_digest(&self) -> Option<u64> {
        (self.id != MASTER).then(|| crate::seeded::stable_hash(&crate::codec::encode(&self.kv)))
    }

    fn snapshot_records(&self) -> Vec<WalRecord> {
        vec![
            WalRecord::Config {
                epoch: self.epoch,
                chain: self.chain.clone(),
                joining: self.joining.clone(),
                removed: self.removed.clone(),
            },
            WalRecord::Install {
                seq: self.seq,
                kv: self
                    .kv
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
        ]
    }
}
