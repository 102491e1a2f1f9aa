//! etcd (Debian's `etcd-server`, 3.4): a cluster of members with fixed
//! addresses, `register` with linearizable reads and CAS by transaction, and
//! `list-append` / `rw-register` as optimistic multi-key transactions.
//! The client speaks etcd's gRPC-JSON gateway (HTTP/1.1 on the client
//! port, keys and values in base64), so building needs no protocol compiler.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::{DeserializeOwned, Deserializer, Error as _, IgnoredAny};
use serde::Deserialize;
use serde_json::json;
use splitbrain_generators::Invocation;
use splitbrain_history::Value;
use splitbrain_nemesis::shape::Node;
use splitbrain_nemesis::{Ability, Members};
use splitbrain_workloads::WorkloadKind;
use tokio::net::TcpStream;

use super::{key_name, list_value, parse_txn, txn_value, unsupported_workload, Db, DbOptions, Mop};
use crate::env::{Addresses, NodeCommand, NodeImage};
use crate::interpreter::{Client, ClientFactory, Completion};

pub const WORKLOADS: [WorkloadKind; 3] = [
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
    pub fn new(t: &DbOptions) -> Result<Etcd, String> {
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

/// A member's client port, where etcd serves gRPC and, beside it, the
/// gRPC-JSON gateway this client speaks (`POST /v3/kv/range` and so on).
fn endpoint(ip: &Ipv4Addr) -> SocketAddr {
    SocketAddr::from((*ip, 2379))
}

/// How long connecting to a member may take: past it the member is down or
/// cut off, and the request was never sent.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a request to etcd's gateway went wrong.
#[derive(Debug, thiserror::Error)]
enum EtcdError {
    /// No connection to send the request on: it was never sent.
    #[error("connect error: {0}")]
    Connect(String),
    /// Sent, and no answer within the request's timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// Sent, then the connection failed.
    #[error("connection error after sending: {0}")]
    Transport(String),
    /// etcd's answer was an error (a gRPC status, as the gateway writes it).
    #[error("etcd answered {status}: {message}")]
    Status { status: u16, message: String },
    /// An answer that is not what the gateway writes.
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl EtcdError {
    /// Whether the error proves the request was not carried out: it was
    /// never sent, or the member refused it before proposing it (no leader).
    fn definitely_not_done(&self) -> bool {
        match self {
            EtcdError::Connect(_) => true,
            EtcdError::Status { message, .. } => message.contains("no leader"),
            EtcdError::Timeout(_) | EtcdError::Transport(_) | EtcdError::Decode(_) => false,
        }
    }
}

/// An int64 or uint64 field: the gateway writes them as JSON strings
/// (and takes either).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Int<T>(T);

impl<'de, T: FromStr + Deserialize<'de>> Deserialize<'de> for Int<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr<T> {
            Num(T),
            Str(String),
        }
        match Repr::<T>::deserialize(d)? {
            Repr::Num(n) => Ok(Int(n)),
            Repr::Str(s) => s
                .parse()
                .map(Int)
                .map_err(|_| D::Error::custom(format!("not an integer: {s:?}"))),
        }
    }
}

// The gateway's JSON: proto field names, fields at their default left out.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResponseHeader {
    #[serde(alias = "memberId")]
    member_id: Option<Int<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyValue {
    /// Base64.
    value: String,
    #[serde(alias = "modRevision")]
    mod_revision: Int<i64>,
}

