//! Consistency models, which anomalies each one proscribes, and how models
//! and anomalies imply each other. The three tables follow Elle's lattice
//! (`elle.consistency-model`: `models`, `direct-proscribed-anomalies`,
//! `implied-anomalies`) row for row, so that a history's `not` / `also-not`
//! and anomaly names compare one to one with Elle's. Sources, cited per row:
//!
//! - [Adya] A. Adya, "Weak Consistency: A Generalized Theory and Optimistic
//!   Implementations for Distributed Transactions", MIT PhD thesis, 1999.
//! - [Bailis] P. Bailis et al., "Highly Available Transactions", VLDB 2014.
//! - [Cerone] A. Cerone, G. Bernardi, A. Gotsman, "A Framework for
//!   Transactional Consistency Models with Atomic Visibility", CONCUR 2015.
//! - [Cerone-SI] A. Cerone, A. Gotsman, "Analysing Snapshot Isolation",
//!   PODC 2016 (SI forbids every cycle whose rw edges are all nonadjacent).
//! - [Daudjee] K. Daudjee, K. Salem, "Lazy Database Replication with
//!   Snapshot Isolation", VLDB 2006 (strong session / strong SI).
//! - [Bernstein] Bernstein, Hadzilacos, Goodman, "Concurrency Control and
//!   Recovery in Database Systems" (serializable = conflict serializable).
//! - [Hermitage] M. Kleppmann, Hermitage (write skew is G2).
//! - [ROLA] Liu, Ölveczky et al., "ROLA: A New Distributed Transaction Protocol".
//! - [Zuikeviciute] Zuikeviciute, Pedone, "Correctness Criteria for Database
//!   Replication".
//! - [Elle] K. Kingsbury, P. Alvaro, "Elle: Inferring Isolation Anomalies
//!   from Experimental Observations", VLDB 2020, and its lattice, which adds
//!   the session (`-process`) and real-time variants and the `-item` cycles.
//!
//! Every rw edge this crate infers is an item anti-dependency (the workloads
//! have no predicate reads), so its cycles are named `G-single-item`,
//! `G-nonadjacent-item` and `G2-item`, as Elle names them; each implies its
//! predicate-free parent (`G-single`, `G-nonadjacent`, `G2`) below.

use std::collections::BTreeSet;

