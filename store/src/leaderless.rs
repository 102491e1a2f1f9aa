//! Leaderless (Dynamo-style) replication: a consistent-hash ring with virtual
//! nodes gives each key a preference list of N replicas; the node a client
//! talks to coordinates, waiting for R reads or W write acks. Sloppy quorums
//! with hinted handoff, read repair and Merkle-tree anti-entropy are switchable;
//! conflicts resolve by last-write-wins on the coordinator's clock or are kept
//! as siblings under dotted version vectors (each version's own write event
//! apart from the events it supersedes, so that concurrent writes through one
//! coordinator stay siblings too). Transactions are per-key operations
//! without isolation, as in the real systems.

use crate::codec::encode;
use crate::config::{ClusterConfig, Conflict, LeaderlessOptions};
use crate::msg::{apply_op, NodeId, Op, OpResult, Refusal, Reply, Request, Response, Value};
use crate::protocol::{self, ClientId, CoreStatus, Protocol};
use crate::quorum;
use crate::seeded::stable_hash;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Leaves (key buckets) of the anti-entropy Merkle tree, a binary tree of this
/// depth over them; replicas compare it top-down, one level per message.
const MERKLE_DEPTH: usize = 8;
const MERKLE_LEAVES: u64 = 1 << MERKLE_DEPTH;

/// One write event: the coordinating node and its counter for the key.
pub type Dot = (NodeId, u64);

/// A set of dots: per node, every counter from 1 up to `upto`, and the
/// `extra` dots beyond a gap (events a reader saw without their
/// predecessors). Kept compact, with no extra dot at or right after its
/// node's `upto`, so that equal sets encode, and hash, alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dots {
    upto: BTreeMap<NodeId, u64>,
    extra: BTreeSet<Dot>,
}

impl Dots {
    pub fn contains(&self, (node, counter): Dot) -> bool {
        counter <= self.upto.get(&node).copied().unwrap_or(0)
            || self.extra.contains(&(node, counter))
    }

    pub fn insert(&mut self, dot: Dot) {
        if !self.contains(dot) {
            self.extra.insert(dot);
            self.compact(dot.0);
        }
    }

    pub fn union(&mut self, other: &Dots) {
        for (node, upto) in &other.upto {
            let mine = self.upto.entry(*node).or_insert(0);
            *mine = (*mine).max(*upto);
        }
        self.extra.extend(other.extra.iter().copied());
        let nodes: BTreeSet<NodeId> = other
            .upto
            .keys()
            .copied()
            .chain(other.extra.iter().map(|d| d.0))
            .collect();
        for node in nodes {
            self.compact(node);
        }
    }

    /// The highest counter of `node` in the set (0: none).
    pub fn max_of(&self, node: NodeId) -> u64 {
        let extra = self
            .extra
            .range((node, 0)..=(node, u64::MAX))
            .next_back()
            .map_or(0, |d| d.1);
        self.upto.get(&node).copied().unwrap_or(0).max(extra)
    }

