//! Linearizability checking: Wing-Gong / Lowe search with a cache of
//! (linearized set, model state) configurations, per-key (P-compositional)
//! partitioning where the model allows it, partitions searched in parallel on
//! up to two threads, and time and memory budgets that end in `unknown`
//! instead of a hang.
//!
//! Semantics (Knossos's where it has them): a `fail` op did not happen; an
//! `info` op, or one never completed, may take effect at any point after its
//! invocation, or never; a completed read of nil is an unknown value for
//! `register`, `cas-register`, `kv` and `multi-register`, but the empty
//! register for `etcd-register` (alias `etcd`), where a failed cas must also
//! be explained (the register did not hold its `from` value).
//!
//! Options: `model` (required, see [`MODELS`]), `initial` (the value of a
//! fresh register or key; nil, or "" for kv, when unset), the budget, the
//! param `nil-read=empty` (a nil read of `register` or `cas-register` is the
//! empty register, as for `etcd-register`), and the param `explain-all=true` to search every partition even after one failed
//! (by default one failing partition stops the others, as in Porcupine).
//!
//! Search reductions, each exact (they never change a verdict):
//! - ops that never change the state (reads, failed cas) that fit now are
//!   linearized at once and never branched on;
//! - identical optional ops are interchangeable, so only the earliest of a
//!   group is ever linearized first;
//! - for kv, a value that no get returned a prefix of is one state, since no
//!   get can observe it or anything appended to it.

pub mod model;
mod search;
pub mod shrink;

pub use shrink::{shrink, Shrunk};

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use splitbrain_history::{
    CheckError, CheckOptions, CheckOutcome, CheckReport, CheckerDef, History, Value, Verdict,
};

use model::{
    KvModel, Model, MultiRegisterModel, MutexModel, Prepared, QueueModel, RegisterFlavor,
    RegisterModel, SetModel,
};
use search::{Entry, Limits, MemoryMeter, SearchEnd};

/// The checkers this crate provides, for the CLI's table.
pub const CHECKERS: &[CheckerDef] = &[CheckerDef {
    name: "linearizable",
    run: run_checker,
}];

/// The model names `--model` accepts.
pub const MODELS: &[&str] = &[
    "register",
    "cas-register",
    "etcd-register",
    "etcd",
    "kv",
    "kv-nopart",
    "multi-register",
    "mutex",
    "set",
    "unordered-queue",
    "fifo-queue",
];

fn run_checker(history: &History, opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let result = check(history, opts)?;
    Ok(CheckReport::from_outcome("linearizable", &result))
}

/// An op as the explanation shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpRef {
    /// Position of the invocation in `history.ops`.
    pub invoke: usize,
    /// Position of the completion, when the op completed with ok or fail.
    pub complete: Option<usize>,
    /// The file line of the invocation.
    pub line: u32,
    pub process: String,
    /// The op as the model reads it (`cas 1 -> 2`, `read 3`).
    pub op: String,
}

/// One linearized op and the model state after it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinearizedStep {
    pub op: OpRef,
    pub state_after: String,
}

/// Why one partition is not linearizable.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartitionFailure {
    /// The key of the partition, when the history was split by key.
    pub key: Option<Value>,
    /// The op whose completion came before any order could place it.
    pub op: Option<OpRef>,
    /// Length of the longest linearizable prefix found.
    pub prefix_len: usize,
    /// Invocation positions of that prefix, in linearization order.
    pub prefix: Vec<usize>,
    /// The last steps of that prefix with the model state after each.
    pub prefix_tail: Vec<LinearizedStep>,
    /// The model state at the end of the prefix.
    pub state: String,
    /// Ops invoked before the blocked op completed and not in the prefix:
    /// the candidates that could not be placed next either.
    pub concurrent: Vec<OpRef>,
}

/// A partition the search could not decide within its budget.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UndecidedPartition {
    pub key: Option<Value>,
    /// `time`, `memory`, or cancelled because another partition failed.
    pub reason: String,
    pub ops: usize,
    pub configurations: u64,
    /// The most ops linearized at once on any branch.
    pub max_depth: usize,
}

/// The result of a linearizability check.
#[derive(Debug, Clone, Serialize)]
pub struct LinearizabilityResult {
    pub model: String,
    pub verdict: Verdict,
    pub partitions: usize,
    /// Client ops the search considered (failed ops and unknown reads are dropped).
    pub ops: usize,
    /// Configurations (linearized set, state) the search stepped into.
    pub configurations: u64,
    pub cache_entries: usize,
    /// Peak bytes of search state across partitions.
    pub memory_bytes_peak: usize,
    pub elapsed_ms: u64,
    pub failures: Vec<PartitionFailure>,
    pub undecided: Vec<UndecidedPartition>,
}

