//! The tokio driver: runs one core on real sockets. Client, peer and admin
//! listeners feed one loop that owns the core; the loop performs effects,
//! making persisted records durable (per the fsync policy) before it sends or
//! replies anything.

use crate::admin::MembersView;
use crate::admin::NodeStatus;
use crate::codec::{
    decode, decode_id_prefix, encode, put_frame, read_frame_within, CodecError, FrameBudget,
};
use crate::config::{ClusterConfig, ConfigError};
use crate::core::{
    build_core, AdminOp, AdminReply, ClientId, CoreError, CoreStatus, Effect, Input, PeerMsg,
};
use crate::msg::{NodeId, Reply, Request, Response};
use crate::wal::{Wal, WalError};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

pub use crate::admin::admin_call;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Messages a peer link may queue before it drops (as a lossy network would).
const PEER_QUEUE: usize = 65_536;
/// Events the loop takes per round; their records share one fsync.
const MAX_BATCH: usize = 512;

enum Event {
    Client {
        request: Request,
        reply_to: mpsc::UnboundedSender<Response>,
    },
    Peer {
        from: NodeId,
        msg: PeerMsg,
    },
    Status {
        reply_to: oneshot::Sender<CoreStatus>,
    },
    /// Send a probe to `to`; `reply_to` fires when its answer arrives.
    Probe {
        to: NodeId,
        reply_to: oneshot::Sender<()>,
    },
    Admin {
        op: AdminOp,
        reply_to: oneshot::Sender<AdminReply>,
    },
}

/// How long an admin request may take (adding a node waits for it to catch up).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Fault hooks shared by the listeners and the loop.
struct Faults {
    blocked: Mutex<BTreeSet<NodeId>>,
    clock_offset_ms: AtomicI64,
}

impl Faults {
    fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .lock()
            .map(|b| b.contains(&peer))
            .unwrap_or(false)
    }
    fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        wall.saturating_add_signed(self.clock_offset_ms.load(Ordering::Relaxed))
    }
}

/// Runs node `id` of the cluster described by the file at `config_path` until the process ends.
pub async fn run_node(config_path: &Path, id: &str) -> Result<(), NodeError> {
    let cfg = ClusterConfig::load(config_path)?;
    run_node_with(cfg, id).await
}

