//! The reference store as the system under test: its nodes as local child
//! processes (`splitbrain store-node`) on 127.0.0.1 ports with data and
//! logs under the run directory, clients through the store's client
//! library, and faults by signal and through the nodes' admin ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use splitbrain_generators::Invocation;
use splitbrain_history::Value;
use splitbrain_nemesis::netns::NetnsCluster;
use splitbrain_nemesis::shape::{Grudge, Node};
use splitbrain_nemesis::{Ability, Target};
use splitbrain_store::admin::{admin_call, admin_status, NodeStatus};
use splitbrain_store::client::{Client as StoreClient, ClientOptions, Outcome};
use splitbrain_store::config::{ClusterConfig, Mode, NodeAddrs};
use splitbrain_store::msg::{
    Op as StoreOp, OpResult, Refusal, RequestOptions, Value as StoreValue,
};
use splitbrain_workloads::{WorkloadKind, WorkloadOptions};

use crate::controller::Cluster;
use crate::interpreter::{Client, ClientFactory, Completion};
use crate::supervisor::{proc_state, NodeCommand, Supervisor};

/// Free loopback ports below the kernel's ephemeral range. A port from that
/// range can be taken, while its node is killed, as the local end of some
/// outgoing connection (a peer link redialling, a client), and then the node
/// cannot listen on it again when it restarts.
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.clamp(10_001, 65_536));
    let span = high - low;
    // Start somewhere different per process, so concurrent runs rarely probe the same ports.
    let mut next = low
        + (std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        ) % span);
    let mut ports = Vec::with_capacity(n);
    // Hold each port while choosing the rest, so none is picked twice.
    let mut held = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", next as u16)) {
            ports.push(next as u16);
            held.push(l);
        }
        next = if next + 1 >= high { low } else { next + 1 };
    }
    if ports.len() < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("only {} free loopback ports below {high}", ports.len()),
        ));
    }
    Ok(ports)
}

/// A cluster file for `nodes` local nodes; every other setting comes from `base`.
pub fn local_config(
    base: &ClusterConfig,
    nodes: usize,
    data_dir: &Path,
) -> std::io::Result<ClusterConfig> {
    let ports = free_ports(nodes * 3)?;
    let mut cfg = base.clone();
    cfg.data_dir = Some(data_dir.to_path_buf());
    cfg.nodes = (0..nodes)
        .map(|i| NodeAddrs {
            id: format!("n{}", i + 1),
            client: format!("127.0.0.1:{}", ports[3 * i]),
            peer: format!("127.0.0.1:{}", ports[3 * i + 1]),
            admin: format!("127.0.0.1:{}", ports[3 * i + 2]),
        })
        .collect();
    Ok(cfg)
}

/// The reference store on this machine.
pub struct LocalRefstore {
    base: ClusterConfig,
    node_count: usize,
    workload: WorkloadKind,
    op_timeout: Duration,
    program: PathBuf,
    /// Shared with the executor, which is handed out before the nodes start.
    config: Arc<Mutex<Option<ClusterConfig>>>,
    supervisor: Arc<Mutex<Supervisor>>,
    /// netns mode: the namespaces' tag, and the namespaces once they exist.
    netns_tag: Option<String>,
    netns: SharedNetns,
}

type SharedNetns = Arc<Mutex<Option<Arc<NetnsCluster>>>>;

/// Ports every node listens on inside its own namespace.
const NETNS_PORTS: [u16; 3] = [7100, 7101, 7102];

impl LocalRefstore {
    pub fn new(
        base: ClusterConfig,
        node_count: usize,
        workload: WorkloadKind,
        op_timeout: Duration,
    ) -> std::io::Result<Self> {
        Ok(LocalRefstore {
            base,
            node_count,
            workload,
            op_timeout,
            program: std::env::current_exe()?,
            config: Arc::new(Mutex::new(None)),
            supervisor: Arc::new(Mutex::new(Supervisor::new())),
            netns_tag: None,
            netns: Arc::new(Mutex::new(None)),
        })
    }

