//! Elle-style transactional anomaly checking for list-append and rw-register
//! histories (Kingsbury & Alvaro, "Elle", VLDB 2020).
//!
//! The checker infers a dependency graph between transactions (ww, wr, rw
//! from version orders; process and real-time order), finds its strongly
//! connected components, and inside each looks for the shortest cycle of each
//! anomaly class, most severe first. Non-cycle anomalies (aborted and
//! intermediate reads, internal inconsistency, lost updates, ...) come from
//! the inference itself. The anomalies found rule out consistency models
//! (see [`models`]); the result is valid when the requested model survives.
//!
//! Options: `consistency_model` (default strict-serializable), `budget`
//! (a deadline stops the cycle search; the result says so and is unknown
//! unless something invalid was already found), and for rw-register the
//! parameters `wfr-keys`, `sequential-keys` and `linearizable-keys`, as
//! Elle's `:wfr-keys?`, `:sequential-keys?` and `:linearizable-keys?`:
//! which orders of a key's versions to trust besides the initial state.
//! `wfr-keys` defaults to true for models at or above read committed (there
//! the other order would be a G1c cycle, so assuming it hides nothing) and
//! to false below; the other two are claims about the database and default
//! to false. For list-append every order is inferred from the reads.
//!
//! Adya's G2 also covers predicate anti-dependencies; these workloads have
//! only item reads, so every cycle with rw edges is reported as
//! G-single-item, G-nonadjacent-item or G2-item, as Elle names them (each
//! implies its predicate-free parent and G2 in [`models`]).
//!
//! Only the cycle classes the checked model forbids are searched, most
//! severe first, so a class the model allows can never turn a decidable
//! verdict into unknown. When a search runs out of work, a strongly
//! connected component of a subgraph whose every cycle the model forbids
//! still proves the model false (Elle's `*-cycle-exists`); otherwise the
//! result is unknown with `cycle-search-timeout`. A history with no
//! dependency edges at all is unknown with `empty-transaction-graph`.

mod fx;
mod graph;
mod list_append;
pub mod models;
mod rw_register;
pub mod shorthand;
pub mod sim;
mod txn;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use splitbrain_history::{
    CheckError, CheckOptions, CheckOutcome, CheckReport, CheckerDef, History, Verdict,
};

pub use graph::{CycleClass, Variant};
use graph::{EdgeList, Graph, LocalIndex, SearchBudget, PROCESS, REALTIME, RW, WR, WW};
use list_append::ListAppend;
use rw_register::RwRegister;
use txn::{Status, Txns, Workload, NONE};

/// The checkers this crate provides, for the CLI's table.
pub const CHECKERS: &[CheckerDef] = &[
    CheckerDef {
        name: "list-append",
        run: run_list_append,
    },
    CheckerDef {
        name: "rw-register",
        run: run_rw_register,
    },
];

/// The model checked when none is given (Elle's default).
pub const DEFAULT_MODEL: &str = "strict-serializable";

/// How many examples of each anomaly class a result keeps (all are counted).
pub const EXAMPLES_PER_CLASS: usize = 32;

fn run_list_append(history: &History, opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let r = check_list_append(history, opts)?;
    Ok(CheckReport::from_outcome("list-append", &r))
}

fn run_rw_register(history: &History, opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let r = check_rw_register(history, opts)?;
    Ok(CheckReport::from_outcome("rw-register", &r))
}

/// Check a list-append history.
pub fn check_list_append(history: &History, opts: &CheckOptions) -> Result<ElleResult, CheckError> {
    check(history, opts, Workload::ListAppend)
}

/// Check an rw-register history.
pub fn check_rw_register(history: &History, opts: &CheckOptions) -> Result<ElleResult, CheckError> {
    check(history, opts, Workload::RwRegister)
}

/// A transaction as an explanation shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TxnRef {
    /// Position of the invocation in `history.ops`.
    pub invoke: usize,
    /// Position of the completion, if it completed.
    pub complete: Option<usize>,
    pub process: String,
    /// ok, info or fail.
    pub status: String,
    /// The micro-ops as EDN, with read results when known.
    pub ops: String,
}