/// As `run_node`, with the cluster file already parsed.
pub async fn run_node_with(cfg: ClusterConfig, id: &str) -> Result<(), NodeError> {
    let me = cfg.index_of(id)?;
    let addrs = cfg.nodes[me as usize].clone();
    let (mut wal, recovered) = match &cfg.data_dir {
        Some(dir) => {
            let (w, r) = Wal::open(&dir.join(id), cfg.fsync)?;
            (Some(w), r)
        }
        None => (None, Vec::new()),
    };
    let mut core = build_core(&cfg, me, cfg.seed, recovered)?;
    let faults = Arc::new(Faults {
        blocked: Mutex::new(BTreeSet::new()),
        clock_offset_ms: AtomicI64::new(0),
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();

    let listen = |addr: String| async move {
        TcpListener::bind(&addr)
            .await
            .map_err(|source| NodeError::Listen { addr, source })
    };
    let client_listener = listen(addrs.client.clone()).await?;
    let peer_listener = listen(addrs.peer.clone()).await?;
    let admin_listener = listen(addrs.admin.clone()).await?;

    // Outgoing peer links.
    let mut links: HashMap<NodeId, mpsc::Sender<PeerMsg>> = HashMap::new();
    for (i, node) in cfg.nodes.iter().enumerate() {
        let peer = i as NodeId;
        if peer == me {
            continue;
        }
        let (ltx, lrx) = mpsc::channel(PEER_QUEUE);
        links.insert(peer, ltx);
        tokio::spawn(peer_link(me, cfg.secret.clone(), node.peer.clone(), lrx));
    }

    // One budget for the frames of both ports.
    let limits = Limits::of(&cfg);
    tokio::spawn(accept_clients(client_listener, tx.clone(), limits.clone()));
    tokio::spawn(accept_peers(
        peer_listener,
        tx.clone(),
        faults.clone(),
        limits,
        cfg.secret.clone(),
    ));
    tokio::spawn(accept_admin(
        admin_listener,
        tx.clone(),
        faults.clone(),
        cfg.clone(),
        me,
    ));

    let mut waiting: HashMap<ClientId, (u64, mpsc::UnboundedSender<Response>)> = HashMap::new();
    let mut next_client: ClientId = 1;
    let mut probes: HashMap<u64, oneshot::Sender<()>> = HashMap::new();
    let mut admins: HashMap<ClientId, oneshot::Sender<AdminReply>> = HashMap::new();
    let mut next_probe: u64 = 1;
    let mut ticker = tokio::time::interval(Duration::from_millis(cfg.tick_ms.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut effects = Vec::new();
    loop {
        let first = tokio::select! {
            ev = rx.recv() => ev,
            _ = ticker.tick() => None,
        };
        let mut events: Vec<Option<Event>> = vec![first];
        if events[0].is_some() {
            while events.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(ev) => events.push(Some(ev)),
                    Err(_) => break,
                }
            }
        }
        for ev in events {
            let now = faults.now_ms();
            let input = match ev {
                None => Input::Tick,
                Some(Event::Client {
                    mut request,
                    reply_to,
                }) => {
                    let client = next_client;
                    next_client += 1;
                    waiting.insert(client, (request.id, reply_to));
                    request.id = client;
                    Input::Client { client, request }
                }
                Some(Event::Peer {
                    from,
                    msg: PeerMsg::Probe { nonce },
                }) => {
                    // Answered through the same filter as any other send.
                    if !faults.is_blocked(from) {
                        if let Some(link) = links.get(&from) {
                            let _ = link.try_send(PeerMsg::ProbeAck { nonce });
                        }
                    }
                    continue;
                }
                Some(Event::Peer {
                    msg: PeerMsg::ProbeAck { nonce },
                    ..
                }) => {
                    if let Some(reply_to) = probes.remove(&nonce) {
                        let _ = reply_to.send(());
                    }
                    continue;
                }
                Some(Event::Probe { to, reply_to }) => {
                    let nonce = next_probe;
                    next_probe += 1;
                    // Forget probes nobody waits for any more.
                    probes.retain(|_, r| !r.is_closed());
                    if !faults.is_blocked(to) {
                        if let Some(link) = links.get(&to) {
                            if link.try_send(PeerMsg::Probe { nonce }).is_ok() {
                                probes.insert(nonce, reply_to);
                            }
                        }
                    }
                    continue;
                }
                Some(Event::Peer { from, msg }) => Input::Peer { from, msg },
                Some(Event::Status { reply_to }) => {
                    let _ = reply_to.send(core.status());
                    continue;
                }
                Some(Event::Admin { op, reply_to }) => {
                    let admin = next_client;
                    next_client += 1;
                    admins.retain(|_, r| !r.is_closed());
                    admins.insert(admin, reply_to);
                    effects.extend(core.admin(now, admin, op));
                    continue;
                }
            };
            effects.extend(core.step(now, input));
        }
        effects.extend(core.step(faults.now_ms(), Input::Flush));
        // Durability first: every record of this round before any send or reply.
        if let Some(w) = wal.as_mut() {
            let mut wrote = false;
            for e in &effects {
                if let Effect::Persist(rec) = e {
                    w.append(rec);
                    wrote = true;
                }
            }
            if wrote {
                if let Err(e) = w.commit() {
                    eprintln!("store node {id}: {e}; stopping");
                    return Err(e.into());
                }
            }
            w.sync_if_due()?;
            if w.wants_compaction(cfg.compact_after_bytes) {
                w.rewrite(&core.snapshot_records())?;
            }
        }
        for e in effects.drain(..) {
            match e {
                Effect::Send { to, msg } => {
                    if faults.is_blocked(to) {
                        continue;
                    }
                    if let Some(link) = links.get(&to) {
                        let _ = link.try_send(msg);
                    }
                }
                Effect::Reply {
                    client,
                    mut response,
                } => {
                    if let Some((orig, reply_to)) = waiting.remove(&client) {
                        response.id = orig;
                        let _ = reply_to.send(response);
                    }
                }
                Effect::AdminReply { admin, reply } => {
                    if let Some(reply_to) = admins.remove(&admin) {
                        let _ = reply_to.send(reply);
                    }
                }
                // Persisted above.
                Effect::Persist(_) => {}
            }
        }
    }
}

/// What a peer's first frame says: who it is, and the cluster's secret.
#[derive(serde::Serialize, serde::Deserialize)]
struct Hello {
    node: NodeId,
    secret: String,
}

/// Compares in time that does not depend on where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn peer_link(me: NodeId, secret: String, addr: String, mut rx: mpsc::Receiver<PeerMsg>) {
    let mut backoff_ms = 20;
    loop {
        let mut stream = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(_) => {
                // Drop what queued up while the peer was unreachable: it is lost in transit.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(500);
                continue;
            }
        };
        backoff_ms = 20;
        let _ = stream.set_nodelay(true);
        let mut out = Vec::new();
        put_frame(
            &mut out,
            &encode(&Hello {
                node: me,
                secret: secret.clone(),
            }),
        );
        if stream.write_all(&out).await.is_err() {
            continue;
        }
        loop {
            let Some(first) = rx.recv().await else { return };
            out.clear();
            put_frame(&mut out, &encode(&first));
            while out.len() < 1 << 20 {
                match rx.try_recv() {
                    Ok(m) => put_frame(&mut out, &encode(&m)),
                    Err(_) => break,
                }
            }
            if stream.write_all(&out).await.is_err() {
                break;
            }
        }
    }
}

