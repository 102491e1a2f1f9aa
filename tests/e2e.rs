//! End to end: `splitbrain test` against the reference store on this machine
//! (nodes as child processes on 127.0.0.1), through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use splitbrain_history::{Format, History, OpType, Process};

mod common;
use common::{splitbrain_test as run_test, TestRun as Run};

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

fn assert_valid(run: &Run) {
    let r = results(&run.dir);
    assert_eq!(r["verdict"], "valid", "{}\n{r:#}", run.stdout);
    assert_eq!(run.exit_code, 0, "{}", run.stdout);
    for f in [
        "test.json",
        "history.jsonl",
        "results.json",
        "report.html",
        "n1.log",
    ] {
        assert!(
            run.dir.join(f).exists(),
            "{f} missing in {}",
            run.dir.display()
        );
    }
}

#[test]
fn register_on_the_local_reference_store_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let run = run_test(
        store.path(),
        &[
            "--workload",
            "register",
            "--time-limit",
            "4",
            "--rate",
            "300",
            "--quiesce",
            "0.5",
            "--seed",
            "3",
        ],
    );
    assert_valid(&run);
    let r = results(&run.dir);
    let lin = r["checkers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["checker"] == "linearizable")
        .expect("the register workload runs the linearizability checker");
    assert_eq!(lin["verdict"], "valid");
    let h = History::read(&run.dir.join("history.jsonl"), Some(Format::Jsonl)).unwrap();
    let ok = h.ops.iter().filter(|o| o.kind == OpType::Ok).count();
    assert!(ok > 300, "only {ok} ok ops in 4 s at 300/s");
}

#[test]
fn list_append_on_the_local_reference_store_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let run = run_test(
        store.path(),
        &[
            "--workload",
            "list-append",
            "--time-limit",
            "4",
            "--rate",
            "300",
            "--quiesce",
            "0.5",
            "--seed",
            "4",
        ],
    );
    assert_valid(&run);
    let r = results(&run.dir);
    let elle = r["checkers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["checker"] == "list-append")
        .expect("the list-append workload runs the list-append checker");
    assert_eq!(elle["verdict"], "valid", "{elle:#}");
    let h = History::read(&run.dir.join("history.jsonl"), Some(Format::Jsonl)).unwrap();
    assert!(h.ops.iter().any(|o| o.f == "txn" && o.kind == OpType::Ok));
}

#[test]
fn a_crdt_counter_run_reports_when_each_replica_converged_after_the_heal() {
    let store = tempfile::tempdir().unwrap();
    let run = run_test(
        store.path(),
        &[
            "--replication",
            "multi-leader",
            "--conflict",
            "crdt",
            "--workload",
            "crdt-counter",
            "--nemesis",
            "partition",
            "--nemesis-interval",
            "1",
            "--time-limit",
            "4",
            "--rate",
            "200",
            "--quiesce",
            "1",
            "--seed",
            "6",
        ],
    );
    assert_valid(&run);
    assert!(run.stdout.contains("ms after the heal"), "{}", run.stdout);
    let r = results(&run.dir);
    let conv = r["checkers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["checker"] == "convergence")
        .expect("crdt-counter runs the convergence checker");
    // Replicas are the nodes that answered, and the final reads were
    // repeated through the quiet second, not read once at its end.
    let per_node = conv["result"]["converged_ms_per_node"].as_object().unwrap();
    let nodes: Vec<&str> = per_node.keys().map(String::as_str).collect();
    assert_eq!(nodes, ["n1", "n2", "n3", "n4", "n5"], "{conv:#}");
    let clients = 10;
    assert!(
        conv["result"]["final_read_count"].as_u64().unwrap() > 5 * clients,
        "{conv:#}"
    );
    assert!(
        conv["result"]["converged_ms"].as_f64().unwrap() < 1000.0,
        "{conv:#}"
    );
}

#[test]
fn bank_on_the_local_reference_store_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let run = run_test(
        store.path(),
        &[
            "--workload",
            "bank",
            "--time-limit",
            "3",
            "--rate",
            "300",
            "--quiesce",
            "0.5",
            "--seed",
            "5",
        ],
    );
    assert_valid(&run);
    let r = results(&run.dir);
    let bank = &r["checkers"][0];
    assert_eq!(bank["checker"], "bank");
    assert_eq!(bank["result"]["total"], 100, "{bank:#}");
    assert!(bank["result"]["transfer_count"].as_u64().unwrap() > 0);
}

