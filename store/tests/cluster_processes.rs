//! Real node processes on loopback: failover under SIGKILL, recovery from the
//! log, durability per fsync policy, and error replies to bad input.

use splitbrain_store::admin::{admin_call, admin_status};
use splitbrain_store::client::{Client, ClientOptions, Outcome, Routing};
use splitbrain_store::codec::{encode, put_frame, read_frame};
use splitbrain_store::msg::{
    Op, OpResult, ReadFrom, Reply, Request, RequestOptions, Response, Value,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

struct Cluster {
    config: PathBuf,
    ids: Vec<String>,
    admin: Vec<String>,
    client: Vec<String>,
    peer: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
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

impl Cluster {
    fn start(dir: &Path, n: usize, options: &str) -> Cluster {
        let mut text = format!("data_dir = {:?}\n{options}\n", dir.join("data"));
        let (mut ids, mut admin, mut client, mut peer) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 1..=n {
            let (c, p, a) = (free_port(), free_port(), free_port());
            text.push_str(&format!(
                "[[nodes]]\nid = \"n{i}\"\nclient = \"127.0.0.1:{c}\"\npeer = \"127.0.0.1:{p}\"\nadmin = \"127.0.0.1:{a}\"\n"
            ));
            ids.push(format!("n{i}"));
            admin.push(format!("127.0.0.1:{a}"));
            client.push(format!("127.0.0.1:{c}"));
            peer.push(format!("127.0.0.1:{p}"));
        }
        let config = dir.join("CLUSTER.toml");
        std::fs::write(&config, text).unwrap();
        let mut cluster = Cluster {
            config,
            ids,
            admin,
            client,
            peer,
            children: Vec::new(),
        };
        for i in 0..n {
            let child = cluster.spawn(i);
            cluster.children.push(Some(child));
        }
        cluster
    }

    fn spawn(&self, i: usize) -> Child {
        Command::new(env!("CARGO_BIN_EXE_splitbrain-store-node"))
            .arg("--config")
            .arg(&self.config)
            .arg("--id")
            .arg(&self.ids[i])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// SIGKILL by PID.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let pid = c.id();
            let status = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let _ = c.wait();
        }
    }

    fn restart(&mut self, i: usize) {
        let child = self.spawn(i);
        self.children[i] = Some(child);
    }

    async fn role(&self, i: usize) -> Option<String> {
        admin_status(&self.admin[i], "").await.ok().map(|s| s.role)
    }

    async fn wait_for_leader(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            for &i in among {
                if self.role(i).await.as_deref() == Some("leader") {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader among {among:?}");
    }

    fn client(&self) -> Client {
        Client::new(
            self.client.clone(),
            ClientOptions {
                timeout: Duration::from_secs(3),
                ..Default::default()
            },
        )
    }
}

fn list_of(outcome: &Outcome) -> Vec<i64> {
    match outcome {
        Outcome::Ok(OpResult::Value(Some(Value::List(l)))) => l.clone(),
        other => panic!("expected a list, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_cluster_keeps_acked_writes_when_the_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let options = "fsync = \"always\"\ncompact_after_bytes = 2048\n[single_leader]\nreplication = \"sync\"\nfencing = true\nleases = true";
    let mut cluster = Cluster::start(dir.path(), 3, options);
    let old = cluster.wait_for_leader(&[0, 1, 2]).await;
    let client = cluster.client();
    let mut acked = Vec::new();
    for e in 0..30 {
        if let Outcome::Ok(_) = client
            .request(
                Op::Append {
                    key: "k".into(),
                    elem: e,
                },
                RequestOptions::default(),
            )
            .await
        {
            acked.push(e);
        }
    }
    assert_eq!(acked.len(), 30, "a healthy sync cluster acks every write");
    // Follower reads are served (possibly a little behind) without the leader.
    let from_followers = RequestOptions {
        read_from: Some(ReadFrom::Followers),
        ..Default::default()
    };
    for _ in 0..4 {
        let l = list_of(
            &client
                .request(Op::ReadList { key: "k".into() }, from_followers.clone())
                .await,
        );
        assert_eq!(l[..], acked[..l.len()]);
    }
    cluster.kill(old);
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new = cluster.wait_for_leader(&others).await;
    assert_ne!(new, old);
    let read = client
        .request(Op::ReadList { key: "k".into() }, RequestOptions::default())
        .await;
    assert_eq!(
        list_of(&read),
        acked,
        "sync replication lost an acknowledged write"
    );
    // Sync needs every follower: with one dead, no new write is acknowledged.
    let blocked = client
        .request_with_timeout(
            Op::Append {
                key: "k".into(),
                elem: 99,
            },
            RequestOptions::default(),
            Duration::from_secs(1),
        )
        .await;
    assert!(
        !matches!(blocked, Outcome::Ok(_)),
        "sync acked a write with a follower down: {blocked:?}"
    );
    // The killed node recovers from its log and rejoins; sync writes resume.
    cluster.restart(old);
    // Attempts that time out may or may not land; ones acked must.
    let mut resumed = None;
    for elem in 100..120 {
        let r = client
            .request(
                Op::Append {
                    key: "k".into(),
                    elem,
                },
                RequestOptions::default(),
            )
            .await;
        if let Outcome::Ok(_) = r {
            resumed = Some(elem);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = resumed.expect("writes did not resume after the old leader rejoined");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let any = RequestOptions {
        read_from: Some(ReadFrom::Any),
        ..Default::default()
    };
    let on_old = list_of(
        &client
            .call(old, Op::ReadList { key: "k".into() }, any)
            .await,
    );
    assert_eq!(
        on_old[..acked.len()],
        acked[..],
        "the rejoined node lost acknowledged writes"
    );
    assert_eq!(on_old.last(), Some(&resumed));
    assert!(on_old[acked.len()..]
        .iter()
        .all(|e| (99..=resumed).contains(e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_cluster_stays_writable_when_the_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let options = "fsync = \"interval:20\"\n[single_leader]\nreplication = \"async\"";
    let mut cluster = Cluster::start(dir.path(), 3, options);
    let old = cluster.wait_for_leader(&[0, 1, 2]).await;
    let client = cluster.client();
    for e in 0..20 {
        let r = client
            .request(
                Op::Append {
                    key: "a".into(),
                    elem: e,
                },
                RequestOptions::default(),
            )
            .await;
        assert_eq!(r, Outcome::Ok(OpResult::Done));
    }
    cluster.kill(old);
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    cluster.wait_for_leader(&others).await;
    // The leader acks alone, so the survivors take writes at once; what the dead
    // leader had not shipped is gone (async promises nothing more).
    let mut ok = false;
    for _ in 0..10 {
        let r = client
            .request(
                Op::Append {
                    key: "a".into(),
                    elem: 100,
                },
                RequestOptions::default(),
            )
            .await;
        if r == Outcome::Ok(OpResult::Done) {
            ok = true;
            break;
        }
    }
    assert!(ok, "async cluster did not accept writes after failover");
    let read = list_of(
        &client
            .request(Op::ReadList { key: "a".into() }, RequestOptions::default())
            .await,
    );
    assert_eq!(read.last(), Some(&100));
    assert!(read.iter().all(|e| (0..20).contains(e) || *e == 100));
}

async fn single_node_put_kill_get(fsync: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 1, &format!("fsync = \"{fsync}\""));
    cluster.wait_for_leader(&[0]).await;
    let client = cluster.client();
    let put = client
        .request(
            Op::Put {
                key: "d".into(),
                value: Value::Int(9),
            },
            RequestOptions::default(),
        )
        .await;
    assert_eq!(put, Outcome::Ok(OpResult::Done));
    cluster.kill(0);
    cluster.restart(0);
    cluster.wait_for_leader(&[0]).await;
    let client = cluster.client();
    client
        .request(Op::Get { key: "d".into() }, RequestOptions::default())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_never_loses_acked_writes_to_sigkill_and_always_keeps_them() {
    assert_eq!(
        single_node_put_kill_get("always").await,
        Outcome::Ok(OpResult::Value(Some(Value::Int(9))))
    );
    assert_eq!(
        single_node_put_kill_get("interval:50").await,
        Outcome::Ok(OpResult::Value(Some(Value::Int(9))))
    );
    assert_eq!(
        single_node_put_kill_get("never").await,
        Outcome::Ok(OpResult::Value(None))
    );
}

async fn raw_exchange(stream: &mut TcpStream, payload: &[u8]) -> Response {
    let mut out = Vec::new();
    put_frame(&mut out, payload);
    stream.write_all(&out).await.unwrap();
    let bytes = read_frame(stream, 1 << 20).await.unwrap().unwrap();
    splitbrain_store::codec::decode(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_replies_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(
        dir.path(),
        1,
        "max_value_bytes = 1024\nmax_frame_bytes = 65536",
    );
    cluster.wait_for_leader(&[0]).await;
    let mut raw = TcpStream::connect(&cluster.client[0]).await.unwrap();

    let garbage = raw_exchange(&mut raw, &[0xff, 0xff, 0xff]).await;
    assert!(matches!(garbage.reply, Reply::Error(_)), "{garbage:?}");

    let good = Request {
        id: 41,
        op: Op::Get { key: "a".into() },
        options: RequestOptions::default(),
    };
    let mut unknown_op = encode(&good);
    unknown_op[1] = 99; // no such op
    let r = raw_exchange(&mut raw, &unknown_op).await;
    assert_eq!(r.id, 41);
    assert!(
        matches!(&r.reply, Reply::Error(m) if m.contains("unknown op")),
        "{r:?}"
    );

    let big = Request {
        id: 42,
        op: Op::Put {
            key: "a".into(),
            value: Value::Str("x".repeat(5000)),
        },
        options: RequestOptions::default(),
    };
    let r = raw_exchange(&mut raw, &encode(&big)).await;
    assert_eq!(r.id, 42);
    assert!(
        matches!(&r.reply, Reply::Error(m) if m.contains("exceeds")),
        "{r:?}"
    );

    let r = raw_exchange(&mut raw, &vec![0u8; 100_000]).await;
    assert!(
        matches!(&r.reply, Reply::Error(m) if m.contains("frame")),
        "{r:?}"
    );

    // The same connection and other clients are still served.
    let put = Request {
        id: 43,
        op: Op::Put {
            key: "a".into(),
            value: Value::Int(1),
        },
        options: RequestOptions::default(),
    };
    assert_eq!(
        raw_exchange(&mut raw, &encode(&put)).await,
        Response {
            id: 43,
            reply: Reply::Ok(OpResult::Done)
        }
    );
    let other = cluster
        .client()
        .request(Op::Get { key: "a".into() }, RequestOptions::default())
        .await;
    assert_eq!(other, Outcome::Ok(OpResult::Value(Some(Value::Int(1)))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_cluster_serves_through_any_node_and_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(
        dir.path(),
        3,
        "mode = \"leaderless\"\nfsync = \"interval:10\"",
    );
    let client = cluster.client();
    // A node's peer links come up on their own after start: retry each add
    // until its coordinator reaches a quorum (adds to a set are idempotent).
    for (coordinator, elem) in [(0, 1), (1, 2)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done = false;
        while Instant::now() < deadline && !done {
            done = matches!(
                client
                    .call(
                        coordinator,
                        Op::Add {
                            key: "s".into(),
                            elem
                        },
                        RequestOptions::default()
                    )
                    .await,
                Outcome::Ok(_)
            );
        }
        assert!(
            done,
            "add {elem} through node {coordinator} never succeeded"
        );
    }
    let all = RequestOptions {
        r: Some(3),
        ..Default::default()
    };
    let read = client.call(2, Op::ReadSet { key: "s".into() }, all).await;
    assert_eq!(
        read,
        Outcome::Ok(OpResult::Value(Some(Value::Set(
            [1, 2].into_iter().collect()
        ))))
    );
    let status = admin_status(&cluster.admin[0], "").await.unwrap();
    assert_eq!(status.node, "n1");
    assert_eq!(status.mode, "leaderless");
    assert_eq!(status.role, "replica");
    assert_eq!(status.keys, 1);
    assert_eq!(status.clock_offset_ms, 0);
    assert!(admin_call(&cluster.admin[0], "", "block n2")
        .await
        .unwrap()
        .starts_with("ok"));
    assert!(admin_call(&cluster.admin[0], "", "clock-offset -250")
        .await
        .unwrap()
        .starts_with("ok"));
    assert_eq!(
        admin_status(&cluster.admin[0], "")
            .await
            .unwrap()
            .clock_offset_ms,
        -250
    );
    assert!(admin_call(&cluster.admin[0], "", "fly")
        .await
        .unwrap()
        .starts_with("error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_clients_under_a_partition_keep_every_acknowledged_add_with_version_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(
        dir.path(),
        3,
        "mode = \"leaderless\"\nfsync = \"never\"\n[leaderless]\nconflict = \"version-vectors\"\nanti_entropy_ms = 200",
    );
    let bound = |home| {
        Client::new(
            cluster.client.clone(),
            ClientOptions {
                timeout: Duration::from_secs(1),
                routing: Routing::Bound(home),
                ..Default::default()
            },
        )
    };
    // Wait until every node coordinates.
    for home in 0..3 {
        let c = bound(home);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(
            c.request(Op::ReadSet { key: "s".into() }, RequestOptions::default())
                .await,
            Outcome::Ok(_)
        ) {
            assert!(Instant::now() < deadline, "node {home} never served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Two writers per coordinator, so each one has requests in flight at once.
    let mut writers = Vec::new();
    for w in 0..6i64 {
        let c = bound((w % 3) as usize);
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                let elem = w * 1000 + i;
                let op = Op::Add {
                    key: "s".into(),
                    elem,
                };
                if let Outcome::Ok(_) = c.request(op, RequestOptions::default()).await {
                    acked.push(elem);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Cut n1 off from n2 only: every node still reaches a quorum.
    admin_call(&cluster.admin[0], "", "block n2").await.unwrap();
    admin_call(&cluster.admin[1], "", "block n1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for a in &cluster.admin {
        admin_call(a, "", "unblock-all").await.unwrap();
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 100, "only {} adds acknowledged", acked.len());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let all = RequestOptions {
        r: Some(3),
        ..Default::default()
    };
    let read = bound(2).request(Op::ReadSet { key: "s".into() }, all).await;
    let Outcome::Ok(OpResult::Value(Some(Value::Set(present)))) = read else {
        panic!("final read: {read:?}")
    };
    let lost: Vec<i64> = acked.into_iter().filter(|e| !present.contains(e)).collect();
    assert!(lost.is_empty(), "lost acknowledged adds: {lost:?}");
}

/// Waits until the node's admin port answers `status` (with `secret`).
async fn wait_for_admin(addr: &str, secret: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if admin_status(addr, secret).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never answered status");
}

/// Regression: any local user could drive the admin port (block, clock
/// offsets of ±i64::MAX) and a forged peer hello claiming to be n1 was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_peer_ports_want_the_clusters_secret() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 2, "secret = \"run-secret-1\"");
    wait_for_admin(&cluster.admin[0], "run-secret-1").await;
    let refused = admin_call(&cluster.admin[0], "", "block n2").await.unwrap();
    assert_eq!(refused, "error authentication required");
    let refused = admin_call(&cluster.admin[0], "wrong", "status")
        .await
        .unwrap();
    assert_eq!(refused, "error authentication required");
    let offset = admin_call(
        &cluster.admin[0],
        "run-secret-1",
        &format!("clock-offset {}", i64::MAX),
    )
    .await
    .unwrap();
    assert!(offset.starts_with("error clock offset"), "{offset}");
    let status = admin_status(&cluster.admin[0], "run-secret-1")
        .await
        .unwrap();
    assert_eq!(status.clock_offset_ms, 0);
    // A hello that names n2 without the secret: the node hangs up.
    let mut forged = TcpStream::connect(&cluster.peer[0]).await.unwrap();
    let mut out = Vec::new();
    put_frame(&mut out, &encode(&(1u32, String::from("guess"))));
    forged.write_all(&out).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), forged.read(&mut byte))
        .await
        .expect("the node hangs up within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// Regression: an admin line without a newline grew without bound (512 MiB
/// took a leader to 1.6 GB); now it is refused at 4 KiB and the node goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_admin_line_is_refused_and_the_node_keeps_answering() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 1, "");
    wait_for_admin(&cluster.admin[0], "").await;
    let stream = TcpStream::connect(&cluster.admin[0]).await.unwrap();
    let (read, mut write) = stream.into_split();
    // The node stops reading at the limit, so the rest may not be taken.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        write.write_all(&vec![b'a'; 1 << 20]),
    )
    .await;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(read).read_line(&mut line),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(line.trim_end(), "error command longer than 4096 bytes");
    assert!(admin_status(&cluster.admin[0], "").await.is_ok());
}

/// Regression: replies a client never read piled up in the node (1.66 GB);
/// now a connection with `max_in_flight` unanswered requests is not read
/// until replies leave, so the client's own writes stall instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_replies_is_not_read_either() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 1, "max_in_flight = 4");
    wait_for_admin(&cluster.admin[0], "").await;
    let mut frames = Vec::new();
    let get = encode(&Request {
        id: 1,
        op: Op::Get { key: "k".into() },
        options: RequestOptions::default(),
    });
    for _ in 0..1_000_000 {
        put_frame(&mut frames, &get);
    }
    let mut greedy = TcpStream::connect(&cluster.client[0]).await.unwrap();
    let wrote = tokio::time::timeout(Duration::from_secs(3), greedy.write_all(&frames)).await;
    assert!(
        wrote.is_err(),
        "the node read {} MB of requests whose replies nobody read",
        frames.len() >> 20
    );
    let other = cluster
        .client()
        .call(0, Op::Get { key: "k".into() }, RequestOptions::default())
        .await;
    assert_eq!(other, Outcome::Ok(OpResult::Value(None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_an_error_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 1, "max_connections = 3");
    wait_for_admin(&cluster.admin[0], "").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&cluster.client[0]).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&cluster.client[0]).await.unwrap();
    let bytes = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut extra, 1 << 20))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let refusal: Response = splitbrain_store::codec::decode(&bytes).unwrap();
    assert!(
        matches!(&refusal.reply, Reply::Error(e) if e.contains("too many connections")),
        "{refusal:?}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = cluster
        .client()
        .call(0, Op::Get { key: "k".into() }, RequestOptions::default())
        .await;
    assert_eq!(ok, Outcome::Ok(OpResult::Value(None)));
}
