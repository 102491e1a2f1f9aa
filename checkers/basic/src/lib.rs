//! The smaller checkers: sets, counters, bank, queues, unique ids, session
//! guarantees, staleness, convergence, stats and perf, and the composition
//! that runs several of them on one history.
//!
//! Each is a pure function from a history to a typed, serializable result
//! (`check_*`), wrapped for the CLI in [`CHECKERS`]. All run in time linear
//! in the history (plus the size of the values read); the wrappers check the
//! budget before starting.
//!
//! | name | ops (Jepsen conventions) | options |
//! |---|---|---|
//! | `set` | `add` x; `read` -> set/list (the last to complete is judged); per `key` | |
//! | `set-full` | as `set`, reads throughout | `--linearizable`: stale reads invalid |
//! | `counter` | `add`/`increment` n; `read` -> n | `initial` |
//! | `crdt-counter` | as `counter`, replicated without coordination: bounds by subsets, final reads exact | `initial` |
//! | `or-set` | `add` x, `remove` x; `read` -> set (add-wins) | |
//! | `lost-write` | `write` v, `cas` [old new], `read` -> v, optional `key` (values may repeat) | |
//! | `siblings` | `write` v (unique), `read` -> value or set of siblings, optional `key` | |
//! | `bank` | `transfer` {from to amount}; `read` -> {account balance} | `total=`, `accounts=a,b`, `negative-balances=true` |
//! | `unique-ids` | `generate` -> id | |
//! | `queue`, `total-queue` | `enqueue` x; `dequeue` -> x; `drain` -> [x..] | `duplicates-allowed=true` |
//! | `session` | `read`/`write`, optional `key`, unique writes | `initial` |
//! | `staleness` | as `session`; `node` for the per-node split | `--linearizable`, `max-versions-behind=`, `max-stale-ms=` |
//! | `convergence` | `final-read` (or `read` after heal and quiescence) with `node` | `nodes=n1,n2`, `unordered=true` |
//! | `stats` | any | |
//! | `perf` | any, with `time` | `bucket-ms=` (default 1000) |
//!
//! Fault windows (for the inside/outside-fault splits) are derived from
//! nemesis ops by the rule documented on [`common::FaultWindow`].

pub mod bank;
pub mod common;
pub mod convergence;
pub mod counter;
pub mod crdt_counter;
pub mod ids;
pub mod lost_write;
pub mod or_set;
pub mod perf;
pub mod queue;
pub mod session;
pub mod set;
pub mod siblings;
pub mod staleness;

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::Serialize;
use splitbrain_history::{
    CheckError, CheckOptions, CheckOutcome, CheckReport, CheckerDef, History, Verdict,
};

pub use bank::check_bank;
pub use convergence::check_convergence;
pub use counter::check_counter;
pub use crdt_counter::check_crdt_counter;
pub use ids::check_unique_ids;
pub use lost_write::check_lost_writes;
pub use or_set::check_or_set;
pub use perf::{check_perf, check_stats};
pub use queue::{check_queue, check_total_queue};
pub use session::check_session;
pub use set::{check_set, check_set_full};
pub use siblings::check_siblings;
pub use staleness::check_staleness;

/// Results list at most this many detailed items of one kind; counts stay exact.
pub const DETAIL_LIMIT: usize = 1000;

macro_rules! checker {
    ($name:literal, $f:path) => {
        CheckerDef {
            name: $name,
            run: |h, o| {
                if o.budget.expired() {
                    return Ok(budget_spent($name));
                }
                $f(h, o).map(|r| CheckReport::from_outcome($name, &r))
            },
        }
    };
}

pub const CHECKERS: &[CheckerDef] = &[
    checker!("set", check_set),
    checker!("set-full", check_set_full),
    checker!("counter", check_counter),
    checker!("bank", check_bank),
    checker!("unique-ids", check_unique_ids),
    checker!("queue", check_queue),
    checker!("total-queue", check_total_queue),
    checker!("session", check_session),
    checker!("staleness", check_staleness),
    checker!("convergence", check_convergence),
    checker!("crdt-counter", check_crdt_counter),
    checker!("or-set", check_or_set),
    checker!("siblings", check_siblings),
    checker!("lost-write", check_lost_writes),
    checker!("stats", check_stats),
    checker!("perf", check_perf),
];

fn budget_spent(name: &str) -> CheckReport {
    unknown_report(
        name,
        "time budget spent before the checker started".to_string(),
    )
}

/// A report that says a checker could not decide, and why.
pub fn unknown_report(name: &str, error: String) -> CheckReport {
    CheckReport::from_outcome(
        name,
        &Failed {
            checker: name.to_string(),
            error,
        },
    )
}

/// A checker that could not give a result: unknown, with why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failed {
    pub checker: String,
    pub error: String,
}

impl CheckOutcome for Failed {
    fn verdict(&self) -> Verdict {
        Verdict::Unknown
    }
    fn anomaly_types(&self) -> Vec<String> {
        Vec::new()
    }
    fn explain(&self) -> String {
        format!("{} could not check: {}\n", self.checker, self.error)
    }
}

/// Several checkers' reports on one history, and the worst verdict among them.
#[derive(Debug, Clone, Serialize)]
pub struct Composition {
    pub verdict: Verdict,
    pub reports: Vec<CheckReport>,
}

impl CheckOutcome for Composition {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a: Vec<String> = self
            .reports
            .iter()
            .flat_map(|r| r.anomaly_types.iter().map(|t| format!("{}:{t}", r.checker)))
            .collect();
        a.dedup();
        a
    }
    fn explain(&self) -> String {
        let mut s = format!("overall: {}\n", self.verdict.as_str());
        for r in &self.reports {
            s += &format!(
                "== {}: {}\n{}",
                r.checker,
                r.verdict.as_str(),
                r.explanation
            );
        }
        s
    }
}

impl Composition {
    pub fn to_report(&self) -> CheckReport {
        CheckReport::from_outcome("compose", self)
    }
}

/// Runs one checker, turning an error or a panic into an unknown report so
/// the others still run.
pub fn run_guarded(def: &CheckerDef, h: &History, opts: &CheckOptions) -> CheckReport {
    match catch_unwind(AssertUnwindSafe(|| (def.run)(h, opts))) {
        Ok(Ok(report)) => report.nothing_checked_if_empty(h),
        // Named as the binary names bad input: FILE:LINE: problem.
        Ok(Err(CheckError::BadOp { position, problem })) => {
            unknown_report(def.name, h.error_at(position, problem).to_string())
        }
        Ok(Err(e)) => unknown_report(def.name, e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            unknown_report(def.name, format!("checker panicked: {msg}"))
        }
    }
}

/// Runs the named checkers from any table (this crate's [`CHECKERS`], or a
/// table merged with other crates'); the worst verdict wins (invalid > unknown
/// > valid). An unknown name gives an unknown report.
pub fn compose_with(
    table: &[CheckerDef],
    h: &History,
    opts: &CheckOptions,
    names: &[&str],
) -> Composition {
    let mut verdict = Verdict::Valid;
    let mut reports = Vec::with_capacity(names.len());
    for name in names {
        let report = match table.iter().find(|d| d.name == *name) {
            Some(def) => run_guarded(def, h, opts),
            None => unknown_report(name, format!("no checker named {name}")),
        };
        verdict = verdict.worst(report.verdict);
        reports.push(report);
    }
    Composition { verdict, reports }
}

/// [`compose_with`] over this crate's checkers.
pub fn compose(h: &History, opts: &CheckOptions, names: &[&str]) -> Composition {
    compose_with(CHECKERS, h, opts, names)
}