/// `(model, models it implies, source)`: a history satisfying the model
/// satisfies every model it implies.
pub const IMPLIES: &[(&str, &[&str], &str)] = &[
    ("causal-cerone", &["read-atomic"], "Cerone"),
    (
        "consistent-view",
        &["cursor-stability", "monotonic-view"],
        "Adya §4.2 (PL-2+ ⊂ PL-CS, PL-2L)",
    ),
    (
        "cursor-stability",
        &["read-committed"],
        "Adya §4.2 (PL-CS ⊂ PL-2); Bailis",
    ),
    (
        "forward-consistent-view",
        &["consistent-view"],
        "Adya §4.2 (PL-FCV ⊂ PL-2+)",
    ),
    (
        "read-committed",
        &["read-uncommitted"],
        "Adya §3.2 (PL-2 ⊂ PL-1); ANSI SQL",
    ),
    (
        "serializable",
        &[
            "repeatable-read",
            "update-serializable",
            "snapshot-isolation",
            "view-serializable",
        ],
        "Adya §4.1 (PL-3 ⊂ PL-2.99, PL-3U); Bailis, Cerone (SER ⊂ SI); Bernstein",
    ),
    (
        "update-serializable",
        &["forward-consistent-view"],
        "Adya §4.2 (PL-3U ⊂ PL-FCV)",
    ),
    (
        "monotonic-atomic-view",
        &["read-committed"],
        "Bailis §5.1.2",
    ),
    ("monotonic-view", &["read-committed"], "Adya §4.2 (PL-2L)"),
    (
        "monotonic-snapshot-read",
        &["read-committed"],
        "Adya §4.2 (PL-MSR)",
    ),
    (
        "parallel-snapshot-isolation",
        &["causal-cerone", "ROLA"],
        "Cerone; ROLA",
    ),
    ("prefix", &["causal-cerone"], "Cerone"),
    (
        "read-atomic",
        &["monotonic-atomic-view"],
        "Cerone (EXT gives atomic visibility; INT gives monotonicity within a txn)",
    ),
    ("read-uncommitted", &[], "Adya §3.2 (PL-1)"),
    (
        "repeatable-read",
        &["cursor-stability", "monotonic-atomic-view"],
        "Adya §4.1 (PL-2.99 ⊂ PL-CS); Bailis",
    ),
    ("ROLA", &["read-atomic"], "ROLA"),
    ("session-serializable", &["1SR"], "Zuikeviciute"),
    ("1SR", &[], "Zuikeviciute"),
    (
        "snapshot-isolation",
        &[
            "forward-consistent-view",
            "monotonic-atomic-view",
            "monotonic-snapshot-read",
            "parallel-snapshot-isolation",
            "prefix",
        ],
        "Adya §4.4 (PL-SI ⊂ PL-FCV, PL-MSR); Bailis; Cerone",
    ),
    (
        "strict-serializable",
        &[
            "serializable",
            "snapshot-isolation",
            "strong-snapshot-isolation",
            "strong-session-serializable",
            "session-serializable",
        ],
        "Adya §4.3 (PL-SS ⊂ PL-3, PL-SI); Bailis; Daudjee; Zuikeviciute (strong serializable)",
    ),
    (
        "strong-session-read-uncommitted",
        &["read-uncommitted"],
        "Elle (session variant of PL-1)",
    ),
    (
        "strong-session-read-committed",
        &["read-committed", "strong-session-read-uncommitted"],
        "Elle (session variant of PL-2)",
    ),
    (
        "strong-read-uncommitted",
        &["strong-session-read-uncommitted"],
        "Elle (real-time variant of PL-1)",
    ),
    (
        "strong-read-committed",
        &["strong-session-read-committed", "strong-read-uncommitted"],
        "Elle (real-time variant of PL-2)",
    ),
    (
        "strong-session-serializable",
        &["serializable", "strong-session-snapshot-isolation"],
        "Daudjee",
    ),
    (
        "strong-session-snapshot-isolation",
        &["snapshot-isolation", "strong-session-read-committed"],
        "Daudjee; Cerone-SI",
    ),
    (
        "strong-snapshot-isolation",
        &["strong-session-snapshot-isolation", "strong-read-committed"],
        "Daudjee",
    ),
    ("view-serializable", &[], "Bernstein"),
];

