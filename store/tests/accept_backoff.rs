//! Regression: one failed `accept()` (out of file descriptors) ended a
//! listener forever: a node stopped serving its client port. This test
//! runs alone in its own process because it lowers the descriptor limit.

use std::time::Duration;

use splitbrain_store::node::accept_next;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn set_fd_limit(soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit through valid pointers.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_listener_keeps_accepting_after_running_out_of_descriptors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, released) = tokio::sync::watch::channel(false);
    // Each accepted connection echoes one byte and is then held, using up
    // descriptors, until released.
    tokio::spawn(async move {
        loop {
            let mut stream = accept_next(&listener, "test").await;
            let mut released = released.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if let Ok(1) = stream.read(&mut b).await {
                    let _ = stream.write_all(&b).await;
                }
                let _ = released.wait_for(|r| *r).await;
            });
        }
    });
    set_fd_limit(open_fds() + 20);
    // Each connection costs two descriptors here (both ends): the limit is
    // reached, and accepts start failing with "too many open files".
    let mut clients = Vec::new();
    for _ in 0..40 {
        match TcpStream::connect(addr).await {
            Ok(c) => clients.push(c),
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(clients.len() < 40, "the descriptor limit was never reached");
    tokio::time::sleep(Duration::from_millis(200)).await;
    clients.clear();
    release.send(true).unwrap();
    set_fd_limit(open_fds() + 200);
    // The listener is still there: a new client is accepted and echoed.
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(mut c) = TcpStream::connect(addr).await {
            c.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            if let Ok(Ok(1)) =
                tokio::time::timeout(Duration::from_millis(500), c.read(&mut b)).await
            {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "the listener stopped accepting after running out of descriptors"
    );
}
