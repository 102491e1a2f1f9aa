//! The test lifecycle: set up the cluster, run the workload and the nemesis
//! from one seed, heal, quiesce, run final ops, tear down, check and store.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use splitbrain_generators::{
    clients, clients_and_nemesis, concat, nemesis, phases, rate, repeat, sleep, time_limit, Gen,
    Invocation,
};
use splitbrain_history::{CheckOptions, Format, History, Op, OpWriter, Value, Verdict};
use splitbrain_nemesis::fault::{self, NemesisOptions, Runner};
use splitbrain_nemesis::Target;
use splitbrain_workloads::{build, CheckerUse, WorkloadKind, WorkloadOptions};

use crate::error::RunError;
use crate::interpreter::{self, ClientFactory, Completion, InterpreterOptions, NemesisRunner};
use crate::registry;
use crate::run_store::{self, AppliedFault, RunResults, HISTORY_FILE, RESULTS_FILE, TEST_FILE};

/// A cluster under test in some environment.
#[async_trait]
pub trait Cluster: Send {
    /// A one-line description for the test record (`refstore single-leader sync, 5 local nodes`).
    fn describe(&self) -> String;
    /// Start the database; node logs go under `run_dir`.
    async fn setup(&mut self, run_dir: &Path) -> anyhow::Result<()>;
    /// Clients for the run's workload, with its options (the bank's accounts, say).
    fn client_factory(&self, workload: &WorkloadOptions) -> Arc<dyn ClientFactory>;
    /// The fault executor, if the environment can inject faults.
    fn executor(&mut self) -> Option<Box<dyn Target>>;
    /// Stop the database (unless asked to leave it running) and gather logs.
    async fn teardown(&mut self, leave_running: bool) -> anyhow::Result<Vec<PathBuf>>;
}

/// A run's options; `test.json` is their serialization. Read back, only the
/// name and the workload must be there (a hand-written record for a history
/// of another tool's, say); everything that is there must be right.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestOptions {
    pub name: String,
    pub workload: WorkloadKind,
    #[serde(default)]
    pub workload_options: WorkloadOptions,
    #[serde(default)]
    pub nemesis: NemesisOptions,
    #[serde(default)]
    pub concurrency: usize,
    #[serde(default)]
    pub time_limit_s: f64,
    /// Target client ops per second across all clients (0: as fast as they go).
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub op_timeout_ms: u64,
    /// Seconds to wait after the final heal before final reads.
    #[serde(default)]
    pub quiesce_s: f64,
    #[serde(default)]
    pub store_dir: PathBuf,
    #[serde(default)]
    pub leave_db_running: bool,
    /// The consistency model transactional checkers hold the history to (None: their default).
    #[serde(default)]
    pub consistency_model: Option<String>,
    /// Everything else the user passed (database and mode options), for the record.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// The command line that reproduces this run.
    #[serde(default)]
    pub command: String,
    /// The cluster as it described itself (filled in when the run starts).
    #[serde(default)]
    pub database: String,
    /// The splitbrain version that ran it.
    #[serde(default)]
    pub version: String,
}

impl TestOptions {
    /// Read a stored run's `test.json`; an error names the file and the field.
    pub fn read(path: &Path) -> Result<TestOptions, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let at = if field == "." {
                String::new()
            } else {
                format!(" field {field}:")
            };
            format!("{}:{at} {}", path.display(), e.inner())
        })
    }
}

/// Resolves on SIGINT or SIGTERM, naming it; never, where neither can be watched.
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// What `splitbrain test` reports for one run.
pub struct RunReport {
    pub dir: PathBuf,
    pub results: RunResults,
    pub ops: usize,
}

/// Shared with the controller, so an interrupted run can still heal.
type SharedRunner = Arc<tokio::sync::Mutex<Runner<Box<dyn Target>>>>;

struct NemesisAdapter(SharedRunner);

#[async_trait]
impl NemesisRunner for NemesisAdapter {
    async fn invoke(&mut self, op: &Invocation) -> Completion {
        let out = self.0.lock().await.invoke(&op.f, &op.value).await;
        Completion {
            kind: out.kind,
            value: out.value,
            error: out.error.map(|e| Value::Str(e.into())),
            node: None,
        }
    }
}

/// How often the final reads are repeated while the cluster quiesces.
const CONVERGENCE_POLL_NS: u64 = 50_000_000;

