//! Consistency models, which anomalies each one proscribes, and how they
//! imply each other. Sources, cited per row:
//!
//! - [Adya] A. Adya, "Weak Consistency: A Generalized Theory and Optimistic
//!   Implementations for Distributed Transactions", MIT PhD thesis, 1999.
//! - [Cerone] A. Cerone, G. Bernardi, A. Gotsman, "A Framework for
//!   Transactional Consistency Models with Atomic Visibility", CONCUR 2015.
//! - [Elle] K. Kingsbury, P. Alvaro, "Elle: Inferring Isolation Anomalies
//!   from Experimental Observations", VLDB 2020 (and its consistency-model table).
//! - [Jepsen] https://jepsen.io/consistency (model pages and the map of models).
//! - [Bailis] P. Bailis et al., "Highly Available Transactions", VLDB 2014.
//! - [Daudjee] K. Daudjee, K. Salem, "Lazy Database Replication with
//!   Snapshot Isolation", VLDB 2006 (strong session / strong SI).

use std::collections::BTreeSet;

/// `(model, models it implies, source)`: a history satisfying the model
/// satisfies every model it implies.
pub const IMPLIES: &[(&str, &[&str], &str)] = &[
    (
        "strict-serializable",
        &[
            "serializable",
            "strong-session-serializable",
            "strong-snapshot-isolation",
        ],
        "Adya §4.3 (PL-SS); Bailis Fig. 2",
    ),
    (
        "strong-session-serializable",
        &["serializable", "strong-session-snapshot-isolation"],
        "Daudjee; Elle",
    ),
    (
        "serializable",
        &[
            "repeatable-read",
            "snapshot-isolation",
            "update-serializable",
        ],
        "Adya §4.1 (PL-3 ⊂ PL-2.99); Bailis Fig. 2; Cerone §4 (SER ⊂ SI)",
    ),
    (
        "update-serializable",
        &["forward-consistent-view"],
        "Adya §4.2 (PL-3U)",
    ),
    (
        "strong-snapshot-isolation",
        &["strong-session-snapshot-isolation", "strong-read-committed"],
        "Daudjee",
    ),
    (
        "strong-session-snapshot-isolation",
        &["snapshot-isolation", "strong-session-read-committed"],
        "Daudjee; Elle",
    ),
    (
        "snapshot-isolation",
        &[
            "forward-consistent-view",
            "monotonic-atomic-view",
            "read-atomic",
        ],
        "Adya §4.4 (PL-SI ⊂ PL-FCV); Cerone §4 (SI ⊂ RA); Bailis",
    ),
    (
        "forward-consistent-view",
        &["consistent-view"],
        "Adya §4.2 (PL-FCV ⊂ PL-2+)",
    ),
    (
        "consistent-view",
        &["cursor-stability"],
        "Adya §4.2 (PL-2+ ⊂ PL-CS)",
    ),
    (
        "repeatable-read",
        &["cursor-stability", "monotonic-atomic-view"],
        "Adya §4.1 (PL-2.99 ⊂ PL-CS); Bailis",
    ),
    (
        "cursor-stability",
        &["read-committed"],
        "Adya §4.2 (PL-CS ⊂ PL-2); Bailis",
    ),
    ("read-atomic", &["monotonic-atomic-view"], "Cerone §4 (RA)"),
    (
        "monotonic-atomic-view",
        &["read-committed"],
        "Bailis §5.1.2",
    ),
    (
        "strong-read-committed",
        &["strong-session-read-committed", "strong-read-uncommitted"],
        "Elle",
    ),
    (
        "strong-session-read-committed",
        &["read-committed", "strong-session-read-uncommitted"],
        "Elle",
    ),
    (
        "strong-read-uncommitted",
        &["strong-session-read-uncommitted"],
        "Elle",
    ),
    (
        "strong-session-read-uncommitted",
        &["read-uncommitted"],
        "Elle",
    ),
    (
        "read-committed",
        &["read-uncommitted"],
        "Adya §3.2 (PL-2 ⊂ PL-1); ANSI SQL",
    ),
    ("read-uncommitted", &[], "Adya §3.2 (PL-1)"),
];