/// The next connection on `listener`. A failed accept (out of file
/// descriptors, say) is logged and retried after a pause that doubles up to
/// a second, so that one bad moment never ends a listener.
pub async fn accept_next(listener: &TcpListener, what: &str) -> TcpStream {
    let mut pause = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(e) => {
                eprintln!(
                    "accepting a {what} connection failed: {e}; retrying in {} ms",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// What one connection, and all of them, may hold, from the cluster file.
#[derive(Clone)]
struct Limits {
    max_frame: usize,
    max_value: usize,
    max_connections: usize,
    max_in_flight: usize,
    frames: FrameBudget,
}

impl Limits {
    fn of(cfg: &ClusterConfig) -> Limits {
        Limits {
            max_frame: cfg.max_frame_bytes,
            max_value: cfg.max_value_bytes,
            max_connections: cfg.max_connections.max(1),
            max_in_flight: cfg.max_in_flight.max(1),
            frames: FrameBudget::new(cfg.frame_budget_bytes.max(cfg.max_frame_bytes)),
        }
    }
}

/// The largest clock offset the admin port sets: a week, far past any
/// lease or timeout, and far from overflowing a clock.
pub const MAX_CLOCK_OFFSET_MS: u64 = 7 * 24 * 3600 * 1000;

/// The longest admin command line.
pub const MAX_ADMIN_LINE_BYTES: usize = 4096;

/// The next connection on `listener` that fits under the port's cap, with
/// the slot it holds; one past the cap gets `refusal` (if any) and is closed.
async fn accept_within(
    listener: &TcpListener,
    what: &str,
    slots: &Arc<tokio::sync::Semaphore>,
    refusal: Option<&[u8]>,
) -> (TcpStream, tokio::sync::OwnedSemaphorePermit) {
    loop {
        let mut stream = accept_next(listener, what).await;
        match slots.clone().try_acquire_owned() {
            Ok(slot) => return (stream, slot),
            Err(_) => {
                if let Some(bytes) = refusal {
                    let bytes = bytes.to_vec();
                    tokio::spawn(async move {
                        let write = stream.write_all(&bytes);
                        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
                    });
                }
            }
        }
    }
}

async fn accept_peers(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<Event>,
    faults: Arc<Faults>,
    limits: Limits,
    secret: String,
) {
    let max_frame = limits.max_frame;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, slot) = accept_within(&listener, "peer", &slots, None).await;
        let tx = tx.clone();
        let faults = faults.clone();
        let secret = secret.clone();
        let frames = limits.frames.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let mut reader = BufReader::with_capacity(1 << 16, stream);
            let from: NodeId = match read_frame_within(&mut reader, max_frame, &frames).await {
                Ok(Some((bytes, _held))) => match decode::<Hello>(&bytes) {
                    Ok(hello) if same_secret(&hello.secret, &secret) => hello.node,
                    _ => {
                        eprintln!("refused a peer connection: bad hello or wrong secret");
                        return;
                    }
                },
                _ => return,
            };
            loop {
                match read_frame_within(&mut reader, max_frame, &frames).await {
                    Ok(Some((bytes, _held))) => {
                        if faults.is_blocked(from) {
                            continue;
                        }
                        if let Ok(msg) = decode::<PeerMsg>(&bytes) {
                            if tx.send(Event::Peer { from, msg }).is_err() {
                                return;
                            }
                        }
                    }
                    Err(CodecError::TooLarge { .. }) => continue,
                    _ => return,
                }
            }
        });
    }
}

