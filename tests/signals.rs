//! Killing `splitbrain test` leaves nothing behind: after SIGTERM the run
//! heals, stops its nodes and stores its results and report at once; after
//! SIGKILL its nodes die with it (parent-death signal) and `splitbrain
//! clean` removes the namespaces it had made. Local and netns; the netns
//! part says why it skips where the machine allows no namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn splitbrain() -> Command {
    Command::new(env!("CARGO_BIN_EXE_splitbrain"))
}

/// Processes whose working directory is under `dir` (the run's nodes).
fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
        .collect()
}

fn namespaces_and_links() -> Vec<String> {
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&ns.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&links.stdout).lines())
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("sb"))
                .map(|w| w.trim_end_matches(':').to_string())
        })
        .collect()
}

/// Start a run and wait until clients are recording ops; the caller waits
/// for the child after signalling it.
#[allow(clippy::zombie_processes)]
fn start(env: &str, store: &Path) -> (Child, PathBuf) {
    let child = splitbrain()
        .args([
            "test",
            "--env",
            env,
            "--nemesis",
            "partition",
            "--nemesis-interval",
            "1",
        ])
        .args(["--time-limit", "60", "--seed", "1", "--store-dir"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = std::fs::read_dir(store.join("refstore-single-leader-register"))
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
            .filter(|p| p.is_dir());
        if let Some(run) = run {
            let ops =
                std::fs::read_to_string(run.join("history.jsonl")).map_or(0, |h| h.lines().count());
            if ops > 200 {
                return (child, run);
            }
        }
        if Instant::now() > deadline {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            panic!("the {env} run never got going");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

fn sigterm_stops_saves_and_cleans(env: &str) {
    let store = tempfile::tempdir().unwrap();
    let before = namespaces_and_links();
    let (mut child, run) = start(env, store.path());
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "{env}: an interrupted run is unknown"
    );
    let results = std::fs::read_to_string(run.join("results.json")).unwrap();
    assert!(results.contains("interrupted by SIGTERM"), "{results}");
    assert!(run.join("report.html").exists());
    assert_eq!(processes_in(&run), Vec::<u32>::new(), "{env}: nodes left");
    assert_eq!(
        namespaces_and_links(),
        before,
        "{env}: namespaces or links left"
    );
}

fn sigkill_leaves_nothing_after_clean(env: &str) {
    let store = tempfile::tempdir().unwrap();
    let before = namespaces_and_links();
    let (mut child, run) = start(env, store.path());
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(&run).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{env}: nodes outlived the harness"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if env == "netns" {
        assert_ne!(
            namespaces_and_links(),
            before,
            "the killed run's namespaces are there to clean"
        );
    }
    let clean = splitbrain().arg("clean").output().unwrap();
    assert!(clean.status.success());
    assert_eq!(
        namespaces_and_links(),
        before,
        "{env}: namespaces or links left after clean"
    );
}

/// One test, so that no other run of it makes or removes namespaces meanwhile.
#[test]
fn a_killed_harness_leaves_no_node_namespace_or_link_behind() {
    sigterm_stops_saves_and_cleans("local");
    sigkill_leaves_nothing_after_clean("local");
    match common::netns_unavailable() {
        Some(why) => eprintln!("SKIPPED: the netns half: {why}"),
        None => {
            sigterm_stops_saves_and_cleans("netns");
            sigkill_leaves_nothing_after_clean("netns");
        }
    }
}
