//! Throughput and latency of a 3-node store cluster on loopback (separate
//! processes) under 50 concurrent clients doing 50/50 get/put over 10,000
//! keys, for single-leader async and sync, leaderless N=3 R=W=2 and
//! multi-leader (LWW, version vectors, and a PN-counter whose updates are
//! increments); Raft (ReadIndex and lease reads) and chain replication
//! (tail reads and CRAQ) with 3 and 5 nodes; and Redis (a primary with two
//! replicas) and etcd (3 members) under the same load, when installed.
//! Then the bytes an OR-set of 10,000 elements ships per add, as a delta and
//! as its whole state.
//! Run: cargo bench -p splitbrain-store --bench store_throughput

use splitbrain_store::admin::admin_status;
use splitbrain_store::client::{Client, ClientOptions, Outcome};
use splitbrain_store::msg::{Op, ReadFrom, RequestOptions, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CLIENTS: usize = 50;
const KEYS: u64 = 10_000;
const RUN: Duration = Duration::from_secs(5);

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Ports below the ephemeral range, from a per-process starting point, so that
/// parallel tests and the nodes' own outgoing connections do not collide.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        12_000 + (std::process::id() * 97) % 18_000,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (12_000 + port % 20_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Figures {
    name: String,
    ops: usize,
    errors: usize,
    secs: f64,
    latencies_us: Vec<u64>,
}

impl Figures {
    fn print(&mut self) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            if self.latencies_us.is_empty() {
                0.0
            } else {
                let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
                self.latencies_us[i] as f64 / 1000.0
            }
        };
        println!(
            "{:<34} {:>10.0} ops/s   p50 {:>7.3} ms   p99 {:>7.3} ms   ({} ops, {} not ok)",
            self.name,
            self.ops as f64 / self.secs,
            pct(0.50),
            pct(0.99),
            self.ops,
            self.errors
        );
    }
}

/// xorshift for the load's key choice.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// How clients reach the cluster and what an update is.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// Through the leader.
    Leader,
    /// Each client to a node of its own; updates are puts.
    Bound,
    /// Each client to a node of its own; updates are increments.
    BoundCounter,
    /// Writes through the leader, reads spread over every node (CRAQ).
    LeaderReadsAnywhere,
}

async fn store_load(name: &str, dir: &Path, options: &str, load: Load) -> Figures {
    store_load_on(3, name, dir, options, load).await
}

