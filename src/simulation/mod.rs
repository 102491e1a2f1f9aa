//! Deterministic simulation of a harness run against the reference store:
//! the real mode cores in [`splitbrain_store::sim::Sim`], clients that route
//! as the real client does ([`splitbrain_store::route::Router`]) and
//! translate ops as the real ones do ([`Translator`]), the workload's real
//! generator, and faults on a schedule, all drawn from one seed. The result
//! is a [`History`] the real checkers check; the same seed gives the same
//! history, byte for byte.

pub mod claims;
pub mod page;

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smol_str::SmolStr;
use splitbrain_generators::{Context, Gen, Invocation, Poll, Thread};
use splitbrain_history::{History, Op, OpType, OpWriter, Process, Value};
use splitbrain_store::config::{ClientRouting, ClusterConfig};
use splitbrain_store::core::{AdminOp, AdminReply, Membership};
use splitbrain_store::msg::{NodeId, Op as StoreOp, ReadFrom, Refusal, Reply, RequestOptions};
use splitbrain_store::route::{Attempt, Next, Outcome, Router, Routing};
use splitbrain_store::sim::{NetOptions, Sim};
use splitbrain_workloads::{CheckerUse, WorkloadKind, WorkloadOptions};

use crate::controller::check_all;
use crate::dbs::refstore_client::{request_options, Translator};
use crate::run_store::RunResults;

/// One fault the simulator can inject; a fault step is one or more applied together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimFault {
    /// Cut one node drawn at random off from the others.
    Partition,
    /// Cut the leader (single-leader; else a random node) off from the others.
    PartitionLeader,
    /// Split the cluster into a minority and a majority drawn at random.
    PartitionMajority,
    /// Crash a random node (losing what it had not synced); it restarts at the heal.
    Kill,
    KillLeader,
    /// Crash the last node and keep it down through the heal and the final
    /// reads (which read the others); it restarts at the very end. Simulation only: a fault that
    /// outlasts the heal shows what holds while a node stays away (a ring
    /// that stalls), which no healed history can.
    KillPastTheHeal,
    /// Move a random node's clock back by the clock skew.
    Clock,
    /// Move the leader's clock back by the clock skew.
    ClockLeader,
    /// Drop messages between nodes.
    Loss,
    /// Remove a random member from the configuration through the admin
    /// interface (modes with membership changes); added back at the heal.
    Membership,
    /// Remove the leader (the chain's head) from the configuration.
    MembershipLeader,
    /// A sharded cluster: move a random partition to another group, split
    /// one or merge two, through a random node's admin interface.
    Rebalance,
}

impl SimFault {
    pub const ALL: [(&'static str, SimFault); 12] = [
        ("partition", SimFault::Partition),
        ("partition-leader", SimFault::PartitionLeader),
        ("partition-majority", SimFault::PartitionMajority),
        ("kill", SimFault::Kill),
        ("kill-leader", SimFault::KillLeader),
        ("kill-past-the-heal", SimFault::KillPastTheHeal),
        ("clock", SimFault::Clock),
        ("clock-leader", SimFault::ClockLeader),
        ("loss", SimFault::Loss),
        ("membership", SimFault::Membership),
        ("membership-leader", SimFault::MembershipLeader),
        ("rebalance", SimFault::Rebalance),
    ];

    pub fn name(self) -> &'static str {
        SimFault::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// `partition-leader+clock-leader` is one step of two faults.
    pub fn parse_step(text: &str) -> Result<Vec<SimFault>, String> {
        text.split('+')
            .map(|name| {
                SimFault::ALL
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| {
                        let names: Vec<&str> = SimFault::ALL.iter().map(|(n, _)| *n).collect();
                        format!(
                            "unknown simulated fault '{name}' (expected {}, or several joined by +)",
                            names.join(", ")
                        )
                    })
            })
            .collect()
    }
}

/// Everything a simulated run depends on besides its seed.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The mode and its options; the nodes are `Sim::cluster(nodes)`'s.
    pub cluster: ClusterConfig,
    pub workload: WorkloadKind,
    pub workload_options: WorkloadOptions,
    /// Fault steps to draw from, one per fault window; empty for none.
    pub faults: Vec<Vec<SimFault>>,
    pub concurrency: usize,
    /// Client ops to invoke before the heal.
    pub ops: u64,
    /// Most a client waits between ops (drawn uniformly from 0..=this).
    pub think_ms: u64,
    pub op_timeout_ms: u64,
    pub net: NetOptions,
    /// Time before the first fault, for a leader to be elected.
    pub warmup_ms: u64,
    pub fault_ms: u64,
    pub quiet_ms: u64,
    pub clock_skew_ms: i64,
    pub loss: f64,
    /// The longest the replicas get to converge after the heal.
    pub settle_ms: u64,
    /// After the heal, read every key the workload used from every replica
    /// alone (`final-read` ops naming their node), for the convergence checker.
    pub final_reads_per_node: bool,
}

