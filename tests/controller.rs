//! The lifecycle against an in-memory register on the shared fake environment: the run directory
//! holds test.json, history.jsonl and results.json, `latest` points at it,
//! the nemesis ops are in the history, and the final heal runs.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use splitbrain::controller::{run_test, TestOptions};
use splitbrain::deploy::Deployment;
use splitbrain::testkit::{CallLog, FakeEnv, MemDb};
use splitbrain_history::{History, Process};
use splitbrain_nemesis::fault::{parse_faults, NemesisOptions};
use splitbrain_nemesis::Ability;
use splitbrain_workloads::{WorkloadKind, WorkloadOptions};

/// The in-memory register on the shared fake environment, which lacks clocks.
fn cluster() -> (Deployment, CallLog, Arc<Mutex<bool>>) {
    let log = CallLog::default();
    let env = FakeEnv::new(log.clone()).lacking(Ability::Clock, "no clocks in memory");
    let torn_down = env.torn_down();
    let c = Deployment::new(
        Box::new(MemDb::default()),
        splitbrain::env::NodeImage::default(),
        Box::new(env),
        Duration::from_secs(1),
    );
    (c, log, torn_down)
}

fn options(store_dir: &Path, nemesis: &str) -> TestOptions {
    TestOptions {
        name: "mem-register".into(),
        workload: WorkloadKind::Register,
        workload_options: WorkloadOptions::default(),
        nemesis: NemesisOptions {
            faults: parse_faults(nemesis).unwrap(),
            interval_s: 0.2,
            ..Default::default()
        },
        concurrency: 4,
        time_limit_s: 1.0,
        rate: 2000.0,
        seed: 11,
        op_timeout_ms: 1000,
        quiesce_s: 0.1,
        store_dir: store_dir.to_path_buf(),
        leave_db_running: false,
        consistency_model: None,
        extra: Default::default(),
        command: "test".into(),
        database: String::new(),
        version: String::new(),
    }
}

#[test]
fn a_run_is_stored_and_healed() {
    let store = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut cluster, log, torn_down) = cluster();
    let report = rt
        .block_on(run_test(
            &options(store.path(), "partition,kill"),
            &mut cluster,
            |_| {},
        ))
        .unwrap();
    assert!(*torn_down.lock().unwrap());
    for f in ["test.json", "history.jsonl", "results.json"] {
        assert!(report.dir.join(f).exists(), "{f}");
    }
    assert_eq!(
        std::fs::canonicalize(store.path().join("latest")).unwrap(),
        std::fs::canonicalize(&report.dir).unwrap()
    );
    let h = History::read(&report.dir.join("history.jsonl"), None).unwrap();
    assert!(h.stats().invocations > 500, "{:?}", h.stats());
    let nemesis: Vec<_> = h
        .ops
        .iter()
        .filter(|o| o.process == Process::Nemesis)
        .map(|o| o.f.to_string())
        .collect();
    assert!(
        nemesis
            .iter()
            .any(|f| f == "start-partition" || f == "kill"),
        "{nemesis:?}"
    );
    // The last nemesis ops are the final heal, before the teardown.
    let log = log.lock().unwrap().clone();
    assert_eq!(log.first().map(String::as_str), Some("place n1,n2,n3"));
    assert_eq!(log.last().map(String::as_str), Some("teardown"));
    let before_teardown = &log[..log.len() - 1];
    assert!(
        before_teardown.iter().rev().take(2).any(|l| l == "heal")
            && before_teardown
                .iter()
                .rev()
                .take(2)
                .any(|l| l.starts_with("restart")),
        "{log:?}"
    );
    let test: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.dir.join("test.json")).unwrap()).unwrap();
    assert_eq!(test["seed"], 11);
    assert_eq!(test["database"], "in-memory register, a fake environment");

    // The run renders to a report, and the index lists it.
    let page = splitbrain::report::render_run(&report.dir).unwrap();
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.contains("class=\"fault\""), "fault windows are shaded");
    assert!(html.contains("id=\"timeline\""));
    assert!(html.contains("mem-register"));
    let runs = splitbrain::run_store::list_runs(store.path()).unwrap();
    assert_eq!(runs.len(), 1);
    let index = splitbrain::serve::index_html(store.path(), &runs);
    assert!(index.contains("mem-register/") && index.contains("report.html"));
}

#[test]
fn impossible_faults_are_refused_before_anything_starts() {
    let store = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut cluster, _log, torn_down) = cluster();
    let err = rt
        .block_on(run_test(
            &options(store.path(), "clock"),
            &mut cluster,
            |_| {},
        ))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "refused: clock: no clock ability: no clocks in memory"
    );
    assert!(!*torn_down.lock().unwrap());
}