    /// Run each node in a network namespace of its own (root only), named
    /// after `tag` (1-6 lowercase letters or digits); partitions and packet
    /// loss become iptables rules there.
    pub fn in_netns(mut self, tag: &str) -> Self {
        self.netns_tag = Some(tag.to_string());
        self
    }

    /// Run the nodes from another binary (tests use the one cargo built).
    pub fn with_program(mut self, program: PathBuf) -> Self {
        self.program = program;
        self
    }

    fn config(&self) -> anyhow::Result<ClusterConfig> {
        self.config
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| anyhow::anyhow!("the cluster is not set up"))
    }

    /// Wait until every node answers its admin port (and a leader exists, for single-leader).
    async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let cfg = self.config()?;
        let deadline = Instant::now() + within;
        loop {
            let mut ready = true;
            let mut leader_known = cfg.mode != Mode::SingleLeader;
            for n in &cfg.nodes {
                match admin_status(&n.admin).await {
                    Ok(s) => leader_known |= s.is_leader(),
                    Err(_) => ready = false,
                }
            }
            if ready && leader_known {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .supervisor
                    .lock()
                    .map(|s| s.log_files())
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                anyhow::bail!(
                    "the reference store did not come up within {within:?} (see {})",
                    logs.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl Cluster for LocalRefstore {
    fn describe(&self) -> String {
        let mode = match self.base.mode {
            Mode::SingleLeader => {
                let o = &self.base.single_leader;
                format!(
                    "single-leader {} (fencing {}, leases {}, reads from {:?})",
                    String::from(o.replication),
                    if o.fencing { "on" } else { "off" },
                    if o.leases { "on" } else { "off" },
                    o.read_from
                )
            }
            Mode::Leaderless => {
                let o = &self.base.leaderless;
                format!(
                    "leaderless N={} R={} W={} ({:?})",
                    o.n, o.r, o.w, o.conflict
                )
            }
        };
        format!(
            "refstore {mode}, fsync {}, {} {}",
            String::from(self.base.fsync),
            self.node_count,
            if self.netns_tag.is_some() {
                "nodes in network namespaces"
            } else {
                "local nodes"
            }
        )
    }

    async fn setup(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        // Nodes run with the run directory as their working directory: give them absolute paths.
        let run_dir = &run_dir.canonicalize()?;
        let data = run_dir.join("data");
        std::fs::create_dir_all(&data)?;
        let netns = match &self.netns_tag {
            None => None,
            Some(tag) => {
                let (tag, names) = (
                    tag.clone(),
                    (1..=self.node_count)
                        .map(|i| format!("n{i}"))
                        .collect::<Vec<_>>(),
                );
                let nc = tokio::task::spawn_blocking(move || NetnsCluster::create(&tag, &names))
                    .await??;
                let nc = Arc::new(nc);
                if let Ok(mut slot) = self.netns.lock() {
                    *slot = Some(nc.clone());
                }
                Some(nc)
            }
        };
        let cfg = match &netns {
            None => local_config(&self.base, self.node_count, &data)?,
            Some(nc) => {
                let mut cfg = self.base.clone();
                cfg.data_dir = Some(data.clone());
                cfg.nodes = nc
                    .nodes()
                    .iter()
                    .map(|n| {
                        let ip = nc.addr(n)?;
                        Ok(NodeAddrs {
                            id: n.clone(),
                            client: format!("{ip}:{}", NETNS_PORTS[0]),
                            peer: format!("{ip}:{}", NETNS_PORTS[1]),
                            admin: format!("{ip}:{}", NETNS_PORTS[2]),
                        })
                    })
                    .collect::<Result<_, splitbrain_nemesis::netns::NetnsError>>()?;
                cfg
            }
        };
        let cfg_path = run_dir.join("cluster.toml");
        std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
        {
            let mut sup = self
                .supervisor
                .lock()
                .map_err(|_| anyhow::anyhow!("supervisor poisoned"))?;
            for n in &cfg.nodes {
                let mut args = vec![
                    "store-node".into(),
                    "--config".into(),
                    cfg_path.display().to_string(),
                    "--id".into(),
                    n.id.clone(),
                ];
                let program = match &netns {
                    None => self.program.clone(),
                    // `ip netns exec` execs in place: the pid is the node's, for signals.
                    Some(nc) => {
                        let mut full = vec![
                            "netns".to_string(),
                            "exec".into(),
                            nc.namespace(&n.id)?,
                            self.program.display().to_string(),
                        ];
                        full.append(&mut args);
                        args = full;
                        PathBuf::from("ip")
                    }
                };
                sup.add(
                    &n.id,
                    NodeCommand {
                        program,
                        args,
                        dir: run_dir.to_path_buf(),
                        log: run_dir.join(format!("{}.log", n.id)),
                    },
                );
                sup.start(&n.id)?;
            }
        }
        if let Ok(mut c) = self.config.lock() {
            *c = Some(cfg);
        }
        self.wait_ready(Duration::from_secs(20)).await
    }

    fn client_factory(&self, workload: &WorkloadOptions) -> Arc<dyn ClientFactory> {
        let cfg = self.config().unwrap_or_else(|_| self.base.clone());
        clients(cfg, self.workload, workload, self.op_timeout)
    }

    fn executor(&mut self) -> Option<Box<dyn Target>> {
        Some(Box::new(LocalExecutor {
            cfg: self.config.clone(),
            supervisor: self.supervisor.clone(),
            blocked: BTreeMap::new(),
            netns_mode: self.netns_tag.is_some(),
            netns: self.netns.clone(),
        }))
    }

    async fn teardown(&mut self, leave_running: bool) -> anyhow::Result<Vec<PathBuf>> {
        let logs = {
            let mut sup = self
                .supervisor
                .lock()
                .map_err(|_| anyhow::anyhow!("supervisor poisoned"))?;
            if !leave_running {
                sup.stop_all(Duration::from_secs(3));
            }
            sup.log_files()
        };
        if !leave_running {
            // Processes first: a namespace with processes in it lingers.
            let netns = self.netns.lock().ok().and_then(|mut n| n.take());
            if let Some(nc) = netns {
                tokio::task::spawn_blocking(move || nc.destroy()).await??;
            }
        }
        Ok(logs)
    }
}

/// Faults for local nodes: signals for kill and pause, the admin port for
/// partitions and clocks.
pub struct LocalExecutor {
    cfg: Arc<Mutex<Option<ClusterConfig>>>,
    supervisor: Arc<Mutex<Supervisor>>,
    /// What each node was told to block, so a heal can undo exactly that.
    blocked: BTreeMap<Node, BTreeSet<Node>>,
    /// netns mode: partitions and loss are iptables rules in the namespaces.
    netns_mode: bool,
    netns: SharedNetns,
}

impl LocalExecutor {
    /// Runs a blocking namespace operation off the runtime's thread, so
    /// client ops keep flowing while pings wait out their timeouts.
    async fn with_netns(
        &self,
        f: impl FnOnce(&NetnsCluster) -> Result<(), splitbrain_nemesis::netns::NetnsError>
            + Send
            + 'static,
    ) -> Result<(), String> {
        let nc = self
            .netns
            .lock()
            .ok()
            .and_then(|n| n.clone())
            .ok_or("the network namespaces are not set up")?;
        tokio::task::spawn_blocking(move || f(&nc))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn cfg(&self) -> Result<ClusterConfig, String> {
        self.cfg
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| "the cluster is not set up".to_string())
    }

    fn admin_of(&self, node: &str) -> Result<String, String> {
        self.cfg()?
            .nodes
            .iter()
            .find(|n| n.id == node)
            .map(|n| n.admin.clone())
            .ok_or_else(|| format!("no node {node}"))
    }

    async fn status(&self, node: &str) -> Result<NodeStatus, String> {
        NodeStatus::parse_admin_reply(&self.admin(node, "status").await?).map_err(|e| e.to_string())
    }

    async fn admin(&self, node: &str, command: &str) -> Result<String, String> {
        let addr = self.admin_of(node)?;
        let reply = admin_call(&addr, command)
            .await
            .map_err(|e| format!("{node} admin {addr}: {e}"))?;
        if reply.starts_with("ok") {
            Ok(reply)
        } else {
            Err(format!("{node} refused '{command}': {reply}"))
        }
    }

    /// Nodes that can answer a probe: started and not stopped by a signal.
    fn running(&self) -> Result<Vec<Node>, String> {
        let nodes = self.nodes();
        self.with_supervisor(|s| {
            Ok(nodes
                .into_iter()
                .filter(|n| s.pid(n).is_some_and(|pid| proc_state(pid) != Some('T')))
                .collect())
        })
    }

    /// Probes every link between running nodes through the store's own
    /// transport and checks that exactly the links `cut` names are cut.
    async fn verify_links(&self, cut: impl Fn(&str, &str) -> bool) -> Result<(), String> {
        let nodes = self.running()?;
        let mut checks = Vec::new();
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                let should_cut = cut(a, b) || cut(b, a);
                checks.push(async move {
                    // A cut link must stay silent; an open one may need a moment
                    // to reconnect after a restart.
                    let attempts = if should_cut { 1 } else { 10 };
                    let mut reached = false;
                    for _ in 0..attempts {
                        let reply = self.admin(a, &format!("probe {b} 300")).await?;
                        reached = reply.contains("reached") && !reply.contains("unreachable");
                        if reached {
                            break;
                        }
                    }
                    match (should_cut, reached) {
                        (true, true) => Err(format!("the link {a}-{b} still carries messages")),
                        (false, false) => {
                            Err(format!("the link {a}-{b} carries no messages but should"))
                        }
                        _ => Ok(()),
                    }
                });
            }
        }
        let problems: Vec<String> = futures_util::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the fault did not take effect: {}",
                problems.join("; ")
            ))
        }
    }

    fn with_supervisor<T>(
        &self,
        f: impl FnOnce(&mut Supervisor) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut s = self
            .supervisor
            .lock()
            .map_err(|_| "supervisor poisoned".to_string())?;
        f(&mut s)
    }
}

