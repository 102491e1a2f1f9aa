//! The harness must never be the bottleneck: run the register workload
//! against a client that answers at once and print recorded ops per second
//! and the harness's cost per op (generator + recording + dispatch).
//! Run: `cargo bench -p splitbrain --bench interpreter`.

use std::io::BufWriter;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use splitbrain::interpreter::{run, Client, ClientFactory, Completion, InterpreterOptions};
use splitbrain_history::{Format, OpWriter, Value};
use splitbrain_workloads::generator::{limit, Invocation};
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
}