async fn accept_clients(listener: TcpListener, tx: mpsc::UnboundedSender<Event>, limits: Limits) {
    let Limits {
        max_frame,
        max_value,
        max_in_flight,
        ..
    } = limits.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refusal = Vec::new();
    put_frame(
        &mut refusal,
        &encode(&Response {
            id: 0,
            reply: Reply::Error(format!(
                "too many connections (this node serves {} at once)",
                limits.max_connections
            )),
        }),
    );
    loop {
        let (stream, slot) = accept_within(&listener, "client", &slots, Some(&refusal)).await;
        let tx = tx.clone();
        let frames = limits.frames.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let (rtx, mut rrx) = mpsc::unbounded_channel::<Response>();
            // One permit per request read and not yet answered: a client that
            // does not read its replies stops being read, so neither its
            // requests nor its replies pile up here.
            let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
            let answered = in_flight.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                while let Some(first) = rrx.recv().await {
                    out.clear();
                    put_frame(&mut out, &encode(&first));
                    let mut n = 1;
                    while let Ok(r) = rrx.try_recv() {
                        put_frame(&mut out, &encode(&r));
                        n += 1;
                    }
                    if write.write_all(&out).await.is_err() {
                        return;
                    }
                    answered.add_permits(n);
                    if out.capacity() > 1 << 20 {
                        out = Vec::new();
                    }
                }
            });
            let mut reader = BufReader::with_capacity(8 << 10, read);
            loop {
                match in_flight.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
                let error = |id: u64, message: String| Response {
                    id,
                    reply: Reply::Error(message),
                };
                match read_frame_within(&mut reader, max_frame, &frames).await {
                    Ok(Some((bytes, _held))) => match decode::<Request>(&bytes) {
                        Ok(request) => {
                            if let Err(problem) = request.op.validate(max_value) {
                                let _ = rtx.send(error(request.id, problem));
                                continue;
                            }
                            if tx
                                .send(Event::Client {
                                    request,
                                    reply_to: rtx.clone(),
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            let id = decode_id_prefix(&bytes).unwrap_or(0);
                            let _ = rtx
                                .send(error(id, format!("malformed request or unknown op: {e}")));
                        }
                    },
                    Err(CodecError::TooLarge { len, max }) => {
                        let _ = rtx.send(error(
                            0,
                            format!("frame of {len} bytes exceeds the limit of {max} bytes"),
                        ));
                    }
                    Ok(None) | Err(_) => return,
                }
            }
        });
    }
}

