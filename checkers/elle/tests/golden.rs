//! One golden history per anomaly class, in shorthand (see `shorthand`).

use splitbrain_elle::{check_list_append, check_rw_register, cycle_dot, shorthand, ElleResult};
use splitbrain_history::{CheckOptions, CheckOutcome, Verdict};

fn opts(model: &str) -> CheckOptions {
    CheckOptions {
        consistency_model: Some(model.to_string()),
        ..CheckOptions::default()
    }
}

fn la(rounds: &[&str]) -> ElleResult {
    check_list_append(&shorthand::history(rounds), &opts("strict-serializable")).unwrap()
}

fn rw(rounds: &[&str]) -> ElleResult {
    check_rw_register(&shorthand::history(rounds), &opts("strict-serializable")).unwrap()
}

fn has(r: &ElleResult, class: &str) -> bool {
    r.anomaly_types.iter().any(|a| a == class)
}

fn assert_cycle(r: &ElleResult, class: &str, len: usize) {
    let c = r
        .cycles
        .iter()
        .find(|c| c.class == class)
        .unwrap_or_else(|| panic!("no {class} cycle in {:?}\n{}", r.anomaly_types, r.explain()));
    assert_eq!(c.txns.len(), len, "{}", c.explain());
    assert_eq!(c.steps.len(), len);
    assert_eq!(r.verdict, Verdict::Invalid);
}

#[test]
fn valid_history_is_valid_under_every_model() {
    let h = shorthand::history(&["a1:1", "r1:[1] a2:1", "r2:[1] r1:[1]"]);
    for m in splitbrain_elle::models::all_models() {
        let r = check_list_append(&h, &opts(m)).unwrap();
        assert_eq!(r.verdict, Verdict::Valid, "{m}: {}", r.explain());
        assert!(r.anomaly_types.is_empty());
    }
}

#[test]
fn g0_write_cycle() {
    let r = la(&["a1:1 a2:1 | a1:2 a2:2", "r1:[1 2] r2:[2 1]"]);
    assert_cycle(&r, "G0", 2);
    assert_eq!(r.not, vec!["read-uncommitted"]);
    let text = r.explain();
    assert!(
        text.contains("Let:") && text.contains("a contradiction!"),
        "{text}"
    );
    assert!(text.contains("appended 2 to key 1 after T"), "{text}");
}

#[test]
fn g1c_circular_information_flow() {
    let r = la(&["a1:1 r2:[1] | a2:1 r1:[1]"]);
    assert_cycle(&r, "G1c", 2);
    assert!(!has(&r, "G0"));
    assert!(r.explain().contains("read T"), "{}", r.explain());
    assert_eq!(r.not, vec!["read-committed"]);
}

#[test]
fn g_single_read_skew() {
    let r = la(&["r1:nil r2:[1] | a1:1 a2:1", "r1:[1]"]);
    assert_cycle(&r, "G-single-item", 2);
    let c = &r.cycles[0];
    let reasons: Vec<&str> = c.steps.iter().map(|s| s.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|s| s.contains("did not see")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|s| s.contains("'s append of 1 to key 2")),
        "{reasons:?}"
    );
    assert!(
        r.not.contains(&"consistent-view".to_string()),
        "{:?}",
        r.not
    );
    assert!(r.also_not.contains(&"snapshot-isolation".to_string()));
}

#[test]
fn g_nonadjacent() {
    let r = la(&[
        "r1:nil r4:[1] | a1:1 a2:1 | r2:[1] r3:nil | a3:1 a4:1",
        "r1:[1] r3:[1]",
    ]);
    assert_cycle(&r, "G-nonadjacent-item", 4);
    assert!(!has(&r, "G-single-item") && !has(&r, "G1c") && !has(&r, "G0"));
    let kinds: Vec<&str> = r.cycles[0].steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "rw").count(), 2, "{kinds:?}");
    // Snapshot isolation forbids it (Cerone & Gotsman); repeatable read does not by itself.
    let si = check_list_append(
        &shorthand::history(&[
            "r1:nil r4:[1] | a1:1 a2:1 | r2:[1] r3:nil | a3:1 a4:1",
            "r1:[1] r3:[1]",
        ]),
        &opts("snapshot-isolation"),
    )
    .unwrap();
    assert_eq!(si.verdict, Verdict::Invalid);
}