/// `(model, anomalies it proscribes beyond the models it implies, source)`.
pub const PROSCRIBES: &[(&str, &[&str], &str)] = &[
    ("read-uncommitted", &["G0", "duplicate-elements", "cyclic-versions", "garbage-read"], "Adya §3.2 (PL-1 proscribes G0); version orders are total and every read reads an installed version (Adya §3.1.1)"),
    ("read-committed", &["G1"], "Adya §3.2 (PL-2 proscribes G1)"),
    ("cursor-stability", &["lost-update"], "Adya §4.2 (G-cursor); Bailis §3"),
    ("consistent-view", &["G-single"], "Adya §4.2 (PL-2+ proscribes G-single)"),
    ("monotonic-atomic-view", &["G1"], "Bailis §5.1.2"),
    ("read-atomic", &["internal", "G1a", "future-read"], "Cerone §3 (INT, EXT)"),
    ("repeatable-read", &["G2-item", "lost-update"], "Adya §4.1 (PL-2.99 proscribes G2-item); Bailis"),
    ("snapshot-isolation", &["internal", "G-nonadjacent"], "Cerone §4 and Cerone & Gotsman PODC 2016 (no cycle whose rw edges are all nonadjacent); Adya §4.4 (G-SI)"),
    ("serializable", &["internal", "G2"], "Adya §4.1 (PL-3 proscribes G2); Cerone §4"),
    ("strong-session-read-uncommitted", &["G0-process"], "Elle (session variant of PL-1)"),
    ("strong-session-read-committed", &["G1c-process"], "Elle (session variant of PL-2)"),
    ("strong-read-uncommitted", &["G0-realtime"], "Elle (real-time variant of PL-1)"),
    ("strong-read-committed", &["G1c-realtime"], "Elle (real-time variant of PL-2)"),
    ("strong-session-snapshot-isolation", &["G-nonadjacent-process"], "Daudjee; Elle"),
    ("strong-snapshot-isolation", &["G-nonadjacent-realtime"], "Daudjee; Elle"),
    ("strong-session-serializable", &["G2-process"], "Daudjee; Elle"),
    ("strict-serializable", &["G1c-realtime", "G2-realtime"], "Adya §4.3 (PL-SS adds real-time edges); Jepsen strict-serializable"),
];

/// `(anomaly, anomalies it is a special case of, source)`: finding the first
/// means the others are present too.
pub const ANOMALY_IMPLIES: &[(&str, &[&str], &str)] = &[
    (
        "G0",
        &["G1c", "G0-process"],
        "Adya §3.2 (a ww cycle is a dependency cycle)",
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
    ("G1c-process", &["G1c-realtime"], "Elle"),
    (
        "G-single",
        &["G-nonadjacent", "G-single-process"],
        "Elle (one rw edge is trivially nonadjacent)",
    ),
    (
        "G-single-process",
        &["G-nonadjacent-process", "G-single-realtime"],
        "Elle",
    ),
    ("G-single-realtime", &["G-nonadjacent-realtime"], "Elle"),
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
    ("G2", &["G2-process"], "Elle"),
    ("G2-process", &["G2-realtime"], "Elle"),
    (
        "incompatible-order",
        &["G1a"],
        "Elle §5.1 (two read orders from no single timeline imply a dirty read)",
    ),
    (
        "dirty-update",
        &["G1a"],
        "Elle (a write over aborted state)",
    ),
    ("future-read", &["G1c"], "Elle (a trivial wr self-cycle)"),
    (
        "lost-update",
        &["G2-item"],
        "Elle; Bailis §3 (lost update is write skew on one key)",
    ),
];

/// Every model name `--consistency-model` accepts.
pub fn all_models() -> Vec<&'static str> {
    IMPLIES.iter().map(|(m, _, _)| *m).collect()
}

/// Whether `m` names a known model.
pub fn is_model(m: &str) -> bool {
    IMPLIES.iter().any(|(x, _, _)| *x == canonical(m))
}

/// Common alternative names.
pub fn canonical(m: &str) -> &str {
    match m {
        "strong-serializable" | "strict-1SR" => "strict-serializable",
        "PL-3" | "conflict-serializable" | "1SR" => "serializable",
        "si" | "SI" | "PL-SI" => "snapshot-isolation",
        "PL-2.99" => "repeatable-read",
        "PL-2" => "read-committed",
        "PL-1" => "read-uncommitted",
        "PL-2+" => "consistent-view",
        "PL-FCV" => "forward-consistent-view",
        "PL-CS" => "cursor-stability",
        "PL-3U" => "update-serializable",
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
        if let Some((_, more, _)) = ANOMALY_IMPLIES.iter().find(|(x, _, _)| *x == a) {
            todo.extend(more.iter().map(|s| s.to_string()));
        }
        out.insert(a);
    }
    out
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
    fn write_skew_rules_out_serializable_but_not_si() {
        let (not, also) = boundary(["G2-item"]);
        assert_eq!(not, vec!["repeatable-read"]);
        assert!(also.contains(&"serializable".to_string()));
        assert!(also.contains(&"strict-serializable".to_string()));
        assert!(!also.contains(&"snapshot-isolation".to_string()));
    }

    #[test]
    fn realtime_cycle_rules_out_only_strict_models() {
        let (not, also) = boundary(["G-single-realtime"]);
        assert_eq!(not, vec!["strong-snapshot-isolation"]);
        assert_eq!(also, vec!["strict-serializable"]);
    }

    #[test]
    fn g0_rules_out_everything() {
        let (not, also) = boundary(["G0"]);
        assert_eq!(not, vec!["read-uncommitted"]);
        assert_eq!(also.len(), IMPLIES.len() - 1);
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
    }
}
