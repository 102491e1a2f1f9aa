//! The interpreter: the only part of splitbrain that owns tasks and clocks.
//!
//! It asks the generator for ops, hands each to a worker task that runs it
//! against a client (or the nemesis), records the invocation and completion
//! with monotonic timestamps, and streams every op to disk as it happens.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use smol_str::SmolStr;
use splitbrain_generators::{Context, Gen, Invocation, Poll, Thread};
use splitbrain_history::{Op, OpType, OpWriter, Process, Value};
use tokio::sync::mpsc;

/// How an op ended, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// `Ok`, `Fail` (certainly did not happen) or `Info` (unknown).
    pub kind: OpType,
    pub value: Value,
    pub error: Option<Value>,
    pub node: Option<SmolStr>,
}

impl Completion {
    pub fn ok(value: Value) -> Self {
        Completion {
            kind: OpType::Ok,
            value,
            error: None,
            node: None,
        }
    }
    pub fn fail(value: Value, error: &str) -> Self {
        Completion {
            kind: OpType::Fail,
            value,
            error: Some(Value::Keyword(error.into())),
            node: None,
        }
    }
    pub fn info(value: Value, error: &str) -> Self {
        Completion {
            kind: OpType::Info,
            value,
            error: Some(Value::Keyword(error.into())),
            node: None,
        }
    }
}

/// A client of the system under test, one per process.
#[async_trait]
pub trait Client: Send {
    async fn invoke(&mut self, op: &Invocation) -> Completion;

