//! Every row of the store's claims table, in simulation: an anomaly the
//! textbook says appears must appear in one of the row's seeds, and a row
//! that promises none must show none in any.

use splitbrain::simulation::claims::run_claim;
use splitbrain_store::claims::CLAIMS;

#[test]
fn every_claim_holds_in_simulation() {
    let mut broken = Vec::new();
    for claim in CLAIMS {
        let r = run_claim(claim, 1..=claim.test_seeds, true, |_, _, _| {});
        eprintln!(
            "{:<62} {:<5} seeds {:>2} ops {:>6} witness {:?} anomalies {:?} {:.1} s{}",
            claim.id,
            if r.holds { "holds" } else { "BROKEN" },
            r.seeds.len(),
            r.ops,
            r.witness,
            r.anomalies_seen(),
            r.elapsed_s,
            r.problem
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
        if !r.holds {
            broken.push(claim.id);
        }
    }
    assert!(broken.is_empty(), "claims that do not hold: {broken:?}");
}

#[test]
fn a_seed_replays_byte_for_byte_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &str| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_splitbrain"))
            .args([
                "sim",
                "--claim",
                "no-leases-deposed-leader-serves-stale-reads",
            ])
            .args(["--seed", "3", "--out"])
            .arg(dir.path().join(out))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(matches!(status.code(), Some(0 | 1)), "{status:?}");
        std::fs::read(
            dir.path()
                .join(out)
                .join("no-leases-deposed-leader-serves-stale-reads/seed-3.jsonl"),
        )
        .unwrap()
    };
    let (a, b) = (run("a"), run("b"));
    assert!(a.len() > 10_000);
    assert_eq!(a, b);
}

#[test]
fn other_seeds_give_other_histories() {
    use splitbrain::simulation::{history_jsonl, run};
    let claim =
        splitbrain_store::claims::find("leaderless-r-plus-w-at-most-n-serves-stale-reads").unwrap();
    let s = splitbrain::simulation::claims::scenario(claim).unwrap();
    let a = history_jsonl(&run(&s, 1).unwrap().history);
    assert_eq!(a, history_jsonl(&run(&s, 1).unwrap().history));
    assert_ne!(a, history_jsonl(&run(&s, 2).unwrap().history));
}

/// Regression: single-leader runs with `read_from = followers` sent every
/// read to the leader (the requests did not say where reads may go), so
/// follower reads were never stale on real processes.
#[test]
fn follower_reads_are_sent_to_followers() {
    let mut cfg: splitbrain_store::ClusterConfig = toml::from_str("nodes = []").unwrap();
    cfg.single_leader.read_from = splitbrain_store::ReadFrom::Followers;
    assert_eq!(
        splitbrain::dbs::refstore_client::request_options(&cfg).read_from,
        Some(splitbrain_store::ReadFrom::Followers)
    );
}

/// Regression: the simulator handed a client the refusal of a stopped node
/// as the node's own reply, so after `kill-leader` every client kept
/// sending to the dead leader until the heal and no failover was exercised.
#[test]
fn clients_fail_over_to_the_new_leader_while_the_old_one_is_down() {
    use splitbrain::simulation::{run, Scenario, SimFault};
    use splitbrain_history::{OpType, Process};
    // (Synchronous single-leader replication waits for the dead follower.)
    for mode in [
        "mode = \"single-leader\"\n[single_leader]\nreplication = \"semi-sync:1\"",
        "mode = \"raft\"",
    ] {
        let cfg: splitbrain_store::ClusterConfig =
            toml::from_str(&format!("nodes = []\n{mode}")).unwrap();
        let mut s = Scenario::new(cfg, 3, splitbrain_workloads::WorkloadKind::Register);
        s.faults = vec![SimFault::parse_step("kill-leader").unwrap()];
        s.ops = 1500;
        let h = run(&s, 3).unwrap().history;
        let kill = h
            .iter()
            .position(|op| op.process == Process::Nemesis && op.f.as_str() == "kill")
            .expect("a kill");
        let info = format!("{:?}", h[kill + 1].value);
        let killed = ["n1", "n2", "n3"]
            .into_iter()
            .find(|n| info.contains(&format!("\"{n}\"")))
            .expect("the killed node");
        let heal = h[kill + 2..]
            .iter()
            .position(|op| op.process == Process::Nemesis)
            .map_or(h.len(), |i| kill + 2 + i);
        let served_elsewhere = h[kill..heal]
            .iter()
            .filter(|op| op.kind == OpType::Ok)
            .filter(|op| op.node.as_deref().is_some_and(|n| *n != *killed))
            .count();
        assert!(
            served_elsewhere > 50,
            "{mode}: only {served_elsewhere} ops served while {killed:?} was down"
        );
    }
}