/// `(model, anomalies it proscribes beyond the models it implies, source)`.
pub const PROSCRIBES: &[(&str, &[&str], &str)] = &[
    ("causal-cerone", &["internal", "G1a"], "Cerone (incomplete)"),
    (
        "cursor-stability",
        &["G1", "G-cursor", "lost-update"],
        "Adya §4.2 (G-cursor); Bailis §3 (lost update)",
    ),
    ("monotonic-view", &["G1", "G-monotonic"], "Adya §4.2"),
    ("monotonic-snapshot-read", &["G1", "G-MSR"], "Adya §4.2"),
    (
        "consistent-view",
        &["G1", "G-single"],
        "Adya §4.2 (PL-2+ proscribes G-single)",
    ),
    (
        "forward-consistent-view",
        &["G1", "G-SIb"],
        "Adya §4.2 (PL-FCV proscribes G-SIb)",
    ),
    (
        "parallel-snapshot-isolation",
        &["internal", "G1a"],
        "Cerone (incomplete)",
    ),
    (
        "serializable",
        &["internal", "G1", "G2", "PL-3-cycle-exists"],
        "Adya §4.1 (PL-3 proscribes G1, G2); Cerone (INT)",
    ),
    (
        "read-committed",
        &["G1", "PL-2-cycle-exists"],
        "Adya §3.2 (PL-2 proscribes G1)",
    ),
    (
        "read-uncommitted",
        &[
            "G0",
            "duplicate-elements",
            "cyclic-versions",
            "garbage-read",
            "PL-1-cycle-exists",
        ],
        "Adya §3.2 (PL-1 proscribes G0); version orders are total and every read reads an installed version (Adya §3.1.1)",
    ),
    ("prefix", &["internal", "G1a"], "Cerone (incomplete)"),
    (
        "snapshot-isolation",
        &["internal", "G1", "G-SI", "G-nonadjacent"],
        "Adya §4.4 (G-SI); Cerone-SI (no cycle whose rw edges are all nonadjacent)",
    ),
    (
        "read-atomic",
        &["internal", "G1a", "future-read"],
        "Cerone §3 (INT, EXT)",
    ),
    (
        "repeatable-read",
        &["G1", "G2-item", "lost-update"],
        "Adya §4.1 (PL-2.99 proscribes G2-item); Bailis (lost update)",
    ),
    ("ROLA", &["lost-update"], "ROLA"),
    (
        "strict-serializable",
        &["G1", "G1c-realtime", "G2-realtime", "PL-SS-cycle-exists"],
        "Adya §4.3 (PL-SS adds real-time edges)",
    ),
    (
        "strong-session-read-uncommitted",
        &["G0-process", "strong-session-PL-1-cycle-exists"],
        "Elle",
    ),
    (
        "strong-session-read-committed",
        &["G1c-process", "strong-session-PL-2-cycle-exists"],
        "Elle",
    ),
    (
        "strong-read-uncommitted",
        &["G0-realtime", "strong-PL-1-cycle-exists"],
        "Elle",
    ),
    (
        "strong-read-committed",
        &["G1c-realtime", "strong-PL-2-cycle-exists"],
        "Elle",
    ),
    (
        "strong-session-snapshot-isolation",
        &["internal", "G1-process", "G-nonadjacent-process"],
        "Daudjee; Cerone-SI; Elle",
    ),
    (
        "strong-snapshot-isolation",
        &["internal", "G1-realtime", "G-nonadjacent-realtime"],
        "Daudjee; Elle",
    ),
    (
        "strong-session-serializable",
        &[
            "G1-process",
            "G2-process",
            "strong-session-serializable-cycle-exists",
        ],
        "Daudjee",
    ),
    ("update-serializable", &["G1", "G-update"], "Adya §4.2"),
];

