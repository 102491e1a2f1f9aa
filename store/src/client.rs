//! The async client library. Every request has a deadline: a timeout or a
//! lost connection after sending is an unknown outcome; a refusal is
//! definitely not done. Requests to single-leader clusters follow the
//! leader's redirects and retry refusals until the deadline.

use crate::codec::{decode, encode, put_frame, read_frame};
use crate::msg::{Op, OpResult, ReadFrom, Refusal, Reply, Request, RequestOptions, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex as AsyncMutex};

/// What the caller learns about one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(OpResult),
    /// Definitely not done.
    NotDone(Refusal),
    /// Rejected as invalid (bad value, unknown op); definitely not done.
    Rejected(String),
    /// Maybe done, maybe not: a timeout or a connection lost after sending.
    Unknown(String),
}

impl Outcome {
    pub fn is_definite_failure(&self) -> bool {
        matches!(self, Outcome::NotDone(_) | Outcome::Rejected(_))
    }
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub timeout: Duration,
    /// Pause before retrying a refusal such as "not the leader".
    pub retry_pause: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(2),
            retry_pause: Duration::from_millis(20),
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
    leader_hint: Arc<AtomicUsize>,
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
            leader_hint: Arc::new(AtomicUsize::new(0)),
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
            Ok(reply) => reply_outcome(reply),
            Err(SendError::NotSent(e)) => Outcome::NotDone(Refusal::Unreachable(e)),
            Err(SendError::Lost(e)) => Outcome::Unknown(e),
        }
    }

    /// Sends `op` to the node most likely to serve it, following redirects and
    /// retrying definite refusals (not leader, no lease, unreachable) until the deadline.
    pub async fn request(&self, op: Op, options: RequestOptions) -> Outcome {
        self.request_with_timeout(op, options, self.opts.timeout)
            .await
    }

    /// As `request`, with this request's own timeout.
    pub async fn request_with_timeout(
        &self,
        op: Op,
        options: RequestOptions,
        timeout: Duration,
    ) -> Outcome {
        let deadline = Instant::now() + timeout;
        let n = self.addrs.len();
        let leader = self.leader_hint.load(Ordering::Relaxed) % n.max(1);
        // Reads that may be served away from the leader are spread over the nodes.
        let spread = self.next_id.fetch_add(1, Ordering::Relaxed) as usize;
        let mut node = match (op.is_read_only(), options.read_from) {
            (true, Some(ReadFrom::Followers)) if n > 1 => (leader + 1 + spread % (n - 1)) % n,
            (true, Some(ReadFrom::Any)) => spread % n,
            _ => leader,
        };
        let mut last_refusal: Outcome;
        loop {
            match self.send_once(node, &op, &options, deadline).await {
                Ok(Reply::NotDone(Refusal::NotLeader { leader })) => {
                    last_refusal = Outcome::NotDone(Refusal::NotLeader { leader });
                    match leader {
                        Some(l) if (l as usize) < n && l as usize != node => {
                            node = l as usize;
                            self.leader_hint.store(node, Ordering::Relaxed);
                            continue;
                        }
                        _ => node = (node + 1) % n,
                    }
                }
                Ok(Reply::NotDone(Refusal::NoLease)) => {
                    last_refusal = Outcome::NotDone(Refusal::NoLease)
                }
                Ok(reply) => {
                    if !op.is_read_only()
                        || options.read_from.unwrap_or_default() == ReadFrom::Leader
                    {
                        self.leader_hint.store(node, Ordering::Relaxed);
                    }
                    return reply_outcome(reply);
                }
                Err(SendError::NotSent(e)) => {
                    last_refusal = Outcome::NotDone(Refusal::Unreachable(e));
                    node = (node + 1) % n;
                }
                Err(SendError::Lost(e)) => return Outcome::Unknown(e),
            }
            if Instant::now() + self.opts.retry_pause >= deadline {
                return last_refusal;
            }
            tokio::time::sleep(self.opts.retry_pause).await;
        }
    }
}

fn reply_outcome(reply: Reply) -> Outcome {
    match reply {
        Reply::Ok(r) => Outcome::Ok(r),
        Reply::NotDone(r) => Outcome::NotDone(r),
        Reply::Unknown(e) => Outcome::Unknown(e),
        Reply::Error(e) => Outcome::Rejected(e),
    }
}
