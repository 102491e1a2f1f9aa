//! etcd (Debian's `etcd-server`, 3.4): a cluster of members with fixed
//! addresses, `register` with linearizable reads and CAS by transaction, and
//! `list-append` / `rw-register` as optimistic multi-key transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client as Etcd3, Compare, CompareOp, ConnectOptions, Txn, TxnOp, TxnOpResponse};
use splitbrain_history::Value;
use splitbrain_nemesis::package::Fault;
use splitbrain_nemesis::shape::Node;
use splitbrain_workloads::generator::Invocation;
use splitbrain_workloads::WorkloadKind;

use super::{
    key_name, list_value, parse_txn, txn_value, unsupported_workload, Db, DockerTest, Mop,
};
use crate::interpreter::{Client, ClientFactory, Completion};

const WORKLOADS: [WorkloadKind; 3] = [
    WorkloadKind::Register,
    WorkloadKind::ListAppend,
    WorkloadKind::RwRegister,
];

/// How often a transaction retries after another one changed what it read.
const TXN_ATTEMPTS: usize = 5;

pub struct Etcd {
    nodes: Vec<Node>,
    workload: WorkloadKind,
}

impl Etcd {
    pub fn new(t: &DockerTest) -> Result<Etcd, String> {
        if !WORKLOADS.contains(&t.workload) {
            return Err(unsupported_workload("etcd", t.workload, &WORKLOADS));
        }
        if t.nodes == 0 || t.nodes > 9 {
            return Err(format!("--db etcd runs 1 to 9 members, not {}", t.nodes));
        }
        Ok(Etcd {
            nodes: (1..=t.nodes).map(|i| format!("n{i}")).collect(),
            workload: t.workload,
        })
    }
}

fn endpoint(ip: &Ipv4Addr) -> String {
    format!("http://{ip}:2379")
}

async fn connect(endpoint: &str, timeout: Duration) -> Result<Etcd3, String> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500).min(timeout))
        .with_timeout(timeout)
        // A member cut off from the leader says so at once instead of
        // waiting out the timeout: a definite failure.
        .with_require_leader(true);
    Etcd3::connect([endpoint], Some(opts))
        .await
        .map_err(|e| e.to_string())
}

