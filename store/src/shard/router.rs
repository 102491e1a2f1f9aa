//! [`Sharded`]: the routing layer of one node of a sharded store, in front
//! of the cores of the groups the node is a member of (see the module
//! above for what it keeps where).

use super::map::{group_members, GroupId, PartitionId, ShardMap, Span};
use super::*;
use crate::codec::{decode, encode};
use crate::config::{ClusterConfig, CrossShard, Handoff, ShardingOptions};
use crate::core::{
    build_core, Bytes, ClientId, Core, CoreError, CoreStatus, Effect, Input, PeerMsg, WalRecord,
};
use crate::msg::{
    apply_op, NodeId, Op, OpResult, Refusal, Reply, Request, RequestOptions, Response, Value,
};
use crate::protocol::{AdminOp, AdminReply, Rebalance, RebalanceDone};
use crate::seeded::mix64;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// The tag of a sharded node's log records: a group, then that group's record.
pub const SHARDED_WAL_TAG: u8 = 200;

/// A read sent to a member that stays silent this long goes to another.
const READ_RETRY_MS: u64 = 400;
/// A request that met a lock or a frozen partition tries again after this.
const BACKOFF_MS: u64 = 25;
/// Entries a move copies per write.
const COPY_CHUNK: usize = 200;
/// How long a committed transaction keeps trying to write at its groups.
const COMMIT_PATIENCE_MS: u64 = 60_000;
/// The admin id of the rebalances a node starts itself (automatic splits): answered to nobody.
const AUTO_ADMIN: ClientId = ClientId::MAX;
/// The task of a call whose answer nobody waits for.
const NO_TASK: TaskId = TaskId::MAX;
/// How often a group's leader looks at its partitions' sizes.
const SIZE_CHECK_MS: u64 = 2_000;
/// The rebalance lock at group 0.
const MAP_LOCK_KEY: &str = "m/lock";
/// How long a rebalance may take.
const REBALANCE_TIMEOUT_MS: u64 = 18_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Wire {
    /// A message of a group's cores.
    Group {
        group: GroupId,
        msg: PeerMsg,
    },
    /// A request for a member's core of `group`.
    Call {
        call: u64,
        group: GroupId,
        request: Request,
    },
    CallReply {
        call: u64,
        response: Response,
    },
}

/// Builds the routing layer of `node` and the cores of its groups,
/// replaying each group's records from `recovered`.
pub fn build_sharded(
    cfg: &ClusterConfig,
    node: NodeId,
    seed: u64,
    recovered: Vec<WalRecord>,
) -> Result<Box<dyn Core>, CoreError> {
    let opts = cfg.sharding.clone().unwrap_or_default();
    let nodes = cfg.nodes.len();
    let groups = opts.groups;
    let members: Vec<Vec<NodeId>> = (0..groups)
        .map(|g| group_members(&opts, nodes, g))
        .collect();
    let mut per_group: BTreeMap<GroupId, Vec<WalRecord>> = BTreeMap::new();
    for (index, rec) in recovered.iter().enumerate() {
        let bad = |reason: String| CoreError::BadRecord {
            index,
            mode: "sharded",
            reason,
        };
        let (tag, body) = rec
            .as_bytes()
            .split_first()
            .ok_or_else(|| bad("empty record".into()))?;
        if *tag != SHARDED_WAL_TAG {
            return Err(CoreError::ForeignRecord {
                index,
                mode: "sharded",
                found: format!("with tag {tag}"),
            });
        }
        let (g, inner): (GroupId, Bytes) = decode(body).map_err(|e| bad(e.to_string()))?;
        per_group
            .entry(g)
            .or_default()
            .push(WalRecord::from_bytes(inner.0));
    }
    let mut local = BTreeMap::new();
    for g in 0..groups {
        let Some(idx) = members[g as usize].iter().position(|m| *m == node) else {
            continue;
        };
        let mut sub = cfg.clone();
        sub.sharding = None;
        sub.nodes = members[g as usize]
            .iter()
            .map(|m| cfg.nodes[*m as usize].clone())
            .collect();
        let recs = per_group.remove(&g).unwrap_or_default();
        let core = build_core(&sub, idx as NodeId, mix64(seed ^ u64::from(g + 1)), recs)?;
        local.insert(g, core);
    }
    Ok(Box::new(Sharded {
        me: node,
        map: ShardMap::initial(&opts),
        opts,
        members,
        local,
        hints: HashMap::new(),
        next_id: 1,
        calls: HashMap::new(),
        waiters: HashMap::new(),
        inbox: VecDeque::new(),
        tasks: HashMap::new(),
        wakes: Vec::new(),
        map_read: None,
        map_waiters: Vec::new(),
        map_read_at_ms: 0,
        lock_seen: HashMap::new(),
        resolving: Vec::new(),
        sizes: HashMap::new(),
        size_check_at_ms: 0,
        boot_ms: None,
        now: 0,
        out: Vec::new(),
    }))
}

type TaskId = u64;

struct Call {
    task: TaskId,
    step: u32,
    group: GroupId,
    op: Op,
    target: NodeId,
    tries: u32,
    sent_ms: u64,
    retry_at: Option<u64>,
    deadline_ms: u64,
}

enum Waiter {
    Call(u64),
    Peer { from: NodeId, call: u64 },
}

/// One group's share of a request.
#[derive(Clone, Debug)]
struct Part {
    group: GroupId,
    /// The partitions it touches, with the epochs the map gave them.
    partitions: Vec<(PartitionId, u64)>,
    /// The request's micro-operations it carries (their indices).
    micro: Vec<usize>,
    /// Their keys, each with its partition.
    keys: Vec<(PartitionId, String)>,
    state: PartState,
}

#[derive(Clone, Debug, PartialEq)]
enum PartState {
    Sent,
    Done,
    /// Definitely not done, for this reason.
    Refused(Refusal),
    /// Met a stale map, a frozen partition or a lock: sent again at the wake.
    Retry,
    Unknown(String),
}

struct OpTask {
    client: ClientId,
    req_id: u64,
    op: Op,
    deadline_ms: u64,
    parts: Vec<Part>,
    results: Vec<Option<OpResult>>,
    last_refusal: Option<Refusal>,
}

#[derive(Debug, PartialEq)]
enum TxPhase {
    Prepare,
    Decide,
    Commit,
    /// Releasing locks, the transaction not done; then the reply (or a new attempt).
    Abort {
        retry: bool,
    },
}

struct TxTask {
    client: Option<ClientId>,
    req_id: u64,
    op: Op,
    deadline_ms: u64,
    attempt: u64,
    txn: String,
    primary: GroupId,
    parts: Vec<Part>,
    phase: TxPhase,
    values: HashMap<String, Option<Value>>,
    writes: Vec<(String, Value)>,
    result: Option<OpResult>,
    refusal: Option<Refusal>,
    unknown: bool,
    /// A write of the decision went unanswered: it may be recorded.
    decision_unknown: bool,
}

impl TxTask {
    /// A transaction over `parts`, about to prepare.
    fn new(client: ClientId, req_id: u64, op: Op, deadline_ms: u64, parts: Vec<Part>) -> TxTask {
        TxTask {
            client: Some(client),
            req_id,
            op,
            deadline_ms,
            attempt: 0,
            txn: String::new(),
            primary: 0,
            parts,
            phase: TxPhase::Prepare,
            values: HashMap::new(),
            writes: Vec::new(),
            result: None,
            refusal: None,
            unknown: false,
            decision_unknown: false,
        }
    }
}

struct ResolveTask {
    owner: String,
    txn: String,
    key: String,
    deadline_ms: u64,
}

/// A change as the rebalance lock records it: planned on the map at
/// `epoch`, and (a split) where it cuts.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Plan {
    epoch: u64,
    change: Rebalance,
    at: Option<Span>,
}

struct RebalanceTask {
    admin: ClientId,
    op: AdminOp,
    /// Asked to settle: answered with the map once the change is finished.
    settling: bool,
    plan: Option<Plan>,
    deadline_ms: u64,
    map: Option<ShardMap>,
    map_raw: Option<Value>,
    next: Option<ShardMap>,
    /// (partition, group, epoch before) of each partition frozen or copied.
    sources: Vec<PartitionId>,
    from: GroupId,
    to: GroupId,
    /// Where the copied entries go: partition by partition.
    dest: PartitionId,
    entries: Vec<(String, Value)>,
    copied: usize,
    keys_copied: u64,
    frozen_at: Option<u64>,
}

enum Task {
    Op(OpTask),
    Tx(TxTask),
    Resolve(ResolveTask),
    Rebalance(Box<RebalanceTask>),
    /// Counting a partition's keys (automatic splits).
    Size(PartitionId),
}

