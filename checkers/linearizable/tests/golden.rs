//! Hand-written ok/bad histories for every model, with exact expectations.

use splitbrain_history::format::op_from_edn;
use splitbrain_history::{Budget, CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};
use splitbrain_linearizable::{check, LinearizabilityResult, CHECKERS};

/// A history from EDN op maps, one per line.
fn history(edn: &str) -> History {
    let ops = edn
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| op_from_edn(Value::from_edn(l).expect("edn")).expect("op"))
        .collect();
    History::from_ops(ops).expect("history pairs")
}

fn opts(model: &str) -> CheckOptions {
    CheckOptions {
        model: Some(model.into()),
        ..CheckOptions::default()
    }
}

fn run(model: &str, edn: &str) -> LinearizabilityResult {
    check(&history(edn), &opts(model)).expect("checks")
}

fn run_initial(model: &str, initial: Value, edn: &str) -> LinearizabilityResult {
    let o = CheckOptions {
        initial: Some(initial),
        ..opts(model)
    };
    check(&history(edn), &o).expect("checks")
}

fn verdict(model: &str, edn: &str) -> Verdict {
    run(model, edn).verdict
}

// ---------------------------------------------------------------- register

#[test]
fn register_concurrent_write_and_read_is_linearizable() {
    let r = run(
        "register",
        "{:process 0 :type :invoke :f :write :value 1}
         {:process 1 :type :invoke :f :read :value nil}
         {:process 1 :type :ok :f :read :value 1}
         {:process 0 :type :ok :f :write :value 1}",
    );
    assert_eq!(r.verdict, Verdict::Valid);
    assert_eq!((r.ops, r.partitions), (2, 1));
    assert!(r.anomaly_types().is_empty());
}

#[test]
fn register_stale_read_is_not_linearizable_and_names_the_read() {
    let r = run(
        "register",
        "{:process 0 :type :invoke :f :write :value 1}
         {:process 0 :type :ok :f :write :value 1}
         {:process 0 :type :invoke :f :write :value 2}
         {:process 0 :type :ok :f :write :value 2}
         {:process 1 :type :invoke :f :read :value nil}
         {:process 1 :type :ok :f :read :value 1}",
    );
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.anomaly_types(), vec!["nonlinearizable".to_string()]);
    let f = &r.failures[0];
    let op = f.op.as_ref().expect("blocked op");
    assert_eq!(
        (op.invoke, op.complete, op.op.as_str()),
        (4, Some(5), "read 1")
    );
    assert_eq!(f.prefix, vec![0, 2]);
    assert_eq!(f.state, "2");
    assert_eq!(f.prefix_tail.last().expect("steps").state_after, "2");
    let text = r.explain();
    assert!(
        text.contains("cannot linearize read 1 by process 1"),
        "{text}"
    );
}

#[test]
fn register_nil_read_is_an_unknown_value() {
    let edn = "{:process 0 :type :invoke :f :write :value 1}
               {:process 0 :type :ok :f :write :value 1}
               {:process 1 :type :invoke :f :read :value nil}
               {:process 1 :type :ok :f :read :value nil}";
    assert_eq!(verdict("register", edn), Verdict::Valid);
    assert_eq!(verdict("cas-register", edn), Verdict::Valid);
}

#[test]
fn register_info_write_may_take_effect_after_its_invocation_only() {
    let later = "{:process 0 :type :invoke :f :write :value 1}
                 {:process 0 :type :info :f :write :value 1}
                 {:process 1 :type :invoke :f :read :value nil}
                 {:process 1 :type :ok :f :read :value 1}";
    assert_eq!(verdict("register", later), Verdict::Valid);
    let before = "{:process 1 :type :invoke :f :read :value nil}
                  {:process 1 :type :ok :f :read :value 1}
                  {:process 0 :type :invoke :f :write :value 1}
                  {:process 0 :type :info :f :write :value 1}";
    assert_eq!(verdict("register", before), Verdict::Invalid);
    // Never completing is the same as info.
    let open = "{:process 0 :type :invoke :f :write :value 1}
                {:process 1 :type :invoke :f :read :value nil}
                {:process 1 :type :ok :f :read :value 1}";
    assert_eq!(verdict("register", open), Verdict::Valid);
}

