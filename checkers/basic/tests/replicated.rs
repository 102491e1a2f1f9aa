//! Golden histories for the checkers of data replicated without
//! coordination: a good one and one per violation, with exact results.

mod support;

use splitbrain_basic::*;
use splitbrain_history::{CheckOptions, Value, Verdict};
use support::{set, v, B};

fn opts() -> CheckOptions {
    CheckOptions::default()
}

#[test]
fn crdt_counter_ok_reads_any_subset_and_converges_on_the_acknowledged_total() {
    let h = B::new()
        .call(0, "add", v(5), v(5)) // 0,1
        .call(1, "read", Value::Nil, v(0)) // 2,3: n1 has not seen n0's add yet
        .invoke(1, "add", v(-2)) // 4
        .info(1, "add", v(-2)) // 5: may have happened
        .call(2, "add", v(1), v(1)) // 6,7
        .call(1, "read", Value::Nil, v(6)) // 8,9: 5 + 1, the -2 not (yet); not p1's last
        .call(0, "read", Value::Nil, v(4)) // 10,11: final
        .call(1, "read", Value::Nil, v(4)) // 12,13: final, the -2 happened
        .history();
    let r = check_crdt_counter(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
    assert_eq!((r.add_count, r.info_add_count, r.read_count), (3, 1, 4));
    assert_eq!(r.acknowledged_total, 6);
    assert_eq!(r.final_values.into_iter().collect::<Vec<_>>(), vec![(4, 2)]);
}

#[test]
fn crdt_counter_out_of_bounds_diverged_and_lost() {
    let h = B::new()
        .call(0, "add", v(5), v(5))
        .call(1, "read", Value::Nil, v(7)) // 2,3: more than was ever added
        .call(0, "read", Value::Nil, v(5))
        .call(1, "read", Value::Nil, v(0)) // final reads disagree, and 0 lost the 5
        .history();
    let r = check_crdt_counter(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.out_of_bounds_count, 1);
    assert_eq!(r.out_of_bounds[0].read, 3);
    assert_eq!(r.unexplained_final_values, vec![0]);
    use splitbrain_history::CheckOutcome;
    assert_eq!(
        r.anomaly_types(),
        vec!["out-of-bounds-read", "diverged", "lost-or-duplicated-add"]
    );
}

#[test]
fn crdt_counter_without_final_reads_is_unknown() {
    let h = B::new().call(0, "add", v(1), v(1)).history();
    let r = check_crdt_counter(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Unknown);
}

#[test]
fn or_set_ok_counts_an_add_that_won_over_a_concurrent_remove() {
    let h = B::new()
        .call(0, "add", v(1), v(1)) // 0,1
        .invoke(1, "remove", v(1)) // 2: concurrent with the add below
        .invoke(2, "add", v(1)) // 3
        .ok(1, "remove", v(1)) // 4
        .ok(2, "add", v(1)) // 5
        .call(0, "add", v(2), v(2)) // 6,7
        .call(0, "remove", v(2), v(2)) // 8,9: observed its own add
        .call(0, "read", Value::Nil, set(&[1])) // final
        .call(1, "read", Value::Nil, set(&[1]))
        .history();
    let r = check_or_set(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
    assert_eq!((r.add_count, r.remove_count, r.read_count), (3, 2, 2));
    assert_eq!((r.add_wins, r.removed_for_good), (1, 1));
}

#[test]
fn or_set_lost_add_resurrection_phantom_and_divergence() {
    let h = B::new()
        .call(0, "add", v(1), v(1)) // 0,1: no remove of 1 at all, yet gone
        .call(1, "add", v(2), v(2)) // 2,3
        .call(1, "remove", v(2), v(2)) // 4,5: its own add, observed
        .call(2, "read", Value::Nil, set(&[9])) // 6,7: nobody added 9
        .call(0, "read", Value::Nil, set(&[2])) // final: 1 lost, 2 back
        .call(1, "read", Value::Nil, set(&[])) // final: disagrees
        .history();
    let r = check_or_set(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.phantom_reads, vec![7]);
    use splitbrain_history::CheckOutcome;
    assert_eq!(
        r.anomaly_types(),
        vec!["diverged", "lost-add", "resurrection", "phantom-read"]
    );
    // p2's read of 9 is its last after the last update: a final state too.
    assert_eq!(r.final_states.len(), 3);
}

#[test]
fn siblings_ok_keeps_concurrent_writes_and_a_later_write_merges_them() {
    let h = B::new()
        .invoke(0, "write", v(1)) // 0
        .invoke(1, "write", v(2)) // 1
        .ok(0, "write", v(1)) // 2
        .ok(1, "write", v(2)) // 3
        .call(0, "read", Value::Nil, set(&[1, 2])) // 4,5: siblings, its own among them
        .call(1, "write", v(3), v(3)) // 6,7: merges them
        .call(0, "read", Value::Nil, v(3)) // final
        .call(1, "read", Value::Nil, v(3))
        .history();
    let r = check_siblings(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
    assert_eq!((r.write_count, r.read_count, r.sibling_reads), (3, 3, 1));
}

#[test]
fn siblings_a_lagging_clock_loses_its_own_write() {
    // LWW with n0's clock ahead: n1's later write loses to n0's earlier one,
    // in n1's own session and at the end.
    let h = B::new()
        .call(0, "write", v(1), v(1)) // 0,1
        .call(1, "write", v(2), v(2)) // 2,3
        .call(1, "read", Value::Nil, v(1)) // 4,5: its own write is gone
        .call(0, "read", Value::Nil, v(1)) // final
        .call(1, "read", Value::Nil, v(7)) // final: never written, and diverged
        .history();
    let r = check_siblings(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    let lost: Vec<_> = r.lost_writes.iter().map(|w| (w.write, w.read)).collect();
    assert_eq!(lost, vec![(2, Some(5)), (2, Some(9)), (2, None)]);
    assert_eq!(r.unwritten_reads, vec![9]);
    assert_eq!(r.diverged_keys, vec![None]);
}

#[test]
fn siblings_a_write_another_could_have_overwritten_is_not_called_lost() {
    let h = B::new()
        .call(0, "write", v(1), v(1))
        .call(1, "write", v(2), v(2)) // invoked after 1: may have seen it
        .call(0, "read", Value::Nil, v(2))
        .call(1, "read", Value::Nil, v(2))
        .history();
    let r = check_siblings(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
}

/// Regression: a write invoked before `w` but applied after it at the same
/// node saw `w` and overwrote it; the checker called `w` lost.
#[test]
fn siblings_a_write_invoked_earlier_but_done_later_may_have_overwritten() {
    let h = B::new()
        .invoke(1, "write", v(38)) // 0
        .invoke(4, "write", v(39)) // 1
        .ok(4, "write", v(39)) // 2
        .ok(1, "write", v(38)) // 3: applied after 39, having seen it
        .call(4, "read", Value::Nil, v(38)) // 4,5
        .call(1, "read", Value::Nil, v(38))
        .history();
    let r = check_siblings(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
    // Had 38 completed before 39 was invoked, 39 would be lost.
    let h = B::new()
        .call(1, "write", v(38), v(38))
        .call(4, "write", v(39), v(39))
        .call(4, "read", Value::Nil, v(38))
        .call(1, "read", Value::Nil, v(38))
        .history();
    let r = check_siblings(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
}

fn cas(a: i64, b: i64) -> Value {
    Value::list(vec![v(a), v(b)])
}

#[test]
fn lost_write_ok_when_every_read_follows_the_last_write_or_a_concurrent_one() {
    let h = B::new()
        .call(0, "write", v(1), v(1)) // 0,1
        .call(1, "read", Value::Nil, v(1)) // 2,3
        .invoke(0, "write", v(2)) // 4
        .call(1, "read", Value::Nil, v(1)) // 5,6: the write of 2 is still open
        .ok(0, "write", v(2)) // 7
        .invoke(2, "write", v(3)) // 8
        .info(2, "write", v(3)) // 9: may land any time
        .call(1, "read", Value::Nil, v(3)) // 10,11
        .call(0, "cas", cas(3, 4), cas(3, 4)) // 12,13
        .invoke(1, "cas", cas(9, 5)) // 14
        .fail(1, "cas", cas(9, 5)) // 15: did not happen
        .call(1, "read", Value::Nil, v(4)) // 16,17
        .call(0, "read", Value::Nil, Value::Nil) // 18,19: unknown (Knossos), not a miss
        .history();
    let r = check_lost_writes(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
    assert_eq!((r.write_count, r.read_count), (4, 4));
    // Only the read at 2 is bound to one write: the one at 5 overlaps the
    // write of 2, and the info write of 3 may land after anything later.
    assert_eq!(r.reads_judged, 1);
}

#[test]
fn lost_write_names_an_acknowledged_write_never_read_again() {
    let h = B::new()
        .call(0, "write", v(1), v(1)) // 0,1: on the node whose clock runs ahead
        .call(1, "write", v(2), v(2)) // 2,3: stamped earlier, discarded
        .call(1, "read", Value::Nil, v(1)) // 4,5
        .call(0, "read", Value::Nil, v(1)) // 6,7: another process's miss is stale
        .history();
    let r = check_lost_writes(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!((r.lost_write_count, r.stale_read_count), (1, 1));
    let m = &r.lost_writes[0];
    assert_eq!(
        (m.write, m.read, &m.value, &m.read_value),
        (2, 5, &v(2), &v(1))
    );
    use splitbrain_history::CheckOutcome;
    assert_eq!(r.anomaly_types(), vec!["lost-write", "stale-read"]);
}

/// With `nil-read=empty` a nil read is the empty register: a write the
/// store dropped entirely (the key gone) is named.
#[test]
fn lost_write_with_nil_reads_empty_names_a_write_whose_key_vanished() {
    let h = B::new()
        .call(0, "read", Value::Nil, Value::Nil) // 0,1: before any write, fine
        .call(0, "write", v(1), v(1)) // 2,3
        .call(0, "read", Value::Nil, Value::Nil) // 4,5: the key is gone
        .history();
    assert_eq!(
        check_lost_writes(&h, &opts()).unwrap().verdict,
        Verdict::Valid
    );
    let mut empty = opts();
    empty.params.insert("nil-read".into(), "empty".into());
    let r = check_lost_writes(&h, &empty).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid, "{r:?}");
    assert_eq!((r.lost_write_count, r.read_count), (1, 2));
    assert_eq!(r.lost_writes[0].read_value, Value::Nil);
    empty.params.insert("nil-read".into(), "none".into());
    assert!(check_lost_writes(&h, &empty).is_err());
}

#[test]
fn lost_write_calls_a_missed_write_read_later_a_stale_read() {
    let h = B::new()
        .call(0, "write", v(1), v(1)) // 0,1
        .call(0, "cas", cas(1, 2), cas(1, 2)) // 2,3
        .call(1, "read", Value::Nil, v(1)) // 4,5: a lagging replica
        .call(2, "read", Value::Nil, v(2)) // 6,7
        .call(1, "read", Value::Nil, v(2))
        .key(7) // another key: no write of it
        .history();
    let r = check_lost_writes(&h, &opts()).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!((r.lost_write_count, r.stale_read_count), (0, 1));
    assert_eq!(r.stale_reads[0].read, 5);
    use splitbrain_history::CheckOutcome;
    assert_eq!(r.anomaly_types(), vec!["stale-read"]);
}
