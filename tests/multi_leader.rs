//! Multi-leader replication in simulation, for every topology and conflict
//! mode, through partitions and kills: CRDT counters and OR-sets converge
//! with nothing lost, version vectors lose no write, and last write wins
//! under clock skew does lose writes.

use splitbrain::simulation::{check, run, Scenario, SimFault};
use splitbrain_history::Verdict;
use splitbrain_store::config::ClusterConfig;

fn scenario(topology: &str, conflict: &str, workload: &str, faults: &[&str]) -> Scenario {
    let cluster: ClusterConfig = toml::from_str(&format!(
        "nodes = []\nmode = \"multi-leader\"\n[multi_leader]\ntopology = \"{topology}\"\n{conflict}"
    ))
    .unwrap();
    let mut s = Scenario::new(cluster, 4, workload.parse().unwrap());
    s.faults = faults
        .iter()
        .map(|f| SimFault::parse_step(f).unwrap())
        .collect();
    s.final_reads_per_node = true;
    s
}

/// Seeds 1..=10 of a scenario: each seed's verdict and anomalies.
fn verdicts(s: &Scenario) -> Vec<(u64, Verdict, Vec<String>)> {
    (1..=10)
        .map(|seed| {
            let r = check(s, &run(s, seed).unwrap());
            let anomalies = r
                .checkers
                .iter()
                .flat_map(|c| c.anomaly_types.clone())
                .collect();
            (seed, r.verdict, anomalies)
        })
        .collect()
}

#[test]
fn every_topology_and_conflict_mode_converges_and_loses_nothing_it_promises_to_keep() {
    for topology in ["all-to-all", "star", "ring"] {
        for (conflict, workload) in [
            ("conflict = \"crdt\"\ncrdt = \"pn-counter\"", "crdt-counter"),
            ("conflict = \"crdt\"\ncrdt = \"or-set\"", "or-set"),
            ("conflict = \"version-vectors\"", "siblings"),
        ] {
            let s = scenario(
                topology,
                conflict,
                workload,
                &["partition", "kill", "partition+kill"],
            );
            for (seed, verdict, anomalies) in verdicts(&s) {
                assert_eq!(
                    verdict,
                    Verdict::Valid,
                    "{topology} {workload} seed {seed}: {anomalies:?}"
                );
            }
        }
    }
}

#[test]
fn with_a_change_log_of_four_lagging_peers_catch_up_from_whole_states() {
    for topology in ["all-to-all", "star", "ring"] {
        for (conflict, workload) in [
            ("conflict = \"crdt\"\ncrdt = \"pn-counter\"", "crdt-counter"),
            ("conflict = \"crdt\"\ncrdt = \"or-set\"", "or-set"),
            ("conflict = \"version-vectors\"", "siblings"),
        ] {
            let conflict = format!("{conflict}\nmax_log_changes = 4");
            let s = scenario(topology, &conflict, workload, &["partition", "kill"]);
            for (seed, verdict, anomalies) in verdicts(&s) {
                assert_eq!(
                    verdict,
                    Verdict::Valid,
                    "{topology} {workload} seed {seed}: {anomalies:?}"
                );
            }
        }
    }
}

#[test]
fn last_write_wins_under_clock_skew_loses_writes_in_every_topology() {
    for topology in ["all-to-all", "star", "ring"] {
        let s = scenario(topology, "conflict = \"lww\"", "siblings", &["clock"]);
        let found = verdicts(&s)
            .into_iter()
            .any(|(_, _, anomalies)| anomalies.iter().any(|a| a == "lost-write"));
        assert!(found, "{topology}: no seed lost a write");
    }
}

#[test]
fn an_op_the_crdt_type_lacks_is_refused_with_the_reason_and_recorded_as_fail() {
    let s = scenario(
        "all-to-all",
        "conflict = \"crdt\"\ncrdt = \"g-counter\"",
        "crdt-counter",
        &[],
    );
    let r = run(&s, 1).unwrap();
    let refused: Vec<_> = r
        .history
        .iter()
        .filter(|op| op.is_fail())
        .filter_map(|op| op.error.as_ref().map(|e| e.to_string()))
        .collect();
    assert!(
        !refused.is_empty(),
        "the workload decrements; a g-counter cannot"
    );
    assert!(
        refused
            .iter()
            .all(|e| e.contains("a decrement is not an operation of a g-counter")),
        "{refused:?}"
    );
    // What was refused did not happen: the counter stays within its bounds.
    assert_eq!(check(&s, &r).verdict, Verdict::Valid);
}