enum Event {
    Reply(u32, Reply),
    Wake,
}

pub struct Sharded {
    me: NodeId,
    opts: ShardingOptions,
    members: Vec<Vec<NodeId>>,
    local: BTreeMap<GroupId, Box<dyn Core>>,
    map: ShardMap,
    /// Each group's leader as last heard.
    hints: HashMap<GroupId, NodeId>,
    next_id: u64,
    calls: HashMap<u64, Call>,
    /// Requests given to a local core: whose they are.
    waiters: HashMap<ClientId, Waiter>,
    /// Answers of local cores, handled after the step that produced them.
    inbox: VecDeque<(ClientId, Response)>,
    tasks: HashMap<TaskId, Task>,
    wakes: Vec<(u64, TaskId)>,
    /// The call rereading the map, if one is out.
    map_read: Option<u64>,
    map_waiters: Vec<TaskId>,
    map_read_at_ms: u64,
    /// Lock owners met, and when first.
    lock_seen: HashMap<String, u64>,
    resolving: Vec<String>,
    /// Keys each partition held when last counted.
    sizes: HashMap<PartitionId, u64>,
    size_check_at_ms: u64,
    boot_ms: Option<u64>,
    now: u64,
    out: Vec<Effect>,
}

fn wrap_record(group: GroupId, rec: &WalRecord) -> WalRecord {
    let mut bytes = vec![SHARDED_WAL_TAG];
    bytes.extend_from_slice(&encode(&(group, Bytes(rec.as_bytes().to_vec()))));
    WalRecord::from_bytes(bytes)
}

fn is_store_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Scan { .. }
            | Op::Lock { .. }
            | Op::Unlocked { .. }
            | Op::Fence { .. }
            | Op::Unlock { .. }
    )
}

/// `op` with its key replaced.
fn rekey(op: &Op, key: String) -> Op {
    let mut op = op.clone();
    match &mut op {
        Op::Get { key: k }
        | Op::Put { key: k, .. }
        | Op::Cas { key: k, .. }
        | Op::Append { key: k, .. }
        | Op::ReadList { key: k }
        | Op::Incr { key: k, .. }
        | Op::Add { key: k, .. }
        | Op::Remove { key: k, .. }
        | Op::ReadSet { key: k }
        | Op::Lock { key: k, .. }
        | Op::Unlocked { key: k }
        | Op::Fence { key: k, .. }
        | Op::Unlock { key: k, .. } => *k = key,
        Op::Scan { prefix } => *prefix = key,
        Op::Txn { .. } => {}
    }
    op
}

fn txn(ops: Vec<Op>) -> Op {
    Op::Txn { ops }
}

/// The user key a stored `p/P/d/KEY` or `p/P/l/KEY` holds, and which it is.
fn split_stored(stored: &str) -> Option<(PartitionId, char, &str)> {
    let rest = stored.strip_prefix("p/")?;
    let (p, rest) = rest.split_once('/')?;
    let (kind, key) = rest.split_once('/')?;
    Some((p.parse().ok()?, kind.chars().next()?, key))
}

/// The latest map among a read's values (a leaderless group may answer siblings).
fn newest_map(result: &OpResult) -> Option<(ShardMap, Value)> {
    let values: Vec<&Value> = match result {
        OpResult::Value(Some(v)) => vec![v],
        OpResult::Siblings(vs) => vs.iter().collect(),
        _ => Vec::new(),
    };
    values
        .into_iter()
        .filter_map(|v| map_from_value(v).map(|m| (m, v.clone())))
        .max_by_key(|(m, _)| m.epoch)
}

impl Sharded {
    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn fenced(&self) -> bool {
        self.opts.handoff == Handoff::Epoch
    }

    // ---- the call layer: a request to a group, wherever its leader is ----

    fn call(&mut self, task: TaskId, step: u32, group: GroupId, op: Op, deadline_ms: u64) {
        let id = self.fresh_id();
        let target = self.target_for(group, None);
        let call = Call {
            task,
            step,
            group,
            op,
            target,
            tries: 0,
            sent_ms: self.now,
            retry_at: None,
            deadline_ms,
        };
        self.calls.insert(id, call);
        self.send_call(id);
    }

    fn target_for(&self, group: GroupId, after: Option<NodeId>) -> NodeId {
        let members = &self.members[group as usize];
        if let Some(prev) = after {
            let i = members.iter().position(|m| *m == prev).unwrap_or(0);
            return members[(i + 1) % members.len()];
        }
        if let Some(h) = self.hints.get(&group) {
            return *h;
        }
        if members.contains(&self.me) {
            self.me
        } else {
            members[(self.me as usize) % members.len()]
        }
    }

    fn send_call(&mut self, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.sent_ms = self.now;
        call.retry_at = None;
        let request = Request {
            id,
            op: call.op.clone(),
            options: RequestOptions::default(),
        };
        let (target, group) = (call.target, call.group);
        if target == self.me && self.local.contains_key(&group) {
            let inner = self.fresh_id();
            self.waiters.insert(inner, Waiter::Call(id));
            self.local_request(group, inner, request);
        } else {
            self.send(
                target,
                &Wire::Call {
                    call: id,
                    group,
                    request,
                },
            );
        }
    }

    fn local_request(&mut self, group: GroupId, inner: ClientId, mut request: Request) {
        request.id = inner;
        let now = self.now;
        let Some(core) = self.local.get_mut(&group) else {
            return;
        };
        let fx = core.step(
            now,
            Input::Client {
                client: inner,
                request,
            },
        );
        self.absorb(group, fx);
    }

    fn send(&mut self, to: NodeId, wire: &Wire) {
        self.out.push(Effect::Send {
            to,
            msg: PeerMsg::Protocol(Bytes(encode(wire))),
        });
    }