/// Why one txn precedes the next in a cycle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// Indices into the anomaly's `txns`.
    pub from: usize,
    pub to: usize,
    /// ww, wr, rw, process or realtime.
    pub kind: String,
    /// E.g. "T2 read T1's append of 3 to key 7".
    pub reason: String,
}

/// A dependency cycle: the txns in order, and the steps that close it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CycleAnomaly {
    /// Class with variant, e.g. `G-single-realtime`.
    pub class: String,
    pub txns: Vec<TxnRef>,
    pub steps: Vec<Step>,
}

/// An anomaly found without a cycle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OtherAnomaly {
    pub class: String,
    pub txns: Vec<TxnRef>,
    pub key: Option<splitbrain_history::Value>,
    pub detail: String,
}

/// Sizes of the inferred graph.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GraphStats {
    pub txns: usize,
    pub edges: usize,
    pub components: usize,
    pub largest_component: usize,
}

/// The checker's typed result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ElleResult {
    pub checker: String,
    /// The model checked against.
    pub consistency_model: String,
    pub verdict: Verdict,
    /// The anomalies found that the model forbids, most severe first, plus
    /// `empty-transaction-graph` or `cycle-search-timeout` when the check
    /// could not decide: Elle's `:anomaly-types` for the same model.
    pub anomaly_types: Vec<String>,
    /// Anomalies found that the model allows (not searched for beyond what
    /// inference shows; lost updates under read committed, say).
    #[serde(default)]
    pub allowed_anomaly_types: Vec<String>,
    /// How many of each class were found.
    pub anomaly_counts: BTreeMap<String, usize>,
    /// The weakest models the history rules out.
    pub not: Vec<String>,
    /// Stronger models ruled out with them.
    pub also_not: Vec<String>,
    /// One shortest cycle per class per component.
    pub cycles: Vec<CycleAnomaly>,
    /// Up to `EXAMPLES_PER_CLASS` examples of each non-cycle class.
    pub anomalies: Vec<OtherAnomaly>,
    /// Set when the cycle search ran out of time or work and stopped early.
    pub cut_short: Option<String>,
    pub graph: GraphStats,
}

