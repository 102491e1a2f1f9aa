//! The lifecycle against an in-process register store: the run directory
//! holds test.json, history.jsonl and results.json, `latest` points at it,
//! the nemesis ops are in the history, and the final heal runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use splitbrain::controller::{run_test, Cluster, TestOptions};
use splitbrain::interpreter::{Client, ClientFactory, Completion};
use splitbrain_generators::Invocation;
use splitbrain_history::{History, Process, Value};
use splitbrain_nemesis::fault::{parse_faults, NemesisOptions};
use splitbrain_nemesis::Grudge;
use splitbrain_nemesis::{Ability, Target};
use splitbrain_workloads::{WorkloadKind, WorkloadOptions};

type Store = Arc<Mutex<HashMap<Value, i64>>>;

/// A single-copy register per key: linearizable by construction.
struct MemClient(Store);

#[async_trait]
impl Client for MemClient {
    async fn invoke(&mut self, op: &Invocation) -> Completion {
        let key = op.key.clone().unwrap_or_default();
        let mut m = self.0.lock().unwrap();
        match op.f.as_str() {
            "read" => Completion::ok(m.get(&key).map_or(Value::Nil, |v| Value::Int(*v))),
            "write" => {
                m.insert(key, op.value.as_int().unwrap());
                Completion::ok(op.value.clone())
            }
            "cas" => {
                let l = op.value.as_list().unwrap();
                let (from, to) = (l[0].as_int().unwrap(), l[1].as_int().unwrap());
                if m.get(&key) == Some(&from) {
                    m.insert(key, to);
                    Completion::ok(op.value.clone())
                } else {
                    Completion::fail(op.value.clone(), "precondition-failed")
                }
            }
            f => Completion::fail(Value::Nil, &format!("unknown-f-{f}")),
        }
    }
}

struct MemFactory(Store);

impl ClientFactory for MemFactory {
    fn open(&self, _process: u64) -> Box<dyn Client> {
        Box::new(MemClient(self.0.clone()))
    }
}

/// Faults that only record what they were asked to do.
struct Log(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Target for Log {
    fn lacks(&self, ability: Ability) -> Option<String> {
        (ability == Ability::Clock).then(|| "no clocks in memory".into())
    }
    fn nodes(&self) -> Vec<String> {
        vec!["n1".into(), "n2".into(), "n3".into()]
    }
    async fn partition(&mut self, _g: &Grudge) -> Result<(), String> {
        self.0.lock().unwrap().push("partition".into());
        Ok(())
    }
    async fn heal(&mut self) -> Result<(), String> {
        self.0.lock().unwrap().push("heal".into());
        Ok(())
    }
    async fn kill(&mut self, n: &[String]) -> Result<(), String> {
        self.0.lock().unwrap().push(format!("kill {}", n.join(",")));
        Ok(())
    }
    async fn restart(&mut self, n: &[String]) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push(format!("restart {}", n.join(",")));
        Ok(())
    }
    async fn pause(&mut self, _n: &[String]) -> Result<(), String> {
        Ok(())
    }
    async fn resume(&mut self, _n: &[String]) -> Result<(), String> {
        Ok(())
    }
}

struct MemCluster {
    store: Store,
    log: Arc<Mutex<Vec<String>>>,
    torn_down: bool,
}

#[async_trait]
impl Cluster for MemCluster {
    fn describe(&self) -> String {
        "in-memory register".into()
    }
    async fn setup(&mut self, _run_dir: &Path) -> anyhow::Result<()> {
        Ok(())
    }
    fn client_factory(&self, _: &WorkloadOptions) -> Arc<dyn ClientFactory> {
        Arc::new(MemFactory(self.store.clone()))
    }
    fn executor(&mut self) -> Option<Box<dyn Target>> {
        Some(Box::new(Log(self.log.clone())))
    }
    async fn teardown(&mut self, _leave: bool) -> anyhow::Result<Vec<PathBuf>> {
        self.torn_down = true;
        Ok(Vec::new())
    }
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
    let mut cluster = MemCluster {
        store: Default::default(),
        log: Default::default(),
        torn_down: false,
    };
    let report = rt
        .block_on(run_test(
            &options(store.path(), "partition,kill"),
            &mut cluster,
            |_| {},
        ))
        .unwrap();
    assert!(cluster.torn_down);
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
    // The last nemesis ops are the final heal.
    let log = cluster.log.lock().unwrap().clone();
    assert!(
        log.iter().rev().take(2).any(|l| l == "heal")
            && log.iter().rev().take(2).any(|l| l.starts_with("restart")),
        "{log:?}"
    );
    let test: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.dir.join("test.json")).unwrap()).unwrap();
    assert_eq!(test["seed"], 11);
    assert_eq!(test["database"], "in-memory register");

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
    let mut cluster = MemCluster {
        store: Default::default(),
        log: Default::default(),
        torn_down: false,
    };
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
    assert!(!cluster.torn_down);
}