#[test]
fn g2_item_write_skew() {
    let r = la(&["r1:nil a2:1 | r2:nil a1:1", "r1:[1] r2:[1]"]);
    assert_cycle(&r, "G2-item", 2);
    assert!(!has(&r, "G-single-item") && !has(&r, "G-nonadjacent-item"));
    assert_eq!(r.not, vec!["repeatable-read"]);
    assert!(!r.also_not.contains(&"snapshot-isolation".to_string()));
    let si = check_list_append(
        &shorthand::history(&["r1:nil a2:1 | r2:nil a1:1", "r1:[1] r2:[1]"]),
        &opts("snapshot-isolation"),
    )
    .unwrap();
    assert_eq!(si.verdict, Verdict::Valid);
}

#[test]
fn g_single_process() {
    let r = la_under(
        &["p1 a1:1", "p1 r1:nil", "r1:[1]"],
        "strong-session-snapshot-isolation",
    );
    assert_cycle(&r, "G-single-item-process", 2);
    assert!(
        r.explain().contains("process 1 executed T"),
        "{}",
        r.explain()
    );
    let ser = check_list_append(
        &shorthand::history(&["p1 a1:1", "p1 r1:nil", "r1:[1]"]),
        &opts("serializable"),
    )
    .unwrap();
    assert_eq!(ser.verdict, Verdict::Valid);
}

#[test]
fn g_single_realtime() {
    let r = la(&["p1 a1:1", "p2 r1:nil", "r1:[1]"]);
    assert_cycle(&r, "G-single-item-realtime", 2);
    assert!(
        r.explain().contains("completed (op 1) before T"),
        "{}",
        r.explain()
    );
    assert_eq!(r.not, vec!["strong-snapshot-isolation"]);
    assert_eq!(r.also_not, vec!["strict-serializable"]);
}

#[test]
fn g0_realtime_and_g1c_process() {
    // T1 appends after T2 in key 1's order, yet T1 finished before T2 began.
    let r = la(&["p1 a1:2", "p2 a1:1", "r1:[1 2]"]);
    assert_cycle(&r, "G0-realtime", 2);
    // Under a real-time model the process order is real-time order, as in Elle.
    let r = la(&["p1 r1:[1]", "p1 a1:1"]);
    assert_eq!(r.anomaly_types, vec!["G1c-realtime".to_string()]);
    let r = la_under(&["p1 r1:[1]", "p1 a1:1"], "strong-session-read-committed");
    assert_eq!(r.anomaly_types, vec!["G1c-process".to_string()]);
}

#[test]
fn g1a_aborted_read() {
    let r = la(&["fail a1:1", "r1:[1]"]);
    assert!(has(&r, "G1a"), "{:?}", r.anomaly_types);
    assert_eq!(r.not, vec!["read-committed"]);
    assert_eq!(r.anomalies[0].txns.len(), 2);
}

#[test]
fn g1b_intermediate_read() {
    let r = la(&["a1:1 a1:2 | r1:[1]", "r1:[1 2]"]);
    assert!(has(&r, "G1b"), "{:?}", r.anomaly_types);
    // As in Elle, the reader also precedes the writer's own later append: a G-single-item.
    assert!(
        r.cycles.iter().all(|c| c.class == "G-single-item"),
        "{}",
        r.explain()
    );
}

#[test]
fn internal_inconsistency() {
    let r = la(&["r1:nil a1:1 r1:nil"]);
    assert!(has(&r, "internal"), "{:?}", r.anomaly_types);
    assert!(r.not.contains(&"read-atomic".to_string()), "{:?}", r.not);
    let r = rw(&["w1:1 r1:2", "w1:2"]);
    assert!(has(&r, "internal"), "{:?}", r.anomaly_types);
}

