//! Redis with Sentinel (Debian's `redis-server` and `redis-sentinel`, 7.0):
//! n1 starts as the primary, the other nodes as its replicas, and three
//! Sentinels (on n1..n3) fail over when the primary is unreachable. Clients
//! ask Sentinel for the current primary and follow it. Replication is
//! asynchronous, so a failover can discard writes the old primary had
//! acknowledged: `register` and `set` show them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use splitbrain_generators::Invocation;
use splitbrain_history::Value;
use splitbrain_nemesis::shape::Node;
use splitbrain_nemesis::Ability;
use splitbrain_workloads::WorkloadKind;

use super::{key_name, unsupported_workload, Db, DbOptions};
use crate::env::{Addresses, NodeCommand, NodeImage};
use crate::interpreter::{Client, ClientFactory, Completion};

pub const WORKLOADS: [WorkloadKind; 2] = [WorkloadKind::Register, WorkloadKind::Set];
const MASTER: &str = "mymaster";
const SENTINELS: usize = 3;
const REDIS_PORT: u16 = 6379;
const SENTINEL_PORT: u16 = 26379;
/// How long Sentinel waits before it calls a silent primary down.
const DOWN_AFTER_MS: u64 = 2000;

/// Compare-and-set in one step on the server.
const CAS_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     redis.call('set', KEYS[1], ARGV[2]) return 1 else return 0 end";
const SET_KEY: &str = "set";

pub struct Redis {
    nodes: Vec<Node>,
    workload: WorkloadKind,
}

impl Redis {
    pub fn new(t: &DbOptions) -> Result<Redis, String> {
        if !WORKLOADS.contains(&t.workload) {
            return Err(unsupported_workload("redis", t.workload, &WORKLOADS));
        }
        if t.nodes < SENTINELS || t.nodes > 9 {
            return Err(format!(
                "--db redis needs 3 to 9 nodes (a primary, replicas and {SENTINELS} Sentinels on the first three), not {}",
                t.nodes
            ));
        }
        Ok(Redis {
            nodes: (1..=t.nodes).map(|i| format!("n{i}")).collect(),
            workload: t.workload,
        })
    }
}

async fn open(
    ip: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let client = redis::Client::open(format!("redis://{ip}:{port}/"))?;
    client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout),
        )
        .await
}

/// The primary one Sentinel names now.
async fn ask_sentinel(sentinel: Ipv4Addr, timeout: Duration) -> Result<Ipv4Addr, String> {
    let mut c = open(sentinel, SENTINEL_PORT, timeout)
        .await
        .map_err(|e| format!("sentinel {sentinel}: {e}"))?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER)
        .query_async(&mut c)
        .await
        .map_err(|e| format!("sentinel {sentinel}: {e}"))?;
    let (host, _port) = addr.ok_or_else(|| format!("sentinel {sentinel} knows no primary"))?;
    host.parse()
        .map_err(|_| format!("sentinel {sentinel} names {host}, not an address"))
}

/// `INFO replication` of one server.
async fn replication(c: &mut MultiplexedConnection) -> Result<String, redis::RedisError> {
    redis::cmd("INFO").arg("replication").query_async(c).await
}

/// Debian's Redis and Sentinel; no libfaketime: preloaded, it stops
/// redis-server from starting (see `lacks`).
pub const IMAGE: NodeImage = NodeImage {
    recipe: "redis",
    packages: &["redis-server", "redis-sentinel", "redis-tools"],
    with_harness: false,
    process_env: &[],
};

