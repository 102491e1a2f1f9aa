//! The smallest set of a non-linearizable history's operations that proves it
//! (delta debugging, Zeller and Hildebrandt 2002).
//!
//! The operations of the first failing object are shrunk to a set `S` that
//! is 1-minimal: the history of `S`, with the object's other operations
//! that may change its state kept as indeterminate (invoked where they were,
//! never completed: each may have taken effect at any point after, or never)
//! and the others (reads, failed ops: they only constrain; for registers
//! also writes of values nothing kept observes) left out, is not
//! linearizable, and taking any one operation out of `S` makes it
//! linearizable. Both changes only add orders, so any order of the full
//! history would also fit the shrunk one: `S` is a proof. The ops of `S`
//! alone are not linearizable either (the indeterminate ops may all never
//! happen).
//! Each step is a full check, given at most `shrink-step-ms` (default 1 s)
//! of the caller's budget; a step that ends unknown keeps the ops it tried
//! to drop; those drops are tried once more with five times the time, and
//! `minimal` says whether every single drop was decided in the end.

use std::time::Instant;

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, History, Op, OpType, Process, Value, Verdict};

/// A shrunk failure: the kept ops by their positions in the original history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Shrunk {
    pub key: Option<Value>,
    /// Client ops of the failing object before shrinking.
    pub object_ops: usize,
    /// The kept ops: (invocation, completion) positions in the original history.
    pub kept: Vec<(usize, Option<usize>)>,
    /// Every client op of the failing object (the kept ones among them).
    #[serde(skip)]
    pub object: Vec<(usize, Option<usize>)>,
    /// Whether unobserved writes were left out of the proof (registers).
    #[serde(skip)]
    register: bool,
    /// Whether dropping any one kept op was shown to make the proof
    /// linearizable (false when some such check ran out of time).
    pub minimal: bool,
    /// Checks run while shrinking, and how many ended unknown.
    pub checks: usize,
    pub checks_unknown: usize,
    pub elapsed_ms: u64,
}

/// The partition an op belongs to under `model` (as the checker splits).
fn object_of(model: &str, op: &Op) -> Option<Value> {
    match model {
        "register" | "cas-register" | "etcd-register" | "etcd" | "kv" => op.key.clone(),
        _ => None,
    }
}

/// The history of `kept` with the object's other ops indeterminate; each
/// indeterminate op gets a process of its own, since its process goes on.
fn sub_history(
    h: &History,
    object: &[(usize, Option<usize>)],
    kept: &[bool],
    register: bool,
) -> Result<History, CheckError> {
    let relevant = register.then(|| relevant_writes(h, object, kept));
    let mut at: Vec<(usize, bool)> = Vec::with_capacity(object.len() * 2);
    for (j, &(inv, done)) in object.iter().enumerate() {
        // A dropped op that only observes (a read, a failed op) only
        // constrains: it leaves outright.
        let observes = matches!(h.ops[inv].f.as_str(), "read" | "get")
            || done.is_some_and(|d| h.ops[d].kind == OpType::Fail);
        if !kept[j] && (observes || relevant.as_ref().is_some_and(|r| !r[j])) {
            continue;
        }
        at.push((inv, kept[j]));
        if kept[j] {
            if let Some(d) = done {
                at.push((d, true));
            }
        }
    }
    at.sort_unstable();
    let spare = h
        .ops
        .iter()
        .filter_map(|o| o.process.client_id())
        .max()
        .map_or(0, |p| p + 1);
    let ops = at
        .iter()
        .enumerate()
        .map(|(n, &(i, keep))| {
            let mut op = h.ops[i].clone();
            op.index = n as u64;
            if !keep {
                op.process = Process::Client(spare + i as u64);
            }
            op
        })
        .collect();
    History::from_ops(ops).map_err(|e| CheckError::Unsupported(format!("shrinking: {e}")))
}

impl Shrunk {
    /// The proof: the kept ops with the object's others indeterminate, and
    /// without the kept op at `also_drop` (an index into `kept`) if given.
    pub fn proof(&self, h: &History, also_drop: Option<usize>) -> Result<History, CheckError> {
        let dropped = also_drop.map(|j| self.kept[j]);
        let mask: Vec<bool> = self
            .object
            .iter()
            .map(|p| self.kept.contains(p) && Some(*p) != dropped)
            .collect();
        sub_history(h, &self.object, &mask, self.register)
    }

    /// The kept ops alone.
    pub fn alone(&self, h: &History) -> Result<History, CheckError> {
        let mask = vec![true; self.kept.len()];
        sub_history(h, &self.kept, &mask, false)
    }
}

