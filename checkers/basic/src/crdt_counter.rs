//! A counter replicated without coordination (a CRDT counter, multi-leader):
//! `add` n (negative: a decrement), `read` -> n. Strong eventual
//! consistency, not linearizability (Shapiro et al. 2011):
//! - a read during the run may reflect any subset of the adds not known to
//!   have failed that were invoked before it completed, so it lies between
//!   `initial` plus their negative parts and `initial` plus their positive parts;
//! - the final reads (each process's last read, when invoked after every
//!   add completed) all return one value (convergence), and that value is `initial` plus every
//!   acknowledged add plus the adds of some subset of the indeterminate
//!   (`info`) ones: no acknowledged add is lost, none is counted twice.
//!
//! Without final reads the history says nothing of convergence: unknown.

use std::collections::BTreeMap;

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::int_at;
use crate::counter::CounterViolation;
use crate::DETAIL_LIMIT;

/// Sums over this many values or more are not enumerated: unknown.
const MAX_SUM_RANGE: usize = 1 << 24;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CrdtCounterResult {
    pub verdict: Verdict,
    pub add_count: usize,
    pub info_add_count: usize,
    pub read_count: usize,
    /// Acknowledged adds' total, `initial` included.
    pub acknowledged_total: i64,
    /// Reads outside what any subset of the adds so far allows.
    pub out_of_bounds: Vec<CounterViolation>,
    pub out_of_bounds_count: usize,
    /// The final reads' values and how many returned each.
    pub final_values: BTreeMap<i64, usize>,
    /// A final value no subset of the indeterminate adds explains.
    pub unexplained_final_values: Vec<i64>,
    /// Why the result is unknown, when it is.
    pub unknown_because: Option<String>,
}

pub fn check_crdt_counter(
    h: &History,
    opts: &CheckOptions,
) -> Result<CrdtCounterResult, CheckError> {
    let initial = match &opts.initial {
        None | Some(Value::Nil) => 0,
        Some(v) => v.as_int().ok_or_else(|| {
            CheckError::Unsupported(format!("counter initial value must be an integer, not {v}"))
        })?,
    };
    let is_add = |f: &str| f == "add" || f == "increment";
    let mut r = CrdtCounterResult {
        verdict: Verdict::Valid,
        add_count: 0,
        info_add_count: 0,
        read_count: 0,
        acknowledged_total: initial,
        out_of_bounds: Vec::new(),
        out_of_bounds_count: 0,
        final_values: BTreeMap::new(),
        unexplained_final_values: Vec::new(),
        unknown_because: None,
    };
    let last_add_event = h
        .ops
        .iter()
        .rposition(|o| o.is_client() && is_add(o.f.as_str()))
        .map_or(0, |p| p + 1);
    let mut last_read: BTreeMap<u64, i64> = BTreeMap::new();
    let (mut invoked_pos, mut invoked_neg) = (0i64, 0i64);
    let mut indeterminate: Vec<i64> = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() {
            continue;
        }
        let f = op.f.as_str();
        if is_add(f) && op.is_invoke() {
            let comp = h.completion(i).map(|c| &h.ops[c]);
            if comp.is_some_and(|c| c.is_fail()) {
                continue;
            }
            let n = int_at(i, &op.value, f)?;
            r.add_count += 1;
            if n >= 0 {
                invoked_pos = invoked_pos.saturating_add(n);
            } else {
                invoked_neg = invoked_neg.saturating_add(n);
            }
            match comp {
                Some(c) if c.is_ok() => {
                    r.acknowledged_total = r.acknowledged_total.saturating_add(n)
                }
                _ => {
                    r.info_add_count += 1;
                    indeterminate.push(n);
                }
            }
        } else if f == "read" && op.is_ok() {
            let value = int_at(i, &op.value, "a counter read")?;
            r.read_count += 1;
            let inv = h.invocation(i).unwrap_or(i);
            if inv >= last_add_event {
                last_read.insert(op.process.client_id().unwrap_or(u64::MAX), value);
            }
            let lower = initial.saturating_add(invoked_neg);
            let upper = initial.saturating_add(invoked_pos);
            if let Some(v) = CounterViolation::of(i, value, lower, upper) {
                r.out_of_bounds_count += 1;
                if r.out_of_bounds.len() < DETAIL_LIMIT {
                    r.out_of_bounds.push(v);
                }
            }
        }
    }
    for value in last_read.into_values() {
        *r.final_values.entry(value).or_insert(0) += 1;
    }
    match reachable(r.acknowledged_total, &indeterminate) {
        None => {
            r.unknown_because = Some(format!(
                "{} indeterminate adds span too many totals to enumerate",
                indeterminate.len()
            ))
        }
        Some(ok) => {
            r.unexplained_final_values =
                r.final_values.keys().copied().filter(|v| !ok(*v)).collect();
        }
    }
    if r.final_values.is_empty() && r.unknown_because.is_none() {
        r.unknown_because = Some("no reads after the last add: convergence unchecked".into());
    }
    r.verdict = if r.out_of_bounds_count > 0
        || r.final_values.len() > 1
        || !r.unexplained_final_values.is_empty()
    {
        Verdict::Invalid
    } else if r.unknown_because.is_some() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    Ok(r)
}

/// Which totals `base` plus a subset of `parts` can make, as a membership
/// test; `None` when the range is too wide to enumerate.
fn reachable(base: i64, parts: &[i64]) -> Option<impl Fn(i64) -> bool> {
    let low: i64 = parts.iter().filter(|p| **p < 0).sum();
    let high: i64 = parts.iter().filter(|p| **p > 0).sum();
    let width = usize::try_from(high.checked_sub(low)?)
        .ok()?
        .checked_add(1)?;
    if width > MAX_SUM_RANGE || width.checked_mul(parts.len().max(1))? > 1 << 30 {
        return None;
    }
    let mut can = vec![false; width];
    can[(-low) as usize] = true;
    for &p in parts {
        let next: Vec<bool> = (0..width)
            .map(|i| {
                can[i]
                    || (i as i64 - p >= 0
                        && ((i as i64 - p) as usize) < width
                        && can[(i as i64 - p) as usize])
            })
            .collect();
        can = next;
    }
    Some(move |v: i64| {
        let i = v.saturating_sub(base).saturating_sub(low);
        (0..width as i64).contains(&i) && can[i as usize]
    })
}

impl CheckOutcome for CrdtCounterResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.out_of_bounds_count > 0 {
            a.push("out-of-bounds-read".to_string());
        }
        if self.final_values.len() > 1 {
            a.push("diverged".to_string());
        }
        if !self.unexplained_final_values.is_empty() {
            a.push("lost-or-duplicated-add".to_string());
        }
        a
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} adds ({} indeterminate), {} reads; acknowledged total {}\n",
            self.add_count, self.info_add_count, self.read_count, self.acknowledged_total
        );
        for v in self.out_of_bounds.iter().take(10) {
            s += &format!(
                "read at op {} returned {}, outside [{}, {}]\n",
                v.read, v.value, v.lower, v.upper
            );
        }
        if self.final_values.len() > 1 {
            s += &format!(
                "the final reads disagree: {:?} (value: reads)\n",
                self.final_values
            );
        }
        for v in &self.unexplained_final_values {
            s += &format!(
                "final value {v} is not the acknowledged total plus any subset of the indeterminate adds\n"
            );
        }
        if let Some(why) = &self.unknown_because {
            s += &format!("unknown: {why}\n");
        }
        s
    }
}