    /// Folds `node`'s extra dots that `upto` covers or continues into it.
    fn compact(&mut self, node: NodeId) {
        let mut upto = self.upto.get(&node).copied().unwrap_or(0);
        let extra: Vec<u64> = self
            .extra
            .range((node, 0)..=(node, u64::MAX))
            .map(|d| d.1)
            .collect();
        for counter in extra {
            if counter > upto + 1 {
                break;
            }
            self.extra.remove(&(node, counter));
            upto = upto.max(counter);
        }
        if upto > 0 {
            self.upto.insert(node, upto);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Clock {
    /// Coordinator timestamp in microseconds, ties broken by node.
    Lww { ts: u64, node: NodeId },
    /// A plain version vector, as logs of older builds hold it; recovery
    /// turns it into `Dotted`. It cannot tell two concurrent writes through
    /// one coordinator apart from one superseding the other.
    Vv(BTreeMap<NodeId, u64>),
    /// A dotted version vector: the write's own event, kept apart from the
    /// events it has `seen` and so supersedes. A version is obsolete exactly
    /// when another one has seen its dot.
    Dotted { dot: Dot, seen: Dots },
}

impl Clock {
    /// A legacy vector as a dotted one with the same history: its highest
    /// entry becomes the dot.
    fn upgrade(self) -> Clock {
        let Clock::Vv(vv) = self else { return self };
        let Some((node, counter)) = vv
            .iter()
            .map(|(n, c)| (*n, *c))
            .filter(|(_, c)| *c > 0)
            .max_by_key(|(n, c)| (*c, std::cmp::Reverse(*n)))
        else {
            return Clock::Vv(vv);
        };
        let mut seen = Dots::default();
        for (n, c) in vv {
            let upto = if n == node { c - 1 } else { c };
            if upto > 0 {
                seen.upto.insert(n, upto);
            }
        }
        Clock::Dotted {
            dot: (node, counter),
            seen,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Value,
    pub clock: Clock,
}

/// Recovered versions with any legacy clocks upgraded.
fn upgrade(versions: Vec<Versioned>) -> Vec<Versioned> {
    let mut out: Vec<Versioned> = versions
        .into_iter()
        .map(|v| Versioned {
            value: v.value,
            clock: v.clock.upgrade(),
        })
        .collect();
    sort_versions(&mut out);
    out
}

pub type Items = Vec<(String, Vec<Versioned>)>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Read {
        req: u64,
        key: String,
    },
    ReadResp {
        req: u64,
        key: String,
        versions: Vec<Versioned>,
    },
    /// `req == 0` asks for no acknowledgement (read repair).
    Write {
        req: u64,
        key: String,
        versions: Vec<Versioned>,
        hint_for: Option<NodeId>,
    },
    WriteAck {
        req: u64,
        key: String,
    },
    Handoff {
        key: String,
        versions: Vec<Versioned>,
    },
    /// `digest` names the versions handed off: the hint is done only if it
    /// has not grown since.
    HandoffAck {
        key: String,
        digest: u64,
    },
    Ping,
    Pong,
    /// The sender's hashes of some tree nodes at `level` (0 = leaves).
    MerkleProbe {
        level: u8,
        hashes: Vec<(u64, u64)>,
    },
    MerkleDiff {
        buckets: Vec<u64>,
        items: Items,
    },
    MerkleItems {
        items: Items,
    },
    /// Every key under `prefix` this node stores (a sharded store's copy of a partition).
    Scan {
        req: u64,
        prefix: String,
    },
    ScanResp {
        req: u64,
        entries: Vec<(String, Vec<Versioned>)>,
    },
}

/// A scan in progress: it asks every node, as a key's replicas may be any of them.
struct Scan {
    client: ClientId,
    request_id: u64,
    answered: BTreeSet<NodeId>,
    merged: BTreeMap<String, Vec<Versioned>>,
    deadline_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    Key {
        key: String,
        versions: Vec<Versioned>,
    },
    Hint {
        for_node: NodeId,
        key: String,
        versions: Vec<Versioned>,
    },
    HintDone {
        for_node: NodeId,
        key: String,
    },
    /// This node's dot counter for a key it coordinates without storing, so
    /// that it never issues a dot twice.
    Counter {
        key: String,
        counter: u64,
    },
}

fn versions_digest(versions: &[Versioned]) -> u64 {
    stable_hash(&encode(&versions))
}

fn dot_of(v: &Versioned) -> Option<Dot> {
    match &v.clock {
        Clock::Dotted { dot, .. } => Some(*dot),
        _ => None,
    }
}

fn has_seen(v: &Versioned, dot: Dot) -> bool {
    matches!(&v.clock, Clock::Dotted { seen, .. } if seen.contains(dot))
}

/// The highest counter of `node` in the versions' dots and histories.
fn max_counter(versions: &[Versioned], node: NodeId) -> u64 {
    versions
        .iter()
        .filter_map(|v| match &v.clock {
            Clock::Dotted { dot, seen } => {
                let own = if dot.0 == node { dot.1 } else { 0 };
                Some(own.max(seen.max_of(node)))
            }
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Merges `incoming` into `existing`; returns whether anything changed.
pub fn merge_versions(
    conflict: Conflict,
    existing: &mut Vec<Versioned>,
    incoming: &[Versioned],
) -> bool {
    match conflict {
        Conflict::Lww => {
            let before = existing.clone();
            let best = existing
                .iter()
                .chain(incoming)
                .max_by(|a, b| match (&a.clock, &b.clock) {
                    (Clock::Lww { ts: ta, node: na }, Clock::Lww { ts: tb, node: nb }) => {
                        (ta, na, &a.value).cmp(&(tb, nb, &b.value))
                    }
                    _ => a.cmp(b),
                });
            if let Some(best) = best.cloned() {
                *existing = vec![best];
            }
            *existing != before
        }
        Conflict::VersionVectors => {
            // Sibling sets are whole values each: compare and copy them as little as possible.
            let mut changed = false;
            for inc in incoming {
                let Some(dot) = dot_of(inc) else { continue };
                if existing.iter().any(|e| has_seen(e, dot)) {
                    continue;
                }
                match existing.iter_mut().find(|e| dot_of(e) == Some(dot)) {
                    // One dot is one write; should two copies ever differ,
                    // every replica keeps the same one.
                    Some(e) => {
                        if *inc > *e {
                            *e = inc.clone();
                            changed = true;
                        }
                    }
                    None => {
                        existing.push(inc.clone());
                        changed = true;
                    }
                }
            }
            let obsolete: Vec<bool> = existing
                .iter()
                .map(|v| dot_of(v).is_none_or(|dot| existing.iter().any(|o| has_seen(o, dot))))
                .collect();
            if obsolete.contains(&true) {
                let mut i = 0;
                existing.retain(|_| {
                    i += 1;
                    !obsolete[i - 1]
                });
                changed = true;
            }
            if changed {
                sort_versions(existing);
            }
            changed
        }
    }
}

/// The one order every replica keeps siblings in: by clock, which is unique per version.
fn sort_versions(versions: &mut [Versioned]) {
    versions.sort_by(|a, b| a.clock.cmp(&b.clock).then_with(|| a.value.cmp(&b.value)));
}

/// One value for read-modify-write from possibly several siblings: sets merge,
/// otherwise the greatest value wins.
fn resolve(versions: &[Versioned]) -> Option<Value> {
    if versions.len() > 1 && versions.iter().all(|v| matches!(v.value, Value::Set(_))) {
        let mut all = BTreeSet::new();
        for v in versions {
            if let Value::Set(s) = &v.value {
                all.extend(s.iter().copied());
            }
        }
        return Some(Value::Set(all));
    }
    versions.iter().map(|v| &v.value).max().cloned()
}

#[derive(PartialEq, Eq)]
enum Phase {
    Read,
    Write,
    /// Replied; kept a while to repair replicas that answer late.
    Done,
}

struct KeyState {
    key: String,
    targets: Vec<(NodeId, Option<NodeId>)>,
    read_resps: Vec<(NodeId, Vec<Versioned>)>,
    merged: Vec<Versioned>,
    new_versions: Option<Vec<Versioned>>,
    acks: BTreeSet<NodeId>,
}

struct Pending {
    client: ClientId,
    request_id: u64,
    op: Op,
    phase: Phase,
    keys: Vec<KeyState>,
    r: usize,
    w: usize,
    result: Option<OpResult>,
    deadline_ms: u64,
}

pub struct Leaderless {
    id: NodeId,
    n: u32,
    opts: LeaderlessOptions,
    ring: Vec<(u64, NodeId)>,
    started_ms: Option<u64>,
    store: BTreeMap<String, Vec<Versioned>>,
    hints: BTreeMap<(NodeId, String), Vec<Versioned>>,
    last_heard_ms: BTreeMap<NodeId, u64>,
    pending: BTreeMap<u64, Pending>,
    scans: BTreeMap<u64, Scan>,
    next_req: u64,
    last_ts_us: u64,
    /// Per key, the highest dot counter this node has issued.
    counters: BTreeMap<String, u64>,
    next_ping_ms: u64,
    next_anti_entropy_ms: u64,
    anti_entropy_peer: u32,
}

type Input = protocol::Input<Msg>;
type Effect = protocol::Effect<Msg, WalRecord>;

fn send(to: NodeId, msg: Msg) -> Effect {
    Effect::Send { to, msg }
}

fn persist(rec: WalRecord) -> Effect {
    Effect::Persist(rec)
}

impl Leaderless {
    pub fn new(id: NodeId, n: u32, opts: LeaderlessOptions, recovered: Vec<WalRecord>) -> Self {
        let mut ring = Vec::new();
        for node in 0..n {
            for v in 0..opts.vnodes.max(1) {
                ring.push((
                    stable_hash(format!("node-{node}-vnode-{v}").as_bytes()),
                    node,
                ));
            }
        }
        ring.sort_unstable();
        let mut me = Leaderless {
            id,
            n,
            opts,
            ring,
            started_ms: None,
            store: BTreeMap::new(),
            hints: BTreeMap::new(),
            last_heard_ms: BTreeMap::new(),
            pending: BTreeMap::new(),
            scans: BTreeMap::new(),
            next_req: 1,
            last_ts_us: 0,
            counters: BTreeMap::new(),
            next_ping_ms: 0,
            next_anti_entropy_ms: 0,
            anti_entropy_peer: 0,
        };
        for rec in recovered {
            match rec {
                WalRecord::Key { key, versions } => {
                    let versions = upgrade(versions);
                    me.note_clocks(&key, &versions);
                    me.store.insert(key, versions);
                }
                WalRecord::Hint {
                    for_node,
                    key,
                    versions,
                } => {
                    let versions = upgrade(versions);
                    me.note_clocks(&key, &versions);
                    me.hints.insert((for_node, key), versions);
                }
                WalRecord::HintDone { for_node, key } => {
                    me.hints.remove(&(for_node, key));
                }
                WalRecord::Counter { key, counter } => me.note_counter(&key, counter),
            }
        }
        me
    }

    /// Keeps our own counters ahead of anything we issued before a restart.
    fn note_clocks(&mut self, key: &str, versions: &[Versioned]) {
        for v in versions {
            if let Clock::Lww { ts, node } = &v.clock {
                if *node == self.id {
                    self.last_ts_us = self.last_ts_us.max(*ts);
                }
            }
        }
        self.note_counter(key, max_counter(versions, self.id));
    }

    fn note_counter(&mut self, key: &str, counter: u64) {
        if counter > self.counters.get(key).copied().unwrap_or(0) {
            self.counters.insert(key.to_string(), counter);
        }
    }

    /// All nodes in ring order from the key's position; the first N are its preference list.
    pub fn ring_order(&self, key: &str) -> Vec<NodeId> {
        let h = stable_hash(key.as_bytes());
        let start = self.ring.partition_point(|(p, _)| *p < h);
        let mut order = Vec::new();
        for i in 0..self.ring.len() {
            let node = self.ring[(start + i) % self.ring.len()].1;
            if !order.contains(&node) {
                order.push(node);
                if order.len() == self.n as usize {
                    break;
                }
            }
        }
        order
    }

    pub fn preference_list(&self, key: &str) -> Vec<NodeId> {
        let mut order = self.ring_order(key);
        order.truncate(self.opts.n.max(1) as usize);
        order
    }

    fn healthy(&self, node: NodeId, now: u64) -> bool {
        if node == self.id {
            return true;
        }
        let since = self
            .last_heard_ms
            .get(&node)
            .copied()
            .unwrap_or(0)
            .max(self.started_ms.unwrap_or(0));
        now < since + self.opts.failure_timeout_ms
    }

    fn targets(&self, key: &str, now: u64) -> Vec<(NodeId, Option<NodeId>)> {
        quorum::targets(
            &self.ring_order(key),
            self.opts.n.max(1) as usize,
            self.opts.sloppy_quorum,
            |p| self.healthy(p, now),
        )
    }

    fn local_write(
        &mut self,
        key: &str,
        versions: &[Versioned],
        hint_for: Option<NodeId>,
        fx: &mut Vec<Effect>,
    ) {
        let conflict = self.opts.conflict;
        let slot = self.store.entry(key.to_string()).or_default();
        if merge_versions(conflict, slot, versions) {
            let versions = slot.clone();
            fx.push(persist(WalRecord::Key {
                key: key.to_string(),
                versions,
            }));
        }
        if let (Some(node), true) = (hint_for, self.opts.hinted_handoff) {
            let slot = self.hints.entry((node, key.to_string())).or_default();
            if merge_versions(conflict, slot, versions) {
                let versions = slot.clone();
                fx.push(persist(WalRecord::Hint {
                    for_node: node,
                    key: key.to_string(),
                    versions,
                }));
            }
        }
    }

    /// A new version of `key` that supersedes `context`, the versions it was
    /// computed from, and nothing else.
    fn new_version(
        &mut self,
        now: u64,
        key: &str,
        value: Value,
        context: &[Versioned],
        fx: &mut Vec<Effect>,
    ) -> Versioned {
        match self.opts.conflict {
            Conflict::Lww => {
                self.last_ts_us = (now * 1000).max(self.last_ts_us + 1);
                Versioned {
                    value,
                    clock: Clock::Lww {
                        ts: self.last_ts_us,
                        node: self.id,
                    },
                }
            }
            Conflict::VersionVectors => {
                // The history is exactly what was read. A plain vector with
                // our entry bumped would also claim our own concurrent writes
                // this read never saw, and drop their values.
                let mut seen = Dots::default();
                for v in context {
                    if let Clock::Dotted { dot, seen: s } = &v.clock {
                        seen.union(s);
                        seen.insert(*dot);
                    }
                }
                let local = self.store.get(key).map_or(0, |vs| max_counter(vs, self.id));
                let counter = self
                    .counters
                    .get(key)
                    .copied()
                    .unwrap_or(0)
                    .max(seen.max_of(self.id))
                    .max(local)
                    + 1;
                self.counters.insert(key.to_string(), counter);
                if !self.preference_list(key).contains(&self.id) {
                    // No stored version will carry the dot across a restart.
                    fx.push(persist(WalRecord::Counter {
                        key: key.to_string(),
                        counter,
                    }));
                }
                Versioned {
                    value,
                    clock: Clock::Dotted {
                        dot: (self.id, counter),
                        seen,
                    },
                }
            }
        }
    }

    fn local_entries(&self, prefix: &str) -> Vec<(String, Vec<Versioned>)> {
        self.store
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn start_scan(
        &mut self,
        now: u64,
        client: ClientId,
        req: &Request,
        prefix: &str,
        fx: &mut Vec<Effect>,
    ) {
        let id = self.next_req;
        self.next_req += 1;
        let mut scan = Scan {
            client,
            request_id: req.id,
            answered: BTreeSet::from([self.id]),
            merged: BTreeMap::new(),
            deadline_ms: now + self.opts.request_timeout_ms,
        };
        for (k, v) in self.local_entries(prefix) {
            merge_versions(self.opts.conflict, scan.merged.entry(k).or_default(), &v);
        }
        for peer in (0..self.n).filter(|p| *p != self.id) {
            fx.push(send(
                peer,
                Msg::Scan {
                    req: id,
                    prefix: prefix.to_string(),
                },
            ));
        }
        self.scans.insert(id, scan);
        self.finish_scan(id, fx);
    }

    /// Answers a scan once every node has: siblings resolve as for a read-modify-write.
    fn finish_scan(&mut self, id: u64, fx: &mut Vec<Effect>) {
        if self
            .scans
            .get(&id)
            .is_none_or(|s| s.answered.len() < self.n as usize)
        {
            return;
        }
        if let Some(s) = self.scans.remove(&id) {
            let entries = s
                .merged
                .iter()
                .filter_map(|(k, vs)| resolve(vs).map(|v| (k.clone(), v)))
                .collect();
            fx.push(Effect::Reply {
                client: s.client,
                response: Response {
                    id: s.request_id,
                    reply: Reply::Ok(OpResult::Entries(entries)),
                },
            });
        }
    }

    fn on_client(&mut self, now: u64, client: ClientId, req: Request, fx: &mut Vec<Effect>) {
        if let Op::Scan { prefix } = &req.op {
            let prefix = prefix.clone();
            return self.start_scan(now, client, &req, &prefix, fx);
        }
        let n = self.opts.n.max(1) as usize;
        let r = req
            .options
            .r
            .map_or(self.opts.r as usize, usize::from)
            .clamp(1, n);
        let w = req
            .options
            .w
            .map_or(self.opts.w as usize, usize::from)
            .clamp(1, n);
        let req_id = self.next_req;
        self.next_req += 1;
        let keys = req
            .op
            .keys()
            .into_iter()
            .map(|key| KeyState {
                targets: self.targets(&key, now),
                key,
                read_resps: Vec::new(),
                merged: Vec::new(),
                new_versions: None,
                acks: BTreeSet::new(),
            })
            .collect();
        let blind = req
            .op
            .micro_ops()
            .iter()
            .all(|m| matches!(m, Op::Put { .. }));
        let mut p = Pending {
            client,
            request_id: req.id,
            op: req.op,
            phase: Phase::Read,
            keys,
            r,
            w,
            result: None,
            deadline_ms: now + self.opts.request_timeout_ms,
        };
        if blind {
            // Blind puts skip the read; their context is this node's own copy.
            let (writes, result) = match apply_op(&p.op, |_| None) {
                Ok(x) => x,
                Err(refusal) => {
                    fx.push(Effect::Reply {
                        client,
                        response: Response {
                            id: p.request_id,
                            reply: Reply::NotDone(refusal),
                        },
                    });
                    return;
                }
            };
            for (key, value) in writes {
                let context = self.store.get(&key).cloned().unwrap_or_default();
                let v = self.new_version(now, &key, value, &context, fx);
                if let Some(ks) = p.keys.iter_mut().find(|k| k.key == key) {
                    ks.new_versions = Some(vec![v]);
                }
            }
            p.result = Some(result);
            p.phase = Phase::Write;
            self.pending.insert(req_id, p);
            self.send_writes(req_id, fx);
        } else {
            let mut local = Vec::new();
            for ks in &p.keys {
                for (t, _) in &ks.targets {
                    if *t == self.id {
                        local.push(ks.key.clone());
                    } else {
                        fx.push(send(
                            *t,
                            Msg::Read {
                                req: req_id,
                                key: ks.key.clone(),
                            },
                        ));
                    }
                }
            }
            self.pending.insert(req_id, p);
            for key in local {
                let versions = self.store.get(&key).cloned().unwrap_or_default();
                self.on_read_resp(now, self.id, req_id, key, versions, fx);
            }
        }
    }

    fn send_writes(&mut self, req_id: u64, fx: &mut Vec<Effect>) {
        let Some(p) = self.pending.get(&req_id) else {
            return;
        };
        let mut local = Vec::new();
        for ks in &p.keys {
            let Some(versions) = &ks.new_versions else {
                continue;
            };
            for (t, hint) in &ks.targets {
                if *t == self.id {
                    local.push((ks.key.clone(), versions.clone(), *hint));
                } else {
                    fx.push(send(
                        *t,
                        Msg::Write {
                            req: req_id,
                            key: ks.key.clone(),
                            versions: versions.clone(),
                            hint_for: *hint,
                        },
                    ));
                }
            }
        }
        for (key, versions, hint) in local {
            self.local_write(&key, &versions, hint, fx);
            self.on_write_ack(self.id, req_id, key, fx);
        }
    }

    fn finish(&mut self, req_id: u64, reply: Reply, fx: &mut Vec<Effect>) {
        if let Some(p) = self.pending.get_mut(&req_id) {
            p.phase = Phase::Done;
            fx.push(Effect::Reply {
                client: p.client,
                response: Response {
                    id: p.request_id,
                    reply,
                },
            });
        }
        self.maybe_forget(req_id);
    }

    fn maybe_forget(&mut self, req_id: u64) {
        if let Some(p) = self.pending.get(&req_id) {
            let all_in = p.keys.iter().all(|k| k.read_resps.len() >= k.targets.len());
            if p.phase == Phase::Done && (all_in || !self.opts.read_repair) {
                self.pending.remove(&req_id);
            }
        }
    }

    /// Brings replica `to` up to what the read merged. Only for replicas that
    /// answered something else: the merge holds their answer, so they lack something.
    fn repair(&mut self, key: &str, merged: &[Versioned], to: NodeId, fx: &mut Vec<Effect>) {
        if !self.opts.read_repair || merged.is_empty() {
            return;
        }
        if to == self.id {
            self.local_write(key, merged, None, fx);
        } else {
            fx.push(send(
                to,
                Msg::Write {
                    req: 0,
                    key: key.to_string(),
                    versions: merged.to_vec(),
                    hint_for: None,
                },
            ));
        }
    }

    fn on_read_resp(
        &mut self,
        now: u64,
        from: NodeId,
        req_id: u64,
        key: String,
        versions: Vec<Versioned>,
        fx: &mut Vec<Effect>,
    ) {
        let conflict = self.opts.conflict;
        let Some(p) = self.pending.get_mut(&req_id) else {
            return;
        };
        let Some(ks) = p.keys.iter_mut().find(|k| k.key == key) else {
            return;
        };
        if ks.read_resps.iter().any(|(f, _)| *f == from) {
            return;
        }
        ks.read_resps.push((from, versions.clone()));
        merge_versions(conflict, &mut ks.merged, &versions);
        if p.phase != Phase::Read {
            // A late answer: repair it from what the read already merged.
            if versions != ks.merged {
                let merged = ks.merged.clone();
                self.repair(&key, &merged, from, fx);
            }
            self.maybe_forget(req_id);
            return;
        }
        let r = p.r;
        if !p
            .keys
            .iter()
            .all(|k| quorum::reached(k.read_resps.len(), r, k.targets.len()))
        {
            return;
        }
        // Quorum reached on every key: repair, compute, then reply or write.
        let mut repairs = Vec::new();
        for ks in &p.keys {
            for (f, had) in &ks.read_resps {
                if *had != ks.merged {
                    repairs.push((ks.key.clone(), *f));
                }
            }
        }
        let merged: BTreeMap<String, Vec<Versioned>> = p
            .keys
            .iter()
            .map(|k| (k.key.clone(), k.merged.clone()))
            .collect();
        let op = p.op.clone();
        for (key, f) in repairs {
            self.repair(&key, &merged[&key], f, fx);
        }
        if let Op::Get { key } = &op {
            let m = &merged[key];
            let result = if m.len() > 1 {
                OpResult::Siblings(m.iter().map(|v| v.value.clone()).collect())
            } else {
                OpResult::Value(m.first().map(|v| v.value.clone()))
            };
            self.finish(req_id, Reply::Ok(result), fx);
            return;
        }
        match apply_op(&op, |k| merged.get(k).and_then(|m| resolve(m))) {
            Err(refusal) => self.finish(req_id, Reply::NotDone(refusal), fx),
            Ok((writes, result)) => {
                if writes.is_empty() {
                    self.finish(req_id, Reply::Ok(result), fx);
                    return;
                }
                let mut versions = Vec::new();
                for (key, value) in writes {
                    let v = self.new_version(now, &key, value, &merged[&key], fx);
                    versions.push((key, v));
                }
                if let Some(p) = self.pending.get_mut(&req_id) {
                    for (key, v) in versions {
                        if let Some(ks) = p.keys.iter_mut().find(|k| k.key == key) {
                            ks.new_versions = Some(vec![v]);
                        }
                    }
                    p.result = Some(result);
                    p.phase = Phase::Write;
                }
                self.send_writes(req_id, fx);
            }
        }
    }

    fn on_write_ack(&mut self, from: NodeId, req_id: u64, key: String, fx: &mut Vec<Effect>) {
        let Some(p) = self.pending.get_mut(&req_id) else {
            return;
        };
        if p.phase != Phase::Write {
            return;
        }
        if let Some(ks) = p.keys.iter_mut().find(|k| k.key == key) {
            ks.acks.insert(from);
        }
        let w = p.w;
        let done = p
            .keys
            .iter()
            .filter(|k| k.new_versions.is_some())
            .all(|k| quorum::reached(k.acks.len(), w, k.targets.len()));
        if done {
            let result = p.result.clone().unwrap_or(OpResult::Done);
            self.finish(req_id, Reply::Ok(result), fx);
        }
    }

    /// Keys both this node and `peer` replicate, bucketed for the Merkle tree.
    fn shared_items(&self, peer: NodeId, buckets: Option<&BTreeSet<u64>>) -> Items {
        self.store
            .iter()
            .filter(|(k, _)| {
                let pl = self.preference_list(k);
                pl.contains(&peer)
                    && pl.contains(&self.id)
                    && buckets
                        .is_none_or(|b| b.contains(&(stable_hash(k.as_bytes()) % MERKLE_LEAVES)))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The Merkle tree over keys shared with `peer`: `levels[0]` are the
    /// leaves, `levels[MERKLE_DEPTH]` is the root alone.
    fn merkle(&self, peer: NodeId) -> Vec<Vec<u64>> {
        let mut leaves = vec![0u64; MERKLE_LEAVES as usize];
        for (k, v) in self.shared_items(peer, None) {
            let b = (stable_hash(k.as_bytes()) % MERKLE_LEAVES) as usize;
            // Order-independent within a bucket.
            leaves[b] = leaves[b].wrapping_add(stable_hash(&encode(&(k, v))));
        }
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().cloned().unwrap_or_default();
            levels.push(
                below
                    .chunks(2)
                    .map(|pair| stable_hash(&encode(&pair)))
                    .collect(),
            );
        }
        levels
    }

    /// Compares the peer's hashes with ours and descends where they differ;
    /// at the leaves, ships the differing buckets' items.
    fn on_merkle_probe(
        &mut self,
        from: NodeId,
        level: u8,
        hashes: Vec<(u64, u64)>,
        fx: &mut Vec<Effect>,
    ) {
        let tree = self.merkle(from);
        let Some(mine) = tree.get(level as usize) else {
            return;
        };
        let differing: Vec<u64> = hashes
            .into_iter()
            .filter(|(i, h)| mine.get(*i as usize) != Some(h))
            .map(|(i, _)| i)
            .collect();
        if differing.is_empty() {
            return;
        }
        if level == 0 {
            let buckets: BTreeSet<u64> = differing.into_iter().collect();
            let items = self.shared_items(from, Some(&buckets));
            fx.push(send(
                from,
                Msg::MerkleDiff {
                    buckets: buckets.into_iter().collect(),
                    items,
                },
            ));
            return;
        }
        let below = &tree[level as usize - 1];
        let hashes = differing
            .iter()
            .flat_map(|i| [2 * i, 2 * i + 1])
            .filter_map(|c| below.get(c as usize).map(|h| (c, *h)))
            .collect();
        fx.push(send(
            from,
            Msg::MerkleProbe {
                level: level - 1,
                hashes,
            },
        ));
    }

    fn merge_items(&mut self, items: Items, fx: &mut Vec<Effect>) {
        for (key, versions) in items {
            if self.preference_list(&key).contains(&self.id) {
                self.local_write(&key, &versions, None, fx);
            }
        }
    }

    fn on_tick(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let late: Vec<u64> = self
            .scans
            .iter()
            .filter(|(_, s)| s.deadline_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(s) = self.scans.remove(&id) {
                fx.push(Effect::Reply {
                    client: s.client,
                    response: Response {
                        id: s.request_id,
                        reply: Reply::NotDone(Refusal::NoQuorum {
                            needed: self.n,
                            got: s.answered.len() as u32,
                        }),
                    },
                });
            }
        }
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                let reply = match p.phase {
                    Phase::Read => {
                        let got = p.keys.iter().map(|k| k.read_resps.len()).min().unwrap_or(0);
                        Some(Reply::NotDone(Refusal::NoQuorum {
                            needed: p.r as u32,
                            got: got as u32,
                        }))
                    }
                    Phase::Write => Some(Reply::Unknown("write quorum not reached in time".into())),
                    Phase::Done => None,
                };
                if let Some(reply) = reply {
                    fx.push(Effect::Reply {
                        client: p.client,
                        response: Response {
                            id: p.request_id,
                            reply,
                        },
                    });
                }
            }
        }
        if now >= self.next_ping_ms {
            self.next_ping_ms = now + self.opts.ping_ms;
            for p in (0..self.n).filter(|p| *p != self.id) {
                fx.push(send(p, Msg::Ping));
            }
            if self.opts.hinted_handoff {
                let ready: Vec<(NodeId, String, Vec<Versioned>)> = self
                    .hints
                    .iter()
                    .filter(|((node, _), _)| self.healthy(*node, now))
                    .map(|((node, key), v)| (*node, key.clone(), v.clone()))
                    .collect();
                for (node, key, versions) in ready {
                    fx.push(send(node, Msg::Handoff { key, versions }));
                }
            }
        }
        if self.opts.anti_entropy_ms > 0 && now >= self.next_anti_entropy_ms && self.n > 1 {
            self.next_anti_entropy_ms = now + self.opts.anti_entropy_ms;
            self.anti_entropy_peer = (self.anti_entropy_peer + 1) % self.n;
            if self.anti_entropy_peer == self.id {
                self.anti_entropy_peer = (self.anti_entropy_peer + 1) % self.n;
            }
            let peer = self.anti_entropy_peer;
            let root = self.merkle(peer)[MERKLE_DEPTH][0];
            fx.push(send(
                peer,
                Msg::MerkleProbe {
                    level: MERKLE_DEPTH as u8,
                    hashes: vec![(0, root)],
                },
            ));
        }
    }

    fn on_peer(&mut self, now: u64, from: NodeId, msg: Msg, fx: &mut Vec<Effect>) {
        self.last_heard_ms.insert(from, now);
        match msg {
            Msg::Read { req, key } => {
                let versions = self.store.get(&key).cloned().unwrap_or_default();
                fx.push(send(from, Msg::ReadResp { req, key, versions }));
            }
            Msg::ReadResp { req, key, versions } => {
                self.on_read_resp(now, from, req, key, versions, fx)
            }
            Msg::Write {
                req,
                key,
                versions,
                hint_for,
            } => {
                self.local_write(&key, &versions, hint_for, fx);
                if req != 0 {
                    fx.push(send(from, Msg::WriteAck { req, key }));
                }
            }
            Msg::WriteAck { req, key } => self.on_write_ack(from, req, key, fx),
            Msg::Handoff { key, versions } => {
                self.local_write(&key, &versions, None, fx);
                let digest = versions_digest(&versions);
                fx.push(send(from, Msg::HandoffAck { key, digest }));
            }
            Msg::HandoffAck { key, digest } => {
                let slot = (from, key.clone());
                // A write that grew the hint after the handoff left still has to go.
                let unchanged = self
                    .hints
                    .get(&slot)
                    .is_some_and(|v| versions_digest(v) == digest);
                if unchanged && self.hints.remove(&slot).is_some() {
                    fx.push(persist(WalRecord::HintDone {
                        for_node: from,
                        key,
                    }));
                }
            }
            Msg::Ping => fx.push(send(from, Msg::Pong)),
            Msg::Pong => {}
            Msg::MerkleProbe { level, hashes } => self.on_merkle_probe(from, level, hashes, fx),
            Msg::MerkleDiff { buckets, items } => {
                let buckets: BTreeSet<u64> = buckets.into_iter().collect();
                let mine = self.shared_items(from, Some(&buckets));
                self.merge_items(items, fx);
                fx.push(send(from, Msg::MerkleItems { items: mine }));
            }
            Msg::MerkleItems { items } => self.merge_items(items, fx),
            Msg::Scan { req, prefix } => {
                let entries = self.local_entries(&prefix);
                fx.push(send(from, Msg::ScanResp { req, entries }));
            }
            Msg::ScanResp { req, entries } => {
                let conflict = self.opts.conflict;
                if let Some(s) = self.scans.get_mut(&req) {
                    s.answered.insert(from);
                    for (k, v) in entries {
                        merge_versions(conflict, s.merged.entry(k).or_default(), &v);
                    }
                }
                self.finish_scan(req, fx);
            }
        }
    }

    /// The versions this node stores for `key` (for tests and inspection).
    pub fn local_versions(&self, key: &str) -> Vec<Versioned> {
        self.store.get(key).cloned().unwrap_or_default()
    }
}

impl Protocol for Leaderless {
    type Msg = Msg;
    type Record = WalRecord;

    fn describe(cfg: &ClusterConfig) -> String {
        let o = &cfg.leaderless;
        format!(
            "leaderless N={} R={} W={} ({:?})",
            o.n, o.r, o.w, o.conflict
        )
    }

    fn from_config(
        cfg: &ClusterConfig,
        node: NodeId,
        _seed: u64,
        recovered: Vec<WalRecord>,
    ) -> Self {
        let n = cfg.nodes.len() as u32;
        Leaderless::new(node, n, cfg.leaderless.clone(), recovered)
    }

    fn step(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        if self.started_ms.is_none() {
            self.started_ms = Some(now_ms);
            self.next_anti_entropy_ms = now_ms + self.opts.anti_entropy_ms;
        }
        let mut fx = Vec::new();
        match input {
            Input::Tick => self.on_tick(now_ms, &mut fx),
            Input::Flush => {}
            Input::Client { client, request } => self.on_client(now_ms, client, request, &mut fx),
            Input::Peer { from, msg } => self.on_peer(now_ms, from, msg, &mut fx),
        }
        fx
    }

    fn status(&self) -> CoreStatus {
        CoreStatus {
            role: "replica".into(),
            epoch: 0,
            leader: None,
            keys: self.store.len() as u64,
            commit_index: 0,
            last_index: 0,
        }
    }

    fn data_digest(&self) -> Option<u64> {
        Some(stable_hash(&encode(&self.store)))
    }

    fn snapshot_records(&self) -> Vec<WalRecord> {
        let mut recs: Vec<WalRecord> = self
            .store
            .iter()
            .map(|(k, v)| WalRecord::Key {
                key: k.clone(),
                versions: v.clone(),
            })
            .collect();
        recs.extend(self.hints.iter().map(|((node, k), v)| WalRecord::Hint {
            for_node: *node,
            key: k.clone(),
            versions: v.clone(),
        }));
        recs.extend(
            self.counters
                .iter()
                .filter(|(k, c)| **c > self.store.get(*k).map_or(0, |vs| max_counter(vs, self.id)))
                .map(|(k, c)| WalRecord::Counter {
                    key: k.clone(),
                    counter: *c,
                }),
        );
        recs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: i64, ts: u64) -> Vec<Versioned> {
        vec![Versioned {
            value: Value::Int(x),
            clock: Clock::Lww { ts, node: 0 },
        }]
    }

    #[test]
    fn merkle_descent_ships_only_the_differing_bucket() {
        let opts = LeaderlessOptions {
            anti_entropy_ms: 100,
            ..Default::default()
        };
        let mut a = Leaderless::new(0, 3, opts.clone(), Vec::new());
        let mut b = Leaderless::new(1, 3, opts, Vec::new());
        let mut fx = Vec::new();
        for i in 0..500 {
            a.local_write(&format!("k{i}"), &v(i, 1), None, &mut fx);
            b.local_write(&format!("k{i}"), &v(i, 1), None, &mut fx);
        }
        a.local_write("extra", &v(7, 2), None, &mut fx);
        // First step starts the clock; the tick after the interval starts a round.
        a.step(0, Input::Tick);
        let mut to_b: Vec<Msg> = a
            .step(100, Input::Tick)
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send {
                    to: 1,
                    msg: m @ Msg::MerkleProbe { .. },
                } => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(to_b.len(), 1);
        let (mut shipped, mut rounds) = (0usize, 0);
        while !to_b.is_empty() {
            rounds += 1;
            let mut to_a = Vec::new();
            for m in to_b.drain(..) {
                if let Msg::MerkleDiff { items, .. } = &m {
                    shipped += items.len();
                }
                for e in b.step(100, Input::Peer { from: 0, msg: m }) {
                    if let Effect::Send { to: 0, msg: m } = e {
                        to_a.push(m);
                    }
                }
            }
            for m in to_a {
                if let Msg::MerkleDiff { items, .. } = &m {
                    shipped += items.len();
                }
                for e in a.step(100, Input::Peer { from: 1, msg: m }) {
                    if let Effect::Send { to: 1, msg: m } = e {
                        if !matches!(m, Msg::Ping | Msg::Pong) {
                            to_b.push(m);
                        }
                    }
                }
            }
        }
        assert_eq!(b.local_versions("extra"), v(7, 2));
        assert!(
            rounds >= 4,
            "the descent takes several rounds, took {rounds}"
        );
        // One bucket of 256 holds about 2 of the 501 keys.
        assert!(
            shipped < 12,
            "shipped {shipped} items for one differing key"
        );
    }

    /// A version written as `dot` after reading versions with the dots `seen`.
    fn dv(dot: Dot, seen: &[Dot], x: i64) -> Versioned {
        let mut s = Dots::default();
        for d in seen {
            s.insert(*d);
        }
        Versioned {
            value: Value::Int(x),
            clock: Clock::Dotted { dot, seen: s },
        }
    }

    #[test]
    fn version_vectors_drop_dominated_versions_and_keep_concurrent_ones() {
        let vv = Conflict::VersionVectors;
        let mut slot = vec![dv((0, 1), &[], 1)];
        assert!(merge_versions(vv, &mut slot, &[dv((1, 1), &[], 2)]));
        assert_eq!(slot.len(), 2);
        let both = dv((2, 1), &[(0, 1), (1, 1)], 3);
        assert!(merge_versions(vv, &mut slot, std::slice::from_ref(&both)));
        assert_eq!(slot, vec![both.clone()]);
        assert!(!merge_versions(vv, &mut slot, &[dv((0, 1), &[], 1)]));
        // Merging is order-independent.
        let mut other = vec![dv((0, 1), &[], 1)];
        merge_versions(vv, &mut other, std::slice::from_ref(&both));
        merge_versions(vv, &mut other, &[dv((1, 1), &[], 2)]);
        assert_eq!(other, slot);
    }

    #[test]
    fn two_writes_through_one_coordinator_from_the_same_read_are_siblings() {
        // Both read {0:1}; a plain vector would make {0:3} supersede {0:2}.
        let vv = Conflict::VersionVectors;
        let mut slot = vec![dv((0, 1), &[], 1)];
        merge_versions(vv, &mut slot, &[dv((0, 2), &[(0, 1)], 2)]);
        merge_versions(vv, &mut slot, &[dv((0, 3), &[(0, 1)], 3)]);
        let values: Vec<Value> = slot.iter().map(|v| v.value.clone()).collect();
        assert_eq!(values, vec![Value::Int(2), Value::Int(3)]);
    }

    #[test]
    fn a_write_that_saw_a_later_dot_but_not_an_earlier_one_keeps_the_earlier() {
        // A reader saw {0:3} but not its concurrent {0:2}: its write has
        // seen 0:1 and 0:3 only, so 0:2 survives beside it.
        let vv = Conflict::VersionVectors;
        let later = dv((1, 1), &[(0, 1), (0, 3)], 4);
        let mut slot = vec![later.clone()];
        assert!(merge_versions(vv, &mut slot, &[dv((0, 2), &[(0, 1)], 2)]));
        assert_eq!(slot.len(), 2);
        assert!(!merge_versions(vv, &mut slot, &[dv((0, 3), &[(0, 1)], 3)]));
        assert!(slot.contains(&later));
    }

    #[test]
    fn dot_sets_are_compact_whatever_the_insertion_order() {
        let dots = |order: &[Dot]| {
            let mut d = Dots::default();
            for x in order {
                d.insert(*x);
            }
            d
        };
        let a = dots(&[(0, 3), (0, 1), (1, 1), (0, 2), (0, 5)]);
        let b = dots(&[(0, 5), (0, 2), (1, 1), (0, 3), (0, 1)]);
        assert_eq!(a, b);
        assert_eq!(a.upto, BTreeMap::from([(0, 3), (1, 1)]));
        assert_eq!(a.extra, BTreeSet::from([(0, 5)]));
        assert!(a.contains((0, 2)) && a.contains((0, 5)) && !a.contains((0, 4)));
        assert_eq!(a.max_of(0), 5);
        let mut u = dots(&[(0, 4)]);
        u.union(&a);
        assert_eq!(u, dots(&[(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 1)]));
        assert!(u.extra.is_empty());
    }

    #[test]
    fn legacy_version_vectors_replay_as_dotted_and_counters_stay_ahead() {
        let opts = LeaderlessOptions {
            conflict: Conflict::VersionVectors,
            ..Default::default()
        };
        let legacy = Versioned {
            value: Value::Int(1),
            clock: Clock::Vv(BTreeMap::from([(0, 4), (1, 2)])),
        };
        let recovered = vec![
            WalRecord::Key {
                key: "k".into(),
                versions: vec![legacy],
            },
            WalRecord::Counter {
                key: "j".into(),
                counter: 9,
            },
        ];
        let mut node = Leaderless::new(0, 3, opts, recovered);
        assert_eq!(
            node.local_versions("k"),
            vec![dv((0, 4), &[(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)], 1)]
        );
        let mut fx = Vec::new();
        let context = node.local_versions("k");
        let next = node.new_version(0, "k", Value::Int(2), &context, &mut fx);
        assert!(matches!(next.clock, Clock::Dotted { dot: (0, 5), .. }));
        let next = node.new_version(0, "j", Value::Int(2), &[], &mut fx);
        assert!(matches!(next.clock, Clock::Dotted { dot: (0, 10), .. }));
    }

    #[test]
    fn a_handoff_ack_for_an_older_hint_keeps_the_newer_one() {
        let opts = LeaderlessOptions {
            sloppy_quorum: true,
            ..Default::default()
        };
        let mut standin = Leaderless::new(0, 3, opts, Vec::new());
        let mut fx = Vec::new();
        standin.local_write("h", &v(1, 1), Some(2), &mut fx);
        let digest = versions_digest(&v(1, 1));
        // A newer write for node 2 lands while the first handoff is in flight.
        standin.local_write("h", &v(2, 2), Some(2), &mut fx);
        let ack = |digest| Input::Peer {
            from: 2,
            msg: Msg::HandoffAck {
                key: "h".into(),
                digest,
            },
        };
        standin.step(10, ack(digest));
        assert_eq!(standin.hints.get(&(2, "h".to_string())), Some(&v(2, 2)));
        standin.step(20, ack(versions_digest(&v(2, 2))));
        assert!(standin.hints.is_empty());
    }
}