/// For a register whose failed ops did not happen (all but etcd's): which
/// dropped writes may matter. A write of a value no remaining op reads or
/// compares against can be taken out of any order that fits without
/// breaking it (nothing between it and the next write depends on its
/// value), so only writes of observed values stay indeterminate; a cas
/// that stays makes its `from` observed.
fn relevant_writes(h: &History, object: &[(usize, Option<usize>)], kept: &[bool]) -> Vec<bool> {
    let written = |inv: usize| -> Option<(Value, Option<Value>)> {
        let op = &h.ops[inv];
        match op.f.as_str() {
            "write" => Some((op.value.clone(), None)),
            "cas" => op
                .value
                .as_list()
                .filter(|l| l.len() == 2)
                .map(|l| (l[1].clone(), Some(l[0].clone()))),
            _ => None,
        }
    };
    let mut observed: std::collections::HashSet<Value> = std::collections::HashSet::new();
    for (j, &(inv, done)) in object.iter().enumerate() {
        if !kept[j] {
            continue;
        }
        let op = &h.ops[inv];
        match op.f.as_str() {
            "read" => {
                if let Some(v) = done
                    .map(|d| &h.ops[d])
                    .filter(|d| d.is_ok())
                    .map(|d| &d.value)
                {
                    if *v != Value::Nil {
                        observed.insert(v.clone());
                    }
                }
            }
            _ => {
                if let Some((_, Some(from))) = written(inv) {
                    observed.insert(from);
                }
            }
        }
    }
    let mut relevant: Vec<bool> = kept.to_vec();
    loop {
        let mut grew = false;
        for (j, &(inv, _)) in object.iter().enumerate() {
            if relevant[j] {
                continue;
            }
            if let Some((to, from)) = written(inv) {
                if observed.contains(&to) {
                    relevant[j] = true;
                    grew = true;
                    if let Some(from) = from {
                        observed.insert(from);
                    }
                }
            }
        }
        if !grew {
            return relevant;
        }
    }
}

/// Shrink the first failing object of `h`; `None` when `h` is linearizable
/// or undecided.
pub fn shrink(h: &History, opts: &CheckOptions) -> Result<Option<Shrunk>, CheckError> {
    let start = Instant::now();
    let model = opts.model.clone().unwrap_or_default();
    let first = crate::check(h, opts)?;
    let Some(failure) = first.failures.first() else {
        return Ok(None);
    };
    let key = failure.key.clone();
    let register = matches!(model.as_str(), "register" | "cas-register");
    let object: Vec<(usize, Option<usize>)> = h
        .client_pairs()
        .filter(|&(inv, done)| {
            object_of(&model, &h.ops[inv]) == key
                && !done.is_some_and(|d| h.ops[d].kind == OpType::Fail && model_skips_fail(&model))
        })
        .collect();
    let checks = std::cell::Cell::new(0usize);
    let checks_unknown = std::cell::Cell::new(0usize);
    // Each step gets at most `shrink-step-ms` (default 1000) of the budget.
    let step = std::time::Duration::from_millis(
        opts.params
            .get("shrink-step-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
    let invalid = |kept: &[bool], step: std::time::Duration| -> Result<bool, CheckError> {
        checks.set(checks.get() + 1);
        let mut step_opts = opts.clone();
        let step_end = Instant::now() + step;
        step_opts.budget.deadline =
            Some(opts.budget.deadline.map_or(step_end, |d| d.min(step_end)));
        let r = crate::check(&sub_history(h, &object, kept, register)?, &step_opts)?;
        if r.verdict == Verdict::Unknown {
            checks_unknown.set(checks_unknown.get() + 1);
        }
        Ok(r.verdict == Verdict::Invalid)
    };
    // ddmin over the object's ops: try dropping each of n chunks; on success
    // go on with what is left, else split finer, until single ops.
    let mut kept = vec![true; object.len()];
    let mut n = 2usize;
    loop {
        let live: Vec<usize> = (0..object.len()).filter(|&j| kept[j]).collect();
        if live.len() < 2 {
            break;
        }
        let n_chunks = n.min(live.len());
        let mut dropped_one = false;
        for c in 0..n_chunks {
            let (lo, hi) = (c * live.len() / n_chunks, (c + 1) * live.len() / n_chunks);
            let mut trial = kept.clone();
            for &j in &live[lo..hi] {
                trial[j] = false;
            }
            if invalid(&trial, step)? {
                kept = trial;
                dropped_one = true;
                break;
            }
        }
        if dropped_one {
            n = n.saturating_sub(1).max(2);
        } else if n_chunks >= live.len() {
            break;
        } else {
            n = (n * 2).min(live.len());
        }
    }
    // Drops that ran out of time get one more try each, with 5 times the time.
    let mut minimal = true;
    if checks_unknown.get() > 0 {
        let mut j = 0;
        let mut unknown_at_sweep = checks_unknown.get();
        while j < object.len() {
            if kept[j] && kept.iter().filter(|&&k| k).count() > 1 {
                let mut trial = kept.clone();
                trial[j] = false;
                if invalid(&trial, step * 5)? {
                    kept = trial;
                    j = 0;
                    unknown_at_sweep = checks_unknown.get();
                    continue;
                }
            }
            j += 1;
        }
        minimal = checks_unknown.get() == unknown_at_sweep;
    }
    Ok(Some(Shrunk {
        key,
        object_ops: object.len(),
        kept: object
            .iter()
            .zip(&kept)
            .filter(|(_, &k)| k)
            .map(|(&p, _)| p)
            .collect(),
        object,
        minimal,
        register,
        checks: checks.get(),
        checks_unknown: checks_unknown.get(),
        elapsed_ms: start.elapsed().as_millis() as u64,
    }))
}

/// Whether the model ignores failed ops (all but etcd's, where a failed cas
/// still says what the register did not hold).
fn model_skips_fail(model: &str) -> bool {
    !matches!(model, "etcd" | "etcd-register")
}