impl CheckOutcome for LinearizabilityResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }

    fn anomaly_types(&self) -> Vec<String> {
        if self.failures.is_empty() {
            Vec::new()
        } else {
            vec!["nonlinearizable".into()]
        }
    }

    fn explain(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} as {}: {} ops in {} partition(s), {} configurations, {} ms",
            self.verdict.as_str(),
            self.model,
            self.ops,
            self.partitions,
            self.configurations,
            self.elapsed_ms
        );
        for f in &self.failures {
            let key = f
                .key
                .as_ref()
                .map_or(String::new(), |k| format!(" key {k}"));
            let _ = writeln!(out, "not linearizable{key}:");
            match &f.op {
                Some(op) => {
                    let _ = writeln!(
                        out,
                        "  cannot linearize {} by process {} (line {}, ops {}..{})",
                        op.op,
                        op.process,
                        op.line,
                        op.invoke,
                        op.complete.map_or("open".into(), |c| c.to_string())
                    );
                }
                None => {
                    let _ = writeln!(out, "  no op order fits");
                }
            }
            let _ = writeln!(
                out,
                "  after the longest linearizable prefix ({} ops), state {}",
                f.prefix_len, f.state
            );
            if f.prefix_len > f.prefix_tail.len() {
                let _ = writeln!(out, "    ...");
            }
            for s in &f.prefix_tail {
                let _ = writeln!(
                    out,
                    "    {} by {} (op {}) -> {}",
                    s.op.op,
                    s.op.process,
                    s.op.invoke,
                    abbreviated(&s.state_after)
                );
            }
            if !f.concurrent.is_empty() {
                let _ = writeln!(out, "  concurrent ops that did not fit either:");
                for c in &f.concurrent {
                    let _ = writeln!(out, "    {} by {} (op {})", c.op, c.process, c.invoke);
                }
            }
        }
        let cancelled = self
            .undecided
            .iter()
            .filter(|u| u.reason == CANCELLED)
            .count();
        if cancelled > 0 {
            let _ = writeln!(
                out,
                "{cancelled} other partition(s) not searched to the end: the verdict was already decided (explain-all=true searches them all)"
            );
        }
        for u in &self.undecided {
            if u.reason == CANCELLED {
                continue;
            }
            let key = u
                .key
                .as_ref()
                .map_or(String::new(), |k| format!(" key {k}"));
            let _ = writeln!(
                out,
                "undecided{key}: ran out of {} after {} configurations over {} ops (deepest {})",
                u.reason, u.configurations, u.ops, u.max_depth
            );
        }
        out
    }
}

/// Long states (a whole key-value map) cut short in the text; the data keeps them whole.
fn abbreviated(state: &str) -> String {
    const SHOWN: usize = 100;
    match state.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &state[..cut]),
        None => state.to_string(),
    }
}

fn unsupported_model(what: &str) -> CheckError {
    CheckError::Unsupported(format!(
        "{what}; the linearizable checker's models are {}",
        MODELS.join(", ")
    ))
}

/// Check `history` against the model named in `opts.model`.
pub fn check(history: &History, opts: &CheckOptions) -> Result<LinearizabilityResult, CheckError> {
    let name = opts
        .model
        .as_deref()
        .ok_or_else(|| unsupported_model("no --model given"))?;
    let initial = opts.initial.clone();
    let nil = || initial.clone().unwrap_or(Value::Nil);
    let nil_read_is_empty = opts.nil_read_is_empty()?;
    match name {
        "register" => run(
            name,
            RegisterModel::new(RegisterFlavor::Register, nil())
                .nil_read_is_empty(nil_read_is_empty),
            history,
            opts,
        ),
        "cas-register" => run(
            name,
            RegisterModel::new(RegisterFlavor::CasRegister, nil())
                .nil_read_is_empty(nil_read_is_empty),
            history,
            opts,
        ),
        "etcd-register" | "etcd" => run(
            name,
            RegisterModel::new(RegisterFlavor::Etcd, nil()),
            history,
            opts,
        ),
        "kv" | "kv-nopart" => {
            let empty = initial.clone().unwrap_or(Value::Str("".into()));
            run(name, KvModel::new(name == "kv", empty), history, opts)
        }
        "multi-register" => run(name, MultiRegisterModel::new(nil()), history, opts),
        "mutex" => {
            let locked = matches!(initial, Some(Value::Bool(true)));
            run(name, MutexModel::new(locked), history, opts)
        }
        "set" => run(name, SetModel::default(), history, opts),
        "unordered-queue" => run(name, QueueModel::new(false), history, opts),
        "fifo-queue" => run(name, QueueModel::new(true), history, opts),
        other => Err(unsupported_model(&format!("unknown model '{other}'"))),
    }
}

