//! The harness must never be the bottleneck: run the register workload
//! against a client that answers at once and print recorded ops per second
//! and the harness's cost per op (generator + recording + dispatch).
//! Then the same against the reference store (5 local nodes, single-leader
//! sync): the harness's busy time per op there, beside the ops' latency.
//! Run: `cargo bench -p splitbrain --bench interpreter`.

use std::io::BufWriter;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use splitbrain::interpreter::{run, Client, ClientFactory, Completion, InterpreterOptions};
use splitbrain_generators::{limit, Invocation};
use splitbrain_history::{Format, OpWriter, Value};
use splitbrain_workloads::{build, WorkloadKind, WorkloadOptions};

struct Noop;

#[async_trait]
impl Client for Noop {
    async fn invoke(&mut self, op: &Invocation) -> Completion {
        Completion::ok(if op.f == "read" {
            Value::Int(1)
        } else {
            op.value.clone()
        })
    }
}

struct NoopFactory;

impl ClientFactory for NoopFactory {
    fn open(&self, _process: u64) -> Box<dyn Client> {
        Box::new(Noop)
    }
}

fn main() {
    let invocations: u64 = std::env::var("OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500_000);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (rt_name, rt, concurrency) in [
        ("2 threads", &multi, 1usize),
        ("2 threads", &multi, 10),
        ("2 threads", &multi, 50),
        ("1 thread", &single, 1),
        ("1 thread", &single, 10),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut out = OpWriter::new(
            BufWriter::new(std::fs::File::create(&path).unwrap()),
            Format::Jsonl,
        );
        let w = build(
            WorkloadKind::Register,
            &WorkloadOptions {
                seed: 1,
                ..Default::default()
            },
        );
        let opts = InterpreterOptions {
            concurrency,
            op_timeout: Duration::from_secs(5),
        };
        let outcome = rt
            .block_on(run(
                limit(invocations, w.client),
                Arc::new(NoopFactory),
                None,
                &opts,
                &mut out,
                |_| {},
            ))
            .unwrap();
        let secs = outcome.elapsed.as_secs_f64();
        println!(
            "interpreter ({rt_name}), no-op client, concurrency {concurrency:>2}: {} ops recorded in {:.2} s = {:.0} recorded ops/s; harness busy {:.2} us per invocation (generator, recording, dispatch); history {:.1} MB",
            outcome.ops.len(),
            secs,
            outcome.ops.len() as f64 / secs,
            outcome.harness_busy.as_secs_f64() * 1e6 / invocations as f64,
            std::fs::metadata(&path).unwrap().len() as f64 / 1e6
        );
    }
    refstore(&single, invocations.min(100_000));
}

/// The harness's own cost per op against the reference store: generator,
/// dispatch and recording, not waiting for the store.
fn refstore(rt: &tokio::runtime::Runtime, invocations: u64) {
    let dir = tempfile::tempdir().unwrap();
    let base: splitbrain_store::config::ClusterConfig = toml::from_str("nodes = []").unwrap();
    let mut cluster = splitbrain::deploy::cluster(
        &splitbrain::dbs::DbOptions {
            db: "refstore".into(),
            env: "local".into(),
            nodes: 5,
            workload: WorkloadKind::Register,
            isolation: None,
            op_timeout: Duration::from_secs(1),
            refstore: Some(base),
        },
        &splitbrain::env::EnvOptions {
            image: None,
            harness_program: Some(env!("CARGO_BIN_EXE_splitbrain").into()),
            leave_running: false,
        },
    )
    .unwrap();
    rt.block_on(cluster.setup(dir.path())).unwrap();
    let path = dir.path().join("history.jsonl");
    let mut out = OpWriter::new(
        BufWriter::new(std::fs::File::create(&path).unwrap()),
        Format::Jsonl,
    );
    let w = build(
        WorkloadKind::Register,
        &WorkloadOptions {
            seed: 1,
            ..Default::default()
        },
    );
    let opts = InterpreterOptions {
        concurrency: 10,
        op_timeout: Duration::from_secs(1),
    };
    let outcome = rt
        .block_on(run(
            limit(invocations, w.client),
            cluster.client_factory(&WorkloadOptions::default()),
            None,
            &opts,
            &mut out,
            |_| {},
        ))
        .unwrap();
    rt.block_on(cluster.teardown(false)).unwrap();
    let secs = outcome.elapsed.as_secs_f64();
    let ok = outcome
        .ops
        .iter()
        .filter(|o| o.kind == splitbrain_history::OpType::Ok)
        .count();
    println!(
        "interpreter (1 thread) against the reference store (5 local nodes, single-leader sync), concurrency 10: {invocations} invocations ({ok} ok) in {secs:.2} s = {:.0} ops/s; harness busy {:.2} us per op (generator, recording, dispatch), {:.1}% of the run",
        invocations as f64 / secs,
        outcome.harness_busy.as_secs_f64() * 1e6 / invocations as f64,
        100.0 * outcome.harness_busy.as_secs_f64() / secs
    );
}