/// Single-leader async with the leader SIGKILLed mid-run: ops in flight at
/// the kill end as `info`, the run still completes, heals and is checked.
#[test]
fn killing_the_async_leader_records_info_and_completes() {
    let store = tempfile::tempdir().unwrap();
    let run = run_test(
        store.path(),
        &[
            "--sync",
            "async",
            "--workload",
            "register",
            "--nemesis",
            "kill",
            "--nemesis-targets",
            "primaries",
            "--nemesis-interval",
            "1",
            "--time-limit",
            "7",
            "--rate",
            "0",
            // An op is in flight at the leader when it dies only by chance
            // (on a loaded machine most of an op's time is spent in the
            // client): many clients and three kills make that near certain.
            "--concurrency",
            "24",
            "--op-timeout-ms",
            "500",
            "--quiesce",
            "0.5",
            "--seed",
            "6",
        ],
    );
    // Valid or invalid (async may lose writes), but checked: not a crash, not unknown.
    assert!(
        run.exit_code == 0 || run.exit_code == 1,
        "exit {}: {}",
        run.exit_code,
        run.stdout
    );
    let h = History::read(&run.dir.join("history.jsonl"), Some(Format::Jsonl)).unwrap();
    let kills: Vec<_> = h
        .ops
        .iter()
        .filter(|o| o.process == Process::Nemesis && o.f == "kill" && o.kind == OpType::Info)
        .collect();
    assert!(!kills.is_empty(), "no kill was recorded");
    let client_infos = h
        .ops
        .iter()
        .filter(|o| o.is_client() && o.kind == OpType::Info)
        .count();
    assert!(
        client_infos > 0,
        "no client op ended indeterminate across the kill"
    );
    // The final heal restarted the leader, and the run went on after it.
    assert!(h
        .ops
        .iter()
        .any(|o| o.process == Process::Nemesis && o.f == "restart" && o.kind == OpType::Info));
    let last_kill = h.ops.iter().rposition(|o| o.f == "kill").unwrap();
    assert!(
        h.ops[last_kill..]
            .iter()
            .any(|o| o.is_client() && o.kind == OpType::Ok),
        "no client op succeeded after the leader was killed: no failover"
    );
}

/// Impossible combinations are refused before anything starts.
#[test]
fn impossible_combinations_are_refused_up_front() {
    let store = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (&["--db", "etcd"][..], "--env docker"),
        (
            &["--replication", "leaderless", "--sync", "async"][..],
            "single-leader",
        ),
        (&["--nemesis", "loss"][..], "loss"),
        (&["--nemesis-targets", "everyone"][..], "everyone"),
        (&["--isolation", "serializable"][..], "--isolation"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_splitbrain"))
            .arg("test")
            .args([
                "--store-dir",
                store.path().to_str().unwrap(),
                "--time-limit",
                "1",
            ])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(254), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // Nothing was started, so no node wrote a log.
    let leftovers: Vec<_> = walk(store.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(leftovers.is_empty(), "nodes were started: {leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A stored run whose fault did not take effect re-checks as `unknown`.
#[test]
fn analyze_keeps_a_failed_fault_unknown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("test.json"),
        r#"{"name":"set-by-hand","workload":"set","seed":1,"command":"by hand"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("history.jsonl"),
        [
            r#"{"index":0,"time":0,"process":0,"type":"invoke","f":"add","value":1}"#,
            r#"{"index":1,"time":10,"process":0,"type":"ok","f":"add","value":1}"#,
            r#"{"index":2,"time":20,"process":"nemesis","type":"invoke","f":"start-partition","value":"majority"}"#,
            r#"{"index":3,"time":30,"process":"nemesis","type":"fail","f":"start-partition","value":"majority","error":"the fault did not take effect: n1 -> n2 is up but should be cut"}"#,
            r#"{"index":4,"time":40,"process":0,"type":"invoke","f":"read","value":null}"#,
            r##"{"index":5,"time":50,"process":0,"type":"ok","f":"read","value":{"#set":[1]}}"##,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_splitbrain"))
        .args(["analyze", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = results(dir.path());
    assert_eq!(r["verdict"], "unknown");
    assert!(r["problem"]
        .as_str()
        .unwrap()
        .contains("did not take effect"));
}