#[test]
fn dirty_update() {
    let r = la(&["fail a1:1", "a1:2", "r1:[1 2]"]);
    assert!(has(&r, "dirty-update"), "{:?}", r.anomaly_types);
}

#[test]
fn lost_update() {
    let r = la(&["r1:nil a1:1 | r1:nil a1:2", "r1:[1 2]"]);
    assert!(has(&r, "lost-update"), "{:?}", r.anomaly_types);
    assert!(has(&r, "G-single-item"), "{:?}", r.anomaly_types);
    assert!(
        r.not.contains(&"cursor-stability".to_string())
            || r.not.contains(&"read-committed".to_string())
            || r.also_not.contains(&"cursor-stability".to_string())
    );
    let r = rw(&["r1:nil w1:1 | r1:nil w1:2"]);
    assert!(has(&r, "lost-update"), "{:?}", r.anomaly_types);
}

#[test]
fn duplicate_elements() {
    let r = la(&["a1:1", "r1:[1 1]"]);
    assert!(has(&r, "duplicate-elements"), "{:?}", r.anomaly_types);
    assert_eq!(r.not, vec!["read-uncommitted"]);
}

#[test]
fn incompatible_order() {
    let r = la(&["a1:1 | a1:2", "r1:[1 2]", "r1:[2 1]"]);
    assert!(has(&r, "incompatible-order"), "{:?}", r.anomaly_types);
}

#[test]
fn cyclic_versions() {
    let r = rw(&["r1:1 w1:2 | r1:2 w1:1"]);
    assert!(has(&r, "cyclic-versions"), "{:?}", r.anomaly_types);
    // The ww cycle implies the G1c one, which Elle then does not search for.
    assert!(has(&r, "G0") && !has(&r, "G1c"), "{:?}", r.anomaly_types);
}

#[test]
fn future_read() {
    let r = la(&["r1:[1] a1:1"]);
    assert!(has(&r, "future-read"), "{:?}", r.anomaly_types);
    let r = rw(&["r1:1 w1:1"]);
    assert!(has(&r, "future-read"), "{:?}", r.anomaly_types);
}

#[test]
fn garbage_read() {
    let r = la(&["a1:1", "r1:[1 9]"]);
    assert!(has(&r, "garbage-read"), "{:?}", r.anomaly_types);
    let r = rw(&["r1:9"]);
    assert!(has(&r, "garbage-read"), "{:?}", r.anomaly_types);
}

#[test]
fn rw_register_cycles() {
    // Read skew over registers: the initial state precedes every write.
    let r = rw(&["r1:nil r2:1 | w1:1 w2:1"]);
    assert_cycle(&r, "G-single-item", 2);
    assert!(
        r.cycles[0]
            .steps
            .iter()
            .any(|s| s.reason.contains("the initial state")),
        "{}",
        r.explain()
    );
    let r = rw(&["r1:nil w2:1 | r2:nil w1:1"]);
    assert_cycle(&r, "G2-item", 2);
    let r = rw(&["fail w1:1", "r1:1"]);
    assert!(has(&r, "G1a"));
    let r = rw(&["w1:1 w1:2 | r1:1"]);
    assert!(has(&r, "G1b"));
}

#[test]
fn dot_output_names_every_step() {
    let r = la(&["r1:nil a2:1 | r2:nil a1:1", "r1:[1] r2:[1]"]);
    let dot = cycle_dot(&r.cycles[0]);
    assert!(dot.starts_with("digraph \"G2-item\""), "{dot}");
    assert_eq!(dot.matches("->").count(), 2);
    assert!(dot.contains("rw: "), "{dot}");
    let files = splitbrain_elle::cycle_dots(&r);
    assert_eq!(files[0].0, "G2-item-1.dot");
}

