//! A counter: `add` (or `increment`) by n, `read` returning the count.
//!
//! A read may reflect any add acknowledged before it began and any add not
//! known to have failed that began before it ended. So it must lie between
//! `initial + acknowledged + (negative parts of the uncertain adds)` and
//! `initial + acknowledged + (positive parts of the uncertain adds)`.

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::int_at;
use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CounterViolation {
    /// The read's completion position.
    pub read: usize,
    pub value: i64,
    pub lower: i64,
    pub upper: i64,
    /// How far outside the bounds (negative: below the lower bound).
    pub off_by: i64,
}

impl CounterViolation {
    /// The read at `read` of `value`, if it is outside `[lower, upper]`.
    pub fn of(read: usize, value: i64, lower: i64, upper: i64) -> Option<CounterViolation> {
        let off_by = if value < lower {
            value.saturating_sub(lower)
        } else if value > upper {
            value.saturating_sub(upper)
        } else {
            return None;
        };
        Some(CounterViolation {
            read,
            value,
            lower,
            upper,
            off_by,
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CounterResult {
    pub verdict: Verdict,
    pub read_count: usize,
    pub add_count: usize,
    pub violation_count: usize,
    /// The first violating reads (the count is exact).
    pub violations: Vec<CounterViolation>,
}

pub fn check_counter(h: &History, opts: &CheckOptions) -> Result<CounterResult, CheckError> {
    let initial = match &opts.initial {
        None | Some(Value::Nil) => 0,
        Some(v) => v.as_int().ok_or_else(|| {
            CheckError::Unsupported(format!("counter initial value must be an integer, not {v}"))
        })?,
    };
    let is_add = |f: &str| f == "add" || f == "increment";
    // Sums up to the current position: acknowledged positive/negative parts,
    // and invoked (not failed) positive/negative parts.
    let (mut acked_pos, mut acked_neg, mut invoked_pos, mut invoked_neg) = (0i64, 0i64, 0i64, 0i64);
    // Per read invocation: (acked_pos, acked_neg) at that moment.
    let mut at_invoke: Vec<(i64, i64)> = vec![(0, 0); 0];
    let mut read_slot: Vec<u32> = vec![u32::MAX; h.len()];
    let mut r = CounterResult {
        verdict: Verdict::Valid,
        read_count: 0,
        add_count: 0,
        violation_count: 0,
        violations: Vec::new(),
    };
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() {
            continue;
        }
        let f = op.f.as_str();
        if is_add(f) {
            if op.is_invoke() {
                let comp = h.completion(i);
                if comp.is_some_and(|c| h.ops[c].is_fail()) {
                    continue;
                }
                let n = int_at(i, &op.value, f)?;
                r.add_count += 1;
                if n >= 0 {
                    invoked_pos = invoked_pos.saturating_add(n);
                } else {
                    invoked_neg = invoked_neg.saturating_add(n);
                }
            } else if op.is_ok() {
                let inv = h.invocation(i).unwrap_or(i);
                let n = int_at(inv, &h.ops[inv].value, f)?;
                if n >= 0 {
                    acked_pos = acked_pos.saturating_add(n);
                } else {
                    acked_neg = acked_neg.saturating_add(n);
                }
            }
        } else if f == "read" {
            if op.is_invoke() {
                read_slot[i] = at_invoke.len() as u32;
                at_invoke.push((acked_pos, acked_neg));
            } else if op.is_ok() {
                let Some(inv) = h.invocation(i) else { continue };
                let value = int_at(i, &op.value, "a counter read")?;
                let (ap, an) = at_invoke[read_slot[inv] as usize];
                r.read_count += 1;
                // Saturating: absurd increments must not overflow the checker.
                let lower = initial.saturating_add(ap).saturating_add(invoked_neg);
                let upper = initial.saturating_add(an).saturating_add(invoked_pos);
                if let Some(v) = CounterViolation::of(i, value, lower, upper) {
                    r.violation_count += 1;
                    if r.violations.len() < DETAIL_LIMIT {
                        r.violations.push(v);
                    }
                }
            }
        }
    }
    r.verdict = if r.violation_count > 0 {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for CounterResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        if self.violation_count > 0 {
            vec!["out-of-bounds-read".to_string()]
        } else {
            Vec::new()
        }
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} adds, {} reads, {} out of bounds\n",
            self.add_count, self.read_count, self.violation_count
        );
        for v in &self.violations {
            s += &format!(
                "read at op {} returned {}, possible {}..={} (off by {})\n",
                v.read, v.value, v.lower, v.upper, v.off_by
            );
        }
        s
    }
}
