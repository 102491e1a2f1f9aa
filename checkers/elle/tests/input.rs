//! Elle's own EDN histories and our JSON Lines read the same way; budgets
//! end in a report that says the search was cut short.

use std::time::{Duration, Instant};

use splitbrain_elle::{check_list_append, cycle_dots_from_json, shorthand, CHECKERS};
use splitbrain_history::{Budget, CheckOptions, CheckOutcome, Format, History, Verdict};

const EDN: &str = r#"
{:type :invoke, :f :txn, :value [[:r 1 nil] [:append 2 1]], :time 1, :process 0, :index 0}
{:type :invoke, :f :txn, :value [[:r 2 nil] [:append 1 1]], :time 2, :process 1, :index 1}
{:type :ok, :f :txn, :value [[:r 1 []] [:append 2 1]], :time 3, :process 0, :index 2}
{:type :ok, :f :txn, :value [[:r 2 nil] [:append 1 1]], :time 4, :process 1, :index 3}
{:type :info, :f :start-partition, :value nil, :process :nemesis, :index 4}
{:type :invoke, :f :txn, :value [[:r 1 nil] [:r 2 nil]], :time 5, :process 0, :index 5}
{:type :ok, :f :txn, :value [[:r 1 [1]] [:r 2 [1]]], :time 6, :process 0, :index 6}
"#;

#[test]
fn reads_elle_edn_histories() {
    let dir = std::env::temp_dir().join(format!("elle-edn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.edn");
    std::fs::write(&path, EDN).unwrap();
    let h = History::read(&path, Some(Format::Edn)).unwrap();
    let r = check_list_append(&h, &CheckOptions::default()).unwrap();
    assert_eq!(r.consistency_model, "strict-serializable");
    assert_eq!(r.anomaly_types, vec!["G2-item".to_string()]);
    // The same history as JSON Lines.
    let jsonl = dir.join("history.jsonl");
    let mut out = Vec::new();
    {
        let mut w = splitbrain_history::OpWriter::new(&mut out, Format::Jsonl);
        for op in &h.ops {
            w.write(op).unwrap();
        }
        w.flush().unwrap();
    }
    std::fs::write(&jsonl, out).unwrap();
    let h2 = History::read(&jsonl, Some(Format::Jsonl)).unwrap();
    let r2 = check_list_append(&h2, &CheckOptions::default()).unwrap();
    assert_eq!(r2.anomaly_types, r.anomaly_types);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expired_budget_reports_a_cut_short_search() {
    let h = shorthand::history(&["r1:nil a2:1 | r2:nil a1:1", "r1:[1] r2:[1]"]);
    let opts = CheckOptions {
        budget: Budget {
            deadline: Some(Instant::now() - Duration::from_millis(1)),
            ..Budget::default()
        },
        ..CheckOptions::default()
    };
    let r = check_list_append(&h, &opts).unwrap();
    assert!(r.cut_short.is_some());
    // The search named no cycle, but a strongly connected ww/wr/rw component proves one.
    assert_eq!(r.verdict, Verdict::Invalid, "{}", r.explain());
    assert_eq!(r.anomaly_types, vec!["PL-3-cycle-exists".to_string()]);
    // Snapshot isolation allows some such cycles: nothing decides, so unknown.
    let si = CheckOptions {
        consistency_model: Some("snapshot-isolation".into()),
        ..opts.clone()
    };
    let r = check_list_append(&h, &si).unwrap();
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.explain());
    assert_eq!(r.anomaly_types, vec!["cycle-search-timeout".to_string()]);
    // Non-cycle anomalies still make it invalid.
    let h = shorthand::history(&[
        "fail a1:1",
        "r1:[1]",
        "r2:nil a1:2 | r1:nil a2:1",
        "r1:[1 2] r2:[1]",
    ]);
    let r = check_list_append(&h, &opts).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid);
}

#[test]
fn checker_table_and_dot_files() {
    let names: Vec<&str> = CHECKERS.iter().map(|c| c.name).collect();
    assert_eq!(names, vec!["list-append", "rw-register"]);
    let h = shorthand::history(&["r1:nil a2:1 | r2:nil a1:1", "r1:[1] r2:[1]"]);
    let report = (CHECKERS[0].run)(&h, &CheckOptions::default()).unwrap();
    assert_eq!(report.verdict, Verdict::Invalid);
    assert!(
        report.explanation.contains("a contradiction!"),
        "{}",
        report.explanation
    );
    let dots = cycle_dots_from_json(&report.result);
    assert_eq!(dots.len(), 1);
    assert!(dots[0].1.contains("digraph"));
    let rw = (CHECKERS[1].run)(
        &shorthand::history(&["w1:1", "r1:1"]),
        &CheckOptions::default(),
    )
    .unwrap();
    assert_eq!(rw.verdict, Verdict::Valid);
}
