//! The async client library. Every request has a deadline: a timeout or a
//! lost connection after sending is an unknown outcome; a refusal is
//! definitely not done. [`Routing`] picks the node a request goes to: by
//! default the leader, following its redirects and retrying refusals until
//! the deadline; for leaderless clusters, one coordinator bound to the
//! client, or one per request.

use crate::codec::{decode, encode, put_frame, read_frame};
use crate::msg::{Op, Refusal, Reply, Request, RequestOptions, Response};
use crate::route::{Attempt, Next, Router};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex as AsyncMutex};

pub use crate::route::{Outcome, Routing};

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub timeout: Duration,
    /// Pause before retrying a refusal such as "not the leader".
    pub retry_pause: Duration,
    pub routing: Routing,
    /// Leader routing: the node tried first, until a reply names the leader.
    pub first_node: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(2),
            retry_pause: Duration::from_millis(20),
            routing: Routing::Leader,
            first_node: 0,
        }
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Conn {
    write: AsyncMutex<OwnedWriteHalf>,
    waiters: Waiters,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

/// A client for a cluster, given the nodes' client addresses in cluster-file order.
#[derive(Clone)]
pub struct Client {
    addrs: Arc<Vec<String>>,
    conns: Arc<Vec<AsyncMutex<Option<Arc<Conn>>>>>,
    next_id: Arc<AtomicU64>,
    router: Arc<Mutex<Router>>,
    opts: ClientOptions,
}

enum SendError {
    /// Nothing left this process: definitely not done.
    NotSent(String),
    /// Sent, then the connection broke or the deadline passed.
    Lost(String),
}

impl Client {
    pub fn new(addrs: Vec<String>, opts: ClientOptions) -> Self {
        let n = addrs.len();
        Client {
            addrs: Arc::new(addrs),
            conns: Arc::new((0..n).map(|_| AsyncMutex::new(None)).collect()),
            next_id: Arc::new(AtomicU64::new(1)),
            router: Arc::new(Mutex::new(Router::new(n, opts.routing, opts.first_node))),
            opts,
        }
    }

    pub fn from_config(cfg: &crate::config::ClusterConfig, opts: ClientOptions) -> Self {
        Self::new(cfg.nodes.iter().map(|n| n.client.clone()).collect(), opts)
    }

    async fn conn(&self, node: usize) -> Result<Arc<Conn>, String> {
        let mut slot = self.conns[node].lock().await;
        if let Some(c) = slot.as_ref() {
            if c.alive.load(Ordering::Relaxed) {
                return Ok(c.clone());
            }
        }
        let stream = TcpStream::connect(&self.addrs[node])
            .await
            .map_err(|e| format!("connect {}: {e}", self.addrs[node]))?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conn = Arc::new(Conn {
            write: AsyncMutex::new(write),
            waiters: waiters.clone(),
            alive: alive.clone(),
        });
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::with_capacity(1 << 16, read);
            while let Ok(Some(bytes)) = read_frame(&mut reader, usize::MAX >> 1).await {
                if let Ok(resp) = decode::<Response>(&bytes) {
                    let waiter = waiters.lock().ok().and_then(|mut w| w.remove(&resp.id));
                    if let Some(w) = waiter {
                        let _ = w.send(resp);
                    }
                }
            }
            alive.store(false, Ordering::Relaxed);
            // Dropping the senders tells every waiter the connection is gone.
            if let Ok(mut w) = waiters.lock() {
                w.clear();
            }
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn send_once(
        &self,
        node: usize,
        op: &Op,
        options: &RequestOptions,
        deadline: Instant,
    ) -> Result<Reply, SendError> {
        let conn = self.conn(node).await.map_err(SendError::NotSent)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = conn.waiters.lock() {
            w.insert(id, tx);
        }
        let mut frame = Vec::new();
        put_frame(
            &mut frame,
            &encode(&Request {
                id,
                op: op.clone(),
                options: options.clone(),
            }),
        );
        {
            let mut write = conn.write.lock().await;
            if let Err(e) = write.write_all(&frame).await {
                conn.alive.store(false, Ordering::Relaxed);
                // A partial write may have reached the node.
                return Err(SendError::Lost(format!("send failed: {e}")));
            }
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(resp)) => Ok(resp.reply),
            Ok(Err(_)) => Err(SendError::Lost("connection closed before a reply".into())),
            Err(_) => {
                if let Ok(mut w) = conn.waiters.lock() {
                    w.remove(&id);
                }
                Err(SendError::Lost(format!(
                    "no reply within {} ms",
                    self.opts.timeout.as_millis()
                )))
            }
        }
    }

    /// Sends `op` to exactly one node, without retries.
    pub async fn call(&self, node: usize, op: Op, options: RequestOptions) -> Outcome {
        self.call_with_timeout(node, op, options, self.opts.timeout)
            .await
    }

    /// As `call`, with this request's own timeout.
    pub async fn call_with_timeout(
        &self,
        node: usize,
        op: Op,
        options: RequestOptions,
        timeout: Duration,
    ) -> Outcome {
        let deadline = Instant::now() + timeout;
        match self.send_once(node, &op, &options, deadline).await {
            Ok(reply) => reply.into(),
            Err(SendError::NotSent(e)) => Outcome::NotDone(Refusal::Unreachable(e)),
            Err(SendError::Lost(e)) => Outcome::Unknown(e),
        }
    }

    /// Sends `op` where the options' [`Routing`] says. By default that is
    /// the node most likely to serve it, following redirects and retrying
    /// definite refusals (not leader, no lease, unreachable) until the deadline.
    pub async fn request(&self, op: Op, options: RequestOptions) -> Outcome {
        self.request_with_timeout(op, options, self.opts.timeout)
            .await
    }

    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        // The router's state stays consistent even if a holder panicked.
        self.router.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// As `request`, with this request's own timeout.
    pub async fn request_with_timeout(
        &self,
        op: Op,
        options: RequestOptions,
        timeout: Duration,
    ) -> Outcome {
        self.request_served(op, options, timeout).await.0
    }

    /// As `request_with_timeout`, with the index of the node whose reply
    /// gave the outcome, when one did.
    pub async fn request_served(
        &self,
        op: Op,
        options: RequestOptions,
        timeout: Duration,
    ) -> (Outcome, Option<usize>) {
        let deadline = Instant::now() + timeout;
        let first = self.router().first(&op, &options);
        let mut node = match first {
            Ok(node) => node,
            Err(outcome) => return (outcome, None),
        };
        for tries in 1.. {
            let attempt = match self.send_once(node, &op, &options, deadline).await {
                Ok(reply) => Attempt::Replied(reply),
                Err(SendError::NotSent(e)) => Attempt::NotSent(e),
                Err(SendError::Lost(e)) => Attempt::Lost(e),
            };
            let replied = matches!(attempt, Attempt::Replied(_));
            let next = self.router().next(node, tries, &op, &options, attempt);
            match next {
                Next::Done(outcome) => return (outcome, replied.then_some(node)),
                Next::Resend(to) => node = to,
                Next::RetryAfterPause { node: to, refusal } => {
                    if Instant::now() + self.opts.retry_pause >= deadline {
                        return (refusal, None);
                    }
                    tokio::time::sleep(self.opts.retry_pause).await;
                    node = to;
                }
            }
        }
        (Outcome::Unknown("no attempt was made".into()), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Value;
    use crate::msg::{OpResult, ReadFrom};
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    /// A stand-in node that answers every request with its own index (or,
    /// given `redirect`, with "not the leader, ask that one") and counts them.
    async fn fake_node(index: i64, redirect: Option<u32>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = tokio::io::BufReader::new(read);
                    while let Ok(Some(bytes)) = read_frame(&mut reader, 1 << 20).await {
                        let Ok(req) = decode::<Request>(&bytes) else {
                            return;
                        };
                        count.fetch_add(1, Ordering::Relaxed);
                        let reply = match redirect {
                            Some(l) => Reply::NotDone(Refusal::NotLeader { leader: Some(l) }),
                            None => Reply::Ok(OpResult::Value(Some(Value::Int(index)))),
                        };
                        let mut frame = Vec::new();
                        put_frame(&mut frame, &encode(&Response { id: req.id, reply }));
                        if write.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, served)
    }

    /// An address nothing listens on.
    async fn dead_addr() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn client(addrs: Vec<String>, routing: Routing) -> Client {
        let opts = ClientOptions {
            timeout: Duration::from_secs(2),
            routing,
            ..ClientOptions::default()
        };
        Client::new(addrs, opts)
    }

    fn ops() -> Vec<(Op, RequestOptions)> {
        let any = RequestOptions {
            read_from: Some(ReadFrom::Any),
            ..RequestOptions::default()
        };
        let key = || "s".to_string();
        vec![
            (
                Op::Add {
                    key: key(),
                    elem: 1,
                },
                RequestOptions::default(),
            ),
            (Op::ReadSet { key: key() }, RequestOptions::default()),
            (Op::Get { key: key() }, any),
        ]
    }

    /// `n` stand-in nodes answering with their index, and their request counts.
    async fn fake_nodes(n: i64) -> (Vec<String>, Vec<Arc<AtomicUsize>>) {
        let mut nodes = (Vec::new(), Vec::new());
        for i in 0..n {
            let (a, s) = fake_node(i, None).await;
            nodes.0.push(a);
            nodes.1.push(s);
        }
        nodes
    }

    fn counts(served: &[Arc<AtomicUsize>]) -> Vec<usize> {
        served.iter().map(|s| s.load(Ordering::Relaxed)).collect()
    }

    #[tokio::test]
    async fn a_bound_client_talks_to_its_own_node_only() {
        let (addrs, served) = fake_nodes(3).await;
        let c = client(addrs, Routing::Bound(1));
        for _ in 0..4 {
            for (op, options) in ops() {
                let got = c.request(op, options).await;
                assert_eq!(got, Outcome::Ok(OpResult::Value(Some(Value::Int(1)))));
            }
        }
        assert_eq!(counts(&served), vec![0, 12, 0]);
    }

    #[tokio::test]
    async fn a_bound_client_does_not_fail_over_when_its_node_is_unreachable() {
        let (a0, s0) = fake_node(0, None).await;
        let (a2, s2) = fake_node(2, None).await;
        let addrs = vec![a0, dead_addr().await, a2];
        let c = client(addrs.clone(), Routing::Bound(1));
        for (op, options) in ops() {
            let got = c.request(op, options).await;
            assert!(
                matches!(got, Outcome::NotDone(Refusal::Unreachable(_))),
                "{got:?}"
            );
        }
        assert_eq!(counts(&[s0, s2]), vec![0, 0]);
        let c = client(addrs, Routing::Bound(3));
        let (op, options) = ops().remove(0);
        assert!(matches!(c.request(op, options).await, Outcome::Rejected(_)));
    }

    #[tokio::test]
    async fn per_request_routing_rotates_and_skips_unreachable_nodes() {
        let (mut addrs, served) = fake_nodes(3).await;
        let c = client(addrs.clone(), Routing::PerRequest { seed: 7 });
        let mut answered_by = Vec::new();
        for _ in 0..2 {
            for (op, options) in ops() {
                match c.request(op, options).await {
                    Outcome::Ok(OpResult::Value(Some(Value::Int(i)))) => answered_by.push(i),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(counts(&served), vec![2, 2, 2]);
        let start = answered_by[0];
        let rotation: Vec<i64> = (0..6).map(|k| (start + k) % 3).collect();
        assert_eq!(answered_by, rotation);

        addrs[1] = dead_addr().await;
        let c = client(addrs, Routing::PerRequest { seed: 7 });
        for _ in 0..6 {
            let (op, options) = ops().remove(0);
            let got = c.request(op, options).await;
            assert!(
                matches!(got, Outcome::Ok(OpResult::Value(Some(Value::Int(0 | 2))))),
                "{got:?}"
            );
        }
        // Node 1's turns go on to node 2.
        assert_eq!(counts(&served), vec![2 + 2, 2, 2 + 4]);
    }

    #[tokio::test]
    async fn per_request_clients_with_other_seeds_start_at_other_nodes() {
        let (addrs, _) = fake_nodes(3).await;
        let mut firsts = BTreeSet::new();
        for seed in 0..8 {
            let c = client(addrs.clone(), Routing::PerRequest { seed });
            let (op, options) = ops().remove(0);
            firsts.insert(format!("{:?}", c.request(op, options).await));
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }

    #[tokio::test]
    async fn leader_routing_is_the_default_and_follows_redirects() {
        assert_eq!(ClientOptions::default().routing, Routing::Leader);
        let (a0, s0) = fake_node(0, Some(2)).await;
        let (a1, s1) = fake_node(1, None).await;
        let (a2, s2) = fake_node(2, None).await;
        let c = Client::new(vec![a0, a1, a2], ClientOptions::default());
        for _ in 0..3 {
            let (op, options) = ops().remove(0);
            let got = c.request(op, options).await;
            assert_eq!(got, Outcome::Ok(OpResult::Value(Some(Value::Int(2)))));
        }
        // One redirect, then straight to the leader.
        assert_eq!(counts(&[s0, s1, s2]), vec![1, 0, 3]);
    }
}
