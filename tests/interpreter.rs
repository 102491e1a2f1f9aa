//! The interpreter records exactly what clients saw: invoke then ok / fail /
//! info, timeouts as info, a fresh process after a crash, the nemesis in the
//! same history, and every op on disk as it is recorded.

use std::io::BufWriter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use splitbrain::interpreter::{
    run, Client, ClientFactory, Completion, InterpreterOptions, NemesisRunner,
};
use splitbrain_generators::{
    clients_and_nemesis, limit, start_stop_cycle, time_limit, Invocation, OpSpec,
};
use splitbrain_history::{Format, History, OpType, OpWriter, Process, Value};
use splitbrain_workloads::{build, WorkloadKind, WorkloadOptions};

/// Every 7th op hangs past the timeout, every 5th fails, the rest succeed.
struct Flaky {
    counter: Arc<AtomicU64>,
}

#[async_trait]
impl Client for Flaky {
    async fn invoke(&mut self, op: &Invocation) -> Completion {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        if n % 7 == 6 {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        if n % 5 == 4 {
            return Completion::fail(op.value.clone(), "refused");
        }
        Completion::ok(if op.f == "read" {
            Value::Int(0)
        } else {
            op.value.clone()
        })
    }
}

struct FlakyFactory {
    counter: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
}

impl ClientFactory for FlakyFactory {
    fn open(&self, _process: u64) -> Box<dyn Client> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Box::new(Flaky {
            counter: self.counter.clone(),
        })
    }
}

struct Nemesis;

#[async_trait]
impl NemesisRunner for Nemesis {
    async fn invoke(&mut self, op: &Invocation) -> Completion {
        Completion {
            kind: OpType::Info,
            value: op.value.clone(),
            error: None,
            node: None,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn records_timeouts_as_info_and_replaces_crashed_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let mut out = OpWriter::new(
        BufWriter::new(std::fs::File::create(&path).unwrap()),
        Format::Jsonl,
    );
    let w = build(
        WorkloadKind::Register,
        &WorkloadOptions {
            seed: 3,
            ..Default::default()
        },
    );
    let nem = start_stop_cycle(
        20_000_000,
        OpSpec::new("start-partition", "majority"),
        OpSpec::new("stop-partition", Value::Nil),
    );
    let gen = time_limit(300_000_000, clients_and_nemesis(limit(60, w.client), nem));
    let factory = Arc::new(FlakyFactory {
        counter: Arc::new(AtomicU64::new(0)),
        opened: Arc::new(AtomicU64::new(0)),
    });
    let opened = factory.opened.clone();
    let opts = InterpreterOptions {
        concurrency: 3,
        op_timeout: Duration::from_millis(50),
    };
    let mut seen = 0;
    let outcome = runtime()
        .block_on(run(
            gen,
            factory,
            Some(Box::new(Nemesis)),
            &opts,
            &mut out,
            |_| seen += 1,
        ))
        .unwrap();
    drop(out);
    assert_eq!(seen, outcome.ops.len());

    // What is on disk is the history, and it pairs.
    let h = History::read(&path, None).expect("the recorded history is valid");
    assert_eq!(h.ops, outcome.ops);
    let stats = h.stats();
    assert_eq!(stats.invocations, 60);
    assert_eq!(stats.open, 0);
    assert!(stats.info >= 5, "timeouts become info: {stats:?}");
    assert!(stats.fail >= 5, "{stats:?}");
    assert!(stats.nemesis_ops >= 4, "{stats:?}");
    assert!(h
        .ops
        .iter()
        .filter(|o| o.is_info() && o.is_client())
        .all(|o| o.error == Some(Value::Keyword("timeout".into()))));
    // A crashed process never comes back; its thread continues as a new one, with a new client.
    let max_process = h
        .ops
        .iter()
        .filter_map(|o| o.process.client_id())
        .max()
        .unwrap();
    assert!(max_process >= 3, "processes were replaced: {max_process}");
    // (The last crash of a thread may not be followed by another op.)
    assert!(
        opened.load(Ordering::SeqCst) as usize > 3,
        "crashed processes get fresh clients"
    );
    // Monotonic timestamps.
    assert!(h.ops.windows(2).all(|w| w[0].time <= w[1].time));
    assert!(h
        .ops
        .iter()
        .any(|o| o.process == Process::Nemesis && o.f == "start-partition"));
}

#[test]
fn same_seed_same_invocations() {
    let invocations = |seed: u64, concurrency: usize| {
        let mut out = OpWriter::new(Vec::new(), Format::Jsonl);
        let w = build(
            WorkloadKind::ListAppend,
            &WorkloadOptions {
                seed,
                ..Default::default()
            },
        );
        let factory = Arc::new(FlakyFactory {
            counter: Arc::new(AtomicU64::new(1)),
            opened: Arc::new(AtomicU64::new(0)),
        });
        // Timeouts make the interleaving differ between runs; the invocations must not.
        let opts = InterpreterOptions {
            concurrency,
            op_timeout: Duration::from_millis(5),
        };
        let outcome = runtime()
            .block_on(run(
                limit(300, w.client),
                factory,
                None,
                &opts,
                &mut out,
                |_| {},
            ))
            .unwrap();
        outcome
            .ops
            .into_iter()
            .filter(|o| o.is_invoke())
            .map(|o| (o.f, o.value))
            .collect::<Vec<_>>()
    };
    let a = invocations(42, 4);
    assert_eq!(a.len(), 300);
    assert_eq!(a, invocations(42, 4));
    assert_eq!(
        a,
        invocations(42, 2),
        "concurrency does not change the sequence"
    );
    assert_ne!(a, invocations(43, 4));
}