/// Non-cycle anomalies as inference finds them (txns by dense id).
#[derive(Default)]
pub(crate) struct Findings {
    raw: Vec<(&'static str, Vec<u32>, Option<u32>, String)>,
    counts: BTreeMap<&'static str, usize>,
}

impl Findings {
    pub fn add(&mut self, class: &'static str, txns: Vec<u32>, key: Option<u32>, detail: String) {
        let c = self.counts.entry(class).or_insert(0);
        *c += 1;
        if *c <= EXAMPLES_PER_CLASS {
            self.raw.push((class, txns, key, detail));
        }
    }
}

/// The position a txn's errors point at: its completion when ok, else its invocation.
pub(crate) fn txn_position(tx: &Txns, t: u32) -> usize {
    let txn = &tx.txns[t as usize];
    if txn.status == Status::Ok {
        txn.complete as usize
    } else {
        txn.invoke as usize
    }
}

enum Inference<'h> {
    ListAppend(ListAppend<'h>),
    RwRegister(RwRegister<'h>),
}

impl Inference<'_> {
    fn reason(&self, tx: &Txns, a: u32, b: u32, kind: u8, na: &str, nb: &str) -> Option<String> {
        match self {
            Inference::ListAppend(la) => la.reason(tx, a, b, kind, na, nb),
            Inference::RwRegister(rw) => rw.reason(tx, a, b, kind, na, nb),
        }
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        PROCESS => "process",
        _ => "realtime",
    }
}

/// Process order (each ok txn precedes its process's next txn) or real-time
/// order as a transitive reduction: a txn invoked after others completed gets
/// edges only from the "frontier" of completed txns not already followed by a
/// txn that began after they completed. As in Elle, only the one the model
/// needs: real time when it forbids real-time cycles (processes are
/// sequential, so it covers their order too), else process order when it
/// forbids session cycles, else neither.
fn order_edges(tx: &Txns, edges: &mut EdgeList, kind: u8) {
    if kind == PROCESS {
        process_edges(tx, edges);
    } else if kind == REALTIME {
        realtime_edges(tx, edges);
    }
}

fn process_edges(tx: &Txns, edges: &mut EdgeList) {
    let mut last_ok = vec![NONE; tx.processes.len()];
    for (t, txn) in tx.txns.iter().enumerate() {
        if txn.status == Status::Fail {
            continue;
        }
        let p = txn.process as usize;
        if last_ok[p] != NONE {
            edges.add(last_ok[p], t as u32, PROCESS);
        }
        last_ok[p] = if txn.status == Status::Ok {
            t as u32
        } else {
            NONE
        };
    }
}

fn realtime_edges(tx: &Txns, edges: &mut EdgeList) {
    let mut completions: Vec<u32> = (0..tx.txns.len() as u32)
        .filter(|&t| tx.txns[t as usize].status == Status::Ok)
        .collect();
    completions.sort_unstable_by_key(|&t| tx.txns[t as usize].complete);
    let mut frontier: Vec<u32> = Vec::new();
    let mut c = 0;
    for (t, txn) in tx.txns.iter().enumerate() {
        while c < completions.len() && tx.txns[completions[c] as usize].complete < txn.invoke {
            let done = completions[c];
            let inv = tx.txns[done as usize].invoke;
            // Its predecessors are covered by it from now on.
            frontier.retain(|&f| tx.txns[f as usize].complete > inv);
            frontier.push(done);
            c += 1;
        }
        if txn.status == Status::Fail {
            continue;
        }
        for &f in &frontier {
            edges.add(f, t as u32, REALTIME);
        }
    }
}

fn check(
    history: &History,
    opts: &CheckOptions,
    workload: Workload,
) -> Result<ElleResult, CheckError> {
    let model = opts
        .consistency_model
        .as_deref()
        .map(models::canonical)
        .unwrap_or(DEFAULT_MODEL)
        .to_string();
    if !models::is_model(&model) {
        return Err(CheckError::Unsupported(format!(
            "unknown consistency model {model}; known: {}",
            models::all_models().join(", ")
        )));
    }
    let tx = Txns::parse(history, workload)?;
    let mut edges = EdgeList::default();
    let mut found = Findings::default();
    let inference = match workload {
        Workload::ListAppend => {
            Inference::ListAppend(ListAppend::infer(&tx, &mut edges, &mut found)?)
        }
        Workload::RwRegister => {
            let flag = |name: &str, default: bool| -> Result<bool, CheckError> {
                match opts.params.get(name).map(String::as_str) {
                    None => Ok(default),
                    Some("true") => Ok(true),
                    Some("false") => Ok(false),
                    Some(other) => Err(CheckError::Unsupported(format!(
                        "{name} must be true or false, not {other}"
                    ))),
                }
            };
            // A txn's write follows the version it read unless the database
            // lets it read uncommitted data: any model at or above read
            // committed forbids the G1c cycle the other order would make.
            let wfr_sound = models::weaker_or_equal(&model).contains("read-committed");
            let sources = rw_register::VersionSources {
                writes_follow_reads: flag("wfr-keys", wfr_sound)?,
                sequential_keys: flag("sequential-keys", false)?,
                linearizable_keys: flag("linearizable-keys", false)?,
            };
            Inference::RwRegister(RwRegister::infer(&tx, &mut edges, &mut found, sources)?)
        }
    };
    let prohibited = models::prohibited(&model);
    let order_kind = if prohibited.iter().any(|a| a.ends_with("-realtime")) {
        REALTIME
    } else if prohibited.iter().any(|a| a.ends_with("-process")) {
        PROCESS
    } else {
        0
    };
    order_edges(&tx, &mut edges, order_kind);
    let n = tx.txns.len();
    let g = Graph::build(n, edges);
    // Only classes the model forbids are searched: a class it allows can
    // neither make the history invalid nor, by running out of work, unknown.
    let searches: Vec<(CycleClass, Variant, String)> = Variant::ALL
        .into_iter()
        .flat_map(|v| CycleClass::ALL.into_iter().map(move |c| (c, v)))
        .map(|(c, v)| (c, v, format!("{}{}", c.name(), v.suffix())))
        .filter(|(_, _, name)| prohibited.contains(name))
        .collect();
    let kinds = searches
        .iter()
        .fold(0u8, |k, (c, v, _)| k | c.data_kinds() | v.order_kinds());
    let mut local = LocalIndex::new(n);
    let mut budget = SearchBudget::new(opts.budget.deadline);
    let components = if kinds == 0 {
        Vec::new()
    } else {
        g.sccs(None, kinds, &mut local)
    };
    let stats = GraphStats {
        txns: n,
        edges: g.edge_count(),
        components: components.len(),
        largest_component: components.iter().map(Vec::len).max().unwrap_or(0),
    };
    let mut cycles = Vec::new();
    let mut cycle_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut record = |kinds: &[u8], c: &graph::FoundCycle, cycles: &mut Vec<CycleAnomaly>| {
        let (class, variant) = graph::classify(kinds);
        let name = format!("{}{}", class.name(), variant.suffix());
        let count = cycle_counts.entry(name.clone()).or_insert(0);
        *count += 1;
        if *count <= EXAMPLES_PER_CLASS {
            cycles.push(render_cycle(history, &tx, &inference, &name, c));
        }
        name
    };
    let mut exhausted = Vec::new();
    'components: for comp in &components {
        // Anomalies found here and all they imply: no need to search for those.
        let mut have: BTreeSet<String> = BTreeSet::new();
        let mut exhausted_here = false;
        for (class, variant, name) in &searches {
            if have.contains(name) {
                continue;
            }
            let s = graph::find_cycle(&g, comp, *class, *variant, &mut local, &mut budget);
            if s.exhausted {
                exhausted_here = true;
                exhausted.push(name.clone());
            }
            if let Some(c) = s.cycle {
                let found = record(&c.kinds, &c, &mut cycles);
                have.extend(models::implied_anomalies([found.as_str()]));
            }
            if budget.cut_short {
                break 'components;
            }
        }
        if have.is_empty() && exhausted_here {
            // Some cycle is there: show one, if it is one the model forbids.
            if let Some((_, _, c)) = graph::find_any_cycle(&g, comp, &mut local, &mut budget) {
                let (class, variant) = graph::classify(&c.kinds);
                if prohibited.contains(&format!("{}{}", class.name(), variant.suffix())) {
                    record(&c.kinds, &c, &mut cycles);
                }
            }
        }
    }
    let mut counts: BTreeMap<String, usize> = cycle_counts;
    for (c, k) in &found.counts {
        counts.insert(c.to_string(), *k);
    }
    let mut ruled_out = counts.keys().any(|a| prohibited.contains(a));
    let searched_all = !budget.cut_short && exhausted.is_empty();
    if !ruled_out && !searched_all {
        // A strongly connected component of a subgraph every cycle of which
        // the model forbids proves a forbidden cycle without naming it.
        for (_, name, sub_kinds) in models::CYCLE_EXISTS {
            if prohibited.contains(*name) && !g.sccs(None, *sub_kinds, &mut local).is_empty() {
                counts.insert(name.to_string(), 1);
                ruled_out = true;
                break;
            }
        }
    }
    let cut_short = if searched_all {
        None
    } else if budget.cut_short {
        Some("the cycle search ran out of time; later components were not searched".to_string())
    } else {
        exhausted.sort();
        exhausted.dedup();
        Some(format!(
            "the cycle search hit its work limit in a large component for: {}",
            exhausted.join(", ")
        ))
    };
    if !ruled_out && cut_short.is_some() {
        counts.insert("cycle-search-timeout".to_string(), 1);
    }
    if tx.txns.iter().all(|t| t.status == Status::Fail) || g.count_edges(WW | WR | RW | kinds) == 0
    {
        counts.insert("empty-transaction-graph".to_string(), 1);
    }
    let anomalies = found
        .raw
        .iter()
        .map(|(class, txns, key, detail)| OtherAnomaly {
            class: class.to_string(),
            txns: txns
                .iter()
                .filter(|&&t| t != NONE)
                .map(|&t| txn_ref(history, &tx, t))
                .collect(),
            key: key.map(|k| tx.keys[k as usize].clone()),
            detail: detail.clone(),
        })
        .collect();
    let reportable = |a: &str| prohibited.contains(a) || models::UNKNOWN_ANOMALIES.contains(&a);
    let mut anomaly_types: Vec<String> = counts.keys().filter(|a| reportable(a)).cloned().collect();
    anomaly_types.sort_by_key(|a| (severity(a), a.clone()));
    let mut allowed_anomaly_types: Vec<String> =
        counts.keys().filter(|a| !reportable(a)).cloned().collect();
    allowed_anomaly_types.sort_by_key(|a| (severity(a), a.clone()));
    let (not, also_not) = models::boundary(
        counts
            .keys()
            .map(String::as_str)
            .filter(|a| !models::UNKNOWN_ANOMALIES.contains(a)),
    );
    let verdict = if ruled_out {
        Verdict::Invalid
    } else if anomaly_types.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Unknown
    };
    Ok(ElleResult {
        checker: match workload {
            Workload::ListAppend => "list-append",
            Workload::RwRegister => "rw-register",
        }
        .to_string(),
        consistency_model: model,
        verdict,
        anomaly_types,
        allowed_anomaly_types,
        anomaly_counts: counts,
        not,
        also_not,
        cycles,
        anomalies,
        cut_short,
        graph: stats,
    })
}

