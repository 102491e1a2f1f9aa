//! The sharded reference store on real processes (loopback), through
//! `splitbrain test`: two-phase commit keeps the bank's total through
//! rebalances, running each group's part on its own breaks it, and the
//! result names every rebalance. Bad sharding flags are refused up front.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let store = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_splitbrain"))
        .arg("test")
        .args(["--store-dir", store.path().to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results = walk_results(store.path());
    (out.status.code(), text, results)
}

fn walk_results(dir: &std::path::Path) -> serde_json::Value {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            let v = walk_results(&p);
            if !v.is_null() {
                return v;
            }
        } else if p.file_name().is_some_and(|n| n == "results.json") {
            return serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        }
    }
    serde_json::Value::Null
}

const SHARDED_BANK: &[&str] = &[
    "--sharding",
    "range",
    "--shards",
    "3",
    "--replication",
    "raft",
    "--workload",
    "bank",
    "--nemesis",
    "rebalance",
    "--nemesis-interval",
    "2",
    "--time-limit",
    "10",
];

#[test]
fn two_phase_commit_keeps_the_banks_total_through_rebalances() {
    let (code, text, results) = run(SHARDED_BANK);
    assert_eq!(code, Some(0), "{text}");
    let faults = results["faults"].as_array().cloned().unwrap_or_default();
    assert!(!faults.is_empty(), "no rebalance recorded: {text}");
    for f in &faults {
        assert_eq!(f["package"], "rebalance");
        let what = f["what"].as_str().unwrap_or_default();
        assert!(what.contains("partition"), "{what}");
    }
    assert!(text.contains("fault at"), "{text}");
}

#[test]
fn without_two_phase_commit_the_banks_total_breaks() {
    let mut args = SHARDED_BANK.to_vec();
    args.extend(["--cross-shard", "none"]);
    let (code, text, results) = run(&args);
    assert_eq!(code, Some(1), "{text}");
    let bank = results["checkers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["checker"] == "bank")
        .cloned()
        .unwrap();
    assert!(bank.to_string().contains("wrong-total"), "{bank}");
}

#[test]
fn sharding_flags_that_cannot_work_are_refused_up_front() {
    for (args, needle) in [
        (&["--sharding", "spiral"][..], "--sharding spiral"),
        (&["--shards", "2"][..], "need --sharding"),
        (
            &["--sharding", "hash", "--replication", "multi-leader"][..],
            "multi-leader",
        ),
        (
            &["--sharding", "hash", "--replicas-per-shard", "9"][..],
            "replicas",
        ),
        (
            &["--sharding", "hash", "--cross-shard", "three-phase"][..],
            "--cross-shard",
        ),
        (&["--nemesis", "rebalance"][..], "--sharding"),
    ] {
        let mut all = vec!["--time-limit", "1"];
        all.extend_from_slice(args);
        let (code, text, _) = run(&all);
        assert_eq!(code, Some(254), "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
    }
}