    /// Once per test, on one client, before any op: put the database in the
    /// workload's starting state (the bank's opening balances), as Jepsen's
    /// `setup!`. Not recorded in the history.
    async fn setup(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Opens clients; a process that crashed gets a fresh client.
pub trait ClientFactory: Send + Sync + 'static {
    fn open(&self, process: u64) -> Box<dyn Client>;
}

/// Runs nemesis ops; their completions are recorded like any other.
#[async_trait]
pub trait NemesisRunner: Send {
    async fn invoke(&mut self, op: &Invocation) -> Completion;
}

pub struct InterpreterOptions {
    pub concurrency: usize,
    /// A client op still running after this is recorded as `info`.
    pub op_timeout: Duration,
}

/// What a run produced.
pub struct RunOutcome {
    pub ops: Vec<Op>,
    pub elapsed: Duration,
    /// CPU time the interpreter itself spent (generator, recording, dispatch),
    /// as opposed to waiting for clients: the harness's own cost. Counted on
    /// the thread's CPU clock, so time the thread was preempted by the
    /// database's processes is not charged to the harness.
    pub harness_busy: Duration,
}

/// This thread's CPU time in ns. The busy sections it brackets hold no
/// `.await`, so the task cannot move threads in between.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The longest a recorded op waits in memory before it is written out.
const FLUSH_EVERY: Duration = Duration::from_millis(2);

struct Done {
    thread: Thread,
    completion: Completion,
}

/// Run `gen` to completion, writing each op to `out` as it is recorded.
pub async fn run<W: Write>(
    mut gen: Gen,
    clients: Arc<dyn ClientFactory>,
    mut nemesis: Option<Box<dyn NemesisRunner>>,
    opts: &InterpreterOptions,
    out: &mut OpWriter<W>,
    mut on_op: impl FnMut(&Op),
) -> std::io::Result<RunOutcome> {
    let start = Instant::now();
    let now_ns = || start.elapsed().as_nanos() as u64;
    let n = opts.concurrency.max(1);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();

    // One worker task per client thread, fed through its own channel.
    let mut workers: Vec<mpsc::UnboundedSender<(u64, Invocation)>> = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n + 1);
    for t in 0..n {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Invocation)>();
        workers.push(tx);
        let done_tx = done_tx.clone();
        let factory = clients.clone();
        let mut client = factory.open(t as u64);
        let mut client_process = t as u64;
        let timeout = opts.op_timeout;
        handles.push(tokio::spawn(async move {
            while let Some((process, inv)) = rx.recv().await {
                if process != client_process {
                    // The previous process crashed; its client may be wedged.
                    client = factory.open(process);
                    client_process = process;
                }
                // A client that panics is a crash of that process: its op's outcome is unknown.
                let call = std::panic::AssertUnwindSafe(client.invoke(&inv)).catch_unwind();
                let completion = match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(_)) => Completion::info(Value::Nil, "client-panicked"),
                    Err(_) => Completion::info(Value::Nil, "timeout"),
                };
                if done_tx
                    .send(Done {
                        thread: inv.thread,
                        completion,
                    })
                    .is_err()
                {
                    break;
                }
            }
        }));
    }
    let (nem_tx, mut nem_rx) = mpsc::unbounded_channel::<Invocation>();
    if let Some(mut nem) = nemesis.take() {
        let done_tx = done_tx.clone();
        handles.push(tokio::spawn(async move {
            while let Some(inv) = nem_rx.recv().await {
                let completion = match std::panic::AssertUnwindSafe(nem.invoke(&inv))
                    .catch_unwind()
                    .await
                {
                    Ok(c) => c,
                    Err(_) => Completion::info(inv.value.clone(), "nemesis-panicked"),
                };
                if done_tx
                    .send(Done {
                        thread: Thread::Nemesis,
                        completion,
                    })
                    .is_err()
                {
                    break;
                }
            }
        }));
    } else {
        nem_rx.close();
    }
    drop(done_tx);

    let mut threads: Vec<Thread> = (0..n).map(Thread::Client).collect();
    let has_nemesis = !nem_tx.is_closed();
    if has_nemesis {
        threads.push(Thread::Nemesis);
    }
    // The process each client thread runs now; a crash moves it on by `n`, as in Jepsen.
    let mut process: Vec<u64> = (0..n as u64).collect();
    // Ops in flight, by thread: the invocation's history position.
    let mut in_flight: Vec<Option<(usize, Invocation)>> = vec![None; n + 1];
    let slot = |t: Thread| match t {
        Thread::Client(i) => i,
        Thread::Nemesis => n,
    };
    // An op the generator committed to, waiting for its time.
    let mut scheduled: Option<Invocation> = None;
    let mut ops: Vec<Op> = Vec::new();
    let mut gen_done = false;

    let mut record =
        |ops: &mut Vec<Op>, mut op: Op, out: &mut OpWriter<W>| -> std::io::Result<usize> {
            op.index = ops.len() as u64;
            out.write(&op)?;
            on_op(&op);
            ops.push(op);
            Ok(ops.len() - 1)
        };

    let mut last_flush = Instant::now();
    let mut flushed = 0usize;
    let mut busy_since = thread_cpu_ns();
    let mut harness_busy = Duration::ZERO;
    loop {
        // Hand out every op that is due.
        let mut wake: Option<u64> = None;
        loop {
            let now = now_ns();
            if let Some(inv) = scheduled.take() {
                if inv.time_ns > now {
                    wake = Some(inv.time_ns);
                    scheduled = Some(inv);
                    break;
                }
                let p = match inv.thread {
                    Thread::Client(i) => Process::Client(process[i]),
                    Thread::Nemesis => Process::Nemesis,
                };
                let mut op = Op::new(p.clone(), OpType::Invoke, &inv.f, inv.value.clone());
                op.time = Some(now as i64);
                op.key = inv.key.clone();
                let pos = record(&mut ops, op, out)?;
                match inv.thread {
                    Thread::Client(i) => {
                        let _ = workers[i].send((process[i], inv.clone()));
                    }
                    Thread::Nemesis => {
                        let _ = nem_tx.send(inv.clone());
                    }
                }
                let s = slot(inv.thread);
                in_flight[s] = Some((pos, inv));
                continue;
            }
            if gen_done {
                break;
            }
            let free: Vec<Thread> = threads
                .iter()
                .copied()
                .filter(|t| in_flight[slot(*t)].is_none())
                .collect();
            let ctx = Context::new(now, free, threads.clone());
            match gen.next(&ctx) {
                Poll::Op(inv) => {
                    if in_flight[slot(inv.thread)].is_some() || !threads.contains(&inv.thread) {
                        return Err(std::io::Error::other(format!(
                            "the generator chose a busy or unknown thread {:?}",
                            inv.thread
                        )));
                    }
                    scheduled = Some(inv);
                }
                Poll::Pending { wake_ns } => {
                    wake = wake_ns;
                    break;
                }
                Poll::Done => {
                    gen_done = true;
                    break;
                }
            }
        }
        let busy = in_flight.iter().any(Option::is_some);
        if gen_done && scheduled.is_none() && !busy {
            break;
        }
        // What is recorded reaches the OS within FLUSH_EVERY, and before any
        // longer wait: a crash of the harness loses at most that much, and a
        // busy run pays one write per batch of ops rather than per op.
        if ops.len() > flushed && last_flush.elapsed() >= FLUSH_EVERY {
            out.flush()?;
            flushed = ops.len();
            last_flush = Instant::now();
        }
        let flush_by = (ops.len() > flushed).then(|| now_ns() + FLUSH_EVERY.as_nanos() as u64);
        let wake = match (wake, flush_by) {
            (Some(w), Some(f)) => Some(w.min(f)),
            (w, f) => w.or(f),
        };
        harness_busy += Duration::from_nanos(thread_cpu_ns().saturating_sub(busy_since));
        let done = match wake {
            Some(w) => {
                let wait = Duration::from_nanos(w.saturating_sub(now_ns()));
                match tokio::time::timeout(wait, done_rx.recv()).await {
                    Ok(d) => d,
                    Err(_) => {
                        busy_since = thread_cpu_ns();
                        if ops.len() > flushed {
                            out.flush()?;
                            flushed = ops.len();
                            last_flush = Instant::now();
                        }
                        continue;
                    }
                }
            }
            None if busy => done_rx.recv().await,
            None => {
                // Pending with nothing in flight and no wake-up time: poll again shortly.
                tokio::time::sleep(Duration::from_millis(1)).await;
                busy_since = thread_cpu_ns();
                continue;
            }
        };
        busy_since = thread_cpu_ns();
        let Some(mut d) = done else { break };
        // Drain every completion that is already here before asking the generator again.
        loop {
            let s = slot(d.thread);
            let (pos, inv) = in_flight[s]
                .take()
                .expect("a completion for a thread with an op in flight");
            let invoked = &ops[pos];
            let mut op = Op::new(
                invoked.process.clone(),
                d.completion.kind,
                &inv.f,
                d.completion.value,
            );
            op.time = Some(now_ns() as i64);
            op.key = inv.key.clone();
            op.error = d.completion.error;
            op.node = d.completion.node.map(Into::into);
            let crashed = op.is_info() && op.is_client();
            let pos = record(&mut ops, op, out)?;
            if crashed {
                if let Thread::Client(i) = d.thread {
                    process[i] += n as u64;
                }
            }
            let free: Vec<Thread> = threads
                .iter()
                .copied()
                .filter(|t| in_flight[slot(*t)].is_none())
                .collect();
            gen.update(
                &Context::new(now_ns(), free, threads.clone()),
                d.thread,
                &ops[pos],
            );
            match done_rx.try_recv() {
                Ok(next) => d = next,
                Err(_) => break,
            }
        }
    }
    out.flush()?;
    drop(workers);
    drop(nem_tx);
    for h in handles {
        let _ = h.await;
    }
    Ok(RunOutcome {
        ops,
        elapsed: start.elapsed(),
        harness_busy,
    })
}