/// Order of report: cycle classes by severity then variant, then the rest.
fn severity(a: &str) -> usize {
    let order = [
        "G0",
        "G1a",
        "G1b",
        "G1c",
        "internal",
        "future-read",
        "garbage-read",
        "duplicate-elements",
        "cyclic-versions",
        "incompatible-order",
        "dirty-update",
        "G-single-item",
        "G-nonadjacent-item",
        "lost-update",
        "G2-item",
        "G0-process",
        "G1c-process",
        "G-single-item-process",
        "G-nonadjacent-item-process",
        "G2-item-process",
        "G0-realtime",
        "G1c-realtime",
        "G-single-item-realtime",
        "G-nonadjacent-item-realtime",
        "G2-item-realtime",
    ];
    order.iter().position(|x| *x == a).unwrap_or(order.len())
}

fn txn_ref(history: &History, tx: &Txns, t: u32) -> TxnRef {
    let txn = &tx.txns[t as usize];
    let complete = (txn.complete != NONE).then_some(txn.complete as usize);
    let source = match (txn.status, complete) {
        (Status::Ok, Some(c)) => c,
        _ => txn.invoke as usize,
    };
    TxnRef {
        invoke: txn.invoke as usize,
        complete,
        process: tx.processes[txn.process as usize].to_string(),
        status: match txn.status {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Fail => "fail",
        }
        .to_string(),
        ops: history.ops[source].value.to_edn(),
    }
}