#[async_trait]
impl Db for Etcd {
    fn recipe(&self) -> &'static str {
        "etcd"
    }

    fn describe(&self) -> String {
        format!(
            "etcd 3.4 (Debian etcd-server), {} members in Docker",
            self.nodes.len()
        )
    }

    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }

    fn refuses(&self, fault: Fault) -> Option<String> {
        (fault == Fault::Clock).then(|| {
            "etcd is a Go program: it reads the clock through the vDSO, not libc, so libfaketime cannot skew it".to_string()
        })
    }

    fn env(&self) -> Vec<String> {
        // No libfaketime: it cannot fool a Go program, and preloading it buys nothing.
        Vec::new()
    }

    fn start_script(&self, node: &str, ips: &BTreeMap<Node, Ipv4Addr>) -> String {
        let ip = ips.get(node).copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let cluster: Vec<String> = ips
            .iter()
            .map(|(n, ip)| format!("{n}=http://{ip}:2380"))
            .collect();
        // The data directory lives in the container, so a restart after a
        // kill resumes as the same member (and ignores the initial-* flags).
        format!(
            "mkdir -p /var/lib/etcd-sb && exec etcd --name {node} --data-dir /var/lib/etcd-sb/{node} \
             --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://{ip}:2379 \
             --listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls http://{ip}:2380 \
             --initial-cluster {} --initial-cluster-state new --initial-cluster-token splitbrain",
            cluster.join(",")
        )
    }

    async fn ready(&self, ips: &BTreeMap<Node, Ipv4Addr>) -> Result<(), String> {
        // Every member serves a linearizable read (which needs a leader and a quorum).
        for (n, ip) in ips {
            let mut c = connect(&endpoint(ip), Duration::from_secs(2))
                .await
                .map_err(|e| format!("{n}: {e}"))?;
            c.get("splitbrain-ready", None)
                .await
                .map_err(|e| format!("{n}: {e}"))?;
        }
        Ok(())
    }

    async fn primaries(&self, ips: &BTreeMap<Node, Ipv4Addr>) -> Vec<Node> {
        let asks = ips.iter().map(|(n, ip)| async move {
            let mut c = connect(&endpoint(ip), Duration::from_millis(800))
                .await
                .ok()?;
            let s = c.status().await.ok()?;
            let me = s.header()?.member_id();
            (me == s.leader()).then(|| n.clone())
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    fn clients(
        &self,
        ips: &BTreeMap<Node, Ipv4Addr>,
        op_timeout: Duration,
    ) -> Arc<dyn ClientFactory> {
        Arc::new(EtcdClients {
            endpoints: ips.values().map(endpoint).collect(),
            workload: self.workload,
            // Give up a little before the interpreter does, so the reason reaches the history.
            timeout: op_timeout
                .saturating_sub(Duration::from_millis(100))
                .max(Duration::from_millis(100)),
        })
    }
}

struct EtcdClients {
    endpoints: Vec<String>,
    workload: WorkloadKind,
    timeout: Duration,
}

impl ClientFactory for EtcdClients {
    fn open(&self, process: u64) -> Box<dyn Client> {
        // One member per process, as Jepsen binds clients to nodes: faults
        // on a member then show up in the ops of the processes talking to it.
        let i = (process % self.endpoints.len().max(1) as u64) as usize;
        Box::new(EtcdClient {
            endpoint: self.endpoints.get(i).cloned().unwrap_or_default(),
            workload: self.workload,
            timeout: self.timeout,
            conn: None,
        })
    }
}

struct EtcdClient {
    endpoint: String,
    workload: WorkloadKind,
    timeout: Duration,
    conn: Option<Etcd3>,
}

/// Whether an error proves the request was not carried out: it was never
/// sent, or the member refused it before proposing it (no leader).
fn definitely_not_done(e: &etcd_client::Error) -> bool {
    let s = e.to_string();
    s.contains("connect error")
        || s.contains("Connection refused")
        || s.contains("no leader")
        || s.contains("error trying to connect")
}

fn etcd_error(e: &etcd_client::Error) -> Value {
    Value::Str(e.to_string().into())
}

fn parse_int(bytes: &[u8]) -> Value {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map_or(Value::Nil, Value::Int)
}

/// Lists are stored as their elements joined by commas.
fn parse_list(bytes: &[u8]) -> Vec<i64> {
    std::str::from_utf8(bytes)
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A key's value in a transaction, as the micro-ops see it.
#[derive(Clone)]
enum Cell {
    List(Vec<i64>),
    Reg(Option<i64>),
}

impl EtcdClient {
    async fn conn(&mut self) -> Result<Etcd3, String> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let c = connect(&self.endpoint, self.timeout).await?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// The completion of a failed request: `fail` if it certainly did not
    /// happen (or only read), `info` otherwise.
    fn failed(&self, inv: &Invocation, e: &etcd_client::Error, read_only: bool) -> Completion {
        let mut c = if read_only || definitely_not_done(e) {
            Completion::fail(inv.value.clone(), "etcd-error")
        } else {
            Completion::info(inv.value.clone(), "etcd-error")
        };
        c.error = Some(etcd_error(e));
        c
    }

    async fn register(&mut self, mut c: Etcd3, inv: &Invocation) -> Completion {
        let key = format!("register/{}", key_name(inv.key.as_ref()));
        match inv.f.as_str() {
            "read" => match c.get(key, None).await {
                Ok(r) => Completion::ok(
                    r.kvs()
                        .first()
                        .map_or(Value::Nil, |kv| parse_int(kv.value())),
                ),
                Err(e) => self.failed(inv, &e, true),
            },
            "write" => {
                let Some(v) = inv.value.as_int() else {
                    return Completion::fail(inv.value.clone(), "write needs an integer");
                };
                match c.put(key, v.to_string(), None).await {
                    Ok(_) => Completion::ok(inv.value.clone()),
                    Err(e) => self.failed(inv, &e, false),
                }
            }
            "cas" => {
                let Some([from, to]) = inv.value.as_list() else {
                    return Completion::fail(inv.value.clone(), "cas needs [from to]");
                };
                let (Some(from), Some(to)) = (from.as_int(), to.as_int()) else {
                    return Completion::fail(inv.value.clone(), "cas needs integers");
                };
                let txn = Txn::new()
                    .when([Compare::value(
                        key.clone(),
                        CompareOp::Equal,
                        from.to_string(),
                    )])
                    .and_then([TxnOp::put(key, to.to_string(), None)]);
                match c.txn(txn).await {
                    Ok(r) if r.succeeded() => Completion::ok(inv.value.clone()),
                    Ok(_) => Completion::fail(inv.value.clone(), "precondition-failed"),
                    Err(e) => self.failed(inv, &e, false),
                }
            }
            f => Completion::fail(inv.value.clone(), &format!("register has no '{f}'")),
        }
    }

    /// A transaction, optimistically: read every key it touches at one
    /// revision, run the micro-ops on that snapshot, then commit its writes
    /// only if none of those keys has changed since (mod revisions compared
    /// in one etcd txn). Every key it read or wrote is unchanged from the
    /// snapshot to the commit, so it is serializable at the commit's revision.
    async fn txn(&mut self, mut c: Etcd3, inv: &Invocation) -> Completion {
        let mops = match parse_txn(&inv.value) {
            Ok(m) => m,
            Err(why) => return Completion::fail(inv.value.clone(), &why),
        };
        let append = self.workload == WorkloadKind::ListAppend;
        let keys: BTreeSet<i64> = mops.iter().map(Mop::key).collect();
        let name = |k: i64| format!("{}/{k}", if append { "list" } else { "rw" });
        let read_only = mops.iter().all(|m| matches!(m, Mop::Read(_)));
        for _ in 0..TXN_ATTEMPTS {
            let snapshot = Txn::new().and_then(
                keys.iter()
                    .map(|k| TxnOp::get(name(*k), None))
                    .collect::<Vec<_>>(),
            );
            let resp = match c.txn(snapshot).await {
                Ok(r) => r,
                // Nothing was written yet.
                Err(e) => return self.failed(inv, &e, true),
            };
            let mut state: BTreeMap<i64, (Cell, i64)> = BTreeMap::new();
            for (k, r) in keys.iter().zip(resp.op_responses()) {
                let TxnOpResponse::Get(g) = r else {
                    return Completion::fail(inv.value.clone(), "unexpected txn response");
                };
                let kv = g.kvs().first();
                let cell = match (append, kv) {
                    (true, kv) => {
                        Cell::List(kv.map(|kv| parse_list(kv.value())).unwrap_or_default())
                    }
                    (false, kv) => Cell::Reg(kv.and_then(|kv| parse_int(kv.value()).as_int())),
                };
                // An absent key compares as mod revision 0.
                state.insert(*k, (cell, kv.map_or(0, |kv| kv.mod_revision())));
            }
            let mut reads = Vec::new();
            let mut written = BTreeSet::new();
            for m in &mops {
                let (cell, _) = state.get_mut(&m.key()).expect("every key was read");
                match (m, cell) {
                    (Mop::Read(_), Cell::List(l)) => reads.push(list_value(l)),
                    (Mop::Read(_), Cell::Reg(v)) => reads.push(v.map_or(Value::Nil, Value::Int)),
                    (Mop::Append(k, v), Cell::List(l)) => {
                        l.push(*v);
                        written.insert(*k);
                    }
                    (Mop::Write(k, v), Cell::Reg(r)) => {
                        *r = Some(*v);
                        written.insert(*k);
                    }
                    (m, _) => {
                        return Completion::fail(
                            inv.value.clone(),
                            &format!("{m:?} does not belong in a {} txn", self.workload),
                        )
                    }
                }
            }
            if read_only {
                return Completion::ok(txn_value(&inv.value, reads));
            }
            let guards: Vec<Compare> = state
                .iter()
                .map(|(k, (_, rev))| Compare::mod_revision(name(*k), CompareOp::Equal, *rev))
                .collect();
            let puts: Vec<TxnOp> = written
                .iter()
                .map(|k| {
                    let v = match &state[k].0 {
                        Cell::List(l) => l.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
                        Cell::Reg(r) => r.map(|v| v.to_string()).unwrap_or_default(),
                    };
                    TxnOp::put(name(*k), v, None)
                })
                .collect();
            match c.txn(Txn::new().when(guards).and_then(puts)).await {
                Ok(r) if r.succeeded() => return Completion::ok(txn_value(&inv.value, reads)),
                // Another transaction got in between: nothing was written; try again.
                Ok(_) => continue,
                Err(e) => return self.failed(inv, &e, false),
            }
        }
        Completion::fail(inv.value.clone(), "conflict")
    }
}

#[async_trait]
impl Client for EtcdClient {
    async fn invoke(&mut self, inv: &Invocation) -> Completion {
        let c = match self.conn().await {
            Ok(c) => c,
            Err(why) => {
                return Completion {
                    error: Some(Value::Str(why.into())),
                    ..Completion::fail(inv.value.clone(), "connect")
                }
            }
        };
        match self.workload {
            WorkloadKind::Register => self.register(c, inv).await,
            _ => self.txn(c, inv).await,
        }
    }
}
