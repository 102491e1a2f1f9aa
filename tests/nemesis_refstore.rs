//! The nemesis against the reference store, in the `local` environment
//! (admin-port blocks, proven by probes through the store's own transport)
//! and the `netns` environment (iptables in network namespaces, proven by
//! pings): a majority partition of single-leader async fails over to a
//! second leader, and a run's report names the partition and its window.
//! The netns tests are skipped with a clear message where the machine does
//! not allow namespaces (not root, no ping); CI runs them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use splitbrain_history::{Format, History, OpType, Process, Value};
use splitbrain_nemesis::Target;
use splitbrain_store::admin::{admin_status, NodeStatus};
use splitbrain_store::config::{ClusterConfig, Replication};

async fn status(cfg: &ClusterConfig, node: &str) -> Option<NodeStatus> {
    let n = cfg.nodes.iter().find(|n| n.id == node)?;
    admin_status(&n.admin, &cfg.secret).await.ok()
}

/// Cut `minority` off from everyone else, both ways.
fn split(nodes: &[String], minority: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let majority: BTreeSet<String> = nodes
        .iter()
        .filter(|n| !minority.contains(*n))
        .cloned()
        .collect();
    nodes
        .iter()
        .map(|n| {
            let other = if minority.contains(n) {
                majority.clone()
            } else {
                minority.clone()
            };
            (n.clone(), other)
        })
        .collect()
}