async fn store_load_on(nodes: usize, name: &str, dir: &Path, options: &str, load: Load) -> Figures {
    // Logs synced once a second, unless the options say otherwise.
    let fsync = if options.contains("fsync") {
        ""
    } else {
        "fsync = \"interval:1000\"\n"
    };
    let mut text = format!(
        "data_dir = {:?}\n{fsync}{options}\n",
        dir.join(name.replace([' ', ',', '+'], "_"))
    );
    let mut clients_addrs = Vec::new();
    let mut admins = Vec::new();
    for i in 1..=nodes {
        let (c, p, a) = (free_port(), free_port(), free_port());
        text.push_str(&format!(
            "[[nodes]]\nid = \"n{i}\"\nclient = \"127.0.0.1:{c}\"\npeer = \"127.0.0.1:{p}\"\nadmin = \"127.0.0.1:{a}\"\n"
        ));
        clients_addrs.push(format!("127.0.0.1:{c}"));
        admins.push(format!("127.0.0.1:{a}"));
    }
    let config = dir.join(format!("{}.toml", name.replace([' ', ',', '+'], "_")));
    std::fs::write(&config, text).expect("write cluster file");
    let _procs = Procs(
        (1..=nodes)
            .map(|i| {
                Command::new(env!("CARGO_BIN_EXE_splitbrain-store-node"))
                    .arg("--config")
                    .arg(&config)
                    .arg("--id")
                    .arg(format!("n{i}"))
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn store node")
            })
            .collect(),
    );
    // Wait until the cluster serves writes.
    let probe = Client::new(clients_addrs.clone(), ClientOptions::default());
    let ready_by = Instant::now() + Duration::from_secs(20);
    loop {
        let r = probe
            .request(
                Op::Put {
                    key: "warmup".into(),
                    value: Value::Int(0),
                },
                RequestOptions::default(),
            )
            .await;
        if matches!(r, Outcome::Ok(_)) || Instant::now() > ready_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for a in &admins {
        if let Ok(s) = admin_status(a, "").await {
            if s.is_leader() {
                eprintln!("  {name}: {s:?}");
            }
        }
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = Client::new(clients_addrs.clone(), ClientOptions::default());
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((c as u64 + 1) * 0x1000_0001);
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while start.elapsed() < RUN {
                let k = format!("key{}", next(&mut rng) % KEYS);
                let op = if next(&mut rng) & 1 == 0 {
                    Op::Get { key: k }
                } else if load == Load::BoundCounter {
                    Op::Incr {
                        key: k,
                        delta: (next(&mut rng) % 5) as i64 + 1,
                    }
                } else {
                    Op::Put {
                        key: k,
                        value: Value::Int(next(&mut rng) as i64),
                    }
                };
                let t = Instant::now();
                let r = match load {
                    Load::Leader => client.request(op, RequestOptions::default()).await,
                    Load::LeaderReadsAnywhere => {
                        let options = RequestOptions {
                            read_from: Some(ReadFrom::Any),
                            ..RequestOptions::default()
                        };
                        client.request(op, options).await
                    }
                    Load::Bound | Load::BoundCounter => {
                        client.call(c % nodes, op, RequestOptions::default()).await
                    }
                };
                lat.push(t.elapsed().as_micros() as u64);
                if !matches!(r, Outcome::Ok(_)) {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut figures = Figures {
        name: name.to_string(),
        ops: 0,
        errors: 0,
        secs: 0.0,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            figures.ops += lat.len();
            figures.errors += errors;
            figures.latencies_us.extend(lat);
        }
    }
    figures.secs = start.elapsed().as_secs_f64();
    figures
}

async fn resp_cmd(reader: &mut BufReader<TcpStream>, parts: &[&[u8]]) -> std::io::Result<bool> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    reader.get_mut().write_all(&out).await?;
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.trim().parse().unwrap_or(-1);
        if len >= 0 {
            let mut body = vec![0u8; len as usize + 2];
            reader.read_exact(&mut body).await?;
        }
    }
    Ok(!line.starts_with('-'))
}

async fn redis_load(dir: &Path) -> Option<Figures> {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("redis: SKIPPED: redis-server not installed (apt-get install redis-server)");
        return None;
    }
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut procs = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--dbfilename", &format!("dump{i}.rdb")])
        .stdout(Stdio::null());
        if i > 0 {
            cmd.args(["--replicaof", "127.0.0.1", &ports[0].to_string()]);
        }
        procs.push(cmd.spawn().ok()?);
    }
    let _procs = Procs(procs);
    let addr = format!("127.0.0.1:{}", ports[0]);
    let ready_by = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).await.is_err() && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            let Ok(stream) = TcpStream::connect(&addr).await else {
                return (lat, 1);
            };
            let _ = stream.set_nodelay(true);
            let mut reader = BufReader::new(stream);
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((c as u64 + 1) * 0x1000_0001);
            while start.elapsed() < RUN {
                let k = format!("key{}", next(&mut rng) % KEYS);
                let t = Instant::now();
                let ok = if next(&mut rng) & 1 == 0 {
                    resp_cmd(&mut reader, &[b"GET", k.as_bytes()]).await
                } else {
                    let v = (next(&mut rng) as i64).to_string();
                    resp_cmd(&mut reader, &[b"SET", k.as_bytes(), v.as_bytes()]).await
                };
                lat.push(t.elapsed().as_micros() as u64);
                if !matches!(ok, Ok(true)) {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut figures = Figures {
        name: "redis primary + 2 replicas".into(),
        ops: 0,
        errors: 0,
        secs: 0.0,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            figures.ops += lat.len();
            figures.errors += errors;
            figures.latencies_us.extend(lat);
        }
    }
    figures.secs = start.elapsed().as_secs_f64();
    Some(figures)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "3 nodes on loopback, {CLIENTS} clients, 50/50 get/put over {KEYS} keys, {} s each",
        RUN.as_secs()
    );
    runtime.block_on(async {
        let mut all = Vec::new();
        all.push(
            store_load(
                "single-leader async",
                dir.path(),
                "[single_leader]\nreplication = \"async\"",
                Load::Leader,
            )
            .await,
        );
        all.push(
            store_load(
                "single-leader sync",
                dir.path(),
                "[single_leader]\nreplication = \"sync\"",
                Load::Leader,
            )
            .await,
        );
        all.push(
            store_load(
                "leaderless N=3 R=W=2",
                dir.path(),
                "mode = \"leaderless\"\n[leaderless]\nn = 3\nr = 2\nw = 2",
                Load::Bound,
            )
            .await,
        );
        for (name, conflict, load) in [
            ("multi-leader lww", "conflict = \"lww\"", Load::Bound),
            (
                "multi-leader version vectors",
                "conflict = \"version-vectors\"",
                Load::Bound,
            ),
            (
                "multi-leader pn-counter",
                "conflict = \"crdt\"\ncrdt = \"pn-counter\"",
                Load::BoundCounter,
            ),
        ] {
            let options = format!("mode = \"multi-leader\"\n[multi_leader]\n{conflict}");
            all.push(store_load(name, dir.path(), &options, load).await);
        }
        let mut consensus = Vec::new();
        for nodes in [3, 5] {
            for (name, options, load) in [
                ("raft read-index", "mode = \"raft\"", Load::Leader),
                (
                    "raft lease reads",
                    "mode = \"raft\"\n[raft]\nread = \"lease\"",
                    Load::Leader,
                ),
                // One more node: the first is the chain's master.
                ("chain tail reads", "mode = \"chain\"", Load::Leader),
                (
                    "chain CRAQ reads",
                    "mode = \"chain\"\n[chain]\nreads = \"any\"",
                    Load::LeaderReadsAnywhere,
                ),
                (
                    "single-leader sync",
                    "[single_leader]\nreplication = \"sync\"",
                    Load::Leader,
                ),
            ] {
                let chain = options.contains("chain");
                let n = if chain { nodes + 1 } else { nodes };
                let label = format!("{name}, {nodes} nodes{}", if chain { " + master" } else { "" });
                consensus.push(store_load_on(n, &label, dir.path(), options, load).await);
            }
        }
        // etcd syncs its log on every commit: the store, likewise, beside it.
        let mut synced = store_load(
            "raft read-index, 3 nodes, fsync always",
            dir.path(),
            "fsync = \"always\"\nmode = \"raft\"",
            Load::Leader,
        )
        .await;
        let redis = redis_load(dir.path()).await;
        let etcd = etcd_load(dir.path()).await;
        for f in &mut all {
            f.print();
        }
        for f in &mut consensus {
            f.print();
        }
        let rate = |f: &Figures| f.ops as f64 / f.secs;
        synced.print();
        if let Some(mut e) = etcd {
            e.print();
            println!(
                "raft read-index, 3 nodes, fsync always / etcd throughput: {:.2} (target >= 1.00); with fsync once a second: {:.2}",
                rate(&synced) / rate(&e),
                rate(&consensus[0]) / rate(&e)
            );
        }
        println!(
            "chain CRAQ reads, 5 / 3 chain nodes throughput: {:.2} (CRAQ reads scale with the chain); tail reads: {:.2}",
            rate(&consensus[8]) / rate(&consensus[3]),
            rate(&consensus[7]) / rate(&consensus[2])
        );
        if let Some(mut r) = redis {
            r.print();
            let ratio = all[0].ops as f64 / all[0].secs / (r.ops as f64 / r.secs);
            println!("single-leader async / redis throughput: {ratio:.2} (target >= 0.50)");
        }
        let lww = all[3].ops as f64 / all[3].secs;
        let async_leader = all[0].ops as f64 / all[0].secs;
        println!(
            "multi-leader lww / single-leader async throughput: {:.2} (target >= 1.00)",
            lww / async_leader
        );
    });
    or_set_shipping();
}