/// The whole schedule: workload and faults for the time limit, then the
/// heal, a quiet period, and the workload's final ops. A workload judged on
/// convergence repeats its final reads through the quiet period, so that the
/// convergence checker sees when each replica reached the final state.
pub fn schedule(
    o: &TestOptions,
    client: Gen,
    final_ops: Option<Gen>,
    checkers: &[CheckerUse],
) -> Gen {
    let polls = checkers.iter().any(|c| c.name == "convergence").then(|| {
        let (kind, options) = (o.workload, workload_options(o));
        repeat(None, move || {
            concat(vec![
                build(kind, &options).final_ops.unwrap_or_else(|| sleep(0)),
                sleep(CONVERGENCE_POLL_NS),
            ])
        })
    });
    let limit_ns = (o.time_limit_s * 1e9) as u64;
    let client = if o.rate > 0.0 {
        rate(o.seed ^ 0x5eed, o.rate, client)
    } else {
        client
    };
    let main = match fault::generator(&NemesisOptions {
        seed: o.seed,
        ..o.nemesis.clone()
    }) {
        Some(nem) => clients_and_nemesis(client, nem),
        None => clients(client),
    };
    let mut parts = vec![time_limit(limit_ns, main)];
    if let Some(heal) = fault::final_generator(&o.nemesis.faults) {
        parts.push(nemesis(heal));
    }
    if let Some(fin) = final_ops {
        let quiet_ns = (o.quiesce_s * 1e9) as u64;
        let quiet = match polls {
            Some(polls) => clients(time_limit(quiet_ns, polls)),
            None => sleep(quiet_ns),
        };
        parts.push(concat(vec![quiet, clients(fin)]));
    }
    phases(parts)
}

fn workload_options(o: &TestOptions) -> WorkloadOptions {
    WorkloadOptions {
        seed: o.seed,
        ..o.workload_options.clone()
    }
}

/// Run one test end to end.
pub async fn run_test(
    o: &TestOptions,
    cluster: &mut dyn Cluster,
    mut on_op: impl FnMut(&Op),
) -> anyhow::Result<RunReport> {
    let dir = run_store::create_run_dir(&o.store_dir, &o.name, SystemTime::now())?;
    let record = TestOptions {
        database: cluster.describe(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..o.clone()
    };
    run_store::write_json(&dir.join(TEST_FILE), &record)?;

    let mut exec = cluster.executor();
    if let Some(e) = &exec {
        fault::check_supported(e.as_ref(), &o.nemesis.faults).map_err(RunError::Refused)?;
    } else if !o.nemesis.faults.is_empty() {
        return Err(RunError::Refused("this environment cannot inject faults".into()).into());
    }
    if let Err(e) = cluster.setup(&dir).await {
        // A half-started cluster is still torn down: nothing is left behind.
        let _ = cluster.teardown(false).await;
        return Err(e.context("setting up the cluster"));
    }

    let workload = build(o.workload, &workload_options(o));
    let gen = schedule(o, workload.client, workload.final_ops, &workload.checkers);
    let history_path = dir.join(HISTORY_FILE);
    let mut out = OpWriter::new(
        BufWriter::new(std::fs::File::create(&history_path)?),
        Format::Jsonl,
    );
    let shared_runner: Option<SharedRunner> = match exec.take() {
        Some(e) if !o.nemesis.faults.is_empty() => {
            Some(Arc::new(tokio::sync::Mutex::new(Runner::new(e, o.seed))))
        }
        _ => None,
    };
    let nemesis_runner: Option<Box<dyn NemesisRunner>> = shared_runner
        .clone()
        .map(|r| Box::new(NemesisAdapter(r)) as Box<dyn NemesisRunner>);
    let iopts = InterpreterOptions {
        concurrency: o.concurrency,
        op_timeout: Duration::from_millis(o.op_timeout_ms),
    };
    let factory = cluster.client_factory(&o.workload_options);
    // Process ids of recorded ops count up from 0; this one is never recorded.
    let mut setup_client = factory.open(u64::MAX);
    if let Err(why) = setup_client.setup().await {
        let _ = cluster.teardown(o.leave_db_running).await;
        anyhow::bail!("setting up the workload's starting state: {why}");
    }
    drop(setup_client);
    // SIGINT or SIGTERM (a CI timeout) ends the run early; what was
    // recorded is kept and checked.
    let mut problem = None;
    let ops = tokio::select! {
        r = interpreter::run(gen, factory, nemesis_runner, &iopts, &mut out, &mut on_op) => match r {
            Ok(r) => r.ops,
            Err(e) => {
                let _ = cluster.teardown(o.leave_db_running).await;
                return Err(anyhow::Error::from(e).context("recording the history"));
            }
        },
        signal = interrupted() => {
            problem = Some(format!("interrupted by {signal}; the history holds what was recorded until then"));
            Vec::new()
        }
    };
    // An interrupted run skipped its final phase: heal here, so a database
    // left running (or shared) is not left broken.
    if problem.is_some() {
        if let Some(r) = &shared_runner {
            let errors = r.lock().await.heal_all().await;
            if !errors.is_empty() {
                problem = problem.map(|p| format!("{p}; healing after it: {}", errors.join("; ")));
            }
        }
    }
    drop(out);
    let _logs = cluster.teardown(o.leave_db_running).await?;

    // Check what is on disk: that is the history a later `analyze` sees.
    let history =
        History::read(&history_path, Some(Format::Jsonl)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut results = check_all_with(
        &history,
        &workload.checkers,
        None,
        o.consistency_model.as_deref(),
    );
    if let Some(p) = failed_faults(&history) {
        problem = Some(match problem {
            Some(q) => format!("{q}; {p}"),
            None => p,
        });
    }
    if let Some(p) = problem {
        results.verdict = results.verdict.worst(Verdict::Unknown);
        results.problem = Some(p);
    }
    run_store::write_json(&dir.join(RESULTS_FILE), &results)?;
    Ok(RunReport {
        dir,
        results,
        ops: ops.len().max(history.len()),
    })
}

/// Nemesis ops that failed: a fault that did not take effect leaves the run
/// proving nothing about it, so such a run is `unknown`.
pub fn failed_faults(history: &History) -> Option<String> {
    let failed: Vec<String> = history
        .ops
        .iter()
        .filter(|op| !op.is_client() && op.kind == splitbrain_history::OpType::Fail)
        .map(|op| {
            format!(
                "{} {} at {:.1} s: {}",
                op.f,
                op.value,
                op.time.unwrap_or(0) as f64 / 1e9,
                op.error.as_ref().map_or(String::new(), |e| match e {
                    Value::Str(s) => s.to_string(),
                    other => other.to_string(),
                })
            )
        })
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "{} nemesis op(s) failed, so the faults the run claims were not all applied: {}",
            failed.len(),
            failed.join("; ")
        )
    })
}