/// `(anomaly, anomalies it is a special case of, source)`: finding the first
/// means the others are present too.
pub const ANOMALY_IMPLIES: &[(&str, &[&str], &str)] = &[
    (
        "G0",
        &["G1c", "G0-process"],
        "Adya §3.2 (a ww cycle is a dependency cycle); trivially a -process cycle",
    ),
    (
        "G0-process",
        &["G1c-process", "G0-realtime"],
        "Elle (processes are sequential)",
    ),
    ("G0-realtime", &["G1c-realtime"], "Elle"),
    ("G1a", &["G1"], "Adya §3.2 (G1 = G1a ∪ G1b ∪ G1c)"),
    ("G1b", &["G1"], "Adya §3.2"),
    ("G1c", &["G1", "G1c-process"], "Adya §3.2"),
    (
        "G1c-process",
        &["G1c-realtime", "G1-process"],
        "Elle (processes are sequential)",
    ),
    ("G1c-realtime", &["G1-realtime"], "Elle"),
    ("G1", &["G1-process"], "Elle (trivially)"),
    ("G1-process", &["G1-realtime"], "Elle"),
    (
        "G-single-item",
        &["G-single", "G-single-item-process", "G-nonadjacent-item"],
        "Elle (an item G-single; one rw edge is trivially nonadjacent)",
    ),
    (
        "G-single-item-process",
        &[
            "G-single-process",
            "G-single-item-realtime",
            "G-nonadjacent-item-process",
        ],
        "Elle",
    ),
    (
        "G-single-item-realtime",
        &["G-single-realtime", "G-nonadjacent-item-realtime"],
        "Elle",
    ),
    (
        "G-single",
        &["G-nonadjacent", "G-SIb", "G-single-process"],
        "Adya §4.4 (a G-single in the DSG is a G-SIb in the SSG); Elle",
    ),
    (
        "G-single-process",
        &["G-nonadjacent-process", "G-single-realtime"],
        "Elle",
    ),
    ("G-single-realtime", &["G-nonadjacent-realtime"], "Elle"),
    (
        "G-nonadjacent-item",
        &["G-nonadjacent", "G2-item", "G-nonadjacent-item-process"],
        "Elle (item rw edges only: a G2-item cycle)",
    ),
    (
        "G-nonadjacent-item-process",
        &[
            "G-nonadjacent-process",
            "G2-item-process",
            "G-nonadjacent-item-realtime",
        ],
        "Elle",
    ),
    (
        "G-nonadjacent-item-realtime",
        &["G2-item-realtime", "G-nonadjacent-realtime"],
        "Elle",
    ),
    (
        "G-nonadjacent",
        &["G2", "G-nonadjacent-process"],
        "Adya §4.1 (a cycle with rw edges is G2)",
    ),
    (
        "G-nonadjacent-process",
        &["G2-process", "G-nonadjacent-realtime"],
        "Elle",
    ),
    ("G-nonadjacent-realtime", &["G2-realtime"], "Elle"),
    ("G2", &["G2-process"], "Elle (trivially)"),
    (
        "G2-item",
        &["G2", "G2-item-process"],
        "Adya §4.1 (G2-item ⊂ G2)",
    ),
    (
        "G2-item-process",
        &["G2-process", "G2-item-realtime"],
        "Elle",
    ),
    ("G2-item-realtime", &["G2-realtime"], "Elle"),
    (
        "G2-process",
        &["G2-realtime"],
        "Elle (processes are sequential)",
    ),
    ("G-SIa", &["G-SI"], "Adya §4.4"),
    ("G-SIb", &["G-SI"], "Adya §4.4"),
    (
        "incompatible-order",
        &["G1a"],
        "Elle §5.1 (two read orders from no single timeline imply a dirty read)",
    ),
    (
        "future-read",
        &["G1c"],
        "Elle (a read of the txn's own later write is a trivial wr self-cycle)",
    ),
    (
        "dirty-update",
        &["G1a"],
        "Elle (a committed write over aborted state)",
    ),
    (
        "lost-update",
        &["write-skew", "G2-item"],
        "Bailis §3 (lost update is write skew on one key); Elle",
    ),
    ("write-skew", &["G2"], "Hermitage"),
];

/// Models whose whole proscribed cycle set is "any cycle over these edge
/// kinds" (Elle's `cycle-exists-specs` with plain unions): a strongly
/// connected component of that subgraph proves a forbidden cycle exists even
/// when no search named one. `(model, anomaly name, kinds)`; kinds are the
/// graph's bits (see `graph`).
pub(crate) const CYCLE_EXISTS: &[(&str, &str, u8)] = {
    use crate::graph::{PROCESS, REALTIME, RW, WR, WW};
    &[
        ("read-uncommitted", "PL-1-cycle-exists", WW),
        ("read-committed", "PL-2-cycle-exists", WW | WR),
        ("serializable", "PL-3-cycle-exists", WW | WR | RW),
        (
            "strong-session-read-uncommitted",
            "strong-session-PL-1-cycle-exists",
            WW | PROCESS,
        ),
        (
            "strong-session-read-committed",
            "strong-session-PL-2-cycle-exists",
            WW | WR | PROCESS,
        ),
        (
            "strong-session-serializable",
            "strong-session-serializable-cycle-exists",
            WW | WR | RW | PROCESS,
        ),
        (
            "strong-read-uncommitted",
            "strong-PL-1-cycle-exists",
            WW | PROCESS | REALTIME,
        ),
        (
            "strong-read-committed",
            "strong-PL-2-cycle-exists",
            WW | WR | PROCESS | REALTIME,
        ),
        (
            "strict-serializable",
            "PL-SS-cycle-exists",
            WW | WR | RW | PROCESS | REALTIME,
        ),
    ]
};

/// Anomalies that make a result unknown rather than invalid (Elle's
/// `unknown-anomaly-types`).
pub const UNKNOWN_ANOMALIES: &[&str] = &["empty-transaction-graph", "cycle-search-timeout"];

/// Every model name `--consistency-model` accepts.
pub fn all_models() -> Vec<&'static str> {
    IMPLIES.iter().map(|(m, _, _)| *m).collect()
}