#[async_trait]
impl Target for LocalExecutor {
    fn lacks(&self, ability: Ability) -> Option<String> {
        match ability {
            Ability::Loss if !self.netns_mode => Some("local nodes share the loopback interface and the reference store's admin port has no packet-loss hook; use --env netns or docker for loss".into()),
            _ => None,
        }
    }
    fn nodes(&self) -> Vec<Node> {
        self.cfg()
            .map(|c| c.nodes.iter().map(|n| n.id.clone()).collect())
            .unwrap_or_default()
    }
    async fn primaries(&mut self) -> Vec<Node> {
        let mut leaders = Vec::new();
        for n in self.nodes() {
            if self.status(&n).await.is_ok_and(|s| s.is_leader()) {
                leaders.push(n);
            }
        }
        leaders
    }
    async fn partition(&mut self, grudge: &Grudge) -> Result<(), String> {
        if self.netns_mode {
            // iptables in the namespaces, proven by pings along every link.
            let g = grudge.clone();
            return self.with_netns(move |nc| nc.partition(&g)).await;
        }
        self.heal().await?;
        for (node, froms) in grudge {
            if froms.is_empty() {
                continue;
            }
            let names: Vec<&str> = froms.iter().map(String::as_str).collect();
            self.admin(node, &format!("block {}", names.join(" ")))
                .await?;
            self.blocked.insert(node.clone(), froms.clone());
        }
        let g = grudge.clone();
        self.verify_links(move |a, b| g.get(a).is_some_and(|f| f.contains(b)))
            .await
    }
    async fn heal(&mut self) -> Result<(), String> {
        if self.netns_mode {
            return self.with_netns(|nc| nc.heal()).await;
        }
        for n in self.nodes() {
            // A killed node has nothing blocked; it restarts clean.
            if self.with_supervisor(|s| Ok(s.pid(&n).is_some()))? {
                self.admin(&n, "unblock-all").await?;
            }
        }
        self.blocked.clear();
        self.verify_links(|_, _| false).await
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.with_supervisor(|s| {
            nodes
                .iter()
                .try_for_each(|n| s.kill(n).map_err(|e| e.to_string()))
        })
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.with_supervisor(|s| {
            nodes
                .iter()
                .try_for_each(|n| s.start(n).map(|_| ()).map_err(|e| e.to_string()))
        })?;
        // Back when its admin port answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in nodes {
            while self.admin(n, "status").await.is_err() {
                // A node that died on its way up will not answer: say why now.
                self.with_supervisor(|s| {
                    s.check_alive(n)
                        .map_err(|e| format!("{n} did not come back after restart: {e}"))
                })?;
                if Instant::now() > deadline {
                    return Err(format!("{n} did not come back after restart"));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        for n in nodes {
            let pid = self.with_supervisor(|s| {
                s.pause(n).map_err(|e| e.to_string())?;
                s.pid(n).ok_or(format!("{n} is not running"))
            })?;
            // Proof: the kernel reports the process stopped. Waited for on
            // the runtime, not by blocking it: clients go on meanwhile.
            let deadline = Instant::now() + Duration::from_secs(2);
            while proc_state(pid) != Some('T') {
                if Instant::now() > deadline {
                    return Err(format!("{n} (pid {pid}) did not stop"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.with_supervisor(|s| {
            nodes
                .iter()
                .try_for_each(|n| s.resume(n).map_err(|e| e.to_string()))
        })
    }
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String> {
        self.admin(node, &format!("clock-offset {delta_ms}"))
            .await?;
        let status = self.status(node).await?;
        if status.clock_offset_ms != delta_ms {
            return Err(format!(
                "{node} reports a clock offset of {} ms, not {delta_ms} ms",
                status.clock_offset_ms
            ));
        }
        Ok(())
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        if let Some(why) = self.lacks(Ability::Loss) {
            return Err(why);
        }
        self.with_netns(move |nc| nc.loss(fraction)).await
    }
    async fn stop_loss(&mut self) -> Result<(), String> {
        if let Some(why) = self.lacks(Ability::Loss) {
            return Err(why);
        }
        self.with_netns(move |nc| nc.stop_loss()).await
    }
}

/// Clients of a running store, one per process (for other environments' clusters).
pub fn clients(
    cfg: ClusterConfig,
    workload: WorkloadKind,
    options: &WorkloadOptions,
    op_timeout: Duration,
) -> Arc<dyn ClientFactory> {
    Arc::new(RefstoreClients {
        cfg,
        workload,
        opening_balances: Arc::new(opening_balances(options)),
        op_timeout,
    })
}

/// Clients speaking the store's protocol, one per process.
struct RefstoreClients {
    cfg: ClusterConfig,
    workload: WorkloadKind,
    /// The bank's accounts and their opening balances, from the run's options.
    opening_balances: Arc<Vec<(i64, i64)>>,
    op_timeout: Duration,
}

impl ClientFactory for RefstoreClients {
    fn open(&self, _process: u64) -> Box<dyn Client> {
        // The interpreter enforces the op timeout; the store client gives up a little earlier
        // so that its own "unknown" reaches the history with its reason.
        let timeout = self
            .op_timeout
            .saturating_sub(Duration::from_millis(50))
            .max(Duration::from_millis(50));
        let opts = ClientOptions {
            timeout,
            ..ClientOptions::default()
        };
        Box::new(RefstoreClient {
            client: StoreClient::from_config(&self.cfg, opts),
            workload: self.workload,
            opening_balances: self.opening_balances.clone(),
        })
    }
}

struct RefstoreClient {
    client: StoreClient,
    workload: WorkloadKind,
    opening_balances: Arc<Vec<(i64, i64)>>,
}

fn key_name(k: &Value) -> String {
    match k {
        Value::Str(s) | Value::Keyword(s) => s.to_string(),
        other => other.to_edn(),
    }
}

fn to_store(v: &Value) -> Option<StoreValue> {
    match v {
        Value::Int(i) => Some(StoreValue::Int(*i)),
        Value::Str(s) | Value::Keyword(s) => Some(StoreValue::Str(s.to_string())),
        _ => None,
    }
}

fn from_store(v: &Option<StoreValue>) -> Value {
    match v {
        None => Value::Nil,
        Some(StoreValue::Int(i)) => Value::Int(*i),
        Some(StoreValue::Str(s)) => Value::Str(s.as_str().into()),
        Some(StoreValue::List(l)) => Value::List(l.iter().map(|i| Value::Int(*i)).collect()),
        Some(StoreValue::Set(s)) => Value::set(s.iter().map(|i| Value::Int(*i))),
    }
}

const SET_KEY: &str = "set";
const COUNTER_KEY: &str = "counter";

fn account_key(i: i64) -> String {
    format!("account-{i}")
}

/// The bank's opening balances: the total spread evenly, the remainder on account 0.
fn opening_balances(o: &WorkloadOptions) -> Vec<(i64, i64)> {
    let n = o.accounts.max(2) as i64;
    (0..n)
        .map(|i| {
            let share = o.total_balance / n;
            (
                i,
                if i == 0 {
                    share + o.total_balance % n
                } else {
                    share
                },
            )
        })
        .collect()
}

impl RefstoreClient {
    /// The store op for an invocation, or why it cannot be expressed.
    fn translate(&self, inv: &Invocation) -> Result<StoreOp, String> {
        let key = || {
            inv.key
                .as_ref()
                .map(key_name)
                .unwrap_or_else(|| "r".to_string())
        };
        let list_append = self.workload == WorkloadKind::ListAppend;
        Ok(match (self.workload, inv.f.as_str()) {
            (WorkloadKind::Set, "add") => StoreOp::Add {
                key: SET_KEY.into(),
                elem: inv.value.as_int().ok_or("add needs an integer")?,
            },
            (WorkloadKind::Set, "read") => StoreOp::ReadSet {
                key: SET_KEY.into(),
            },
            (WorkloadKind::Counter, "add") => StoreOp::Incr {
                key: COUNTER_KEY.into(),
                delta: inv.value.as_int().ok_or("add needs an integer")?,
            },
            (WorkloadKind::Counter, "read") => StoreOp::Get {
                key: COUNTER_KEY.into(),
            },
            (_, "read") => StoreOp::Get { key: key() },
            (_, "write") => StoreOp::Put {
                key: key(),
                value: to_store(&inv.value).ok_or("write needs an integer or string")?,
            },
            (_, "cas") => {
                let l = inv
                    .value
                    .as_list()
                    .filter(|l| l.len() == 2)
                    .ok_or("cas needs [from to]")?;
                StoreOp::Cas {
                    key: key(),
                    expected: to_store(&l[0]),
                    new: to_store(&l[1]).ok_or("cas needs an integer")?,
                }
            }
            (_, "txn") => {
                let mops = inv.value.as_list().ok_or("txn needs a list of micro-ops")?;
                let mut ops = Vec::with_capacity(mops.len());
                for m in mops {
                    let m = m
                        .as_list()
                        .filter(|m| m.len() == 3)
                        .ok_or("a micro-op is [f k v]")?;
                    let k = key_name(&m[1]);
                    ops.push(match m[0].as_str() {
                        Some("append") => StoreOp::Append {
                            key: k,
                            elem: m[2].as_int().ok_or("append needs an integer")?,
                        },
                        Some("r") if list_append => StoreOp::ReadList { key: k },
                        Some("r") => StoreOp::Get { key: k },
                        Some("w") => StoreOp::Put {
                            key: k,
                            value: to_store(&m[2]).ok_or("w needs an integer")?,
                        },
                        other => return Err(format!("unknown micro-op {other:?}")),
                    });
                }
                StoreOp::Txn { ops }
            }
            (w, f) => {
                return Err(format!(
                    "the {w} workload has no '{f}' on the reference store"
                ))
            }
        })
    }

    /// The completed op's value, with reads filled in.
    fn result_value(&self, inv: &Invocation, r: &OpResult) -> Value {
        match (inv.f.as_str(), r) {
            ("read", OpResult::Value(v)) => {
                let v = from_store(v);
                // An absent set or list reads as empty.
                match (self.workload, v) {
                    (WorkloadKind::Set, Value::Nil) => Value::set(vec![]),
                    (WorkloadKind::Counter, Value::Nil) => Value::Int(0),
                    (_, v) => v,
                }
            }
            ("read", OpResult::Siblings(vs)) => {
                Value::set(vs.iter().map(|v| from_store(&Some(v.clone()))))
            }
            ("txn", OpResult::Txn(results)) => {
                let mops = inv.value.as_list().unwrap_or_default();
                Value::List(
                    mops.iter()
                        .zip(results)
                        .map(|(m, r)| match (m, r) {
                            (Value::List(parts), OpResult::Value(v))
                                if parts.len() == 3 && parts[0].as_str() == Some("r") =>
                            {
                                let read = match (self.workload, from_store(v)) {
                                    (WorkloadKind::ListAppend, Value::Nil) => Value::list(vec![]),
                                    (_, v) => v,
                                };
                                Value::list(vec![parts[0].clone(), parts[1].clone(), read])
                            }
                            (other, _) => other.clone(),
                        })
                        .collect(),
                )
            }
            _ => inv.value.clone(),
        }
    }
}

impl RefstoreClient {
    async fn send(&mut self, op: StoreOp) -> Outcome {
        self.client.request(op, RequestOptions::default()).await
    }

    /// All balances, read in one transaction.
    async fn bank_read(&mut self) -> Result<Vec<(i64, Option<i64>)>, Outcome> {
        let accounts: Vec<i64> = self.opening_balances.iter().map(|&(i, _)| i).collect();
        let ops = accounts
            .iter()
            .map(|&i| StoreOp::Get {
                key: account_key(i),
            })
            .collect();
        match self.send(StoreOp::Txn { ops }).await {
            Outcome::Ok(OpResult::Txn(rs)) => Ok(accounts
                .iter()
                .zip(rs)
                .map(|(&i, r)| match r {
                    OpResult::Value(Some(StoreValue::Int(b))) => (i, Some(b)),
                    _ => (i, None),
                })
                .collect()),
            other => Err(other),
        }
    }

    async fn bank(&mut self, inv: &Invocation) -> Completion {
        if inv.f == "read" {
            return match self.bank_read().await {
                // An account that is gone is left out: the checker sees the wrong total.
                Ok(bal) => Completion::ok(Value::Map(
                    bal.into_iter()
                        .filter_map(|(i, b)| b.map(|b| (Value::Int(i), Value::Int(b))))
                        .collect(),
                )),
                Err(o) => self.completion_of(inv, o),
            };
        }
        let field = |f: &str| inv.value.map_get(&Value::from(f)).and_then(Value::as_int);
        let (Some(from), Some(to), Some(amount)) = (field("from"), field("to"), field("amount"))
        else {
            return Completion::fail(inv.value.clone(), "a transfer needs from, to and amount");
        };
        // Optimistic: read both balances, then move the money with two
        // compare-and-sets in one transaction, which fails whole if either
        // balance moved meanwhile.
        for _attempt in 0..3 {
            let ops = vec![
                StoreOp::Get {
                    key: account_key(from),
                },
                StoreOp::Get {
                    key: account_key(to),
                },
            ];
            let (bf, bt) = match self.send(StoreOp::Txn { ops }).await {
                Outcome::Ok(OpResult::Txn(rs)) => match rs.as_slice() {
                    [OpResult::Value(Some(StoreValue::Int(f))), OpResult::Value(Some(StoreValue::Int(t)))] => {
                        (*f, *t)
                    }
                    _ => return Completion::fail(inv.value.clone(), "no-such-account"),
                },
                // Nothing was written yet, whatever happened to the read.
                Outcome::Unknown(_) => return Completion::fail(inv.value.clone(), "read-unknown"),
                other => return self.completion_of(inv, other),
            };
            if bf < amount {
                return Completion::fail(inv.value.clone(), "insufficient-funds");
            }
            let cas = |k: i64, old: i64, new: i64| StoreOp::Cas {
                key: account_key(k),
                expected: Some(StoreValue::Int(old)),
                new: StoreValue::Int(new),
            };
            let ops = vec![cas(from, bf, bf - amount), cas(to, bt, bt + amount)];
            match self.send(StoreOp::Txn { ops }).await {
                Outcome::NotDone(Refusal::CasMismatch { .. }) => continue,
                Outcome::Ok(_) => return Completion::ok(inv.value.clone()),
                other => return self.completion_of(inv, other),
            }
        }
        Completion::fail(inv.value.clone(), "conflict")
    }

    fn completion_of(&self, inv: &Invocation, o: Outcome) -> Completion {
        match o {
            Outcome::Ok(r) => Completion::ok(self.result_value(inv, &r)),
            Outcome::NotDone(Refusal::CasMismatch { .. }) => {
                Completion::fail(inv.value.clone(), "precondition-failed")
            }
            Outcome::NotDone(refusal) => {
                Completion::fail(inv.value.clone(), &refusal_name(&refusal))
            }
            Outcome::Rejected(why) => Completion {
                error: Some(Value::Str(why.as_str().into())),
                ..Completion::fail(inv.value.clone(), "rejected")
            },
            Outcome::Unknown(why) => Completion {
                error: Some(Value::Str(why.as_str().into())),
                ..Completion::info(inv.value.clone(), "unknown")
            },
        }
    }
}

#[async_trait]
impl Client for RefstoreClient {
    async fn setup(&mut self) -> Result<(), String> {
        if self.workload != WorkloadKind::Bank {
            return Ok(());
        }
        // Create each account unless it exists; retried while a leader settles.
        let ops: Vec<StoreOp> = self
            .opening_balances
            .iter()
            .copied()
            .map(|(i, b)| StoreOp::Cas {
                key: account_key(i),
                expected: None,
                new: StoreValue::Int(b),
            })
            .collect();
        let mut last = String::new();
        for _ in 0..50 {
            match self.send(StoreOp::Txn { ops: ops.clone() }).await {
                Outcome::Ok(_) | Outcome::NotDone(Refusal::CasMismatch { .. }) => return Ok(()),
                Outcome::Rejected(why) => return Err(format!("opening balances rejected: {why}")),
                Outcome::NotDone(r) => last = refusal_name(&r),
                Outcome::Unknown(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("could not write the opening balances: {last}"))
    }

    async fn invoke(&mut self, inv: &Invocation) -> Completion {
        if self.workload == WorkloadKind::Bank {
            return self.bank(inv).await;
        }
        let op = match self.translate(inv) {
            Ok(op) => op,
            Err(why) => return Completion::fail(inv.value.clone(), &why),
        };
        let outcome = self.send(op).await;
        self.completion_of(inv, outcome)
    }
}

fn refusal_name(r: &Refusal) -> String {
    match r {
        Refusal::NotLeader { .. } => "not-leader".into(),
        Refusal::NoLease => "no-lease".into(),
        Refusal::CasMismatch { .. } => "precondition-failed".into(),
        Refusal::TypeMismatch { .. } => "type-mismatch".into(),
        Refusal::NoQuorum { .. } => "no-quorum".into(),
        Refusal::Unreachable(_) => "unreachable".into(),
    }
}