/// Run each checker a workload names; the worst verdict wins, and a checker
/// that errors or panics is `unknown` without stopping the others.
pub fn check_all(history: &History, uses: &[CheckerUse], timeout: Option<Duration>) -> RunResults {
    check_all_with(history, uses, timeout, None)
}

/// [`check_all`], holding transactional checkers to `consistency_model`.
pub fn check_all_with(
    history: &History,
    uses: &[CheckerUse],
    timeout: Option<Duration>,
    consistency_model: Option<&str>,
) -> RunResults {
    let mut reports = Vec::new();
    let mut verdict = Verdict::Valid;
    // One deadline for all the checkers; each runs where it can be left behind.
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let shared = deadline.map(|_| std::sync::Arc::new(history.clone()));
    for u in uses {
        let report = match registry::find(u.name) {
            None => splitbrain_basic::unknown_report(
                u.name,
                format!("checker '{}' is not in this build", u.name),
            ),
            Some(def) => {
                let opts = CheckOptions {
                    model: u.model.map(str::to_string),
                    params: u
                        .params
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                    budget: splitbrain_history::Budget {
                        deadline,
                        ..Default::default()
                    },
                    consistency_model: consistency_model.map(str::to_string),
                    ..CheckOptions::default()
                };
                match &shared {
                    Some(h) => registry::run_until(def, h, &opts, deadline),
                    None => splitbrain_basic::run_guarded(def, history, &opts),
                }
            }
        };
        verdict = verdict.worst(report.verdict);
        reports.push(report);
    }
    let duration_s = history
        .ops
        .iter()
        .rev()
        .find_map(|o| o.time)
        .map(|t| t as f64 / 1e9);
    RunResults {
        verdict,
        checkers: reports,
        problem: None,
        duration_s,
        faults: applied_faults(history),
    }
}

/// The faults splitbrain's nemesis applied, from the completions that
/// opened them (those name their package and phase).
pub fn applied_faults(history: &History) -> Vec<AppliedFault> {
    let kw = |k: &str| Value::Keyword(k.into());
    history
        .ops
        .iter()
        .filter(|op| !op.is_client() && !op.is_invoke() && !op.is_fail())
        .filter_map(|op| {
            let v = &op.value;
            let package = v.map_get(&kw("fault"))?.as_str()?.to_string();
            if v.map_get(&kw("phase"))?.as_str()? != "start" {
                return None;
            }
            let what = match v.map_get(&kw("summary")).and_then(Value::as_str) {
                Some(s) => s.to_string(),
                None => match v {
                    Value::Map(m) => m
                        .iter()
                        .filter(|(k, _)| *k != kw("fault") && *k != kw("phase"))
                        .map(|(k, v)| format!("{} {}", k.as_str().unwrap_or_default(), v))
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                },
            };
            Some(AppliedFault {
                package,
                at_s: op.time.unwrap_or(0) as f64 / 1e9,
                what,
            })
        })
        .collect()
}