#[test]
fn register_info_write_need_not_happen() {
    let edn = "{:process 0 :type :invoke :f :write :value 1}
               {:process 0 :type :info :f :write :value 1}
               {:process 1 :type :invoke :f :read :value nil}
               {:process 1 :type :ok :f :read :value 0}";
    assert_eq!(
        run_initial("register", Value::Int(0), edn).verdict,
        Verdict::Valid
    );
}

#[test]
fn register_splits_by_key() {
    let r = run(
        "register",
        "{:process 0 :type :invoke :f :write :key 1 :value 1}
         {:process 0 :type :ok :f :write :key 1 :value 1}
         {:process 1 :type :invoke :f :read :key 2 :value nil}
         {:process 1 :type :ok :f :read :key 2 :value 1}",
    );
    assert_eq!(r.partitions, 2);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.failures[0].key, Some(Value::Int(2)));
}

// ---------------------------------------------------------------- cas-register

#[test]
fn cas_register_ok() {
    let edn = "{:process 0 :type :invoke :f :cas :value [0 1]}
               {:process 1 :type :invoke :f :read :value nil}
               {:process 0 :type :ok :f :cas :value [0 1]}
               {:process 1 :type :ok :f :read :value 1}
               {:process 2 :type :invoke :f :cas :value [5 6]}
               {:process 2 :type :fail :f :cas :value [5 6]}";
    assert_eq!(
        run_initial("cas-register", Value::Int(0), edn).verdict,
        Verdict::Valid
    );
}

#[test]
fn cas_register_two_successful_cas_from_the_same_value_is_bad() {
    let edn = "{:process 0 :type :invoke :f :cas :value [0 1]}
               {:process 0 :type :ok :f :cas :value [0 1]}
               {:process 1 :type :invoke :f :cas :value [0 2]}
               {:process 1 :type :ok :f :cas :value [0 2]}";
    let r = run_initial("cas-register", Value::Int(0), edn);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.failures[0].op.as_ref().unwrap().op, "cas 0 -> 2");
    assert_eq!(r.failures[0].state, "1");
}

#[test]
fn cas_register_failed_ops_did_not_happen() {
    let edn = "{:process 0 :type :invoke :f :write :value 7}
               {:process 0 :type :fail :f :write :value 7}
               {:process 1 :type :invoke :f :read :value nil}
               {:process 1 :type :ok :f :read :value 0}";
    assert_eq!(
        run_initial("cas-register", Value::Int(0), edn).verdict,
        Verdict::Valid
    );
}

// ---------------------------------------------------------------- etcd

#[test]
fn etcd_nil_read_means_empty() {
    let start = "{:process 0 :type :invoke :f :read :value nil}
                 {:process 0 :type :ok :f :read :value nil}";
    assert_eq!(verdict("etcd", start), Verdict::Valid);
    let after_write = "{:process 0 :type :invoke :f :write :value 1}
                       {:process 0 :type :ok :f :write :value 1}
                       {:process 1 :type :invoke :f :read :value nil}
                       {:process 1 :type :ok :f :read :value nil}";
    assert_eq!(verdict("etcd", after_write), Verdict::Invalid);
    assert_eq!(verdict("etcd-register", after_write), Verdict::Invalid);
    assert_eq!(verdict("cas-register", after_write), Verdict::Valid);
}