/// An invocation's position and its completion's, if any.
type Pair = (usize, Option<usize>);

struct Part<M: Model> {
    key: Option<Value>,
    model: M,
    entries: Vec<Entry<M::Op>>,
}

enum PartEnd {
    Valid,
    Invalid(PartitionFailure),
    Undecided(UndecidedPartition),
}

struct PartResult {
    end: PartEnd,
    configurations: u64,
    cache_entries: usize,
}

fn run<M: Model>(
    name: &str,
    proto: M,
    history: &History,
    opts: &CheckOptions,
) -> Result<LinearizabilityResult, CheckError> {
    let start = Instant::now();
    // Group client ops by the object they touch, keeping history order.
    let mut group_of: HashMap<Option<Value>, usize> = HashMap::new();
    let mut groups: Vec<(Option<Value>, Vec<Pair>)> = Vec::new();
    for (invoke, completion) in history.client_pairs() {
        let key = proto.partition(&history.ops[invoke]);
        let g = *group_of.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((invoke, completion));
    }
    let mut parts: Vec<Part<M>> = Vec::with_capacity(groups.len());
    for (key, pairs) in groups {
        let mut model = proto.clone();
        let mut entries = Vec::with_capacity(pairs.len());
        for (invoke, completion) in pairs {
            match model.prepare(history, invoke, completion)? {
                Prepared::Skip => {}
                Prepared::Happened(op) if completion.is_some() => entries.push(Entry {
                    call: invoke,
                    ret: completion,
                    op,
                }),
                Prepared::Happened(op) | Prepared::Maybe(op) => entries.push(Entry {
                    call: invoke,
                    ret: None,
                    op,
                }),
            }
        }
        if !entries.is_empty() {
            parts.push(Part {
                key,
                model,
                entries,
            });
        }
    }
    let ops = parts.iter().map(|p| p.entries.len()).sum();
    let partitions = parts.len();
    // Largest first, so the long searches start early and share the two cores.
    parts.sort_by_key(|p| std::cmp::Reverse(p.entries.len()));

    // The search's own state stays within 80% of the budget: the history,
    // allocator slack and the result need the rest.
    let meter = MemoryMeter::new(opts.budget.memory_bytes / 10 * 8);
    let cancel = AtomicBool::new(false);
    let limits = Limits {
        deadline: opts.budget.deadline,
        meter: &meter,
        cancel: &cancel,
    };
    // One failing partition decides the verdict; by default the others stop
    // then (as Porcupine does). `explain-all=true` searches every partition.
    let explain_all = opts.params.get("explain-all").is_some_and(|v| v == "true");
    let results: Vec<Mutex<Option<PartResult>>> =
        (0..parts.len()).map(|_| Mutex::new(None)).collect();
    let jobs: Vec<Mutex<Option<Part<M>>>> =
        parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let next = AtomicUsize::new(0);
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(job) = jobs.get(i) else { break };
        let Some(part) = job.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            continue;
        };
        let r = if cancel.load(Ordering::Relaxed) {
            PartResult {
                end: PartEnd::Undecided(UndecidedPartition {
                    key: part.key.clone(),
                    reason: CANCELLED.into(),
                    ops: part.entries.len(),
                    configurations: 0,
                    max_depth: 0,
                }),
                configurations: 0,
                cache_entries: 0,
            }
        } else {
            check_part(part, history, &limits)
        };
        if !explain_all && matches!(r.end, PartEnd::Invalid(_)) {
            cancel.store(true, Ordering::Relaxed);
        }
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2)
        .min(jobs.len());
    if threads <= 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(worker);
            }
            worker();
        });
    }

    let mut result = LinearizabilityResult {
        model: name.to_string(),
        verdict: Verdict::Valid,
        partitions,
        ops,
        configurations: 0,
        cache_entries: 0,
        memory_bytes_peak: meter.peak.load(Ordering::Relaxed),
        elapsed_ms: 0,
        failures: Vec::new(),
        undecided: Vec::new(),
    };
    for r in results {
        let Some(r) = r.into_inner().unwrap_or_else(|e| e.into_inner()) else {
            continue;
        };
        result.configurations += r.configurations;
        result.cache_entries += r.cache_entries;
        match r.end {
            PartEnd::Valid => {}
            PartEnd::Invalid(f) => result.failures.push(f),
            PartEnd::Undecided(u) => result.undecided.push(u),
        }
    }
    // Report failing partitions in history order.
    result
        .failures
        .sort_by_key(|f| f.op.as_ref().map_or(0, |o| o.invoke));
    result.verdict = if !result.failures.is_empty() {
        Verdict::Invalid
    } else if !result.undecided.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    result.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(result)
}

