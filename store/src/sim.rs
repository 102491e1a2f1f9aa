//! A deterministic simulator: N cores of any mode, a simulated network with
//! loss, random delay (hence reordering) and partitions, per-node clock
//! offsets, crashes and restarts from each node's durable log (a crash loses
//! what the cluster's `fsync` setting had not yet made durable). Clients talk
//! to nodes as over TCP: a request to a stopped node is refused, one in flight
//! when its node stops has an unknown outcome. Everything is drawn from one
//! seed, so a seed replays exactly.

use crate::admin::NodeStatus;
use crate::config::{ClusterConfig, Fsync};
use crate::core::{
    build_core, AdminOp, AdminReply, ClientId, Core, Effect, Input, PeerMsg, SeededRng, WalRecord,
};
use crate::msg::{NodeId, Op, Refusal, Reply, Request, RequestOptions, Response};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

#[derive(Clone, Debug)]
pub struct NetOptions {
    /// Probability that a message is dropped.
    pub loss: f64,
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    /// How often every node gets a `Tick`.
    pub tick_ms: u64,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            loss: 0.0,
            delay_min_ms: 1,
            delay_max_ms: 5,
            tick_ms: 5,
        }
    }
}

enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: PeerMsg,
    },
    Client {
        node: NodeId,
        client: ClientId,
        request: Request,
    },
    Tick {
        node: NodeId,
    },
    Admin {
        node: NodeId,
        admin: ClientId,
        op: AdminOp,
    },
}

/// What a simulated client saw for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    pub invoked_ms: u64,
    pub completed_ms: u64,
    pub response: Response,
}

pub struct Sim {
    cfg: ClusterConfig,
    seed: u64,
    net: NetOptions,
    rng: SeededRng,
    now_ms: u64,
    nodes: Vec<Option<Box<dyn Core>>>,
    disks: Vec<Vec<WalRecord>>,
    /// Records written but not yet flushed to stable storage; a crash loses them.
    unsynced: Vec<Vec<WalRecord>>,
    last_sync_ms: Vec<u64>,
    clock_offsets_ms: Vec<i64>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    invoked: BTreeMap<ClientId, u64>,
    /// Where each request without a reply was sent.
    outstanding: BTreeMap<ClientId, NodeId>,
    completed: BTreeMap<ClientId, Completed>,
    next_client: ClientId,
    /// Admin requests without an answer, and the answers.
    admin_outstanding: BTreeSet<ClientId>,
    admin_done: BTreeMap<ClientId, AdminReply>,
}

/// A simulated node's core. Its log holds only what its own mode wrote, so a
/// refusal means the cluster file names a mode this build lacks.
fn sim_core(
    cfg: &ClusterConfig,
    node: NodeId,
    seed: u64,
    recovered: Vec<WalRecord>,
) -> Box<dyn Core> {
    build_core(cfg, node, seed, recovered).unwrap_or_else(|e| panic!("simulated node {node}: {e}"))
}

/// With `fsync = never`, records reach the disk when this many are buffered
/// (a stand-in for the process's write buffer filling).
const NEVER_SYNC_BUFFER_RECORDS: usize = 4096;

/// Node clocks start here so that negative offsets stay representable.
const CLOCK_BASE_MS: u64 = 1_000_000;

impl Sim {
    pub fn new(cfg: ClusterConfig, seed: u64, net: NetOptions) -> Self {
        let n = cfg.nodes.len();
        let mut sim = Sim {
            nodes: (0..n)
                .map(|i| Some(sim_core(&cfg, i as NodeId, seed, Vec::new())))
                .collect(),
            cfg,
            seed,
            net,
            rng: SeededRng::new(seed),
            now_ms: 0,
            disks: vec![Vec::new(); n],
            unsynced: vec![Vec::new(); n],
            last_sync_ms: vec![0; n],
            clock_offsets_ms: vec![0; n],
            blocked: BTreeSet::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            invoked: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            completed: BTreeMap::new(),
            next_client: 1,
            admin_outstanding: BTreeSet::new(),
            admin_done: BTreeMap::new(),
        };
        for node in 0..n as NodeId {
            let jitter = sim.rng.below(sim.net.tick_ms.max(1));
            sim.schedule(jitter, Event::Tick { node });
        }
        sim
    }