/// One HTTP/1.1 POST to etcd's gRPC-JSON gateway on a kept-alive connection;
/// whether the answer was 200.
async fn etcd_post(
    reader: &mut BufReader<TcpStream>,
    path: &str,
    body: &str,
) -> std::io::Result<bool> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    reader.get_mut().write_all(req.as_bytes()).await?;
    let mut status = String::new();
    reader.read_line(&mut status).await?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut rest = vec![0u8; length];
    reader.read_exact(&mut rest).await?;
    Ok(status.split_whitespace().nth(1) == Some("200"))
}

fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Three etcd members on loopback (Debian's `etcd-server`), the same load
/// through one member each per client in turn: linearizable reads (etcd's
/// default, ReadIndex) and puts.
async fn etcd_load(dir: &Path) -> Option<Figures> {
    if Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("etcd: SKIPPED: etcd not installed (apt-get install etcd-server)");
        return None;
    }
    let members: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut procs = Vec::new();
    for (i, (client, peer)) in members.iter().enumerate() {
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("etcd{i}")))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        procs.push(cmd.spawn().ok()?);
    }
    let _procs = Procs(procs);
    let addrs: Vec<String> = members
        .iter()
        .map(|(c, _)| format!("127.0.0.1:{c}"))
        .collect();
    let ready_by = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = match TcpStream::connect(&addrs[0]).await {
            Ok(s) => {
                let mut r = BufReader::new(s);
                let body = format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    b64(b"warmup"),
                    b64(b"0")
                );
                matches!(etcd_post(&mut r, "/v3/kv/put", &body).await, Ok(true))
            }
            Err(_) => false,
        };
        if ok {
            break;
        }
        if Instant::now() > ready_by {
            println!("etcd: SKIPPED: the cluster did not serve a put within 20 s");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let addr = addrs[c % addrs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            let Ok(stream) = TcpStream::connect(&addr).await else {
                return (lat, 1);
            };
            let _ = stream.set_nodelay(true);
            let mut reader = BufReader::new(stream);
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((c as u64 + 1) * 0x1000_0001);
            while start.elapsed() < RUN {
                let k = b64(format!("key{}", next(&mut rng) % KEYS).as_bytes());
                let t = Instant::now();
                let ok = if next(&mut rng) & 1 == 0 {
                    etcd_post(&mut reader, "/v3/kv/range", &format!("{{\"key\":\"{k}\"}}")).await
                } else {
                    let v = b64((next(&mut rng) as i64).to_string().as_bytes());
                    etcd_post(
                        &mut reader,
                        "/v3/kv/put",
                        &format!("{{\"key\":\"{k}\",\"value\":\"{v}\"}}"),
                    )
                    .await
                };
                lat.push(t.elapsed().as_micros() as u64);
                if !matches!(ok, Ok(true)) {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut figures = Figures {
        name: "etcd, 3 members".into(),
        ops: 0,
        errors: 0,
        secs: 0.0,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            figures.ops += lat.len();
            figures.errors += errors;
            figures.latencies_us.extend(lat);
        }
    }
    figures.secs = start.elapsed().as_secs_f64();
    Some(figures)
}

/// Bytes one add ships on an OR-set of 10,000 elements: its delta, and the
/// whole state a full-state CRDT would send.
fn or_set_shipping() {
    use splitbrain_store::crdt::CrdtType;
    let mut set = CrdtType::OrSet.empty();
    for e in 0..10_000i64 {
        let add = Op::Add {
            key: "s".into(),
            elem: e,
        };
        let _ = set.update((e % 3) as u32, 0, &add);
    }
    let add = Op::Add {
        key: "s".into(),
        elem: 10_000,
    };
    let Ok(Some((delta, _))) = set.update(0, 0, &add) else {
        return;
    };
    let (delta_bytes, state_bytes) = (
        splitbrain_store::codec::encode(&delta).len(),
        splitbrain_store::codec::encode(&set).len(),
    );
    println!(
        "or-set of 10001 elements, one add: delta {delta_bytes} bytes, full state {state_bytes} bytes ({:.0}x fewer; target >= 10x)",
        state_bytes as f64 / delta_bytes as f64
    );
}