/// Regression: when an op's deadline passed while a retry was in flight,
/// the simulator recorded the earlier refusal (`fail`), though the retry
/// could still take effect; after a failover, "failed" writes were read.
#[test]
fn an_op_whose_retry_is_in_flight_at_its_deadline_is_info_not_fail() {
    use splitbrain::simulation::{claims::scenario, history_jsonl, run};
    let claim = splitbrain_store::claims::find("sync-with-fencing-loses-nothing").unwrap();
    let s = scenario(claim).unwrap();
    for seed in 1..=10 {
        let jsonl = history_jsonl(&run(&s, seed).unwrap().history);
        let mut failed = std::collections::BTreeSet::new();
        let mut read = std::collections::BTreeSet::new();
        for line in String::from_utf8(jsonl).unwrap().lines() {
            let op: serde_json::Value = serde_json::from_str(line).unwrap();
            match (op["type"].as_str(), op["f"].as_str()) {
                (Some("fail"), Some("add")) => {
                    failed.insert(op["value"].as_i64().unwrap());
                }
                (Some("ok"), Some("read")) => {
                    for v in op["value"]["#set"].as_array().into_iter().flatten() {
                        read.insert(v.as_i64().unwrap());
                    }
                }
                _ => {}
            }
        }
        assert!(!read.is_empty(), "seed {seed}: nothing was read");
        let seen: Vec<_> = failed.intersection(&read).collect();
        assert!(
            seen.is_empty(),
            "seed {seed}: failed adds were read: {seen:?}"
        );
    }
}

/// Regression: a one-group transaction refused by a stale map was planned
/// again part by part; when a move had spread its keys over two groups the
/// parts committed one by one, and Elle found G1c (seed 17 of this row).
#[test]
fn a_one_group_transaction_that_a_move_spreads_over_groups_commits_by_two_phase_commit() {
    use splitbrain::simulation::{check, run};
    let claim =
        splitbrain_store::claims::find("sharded-two-phase-commit-is-strict-serializable").unwrap();
    let s = splitbrain::simulation::claims::scenario(claim).unwrap();
    let r = run(&s, 17).unwrap();
    let results = check(&s, &r);
    assert_eq!(
        results.verdict,
        splitbrain_history::Verdict::Valid,
        "{:?}",
        results.anomaly_types()
    );
}

/// Regression: a committed transaction whose keys a move had spread over two
/// groups sent its writes to one of them, was refused, reread the map from
/// its own core in the same step and tried again at once: the simulated
/// clock never moved on (single-leader groups, hash sharding, seed 3).
#[test]
fn a_commit_refused_by_a_stale_map_waits_and_goes_to_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_splitbrain"))
        .args([
            "sim",
            "--replication",
            "single-leader",
            "--sharding",
            "hash",
            "--shards",
            "3",
        ])
        .args(["--workload", "list-append", "--nodes", "5", "--seed", "3"])
        .args([
            "--faults",
            "rebalance,kill,partition,rebalance+kill",
            "--out",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the simulation did not end within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}
