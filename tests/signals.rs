//! Killing `splitbrain test` leaves nothing behind: after SIGTERM the run
//! heals, stops its nodes and stores its results and report at once; after
//! SIGKILL its nodes die with it (parent-death signal) and `splitbrain
//! clean` removes the namespaces it had made, read from the run's lock
//! file. Nodes left running on purpose survive the next run and go with
//! `splitbrain clean`. Local and netns; the netns part says why it skips
//! where the machine allows no namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// Lock files go to a directory of this test's, so other tests' runs are
/// not seen.
fn lock_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .to_path_buf()
}

fn splitbrain() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_splitbrain"));
    c.env("SPLITBRAIN_LOCK_DIR", lock_dir());
    c
}

/// The run records in the lock directory.
fn lock_records() -> Vec<serde_json::Value> {
    std::fs::read_dir(lock_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default()
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
    let mut child = splitbrain()
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
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the {env} run ended before it got going: {status}");
        }
        if Instant::now() > deadline {
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
    assert_eq!(
        lock_records(),
        Vec::<serde_json::Value>::new(),
        "{env}: lock file left"
    );
}

fn sigkill_leaves_nothing_after_clean(env: &str) {
    let store = tempfile::tempdir().unwrap();
    let before = namespaces_and_links();
    let (mut child, run) = start(env, store.path());
    let records = lock_records();
    assert_eq!(records.len(), 1, "{env}: one lock file while running");
    let record = &records[0];
    assert_eq!(record["env"], env);
    assert_eq!(record["harness"]["pid"], child.id());
    let recorded: Vec<u64> = record["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    let mut running: Vec<u64> = processes_in(&run).into_iter().map(u64::from).collect();
    running.sort();
    let mut sorted = recorded.clone();
    sorted.sort();
    assert_eq!(
        sorted, running,
        "{env}: the lock file names every node process"
    );
    if env == "netns" {
        assert!(
            record["namespaces"].as_array().unwrap().len() > recorded.len(),
            "{env}: the lock file names the node and bridge namespaces: {record}"
        );
    }
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
    assert_eq!(
        lock_records().len(),
        1,
        "{env}: the killed run's lock file stays"
    );
    let clean = splitbrain().arg("clean").output().unwrap();
    assert!(clean.status.success());
    assert_eq!(
        namespaces_and_links(),
        before,
        "{env}: namespaces or links left after clean"
    );
    assert_eq!(
        lock_records(),
        Vec::<serde_json::Value>::new(),
        "{env}: clean removes the lock file"
    );
}

fn short_run(env: &str, store: &Path, extra: &[&str]) -> std::process::Output {
    splitbrain()
        .args([
            "test",
            "--env",
            env,
            "--time-limit",
            "2",
            "--seed",
            "3",
            "--store-dir",
        ])
        .arg(store)
        .args(extra)
        .output()
        .unwrap()
}

fn left_running_survives_the_next_run_and_goes_with_clean(env: &str) {
    let store = tempfile::tempdir().unwrap();
    let before = namespaces_and_links();
    let out = short_run(env, store.path(), &["--leave-db-running"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{env}: {stderr}");
    assert!(
        stderr.contains("splitbrain clean"),
        "{env}: says how to stop them: {stderr}"
    );
    let run = std::fs::read_dir(store.path().join("refstore-single-leader-register"))
        .unwrap()
        .find_map(|e| e.ok().map(|e| e.path()).filter(|p| p.is_dir()))
        .unwrap();
    let left = processes_in(&run);
    assert!(!left.is_empty(), "{env}: the nodes were left running");
    let records = lock_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["left_running"], true);

    let next = tempfile::tempdir().unwrap();
    let out = short_run(env, next.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{env}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        processes_in(&run),
        left,
        "{env}: the next run leaves them alone"
    );

    let clean = splitbrain().arg("clean").output().unwrap();
    assert!(clean.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(&run).is_empty() {
        assert!(Instant::now() < deadline, "{env}: clean did not stop them");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        namespaces_and_links(),
        before,
        "{env}: namespaces or links left after clean"
    );
    assert_eq!(lock_records(), Vec::<serde_json::Value>::new());
}

/// One test, so that no other run of it makes or removes namespaces meanwhile.
#[test]
fn a_killed_harness_leaves_no_node_namespace_or_link_behind() {
    sigterm_stops_saves_and_cleans("local");
    sigkill_leaves_nothing_after_clean("local");
    left_running_survives_the_next_run_and_goes_with_clean("local");
    match common::netns_unavailable() {
        Some(why) => eprintln!("SKIPPED: the netns half: {why}"),
        None => {
            sigterm_stops_saves_and_cleans("netns");
            sigkill_leaves_nothing_after_clean("netns");
            left_running_survives_the_next_run_and_goes_with_clean("netns");
        }
    }
}