impl KeyValue {
    fn value(&self) -> Result<Vec<u8>, EtcdError> {
        BASE64
            .decode(&self.value)
            .map_err(|e| EtcdError::Decode(format!("a value that is not base64: {e}")))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RangeResponse {
    kvs: Vec<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResponseOp {
    #[serde(alias = "responseRange")]
    response_range: Option<RangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TxnResponse {
    succeeded: bool,
    responses: Vec<ResponseOp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StatusResponse {
    header: Option<ResponseHeader>,
    leader: Option<Int<u64>>,
}

/// A member as `/v3/cluster/member/*` lists it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Member {
    #[serde(rename = "ID")]
    id: Int<u64>,
    #[serde(rename = "peerURLs", alias = "peer_urls")]
    peer_urls: Vec<String>,
    #[serde(rename = "isLearner", alias = "is_learner")]
    is_learner: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MemberListResponse {
    members: Vec<Member>,
}

/// The body of an error answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    message: Option<String>,
    error: Option<String>,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    BASE64.encode(bytes)
}

/// A compare of a txn: `key`'s value (absent keys never match) or mod
/// revision (absent keys have mod revision 0) equals the given one.
fn compare_value(key: &str, value: &str) -> serde_json::Value {
    json!({"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)})
}

fn compare_mod_revision(key: &str, rev: i64) -> serde_json::Value {
    // The oneof must be there even for 0: a compare without it matches anything.
    json!({"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
}

fn request_put(key: &str, value: &str) -> serde_json::Value {
    json!({"request_put": {"key": b64(key), "value": b64(value)}})
}

fn request_range(key: &str) -> serde_json::Value {
    json!({"request_range": {"key": b64(key)}})
}

/// An HTTP/1.1 connection and the task that drives it, ended with it.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One member's gateway over one kept-alive connection, made again after
/// it fails. Every request has its own timeout.
struct Gateway {
    addr: Option<SocketAddr>,
    timeout: Duration,
    conn: Option<Conn>,
}

impl Gateway {
    fn new(addr: Option<SocketAddr>, timeout: Duration) -> Gateway {
        Gateway {
            addr,
            timeout,
            conn: None,
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, EtcdError> {
        let limit = CONNECT_TIMEOUT.min(self.timeout);
        let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(EtcdError::Connect(format!(
                    "no connection to {addr} within {limit:?}"
                )))
            }
            Ok(Err(e)) => return Err(EtcdError::Connect(format!("{addr}: {e}"))),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| EtcdError::Connect(format!("{addr}: {e}")))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        })
        .abort_handle();
        Ok(Conn { sender, task })
    }

    /// POST `body` to `path` and decode the answer.
    async fn call<T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, EtcdError> {
        let deadline = Instant::now() + self.timeout;
        let addr = self
            .addr
            .ok_or_else(|| EtcdError::Connect("no member to talk to".into()))?;
        if self.conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            self.conn = None;
            self.conn = Some(self.connect(addr).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(EtcdError::Connect("no connection".into()));
        };
        // A connection that closed while idle takes no request: not sent.
        let ready = deadline.saturating_duration_since(Instant::now());
        if let Err(why) = match tokio::time::timeout(ready, conn.sender.ready()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the connection was not ready within {ready:?}")),
        } {
            self.conn = None;
            return Err(EtcdError::Connect(why));
        }
        let req = Request::post(path)
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            // etcd's WithRequireLeader: a member cut off from the leader
            // says so at once instead of waiting out the timeout, a
            // definite failure.
            .header("grpc-metadata-hasleader", "true")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| EtcdError::Connect(format!("cannot make the request: {e}")))?;
        let exchange = async {
            let resp = conn
                .sender
                .send_request(req)
                .await
                .map_err(|e| EtcdError::Transport(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| EtcdError::Transport(e.to_string()))?
                .to_bytes();
            Ok::<_, EtcdError>((status, body))
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let (status, body) = match tokio::time::timeout(left, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.conn = None;
                return Err(e);
            }
            Err(_) => {
                // The answer may still come: on another connection, the
                // next request cannot read this one's.
                self.conn = None;
                return Err(EtcdError::Timeout(self.timeout));
            }
        };
        if !status.is_success() {
            let e: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            let message = e
                .message
                .or(e.error)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(EtcdError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| EtcdError::Decode(format!("{path}: {e}")))
    }

    /// A linearizable read of one key.
    async fn get(&mut self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let r: RangeResponse = self.call("/v3/kv/range", json!({"key": b64(key)})).await?;
        Ok(r.kvs.into_iter().next())
    }

    async fn put(&mut self, key: &str, value: &str) -> Result<(), EtcdError> {
        let _: IgnoredAny = self
            .call("/v3/kv/put", json!({"key": b64(key), "value": b64(value)}))
            .await?;
        Ok(())
    }

    async fn txn(
        &mut self,
        compare: Vec<serde_json::Value>,
        success: Vec<serde_json::Value>,
    ) -> Result<TxnResponse, EtcdError> {
        self.call(
            "/v3/kv/txn",
            json!({"compare": compare, "success": success}),
        )
        .await
    }

    async fn status(&mut self) -> Result<StatusResponse, EtcdError> {
        self.call("/v3/maintenance/status", json!({})).await
    }
}

/// A member's peer URL, by which the cluster knows it.
fn peer_url(ip: &Ipv4Addr) -> String {
    format!("http://{ip}:2380")
}

/// Where a joining member reads the cluster it joins (in its working directory).
const REJOIN_FILE: &str = "rejoin.cluster";

impl Etcd {
    fn node_of(&self, addrs: &Addresses, m: &Member) -> Option<Node> {
        addrs
            .ips
            .iter()
            .find(|(_, ip)| m.peer_urls.contains(&peer_url(ip)))
            .map(|(n, _)| n.clone())
    }

    fn members_of(&self, addrs: &Addresses, list: &[Member]) -> Members {
        let mut m = Members::default();
        for node in &self.nodes {
            if let Some(member) = list
                .iter()
                .find(|x| self.node_of(addrs, x).as_ref() == Some(node))
            {
                if member.is_learner {
                    m.joining.push(node.clone());
                } else {
                    m.members.push(node.clone());
                }
            }
        }
        m
    }

    /// A cluster API request, to the leader first, then to every member in
    /// turn while the request certainly was not carried out (or, for a
    /// `read`, whatever went wrong). `last` is asked last: a member just
    /// removed may still answer from its own stale view.
    async fn cluster_call<T: DeserializeOwned>(
        &self,
        addrs: &Addresses,
        path: &str,
        body: serde_json::Value,
        read: bool,
        last: Option<&Node>,
    ) -> Result<T, String> {
        let mut order: Vec<Node> = self.primaries(addrs).await;
        let rest: Vec<Node> = self
            .nodes
            .iter()
            .filter(|n| !order.contains(n))
            .cloned()
            .collect();
        order.extend(rest);
        if let Some(last) = last {
            order.retain(|n| n != last);
            order.push(last.clone());
        }
        let mut problems = Vec::new();
        for n in order {
            let Some(ip) = addrs.ips.get(&n) else {
                continue;
            };
            match Gateway::new(Some(endpoint(ip)), Duration::from_secs(10))
                .call(path, body.clone())
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(e) if read || e.definitely_not_done() => problems.push(format!("{n}: {e}")),
                Err(e) => return Err(format!("{path} on {n}: {e}")),
            }
        }
        Err(format!(
            "{path}: no member carried it out ({})",
            problems.join("; ")
        ))
    }

    async fn member_list(
        &self,
        addrs: &Addresses,
        last: Option<&Node>,
    ) -> Result<Vec<Member>, String> {
        let r: MemberListResponse = self
            .cluster_call(addrs, "/v3/cluster/member/list", json!({}), true, last)
            .await?;
        Ok(r.members)
    }
}

/// Debian's etcd; no libfaketime: it cannot fool a Go program.
pub const IMAGE: NodeImage = NodeImage {
    recipe: "etcd",
    packages: &["etcd-server", "etcd-client"],
    with_harness: false,
    process_env: &[],
};

#[async_trait]
impl Db for Etcd {
    fn describe(&self) -> String {
        format!(
            "etcd 3.4 (Debian etcd-server), {} members in Docker",
            self.nodes.len()
        )
    }

    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }

    fn lacks(&self, ability: Ability) -> Option<String> {
        match ability {
            Ability::Clock => Some("etcd is a Go program: it reads the clock through the vDSO, not libc, so libfaketime cannot skew it".to_string()),
            Ability::Membership if self.nodes.len() < 3 => Some(format!(
                "a membership change needs at least 3 members to leave 2; this cluster has {}",
                self.nodes.len()
            )),
            _ => None,
        }
    }

    fn changes_membership(&self) -> bool {
        true
    }

    async fn members(&self, addrs: &Addresses) -> Result<Members, String> {
        Ok(self.members_of(addrs, &self.member_list(addrs, None).await?))
    }

    async fn remove_member(&self, addrs: &Addresses, node: &Node) -> Result<Members, String> {
        let list = self.member_list(addrs, None).await?;
        if let Some(m) = list
            .iter()
            .find(|m| self.node_of(addrs, m).as_ref() == Some(node))
        {
            // etcd refuses a removal while a member it would count on has
            // not been connected for long (a member just promoted): wait.
            let deadline = Instant::now() + Duration::from_secs(30);
            let removed: Result<IgnoredAny, String> = loop {
                let r = self
                    .cluster_call(
                        addrs,
                        "/v3/cluster/member/remove",
                        json!({"ID": m.id.0.to_string()}),
                        false,
                        None,
                    )
                    .await;
                match r {
                    Err(e) if e.contains("unhealthy cluster") && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_secs(1)).await
                    }
                    r => break r,
                }
            };
            // A removed leader may close the connection before it answers:
            // the configuration says what happened.
            if let Err(e) = removed {
                let after = self.members_of(addrs, &self.member_list(addrs, Some(node)).await?);
                if after.members.contains(node) || after.joining.contains(node) {
                    return Err(e);
                }
                return Ok(after);
            }
        }
        Ok(self.members_of(addrs, &self.member_list(addrs, Some(node)).await?))
    }

    async fn add_member(&self, addrs: &Addresses, node: &Node) -> Result<Members, String> {
        let ip = addrs
            .ips
            .get(node)
            .ok_or_else(|| format!("{node} has no address"))?;
        let list = self.member_list(addrs, None).await?;
        if !list
            .iter()
            .any(|m| self.node_of(addrs, m).as_ref() == Some(node))
        {
            // As a learner (etcd 3.4): it catches up before it counts in any quorum.
            let _: IgnoredAny = self
                .cluster_call(
                    addrs,
                    "/v3/cluster/member/add",
                    json!({"peerURLs": [peer_url(ip)], "isLearner": true}),
                    false,
                    None,
                )
                .await?;
        }
        self.members(addrs).await
    }

    async fn finish_join(&self, addrs: &Addresses, node: &Node) -> Result<Members, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.member_list(addrs, None).await?;
            let Some(m) = list
                .iter()
                .find(|m| self.node_of(addrs, m).as_ref() == Some(node))
            else {
                return Err(format!("{node} is not a member after it was added"));
            };
            if !m.is_learner {
                return Ok(self.members_of(addrs, &list));
            }
            let promoted: Result<IgnoredAny, String> = self
                .cluster_call(
                    addrs,
                    "/v3/cluster/member/promote",
                    json!({"ID": m.id.0.to_string()}),
                    false,
                    None,
                )
                .await;
            match promoted {
                Ok(_) => continue,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "{node} was not promoted from learner within 60 s: {e}"
                    ))
                }
                // Not yet in sync with the leader.
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    fn restarts_to_rejoin(&self) -> bool {
        true
    }

    fn rejoin_files(
        &self,
        node: &Node,
        addrs: &Addresses,
        members: &Members,
    ) -> Vec<(String, Vec<u8>)> {
        let cluster: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| *n == node || members.members.contains(n) || members.joining.contains(n))
            .filter_map(|n| addrs.ips.get(n).map(|ip| format!("{n}={}", peer_url(ip))))
            .collect();
        vec![(REJOIN_FILE.to_string(), cluster.join(",").into_bytes())]
    }