/// Admin port: one text command per line, one reply line each.
/// `status` (answers `ok` and a [`NodeStatus`] as JSON) · `block n2 n3` ·
/// `unblock n2` · `unblock-all` · `clock-offset -500` · `probe n2 [TIMEOUT_MS]`
/// (answers `ok reached` or `ok unreachable`)
async fn accept_admin(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<Event>,
    faults: Arc<Faults>,
    cfg: ClusterConfig,
    me: NodeId,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    loop {
        let refusal = b"error too many admin connections\n";
        let (stream, slot) = accept_within(&listener, "admin", &slots, Some(refusal)).await;
        let tx = tx.clone();
        let faults = faults.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::with_capacity(MAX_ADMIN_LINE_BYTES, read);
            let mut buf = Vec::with_capacity(256);
            let mut authenticated = cfg.secret.is_empty();
            loop {
                buf.clear();
                let limit = MAX_ADMIN_LINE_BYTES as u64 + 1;
                match (&mut reader).take(limit).read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if buf.last() != Some(&b'\n') && buf.len() > MAX_ADMIN_LINE_BYTES {
                    let answer =
                        format!("error command longer than {MAX_ADMIN_LINE_BYTES} bytes\n");
                    let _ = write.write_all(answer.as_bytes()).await;
                    return;
                }
                let Ok(line) = std::str::from_utf8(&buf) else {
                    let _ = write.write_all(b"error command is not UTF-8\n").await;
                    continue;
                };
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if !authenticated {
                    let given = line.strip_prefix("auth ").unwrap_or("");
                    if same_secret(given, &cfg.secret) {
                        authenticated = true;
                        if write.write_all(b"ok\n").await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let _ = write.write_all(b"error authentication required\n").await;
                    return;
                }
                let answer = admin_command(&line, &tx, &faults, &cfg, me).await;
                if write
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// A membership request to the core, answered as [`MembersView::admin_reply`] says.
async fn admin_membership(
    tx: &mpsc::UnboundedSender<Event>,
    cfg: &ClusterConfig,
    op: AdminOp,
) -> String {
    let (rtx, rrx) = oneshot::channel();
    if tx.send(Event::Admin { op, reply_to: rtx }).is_err() {
        return "error node stopped".into();
    }
    match tokio::time::timeout(ADMIN_TIMEOUT, rrx).await {
        Ok(Ok(reply)) => MembersView::admin_reply(cfg, &reply),
        Ok(Err(_)) => "error node stopped".into(),
        Err(_) => "error unknown no answer in time; the change may still take effect".into(),
    }
}

/// `move PARTITION GROUP`, `split PARTITION` or `merge PARTITION`.
fn parse_rebalance(words: &[&str]) -> Result<crate::protocol::Rebalance, String> {
    use crate::protocol::Rebalance;
    let num = |w: &str| {
        w.parse::<u32>()
            .map_err(|_| format!("{w:?} is not a partition or group number"))
    };
    match words {
        ["move", p, g] => Ok(Rebalance::Move {
            partition: num(p)?,
            to: num(g)?,
        }),
        ["split", p] => Ok(Rebalance::Split { partition: num(p)? }),
        ["merge", p] => Ok(Rebalance::Merge { partition: num(p)? }),
        _ => {
            Err("usage: rebalance move PARTITION GROUP | split PARTITION | merge PARTITION".into())
        }
    }
}

async fn admin_command(
    line: &str,
    tx: &mpsc::UnboundedSender<Event>,
    faults: &Faults,
    cfg: &ClusterConfig,
    me: NodeId,
) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let peers = |names: &[&str]| -> Result<Vec<NodeId>, String> {
        names
            .iter()
            .map(|n| cfg.index_of(n).map_err(|e| e.to_string()))
            .collect()
    };
    match words.as_slice() {
        ["status"] => {
            let (rtx, rrx) = oneshot::channel();
            if tx.send(Event::Status { reply_to: rtx }).is_err() {
                return "error node stopped".into();
            }
            match rrx.await {
                Ok(s) => {
                    let offset = faults.clock_offset_ms.load(Ordering::Relaxed);
                    NodeStatus::new(cfg, me, &s, offset).admin_reply()
                }
                Err(_) => "error node stopped".into(),
            }
        }
        ["block", names @ ..] => match peers(names) {
            Ok(ids) => {
                if let Ok(mut b) = faults.blocked.lock() {
                    b.extend(ids);
                }
                "ok".into()
            }
            Err(e) => format!("error {e}"),
        },
        ["unblock", names @ ..] => match peers(names) {
            Ok(ids) => {
                if let Ok(mut b) = faults.blocked.lock() {
                    for id in ids {
                        b.remove(&id);
                    }
                }
                "ok".into()
            }
            Err(e) => format!("error {e}"),
        },
        ["probe", name, rest @ ..] => {
            let timeout_ms = match rest {
                [] => 300,
                [ms] => match ms.parse::<u64>() {
                    Ok(ms) => ms,
                    Err(_) => return format!("error bad timeout {ms:?}"),
                },
                _ => return "error usage: probe NODE [TIMEOUT_MS]".into(),
            };
            let to = match cfg.index_of(name) {
                Ok(id) => id,
                Err(e) => return format!("error {e}"),
            };
            let (rtx, rrx) = oneshot::channel();
            if tx.send(Event::Probe { to, reply_to: rtx }).is_err() {
                return "error node stopped".into();
            }
            match tokio::time::timeout(Duration::from_millis(timeout_ms), rrx).await {
                Ok(Ok(())) => "ok reached".into(),
                _ => "ok unreachable".into(),
            }
        }
        ["members"] => admin_membership(tx, cfg, AdminOp::Members).await,
        ["member-remove", name] => match cfg.index_of(name) {
            Ok(id) => admin_membership(tx, cfg, AdminOp::Remove(id)).await,
            Err(e) => format!("error {e}"),
        },
        ["member-add", name] => match cfg.index_of(name) {
            Ok(id) => admin_membership(tx, cfg, AdminOp::Add(id)).await,
            Err(e) => format!("error {e}"),
        },
        ["partitions"] => admin_membership(tx, cfg, AdminOp::Partitions).await,
        ["settle"] => admin_membership(tx, cfg, AdminOp::Settle).await,
        ["rebalance", change @ ..] => match parse_rebalance(change) {
            Ok(rb) => admin_membership(tx, cfg, AdminOp::Rebalance(rb)).await,
            Err(e) => format!("error {e}"),
        },
        ["unblock-all"] => {
            if let Ok(mut b) = faults.blocked.lock() {
                b.clear();
            }
            "ok".into()
        }
        ["clock-offset", ms] => match ms.parse::<i64>() {
            Ok(ms) if ms.unsigned_abs() > MAX_CLOCK_OFFSET_MS => format!(
                "error clock offset {ms} ms is beyond the limit of ±{MAX_CLOCK_OFFSET_MS} ms"
            ),
            Ok(ms) => {
                faults.clock_offset_ms.store(ms, Ordering::Relaxed);
                "ok".into()
            }
            Err(_) => format!("error bad offset {ms:?}"),
        },
        _ => format!("error unknown admin command {line:?}"),
    }
}
