//! `splitbrain serve` against hostile clients: links out of the store,
//! slow request heads, too many connections, HEAD.

use std::time::{Duration, Instant};

use splitbrain::serve::{serve_with, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(store: std::path::PathBuf, limits: Limits) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with(store, listener, limits));
    addr
}

async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
        .await
        .expect("a response within 5 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("t/r");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("report.html"), "<html>the report</html>").unwrap();
    std::os::unix::fs::symlink("r", dir.path().join("t/latest")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("etclink")).unwrap();
    dir
}

#[tokio::test]
async fn links_out_of_the_store_are_not_followed_and_links_inside_are() {
    let dir = store();
    let addr = start(dir.path().to_path_buf(), Limits::default()).await;
    let out = http(addr, "GET /etclink/passwd HTTP/1.1\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(!out.contains("root:"), "{out}");
    let out = http(addr, "GET /t/latest/report.html HTTP/1.1\r\n\r\n").await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("the report"),
        "{out}"
    );
}

#[tokio::test]
async fn head_gets_the_headers_without_the_body() {
    let dir = store();
    let addr = start(dir.path().to_path_buf(), Limits::default()).await;
    let out = http(addr, "HEAD /t/r/report.html HTTP/1.1\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("Content-Length: 23"), "{out}");
    assert!(!out.contains("the report"), "{out}");
}

#[tokio::test]
async fn a_client_that_never_sends_its_request_is_timed_out() {
    let dir = store();
    let limits = Limits {
        head_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let addr = start(dir.path().to_path_buf(), limits).await;
    let started = Instant::now();
    let out = http(addr, "GET /t/r/rep").await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_the_server_goes_on() {
    let dir = store();
    let limits = Limits {
        max_connections: 4,
        head_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let addr = start(dir.path().to_path_buf(), limits).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = http(addr, "GET / HTTP/1.1\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = http(addr, "GET / HTTP/1.1\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