    fn ports(&self) -> Vec<u16> {
        vec![2379, 2380]
    }

    fn node_command(&self, node: &str, addrs: &Addresses, _harness: &str) -> NodeCommand {
        let ips = &addrs.ips;
        NodeCommand::shell({
            let ip = ips.get(node).copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
            let cluster: Vec<String> = ips
                .iter()
                .map(|(n, ip)| format!("{n}=http://{ip}:2380"))
                .collect();
            // The data directory lives in the container, so a restart after a
            // kill resumes as the same member (and ignores the initial-* flags).
            // A member removed and added back finds REJOIN_FILE: it starts
            // from an empty data directory, joining the cluster it names.
            format!(
            "mkdir -p /var/lib/etcd-sb && cluster={} && state=new && \
             if [ -f {REJOIN_FILE} ]; then cluster=$(cat {REJOIN_FILE}) && state=existing && \
             rm -rf /var/lib/etcd-sb/{node} {REJOIN_FILE}; fi && \
             exec etcd --name {node} --data-dir /var/lib/etcd-sb/{node} \
             --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://{ip}:2379 \
             --listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls http://{ip}:2380 \
             --initial-cluster \"$cluster\" --initial-cluster-state $state --initial-cluster-token splitbrain",
            cluster.join(",")
        )
        })
    }