/// Why a partition was not searched to the end: another one already failed.
const CANCELLED: &str = "cancelled (another partition is not linearizable)";

/// Recompute the prefix's states without the model's state abstractions, so
/// the explanation shows real values.
fn replay_exactly<M: Model>(
    model: &mut M,
    entries: &[Entry<M::Op>],
    dead: &mut search::DeadEnd<M::State>,
) {
    model.exact();
    let mut state = model.init();
    let mut states = Vec::with_capacity(dead.prefix.len());
    for (e, _) in &dead.prefix {
        match model.step(&state, &entries[*e as usize].op) {
            Some(next) => {
                states.push(next.clone());
                state = next;
            }
            // Exact states accept whatever merged ones did; keep the search's if not.
            None => return,
        }
    }
    for ((_, s), exact) in dead.prefix.iter_mut().zip(states) {
        *s = exact;
    }
    dead.state = state;
}

const PREFIX_TAIL: usize = 12;
const CONCURRENT_SHOWN: usize = 20;

fn check_part<M: Model>(mut part: Part<M>, history: &History, limits: &Limits) -> PartResult {
    let (end, stats) = search::search(&mut part.model, &part.entries, limits);
    let op_ref = |model: &M, e: u32| {
        let entry = &part.entries[e as usize];
        OpRef {
            invoke: entry.call,
            complete: history.completion(entry.call),
            line: history.line_of(entry.call),
            process: history.ops[entry.call].process.to_string(),
            op: model.describe_op(&entry.op),
        }
    };
    let undecided = |reason: &str| {
        PartEnd::Undecided(UndecidedPartition {
            key: part.key.clone(),
            reason: reason.into(),
            ops: part.entries.len(),
            configurations: stats.configurations,
            max_depth: stats.max_depth,
        })
    };
    let end = match end {
        SearchEnd::Linearizable => PartEnd::Valid,
        SearchEnd::OutOfTime => undecided("time"),
        SearchEnd::OutOfMemory => undecided("memory"),
        SearchEnd::Cancelled => undecided(CANCELLED),
        SearchEnd::NotLinearizable(mut dead) => {
            replay_exactly(&mut part.model, &part.entries, &mut dead);
            let model = &part.model;
            let in_prefix: std::collections::HashSet<u32> =
                dead.prefix.iter().map(|(e, _)| *e).collect();
            let concurrent = match dead.blocked {
                Some(b) => {
                    let until = part.entries[b as usize].ret.unwrap_or(usize::MAX);
                    (0..part.entries.len() as u32)
                        .filter(|&e| {
                            e != b
                                && !in_prefix.contains(&e)
                                && part.entries[e as usize].call < until
                        })
                        .take(CONCURRENT_SHOWN)
                        .map(|e| op_ref(model, e))
                        .collect()
                }
                None => Vec::new(),
            };
            let skip = dead.prefix.len().saturating_sub(PREFIX_TAIL);
            PartEnd::Invalid(PartitionFailure {
                key: part.key.clone(),
                op: dead.blocked.map(|b| op_ref(model, b)),
                prefix_len: dead.prefix.len(),
                prefix: dead
                    .prefix
                    .iter()
                    .map(|(e, _)| part.entries[*e as usize].call)
                    .collect(),
                prefix_tail: dead.prefix[skip..]
                    .iter()
                    .map(|(e, s)| LinearizedStep {
                        op: op_ref(model, *e),
                        state_after: model.describe_state(s),
                    })
                    .collect(),
                state: model.describe_state(&dead.state),
                concurrent,
            })
        }
    };
    PartResult {
        end,
        configurations: stats.configurations,
        cache_entries: stats.cache_entries,
    }
}