fn render_cycle(
    history: &History,
    tx: &Txns,
    inf: &Inference,
    class: &str,
    c: &graph::FoundCycle,
) -> CycleAnomaly {
    let names: Vec<String> = (1..=c.txns.len()).map(|i| format!("T{i}")).collect();
    let mut steps = Vec::new();
    for i in 0..c.txns.len() {
        let j = (i + 1) % c.txns.len();
        let (a, b, kind) = (c.txns[i], c.txns[j], c.kinds[i]);
        let reason = match kind {
            PROCESS => format!(
                "process {} executed {} before {}",
                tx.processes[tx.txns[a as usize].process as usize], names[i], names[j]
            ),
            REALTIME => format!(
                "{} completed (op {}) before {} began (op {})",
                names[i], tx.txns[a as usize].complete, names[j], tx.txns[b as usize].invoke
            ),
            _ => inf
                .reason(tx, a, b, kind, &names[i], &names[j])
                .unwrap_or_else(|| format!("{} -{}-> {}", names[i], kind_name(kind), names[j])),
        };
        steps.push(Step {
            from: i,
            to: j,
            kind: kind_name(kind).to_string(),
            reason,
        });
    }
    CycleAnomaly {
        class: class.to_string(),
        txns: c.txns.iter().map(|&t| txn_ref(history, tx, t)).collect(),
        steps,
    }
}