    async fn ready(&self, addrs: &Addresses) -> Result<(), String> {
        let ips = &addrs.ips;
        // Every member serves a linearizable read (which needs a leader and a quorum).
        for (n, ip) in ips {
            Gateway::new(Some(endpoint(ip)), Duration::from_secs(2))
                .get("splitbrain-ready")
                .await
                .map_err(|e| format!("{n}: {e}"))?;
        }
        Ok(())
    }

    async fn primaries(&self, addrs: &Addresses) -> Vec<Node> {
        let ips = &addrs.ips;
        let asks = ips.iter().map(|(n, ip)| async move {
            let s = Gateway::new(Some(endpoint(ip)), Duration::from_millis(800))
                .status()
                .await
                .ok()?;
            let me = s.header?.member_id?;
            (Some(me) == s.leader).then(|| n.clone())
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
    endpoints: Vec<SocketAddr>,
    workload: WorkloadKind,
    timeout: Duration,
}

impl ClientFactory for EtcdClients {
    fn open(&self, process: u64) -> Box<dyn Client> {
        // One member per process, as Jepsen binds clients to nodes: faults
        // on a member then show up in the ops of the processes talking to it.
        let i = (process % self.endpoints.len().max(1) as u64) as usize;
        Box::new(EtcdClient {
            gateway: Gateway::new(self.endpoints.get(i).copied(), self.timeout),
            workload: self.workload,
        })
    }
}

struct EtcdClient {
    gateway: Gateway,
    workload: WorkloadKind,
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
    /// The completion of a failed request: `fail` if it certainly did not
    /// happen (or only read), `info` otherwise.
    fn failed(&self, inv: &Invocation, e: &EtcdError, read_only: bool) -> Completion {
        let mut c = if read_only || e.definitely_not_done() {
            Completion::fail(inv.value.clone(), "etcd-error")
        } else {
            Completion::info(inv.value.clone(), "etcd-error")
        };
        c.error = Some(Value::Str(e.to_string().into()));
        c
    }

    async fn register(&mut self, inv: &Invocation) -> Completion {
        let key = format!("register/{}", key_name(inv.key.as_ref()));
        match inv.f.as_str() {
            "read" => match self.gateway.get(&key).await {
                Ok(kv) => match kv.map(|kv| kv.value()).transpose() {
                    Ok(v) => Completion::ok(v.map_or(Value::Nil, |v| parse_int(&v))),
                    Err(e) => self.failed(inv, &e, true),
                },
                Err(e) => self.failed(inv, &e, true),
            },
            "write" => {
                let Some(v) = inv.value.as_int() else {
                    return Completion::fail(inv.value.clone(), "write needs an integer");
                };
                match self.gateway.put(&key, &v.to_string()).await {
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
                let txn = self.gateway.txn(
                    vec![compare_value(&key, &from.to_string())],
                    vec![request_put(&key, &to.to_string())],
                );
                match txn.await {
                    Ok(r) if r.succeeded => Completion::ok(inv.value.clone()),
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
    async fn txn(&mut self, inv: &Invocation) -> Completion {
        let mops = match parse_txn(&inv.value) {
            Ok(m) => m,
            Err(why) => return Completion::fail(inv.value.clone(), &why),
        };
        let append = self.workload == WorkloadKind::ListAppend;
        let keys: BTreeSet<i64> = mops.iter().map(Mop::key).collect();
        let name = |k: i64| format!("{}/{k}", if append { "list" } else { "rw" });
        let read_only = mops.iter().all(|m| matches!(m, Mop::Read(_)));
        for _ in 0..TXN_ATTEMPTS {
            let snapshot = keys.iter().map(|k| request_range(&name(*k))).collect();
            let resp = match self.gateway.txn(Vec::new(), snapshot).await {
                Ok(r) => r,
                // Nothing was written yet.
                Err(e) => return self.failed(inv, &e, true),
            };
            if resp.responses.len() != keys.len() {
                return Completion::fail(inv.value.clone(), "unexpected txn response");
            }
            let mut state: BTreeMap<i64, (Cell, i64)> = BTreeMap::new();
            for (k, r) in keys.iter().zip(resp.responses) {
                let Some(g) = r.response_range else {
                    return Completion::fail(inv.value.clone(), "unexpected txn response");
                };
                let kv = g.kvs.first();
                let bytes = match kv.map(KeyValue::value).transpose() {
                    Ok(b) => b,
                    Err(e) => return self.failed(inv, &e, true),
                };
                let cell = match (append, bytes) {
                    (true, b) => Cell::List(b.map(|b| parse_list(&b)).unwrap_or_default()),
                    (false, b) => Cell::Reg(b.and_then(|b| parse_int(&b).as_int())),
                };
                // An absent key compares as mod revision 0.
                state.insert(*k, (cell, kv.map_or(0, |kv| kv.mod_revision.0)));
            }
            let mut reads = Vec::new();
            let mut written = BTreeSet::new();
            for m in &mops {
                let Some((cell, _)) = state.get_mut(&m.key()) else {
                    return Completion::fail(inv.value.clone(), "unexpected txn response");
                };
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
            let guards = state
                .iter()
                .map(|(k, (_, rev))| compare_mod_revision(&name(*k), *rev))
                .collect();
            let puts = written
                .iter()
                .filter_map(|k| {
                    let v = match &state.get(k)?.0 {
                        Cell::List(l) => l.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
                        Cell::Reg(r) => r.map(|v| v.to_string()).unwrap_or_default(),
                    };
                    Some(request_put(&name(*k), &v))
                })
                .collect();
            match self.gateway.txn(guards, puts).await {
                Ok(r) if r.succeeded => return Completion::ok(txn_value(&inv.value, reads)),
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
        match self.workload {
            WorkloadKind::Register => self.register(inv).await,
            _ => self.txn(inv).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_json_decodes_with_strings_for_int64_and_defaults_left_out() {
        let r: TxnResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","member_id":"18446744073709551615","revision":"9"},
                "succeeded":true,
                "responses":[{"response_range":{"header":{},"kvs":[{"key":"bGlzdC8x",
                  "create_revision":"3","mod_revision":"7","version":"2","value":"MSwy"}],"count":"1"}},
                  {"response_range":{"header":{}}}]}"#,
        )
        .unwrap();
        assert!(r.succeeded);
        let kv = &r.responses[0].response_range.as_ref().unwrap().kvs[0];
        assert_eq!(kv.mod_revision, Int(7));
        assert_eq!(parse_list(&kv.value().unwrap()), vec![1, 2]);
        assert!(r.responses[1]
            .response_range
            .as_ref()
            .unwrap()
            .kvs
            .is_empty());
        // A failed compare leaves `succeeded` out.
        let r: TxnResponse = serde_json::from_str(r#"{"header":{"revision":"9"}}"#).unwrap();
        assert!(!r.succeeded);
        let s: StatusResponse = serde_json::from_str(
            r#"{"header":{"member_id":"18446744073709551615"},"leader":"18446744073709551615"}"#,
        )
        .unwrap();
        assert_eq!(s.header.unwrap().member_id, s.leader);
        assert!(serde_json::from_str::<StatusResponse>(r#"{"leader":"x"}"#).is_err());
        let bad = KeyValue {
            value: "not base64!".into(),
            mod_revision: Int(1),
        };
        assert!(matches!(bad.value(), Err(EtcdError::Decode(_))));
    }

    #[test]
    fn only_unsent_or_leaderless_requests_certainly_did_not_happen() {
        let status = |m: &str| EtcdError::Status {
            status: 503,
            message: m.into(),
        };
        assert!(EtcdError::Connect("refused".into()).definitely_not_done());
        assert!(status("etcdserver: no leader").definitely_not_done());
        assert!(!status("etcdserver: request timed out").definitely_not_done());
        assert!(!EtcdError::Timeout(Duration::from_secs(1)).definitely_not_done());
        assert!(!EtcdError::Transport("reset".into()).definitely_not_done());
        assert!(!EtcdError::Decode("?".into()).definitely_not_done());
    }

    #[test]
    fn compares_always_name_their_target() {
        let c = compare_mod_revision("rw/1", 0);
        assert_eq!(c["mod_revision"], "0");
        assert_eq!(c["target"], "MOD");
        assert_eq!(compare_value("k", "5")["value"], b64("5"));
    }
}