impl Scenario {
    /// A scenario with the defaults the claims use, for `cluster` with `nodes` nodes.
    pub fn new(mut cluster: ClusterConfig, nodes: usize, workload: WorkloadKind) -> Scenario {
        cluster.nodes = Sim::cluster(nodes).nodes;
        Scenario {
            cluster,
            workload,
            workload_options: WorkloadOptions {
                active_keys: 4,
                ops_per_key: 60,
                ..WorkloadOptions::default()
            },
            faults: Vec::new(),
            concurrency: 5,
            ops: 2000,
            think_ms: 10,
            op_timeout_ms: 1000,
            net: NetOptions::default(),
            warmup_ms: 1000,
            fault_ms: 1500,
            quiet_ms: 1000,
            clock_skew_ms: 2000,
            loss: 0.3,
            settle_ms: 5000,
            final_reads_per_node: false,
        }
    }

    /// The checkers this scenario's history is judged by: the workload's,
    /// without the statistics, and the convergence checker when replicas
    /// are read one by one.
    pub fn checkers(&self) -> Vec<CheckerUse> {
        let w = splitbrain_workloads::build(self.workload, &self.workload_options);
        let mut uses: Vec<CheckerUse> = w
            .checkers
            .into_iter()
            .filter(|c| c.name != "stats" && c.name != "perf")
            .collect();
        if self.final_reads_per_node {
            let mut nodes: Vec<String> = self.cluster.nodes.iter().map(|n| n.id.clone()).collect();
            if self
                .faults
                .iter()
                .flatten()
                .any(|f| *f == SimFault::KillPastTheHeal)
            {
                nodes.pop();
            }
            uses.push(CheckerUse {
                name: "convergence",
                model: None,
                params: vec![("nodes", nodes.join(","))],
            });
        }
        uses
    }
}

/// Why a scenario cannot be simulated.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the {0} workload takes several requests per op; the simulator runs the others")]
    Workload(WorkloadKind),
    #[error("{0}")]
    Scenario(String),
}

/// What one seed produced.
#[derive(Clone, Debug)]
pub struct SimRun {
    pub seed: u64,
    pub history: Vec<Op>,
    pub stats: SimStats,
}

/// Figures of one run, from the simulator's point of view.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SimStats {
    pub client_ops: u64,
    /// Ops invoked inside fault windows, and how many of them the store
    /// served (ok, or a compare-and-set refused for its precondition).
    pub ops_in_faults: u64,
    pub served_in_faults: u64,
    pub ops_outside_faults: u64,
    pub served_outside_faults: u64,
    pub latency_ms_p50: u64,
    pub latency_ms_p99: u64,
    /// Simulated time from the heal until every replica held the same data
    /// (`None`: not within the settle time, or the mode does not say).
    pub convergence_ms: Option<u64>,
    pub simulated_ms: u64,
}

impl SimStats {
    pub fn availability_in_faults(&self) -> Option<f64> {
        (self.ops_in_faults > 0).then(|| self.served_in_faults as f64 / self.ops_in_faults as f64)
    }
    pub fn availability_outside_faults(&self) -> Option<f64> {
        (self.ops_outside_faults > 0)
            .then(|| self.served_outside_faults as f64 / self.ops_outside_faults as f64)
    }
}

/// One client thread's request in flight.
struct Call {
    inv: Invocation,
    op: StoreOp,
    options: RequestOptions,
    deadline_ms: u64,
    node: usize,
    tries: usize,
    /// The simulator's id of the attempt being waited for, if one was sent.
    attempt: Option<u64>,
    /// Send again at this time (after a retry pause).
    retry_at_ms: Option<u64>,
    refusal: Option<Outcome>,
    invoked_ms: u64,
    in_fault: bool,
}

struct Worker {
    process: u64,
    router: Router,
    /// Idle until this time.
    ready_ms: u64,
    call: Option<Call>,
}

struct Run<'a> {
    s: &'a Scenario,
    sim: Sim,
    rng: ChaCha8Rng,
    translator: Translator,
    options: RequestOptions,
    workers: Vec<Worker>,
    attempts: HashMap<u64, usize>,
    history: Vec<Op>,
    stats: SimStats,
    latencies_ms: Vec<u64>,
    /// Nodes the current fault step crashed, and whether a step is on.
    crashed: Vec<NodeId>,
    /// Nodes the current fault step removed from the configuration.
    removed: Vec<NodeId>,
    /// The node `kill-past-the-heal` crashed, down until the run ends.
    kept_down: Option<NodeId>,
    fault_on: bool,
    next_fault_change_ms: u64,
    /// Keys the workload used, for per-node final reads.
    keys: std::collections::BTreeSet<Value>,
}