impl CycleAnomaly {
    /// "Let T1 = ... Then T1 < T2 because ... a contradiction."
    pub fn explain(&self) -> String {
        let mut out = String::from("Let:\n");
        for (i, t) in self.txns.iter().enumerate() {
            let _ = writeln!(
                out,
                "  T{} = {} (process {}, op {})",
                i + 1,
                t.ops,
                t.process,
                t.complete.unwrap_or(t.invoke)
            );
        }
        out.push_str("\nThen:\n");
        for (i, s) in self.steps.iter().enumerate() {
            let last = i + 1 == self.steps.len();
            let _ = writeln!(
                out,
                "  - {}T{} < T{}, because {}{}",
                if last { "However, " } else { "" },
                s.from + 1,
                s.to + 1,
                s.reason,
                if last { ": a contradiction!" } else { "." }
            );
        }
        out
    }
}

/// A cycle as a Graphviz DOT digraph, edges labelled with kind and reason.
pub fn cycle_dot(cycle: &CycleAnomaly) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n",
        esc(&cycle.class)
    );
    for (i, t) in cycle.txns.iter().enumerate() {
        let _ = writeln!(
            out,
            "  T{} [label=\"T{}\\n{}\\nprocess {}\"];",
            i + 1,
            i + 1,
            esc(&t.ops),
            esc(&t.process)
        );
    }
    for s in &cycle.steps {
        let color = match s.kind.as_str() {
            "ww" => "black",
            "wr" => "blue",
            "rw" => "red",
            "process" => "darkgreen",
            _ => "orange",
        };
        let _ = writeln!(
            out,
            "  T{} -> T{} [label=\"{}: {}\", color={color}, fontcolor={color}];",
            s.from + 1,
            s.to + 1,
            s.kind,
            esc(&s.reason)
        );
    }
    out.push_str("}\n");
    out
}

/// One DOT file per cycle: `(file name, contents)`, e.g. `("G-single-1.dot", ...)`.
pub fn cycle_dots(result: &ElleResult) -> Vec<(String, String)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    result
        .cycles
        .iter()
        .map(|c| {
            let n = seen.entry(&c.class).or_insert(0);
            *n += 1;
            (format!("{}-{}.dot", c.class, n), cycle_dot(c))
        })
        .collect()
}

/// DOT files for the cycles in a `CheckReport.result` produced by this
/// crate's checkers (what `--dot DIR` writes); empty for other results.
pub fn cycle_dots_from_json(result: &serde_json::Value) -> Vec<(String, String)> {
    match serde_json::from_value::<ElleResult>(result.clone()) {
        Ok(r) => cycle_dots(&r),
        Err(_) => Vec::new(),
    }
}

impl CheckOutcome for ElleResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }

    fn anomaly_types(&self) -> Vec<String> {
        self.anomaly_types.clone()
    }

    fn explain(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} under {} ({} txns, {} edges, {} cyclic components)",
            self.checker,
            self.verdict.as_str(),
            self.consistency_model,
            self.graph.txns,
            self.graph.edges,
            self.graph.components
        );
        if let Some(c) = &self.cut_short {
            let _ = writeln!(out, "Search cut short: {c}");
        }
        if self.anomaly_types.is_empty() {
            return out;
        }
        let counts: Vec<String> = self
            .anomaly_types
            .iter()
            .map(|a| format!("{a} ({})", self.anomaly_counts.get(a).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "Anomalies: {}", counts.join(", "));
        let _ = writeln!(out, "Rules out: {}", self.not.join(", "));
        if !self.also_not.is_empty() {
            let _ = writeln!(out, "Also rules out: {}", self.also_not.join(", "));
        }
        for c in &self.cycles {
            let _ = writeln!(out, "\n{}:\n{}", c.class, c.explain());
        }
        for a in &self.anomalies {
            let txns: Vec<String> = a
                .txns
                .iter()
                .map(|t| {
                    format!(
                        "{} (process {}, op {})",
                        t.ops,
                        t.process,
                        t.complete.unwrap_or(t.invoke)
                    )
                })
                .collect();
            let _ = writeln!(out, "\n{}: {}\n  {}", a.class, a.detail, txns.join("\n  "));
        }
        out
    }
}