#[test]
fn etcd_failed_cas_must_be_explained() {
    let alone = "{:process 0 :type :invoke :f :write :value 1}
                 {:process 0 :type :ok :f :write :value 1}
                 {:process 1 :type :invoke :f :cas :value [1 2]}
                 {:process 1 :type :fail :f :cas :value [1 2]}";
    let r = run("etcd", alone);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.failures[0].op.as_ref().unwrap().op, "failed cas from 1");
    // A concurrent write explains it.
    let explained = "{:process 0 :type :invoke :f :write :value 1}
                     {:process 0 :type :ok :f :write :value 1}
                     {:process 1 :type :invoke :f :cas :value [1 2]}
                     {:process 2 :type :invoke :f :write :value 3}
                     {:process 2 :type :ok :f :write :value 3}
                     {:process 1 :type :fail :f :cas :value [1 2]}";
    assert_eq!(verdict("etcd", explained), Verdict::Valid);
    // Knossos's cas-register drops it.
    assert_eq!(verdict("cas-register", alone), Verdict::Valid);
}

#[test]
fn etcd_timed_out_read_constrains_nothing() {
    let edn = "{:process 0 :type :invoke :f :write :value 1}
               {:process 0 :type :ok :f :write :value 1}
               {:process 1 :type :invoke :f :read :value nil}
               {:process 1 :type :fail :f :read :value :timed-out}";
    assert_eq!(verdict("etcd", edn), Verdict::Valid);
}

// ---------------------------------------------------------------- kv

const KV_OK: &str = r#"{:process 0 :type :invoke :f :append :key "x" :value "a"}
    {:process 1 :type :invoke :f :append :key "x" :value "b"}
    {:process 0 :type :ok :f :append :key "x" :value "a"}
    {:process 1 :type :ok :f :append :key "x" :value "b"}
    {:process 2 :type :invoke :f :put :key "y" :value "p"}
    {:process 2 :type :ok :f :put :key "y" :value "p"}
    {:process 0 :type :invoke :f :get :key "x" :value nil}
    {:process 0 :type :ok :f :get :key "x" :value "ba"}
    {:process 1 :type :invoke :f :get :key "y" :value nil}
    {:process 1 :type :ok :f :get :key "y" :value "p"}
    {:process 2 :type :invoke :f :get :key "z" :value nil}
    {:process 2 :type :ok :f :get :key "z" :value ""}"#;

const KV_BAD: &str = r#"{:process 0 :type :invoke :f :append :key "x" :value "a"}
    {:process 0 :type :ok :f :append :key "x" :value "a"}
    {:process 1 :type :invoke :f :append :key "x" :value "b"}
    {:process 1 :type :ok :f :append :key "x" :value "b"}
    {:process 2 :type :invoke :f :get :key "y" :value nil}
    {:process 2 :type :ok :f :get :key "y" :value ""}
    {:process 0 :type :invoke :f :get :key "x" :value nil}
    {:process 0 :type :ok :f :get :key "x" :value "ba"}"#;

#[test]
fn kv_ok_per_key_and_as_one_object() {
    let r = run("kv", KV_OK);
    assert_eq!((r.verdict, r.partitions), (Verdict::Valid, 3));
    let r = run("kv-nopart", KV_OK);
    assert_eq!((r.verdict, r.partitions), (Verdict::Valid, 1));
}