/// Whether `m` names a known model.
pub fn is_model(m: &str) -> bool {
    IMPLIES.iter().any(|(x, _, _)| *x == canonical(m))
}

/// Alternative names (Adya's PL names, Elle's synonyms).
pub fn canonical(m: &str) -> &str {
    match m {
        "strong-serializable" | "PL-SS" => "strict-serializable",
        // Serializability means conflict serializability (Bernstein), as in Elle.
        "PL-3" | "conflict-serializable" => "serializable",
        "si" | "SI" | "PL-SI" => "snapshot-isolation",
        "PL-2.99" => "repeatable-read",
        "PL-2" => "read-committed",
        "PL-1" => "read-uncommitted",
        "PL-2+" => "consistent-view",
        "PL-2L" => "monotonic-view",
        "PL-MSR" => "monotonic-snapshot-read",
        "PL-FCV" => "forward-consistent-view",
        "PL-CS" => "cursor-stability",
        "PL-3U" => "update-serializable",
        "strong-session-PL-1" => "strong-session-read-uncommitted",
        "strong-session-PL-2" => "strong-session-read-committed",
        "strong-PL-1" => "strong-read-uncommitted",
        "strong-PL-2" => "strong-read-committed",
        other => other,
    }
}

fn implied_by(m: &str) -> &'static [&'static str] {
    IMPLIES
        .iter()
        .find(|(x, _, _)| *x == m)
        .map_or(&[], |(_, ys, _)| ys)
}

/// All models a model implies, itself included.
pub fn weaker_or_equal(m: &str) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<&'static str> = IMPLIES
        .iter()
        .filter(|(x, _, _)| *x == canonical(m))
        .map(|(x, _, _)| *x)
        .collect();
    while let Some(x) = todo.pop() {
        if out.insert(x) {
            todo.extend(implied_by(x));
        }
    }
    out
}

/// Every anomaly implied by the given ones, themselves included.
pub fn implied_anomalies<'a>(found: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = found.into_iter().map(String::from).collect();
    while let Some(a) = todo.pop() {
        if out.contains(&a) {
            continue;
        }
        if let Some((_, more, _)) = ANOMALY_IMPLIES.iter().find(|(x, _, _)| *x == a) {
            todo.extend(more.iter().map(|s| s.to_string()));
        }
        out.insert(a);
    }
    out
}