#[async_trait]
impl Db for Redis {
    fn describe(&self) -> String {
        format!(
            "Redis 7.0 with Sentinel (Debian redis-server, redis-sentinel), {} nodes in Docker: a primary, {} asynchronous replicas, {SENTINELS} Sentinels (quorum 2, down after {DOWN_AFTER_MS} ms)",
            self.nodes.len(),
            self.nodes.len() - 1
        )
    }

    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }

    fn lacks(&self, ability: Ability) -> Option<String> {
        (ability == Ability::Clock).then(|| {
            "redis-server under libfaketime (Debian's 0.9.10) never starts: its allocator reads the clock while libfaketime initialises, which libfaketime cannot recover from, so clock skew cannot be faked for Redis here".to_string()
        })
    }

    fn ports(&self) -> Vec<u16> {
        vec![6379, 26379]
    }

    fn node_command(&self, node: &str, addrs: &Addresses, _harness: &str) -> NodeCommand {
        let ips = &addrs.ips;
        NodeCommand::shell({
            let first = ips.get("n1").copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
            let replicaof = if node == "n1" {
                String::new()
            } else {
                format!("replicaof {first} {REDIS_PORT}\n")
            };
            let sentinel_index = self.nodes.iter().position(|n| n == node).unwrap_or(0);
            // Sentinel and the server rewrite their files as roles change, so
            // they are written on the first start only and a restart after a
            // kill resumes from what they last knew.
            let sentinel = if sentinel_index < SENTINELS {
                format!(
                    "[ -f sentinel.conf ] || cat > sentinel.conf <<EOF
port {SENTINEL_PORT}
bind 0.0.0.0
protected-mode no
dir /var/lib/splitbrain-redis
sentinel monitor {MASTER} {first} {REDIS_PORT} 2
sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}
sentinel failover-timeout {MASTER} 10000
sentinel parallel-syncs {MASTER} 1
EOF
redis-sentinel sentinel.conf &
"
                )
            } else {
                String::new()
            };
            format!(
                "set -e
mkdir -p /var/lib/splitbrain-redis && cd /var/lib/splitbrain-redis
[ -f redis.conf ] || cat > redis.conf <<EOF
bind 0.0.0.0
protected-mode no
port {REDIS_PORT}
dir /var/lib/splitbrain-redis
appendonly yes
appendfsync everysec
save \"\"
{replicaof}EOF
{sentinel}exec redis-server redis.conf
"
            )
        })
    }

    async fn ready(&self, addrs: &Addresses) -> Result<(), String> {
        let ips = &addrs.ips;
        let t = Duration::from_secs(2);
        let primary = ips.get("n1").copied().ok_or("no address for n1")?;
        // Every Sentinel names n1 and sees enough of the others to fail over.
        for s in ips.values().take(SENTINELS) {
            let named = ask_sentinel(*s, t).await?;
            if named != primary {
                return Err(format!("sentinel {s} names {named}, not n1"));
            }
            let mut c = open(*s, SENTINEL_PORT, t)
                .await
                .map_err(|e| e.to_string())?;
            let q: String = redis::cmd("SENTINEL")
                .arg("ckquorum")
                .arg(MASTER)
                .query_async(&mut c)
                .await
                .map_err(|e| format!("sentinel {s}: {e}"))?;
            if !q.contains(&format!("{SENTINELS} usable")) {
                return Err(format!("sentinel {s}: {q}"));
            }
        }
        // Every replica is attached.
        let mut c = open(primary, REDIS_PORT, t)
            .await
            .map_err(|e| e.to_string())?;
        let info = replication(&mut c).await.map_err(|e| e.to_string())?;
        let want = format!("connected_slaves:{}", ips.len() - 1);
        if !info.contains(&want) {
            return Err(format!("the primary does not have {want} yet"));
        }
        Ok(())
    }

    async fn primaries(&self, addrs: &Addresses) -> Vec<Node> {
        let ips = &addrs.ips;
        let node_of = |ip: Ipv4Addr| ips.iter().find(|(_, a)| **a == ip).map(|(n, _)| n.clone());
        // The Sentinels' majority view: what most of them name. (The nemesis
        // asks again a few times when nobody is named.)
        let asks = ips
            .values()
            .take(SENTINELS)
            .map(|s| ask_sentinel(*s, Duration::from_millis(800)));
        let mut votes: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for ip in futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
        {
            *votes.entry(ip).or_default() += 1;
        }
        if let Some(node) = votes
            .into_iter()
            .max_by_key(|(_, v)| *v)
            .and_then(|(ip, _)| node_of(ip))
        {
            return vec![node];
        }
        // No Sentinel answers (they share containers with the servers, so a
        // fault can silence them): the servers that say they are primaries.
        let asks = ips.iter().map(|(n, ip)| async move {
            let mut c = open(*ip, REDIS_PORT, Duration::from_millis(800))
                .await
                .ok()?;
            let info = replication(&mut c).await.ok()?;
            info.contains("role:master").then(|| n.clone())
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    fn clients(
        &self,
        addrs: &Addresses,
        op_timeout: Duration,
        _workload: &splitbrain_workloads::WorkloadOptions,
    ) -> Arc<dyn ClientFactory> {
        let ips = &addrs.ips;
        Arc::new(RedisClients {
            sentinels: ips.values().take(SENTINELS).copied().collect(),
            workload: self.workload,
            timeout: op_timeout
                .saturating_sub(Duration::from_millis(100))
                .max(Duration::from_millis(100)),
        })
    }
}

struct RedisClients {
    sentinels: Vec<Ipv4Addr>,
    workload: WorkloadKind,
    timeout: Duration,
}

impl ClientFactory for RedisClients {
    fn open(&self, process: u64) -> Box<dyn Client> {
        Box::new(RedisClient {
            sentinels: self.sentinels.clone(),
            first_sentinel: (process % self.sentinels.len().max(1) as u64) as usize,
            workload: self.workload,
            timeout: self.timeout,
            conn: None,
        })
    }
}

/// A client as Sentinel's documentation describes one: find the primary
/// through Sentinel, check it calls itself master, and keep using that
/// connection until it fails (Sentinel closes clients' connections when it
/// demotes a server), then ask again.
struct RedisClient {
    sentinels: Vec<Ipv4Addr>,
    /// Processes start with different Sentinels, spreading the asking.
    first_sentinel: usize,
    workload: WorkloadKind,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
}

impl RedisClient {
    async fn primary(&mut self) -> Result<MultiplexedConnection, String> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let n = self.sentinels.len();
        let mut why = String::from("no sentinels");
        for i in 0..n {
            let s = self.sentinels[(self.first_sentinel + i) % n];
            let ip = match ask_sentinel(s, self.timeout / 4).await {
                Ok(ip) => ip,
                Err(e) => {
                    why = e;
                    continue;
                }
            };
            let mut c = open(ip, REDIS_PORT, self.timeout)
                .await
                .map_err(|e| format!("primary {ip}: {e}"))?;
            let info = replication(&mut c)
                .await
                .map_err(|e| format!("primary {ip}: {e}"))?;
            if !info.contains("role:master") {
                return Err(format!("{ip}, named by sentinel {s}, is not a master"));
            }
            self.conn = Some(c.clone());
            return Ok(c);
        }
        Err(why)
    }

    /// A failed request: `fail` when the server refused it (an error reply
    /// means the command did not run) or it only read, `info` otherwise.
    fn failed(&mut self, inv: &Invocation, e: &redis::RedisError, read_only: bool) -> Completion {
        // Whatever it was, the next op asks Sentinel afresh.
        self.conn = None;
        let refused = e.code().is_some();
        let c = if refused || read_only {
            Completion::fail(inv.value.clone(), if refused { "refused" } else { "io" })
        } else {
            Completion::info(inv.value.clone(), "io")
        };
        Completion {
            error: Some(Value::Str(e.to_string().into())),
            ..c
        }
    }

    async fn register(&mut self, mut c: MultiplexedConnection, inv: &Invocation) -> Completion {
        let key = format!("register:{}", key_name(inv.key.as_ref()));
        match inv.f.as_str() {
            "read" => match redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<i64>>(&mut c)
                .await
            {
                Ok(v) => Completion::ok(v.map_or(Value::Nil, Value::Int)),
                Err(e) => self.failed(inv, &e, true),
            },
            "write" => {
                let Some(v) = inv.value.as_int() else {
                    return Completion::fail(inv.value.clone(), "write needs an integer");
                };
                match redis::cmd("SET")
                    .arg(&key)
                    .arg(v)
                    .query_async::<()>(&mut c)
                    .await
                {
                    Ok(()) => Completion::ok(inv.value.clone()),
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
                match redis::cmd("EVAL")
                    .arg(CAS_SCRIPT)
                    .arg(1)
                    .arg(&key)
                    .arg(from)
                    .arg(to)
                    .query_async::<i64>(&mut c)
                    .await
                {
                    Ok(1) => Completion::ok(inv.value.clone()),
                    Ok(_) => Completion::fail(inv.value.clone(), "precondition-failed"),
                    Err(e) => self.failed(inv, &e, false),
                }
            }
            f => Completion::fail(inv.value.clone(), &format!("register has no '{f}'")),
        }
    }

    async fn set(&mut self, mut c: MultiplexedConnection, inv: &Invocation) -> Completion {
        match inv.f.as_str() {
            "add" => {
                let Some(v) = inv.value.as_int() else {
                    return Completion::fail(inv.value.clone(), "add needs an integer");
                };
                match redis::cmd("SADD")
                    .arg(SET_KEY)
                    .arg(v)
                    .query_async::<i64>(&mut c)
                    .await
                {
                    Ok(_) => Completion::ok(inv.value.clone()),
                    Err(e) => self.failed(inv, &e, false),
                }
            }
            "read" => match redis::cmd("SMEMBERS")
                .arg(SET_KEY)
                .query_async::<Vec<i64>>(&mut c)
                .await
            {
                Ok(vs) => Completion::ok(Value::set(vs.into_iter().map(Value::Int))),
                Err(e) => self.failed(inv, &e, true),
            },
            f => Completion::fail(inv.value.clone(), &format!("set has no '{f}'")),
        }
    }
}

#[async_trait]
impl Client for RedisClient {
    async fn invoke(&mut self, inv: &Invocation) -> Completion {
        let c = match self.primary().await {
            Ok(c) => c,
            // Nothing was sent.
            Err(why) => {
                return Completion {
                    error: Some(Value::Str(why.into())),
                    ..Completion::fail(inv.value.clone(), "no-primary")
                }
            }
        };
        match self.workload {
            WorkloadKind::Register => self.register(c, inv).await,
            _ => self.set(c, inv).await,
        }
    }
}