    /// A local core's effects: its sends and records go out wrapped, its
    /// answers wait in the inbox.
    fn absorb(&mut self, group: GroupId, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Send { to, msg } => {
                    if let Some(to) = self.members[group as usize].get(to as usize).copied() {
                        self.send(to, &Wire::Group { group, msg });
                    }
                }
                Effect::Persist(rec) => self.out.push(Effect::Persist(wrap_record(group, &rec))),
                Effect::Reply { client, response } => {
                    let response = self.globalize(group, response);
                    self.inbox.push_back((client, response));
                }
                Effect::AdminReply { .. } => {}
            }
        }
    }

    /// A group core's leader hint, from its own numbering to the cluster's.
    fn globalize(&self, group: GroupId, mut response: Response) -> Response {
        if let Reply::NotDone(Refusal::NotLeader { leader }) = &mut response.reply {
            *leader = leader.and_then(|l| self.members[group as usize].get(l as usize).copied());
        }
        response
    }

    fn drain(&mut self) {
        while let Some((inner, response)) = self.inbox.pop_front() {
            match self.waiters.remove(&inner) {
                Some(Waiter::Call(id)) => self.call_answered(id, response.reply),
                Some(Waiter::Peer { from, call, .. }) => {
                    self.send(from, &Wire::CallReply { call, response })
                }
                None => {}
            }
        }
    }

    fn call_answered(&mut self, id: u64, reply: Reply) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        if let Reply::NotDone(Refusal::NotLeader { leader }) = &reply {
            let members = &self.members[call.group as usize];
            let next = match leader {
                Some(l) if members.contains(l) && *l != call.target => {
                    self.hints.insert(call.group, *l);
                    *l
                }
                _ => {
                    self.hints.remove(&call.group);
                    self.target_for(call.group, Some(call.target))
                }
            };
            call.tries += 1;
            if self.now < call.deadline_ms {
                call.target = next;
                // Around the group once at once; then the election may need time.
                if (call.tries as usize).is_multiple_of(members.len().max(1)) {
                    call.retry_at = Some(self.now + BACKOFF_MS * 2);
                    self.calls.insert(id, call);
                } else {
                    self.calls.insert(id, call);
                    self.send_call(id);
                }
                return;
            }
        } else if !matches!(reply, Reply::NotDone(Refusal::Unreachable(_))) {
            self.hints.insert(call.group, call.target);
        }
        self.deliver(call.task, Event::Reply(call.step, reply));
    }

    fn deliver(&mut self, id: TaskId, event: Event) {
        if id == 0 {
            if let Event::Reply(_, reply) = event {
                self.map_answered(reply);
            }
            return;
        }
        let Some(task) = self.tasks.remove(&id) else {
            return;
        };
        let keep = match task {
            Task::Op(t) => self.op_event(id, t, event),
            Task::Tx(t) => self.tx_event(id, t, event),
            Task::Resolve(t) => self.resolve_event(id, t, event),
            Task::Rebalance(t) => self.rebalance_event(id, t, event),
            Task::Size(p) => {
                self.size_event(p, event);
                None
            }
        };
        if let Some(task) = keep {
            self.tasks.insert(id, task);
        }
    }

    fn wake_at(&mut self, at: u64, task: TaskId) {
        self.wakes.push((at, task));
    }

    fn reply(&mut self, client: ClientId, id: u64, reply: Reply) {
        self.out.push(Effect::Reply {
            client,
            response: Response { id, reply },
        });
    }

    // ---- the map ----

    /// Rereads the map from group 0; `task` is resumed (woken) when it is in.
    fn refresh_map(&mut self, task: Option<TaskId>) {
        if let Some(t) = task {
            if !self.map_waiters.contains(&t) {
                self.map_waiters.push(t);
            }
        }
        if self.map_read.is_some() {
            return;
        }
        self.map_read = Some(self.now);
        self.map_read_at_ms = self.now;
        let deadline = self.now + self.opts.request_timeout_ms;
        self.call(
            0,
            0,
            0,
            Op::Get {
                key: MAP_KEY.into(),
            },
            deadline,
        );
    }

    fn map_answered(&mut self, reply: Reply) {
        self.map_read = None;
        let mut newer = false;
        if let Reply::Ok(result) = &reply {
            if let Some((m, _)) = newest_map(result) {
                if m.epoch > self.map.epoch {
                    self.map = m;
                    newer = true;
                }
            }
        }
        // The same map as before (a partition still frozen, a change not yet
        // written): try again a little later, not at once.
        for t in std::mem::take(&mut self.map_waiters) {
            if newer {
                self.deliver(t, Event::Wake);
            } else {
                self.wake_at(self.now + BACKOFF_MS, t);
            }
        }
    }

    /// One part per group for the micro-operations `micro` of `op`.
    fn plan(&self, op: &Op, micro: &[usize]) -> Result<Vec<Part>, String> {
        let ops = op.micro_ops();
        let mut parts: Vec<Part> = Vec::new();
        for &i in micro {
            let key = ops[i].key().unwrap_or_default();
            let p = self
                .map
                .locate(key)
                .ok_or_else(|| format!("no partition holds key {key:?}"))?;
            let part = match parts.iter_mut().position(|x| x.group == p.group) {
                Some(j) => &mut parts[j],
                None => {
                    parts.push(Part {
                        group: p.group,
                        partitions: Vec::new(),
                        micro: Vec::new(),
                        keys: Vec::new(),
                        state: PartState::Sent,
                    });
                    parts.last_mut().unwrap()
                }
            };
            if !part.partitions.iter().any(|(id, _)| *id == p.id) {
                part.partitions.push((p.id, p.epoch));
            }
            part.micro.push(i);
            if !part.keys.iter().any(|(_, k)| k == key) {
                part.keys.push((p.id, key.to_string()));
            }
        }
        Ok(parts)
    }

    fn fences(&self, part: &Part) -> Vec<Op> {
        if !self.fenced() {
            return Vec::new();
        }
        part.partitions
            .iter()
            .map(|(p, epoch)| Op::Fence {
                key: own_key(*p),
                expected: Ownership::expected(*epoch),
            })
            .collect()
    }

    fn partition_of(&self, part: &Part, key: &str) -> PartitionId {
        part.keys
            .iter()
            .find(|(_, k)| k == key)
            .map_or(0, |(p, _)| *p)
    }

    /// What to do about a refusal met by a part: a fence (stale map or a
    /// partition being moved) or a lock means try again.
    fn retryable(&mut self, refusal: &Refusal) -> bool {
        let Refusal::Fenced { key, current } = refusal else {
            return false;
        };
        if key.starts_with("o/") {
            return true;
        }
        if let Some((_, 'l', _)) = split_stored(key) {
            if let Some(Value::Str(owner)) = current {
                self.met_lock(owner.clone(), key.clone());
            }
            return true;
        }
        false
    }

    fn met_lock(&mut self, owner: String, key: String) {
        let first = *self.lock_seen.entry(owner.clone()).or_insert(self.now);
        if self.now.saturating_sub(first) < self.opts.resolve_locks_after_ms
            || self.resolving.contains(&owner)
        {
            return;
        }
        let Some((txn, primary)) = parse_lock_owner(&owner) else {
            return;
        };
        if primary as usize >= self.members.len() {
            return;
        }
        let task = ResolveTask {
            txn: txn.to_string(),
            owner: owner.clone(),
            key,
            deadline_ms: self.now + self.opts.request_timeout_ms,
        };
        self.resolving.push(owner);
        let id = self.fresh_id();
        self.call(
            id,
            0,
            primary,
            txn_decide(&task.txn, &Decision::Abort),
            task.deadline_ms,
        );
        self.tasks.insert(id, Task::Resolve(task));
    }

    // ---- single-group requests, and groups' parts run on their own ----

    fn start_op(&mut self, client: ClientId, req: Request) {
        let id = self.fresh_id();
        let micro: Vec<usize> = (0..req.op.micro_ops().len()).collect();
        let n = micro.len();
        let deadline_ms = self.now + self.opts.request_timeout_ms;
        let parts = match self.plan(&req.op, &micro) {
            Ok(p) => p,
            Err(why) => return self.reply(client, req.id, Reply::Error(why)),
        };
        if parts.len() > 1 && self.opts.cross_shard == CrossShard::TwoPhase {
            let mut t = TxTask::new(client, req.id, req.op, deadline_ms, parts);
            self.tx_prepare(id, &mut t);
            self.tasks.insert(id, Task::Tx(t));
            return;
        }
        let t = OpTask {
            client,
            req_id: req.id,
            op: req.op,
            deadline_ms,
            parts,
            results: vec![None; n],
            last_refusal: None,
        };
        for i in 0..t.parts.len() {
            self.send_part(id, &t, i);
        }
        self.tasks.insert(id, Task::Op(t));
    }

    fn send_part(&mut self, id: TaskId, t: &OpTask, i: usize) {
        let part = &t.parts[i];
        let ops = t.op.micro_ops();
        let mut inner = self.fences(part);
        for (p, key) in &part.keys {
            inner.push(Op::Unlocked {
                key: lock_key(*p, key),
            });
        }
        for &m in &part.micro {
            let key = ops[m].key().unwrap_or_default();
            let p = self.partition_of(part, key);
            inner.push(rekey(&ops[m], data_key(p, key)));
        }
        self.call(id, i as u32, part.group, txn(inner), t.deadline_ms);
    }

    fn op_event(&mut self, id: TaskId, mut t: OpTask, event: Event) -> Option<Task> {
        match event {
            Event::Reply(i, reply) => {
                let i = i as usize;
                let guards = if self.fenced() {
                    t.parts[i].partitions.len()
                } else {
                    0
                } + t.parts[i].keys.len();
                t.parts[i].state = match reply {
                    Reply::Ok(OpResult::Txn(rs)) if rs.len() == guards + t.parts[i].micro.len() => {
                        for (m, r) in t.parts[i]
                            .micro
                            .clone()
                            .into_iter()
                            .zip(rs.into_iter().skip(guards))
                        {
                            t.results[m] = Some(r);
                        }
                        PartState::Done
                    }
                    Reply::Ok(other) => PartState::Unknown(format!("unexpected answer {other:?}")),
                    Reply::NotDone(refusal) => {
                        if self.retryable(&refusal) && self.now < t.deadline_ms {
                            let stale = matches!(&refusal, Refusal::Fenced { key, .. } if key.starts_with("o/"));
                            t.last_refusal = Some(refusal);
                            if stale {
                                self.refresh_map(Some(id));
                            } else {
                                self.wake_at(self.now + BACKOFF_MS, id);
                            }
                            PartState::Retry
                        } else {
                            PartState::Refused(self.user_refusal(&t.parts[i], refusal))
                        }
                    }
                    Reply::Unknown(why) => PartState::Unknown(why),
                    Reply::Error(why) => PartState::Refused(Refusal::Unreachable(why)),
                };
            }
            Event::Wake => {
                let retry: Vec<usize> = (0..t.parts.len())
                    .filter(|i| t.parts[*i].state == PartState::Retry)
                    .collect();
                // One group's request, not done: if the map now spreads its keys
                // over several groups, it becomes a two-phase commit, never parts
                // that commit one by one.
                let live = t.parts.iter().filter(|p| !p.micro.is_empty()).count();
                if self.opts.cross_shard == CrossShard::TwoPhase
                    && live == 1
                    && retry.len() == 1
                    && self.now < t.deadline_ms
                {
                    let micro: Vec<usize> = (0..t.op.micro_ops().len()).collect();
                    if let Ok(parts) = self.plan(&t.op, &micro) {
                        if parts.len() > 1 {
                            let mut tx =
                                TxTask::new(t.client, t.req_id, t.op, t.deadline_ms, parts);
                            self.tx_prepare(id, &mut tx);
                            return Some(Task::Tx(tx));
                        }
                    }
                }
                for i in retry {
                    if self.now >= t.deadline_ms {
                        let r = t
                            .last_refusal
                            .clone()
                            .unwrap_or(Refusal::NoQuorum { needed: 1, got: 0 });
                        t.parts[i].state = PartState::Refused(self.user_refusal(&t.parts[i], r));
                        continue;
                    }
                    // The map may have changed: plan this part's operations again.
                    let micro = t.parts[i].micro.clone();
                    match self.plan(&t.op, &micro) {
                        Ok(new_parts) => {
                            t.parts[i].state = PartState::Done;
                            t.parts[i].micro.clear();
                            for np in new_parts {
                                t.parts.push(np);
                                let j = t.parts.len() - 1;
                                self.send_part(id, &t, j);
                            }
                        }
                        Err(why) => t.parts[i].state = PartState::Unknown(why),
                    }
                }
            }
        }
        if t.parts
            .iter()
            .any(|p| matches!(p.state, PartState::Sent | PartState::Retry))
        {
            return Some(Task::Op(t));
        }
        let reply = self.op_outcome(&t);
        self.reply(t.client, t.req_id, reply);
        None
    }

    /// A refusal as the client sees it: a fence becomes the partition's
    /// whereabouts, a lock stays a lock.
    fn user_refusal(&self, part: &Part, refusal: Refusal) -> Refusal {
        match &refusal {
            Refusal::Fenced { key, .. } if key.starts_with("o/") => {
                let pid: PartitionId = key[2..].parse().unwrap_or(0);
                let epoch = part
                    .partitions
                    .iter()
                    .find(|(p, _)| *p == pid)
                    .map_or(0, |(_, e)| *e);
                Refusal::WrongShard {
                    partition: pid,
                    epoch,
                    group: self.map.get(pid).map(|p| p.group),
                }
            }
            // A group's leader is this node's business, not the client's: any node serves.
            Refusal::NotLeader { .. } => Refusal::NotLeader { leader: None },
            _ => refusal,
        }
    }

    fn op_outcome(&self, t: &OpTask) -> Reply {
        let live: Vec<&Part> = t.parts.iter().filter(|p| !p.micro.is_empty()).collect();
        let done = live.iter().filter(|p| p.state == PartState::Done).count();
        if done == live.len() {
            let mut results: Vec<OpResult> = t
                .results
                .iter()
                .map(|r| r.clone().unwrap_or(OpResult::Done))
                .collect();
            return Reply::Ok(if matches!(t.op, Op::Txn { .. }) {
                OpResult::Txn(results)
            } else {
                results.pop().unwrap_or(OpResult::Done)
            });
        }
        let refused: Vec<&Refusal> = live
            .iter()
            .filter_map(|p| match &p.state {
                PartState::Refused(r) => Some(r),
                _ => None,
            })
            .collect();
        if done == 0 && refused.len() == live.len() {
            return Reply::NotDone(refused[0].clone());
        }
        let why = live
            .iter()
            .find_map(|p| match &p.state {
                PartState::Unknown(w) => Some(w.clone()),
                _ => None,
            })
            .unwrap_or_else(|| {
                format!(
                    "{done} of {} groups did their part and the others did not",
                    live.len()
                )
            });
        Reply::Unknown(why)
    }

    // ---- two-phase commit ----

    fn tx_prepare(&mut self, id: TaskId, t: &mut TxTask) {
        t.attempt += 1;
        let boot = self.boot_ms.unwrap_or(0);
        t.txn = format!("{}.{boot}.{id}.{}", self.me, t.attempt);
        t.primary = t.parts[0].group;
        t.phase = TxPhase::Prepare;
        t.values.clear();
        let owner = lock_owner(&t.txn, t.primary);
        for i in 0..t.parts.len() {
            let part = t.parts[i].clone();
            let mut inner = self.fences(&part);
            for (p, key) in &part.keys {
                inner.push(Op::Lock {
                    key: lock_key(*p, key),
                    owner: owner.clone(),
                });
            }
            for (p, key) in &part.keys {
                inner.push(Op::Get {
                    key: data_key(*p, key),
                });
            }
            t.parts[i].state = PartState::Sent;
            let group = part.group;
            self.call(id, i as u32, group, txn(inner), t.deadline_ms);
        }
    }

    fn tx_event(&mut self, id: TaskId, mut t: TxTask, event: Event) -> Option<Task> {
        let owner = lock_owner(&t.txn, t.primary);
        match (&t.phase, event) {
            (TxPhase::Prepare, Event::Reply(i, reply)) => {
                let i = i as usize;
                let fences = if self.fenced() {
                    t.parts[i].partitions.len()
                } else {
                    0
                };
                let nkeys = t.parts[i].keys.len();
                t.parts[i].state = match reply {
                    Reply::Ok(OpResult::Txn(rs)) if rs.len() == fences + 2 * nkeys => {
                        for ((_, key), r) in t.parts[i]
                            .keys
                            .iter()
                            .zip(rs.into_iter().skip(fences + nkeys))
                        {
                            let v = match r {
                                OpResult::Value(v) => v,
                                OpResult::Siblings(mut vs) => vs.pop(),
                                _ => None,
                            };
                            t.values.insert(key.clone(), v);
                        }
                        PartState::Done
                    }
                    Reply::NotDone(r) => {
                        if self.retryable(&r) {
                            if matches!(&r, Refusal::Fenced { key, .. } if key.starts_with("o/")) {
                                self.refresh_map(None);
                            }
                            t.refusal = Some(r);
                            PartState::Retry
                        } else {
                            t.refusal = Some(r.clone());
                            PartState::Refused(r)
                        }
                    }
                    Reply::Ok(_) | Reply::Unknown(_) | Reply::Error(_) => {
                        PartState::Unknown("prepare".into())
                    }
                };
                if t.parts.iter().any(|p| p.state == PartState::Sent) {
                    return Some(Task::Tx(t));
                }
                if t.parts.iter().all(|p| p.state == PartState::Done) {
                    return self.tx_decide(id, t);
                }
                // Not every group is locked: release what we hold, then try again or give up.
                let retry = self.now < t.deadline_ms
                    && t.parts.iter().all(|p| {
                        matches!(
                            p.state,
                            PartState::Done | PartState::Retry | PartState::Unknown(_)
                        )
                    });
                self.tx_release(id, &mut t, TxPhase::Abort { retry });
                Some(Task::Tx(t))
            }
            (TxPhase::Decide, Event::Reply(_, reply)) => match reply {
                Reply::Ok(_) => self.tx_committed(id, t),
                Reply::NotDone(Refusal::Fenced {
                    current: Some(v), ..
                }) => {
                    match Decision::from_value(&v) {
                        Some(Decision::Commit { .. }) => self.tx_committed(id, t),
                        _ => {
                            // Aborted by whoever met our locks first.
                            t.refusal = Some(Refusal::Fenced {
                                key: decision_key(&t.txn),
                                current: Some(v),
                            });
                            self.tx_release(id, &mut t, TxPhase::Abort { retry: false });
                            Some(Task::Tx(t))
                        }
                    }
                }
                // Definitely not recorded, by this attempt or any before it.
                Reply::NotDone(r) if self.now >= t.deadline_ms && !t.decision_unknown => {
                    t.refusal = Some(r);
                    self.tx_release(id, &mut t, TxPhase::Abort { retry: false });
                    Some(Task::Tx(t))
                }
                other => {
                    if !matches!(other, Reply::NotDone(_)) {
                        t.decision_unknown = true;
                    }
                    if self.now >= t.deadline_ms {
                        // The decision may have been recorded: the locks stay, and
                        // whoever meets them finishes the transaction from it.
                        if let Some(c) = t.client.take() {
                            self.reply(
                                c,
                                t.req_id,
                                Reply::Unknown("the commit decision's write timed out".into()),
                            );
                        }
                        return None;
                    }
                    self.wake_at(self.now + BACKOFF_MS, id);
                    Some(Task::Tx(t))
                }
            },
            (TxPhase::Decide, Event::Wake) => {
                let (txn_id, writes) = (t.txn.clone(), t.writes.clone());
                self.call(
                    id,
                    0,
                    t.primary,
                    txn_decide(&txn_id, &Decision::Commit { writes }),
                    t.deadline_ms.max(self.now + 1),
                );
                Some(Task::Tx(t))
            }
            (TxPhase::Commit, Event::Reply(i, reply)) => {
                let i = i as usize;
                t.parts[i].state = match reply {
                    Reply::Ok(_) => PartState::Done,
                    // The lock is gone: someone finished this part for us.
                    Reply::NotDone(Refusal::Fenced { key, .. }) if !key.starts_with("o/") => {
                        PartState::Done
                    }
                    Reply::NotDone(Refusal::Fenced { .. }) => {
                        self.refresh_map(Some(id));
                        PartState::Retry
                    }
                    _ => {
                        self.wake_at(self.now + BACKOFF_MS * 4, id);
                        PartState::Retry
                    }
                };
                if t.parts.iter().all(|p| p.state == PartState::Done) {
                    return None;
                }
                Some(Task::Tx(t))
            }
            (TxPhase::Commit, Event::Wake) => {
                if self.now >= t.deadline_ms {
                    return None;
                }
                let retry: Vec<usize> = (0..t.parts.len())
                    .filter(|i| t.parts[*i].state == PartState::Retry)
                    .collect();
                for i in retry {
                    t.parts[i].state = PartState::Sent;
                    self.tx_send_commit(id, &mut t, i, &owner);
                }
                Some(Task::Tx(t))
            }
            (TxPhase::Abort { retry }, Event::Reply(i, _)) => {
                let retry = *retry;
                t.parts[i as usize].state = PartState::Done;
                if t.parts.iter().any(|p| p.state == PartState::Sent) {
                    return Some(Task::Tx(t));
                }
                if retry {
                    self.wake_at(self.now + BACKOFF_MS, id);
                    t.phase = TxPhase::Abort { retry: true };
                    t.parts.iter_mut().for_each(|p| p.state = PartState::Retry);
                    return Some(Task::Tx(t));
                }
                if let Some(c) = t.client.take() {
                    let reply = match (t.result.take(), t.refusal.take()) {
                        (Some(result), _) => Reply::Ok(result),
                        (None, Some(r)) if !t.unknown => {
                            Reply::NotDone(self.user_refusal(&t.parts[0], r))
                        }
                        _ => Reply::Unknown("a group's prepare was not answered".into()),
                    };
                    self.reply(c, t.req_id, reply);
                }
                None
            }
            (TxPhase::Abort { retry: true }, Event::Wake) => {
                if t.parts.iter().any(|p| p.state == PartState::Sent) {
                    return Some(Task::Tx(t));
                }
                let micro: Vec<usize> = (0..t.op.micro_ops().len()).collect();
                match self.plan(&t.op, &micro) {
                    Ok(parts) if parts.len() > 1 => {
                        t.parts = parts;
                        self.tx_prepare(id, &mut t);
                        Some(Task::Tx(t))
                    }
                    Ok(parts) => {
                        // The map now puts every key on one group.
                        let client = t.client.take()?;
                        let n = t.op.micro_ops().len();
                        let ot = OpTask {
                            client,
                            req_id: t.req_id,
                            op: t.op,
                            deadline_ms: t.deadline_ms,
                            parts,
                            results: vec![None; n],
                            last_refusal: None,
                        };
                        for i in 0..ot.parts.len() {
                            self.send_part(id, &ot, i);
                        }
                        Some(Task::Op(ot))
                    }
                    Err(why) => {
                        if let Some(c) = t.client.take() {
                            self.reply(c, t.req_id, Reply::Error(why));
                        }
                        None
                    }
                }
            }
            (_, _) => Some(Task::Tx(t)),
        }
    }

    /// Every group is locked and has answered its reads: compute the
    /// result, and commit (or, for a read-only or refused transaction, release).
    fn tx_decide(&mut self, id: TaskId, mut t: TxTask) -> Option<Task> {
        let values = t.values.clone();
        match apply_op(&t.op, |k| values.get(k).cloned().flatten()) {
            Err(refusal) => {
                t.refusal = Some(refusal);
                self.tx_release(id, &mut t, TxPhase::Abort { retry: false });
                Some(Task::Tx(t))
            }
            Ok((writes, result)) if writes.is_empty() => {
                t.result = Some(result);
                self.tx_release(id, &mut t, TxPhase::Abort { retry: false });
                Some(Task::Tx(t))
            }
            Ok((writes, result)) => {
                t.result = Some(result);
                t.writes = writes.clone();
                t.phase = TxPhase::Decide;
                let txn_id = t.txn.clone();
                self.call(
                    id,
                    0,
                    t.primary,
                    txn_decide(&txn_id, &Decision::Commit { writes }),
                    t.deadline_ms,
                );
                Some(Task::Tx(t))
            }
        }
    }

    /// The decision is recorded: answer, then write and unlock at every group.
    fn tx_committed(&mut self, id: TaskId, mut t: TxTask) -> Option<Task> {
        if let (Some(c), Some(result)) = (t.client.take(), t.result.take()) {
            self.reply(c, t.req_id, Reply::Ok(result));
        }
        t.phase = TxPhase::Commit;
        t.deadline_ms = self.now + COMMIT_PATIENCE_MS;
        let owner = lock_owner(&t.txn, t.primary);
        for i in 0..t.parts.len() {
            t.parts[i].state = PartState::Sent;
            self.tx_send_commit(id, &mut t, i, &owner);
        }
        Some(Task::Tx(t))
    }

    fn tx_send_commit(&mut self, id: TaskId, t: &mut TxTask, i: usize, owner: &str) {
        // The partitions may have moved or split since the prepare: a part
        // whose keys are now on several groups becomes a part per group.
        let keys: Vec<String> = t.parts[i].keys.iter().map(|(_, k)| k.clone()).collect();
        let mut regrouped: Vec<Part> = Vec::new();
        for key in &keys {
            let Some(p) = self.map.locate(key) else {
                continue;
            };
            let slot = match regrouped.iter().position(|x| x.group == p.group) {
                Some(j) => j,
                None => {
                    regrouped.push(Part {
                        group: p.group,
                        partitions: Vec::new(),
                        micro: Vec::new(),
                        keys: Vec::new(),
                        state: PartState::Sent,
                    });
                    regrouped.len() - 1
                }
            };
            let part = &mut regrouped[slot];
            if !part.partitions.iter().any(|(id, _)| *id == p.id) {
                part.partitions.push((p.id, p.epoch));
            }
            part.keys.push((p.id, key.clone()));
        }
        if regrouped.is_empty() {
            t.parts[i].state = PartState::Done;
            return;
        }
        let part = regrouped.remove(0);
        for extra in regrouped {
            t.parts.push(extra);
            let j = t.parts.len() - 1;
            self.tx_commit_part(id, t, j, owner);
        }
        t.parts[i] = part;
        self.tx_commit_part(id, t, i, owner);
    }

    fn tx_commit_part(&mut self, id: TaskId, t: &mut TxTask, i: usize, owner: &str) {
        let part = t.parts[i].clone();
        let mut inner = self.fences(&part);
        for (p, key) in &part.keys {
            inner.push(Op::Fence {
                key: lock_key(*p, key),
                expected: Some(Value::Str(owner.to_string())),
            });
        }
        for (p, key) in &part.keys {
            if let Some((_, v)) = t.writes.iter().find(|(k, _)| k == key) {
                inner.push(Op::Put {
                    key: data_key(*p, key),
                    value: v.clone(),
                });
            }
            inner.push(Op::Unlock {
                key: lock_key(*p, key),
                owner: owner.to_string(),
            });
        }
        t.parts[i].state = PartState::Sent;
        self.call(id, i as u32, part.group, txn(inner), t.deadline_ms);
    }

    /// Unlocks every group's keys (where this transaction holds them).
    fn tx_release(&mut self, id: TaskId, t: &mut TxTask, then: TxPhase) {
        // A prepare that was not answered may have locked and read: the
        // transaction did not commit, but the client is told it is unknown.
        if t.parts
            .iter()
            .any(|p| matches!(p.state, PartState::Unknown(_)))
        {
            t.unknown = true;
        }
        t.phase = then;
        let owner = lock_owner(&t.txn, t.primary);
        for i in 0..t.parts.len() {
            let inner: Vec<Op> = t.parts[i]
                .keys
                .iter()
                .map(|(p, key)| Op::Unlock {
                    key: lock_key(*p, key),
                    owner: owner.clone(),
                })
                .collect();
            t.parts[i].state = PartState::Sent;
            let group = t.parts[i].group;
            self.call(
                id,
                i as u32,
                group,
                txn(inner),
                self.now + self.opts.request_timeout_ms,
            );
        }
    }

    // ---- lock resolution ----

    fn resolve_event(&mut self, id: TaskId, t: ResolveTask, event: Event) -> Option<Task> {
        let Event::Reply(step, reply) = event else {
            return Some(Task::Resolve(t));
        };
        if step == 0 {
            let decision = match reply {
                Reply::Ok(_) => Some(Decision::Abort),
                Reply::NotDone(Refusal::Fenced {
                    current: Some(v), ..
                }) => Decision::from_value(&v),
                _ => None,
            };
            let Some(decision) = decision else {
                self.resolving.retain(|o| *o != t.owner);
                return None;
            };
            let Some((_, _, user_key)) = split_stored(&t.key) else {
                self.resolving.retain(|o| *o != t.owner);
                return None;
            };
            let user_key = user_key.to_string();
            let Some(p) = self.map.locate(&user_key).cloned() else {
                self.resolving.retain(|o| *o != t.owner);
                return None;
            };
            let part = Part {
                group: p.group,
                partitions: vec![(p.id, p.epoch)],
                micro: Vec::new(),
                keys: vec![(p.id, user_key.clone())],
                state: PartState::Sent,
            };
            let mut inner = self.fences(&part);
            inner.push(Op::Fence {
                key: lock_key(p.id, &user_key),
                expected: Some(Value::Str(t.owner.clone())),
            });
            if let Decision::Commit { writes } = &decision {
                if let Some((_, v)) = writes.iter().find(|(k, _)| *k == user_key) {
                    inner.push(Op::Put {
                        key: data_key(p.id, &user_key),
                        value: v.clone(),
                    });
                }
            }
            inner.push(Op::Unlock {
                key: lock_key(p.id, &user_key),
                owner: t.owner.clone(),
            });
            self.call(id, 1, p.group, txn(inner), t.deadline_ms);
            return Some(Task::Resolve(t));
        }
        self.resolving.retain(|o| *o != t.owner);
        self.lock_seen.remove(&t.owner);
        None
    }

    // ---- rebalancing ----

    fn start_rebalance(&mut self, admin: ClientId, op: AdminOp) {
        let id = self.fresh_id();
        let t = RebalanceTask {
            admin,
            op,
            settling: op == AdminOp::Settle,
            plan: None,
            deadline_ms: self.now + REBALANCE_TIMEOUT_MS,
            map: None,
            map_raw: None,
            next: None,
            sources: Vec::new(),
            from: 0,
            to: 0,
            dest: 0,
            entries: Vec::new(),
            copied: 0,
            keys_copied: 0,
            frozen_at: None,
        };
        let read = match op {
            // What the lock names is the change to finish.
            AdminOp::Settle => txn(vec![
                Op::Get {
                    key: MAP_KEY.into(),
                },
                Op::Get {
                    key: MAP_LOCK_KEY.into(),
                },
            ]),
            _ => txn(vec![Op::Get {
                key: MAP_KEY.into(),
            }]),
        };
        self.call(id, RB_MAP, 0, read, t.deadline_ms);
        self.tasks.insert(id, Task::Rebalance(Box::new(t)));
    }

    fn admin_reply(&mut self, admin: ClientId, reply: AdminReply) {
        if admin != AUTO_ADMIN {
            self.out.push(Effect::AdminReply { admin, reply });
        }
    }

    fn rebalance_event(
        &mut self,
        id: TaskId,
        mut t: Box<RebalanceTask>,
        event: Event,
    ) -> Option<Task> {
        let Event::Reply(step, reply) = event else {
            return Some(Task::Rebalance(t));
        };
        match self.rebalance_step(id, &mut t, step, reply) {
            Ok(true) => Some(Task::Rebalance(t)),
            Ok(false) => None,
            Err(reply) => {
                self.admin_reply(t.admin, reply);
                None
            }
        }
    }

    /// One answer of a rebalance's calls; `Ok(true)`: more to come.
    fn rebalance_step(
        &mut self,
        id: TaskId,
        t: &mut RebalanceTask,
        step: u32,
        reply: Reply,
    ) -> Result<bool, AdminReply> {
        let unknown = |what: &str, r: &Reply| AdminReply::Unknown(format!("{what}: {r:?}"));
        let refused = |e: super::map::MapError| AdminReply::Refused(e.to_string());
        match step {
            RB_MAP => {
                let Reply::Ok(OpResult::Txn(results)) = &reply else {
                    return Err(AdminReply::Refused(format!(
                        "the map could not be read: {reply:?}"
                    )));
                };
                let (map, raw) = match results.first().and_then(newest_map) {
                    Some((m, v)) => (m, Some(v)),
                    None => (ShardMap::initial(&self.opts), None),
                };
                if map.epoch > self.map.epoch {
                    self.map = map.clone();
                }
                t.map = Some(map.clone());
                t.map_raw = raw;
                let plan = match t.op {
                    AdminOp::Rebalance(change) => Plan {
                        epoch: map.epoch,
                        change,
                        at: None,
                    },
                    AdminOp::Settle => {
                        let held = match results.get(1) {
                            Some(OpResult::Value(Some(Value::Str(s)))) if !s.is_empty() => {
                                s.clone()
                            }
                            _ => {
                                self.admin_reply(t.admin, AdminReply::Partitions(map));
                                return Ok(false);
                            }
                        };
                        let plan: Plan = serde_json::from_str(&held).map_err(|e| {
                            AdminReply::Refused(format!("the rebalance lock holds {held:?}: {e}"))
                        })?;
                        if plan.epoch != map.epoch {
                            return Err(AdminReply::Refused(format!(
                                "the rebalance lock names a change planned at epoch {} but the map is at {}",
                                plan.epoch, map.epoch
                            )));
                        }
                        t.op = AdminOp::Rebalance(plan.change);
                        plan
                    }
                    _ => {
                        self.admin_reply(t.admin, AdminReply::Partitions(map));
                        return Ok(false);
                    }
                };
                let epoch = map.next_epoch();
                match plan.change {
                    Rebalance::Move { partition, to } => {
                        if to as usize >= self.members.len() {
                            return Err(AdminReply::Refused(format!("no group {to}")));
                        }
                        let p = map
                            .get(partition)
                            .ok_or(AdminReply::Refused(format!("no partition {partition}")))?;
                        t.from = p.group;
                        t.to = to;
                        t.dest = partition;
                        t.sources = vec![partition];
                        t.next = Some(map.moved(partition, to, epoch).map_err(refused)?);
                    }
                    Rebalance::Merge { partition } => {
                        let into = map.merge_partner(partition).map_err(refused)?;
                        let next = map.merged(partition, into, epoch).map_err(refused)?;
                        let p = map
                            .get(partition)
                            .ok_or(AdminReply::Refused(format!("no partition {partition}")))?;
                        t.from = p.group;
                        t.to = p.group;
                        t.dest = into;
                        t.sources = vec![partition, into];
                        t.next = Some(next);
                    }
                    Rebalance::Split { partition } => {
                        let p = map
                            .get(partition)
                            .ok_or(AdminReply::Refused(format!("no partition {partition}")))?;
                        t.from = p.group;
                        t.to = p.group;
                        t.sources = vec![partition];
                        if let Some(at) = &plan.at {
                            let (next, new_id) =
                                map.split(partition, at, epoch).map_err(refused)?;
                            t.dest = new_id;
                            t.next = Some(next);
                        } else {
                            // First a look at its keys, to choose where to cut.
                            t.plan = Some(plan);
                            self.call(
                                id,
                                RB_PEEK,
                                p.group,
                                Op::Scan {
                                    prefix: partition_prefix(partition),
                                },
                                t.deadline_ms,
                            );
                            return Ok(true);
                        }
                    }
                }
                t.plan = Some(plan);
                self.rebalance_lock(id, t);
                Ok(true)
            }
            RB_PEEK => {
                let Reply::Ok(OpResult::Entries(entries)) = reply else {
                    return Err(AdminReply::Refused(format!(
                        "the partition could not be read: {reply:?}"
                    )));
                };
                let map = t.map.clone().unwrap_or_else(|| self.map.clone());
                let pid = t.sources[0];
                let mut keys: Vec<String> = entries
                    .iter()
                    .filter_map(|(k, _)| split_stored(k))
                    .filter(|(p, kind, key)| {
                        *p == pid && *kind == 'd' && map.locate(key).is_some_and(|x| x.id == pid)
                    })
                    .map(|(_, _, key)| key.to_string())
                    .collect();
                keys.sort();
                let at = map.split_point(pid, &keys).map_err(refused)?;
                let (next, new_id) = map.split(pid, &at, map.next_epoch()).map_err(refused)?;
                t.dest = new_id;
                t.next = Some(next);
                if let Some(plan) = t.plan.as_mut() {
                    plan.at = Some(at);
                }
                self.rebalance_lock(id, t);
                Ok(true)
            }
            RB_LOCK => {
                match &reply {
                    Reply::Ok(_) => {}
                    Reply::NotDone(Refusal::Fenced { current, .. }) => {
                        return Err(AdminReply::Refused(format!(
                            "another rebalance is in progress; try again ({})",
                            current.as_ref().map_or(String::new(), |v| format!("{v:?}"))
                        )))
                    }
                    _ => return Err(unknown("taking the rebalance lock", &reply)),
                }
                self.rebalance_freeze(id, t);
                Ok(true)
            }
            RB_FREEZE => {
                match &reply {
                    Reply::Ok(_) => {}
                    // Frozen (or already handed over) by this very change, cut
                    // short before: only the lock's holder writes this epoch.
                    Reply::NotDone(Refusal::Fenced { current, .. })
                        if current
                            .as_ref()
                            .and_then(Ownership::from_value)
                            .is_some_and(|o| o.epoch() == self.next_epoch(t)) => {}
                    Reply::NotDone(r) => {
                        self.rebalance_unlock(t);
                        return Err(AdminReply::Refused(format!(
                            "the partitions changed under the rebalance: {r:?}"
                        )));
                    }
                    _ => return Err(unknown("freezing the partitions", &reply)),
                }
                t.frozen_at = Some(self.now);
                self.call(
                    id,
                    RB_SCAN,
                    t.from,
                    Op::Scan {
                        prefix: partition_prefix(t.sources[0]),
                    },
                    t.deadline_ms,
                );
                Ok(true)
            }
            RB_SCAN => {
                let Reply::Ok(OpResult::Entries(entries)) = reply else {
                    return Err(unknown("reading the partition", &reply));
                };
                let map = t.map.clone().unwrap_or_else(|| self.map.clone());
                let next = t.next.clone().unwrap_or_else(|| map.clone());
                let src = t.sources[0];
                let dest = t.dest;
                let split = matches!(t.op, AdminOp::Rebalance(Rebalance::Split { .. }));
                // Only what the old map places in the partition: what a split or merge left behind is not copied.
                t.entries = entries
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let (p, kind, key) = split_stored(&k)?;
                        if p != src || map.locate(key).map(|x| x.id) != Some(src) {
                            return None;
                        }
                        if split && next.locate(key).map(|x| x.id) != Some(dest) {
                            return None;
                        }
                        let stored = if kind == 'd' {
                            data_key(dest, key)
                        } else {
                            lock_key(dest, key)
                        };
                        Some((stored, v))
                    })
                    .collect();
                t.keys_copied = t
                    .entries
                    .iter()
                    .filter(|(k, _)| split_stored(k).is_some_and(|x| x.1 == 'd'))
                    .count() as u64;
                t.copied = 0;
                self.rebalance_copy(id, t);
                Ok(true)
            }
            RB_COPY => {
                if !matches!(reply, Reply::Ok(_)) {
                    return Err(unknown("copying the partition", &reply));
                }
                self.rebalance_copy(id, t);
                Ok(true)
            }
            RB_OWN => {
                if !matches!(reply, Reply::Ok(_)) {
                    return Err(unknown("handing the partitions over", &reply));
                }
                self.rebalance_write_map(id, t);
                Ok(true)
            }
            RB_WRITE_MAP => match reply {
                Reply::Ok(_) => {
                    let next = t.next.clone().unwrap_or_else(|| self.map.clone());
                    self.map = next.clone();
                    let summary = self.rebalance_summary(t, &next);
                    let mut partitions = t.sources.clone();
                    if !partitions.contains(&t.dest) {
                        partitions.push(t.dest);
                    }
                    let done = RebalanceDone {
                        summary,
                        partitions,
                        map_epoch: next.epoch,
                        keys_copied: t.keys_copied,
                        frozen_ms: t.frozen_at.map_or(0, |f| self.now.saturating_sub(f)),
                    };
                    let answer = if t.settling {
                        AdminReply::Partitions(next)
                    } else {
                        AdminReply::Rebalanced(done)
                    };
                    self.admin_reply(t.admin, answer);
                    Ok(false)
                }
                other => Err(unknown("writing the new map", &other)),
            },
            _ => Ok(false),
        }
    }

    fn next_epoch(&self, t: &RebalanceTask) -> u64 {
        t.next.as_ref().map_or(0, |m| m.epoch)
    }

    fn lock_owner_of(t: &RebalanceTask) -> String {
        t.plan
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// One change at a time: the lock at group 0 names it, so that a
    /// change cut short (its node killed) can be finished by `settle`.
    fn rebalance_lock(&mut self, id: TaskId, t: &mut RebalanceTask) {
        let op = Op::Lock {
            key: MAP_LOCK_KEY.into(),
            owner: Self::lock_owner_of(t),
        };
        self.call(id, RB_LOCK, 0, txn(vec![op]), t.deadline_ms);
    }

    fn rebalance_unlock(&mut self, t: &RebalanceTask) {
        let op = Op::Unlock {
            key: MAP_LOCK_KEY.into(),
            owner: Self::lock_owner_of(t),
        };
        self.call(
            NO_TASK,
            0,
            0,
            txn(vec![op]),
            self.now + self.opts.request_timeout_ms,
        );
    }

    fn rebalance_freeze(&mut self, id: TaskId, t: &mut RebalanceTask) {
        let map = t.map.clone().unwrap_or_else(|| self.map.clone());
        if !self.fenced() {
            self.call(
                id,
                RB_SCAN,
                t.from,
                Op::Scan {
                    prefix: partition_prefix(t.sources[0]),
                },
                t.deadline_ms,
            );
            t.frozen_at = Some(self.now);
            return;
        }
        let frozen = Ownership::Frozen {
            epoch: self.next_epoch(t),
        }
        .to_value();
        let mut ops = Vec::new();
        for p in &t.sources {
            let epoch = map.get(*p).map_or(1, |x| x.epoch);
            ops.push(Op::Fence {
                key: own_key(*p),
                expected: Ownership::expected(epoch),
            });
        }
        for p in &t.sources {
            ops.push(Op::Put {
                key: own_key(*p),
                value: frozen.clone(),
            });
        }
        self.call(id, RB_FREEZE, t.from, txn(ops), t.deadline_ms);
    }

    fn rebalance_copy(&mut self, id: TaskId, t: &mut RebalanceTask) {
        if t.copied < t.entries.len() {
            let end = (t.copied + COPY_CHUNK).min(t.entries.len());
            let ops: Vec<Op> = t.entries[t.copied..end]
                .iter()
                .map(|(k, v)| Op::Put {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect();
            t.copied = end;
            self.call(id, RB_COPY, t.to, txn(ops), t.deadline_ms);
            return;
        }
        if !self.fenced() {
            self.rebalance_write_map(id, t);
            return;
        }
        let epoch = self.next_epoch(t);
        let mut ops = vec![Op::Put {
            key: own_key(t.dest),
            value: Ownership::Owned { epoch }.to_value(),
        }];
        match t.op {
            AdminOp::Rebalance(Rebalance::Split { .. }) => ops.push(Op::Put {
                key: own_key(t.sources[0]),
                value: Ownership::Owned { epoch }.to_value(),
            }),
            AdminOp::Rebalance(Rebalance::Merge { partition }) => ops.push(Op::Put {
                key: own_key(partition),
                value: Ownership::Gone { epoch }.to_value(),
            }),
            _ => {}
        }
        self.call(id, RB_OWN, t.to, txn(ops), t.deadline_ms);
    }

    /// The new map and the lock's release, in one write.
    fn rebalance_write_map(&mut self, id: TaskId, t: &mut RebalanceTask) {
        let next = t.next.clone().unwrap_or_else(|| self.map.clone());
        let owner = Self::lock_owner_of(t);
        let ops = vec![
            Op::Fence {
                key: MAP_LOCK_KEY.into(),
                expected: Some(Value::Str(owner.clone())),
            },
            Op::Fence {
                key: MAP_KEY.into(),
                expected: t.map_raw.clone(),
            },
            Op::Put {
                key: MAP_KEY.into(),
                value: map_value(&next),
            },
            Op::Unlock {
                key: MAP_LOCK_KEY.into(),
                owner,
            },
        ];
        self.call(id, RB_WRITE_MAP, 0, txn(ops), t.deadline_ms);
    }

    fn rebalance_summary(&self, t: &RebalanceTask, next: &ShardMap) -> String {
        let keys = t.keys_copied;
        match t.op {
            AdminOp::Rebalance(Rebalance::Move { partition, to }) => format!(
                "partition {partition} moved from group {} to group {to} at epoch {} ({keys} keys)",
                t.from, next.epoch
            ),
            AdminOp::Rebalance(Rebalance::Split { partition }) => format!(
                "partition {partition} on group {} split: partition {} took {keys} keys at epoch {}",
                t.from, t.dest, next.epoch
            ),
            AdminOp::Rebalance(Rebalance::Merge { partition }) => format!(
                "partition {partition} merged into partition {} on group {} at epoch {} ({keys} keys)",
                t.dest, t.from, next.epoch
            ),
            _ => String::new(),
        }
    }

    /// Range scheme with `split_after_keys`: a node leading a group looks
    /// at that group's partitions now and then, splits one past the limit
    /// and merges two small neighbours.
    fn auto_split_check(&mut self) {
        let limit = self.opts.split_after_keys;
        if limit == 0 || self.map.scheme != crate::config::Scheme::Range {
            return;
        }
        let led: Vec<GroupId> = self
            .local
            .iter()
            .filter(|(_, c)| c.status().role == "leader")
            .map(|(g, _)| *g)
            .collect();
        for g in led {
            let mine: Vec<PartitionId> = self
                .map
                .partitions
                .iter()
                .filter(|p| p.group == g)
                .map(|p| p.id)
                .collect();
            for pid in mine {
                let id = self.fresh_id();
                let deadline = self.now + self.opts.request_timeout_ms;
                let prefix = partition_prefix(pid);
                self.tasks.insert(id, Task::Size(pid));
                self.call(id, 0, g, Op::Scan { prefix }, deadline);
            }
        }
    }

    fn size_event(&mut self, pid: PartitionId, event: Event) {
        let Event::Reply(_, Reply::Ok(OpResult::Entries(entries))) = event else {
            return;
        };
        let keys = entries
            .iter()
            .filter_map(|(k, _)| split_stored(k))
            .filter(|(p, kind, key)| {
                *p == pid && *kind == 'd' && self.map.locate(key).is_some_and(|x| x.id == pid)
            })
            .count() as u64;
        let limit = self.opts.split_after_keys;
        let change = if keys > limit {
            Some(Rebalance::Split { partition: pid })
        } else if keys < limit / 4 {
            // A small range folds into a small neighbour on its group.
            self.map.merge_partner(pid).ok().and_then(|into| {
                let (a, b) = (self.map.get(pid)?, self.map.get(into)?);
                (a.group == b.group && self.sizes.get(&into).is_some_and(|n| *n < limit / 4))
                    .then_some(Rebalance::Merge { partition: pid })
            })
        } else {
            None
        };
        self.sizes.insert(pid, keys);
        if let Some(rb) = change {
            if !self.tasks.values().any(|t| matches!(t, Task::Rebalance(_))) {
                self.start_rebalance(AUTO_ADMIN, AdminOp::Rebalance(rb));
            }
        }
    }

    // ---- the clock ----

    /// The same input (a tick, a flush) to every group's core on this node.
    fn step_every_group(&mut self, now_ms: u64, input: impl Fn() -> Input) {
        let groups: Vec<GroupId> = self.local.keys().copied().collect();
        for g in groups {
            let fx = self
                .local
                .get_mut(&g)
                .map(|c| c.step(now_ms, input()))
                .unwrap_or_default();
            self.absorb(g, fx);
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        let due: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.retry_at.is_some_and(|at| now >= at)
                    || now >= c.deadline_ms
                    || (c.op.is_read_only()
                        && c.target != self.me
                        && c.retry_at.is_none()
                        && now >= c.sent_ms + READ_RETRY_MS)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            if now >= call.deadline_ms {
                let read = call.op.is_read_only();
                let call = self.calls.remove(&id).unwrap();
                // A forwarded write that was never answered may yet happen.
                let reply = if read {
                    Reply::NotDone(Refusal::Unreachable(
                        "no member of the group answered".into(),
                    ))
                } else {
                    Reply::Unknown("the group did not answer in time".into())
                };
                self.waiters
                    .retain(|_, w| !matches!(w, Waiter::Call(c) if *c == id));
                self.deliver(call.task, Event::Reply(call.step, reply));
                continue;
            }
            if call.retry_at.is_none() {
                // A silent member, for a read: ask another.
                let (group, target) = (call.group, call.target);
                let next = self.target_for(group, Some(target));
                let call = self.calls.get_mut(&id).unwrap();
                call.target = next;
                self.hints.remove(&call.group);
            }
            self.send_call(id);
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wakes)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.wakes = later;
        for (_, task) in due {
            self.deliver(task, Event::Wake);
        }
        if now >= self.map_read_at_ms + self.opts.map_refresh_ms {
            self.refresh_map(None);
        }
        if now >= self.size_check_at_ms + SIZE_CHECK_MS {
            self.size_check_at_ms = now;
            self.auto_split_check();
        }
        self.lock_seen
            .retain(|_, first| now.saturating_sub(*first) < 60_000);
    }
}

const RB_MAP: u32 = 0;
const RB_PEEK: u32 = 1;
const RB_LOCK: u32 = 7;
const RB_FREEZE: u32 = 2;
const RB_SCAN: u32 = 3;
const RB_COPY: u32 = 4;
const RB_OWN: u32 = 5;
const RB_WRITE_MAP: u32 = 6;

/// Records a decision unless one is there: the first decision wins.
fn txn_decide(txn_id: &str, d: &Decision) -> Op {
    txn(vec![
        Op::Fence {
            key: decision_key(txn_id),
            expected: None,
        },
        Op::Put {
            key: decision_key(txn_id),
            value: d.to_value(),
        },
    ])
}

impl Core for Sharded {
    fn step(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        self.now = now_ms;
        if self.boot_ms.is_none() {
            self.boot_ms = Some(now_ms);
        }
        match input {
            Input::Client { client, request } => {
                if request.op.micro_ops().iter().any(is_store_op) {
                    self.reply(
                        client,
                        request.id,
                        Reply::Error("scans, locks and fences are the sharded store's own".into()),
                    );
                } else {
                    self.start_op(client, request);
                }
            }
            Input::Peer {
                from,
                msg: PeerMsg::Protocol(bytes),
            } => match decode::<Wire>(&bytes.0) {
                Ok(Wire::Group { group, msg }) => {
                    let idx = self
                        .members
                        .get(group as usize)
                        .and_then(|m| m.iter().position(|n| *n == from));
                    if let (Some(idx), Some(core)) = (idx, self.local.get_mut(&group)) {
                        let fx = core.step(
                            now_ms,
                            Input::Peer {
                                from: idx as NodeId,
                                msg,
                            },
                        );
                        self.absorb(group, fx);
                    }
                }
                Ok(Wire::Call {
                    call,
                    group,
                    request,
                }) => {
                    if self.local.contains_key(&group) {
                        let inner = self.fresh_id();
                        self.waiters.insert(inner, Waiter::Peer { from, call });
                        self.local_request(group, inner, request);
                    } else {
                        self.send(
                            from,
                            &Wire::CallReply {
                                call,
                                response: Response {
                                    id: request.id,
                                    reply: Reply::NotDone(Refusal::NotLeader { leader: None }),
                                },
                            },
                        );
                    }
                }
                Ok(Wire::CallReply { call, response }) => {
                    if self.calls.get(&call).is_some_and(|c| c.target == from) {
                        self.call_answered(call, response.reply);
                    }
                }
                Err(_) => {}
            },
            Input::Peer { .. } => {}
            Input::Tick => {
                self.step_every_group(now_ms, || Input::Tick);
                self.drain();
                self.tick();
            }
            Input::Flush => self.step_every_group(now_ms, || Input::Flush),
        }
        self.drain();
        std::mem::take(&mut self.out)
    }

    fn admin(&mut self, now_ms: u64, admin: ClientId, op: AdminOp) -> Vec<Effect> {
        self.now = now_ms;
        match op {
            AdminOp::Partitions | AdminOp::Rebalance(_) | AdminOp::Settle => {
                self.start_rebalance(admin, op)
            }
            _ => self.admin_reply(
                admin,
                AdminReply::Refused(
                    "a sharded store changes its partitions, not its members".into(),
                ),
            ),
        }
        self.drain();
        std::mem::take(&mut self.out)
    }

    fn status(&self) -> CoreStatus {
        let mut role = Vec::new();
        let (mut keys, mut commit, mut last) = (0, 0, 0);
        for (g, core) in &self.local {
            let s = core.status();
            role.push(format!("g{g}:{}", s.role));
            keys += s.keys;
            commit += s.commit_index;
            last += s.last_index;
        }
        // The leader of group 0, the directory, in the cluster's numbering.
        let leader = self
            .local
            .get(&0)
            .and_then(|c| c.status().leader)
            .and_then(|l| self.members[0].get(l as usize).copied());
        CoreStatus {
            role: role.join(" "),
            epoch: self.map.epoch,
            leader,
            keys,
            commit_index: commit,
            last_index: last,
        }
    }

    fn snapshot_records(&self) -> Vec<WalRecord> {
        self.local
            .iter()
            .flat_map(|(g, core)| {
                core.snapshot_records()
                    .into_iter()
                    .map(move |r| wrap_record(*g, &r))
            })
            .collect()
    }

    fn data_digest(&self) -> Option<u64> {
        None
    }
}