#[test]
fn kv_append_order_violation_is_bad() {
    let r = run("kv", KV_BAD);
    assert_eq!(r.verdict, Verdict::Invalid);
    let f = &r.failures[0];
    assert_eq!(f.key, Some(Value::from("x")));
    assert_eq!(f.op.as_ref().unwrap().op, r#"get "x" -> "ba""#);
    assert_eq!(f.state, r#"{"x" "ab"}"#);
    let r = run("kv-nopart", KV_BAD);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.failures[0].key, None);
}

#[test]
fn kv_explain_all_reports_every_failing_key() {
    let edn = r#"{:process 0 :type :invoke :f :put :key "a" :value "1"}
        {:process 0 :type :ok :f :put :key "a" :value "1"}
        {:process 0 :type :invoke :f :get :key "a" :value nil}
        {:process 0 :type :ok :f :get :key "a" :value "2"}
        {:process 1 :type :invoke :f :put :key "b" :value "1"}
        {:process 1 :type :ok :f :put :key "b" :value "1"}
        {:process 1 :type :invoke :f :get :key "b" :value nil}
        {:process 1 :type :ok :f :get :key "b" :value "3"}"#;
    let mut o = opts("kv");
    o.params.insert("explain-all".into(), "true".into());
    let r = check(&history(edn), &o).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
    let keys: Vec<_> = r.failures.iter().map(|f| f.key.clone()).collect();
    assert_eq!(keys, vec![Some(Value::from("a")), Some(Value::from("b"))]);
}

// ---------------------------------------------------------------- multi-register

#[test]
fn multi_register_ok() {
    let edn = "{:process 0 :type :invoke :f :txn :value [[:write :x 1] [:write :y 2]]}
               {:process 1 :type :invoke :f :txn :value [[:read :x nil] [:read :y nil]]}
               {:process 1 :type :ok :f :txn :value [[:read :x 0] [:read :y 0]]}
               {:process 0 :type :ok :f :txn :value [[:write :x 1] [:write :y 2]]}
               {:process 1 :type :invoke :f :txn :value [[:read :x nil] [:read :y nil]]}
               {:process 1 :type :ok :f :txn :value [[:read :x 1] [:read :y 2]]}";
    assert_eq!(
        run_initial("multi-register", Value::Int(0), edn).verdict,
        Verdict::Valid
    );
}

#[test]
fn multi_register_torn_transaction_is_bad() {
    let edn = "{:process 0 :type :invoke :f :txn :value [[:write :x 1] [:write :y 2]]}
               {:process 0 :type :ok :f :txn :value [[:write :x 1] [:write :y 2]]}
               {:process 1 :type :invoke :f :txn :value [[:read :x nil] [:read :y nil]]}
               {:process 1 :type :ok :f :txn :value [[:read :x 1] [:read :y 0]]}";
    let r = run_initial("multi-register", Value::Int(0), edn);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.failures[0].state, "{:x 1, :y 2}");
}

// ---------------------------------------------------------------- mutex

#[test]
fn mutex_ok() {
    let edn = "{:process 0 :type :invoke :f :acquire}
               {:process 0 :type :ok :f :acquire}
               {:process 1 :type :invoke :f :acquire}
               {:process 0 :type :invoke :f :release}
               {:process 0 :type :ok :f :release}
               {:process 1 :type :ok :f :acquire}
               {:process 2 :type :invoke :f :release}
               {:process 2 :type :fail :f :release :error :not-held}";
    assert_eq!(verdict("mutex", edn), Verdict::Valid);
}

#[test]
fn mutex_double_acquire_is_bad() {
    let edn = "{:process 0 :type :invoke :f :acquire}
               {:process 0 :type :ok :f :acquire}
               {:process 1 :type :invoke :f :acquire}
               {:process 1 :type :ok :f :acquire}";
    let r = run("mutex", edn);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.failures[0].state, "held");
    assert_eq!(r.failures[0].op.as_ref().unwrap().process, "1");
}

// ---------------------------------------------------------------- set