fn failover(env: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut base: ClusterConfig = toml::from_str("nodes = []").unwrap();
    base.single_leader.replication = Replication::Async;
    let mut cluster = common::refstore_cluster(base, env, 5);
    let mut exec = cluster
        .executor()
        .expect("the reference store takes faults");
    rt.block_on(cluster.setup(dir.path())).expect("cluster up");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let cfg: ClusterConfig =
                toml::from_str(&std::fs::read_to_string(dir.path().join("cluster.toml")).unwrap())
                    .unwrap();
            let nodes = exec.nodes();
            let old = exec.primaries().await;
            assert_eq!(old.len(), 1, "one leader before the partition: {old:?}");
            let old_leader = old[0].clone();
            let old_epoch = status(&cfg, &old_leader).await.unwrap().epoch;
            let buddy = nodes.iter().find(|n| **n != old_leader).unwrap().clone();
            let minority = BTreeSet::from([old_leader.clone(), buddy]);
            exec.partition(&split(&nodes, &minority))
                .await
                .expect("the partition takes effect and is proven");

            // The majority elects a leader of its own, in a later epoch.
            let deadline = Instant::now() + Duration::from_secs(15);
            let new_leader = loop {
                let mut found = None;
                for n in nodes.iter().filter(|n| !minority.contains(*n)) {
                    if let Some(s) = status(&cfg, n).await {
                        if s.is_leader() && s.epoch > old_epoch {
                            found = Some(n.clone());
                        }
                    }
                }
                if let Some(n) = found {
                    break n;
                }
                assert!(
                    Instant::now() < deadline,
                    "no second leader in the majority within 15 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert!(!minority.contains(&new_leader));
            exec.heal()
                .await
                .expect("the heal takes effect and is proven");
            // After the heal, the cluster settles on one leader again.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let leaders = exec.primaries().await;
                if leaders.len() == 1 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "leaders after the heal: {leaders:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }));
    rt.block_on(cluster.teardown(false)).expect("teardown");
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// Membership through the store's admin port on local processes: Raft
/// removes the leader and adds it back as a learner that becomes a voter;
/// a single-leader cluster refuses the fault up front.
#[test]
fn raft_removes_and_adds_back_members_through_its_admin_port() {
    use splitbrain_nemesis::Ability;
    let single: ClusterConfig = toml::from_str("nodes = []").unwrap();
    let single = common::refstore_cluster(single, "local", 3)
        .executor()
        .unwrap()
        .lacks(Ability::Membership);
    assert!(single
        .unwrap()
        .contains("single-leader mode has no membership changes"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base: ClusterConfig = toml::from_str("mode = \"raft\"\nnodes = []").unwrap();
    let mut cluster = common::refstore_cluster(base, "local", 3);
    let mut exec = cluster.executor().expect("the store takes faults");
    assert_eq!(exec.lacks(Ability::Membership), None);
    rt.block_on(cluster.setup(dir.path())).expect("cluster up");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let all: Vec<String> = exec.nodes();
            let before = exec.members().await.expect("members");
            assert_eq!(before.members, all);
            let leader = exec.primaries().await[0].clone();
            let after = exec.remove_member(&leader).await.expect("removal");
            assert!(!after.members.contains(&leader), "{after:?}");
            assert_eq!(after.members.len(), 2);
            // The rest elect a leader of their own; the removed one leads nothing.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let leaders = exec.primaries().await;
                if leaders.len() == 1 && leaders[0] != leader {
                    break;
                }
                assert!(Instant::now() < deadline, "leaders: {leaders:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // A second removal would leave one member: the nemesis refuses
            // that, the store would not; here the node comes back instead.
            let back = exec.add_member(&leader).await.expect("added back");
            assert_eq!(back.members, all);
            assert!(back.joining.is_empty());
        })
    }));
    rt.block_on(cluster.teardown(false)).expect("teardown");
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn majority_partition_of_async_single_leader_fails_over_local() {
    failover("local");
}

#[test]
fn majority_partition_of_async_single_leader_fails_over_netns() {
    if let Some(why) = common::netns_unavailable() {
        eprintln!("SKIPPED: majority_partition_of_async_single_leader_fails_over_netns: {why}");
        return;
    }
    failover("netns");
}

/// A whole run with majority partitions: every fault op is proven (the run
/// is not `unknown`), and the report names the partition and its window.
fn partition_run(env: &str, store: &Path) {
    let run = common::splitbrain_test(
        store,
        &[
            "--env",
            env,
            "--sync",
            "async",
            "--nemesis",
            "partition",
            "--partitions",
            "majority",
            "--nemesis-interval",
            "2",
            "--time-limit",
            "6",
            "--rate",
            "200",
            "--quiesce",
            "0.5",
            "--seed",
            "8",
        ],
    );
    let (dir, results) = (run.dir, run.results);
    assert!(
        results["problem"].is_null(),
        "a fault did not take effect: {}",
        results["problem"]
    );
    assert_ne!(results["verdict"], "unknown", "{results:#}");

    let h = History::read(&dir.join("history.jsonl"), Some(Format::Jsonl)).unwrap();
    let starts: Vec<_> = h
        .ops
        .iter()
        .filter(|o| {
            o.process == Process::Nemesis && o.f == "start-partition" && o.kind == OpType::Info
        })
        .collect();
    assert!(!starts.is_empty(), "no partition was applied");
    // The completion names the package and the phase.
    let kw = |s: &str| Value::Keyword(s.into());
    assert_eq!(
        starts[0].value.map_get(&kw("fault")),
        Some(&kw("partition"))
    );
    assert_eq!(starts[0].value.map_get(&kw("phase")), Some(&kw("start")));
    // The op says exactly what was cut.
    let grudge = starts[0]
        .value
        .map_get(&kw("grudge"))
        .expect("the grudge is recorded");
    assert!(matches!(grudge, Value::Map(m) if m.len() == 5), "{grudge}");

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("partition majority from "),
        "the report does not name the partition window"
    );
}

#[test]
fn a_partitioned_run_reports_its_window_local() {
    let store = tempfile::tempdir().unwrap();
    partition_run("local", store.path());
}

#[test]
fn a_partitioned_run_reports_its_window_netns() {
    if let Some(why) = common::netns_unavailable() {
        eprintln!("SKIPPED: a_partitioned_run_reports_its_window_netns: {why}");
        return;
    }
    let namespaces = || -> BTreeSet<String> {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("sb-r"))
        .map(str::to_string)
        .collect()
    };
    let before = namespaces();
    let store = tempfile::tempdir().unwrap();
    partition_run("netns", store.path());
    let left: Vec<_> = namespaces().difference(&before).cloned().collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
