//! Hand-written ok and bad histories for every checker, with exact expected results.

mod support;

use splitbrain_basic::common::{fault_windows, Elements, Quantiles};
use splitbrain_basic::session::SessionAnomaly;
use splitbrain_basic::*;
use splitbrain_history::{CheckError, CheckOptions, CheckReport, CheckerDef, Value, Verdict};
use support::{list, set, v, B};

fn opts() -> CheckOptions {
    CheckOptions::default()
}

fn with(params: &[(&str, &str)]) -> CheckOptions {
    let mut o = CheckOptions::default();
    for (k, val) in params {
        o.params.insert(k.to_string(), val.to_string());
    }
    o
}

fn elems(ints: &[i64]) -> Elements {
    Elements::from_values(
        ints.iter()
            .map(|&i| Value::Int(i))
            .collect::<Vec<_>>()
            .iter(),
    )
}

fn one(x: f64) -> Option<Quantiles> {
    Quantiles::of(&mut [x])
}

#[test]
fn set_ok() {
    let h = B::new()
        .call(0, "add", v(1), v(1))
        .invoke(1, "add", v(2))
        .info(1, "add", v(2))
        .invoke(2, "add", v(3))
        .fail(2, "add", v(3))
        .call(3, "read", Value::Nil, set(&[1, 2]))
        .history();
    let r = check_set(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(
        (
            r.attempt_count,
            r.acknowledged_count,
            r.ok_count,
            r.lost_count,
            r.unexpected_count,
            r.recovered_count
        ),
        (2, 1, 2, 0, 0, 1)
    );
    assert_eq!(r.groups[0].recovered, elems(&[2]));
    assert_eq!(r.groups[0].final_read, Some(7));
}

#[test]
fn set_lost_and_unexpected() {
    let h = B::new()
        .call(0, "add", v(1), v(1))
        .call(0, "add", v(2), v(2))
        .invoke(0, "add", v(3))
        .fail(0, "add", v(3))
        .call(1, "read", Value::Nil, set(&[1, 3, 4]))
        .history();
    let r = check_set(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    let g = &r.groups[0];
    assert_eq!(g.lost, elems(&[2]));
    assert_eq!(g.unexpected.ranges, vec![(3, 4)]);
    assert_eq!(g.ok, elems(&[1]));
    let report = CheckReport::from_outcome("set", &r);
    assert_eq!(report.anomaly_types, vec!["lost", "unexpected"]);
    assert!(
        report
            .explanation
            .contains("lost (acknowledged, absent from read at op 7): #{2}"),
        "{}",
        report.explanation
    );
}

#[test]
fn set_without_read_is_unknown() {
    let h = B::new().call(0, "add", v(1), v(1)).history();
    assert_eq!(check_set(&h, &opts()).unwrap().verdict, Verdict::Unknown);
}

#[test]
fn set_rejects_non_set_read() {
    let h = B::new()
        .call(0, "add", v(1), v(1))
        .call(1, "read", Value::Nil, v(7))
        .history();
    assert_eq!(
        check_set(&h, &opts()).unwrap_err(),
        CheckError::bad_op(3, "read must return a set or list, not 7")
    );
}

fn set_full_history() -> B {
    let mut b = B::new();
    b.call(0, "add", v(1), v(1)) // 0,1
        .call(1, "read", Value::Nil, set(&[])) // 2,3: misses 1 (stale)
        .call(1, "read", Value::Nil, set(&[1])); // 4,5
    b
}

#[test]
fn set_full_stale_is_valid_unless_linearizable() {
    let h = set_full_history().history();
    let r = check_set_full(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!((r.stable_count, r.stale_count, r.lost_count), (1, 1, 0));
    let w = r.worst_stale.clone().unwrap();
    assert_eq!(
        (w.stale_read_count, w.last_stale_read, w.stale_ms),
        (1, 3, Some(1.0))
    );
    assert_eq!(r.visible_latency_ms, one(2.0));
    let mut lin = opts();
    lin.linearizable = true;
    let r = check_set_full(&h, &lin).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(
        CheckReport::from_outcome("set-full", &r).anomaly_types,
        vec!["stale"]
    );
}

#[test]
fn set_full_lost_and_duplicated() {
    let h = set_full_history()
        .call(0, "add", v(2), v(2)) // 6,7
        .call(1, "read", Value::Nil, list(&[1, 1])) // 8,9
        .call(1, "read", Value::Nil, set(&[1])) // 10,11
        .history();
    let r = check_set_full(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.lost.len(), 1);
    assert_eq!(
        (
            r.lost[0].element.clone(),
            r.lost[0].add,
            r.lost[0].last_present_read,
            r.lost[0].final_read
        ),
        (v(2), 6, None, 11)
    );
    assert_eq!(r.duplicated.len(), 1);
    assert_eq!((r.duplicated[0].read, r.duplicated[0].copies), (9, 2));
    let g = &r.groups[0];
    assert_eq!(
        (g.stable.clone(), g.lost.clone(), g.stale.clone()),
        (elems(&[1]), elems(&[2]), elems(&[1]))
    );
    assert_eq!(g.read_count, 4);
}

#[test]
fn set_full_never_read_and_keys() {
    let h = B::new()
        .call(0, "add", v(1), v(1))
        .key(1)
        .call(1, "read", Value::Nil, set(&[1]))
        .key(1)
        .call(0, "add", v(1), v(1))
        .key(2)
        .history();
    let r = check_set_full(&h, &opts()).unwrap();
    // Key 2 has an acknowledged add and no read at all.
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!((r.stable_count, r.never_read_count), (1, 1));
    assert_eq!(r.groups.len(), 2);
    assert_eq!(r.groups[1].key, Some(v(2)));
}

#[test]
fn counter_ok() {
    let h = B::new()
        .call(0, "add", v(1), v(1)) // 0,1
        .call(1, "read", Value::Nil, v(1)) // 2,3
        .invoke(0, "add", v(2)) // 4
        .call(1, "read", Value::Nil, v(3)) // 5,6: the add may have happened
        .info(0, "add", v(2)) // 7
        .call(2, "increment", v(-1), v(-1)) // 8,9
        .call(1, "read", Value::Nil, v(0)) // 10,11: 1 - 1, the 2 may not have happened
        .history();
    let r = check_counter(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!((r.read_count, r.add_count, r.violation_count), (3, 3, 0));
}

#[test]
fn counter_out_of_bounds() {
    let h = B::new()
        .call(0, "add", v(1), v(1)) // 0,1
        .invoke(0, "add", v(2)) // 2
        .call(1, "read", Value::Nil, v(5)) // 3,4
        .ok(0, "add", v(2)) // 5
        .call(1, "read", Value::Nil, v(2)) // 6,7
        .history();
    let r = check_counter(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.violations.len(), 2);
    let got: Vec<_> = r
        .violations
        .iter()
        .map(|x| (x.read, x.value, x.lower, x.upper, x.off_by))
        .collect();
    assert_eq!(got, vec![(4, 5, 1, 3, 2), (7, 2, 3, 3, -1)]);
}

fn bank_read(pairs: &[(&str, i64)]) -> Value {
    Value::Map(pairs.iter().map(|&(k, b)| (Value::from(k), v(b))).collect())
}

fn transfer(from: &str, to: &str, amount: i64) -> Value {
    Value::map(vec![
        (Value::Keyword("from".into()), Value::from(from)),
        (Value::Keyword("to".into()), Value::from(to)),
        (Value::Keyword("amount".into()), v(amount)),
    ])
}

#[test]
fn bank_ok() {
    let h = B::new()
        .call(0, "read", Value::Nil, bank_read(&[("a", 5), ("b", 5)]))
        .call(1, "transfer", transfer("a", "b", 3), transfer("a", "b", 3))
        .call(0, "read", Value::Nil, bank_read(&[("a", 2), ("b", 8)]))
        .history();
    let r = check_bank(&h, &with(&[("total", "10")])).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(
        (r.read_count, r.transfer_count, r.total_inferred),
        (2, 1, false)
    );
    assert_eq!(r.accounts, vec![Value::from("a"), Value::from("b")]);
}

#[test]
fn bank_bad_reads() {
    use splitbrain_basic::bank::BankProblem::*;
    let h = B::new()
        .call(0, "read", Value::Nil, bank_read(&[("a", 5), ("b", 5)])) // 0,1
        .call(0, "read", Value::Nil, bank_read(&[("a", 7), ("b", 5)])) // 2,3
        .call(0, "read", Value::Nil, bank_read(&[("a", -1), ("b", 11)])) // 4,5
        .call(0, "read", Value::Nil, bank_read(&[("a", 5), ("c", 5)])) // 6,7
        .history();
    let r = check_bank(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!((r.total, r.total_inferred), (Some(10), true));
    assert_eq!(r.bad_reads.len(), 3);
    assert_eq!(r.bad_reads[0].read, 3);
    assert_eq!(
        r.bad_reads[0].problems,
        vec![WrongTotal {
            total: 12,
            expected: 10,
            off_by: 2
        }]
    );
    assert_eq!(
        r.bad_reads[1].problems,
        vec![NegativeBalance {
            account: Value::from("a"),
            balance: -1
        }]
    );
    assert_eq!(
        r.bad_reads[2].problems,
        vec![
            UnknownAccount {
                account: Value::from("c")
            },
            MissingAccount {
                account: Value::from("b")
            }
        ]
    );
    let allowed = check_bank(
        &h,
        &with(&[("negative-balances", "true"), ("accounts", "a,b,c")]),
    )
    .unwrap();
    assert_eq!(
        (
            allowed.negative_count,
            allowed.unknown_account_count,
            allowed.wrong_total_count
        ),
        (0, 0, 1)
    );
}

#[test]
fn unique_ids() {
    let mut b = B::new();
    b.call(0, "generate", Value::Nil, v(1))
        .call(0, "generate", Value::Nil, v(2));
    let r = check_unique_ids(&b.history(), &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(r.range, Some((v(1), v(2))));
    b.call(1, "generate", Value::Nil, v(1))
        .invoke(2, "generate", Value::Nil)
        .info(2, "generate", Value::Nil);
    let r = check_unique_ids(&b.history(), &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(
        (r.attempted_count, r.acknowledged_count, r.duplicated_count),
        (4, 3, 1)
    );
    assert_eq!(r.duplicates[0].ops, vec![1, 5]);
}

fn queue_history() -> B {
    let mut b = B::new();
    b.call(0, "enqueue", v(1), v(1)) // 0,1
        .call(0, "enqueue", v(2), v(2)) // 2,3
        .invoke(1, "enqueue", v(3)) // 4
        .info(1, "enqueue", v(3)) // 5
        .call(2, "dequeue", Value::Nil, v(1)); // 6,7
    b
}

#[test]
fn queue_ok_and_total_queue_lost() {
    let h = queue_history().history();
    let r = check_queue(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    let r = check_total_queue(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.lost, elems(&[2]));
    let h = queue_history()
        .call(2, "drain", Value::Nil, list(&[2, 3]))
        .history();
    let r = check_total_queue(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(r.recovered, elems(&[3]));
}

#[test]
fn queue_duplicated_and_unexpected() {
    let h = queue_history()
        .call(2, "dequeue", Value::Nil, v(1)) // 8,9
        .call(2, "drain", Value::Nil, list(&[2, 4])) // 10,11
        .history();
    let r = check_queue(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(
        (r.duplicated.clone(), r.unexpected.clone()),
        (elems(&[1]), elems(&[4]))
    );
    assert_eq!(r.duplicated_ops[0].ops, vec![7, 9]);
    assert_eq!(
        (r.unexpected_ops[0].op, r.unexpected_ops[0].enqueue),
        (11, None)
    );
    let r = check_queue(&h, &with(&[("duplicates-allowed", "true")])).unwrap();
    assert_eq!(r.anomaly_types(), vec!["unexpected", "duplicated"]);
    use splitbrain_history::CheckOutcome;
}

fn session_kinds(b: &B) -> Vec<(SessionAnomaly, Vec<usize>)> {
    let r = check_session(&b.history(), &opts()).unwrap();
    assert_eq!(r.verdict == Verdict::Invalid, r.violation_count > 0);
    r.violations.into_iter().map(|x| (x.kind, x.ops)).collect()
}

#[test]
fn session_ok() {
    let mut b = B::new();
    b.call(0, "write", v(1), v(1))
        .call(0, "read", Value::Nil, v(1))
        .call(1, "read", Value::Nil, v(1))
        .call(1, "write", v(2), v(2))
        .call(1, "read", Value::Nil, v(2))
        .call(0, "read", Value::Nil, v(2));
    assert_eq!(session_kinds(&b), vec![]);
}

#[test]
fn session_read_your_writes() {
    let mut b = B::new();
    b.call(0, "write", v(1), v(1))
        .call(0, "read", Value::Nil, Value::Nil);
    assert_eq!(
        session_kinds(&b),
        vec![(SessionAnomaly::ReadYourWrites, vec![1, 3])]
    );
}

#[test]
fn session_monotonic_writes() {
    let mut b = B::new();
    b.call(0, "write", v(1), v(1)) // 0,1
        .call(0, "write", v(2), v(2)) // 2,3
        .call(1, "read", Value::Nil, v(2)) // 4,5
        .call(1, "read", Value::Nil, v(1)); // 6,7
    assert_eq!(
        session_kinds(&b),
        vec![(SessionAnomaly::MonotonicWrites, vec![5, 7])]
    );
}

#[test]
fn session_monotonic_reads() {
    let mut b = B::new();
    b.call(0, "write", v(1), v(1)) // 0,1
        .call(1, "write", v(2), v(2)) // 2,3
        .call(2, "read", Value::Nil, v(1)) // 4,5
        .call(2, "read", Value::Nil, v(2)) // 6,7
        .call(2, "read", Value::Nil, v(1)); // 8,9
    assert_eq!(
        session_kinds(&b),
        vec![(SessionAnomaly::MonotonicReads, vec![7, 9])]
    );
}

#[test]
fn session_writes_follow_reads() {
    let mut b = B::new();
    b.call(0, "write", v(1), v(1)) // 0,1
        .call(1, "read", Value::Nil, v(1)) // 2,3
        .call(1, "write", v(2), v(2)) // 4,5
        .call(2, "read", Value::Nil, v(2)) // 6,7
        .call(2, "read", Value::Nil, v(1)); // 8,9
    assert_eq!(
        session_kinds(&b),
        vec![(SessionAnomaly::WritesFollowReads, vec![7, 9])]
    );
}

#[test]
fn session_consistent_prefix_and_unwritten() {
    let mut b = B::new();
    b.call(0, "write", v(1), v(1)) // 0,1
        .call(1, "write", v(2), v(2)) // 2,3
        .call(2, "read", Value::Nil, v(1)) // 4,5
        .call(2, "read", Value::Nil, v(2)) // 6,7
        .call(3, "read", Value::Nil, v(2)) // 8,9
        .call(3, "read", Value::Nil, v(1)) // 10,11
        .call(3, "read", Value::Nil, v(99)); // 12,13
    assert_eq!(
        session_kinds(&b),
        vec![
            (SessionAnomaly::ConsistentPrefix, vec![5, 7, 9, 11]),
            (SessionAnomaly::UnwrittenValue, vec![13]),
        ]
    );
}

#[test]
fn session_per_key() {
    let mut b = B::new();
    b.call(0, "write", v(1), v(1))
        .key(1)
        .call(0, "read", Value::Nil, Value::Nil)
        .key(2);
    assert_eq!(session_kinds(&b), vec![]);
}

fn staleness_history() -> B {
    let mut b = B::new();
    b.call(0, "write", v(1), v(1)) // 0,1
        .call(0, "write", v(2), v(2)) // 2,3
        .invoke(1, "read", Value::Nil) // 4
        .node("n1")
        .ok(1, "read", v(1)) // 5: one version, 1 ms behind
        .invoke(1, "read", Value::Nil) // 6
        .node("n2")
        .ok(1, "read", Value::Nil) // 7: two versions, 5 ms behind
        .invoke(1, "read", Value::Nil) // 8
        .node("n1")
        .ok(1, "read", v(2)); // 9
    b
}

#[test]
fn staleness_measures() {
    let h = staleness_history().history();
    let r = check_staleness(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!((r.read_count, r.stale_count), (3, 2));
    let got: Vec<_> = r
        .stale_reads
        .iter()
        .map(|s| (s.read, s.versions_behind, s.stale_ms, s.newer_write))
        .collect();
    assert_eq!(got, vec![(5, 1, Some(1.0), 3), (7, 2, Some(5.0), 1)]);
    assert_eq!(r.per_node["n2"].versions_behind, one(2.0));
    assert_eq!(r.per_node["n1"].stale_count, 1);
    assert_eq!(r.overall.stale_ms.as_ref().map(|q| q.max), Some(5.0));
    assert_eq!(r.worst.as_ref().map(|w| w.read), Some(7));
    let r = check_staleness(&h, &with(&[("max-versions-behind", "1")])).unwrap();
    assert_eq!((r.verdict, r.over_bound_count), (Verdict::Invalid, 1));
}

#[test]
fn staleness_concurrent_write_is_not_stale() {
    let h = B::new()
        .call(0, "write", v(1), v(1)) // 0,1
        .invoke(0, "write", v(2)) // 2
        .invoke(1, "read", Value::Nil) // 3
        .ok(0, "write", v(2)) // 4
        .ok(1, "read", v(1)) // 5: the write of 2 had not been acknowledged when the read began
        .call(1, "read", Value::Nil, v(7)) // 6,7: never written
        .history();
    let r = check_staleness(&h, &opts()).unwrap();
    assert_eq!(
        (r.stale_count, r.unwritten_reads.clone(), r.verdict),
        (0, vec![7], Verdict::Invalid)
    );
}

#[test]
fn staleness_needs_unique_writes_and_flags_failed_ones() {
    let h = B::new()
        .call(0, "write", v(1), v(1))
        .call(0, "write", v(1), v(1))
        .history();
    assert_eq!(
        check_staleness(&h, &opts()).unwrap_err(),
        CheckError::bad_op(
            2,
            "1 is written twice to one key; staleness needs every write unique"
        )
    );
    let h = B::new()
        .invoke(0, "write", v(1))
        .fail(0, "write", v(1))
        .call(1, "read", Value::Nil, v(1))
        .history();
    let r = check_staleness(&h, &opts()).unwrap();
    assert_eq!(
        (r.verdict, r.unwritten_reads.clone()),
        (Verdict::Invalid, vec![3])
    );
}

fn convergence_history(n2_final: i64) -> B {
    let mut b = B::new();
    b.nemesis("start-partition", Value::from("majority")) // 0,1
        .call(0, "write", v(1), v(1)) // 2,3
        .nemesis("stop-partition", Value::Nil) // 4,5: heal at 5 ms
        .invoke(0, "read", Value::Nil) // 6
        .node("n1")
        .ok(0, "read", v(1)) // 7
        .invoke(1, "read", Value::Nil) // 8
        .node("n2")
        .ok(1, "read", Value::Nil) // 9
        .invoke(1, "read", Value::Nil) // 10
        .node("n2")
        .ok(1, "read", v(n2_final)); // 11
    b
}

#[test]
fn convergence_ok() {
    let r = check_convergence(&convergence_history(1).history(), &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(
        (r.heal, r.heal_ms, r.final_read_count),
        (Some(5), Some(5.0), 3)
    );
    assert_eq!(r.converged_ms, Some(5.0));
    assert_eq!(r.converged_ms_per_node["n1"], 1.0);
    let missing = check_convergence(
        &convergence_history(1).history(),
        &with(&[("nodes", "n1,n2,n3")]),
    )
    .unwrap();
    assert_eq!(
        (missing.verdict, missing.nodes_missing.clone()),
        (Verdict::Unknown, vec!["n3".to_string()])
    );
}

#[test]
fn convergence_diverged() {
    let r = check_convergence(&convergence_history(2).history(), &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.diverged.len(), 1);
    let groups: Vec<Vec<(String, Value)>> = r.diverged[0]
        .groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|rv| (rv.node.clone(), rv.value.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            vec![("n1".to_string(), v(1))],
            vec![("n2".to_string(), v(2))]
        ]
    );
}

#[test]
fn convergence_without_final_reads_waits_for_quiescence() {
    let h = B::new()
        .invoke(0, "read", Value::Nil) // 0
        .node("n1")
        .ok(0, "read", v(0)) // 1: before the last write, not a final read
        .call(2, "write", v(1), v(1)) // 2,3
        .invoke(0, "read", Value::Nil) // 4
        .node("n1")
        .ok(0, "read", v(1)) // 5
        .invoke(1, "read", Value::Nil) // 6
        .node("n2")
        .ok(1, "read", v(1)) // 7
        .history();
    let r = check_convergence(&h, &opts()).unwrap();
    assert_eq!(
        (r.verdict, r.final_read_count, r.heal),
        (Verdict::Valid, 2, None)
    );
}

#[test]
fn convergence_of_whole_map_reads_names_the_keys() {
    let kv = |pairs: &[(&str, i64)]| {
        Value::Map(pairs.iter().map(|&(k, x)| (Value::from(k), v(x))).collect())
    };
    let h = B::new()
        .invoke(0, "final-read", Value::Nil)
        .node("n1")
        .ok(0, "final-read", kv(&[("x", 1), ("y", 2)]))
        .invoke(1, "final-read", Value::Nil)
        .node("n2")
        .ok(1, "final-read", kv(&[("y", 2), ("x", 1)]))
        .invoke(2, "final-read", Value::Nil)
        .node("n3")
        .ok(2, "final-read", kv(&[("y", 3)]))
        .history();
    let r = check_convergence(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    type KeyGroups = (Option<Value>, Vec<Vec<(String, Value)>>);
    let got: Vec<KeyGroups> = r
        .diverged
        .iter()
        .map(|d| {
            let groups = d
                .groups
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|rv| (rv.node.clone(), rv.value.clone()))
                        .collect()
                })
                .collect();
            (d.key.clone(), groups)
        })
        .collect();
    let n = |s: &str, x: Value| (s.to_string(), x);
    assert_eq!(
        got,
        vec![
            (
                Some(Value::from("x")),
                vec![
                    vec![n("n1", v(1)), n("n2", v(1))],
                    vec![n("n3", Value::Nil)]
                ]
            ),
            (
                Some(Value::from("y")),
                vec![vec![n("n1", v(2)), n("n2", v(2))], vec![n("n3", v(3))]]
            ),
        ]
    );
}

#[test]
fn fault_windows_pair_by_suffix() {
    let h = B::new()
        .nemesis("start-partition", Value::Nil) // 0,1
        .nemesis("kill", Value::from("n1")) // 2,3
        .nemesis("stop-partition", Value::Nil) // 4,5
        .nemesis("restart", Value::Nil) // 6,7
        .nemesis("pause", Value::Nil) // 8,9
        .nemesis("kill", Value::Nil) // 10,11
        .nemesis("start", Value::Nil) // 12,13: restarts the killed nodes
        .nemesis("start", Value::Nil) // 14,15: now opens a window
        .history();
    let w: Vec<_> = fault_windows(&h)
        .into_iter()
        .map(|w| (w.label, w.opened_at, w.closed_at))
        .collect();
    assert_eq!(
        w,
        vec![
            ("start-partition".to_string(), 0, Some(5)),
            ("kill \"n1\"".to_string(), 2, Some(7)),
            ("pause".to_string(), 8, None),
            ("kill".to_string(), 10, Some(13)),
            ("start".to_string(), 14, None),
        ]
    );
}

#[test]
fn recorded_fault_windows_open_when_the_fault_took_effect() {
    use splitbrain_history::OpType;
    let kw = |s: &str| Value::Keyword(s.into());
    let done = |fault: &str, phase: &str, extra: Vec<(Value, Value)>| {
        let mut m = vec![(kw("fault"), kw(fault)), (kw("phase"), kw(phase))];
        m.extend(extra);
        Value::map(m)
    };
    let n3 = (kw("nodes"), Value::list(vec![Value::Str("n3".into())]));
    let h = B::new()
        .nemesis_done(
            "kill",
            kw("one"),
            OpType::Info,
            done("kill", "start", vec![n3.clone()]),
        ) // 0,1
        .call(0, "read", Value::Nil, v(1)) // 2,3
        .nemesis_done(
            "restart",
            kw("all"),
            OpType::Info,
            done("kill", "stop", vec![n3]),
        ) // 4,5
        // A failed start changed nothing: no window.
        .nemesis_done(
            "start-partition",
            kw("majority"),
            OpType::Fail,
            kw("majority"),
        ) // 6,7
        .nemesis_done(
            "strobe-clock",
            Value::Int(500),
            OpType::Info,
            done(
                "clock",
                "start",
                vec![
                    (kw("node"), Value::Str("n2".into())),
                    (kw("delta-ms"), Value::Int(-500)),
                ],
            ),
        ) // 8,9
        .history();
    let w: Vec<_> = fault_windows(&h)
        .into_iter()
        .map(|w| (w.label, w.f, w.opened_at, w.closed_at))
        .collect();
    assert_eq!(
        w,
        vec![
            ("kill [\"n3\"]".to_string(), "kill".to_string(), 1, Some(5)),
            ("clock n2 -500".to_string(), "clock".to_string(), 9, None),
        ]
    );
}

#[test]
fn stats_counts_and_never_ok() {
    let mut b = B::new();
    b.call(0, "add", v(1), v(1))
        .invoke(0, "add", v(2))
        .fail(0, "add", v(2))
        .call(1, "read", Value::Nil, set(&[1]))
        .invoke(1, "read", Value::Nil)
        .info(1, "read", Value::Nil);
    let r = check_stats(&b.history(), &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    let add = &r.by_f["add"];
    assert_eq!((add.count, add.ok, add.fail, add.info), (2, 1, 1, 0));
    assert_eq!((r.total.count, r.total.ok, r.total.info), (4, 2, 1));
    b.invoke(2, "cas", Value::Nil).fail(2, "cas", Value::Nil);
    let r = check_stats(&b.history(), &opts()).unwrap();
    assert_eq!(
        (r.verdict, r.never_ok.clone()),
        (Verdict::Invalid, vec!["cas".into()])
    );
}

#[test]
fn perf_latency_windows_and_availability() {
    let h = B::new()
        .call(0, "write", v(1), v(1)) // 0,1: 1 ms
        .nemesis("start", Value::Nil) // 2,3
        .invoke(0, "write", v(2)) // 4
        .invoke(1, "read", Value::Nil) // 5
        .fail(0, "write", v(2)) // 6: 2 ms
        .info(1, "read", Value::Nil) // 7: 2 ms
        .nemesis("stop", Value::Nil) // 8,9
        .call(2, "read", Value::Nil, v(1)) // 10,11: 1 ms
        .history();
    let r = check_perf(&h, &with(&[("bucket-ms", "5")])).unwrap();
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!(
        r.overall
            .latency_ms
            .as_ref()
            .map(|q| (q.count, q.min, q.max)),
        Some((4, 1.0, 2.0))
    );
    use splitbrain_basic::common::Phase;
    assert_eq!(r.per_phase[&Phase::InsideFault].availability, Some(0.0));
    assert_eq!(r.per_phase[&Phase::OutsideFault].availability, Some(1.0));
    assert_eq!(r.windows.len(), 1);
    assert_eq!(
        (r.windows[0].window.closed_at, r.windows[0].ops.counts.count),
        (Some(9), 2)
    );
    let buckets: Vec<_> = r
        .timeline
        .iter()
        .map(|b| (b.start_ms, b.counts.count, b.counts.ok))
        .collect();
    assert_eq!(buckets, vec![(0.0, 1, 1), (5.0, 2, 0), (10.0, 1, 1)]);
    assert_eq!(r.timeline[0].ok_per_s, 200.0);
}

fn boom(_: &splitbrain_history::History, _: &CheckOptions) -> Result<CheckReport, CheckError> {
    panic!("boom")
}

#[test]
fn compose_worst_verdict_and_isolation() {
    let h = B::new()
        .call(0, "add", v(1), v(1))
        .call(0, "add", v(2), v(2))
        .call(1, "read", Value::Nil, set(&[1]))
        .history();
    let c = compose(&h, &opts(), &["stats", "set"]);
    assert_eq!(c.verdict, Verdict::Invalid);
    let c = compose(&h, &opts(), &["stats", "bank"]);
    // bank: the read is not a map -> unknown, with the error; stats still ran.
    assert_eq!(c.verdict, Verdict::Unknown);
    assert_eq!(c.reports[0].verdict, Verdict::Valid);
    assert_eq!(
        c.reports[1].result["error"],
        "history:6: a bank read must return a map of account to balance, not #{1}"
    );
    let mut table: Vec<CheckerDef> = CHECKERS.to_vec();
    table.push(CheckerDef {
        name: "boom",
        run: boom,
    });
    let c = compose_with(&table, &h, &opts(), &["boom", "stats", "nope"]);
    assert_eq!(c.verdict, Verdict::Unknown);
    let v: Vec<_> = c
        .reports
        .iter()
        .map(|r| (r.checker.as_str(), r.verdict))
        .collect();
    assert_eq!(
        v,
        vec![
            ("boom", Verdict::Unknown),
            ("stats", Verdict::Valid),
            ("nope", Verdict::Unknown)
        ]
    );
    assert!(c.reports[0].explanation.contains("checker panicked: boom"));
    assert_eq!(c.to_report().verdict, Verdict::Unknown);
}

#[test]
fn every_checker_is_listed() {
    let names: Vec<&str> = CHECKERS.iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        vec![
            "set",
            "set-full",
            "counter",
            "bank",
            "unique-ids",
            "queue",
            "total-queue",
            "session",
            "staleness",
            "convergence",
            "crdt-counter",
            "or-set",
            "siblings",
            "lost-write",
            "stats",
            "perf"
        ]
    );
}

#[test]
fn every_result_serializes() {
    let h = staleness_history()
        .nemesis("start-partition", Value::Nil)
        .call(2, "read", Value::Nil, v(2))
        .history();
    let names: Vec<&str> = CHECKERS.iter().map(|d| d.name).collect();
    let c = compose(&h, &opts(), &names);
    for r in &c.reports {
        assert!(r.result.is_object(), "{}: {}", r.checker, r.result);
    }
    assert_eq!(
        c.reports[8].result["per_phase"]["inside-fault"]["read_count"],
        1
    );
    // Process 1 read 1, then the initial value: its reads went backwards.
    assert_eq!(
        c.reports[7].result["counts"],
        serde_json::json!({"monotonic-reads": 1})
    );
}