#[test]
fn bad_ops_name_the_problem() {
    let h = shorthand::history(&["w1:1"]);
    let e = check_list_append(&h, &opts("serializable")).unwrap_err();
    assert!(e.to_string().contains("write in a list-append"), "{e}");
    let h = shorthand::history(&["a1:1", "a1:1"]);
    let e = check_list_append(&h, &opts("serializable")).unwrap_err();
    match e {
        splitbrain_history::CheckError::BadOp { position, problem } => {
            assert_eq!(position, 3);
            assert!(problem.contains("unique"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    let e = check_list_append(&shorthand::history(&["a1:1"]), &opts("bogus")).unwrap_err();
    assert!(e.to_string().contains("unknown consistency model"));
}

#[test]
fn report_serializes() {
    let r = la(&["r1:nil a2:1 | r2:nil a1:1", "r1:[1] r2:[1]"]);
    let report = splitbrain_history::CheckReport::from_outcome("list-append", &r);
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.result["cycles"][0]["steps"][0]["kind"], "rw");
    assert_eq!(report.anomaly_types, r.anomaly_types);
}

#[test]
fn writes_follow_reads_can_be_turned_off() {
    let h = shorthand::history(&["r1:1 w1:2 | r1:2 w1:1"]);
    let mut o = opts("serializable");
    o.params.insert("wfr-keys".into(), "false".into());
    let r = check_rw_register(&h, &o).unwrap();
    assert!(!has(&r, "cyclic-versions"), "{:?}", r.anomaly_types);
    assert!(has(&r, "G1c"), "{:?}", r.anomaly_types);
    o.params.insert("wfr-keys".into(), "maybe".into());
    assert!(check_rw_register(&h, &o).is_err());
}

#[test]
fn realtime_edges_are_a_transitive_reduction() {
    // Sequential txns: only T1 -> T2 -> T3, not T1 -> T3.
    let r = la(&["a1:1", "a2:1", "a3:1"]);
    assert_eq!(r.graph.edges, 2);
    // Two concurrent txns both precede the third; neither precedes the other.
    let r = la(&["a1:1 | a2:1", "a3:1"]);
    assert_eq!(r.graph.edges, 2);
    // A long run of sequential txns stays linear.
    let rounds: Vec<String> = (0..50).map(|i| format!("a{i}:1")).collect();
    let rounds: Vec<&str> = rounds.iter().map(String::as_str).collect();
    assert_eq!(la(&rounds).graph.edges, 49);
}

#[test]
fn key_order_sources_for_registers() {
    let with = |rounds: &[&str], param: &str| {
        let mut o = opts("strict-serializable");
        o.params.insert(param.into(), "true".into());
        check_rw_register(&shorthand::history(rounds), &o).unwrap()
    };
    // A stale read after two writes in real time: invisible without key order.
    let rounds = ["p1 w1:1", "p2 w1:2", "p3 r1:1"];
    assert_eq!(rw(&rounds).verdict, Verdict::Valid);
    let r = with(&rounds, "linearizable-keys");
    assert!(has(&r, "cyclic-versions"), "{:?}", r.anomaly_types);
    assert_eq!(r.verdict, Verdict::Invalid);
    // Process order alone sees it only within one process.
    assert!(!has(&with(&rounds, "sequential-keys"), "cyclic-versions"));
    let r = with(&["p1 w1:1", "p1 w1:2", "p1 r1:1"], "sequential-keys");
    assert!(has(&r, "cyclic-versions"), "{:?}", r.anomaly_types);
    // With the order known, a later reader of the older version missed the newer write.
    let r = with(
        &["p1 w1:1", "p2 w1:2", "p3 r1:1 w2:1", "p4 r2:1 r1:2"],
        "linearizable-keys",
    );
    assert!(r.verdict == Verdict::Invalid, "{}", r.explain());
    // Strict-serializable simulations stay valid under both assumptions.
    let h = splitbrain_history::History::from_ops(splitbrain_elle::sim::generate(
        &splitbrain_elle::sim::SimOptions {
            workload: splitbrain_elle::sim::SimWorkload::RwRegister,
            txns: 2000,
            keys: 5,
            seed: 11,
            ..Default::default()
        },
    ))
    .unwrap();
    for param in ["linearizable-keys", "sequential-keys"] {
        let mut o = opts("strict-serializable");
        o.params.insert(param.into(), "true".into());
        let r = check_rw_register(&h, &o).unwrap();
        assert_eq!(r.verdict, Verdict::Valid, "{param}: {}", r.explain());
    }
}

fn la_under(rounds: &[&str], model: &str) -> ElleResult {
    check_list_append(&shorthand::history(rounds), &opts(model)).unwrap()
}

/// The reasons of the first cycle of the given class.
fn reasons_of(r: &ElleResult, class: &str) -> Vec<String> {
    r.cycles
        .iter()
        .find(|c| c.class == class)
        .map(|c| c.steps.iter().map(|s| s.reason.clone()).collect())
        .unwrap_or_default()
}

/// The rule for unread appends, as its explanations cite it.
const RULE: &str = "was never read; every read of";

#[test]
fn write_skew_with_no_final_reads() {
    // Each txn reads the key the other appends to; nobody reads afterwards.
    let h = ["r1:[] a2:1 | r2:[] a1:1"];
    let r = la_under(&h, "serializable");
    assert_cycle(&r, "G2-item", 2);
    assert_eq!(r.anomaly_types, vec!["G2-item".to_string()]);
    let why = reasons_of(&r, "G2-item");
    assert!(why.iter().all(|s| s.contains(RULE)), "{why:?}");
    assert!(
        why.iter()
            .any(|s| s.contains("follows the initial empty list")),
        "{why:?}"
    );
    assert_eq!(la_under(&h, "snapshot-isolation").verdict, Verdict::Valid);
    assert_eq!(la_under(&h, "repeatable-read").verdict, Verdict::Invalid);
}

#[test]
fn g0_through_unread_appends() {
    // The read fixes 1 as the first element of both keys; each txn's other
    // append was never read, so it follows the other txn's: a ww cycle.
    let r = la(&["a1:1 a2:2 | a1:2 a2:1", "r1:[1] r2:[1]"]);
    assert_cycle(&r, "G0", 2);
    assert_eq!(r.not, vec!["read-uncommitted"]);
    let why = reasons_of(&r, "G0");
    assert!(why.iter().all(|s| s.contains(RULE)), "{why:?}");
    assert!(
        why.iter().any(|s| s.contains("so 2 follows 1, which T")),
        "{why:?}"
    );
}

#[test]
fn read_skew_through_an_unread_append_rules_out_repeatable_read() {
    // T2 saw T1's append to key 2 but not its append to key 1, which nobody read.
    let h = ["a1:1 a2:1", "r1:[] r2:[1]"];
    for model in ["repeatable-read", "consistent-view", "snapshot-isolation"] {
        let r = la_under(&h, model);
        assert_cycle(&r, "G-single-item", 2);
        assert_eq!(
            r.anomaly_types,
            vec!["G-single-item".to_string()],
            "{model}"
        );
        assert!(
            r.not.contains(&"repeatable-read".to_string()),
            "{:?}",
            r.not
        );
        let why = reasons_of(&r, "G-single-item");
        assert!(why.iter().any(|s| s.contains(RULE)), "{why:?}");
    }
    assert_eq!(la_under(&h, "read-committed").verdict, Verdict::Valid);
}

#[test]
fn g_nonadjacent_through_unread_appends() {
    // Four txns, two rw edges separated by wr edges; the rw edges point at appends nobody read.
    let h = [
        "a1:1 | a3:1",
        "r1:[1] a2:1 | r3:[1] a4:1",
        "r2:[1] r3:[] | r4:[1] r1:[]",
    ];
    let r = la_under(&h, "snapshot-isolation");
    assert_eq!(r.verdict, Verdict::Invalid, "{}", r.explain());
    assert!(
        r.anomaly_types.iter().any(|a| a.starts_with("G-")),
        "{:?}",
        r.anomaly_types
    );
}

#[test]
fn nothing_to_check_is_unknown() {
    // One txn, no dependencies: Elle's empty-transaction-graph.
    let r = la(&["a1:1 r2:[]"]);
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.explain());
    assert_eq!(r.anomaly_types, vec!["empty-transaction-graph".to_string()]);
    let r = la(&["fail a1:1"]);
    assert_eq!(r.verdict, Verdict::Unknown);
}

#[test]
fn anomalies_the_model_allows_are_not_reported_as_its_violations() {
    // A lost update is allowed under read committed: listed apart, verdict valid.
    let r = la_under(&["r1:[] a1:1 | r1:[] a1:2", "r1:[1 2]"], "read-committed");
    assert_eq!(r.verdict, Verdict::Valid, "{}", r.explain());
    assert!(r.anomaly_types.is_empty(), "{:?}", r.anomaly_types);
    assert!(r.allowed_anomaly_types.contains(&"lost-update".to_string()));
}

#[test]
fn a_fuzzy_read_within_one_txn_rules_out_repeatable_read() {
    // elle-cli's partial-read-twice: the txn reads [1], T2's append of 2
    // commits, the txn reads [1 2]. Its second read orders it too.
    let h = ["a1:1", "a1:2 | r1:[1] r1:[1 2]"];
    for model in ["repeatable-read", "consistent-view", "strict-serializable"] {
        let r = la_under(&h, model);
        assert_eq!(r.verdict, Verdict::Invalid, "{model}: {}", r.explain());
        assert!(has(&r, "G-single-item"), "{model}: {:?}", r.anomaly_types);
    }
    let r = la_under(&h, "strict-serializable");
    assert!(has(&r, "internal"), "{:?}", r.anomaly_types);
    assert_eq!(
        r.not,
        vec!["consistent-view", "read-atomic", "repeatable-read"],
        "as Elle has it"
    );
}

#[test]
fn under_real_time_models_session_order_is_real_time_order() {
    // As in Elle, a model that forbids real-time cycles needs no process
    // edges: a process's own order shows up as real time.
    let r = la(&["p1 a1:1", "p1 r1:nil", "r1:[1]"]);
    assert!(has(&r, "G-single-item-realtime"), "{:?}", r.anomaly_types);
    assert!(!has(&r, "G-single-item-process"), "{:?}", r.anomaly_types);
    let r = la_under(
        &["p1 a1:1", "p1 r1:nil", "r1:[1]"],
        "strong-session-serializable",
    );
    assert_eq!(r.anomaly_types, vec!["G-single-item-process".to_string()]);
}

#[test]
fn a_huge_real_time_component_cannot_make_weaker_models_unknown() {
    // 10,254 sequential appends whose one read lists them in reverse: a single
    // component closed only by real-time edges. Models that do not forbid
    // real-time cycles search nothing there and stay decided.
    let h =
        splitbrain_history::History::from_ops(splitbrain_elle::sim::reverse_chain(10_254)).unwrap();
    for model in [
        "serializable",
        "snapshot-isolation",
        "repeatable-read",
        "read-committed",
    ] {
        let r = check_list_append(&h, &opts(model)).unwrap();
        assert_eq!(r.verdict, Verdict::Valid, "{model}: {}", r.explain());
        assert!(r.cut_short.is_none(), "{model}");
        assert_eq!(r.graph.components, 0, "{model}: nothing to search");
    }
    let strict = check_list_append(&h, &opts("strict-serializable")).unwrap();
    assert_eq!(strict.verdict, Verdict::Invalid);
    assert!(has(&strict, "G0-realtime"), "{:?}", strict.anomaly_types);
}