#[test]
fn set_ok() {
    let edn = "{:process 0 :type :invoke :f :add :value 1}
               {:process 0 :type :ok :f :add :value 1}
               {:process 0 :type :invoke :f :add :value 2}
               {:process 1 :type :invoke :f :read :value nil}
               {:process 1 :type :ok :f :read :value #{1 2}}
               {:process 0 :type :ok :f :add :value 2}";
    assert_eq!(verdict("set", edn), Verdict::Valid);
}

#[test]
fn set_lost_add_is_bad() {
    let edn = "{:process 0 :type :invoke :f :add :value 1}
               {:process 0 :type :ok :f :add :value 1}
               {:process 1 :type :invoke :f :read :value nil}
               {:process 1 :type :ok :f :read :value #{}}";
    let r = run("set", edn);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.failures[0].state, "#{1}");
    let phantom = "{:process 1 :type :invoke :f :read :value nil}
                   {:process 1 :type :ok :f :read :value #{9}}";
    assert_eq!(verdict("set", phantom), Verdict::Invalid);
}

// ---------------------------------------------------------------- queues

#[test]
fn unordered_queue_ok_in_any_order() {
    let edn = "{:process 0 :type :invoke :f :enqueue :value 1}
               {:process 0 :type :ok :f :enqueue :value 1}
               {:process 0 :type :invoke :f :enqueue :value 2}
               {:process 0 :type :ok :f :enqueue :value 2}
               {:process 1 :type :invoke :f :dequeue :value nil}
               {:process 1 :type :ok :f :dequeue :value 2}
               {:process 1 :type :invoke :f :dequeue :value nil}
               {:process 1 :type :ok :f :dequeue :value 1}";
    assert_eq!(verdict("unordered-queue", edn), Verdict::Valid);
    assert_eq!(verdict("fifo-queue", edn), Verdict::Invalid);
}

#[test]
fn unordered_queue_duplicate_dequeue_is_bad() {
    let edn = "{:process 0 :type :invoke :f :enqueue :value 1}
               {:process 0 :type :ok :f :enqueue :value 1}
               {:process 1 :type :invoke :f :dequeue :value nil}
               {:process 1 :type :ok :f :dequeue :value 1}
               {:process 2 :type :invoke :f :dequeue :value nil}
               {:process 2 :type :ok :f :dequeue :value 1}";
    let r = run("unordered-queue", edn);
    assert_eq!(r.verdict, Verdict::Invalid);
    assert_eq!(r.failures[0].op.as_ref().unwrap().invoke, 4);
}

#[test]
fn fifo_queue_ok() {
    let edn = "{:process 0 :type :invoke :f :enqueue :value 1}
               {:process 0 :type :ok :f :enqueue :value 1}
               {:process 0 :type :invoke :f :enqueue :value 2}
               {:process 0 :type :ok :f :enqueue :value 2}
               {:process 1 :type :invoke :f :dequeue :value nil}
               {:process 1 :type :ok :f :dequeue :value 1}
               {:process 1 :type :invoke :f :dequeue :value nil}
               {:process 1 :type :ok :f :dequeue :value 2}
               {:process 1 :type :invoke :f :dequeue :value nil}
               {:process 1 :type :ok :f :dequeue :value nil}";
    assert_eq!(verdict("fifo-queue", edn), Verdict::Valid);
}

#[test]
fn fifo_queue_unknown_dequeue_may_have_taken_the_head() {
    let edn = "{:process 0 :type :invoke :f :enqueue :value 1}
               {:process 0 :type :ok :f :enqueue :value 1}
               {:process 0 :type :invoke :f :enqueue :value 2}
               {:process 0 :type :ok :f :enqueue :value 2}
               {:process 2 :type :invoke :f :dequeue :value nil}
               {:process 2 :type :info :f :dequeue :value nil}
               {:process 1 :type :invoke :f :dequeue :value nil}
               {:process 1 :type :ok :f :dequeue :value 2}";
    assert_eq!(verdict("fifo-queue", edn), Verdict::Valid);
    let empty_too_early = "{:process 0 :type :invoke :f :enqueue :value 1}
                           {:process 0 :type :ok :f :enqueue :value 1}
                           {:process 1 :type :invoke :f :dequeue :value nil}
                           {:process 1 :type :ok :f :dequeue :value nil}";
    assert_eq!(verdict("fifo-queue", empty_too_early), Verdict::Invalid);
}

// ---------------------------------------------------------------- errors and budgets

#[test]
fn missing_or_unknown_model_is_unsupported_and_names_the_models() {
    let h = history("{:process 0 :type :invoke :f :read :value nil}");
    let e = check(&h, &CheckOptions::default()).unwrap_err();
    assert!(
        matches!(&e, CheckError::Unsupported(m) if m.contains("cas-register") && m.contains("fifo-queue")),
        "{e}"
    );
    let e = check(&h, &opts("btree")).unwrap_err();
    assert!(
        matches!(&e, CheckError::Unsupported(m) if m.contains("unknown model 'btree'")),
        "{e}"
    );
}

#[test]
fn ops_the_model_cannot_interpret_are_bad_ops() {
    let e = check(
        &history(
            "{:process 0 :type :invoke :f :read :value nil}
             {:process 0 :type :ok :f :read :value 1}
             {:process 0 :type :invoke :f :increment :value 1}",
        ),
        &opts("register"),
    )
    .unwrap_err();
    assert_eq!(
        e,
        CheckError::bad_op(
            2,
            "the register model has ops read and write; cannot interpret :f increment"
        )
    );
    let e = check(
        &history("{:process 0 :type :invoke :f :cas :value 3}"),
        &opts("cas-register"),
    )
    .unwrap_err();
    assert_eq!(
        e,
        CheckError::bad_op(0, "cas needs a value [from to], got 3")
    );
    let e = check(
        &history(r#"{:process 0 :type :invoke :f :get :value nil}"#),
        &opts("kv"),
    )
    .unwrap_err();
    assert_eq!(
        e,
        CheckError::bad_op(0, "a kv op needs a :key; get has none")
    );
}

#[test]
fn contradictory_completion_is_a_bad_op() {
    let e = check(
        &history(
            "{:process 0 :type :invoke :f :write :value 1}
             {:process 0 :type :ok :f :write :value 2}",
        ),
        &opts("register"),
    )
    .unwrap_err();
    assert_eq!(
        e,
        CheckError::bad_op(1, "write completed with value 2 but was invoked with 1")
    );
}

/// Many overlapping writes and a read of a value never written: refuting it
/// means trying every subset of the writes, far more than a budget allows.
fn hard_history() -> History {
    let mut edn = String::new();
    for p in 0..24 {
        edn.push_str(&format!(
            "{{:process {p} :type :invoke :f :write :value {p}}}\n"
        ));
    }
    for p in 0..24 {
        edn.push_str(&format!(
            "{{:process {p} :type :ok :f :write :value {p}}}\n"
        ));
    }
    edn.push_str("{:process 99 :type :invoke :f :read :value nil}\n");
    edn.push_str("{:process 99 :type :ok :f :read :value 1000}\n");
    history(&edn)
}

#[test]
fn time_budget_gives_unknown() {
    let o = CheckOptions {
        budget: Budget {
            deadline: Some(std::time::Instant::now()),
            memory_bytes: 2 << 30,
        },
        ..opts("register")
    };
    let r = check(&hard_history(), &o).unwrap();
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!(r.undecided[0].reason, "time");
    assert!(r.undecided[0].configurations > 0);
}

#[test]
fn memory_budget_gives_unknown() {
    let o = CheckOptions {
        budget: Budget {
            deadline: None,
            memory_bytes: 1 << 20,
        },
        ..opts("register")
    };
    let r = check(&hard_history(), &o).unwrap();
    assert_eq!(r.verdict, Verdict::Unknown);
    assert_eq!(r.undecided[0].reason, "memory");
    assert!(r.memory_bytes_peak <= 1 << 20);
    assert!(r.explain().contains("ran out of memory"), "{}", r.explain());
}

#[test]
fn checker_table_runs_the_check() {
    assert_eq!(CHECKERS.len(), 1);
    assert_eq!(CHECKERS[0].name, "linearizable");
    let report = (CHECKERS[0].run)(&history(KV_BAD), &opts("kv")).unwrap();
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.anomaly_types, vec!["nonlinearizable".to_string()]);
    assert_eq!(report.result["failures"][0]["op"]["invoke"], 6);
    assert!(report.explanation.contains("not linearizable key \"x\""));
}