const RETRY_PAUSE_MS: u64 = 20;

fn kw(s: &str) -> Value {
    Value::Keyword(s.into())
}

/// A configuration as a nemesis completion records it.
fn members_value(m: &Membership) -> Value {
    let names = |ids: &[NodeId]| {
        Value::List(
            ids.iter()
                .map(|n| Value::Str(node_name(*n as usize).as_str().into()))
                .collect(),
        )
    };
    Value::map(vec![
        (kw("members"), names(&m.members)),
        (kw("joining"), names(&m.joining)),
    ])
}

fn node_name(node: usize) -> SmolStr {
    SmolStr::new(format!("n{}", node + 1))
}

/// Runs `scenario` from `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> Result<SimRun, SimError> {
    if scenario.workload == WorkloadKind::Bank {
        return Err(SimError::Workload(scenario.workload));
    }
    let nodes = scenario.cluster.nodes.len();
    if nodes == 0 || scenario.concurrency == 0 {
        return Err(SimError::Scenario(
            "a simulation needs at least one node and one client".into(),
        ));
    }
    let mut cluster = scenario.cluster.clone();
    cluster.seed = seed;
    let mut workload_options = scenario.workload_options.clone();
    workload_options.seed = seed;
    let workload = splitbrain_workloads::build(scenario.workload, &workload_options);
    let leader_mode = splitbrain_store::modes::has_leader(&cluster);
    let workers = (0..scenario.concurrency)
        .map(|t| Worker {
            process: t as u64,
            router: Router::new(
                nodes,
                routing(scenario, leader_mode, t as u64, seed),
                t % nodes,
            ),
            ready_ms: 0,
            call: None,
        })
        .collect();
    let mut run = Run {
        s: scenario,
        sim: Sim::new(cluster.clone(), seed, scenario.net.clone()),
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x51_6d_75_6c),
        translator: Translator::new(scenario.workload, &workload_options),
        options: request_options(&cluster),
        workers,
        attempts: HashMap::new(),
        history: Vec::with_capacity(scenario.ops as usize * 2 + 64),
        stats: SimStats::default(),
        latencies_ms: Vec::with_capacity(scenario.ops as usize),
        crashed: Vec::new(),
        removed: Vec::new(),
        kept_down: None,
        fault_on: false,
        next_fault_change_ms: scenario.warmup_ms,
        keys: Default::default(),
    };
    run.warm_up(leader_mode);
    let mut client = workload.client;
    run.drive(&mut client, Some(scenario.ops), true);
    run.heal();
    let healed_ms = run.sim.now_ms();
    run.stats.convergence_ms = run.settle(healed_ms);
    if let Some(mut final_ops) = workload.final_ops {
        run.drive(&mut final_ops, None, false);
    }
    if scenario.final_reads_per_node {
        run.final_reads();
    }
    if let Some(node) = run.kept_down.take() {
        run.sim.restart(node);
        let stop = Value::map(vec![(kw("fault"), kw("kill")), (kw("phase"), kw("stop"))]);
        run.nemesis("restart", kw("all"), stop);
    }
    run.stats.simulated_ms = run.sim.now_ms();
    run.latencies_ms.sort_unstable();
    let pct = |p: f64, l: &[u64]| {
        l.get(((l.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    run.stats.latency_ms_p50 = pct(0.5, &run.latencies_ms);
    run.stats.latency_ms_p99 = pct(0.99, &run.latencies_ms);
    for (i, op) in run.history.iter_mut().enumerate() {
        op.index = i as u64;
    }
    Ok(SimRun {
        seed,
        history: run.history,
        stats: run.stats,
    })
}

fn routing(s: &Scenario, leader_mode: bool, process: u64, seed: u64) -> Routing {
    let n = s.cluster.nodes.len();
    match (leader_mode, s.cluster.client_routing) {
        (true, _) => Routing::Leader,
        (false, ClientRouting::Bound) => Routing::Bound(process as usize % n),
        (false, ClientRouting::PerRequest) => Routing::PerRequest {
            seed: seed ^ process.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        },
    }
}

impl Run<'_> {
    fn now_ns(&self) -> i64 {
        self.sim.now_ms() as i64 * 1_000_000
    }

    fn record(&mut self, mut op: Op) {
        op.time = Some(self.now_ns());
        self.history.push(op);
    }

    /// Lets a leader be elected before clients start, as a real run waits for one.
    fn warm_up(&mut self, leader_mode: bool) {
        let until = self.s.warmup_ms.max(1);
        while self.sim.now_ms() < until {
            if leader_mode && self.sim.leader().is_some() {
                break;
            }
            self.sim.run_for(5);
        }
        self.next_fault_change_ms = self.sim.now_ms() + self.s.quiet_ms.min(self.s.warmup_ms);
    }

    /// Invokes ops from `gen` until it is done (or `limit` ops were
    /// invoked) and every op completed; with `faults`, fault windows
    /// alternate with quiet ones meanwhile.
    fn drive(&mut self, gen: &mut Gen, limit: Option<u64>, faults: bool) {
        let threads: Vec<Thread> = (0..self.workers.len()).map(Thread::Client).collect();
        let mut invoked = 0u64;
        let mut exhausted = false;
        loop {
            let now = self.sim.now_ms();
            if faults && !self.s.faults.is_empty() && now >= self.next_fault_change_ms {
                self.toggle_fault();
            }
            for (attempt, c) in self.sim.take_completed() {
                if let Some(w) = self.attempts.remove(&attempt) {
                    // A stopped node refuses the connection: nothing was
                    // sent, so the client tries another node, as over TCP.
                    let attempt = match c.response.reply {
                        Reply::NotDone(Refusal::Unreachable(e)) => Attempt::NotSent(e),
                        reply => Attempt::Replied(reply),
                    };
                    self.on_attempt(w, attempt, gen, &threads);
                }
            }
            for w in 0..self.workers.len() {
                let Some(call) = &self.workers[w].call else {
                    continue;
                };
                if now >= call.deadline_ms {
                    // A refusal decides only while nothing is in flight: a
                    // retry that was sent may yet take effect.
                    let outcome = match (&call.attempt, &call.refusal) {
                        (None, Some(refusal)) => refusal.clone(),
                        _ => {
                            Outcome::Unknown(format!("no reply within {} ms", self.s.op_timeout_ms))
                        }
                    };
                    self.finish(w, outcome, gen, &threads);
                } else if call.retry_at_ms.is_some_and(|t| now >= t) {
                    self.send(w);
                }
            }
            if !exhausted {
                let free: Vec<Thread> = self
                    .workers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.call.is_none() && w.ready_ms <= now)
                    .map(|(i, _)| Thread::Client(i))
                    .collect();
                let mut ctx = Context::new(now * 1_000_000, free, threads.clone());
                while !ctx.free.is_empty() {
                    match gen.next(&ctx) {
                        Poll::Op(inv) => {
                            let Thread::Client(t) = inv.thread else {
                                break;
                            };
                            ctx.free.retain(|x| *x != inv.thread);
                            self.invoke(t, inv);
                            invoked += 1;
                            if limit.is_some_and(|l| invoked >= l) {
                                exhausted = true;
                                break;
                            }
                        }
                        Poll::Pending { .. } => break,
                        Poll::Done => {
                            exhausted = true;
                            break;
                        }
                    }
                }
            }
            if exhausted && self.workers.iter().all(|w| w.call.is_none()) {
                break;
            }
            self.sim.run_until(now + 1);
        }
    }

    fn invoke(&mut self, t: usize, inv: Invocation) {
        let process = self.workers[t].process;
        let mut op = Op::new(
            Process::Client(process),
            OpType::Invoke,
            &inv.f,
            inv.value.clone(),
        );
        op.key = inv.key.clone();
        self.record(op);
        if let Some(k) = &inv.key {
            self.keys.insert(k.clone());
        }
        let now = self.sim.now_ms();
        let store_op = match self.translator.translate(&inv) {
            Ok(op) => op,
            Err(why) => {
                let c = self
                    .translator
                    .completion_of(&inv, Outcome::Rejected(why.clone()));
                self.record_completion(process, &inv, c.kind, c.value, c.error, None);
                return;
            }
        };
        let options = self.options.clone();
        let first = self.workers[t].router.first(&store_op, &options);
        let node = match first {
            Ok(node) => node,
            Err(outcome) => {
                let c = self.translator.completion_of(&inv, outcome);
                self.record_completion(process, &inv, c.kind, c.value, c.error, None);
                return;
            }
        };
        self.workers[t].call = Some(Call {
            inv,
            op: store_op,
            options,
            deadline_ms: now + self.s.op_timeout_ms,
            node,
            tries: 0,
            attempt: None,
            retry_at_ms: None,
            refusal: None,
            invoked_ms: now,
            in_fault: self.fault_on,
        });
        self.send(t);
    }

    fn send(&mut self, w: usize) {
        let Some(call) = self.workers[w].call.as_mut() else {
            return;
        };
        call.tries += 1;
        call.retry_at_ms = None;
        let attempt = self
            .sim
            .submit(call.node as NodeId, call.op.clone(), call.options.clone());
        call.attempt = Some(attempt);
        self.attempts.insert(attempt, w);
    }

    fn on_attempt(&mut self, w: usize, attempt: Attempt, gen: &mut Gen, threads: &[Thread]) {
        let Some(call) = self.workers[w].call.as_mut() else {
            return;
        };
        call.attempt = None;
        let (node, tries) = (call.node, call.tries);
        let (op, options) = (call.op.clone(), call.options.clone());
        let next = self.workers[w]
            .router
            .next(node, tries, &op, &options, attempt);
        match next {
            Next::Done(outcome) => self.finish(w, outcome, gen, threads),
            Next::Resend(to) => {
                if let Some(call) = self.workers[w].call.as_mut() {
                    call.node = to;
                }
                self.send(w);
            }
            Next::RetryAfterPause { node: to, refusal } => {
                let now = self.sim.now_ms();
                let call = self.workers[w].call.as_mut().expect("a call in flight");
                if now + RETRY_PAUSE_MS >= call.deadline_ms {
                    self.finish(w, refusal, gen, threads);
                } else {
                    call.node = to;
                    call.retry_at_ms = Some(now + RETRY_PAUSE_MS);
                    call.refusal = Some(refusal);
                }
            }
        }
    }

    fn finish(&mut self, w: usize, outcome: Outcome, gen: &mut Gen, threads: &[Thread]) {
        let Some(call) = self.workers[w].call.take() else {
            return;
        };
        if let Some(a) = call.attempt {
            self.attempts.remove(&a);
        }
        let now = self.sim.now_ms();
        let c = self.translator.completion_of(&call.inv, outcome);
        let process = self.workers[w].process;
        self.stats.client_ops += 1;
        let ok = c.kind == OpType::Ok;
        // A compare-and-set refused for its own precondition was served too.
        let served = ok || c.error == Some(kw("precondition-failed"));
        if call.in_fault {
            self.stats.ops_in_faults += 1;
            self.stats.served_in_faults += u64::from(served);
        } else {
            self.stats.ops_outside_faults += 1;
            self.stats.served_outside_faults += u64::from(served);
        }
        if ok {
            self.latencies_ms.push(now - call.invoked_ms);
        }
        let kind = c.kind;
        let op = self.record_completion(
            process,
            &call.inv,
            c.kind,
            c.value,
            c.error,
            Some(node_name(call.node)),
        );
        let free: Vec<Thread> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.call.is_none())
            .map(|(i, _)| Thread::Client(i))
            .collect();
        gen.update(
            &Context::new(now * 1_000_000, free, threads.to_vec()),
            Thread::Client(w),
            &op,
        );
        let think = self.rng.gen_range(0..=self.s.think_ms);
        let worker = &mut self.workers[w];
        worker.ready_ms = now + think;
        if kind == OpType::Info {
            // As Jepsen does, a process whose op is indeterminate is done;
            // its thread goes on as a fresh process with a fresh client.
            worker.process += self.s.concurrency as u64;
            let leader_mode = splitbrain_store::modes::has_leader(&self.s.cluster);
            let seed = self.s.cluster.seed ^ worker.process;
            let n = self.s.cluster.nodes.len();
            worker.router = Router::new(
                n,
                routing(self.s, leader_mode, worker.process, seed),
                worker.process as usize % n,
            );
        }
    }

    fn record_completion(
        &mut self,
        process: u64,
        inv: &Invocation,
        kind: OpType,
        value: Value,
        error: Option<Value>,
        node: Option<SmolStr>,
    ) -> Op {
        let mut op = Op::new(Process::Client(process), kind, &inv.f, value);
        op.key = inv.key.clone();
        op.error = error;
        op.node = node.map(|n| n.as_str().into());
        self.record(op.clone());
        op
    }

    fn nemesis(&mut self, f: &str, value: Value, done: Value) {
        self.record(Op::new(Process::Nemesis, OpType::Invoke, f, value.clone()));
        self.record(Op::new(Process::Nemesis, OpType::Info, f, done));
    }

    fn random_node(&mut self) -> NodeId {
        self.rng.gen_range(0..self.sim.node_count()) as NodeId
    }

    fn leader_or_random(&mut self) -> NodeId {
        match self.sim.leader() {
            Some(l) => l,
            None => self.random_node(),
        }
    }

    fn toggle_fault(&mut self) {
        let now = self.sim.now_ms();
        if self.fault_on {
            self.heal();
            self.next_fault_change_ms = now + self.s.quiet_ms;
            return;
        }
        let step = self.s.faults[self.rng.gen_range(0..self.s.faults.len())].clone();
        // One node for every fault of the step that aims at "the leader".
        let leader = self.leader_or_random();
        for fault in step {
            self.start_fault(fault, leader);
        }
        self.fault_on = true;
        self.next_fault_change_ms = now + self.s.fault_ms;
    }

    fn start_fault(&mut self, fault: SimFault, leader: NodeId) {
        let n = self.sim.node_count() as NodeId;
        let done = |package: &str, details: Vec<(Value, Value)>| {
            let mut entries = vec![(kw("fault"), kw(package)), (kw("phase"), kw("start"))];
            entries.extend(details);
            Value::map(entries)
        };
        match fault {
            SimFault::Partition | SimFault::PartitionLeader => {
                let node = if fault == SimFault::Partition {
                    self.random_node()
                } else {
                    leader
                };
                self.sim.isolate(node);
                let shape = if fault == SimFault::Partition {
                    "one"
                } else {
                    "primaries"
                };
                self.nemesis(
                    "start-partition",
                    kw(shape),
                    done(
                        "partition",
                        vec![(
                            kw("isolated"),
                            Value::Str(node_name(node as usize).as_str().into()),
                        )],
                    ),
                );
            }
            SimFault::PartitionMajority => {
                let mut order: Vec<NodeId> = (0..n).collect();
                for i in (1..order.len()).rev() {
                    let j = self.rng.gen_range(0..=i);
                    order.swap(i, j);
                }
                let minority = order.split_off(order.len().div_ceil(2));
                self.sim.partition(&[order, minority.clone()]);
                let names: Vec<Value> = minority
                    .iter()
                    .map(|m| Value::Str(node_name(*m as usize).as_str().into()))
                    .collect();
                self.nemesis(
                    "start-partition",
                    kw("majority"),
                    done(
                        "partition",
                        vec![(kw("minority"), Value::List(names.into()))],
                    ),
                );
            }
            SimFault::Kill | SimFault::KillLeader => {
                let node = if fault == SimFault::Kill {
                    self.random_node()
                } else {
                    leader
                };
                if self.sim.is_up(node) {
                    self.sim.crash(node);
                    self.crashed.push(node);
                }
                let target = if fault == SimFault::Kill {
                    "one"
                } else {
                    "primaries"
                };
                self.record_kill(target, node);
            }
            SimFault::KillPastTheHeal => {
                let node = match self.kept_down {
                    Some(node) => node,
                    None => {
                        let node = self.sim.node_count() as NodeId - 1;
                        if self.sim.is_up(node) {
                            self.sim.crash(node);
                            self.kept_down = Some(node);
                        }
                        node
                    }
                };
                self.record_kill("one", node);
            }
            SimFault::Clock | SimFault::ClockLeader => {
                let node = if fault == SimFault::Clock {
                    self.random_node()
                } else {
                    leader
                };
                self.sim.set_clock_offset(node, -self.s.clock_skew_ms);
                self.nemesis(
                    "bump-clock",
                    Value::Int(-self.s.clock_skew_ms),
                    done(
                        "clock",
                        vec![
                            (
                                kw("node"),
                                Value::Str(node_name(node as usize).as_str().into()),
                            ),
                            (kw("offset-ms"), Value::Int(-self.s.clock_skew_ms)),
                        ],
                    ),
                );
            }
            SimFault::Membership | SimFault::MembershipLeader => {
                let Some(AdminReply::Members(before)) = self.admin(AdminOp::Members) else {
                    return;
                };
                if before.members.len() <= 2 {
                    return;
                }
                let node =
                    if fault == SimFault::MembershipLeader && before.members.contains(&leader) {
                        leader
                    } else {
                        before.members[self.rng.gen_range(0..before.members.len())]
                    };
                if let Some(AdminReply::Members(after)) = self.admin(AdminOp::Remove(node)) {
                    self.removed.push(node);
                    let aim = if fault == SimFault::Membership {
                        "one"
                    } else {
                        "primaries"
                    };
                    self.nemesis(
                        "remove-member",
                        kw(aim),
                        done(
                            "membership",
                            vec![
                                (
                                    kw("node"),
                                    Value::Str(node_name(node as usize).as_str().into()),
                                ),
                                (kw("before"), members_value(&before)),
                                (kw("after"), members_value(&after)),
                            ],
                        ),
                    );
                }
            }
            SimFault::Rebalance => self.rebalance(),
            SimFault::Loss => {
                self.sim.set_loss(self.s.loss);
                self.nemesis(
                    "start-loss",
                    Value::Float(self.s.loss),
                    done("loss", vec![(kw("fraction"), Value::Float(self.s.loss))]),
                );
            }
        }
    }

    /// A sharded cluster's rebalance, as `--nemesis rebalance` draws it.
    fn rebalance(&mut self) {
        use splitbrain_store::protocol::Rebalance;
        let node = self.random_node();
        let Some(AdminReply::Partitions(map)) = self.sim.admin_call(node, AdminOp::Settle, 20_000)
        else {
            return;
        };
        let groups = self.s.cluster.sharding.as_ref().map_or(1, |s| s.groups);
        if map.partitions.is_empty() || groups < 2 {
            return;
        }
        let p = map.partitions[self.rng.gen_range(0..map.partitions.len())].clone();
        let mut to = self.rng.gen_range(0..groups - 1);
        if to >= p.group {
            to += 1;
        }
        let mut changes = vec![match self.rng.gen_range(0..3) {
            0 => Rebalance::Split { partition: p.id },
            1 => Rebalance::Merge { partition: p.id },
            _ => Rebalance::Move {
                partition: p.id,
                to,
            },
        }];
        if let Rebalance::Merge { partition } = changes[0] {
            match map.merge_partner(partition).ok().and_then(|q| map.get(q)) {
                Some(q) if q.group != p.group => changes.insert(
                    0,
                    Rebalance::Move {
                        partition,
                        to: q.group,
                    },
                ),
                Some(_) => {}
                None => changes[0] = Rebalance::Move { partition, to },
            }
        }
        let mut summaries = Vec::new();
        for change in changes {
            let node = self.random_node();
            match self
                .sim
                .admin_call(node, AdminOp::Rebalance(change), 20_000)
            {
                Some(AdminReply::Rebalanced(done)) => summaries.push(done.summary),
                Some(AdminReply::Refused(why))
                    if why.contains("too few keys") || why.contains("too small") =>
                {
                    return;
                }
                other => {
                    let why = format!("{change:?} on n{}: {other:?}", node + 1);
                    self.nemesis_failed("rebalance", &why);
                    return;
                }
            }
        }
        let done = Value::map(vec![
            (kw("fault"), kw("rebalance")),
            (kw("phase"), kw("start")),
            (kw("summary"), Value::Str(summaries.join("; ").into())),
        ]);
        self.nemesis("rebalance", kw("random"), done);
    }

    fn nemesis_failed(&mut self, f: &str, why: &str) {
        self.record(Op::new(Process::Nemesis, OpType::Invoke, f, kw("random")));
        let mut op = Op::new(Process::Nemesis, OpType::Fail, f, kw("random"));
        op.error = Some(Value::Str(why.into()));
        self.record(op);
    }

    /// An admin request to the node that decides configurations, following
    /// redirects and trying again while a change is in progress.
    fn admin(&mut self, op: AdminOp) -> Option<AdminReply> {
        let n = self.sim.node_count() as NodeId;
        let mut node = self.sim.leader().unwrap_or(0);
        for _ in 0..20 {
            match self.sim.admin_call(node, op, 5_000) {
                Some(AdminReply::NotLeader { leader: Some(l) }) if l < n && l != node => node = l,
                Some(AdminReply::NotLeader { .. }) => {
                    node = (node + 1) % n;
                    self.sim.run_for(50);
                }
                Some(AdminReply::Refused(why)) if why.contains("try again") => {
                    self.sim.run_for(100)
                }
                other => return other,
            }
        }
        None
    }

    /// The nemesis ops of a kill of `node`, aimed at `target`.
    fn record_kill(&mut self, target: &str, node: NodeId) {
        let killed = Value::Str(node_name(node as usize).as_str().into());
        let done = Value::map(vec![
            (kw("fault"), kw("kill")),
            (kw("phase"), kw("start")),
            (kw("killed"), killed),
        ]);
        self.nemesis("kill", kw(target), done);
    }

    /// Ends every fault: links, crashed nodes, clocks, loss.
    fn heal(&mut self) {
        if !self.fault_on {
            return;
        }
        self.fault_on = false;
        let stop =
            |package: &str| Value::map(vec![(kw("fault"), kw(package)), (kw("phase"), kw("stop"))]);
        self.sim.heal();
        self.nemesis("stop-partition", Value::Nil, stop("partition"));
        for node in std::mem::take(&mut self.crashed) {
            self.sim.restart(node);
        }
        self.nemesis("restart", kw("all"), stop("kill"));
        for node in 0..self.sim.node_count() as NodeId {
            self.sim.set_clock_offset(node, 0);
        }
        self.nemesis("reset-clock", Value::Nil, stop("clock"));
        self.sim.set_loss(self.s.net.loss);
        self.nemesis("stop-loss", Value::Nil, stop("loss"));
        if !self.removed.is_empty() {
            let nodes: Vec<NodeId> = std::mem::take(&mut self.removed);
            let mut after = None;
            for node in &nodes {
                after = self.admin(AdminOp::Add(*node));
            }
            let mut details = vec![
                (kw("fault"), kw("membership")),
                (kw("phase"), kw("stop")),
                (
                    kw("nodes"),
                    Value::List(
                        nodes
                            .iter()
                            .map(|n| Value::Str(node_name(*n as usize).as_str().into()))
                            .collect(),
                    ),
                ),
            ];
            if let Some(AdminReply::Members(m)) = &after {
                details.push((kw("after"), members_value(m)));
            }
            self.nemesis("add-members", kw("all"), Value::map(details));
        }
    }

    /// Runs quietly until every replica holds the same data, or the settle
    /// time passes; returns how long that took.
    fn settle(&mut self, healed_ms: u64) -> Option<u64> {
        let n = self.sim.node_count() as NodeId;
        // Replicas still down (kill-past-the-heal) are not waited for.
        let converged = |sim: &Sim| {
            let mut up = (0..n).filter(|i| sim.is_up(*i)).map(|i| sim.data_digest(i));
            let first = up.next().flatten();
            first.is_some() && up.all(|d| d == first)
        };
        let until = healed_ms + self.s.settle_ms;
        loop {
            if converged(&self.sim) {
                return Some(self.sim.now_ms() - healed_ms);
            }
            if self.sim.now_ms() >= until {
                return None;
            }
            self.sim.run_for(10);
        }
    }

    /// Reads every key from every replica alone: `final-read` ops naming the node.
    fn final_reads(&mut self) {
        let keys: Vec<Option<Value>> = if self.keys.is_empty() {
            vec![None]
        } else {
            self.keys.iter().cloned().map(Some).collect()
        };
        let n = self.sim.node_count();
        let process = self.workers.iter().map(|w| w.process).max().unwrap_or(0) + 1;
        let mut options = self.options.clone();
        options.r = Some(1);
        // A replica alone: a leader mode's follower serves its own state.
        if splitbrain_store::modes::has_leader(&self.s.cluster) {
            options.read_from = Some(ReadFrom::Any);
        }
        for key in keys {
            for node in 0..n {
                let inv = Invocation {
                    thread: Thread::Client(0),
                    time_ns: 0,
                    f: SmolStr::new("read"),
                    value: Value::Nil,
                    key: key.clone(),
                };
                let Ok(store_op) = self.translator.translate(&inv) else {
                    continue;
                };
                let mut op = Op::new(
                    Process::Client(process),
                    OpType::Invoke,
                    "final-read",
                    Value::Nil,
                );
                op.key = key.clone();
                self.record(op);
                let outcome = match self.sim.call(
                    node as NodeId,
                    store_op,
                    options.clone(),
                    self.s.op_timeout_ms,
                ) {
                    Some(c) => Outcome::from(c.response.reply),
                    None => Outcome::Unknown("no reply".into()),
                };
                let c = self.translator.completion_of(&inv, outcome);
                let kind = if c.kind == OpType::Ok {
                    OpType::Ok
                } else {
                    OpType::Fail
                };
                let mut op = Op::new(Process::Client(process), kind, "final-read", c.value);
                op.key = key.clone();
                op.node = Some(node_name(node).as_str().into());
                op.error = c.error;
                self.record(op);
            }
        }
    }
}

/// The history of a run as JSON Lines, the format `splitbrain check` reads.
pub fn history_jsonl(ops: &[Op]) -> Vec<u8> {
    let mut w = OpWriter::new(Vec::new(), splitbrain_history::Format::Jsonl);
    for op in ops {
        // Writing to memory cannot fail.
        let _ = w.write(op);
    }
    w.into_inner()
}

/// Checks a run's history with the scenario's checkers.
pub fn check(scenario: &Scenario, run: &SimRun) -> RunResults {
    match History::from_ops(run.history.clone()) {
        Ok(h) => check_all(&h, &scenario.checkers(), None),
        Err(e) => RunResults {
            verdict: splitbrain_history::Verdict::Unknown,
            checkers: Vec::new(),
            problem: Some(format!("the simulator wrote a malformed history: {e}")),
            duration_s: None,
            faults: Vec::new(),
        },
    }
}