/// Every anomaly that implies one of the given ones, themselves included.
fn implying_anomalies(targets: BTreeSet<&str>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = targets.iter().map(|s| s.to_string()).collect();
    loop {
        let before = out.len();
        for (a, implies, _) in ANOMALY_IMPLIES {
            if !out.contains(*a) && implies.iter().any(|i| out.contains(*i)) {
                out.insert(a.to_string());
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// The anomalies that cannot appear in a history satisfying `model`: those
/// the model and every model it implies proscribe, and every anomaly that
/// implies one of them (Elle's `anomalies-prohibited-by`).
pub fn prohibited(model: &str) -> BTreeSet<String> {
    let direct: BTreeSet<&str> = weaker_or_equal(model)
        .into_iter()
        .flat_map(|m| {
            PROSCRIBES
                .iter()
                .filter(move |(pm, _, _)| *pm == m)
                .flat_map(|(_, anoms, _)| anoms.iter().copied())
        })
        .collect();
    implying_anomalies(direct)
}

/// The models the anomalies rule out: `not` holds the weakest of them,
/// `also_not` the stronger ones (which fall with them).
pub fn boundary<'a>(found: impl IntoIterator<Item = &'a str>) -> (Vec<String>, Vec<String>) {
    let anomalies = implied_anomalies(found);
    let impossible: BTreeSet<&str> = IMPLIES
        .iter()
        .map(|(m, _, _)| *m)
        .filter(|m| {
            weaker_or_equal(m).iter().any(|w| {
                PROSCRIBES
                    .iter()
                    .any(|(pm, anoms, _)| pm == w && anoms.iter().any(|a| anomalies.contains(*a)))
            })
        })
        .collect();
    let weakest: Vec<String> = impossible
        .iter()
        .filter(|m| {
            !impossible
                .iter()
                .any(|o| o != *m && weaker_or_equal(m).contains(o))
        })
        .map(|m| m.to_string())
        .collect();
    let rest = impossible
        .iter()
        .filter(|m| !weakest.iter().any(|w| w == *m))
        .map(|m| m.to_string())
        .collect();
    (weakest, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_skew_rules_out_repeatable_read_but_not_si() {
        let (not, also) = boundary(["G2-item"]);
        assert_eq!(not, vec!["repeatable-read"]);
        assert!(also.contains(&"serializable".to_string()));
        assert!(also.contains(&"strict-serializable".to_string()));
        assert!(!also.contains(&"snapshot-isolation".to_string()));
    }

    #[test]
    fn item_read_skew_rules_out_repeatable_read_and_consistent_view() {
        // Elle's repeatable-read tests: an item G-single is also G2-item.
        let (not, also) = boundary(["G-single-item"]);
        assert_eq!(not, vec!["consistent-view", "repeatable-read"]);
        assert!(also.contains(&"snapshot-isolation".to_string()));
        assert!(also.contains(&"serializable".to_string()));
        assert!(prohibited("repeatable-read").contains("G-single-item"));
        assert!(prohibited("repeatable-read").contains("G-nonadjacent-item"));
        assert!(!prohibited("repeatable-read").contains("G-nonadjacent"));
    }

    #[test]
    fn realtime_cycle_rules_out_only_strong_models() {
        let (not, also) = boundary(["G-single-item-realtime"]);
        assert_eq!(not, vec!["strong-snapshot-isolation"]);
        assert_eq!(also, vec!["strict-serializable"]);
        let (not, _) = boundary(["G2-item-realtime"]);
        assert_eq!(not, vec!["strict-serializable"]);
    }

    #[test]
    fn g0_rules_out_every_model_that_proscribes_anything() {
        let (not, also) = boundary(["G0"]);
        assert_eq!(not, vec!["read-uncommitted"]);
        // Only the models with nothing to proscribe survive.
        let survivors: Vec<&str> = all_models()
            .into_iter()
            .filter(|m| *m != "read-uncommitted" && !also.iter().any(|a| a == m))
            .collect();
        assert_eq!(
            survivors,
            vec!["session-serializable", "1SR", "view-serializable"]
        );
    }

    #[test]
    fn snapshot_isolation_allows_write_skew_and_forbids_nonadjacent_cycles() {
        let si = prohibited("snapshot-isolation");
        for a in [
            "G0",
            "G1a",
            "G1b",
            "G1c",
            "G-single-item",
            "G-nonadjacent-item",
        ] {
            assert!(si.contains(a), "{a}");
        }
        assert!(si.contains("lost-update"), "through cursor-stability");
        assert!(!si.contains("G2-item"));
        assert!(!si.contains("G-single-item-realtime"));
        let ser = prohibited("serializable");
        assert!(ser.contains("G2-item") && ser.contains("PL-3-cycle-exists"));
        assert!(!ser.contains("G2-item-process"));
        let strict = prohibited("strict-serializable");
        for v in ["", "-process", "-realtime"] {
            for c in [
                "G0",
                "G1c",
                "G-single-item",
                "G-nonadjacent-item",
                "G2-item",
            ] {
                assert!(strict.contains(&format!("{c}{v}")), "{c}{v}");
            }
        }
    }

    #[test]
    fn read_committed_allows_read_skew() {
        let rc = prohibited("read-committed");
        assert!(rc.contains("G1c") && rc.contains("G0") && rc.contains("G1b"));
        assert!(!rc.contains("G-single-item"));
        assert!(!rc.contains("lost-update"));
    }

    #[test]
    fn every_named_model_is_in_the_lattice() {
        for (m, ys, _) in IMPLIES {
            for y in *ys {
                assert!(is_model(y), "{m} implies unknown {y}");
            }
        }
        for (m, _, _) in PROSCRIBES {
            assert!(is_model(m), "{m}");
        }
        for (m, name, _) in CYCLE_EXISTS {
            assert!(is_model(m), "{m}");
            assert!(prohibited(m).contains(*name), "{m} must proscribe {name}");
        }
    }
}