    /// A cluster file with `n` nodes (addresses unused by the simulator).
    pub fn cluster(n: usize) -> ClusterConfig {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "[[nodes]]\nid = \"n{}\"\nclient = \"sim:{i}\"\npeer = \"sim:{i}\"\nadmin = \"sim:{i}\"\n",
                i + 1
            ));
        }
        ClusterConfig::parse(&text).unwrap_or_else(|e| panic!("built-in cluster file: {e}"))
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.insert(self.seq, event);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn node_clock(&self, node: NodeId) -> u64 {
        (CLOCK_BASE_MS + self.now_ms).saturating_add_signed(self.clock_offsets_ms[node as usize])
    }

    pub fn set_clock_offset(&mut self, node: NodeId, offset_ms: i64) {
        self.clock_offsets_ms[node as usize] = offset_ms;
    }

    /// Blocks traffic between the groups (both directions); nodes in no group are unaffected.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for x in a {
                    for y in b {
                        self.blocked.insert((*x, *y));
                        self.blocked.insert((*y, *x));
                    }
                }
            }
        }
    }

    pub fn isolate(&mut self, node: NodeId) {
        let others: Vec<NodeId> = (0..self.nodes.len() as NodeId)
            .filter(|n| *n != node)
            .collect();
        self.partition(&[vec![node], others]);
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether traffic from `from` to `to` is blocked.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Changes the probability that a message is dropped.
    pub fn set_loss(&mut self, loss: f64) {
        self.net.loss = loss;
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Stops the node; its volatile state is gone, and so are log records
    /// not yet flushed; its durable log stays. Requests it was serving lose
    /// their connection: their outcome is unknown.
    pub fn crash(&mut self, node: NodeId) {
        self.nodes[node as usize] = None;
        self.unsynced[node as usize].clear();
        let lost: Vec<ClientId> = self
            .outstanding
            .iter()
            .filter(|(_, n)| **n == node)
            .map(|(c, _)| *c)
            .collect();
        for client in lost {
            self.complete(client, Reply::Unknown("connection closed".into()));
        }
    }

    fn complete(&mut self, client: ClientId, reply: Reply) {
        self.outstanding.remove(&client);
        let invoked_ms = self.invoked.remove(&client).unwrap_or(0);
        self.completed.entry(client).or_insert(Completed {
            invoked_ms,
            completed_ms: self.now_ms,
            response: Response { id: client, reply },
        });
    }

    /// A hash of the data `node` serves, if it is up and its mode says (see
    /// [`crate::protocol::Protocol::data_digest`]).
    pub fn data_digest(&self, node: NodeId) -> Option<u64> {
        self.nodes[node as usize].as_ref()?.data_digest()
    }

    pub fn restart(&mut self, node: NodeId) {
        let recovered = self.disks[node as usize].clone();
        self.nodes[node as usize] = Some(sim_core(
            &self.cfg,
            node,
            self.seed ^ self.now_ms,
            recovered,
        ));
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes[node as usize].is_some()
    }

    /// What the node's admin port would report.
    pub fn status(&self, node: NodeId) -> Option<NodeStatus> {
        self.nodes[node as usize].as_ref().map(|c| {
            NodeStatus::new(
                &self.cfg,
                node,
                &c.status(),
                self.clock_offsets_ms[node as usize],
            )
        })
    }

    /// The first live node that takes itself for the leader, if any (single-leader mode).
    pub fn leader(&self) -> Option<NodeId> {
        (0..self.nodes.len() as NodeId).find(|n| {
            self.nodes[*n as usize]
                .as_ref()
                .is_some_and(|c| c.status().role == "leader")
        })
    }

    /// Sends a request from a fresh client to `node`; returns the client id.
    /// A stopped node refuses the connection: definitely not done.
    pub fn submit(&mut self, node: NodeId, op: Op, options: RequestOptions) -> ClientId {
        let client = self.next_client;
        self.next_client += 1;
        self.invoked.insert(client, self.now_ms);
        if !self.is_up(node) {
            self.complete(
                client,
                Reply::NotDone(Refusal::Unreachable("connection refused".into())),
            );
            return client;
        }
        self.outstanding.insert(client, node);
        let request = Request {
            id: client,
            op,
            options,
        };
        let delay = self.delay();
        self.schedule(
            self.now_ms + delay,
            Event::Client {
                node,
                client,
                request,
            },
        );
        client
    }

    pub fn completion(&self, client: ClientId) -> Option<&Completed> {
        self.completed.get(&client)
    }

    /// Every completion not taken yet, in client-id order.
    pub fn take_completed(&mut self) -> Vec<(ClientId, Completed)> {
        std::mem::take(&mut self.completed).into_iter().collect()
    }

    /// When the next event is due, if any.
    pub fn next_event_ms(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs a request to completion or until `timeout_ms` passes.
    pub fn call(
        &mut self,
        node: NodeId,
        op: Op,
        options: RequestOptions,
        timeout_ms: u64,
    ) -> Option<Completed> {
        let client = self.submit(node, op, options);
        let deadline = self.now_ms + timeout_ms;
        while self.now_ms < deadline && !self.completed.contains_key(&client) {
            let next = (self.now_ms + 1).min(deadline);
            self.run_until(next);
        }
        self.completed.get(&client).cloned()
    }

    /// Sends an admin request to `node` and runs until it is answered or
    /// `timeout_ms` passes (`None`: no answer, its outcome unknown).
    pub fn admin_call(&mut self, node: NodeId, op: AdminOp, timeout_ms: u64) -> Option<AdminReply> {
        if !self.is_up(node) {
            return Some(AdminReply::NotLeader { leader: None });
        }
        let admin = self.next_client;
        self.next_client += 1;
        self.admin_outstanding.insert(admin);
        let delay = self.delay();
        self.schedule(self.now_ms + delay, Event::Admin { node, admin, op });
        let deadline = self.now_ms + timeout_ms;
        while self.now_ms < deadline && !self.admin_done.contains_key(&admin) {
            let next = (self.now_ms + 1).min(deadline);
            self.run_until(next);
        }
        self.admin_outstanding.remove(&admin);
        self.admin_done.remove(&admin)
    }

    fn delay(&mut self) -> u64 {
        let span = self.net.delay_max_ms.saturating_sub(self.net.delay_min_ms) + 1;
        self.net.delay_min_ms + self.rng.below(span)
    }

    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now_ms + ms);
    }

    pub fn run_until(&mut self, until_ms: u64) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until_ms {
                break;
            }
            self.queue.pop();
            self.now_ms = self.now_ms.max(at);
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            match event {
                Event::Tick { node } => {
                    self.sync_if_due(node);
                    self.step(node, Input::Tick);
                    let at = self.now_ms + self.net.tick_ms.max(1);
                    self.schedule(at, Event::Tick { node });
                }
                Event::Deliver { from, to, msg } => {
                    if !self.blocked.contains(&(from, to)) {
                        self.step(to, Input::Peer { from, msg });
                    }
                }
                Event::Client {
                    node,
                    client,
                    request,
                } => {
                    if self.is_up(node) {
                        self.step(node, Input::Client { client, request });
                    } else {
                        self.complete(client, Reply::Unknown("connection closed".into()));
                    }
                }
                Event::Admin { node, admin, op } => {
                    let now = self.node_clock(node);
                    if let Some(core) = self.nodes[node as usize].as_mut() {
                        let mut effects = core.admin(now, admin, op);
                        effects.extend(core.step(now, Input::Flush));
                        self.perform(node, effects);
                    }
                }
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    fn step(&mut self, node: NodeId, input: Input) {
        let now = self.node_clock(node);
        let Some(core) = self.nodes[node as usize].as_mut() else {
            return;
        };
        let mut effects = core.step(now, input);
        effects.extend(core.step(now, Input::Flush));
        self.perform(node, effects);
    }

    fn perform(&mut self, node: NodeId, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => {
                    let lost = self.net.loss > 0.0
                        && (self.rng.below(1_000_000) as f64) < self.net.loss * 1e6;
                    if !lost && !self.blocked.contains(&(node, to)) {
                        let at = self.now_ms + self.delay();
                        self.schedule(
                            at,
                            Event::Deliver {
                                from: node,
                                to,
                                msg,
                            },
                        );
                    }
                }
                Effect::Persist(rec) => match self.cfg.fsync {
                    Fsync::Always => self.disks[node as usize].push(rec),
                    Fsync::IntervalMs(_) | Fsync::Never => self.unsynced[node as usize].push(rec),
                },
                Effect::Reply { client, response } => {
                    if self.outstanding.contains_key(&client) {
                        self.complete(client, response.reply);
                    }
                }
                Effect::AdminReply { admin, reply } => {
                    if self.admin_outstanding.contains(&admin) {
                        self.admin_done.insert(admin, reply);
                    }
                }
            }
        }
    }

    /// Flushes the node's written records when its `fsync` setting says so:
    /// every interval, or (never) only when the process's buffer fills.
    fn sync_if_due(&mut self, node: NodeId) {
        let i = node as usize;
        let due = match self.cfg.fsync {
            Fsync::Always => false,
            Fsync::IntervalMs(ms) => self.now_ms >= self.last_sync_ms[i] + ms,
            Fsync::Never => self.unsynced[i].len() >= NEVER_SYNC_BUFFER_RECORDS,
        };
        if due {
            let records = std::mem::take(&mut self.unsynced[i]);
            self.disks[i].extend(records);
            self.last_sync_ms[i] = self.now_ms;
        }
    }

    /// Every node's durable log length (for tests of compaction and recovery).
    pub fn disk_len(&self, node: NodeId) -> usize {
        self.disks[node as usize].len()
    }
}

/// Feeds `data`, as the frames a peer port would read from it, to a fresh
/// core of every mode as peer messages: what the `store_frames` fuzz target
/// does, and its regression test replays. Whatever a peer sends, a core
/// must not panic.
pub async fn feed_peer_bytes(data: &[u8]) {
    use crate::codec::{decode, decode_id_prefix, read_frame};
    use crate::core::Bytes;
    let mut input = data;
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = read_frame(&mut input, 1 << 16).await {
        frames.push(frame);
    }
    for entry in crate::modes::MODES {
        let mut cfg = Sim::cluster(3);
        cfg.mode = entry.mode;
        let Ok(mut core) = build_core(&cfg, 0, 1, Vec::new()) else {
            continue;
        };
        for (i, frame) in frames.iter().enumerate() {
            let _ = decode::<Request>(frame);
            let _ = decode_id_prefix(frame);
            let from = 1 + (i % 2) as NodeId;
            let msg = PeerMsg::Protocol(Bytes(frame.clone()));
            core.step(1_000 + i as u64, Input::Peer { from, msg });
            core.step(1_000 + i as u64, Input::Tick);
        }
    }
}
