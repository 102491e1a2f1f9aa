//! An observed-remove set, add-wins (Shapiro et al. 2011, section 3.3.5):
//! `add` x, `remove` x, `read` -> set. Replicated without coordination, so
//! judged only by what the add-wins rule makes certain:
//! - a remove removes the adds it has observed, and no others: an ok add
//!   that no remove could have observed (none completed after the add was
//!   invoked) survives: absent from the final state, it was lost;
//! - an add followed, in its own process, by an ok remove of the same
//!   element was observed by that remove (a process's ops are causal): an
//!   element whose every add was so removed must not come back (resurrection);
//! - a read never returns an element no add of which had been invoked;
//! - the final reads (each process's last read, when invoked after every
//!   add and remove completed) agree.
//!
//! `add_wins` counts the elements present at the end although an ok remove
//! of them completed after an add it had not observed in its own process
//! was invoked: the concurrent add won, as the rule says.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::elements_at;
use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrSetResult {
    pub verdict: Verdict,
    pub add_count: usize,
    pub remove_count: usize,
    pub read_count: usize,
    /// Distinct final states read, with how many reads returned each.
    pub final_states: Vec<(Vec<Value>, usize)>,
    /// Elements an unobserved ok add put in, missing at the end.
    pub lost: Vec<Value>,
    /// Elements back at the end though every add of them was removed after it.
    pub resurrected: Vec<Value>,
    /// Reads (completion positions) that returned an element nobody had added.
    pub phantom_reads: Vec<usize>,
    pub phantom_read_count: usize,
    /// Elements where an add concurrent with a remove won.
    pub add_wins: usize,
    /// Elements an ok remove removed for good.
    pub removed_for_good: usize,
    pub unknown_because: Option<String>,
}

struct Call {
    invoke: usize,
    /// Completion position; `None` while indeterminate.
    done: Option<usize>,
    ok: bool,
    process: u64,
}

pub fn check_or_set(h: &History, _opts: &CheckOptions) -> Result<OrSetResult, CheckError> {
    let mut adds: BTreeMap<Value, Vec<Call>> = BTreeMap::new();
    let mut removes: BTreeMap<Value, Vec<Call>> = BTreeMap::new();
    let mut r = OrSetResult {
        verdict: Verdict::Valid,
        add_count: 0,
        remove_count: 0,
        read_count: 0,
        final_states: Vec::new(),
        lost: Vec::new(),
        resurrected: Vec::new(),
        phantom_reads: Vec::new(),
        phantom_read_count: 0,
        add_wins: 0,
        removed_for_good: 0,
        unknown_because: None,
    };
    let last_update = h
        .ops
        .iter()
        .rposition(|o| o.is_client() && (o.f == "add" || o.f == "remove"))
        .map_or(0, |p| p + 1);
    let mut last_read: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() {
            continue;
        }
        let f = op.f.as_str();
        if (f == "add" || f == "remove") && op.is_invoke() {
            let done = h.completion(i);
            if done.is_some_and(|c| h.ops[c].is_fail()) {
                continue;
            }
            let call = Call {
                invoke: i,
                done: done.filter(|c| h.ops[*c].is_ok()),
                ok: done.is_some_and(|c| h.ops[c].is_ok()),
                process: op.process.client_id().unwrap_or(u64::MAX),
            };
            if f == "add" {
                r.add_count += 1;
                adds.entry(op.value.clone()).or_default().push(call);
            } else {
                r.remove_count += 1;
                removes.entry(op.value.clone()).or_default().push(call);
            }
        } else if f == "read" && op.is_ok() {
            r.read_count += 1;
            let read: BTreeSet<Value> =
                elements_at(i, &op.value, "read")?.iter().cloned().collect();
            // Adds seen so far are exactly those invoked before this completion.
            if read.iter().any(|e| !adds.contains_key(e)) {
                r.phantom_read_count += 1;
                if r.phantom_reads.len() < DETAIL_LIMIT {
                    r.phantom_reads.push(i);
                }
            }
            if h.invocation(i).unwrap_or(i) >= last_update {
                last_read.insert(
                    op.process.client_id().unwrap_or(u64::MAX),
                    read.into_iter().collect(),
                );
            }
        }
    }
    let mut finals: BTreeMap<Vec<Value>, usize> = BTreeMap::new();
    for state in last_read.into_values() {
        *finals.entry(state).or_insert(0) += 1;
    }
    r.final_states = finals.into_iter().collect();
    r.final_states.sort_by_key(|s| std::cmp::Reverse(s.1));
    let Some((final_state, _)) = r.final_states.first() else {
        r.unknown_because =
            Some("no reads after the last add or remove: the final state is unknown".into());
        r.verdict = if r.phantom_read_count > 0 {
            Verdict::Invalid
        } else {
            Verdict::Unknown
        };
        return Ok(r);
    };
    let final_state: BTreeSet<&Value> = final_state.iter().collect();
    // Lost from any final state, back in any: each replica is held to the rule.
    let in_every = |e: &Value| r.final_states.iter().all(|(s, _)| s.contains(e));
    let in_some = |e: &Value| r.final_states.iter().any(|(s, _)| s.contains(e));
    let no_removes = Vec::new();
    let (mut lost, mut resurrected) = (Vec::new(), Vec::new());
    for (e, adds_of_e) in &adds {
        let rm = removes.get(e).unwrap_or(&no_removes);
        let present = final_state.contains(e);
        // A remove can observe an add only if it ended (or may end) after the add began.
        let could_observe = |a: &Call| rm.iter().any(|x| x.done.is_none_or(|d| d > a.invoke));
        if !in_every(e) && adds_of_e.iter().any(|a| a.ok && !could_observe(a)) {
            lost.push(e.clone());
        }
        let removed_after_in_session = |a: &Call| {
            rm.iter()
                .any(|x| x.ok && x.process == a.process && x.invoke > a.done.unwrap_or(usize::MAX))
        };
        if in_some(e) && adds_of_e.iter().all(removed_after_in_session) {
            resurrected.push(e.clone());
        }
        if present
            && rm.iter().any(|x| {
                x.ok && adds_of_e.iter().any(|a| {
                    a.invoke < x.done.unwrap_or(usize::MAX)
                        && !(a.process == x.process && a.done.is_some_and(|d| d < x.invoke))
                })
            })
        {
            r.add_wins += 1;
        }
        if !present && rm.iter().any(|x| x.ok) {
            r.removed_for_good += 1;
        }
    }
    r.lost = lost;
    r.resurrected = resurrected;
    let diverged = r.final_states.len() > 1;
    r.verdict = if diverged
        || !r.lost.is_empty()
        || !r.resurrected.is_empty()
        || r.phantom_read_count > 0
    {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for OrSetResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.final_states.len() > 1 {
            a.push("diverged");
        }
        if !self.lost.is_empty() {
            a.push("lost-add");
        }
        if !self.resurrected.is_empty() {
            a.push("resurrection");
        }
        if self.phantom_read_count > 0 {
            a.push("phantom-read");
        }
        a.into_iter().map(str::to_string).collect()
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} adds, {} removes, {} reads; add-wins cases {}, removed for good {}\n",
            self.add_count,
            self.remove_count,
            self.read_count,
            self.add_wins,
            self.removed_for_good
        );
        if self.final_states.len() > 1 {
            s += &format!(
                "the final reads disagree: {} different states\n",
                self.final_states.len()
            );
        }
        let list = |v: &[Value]| v.iter().map(Value::to_string).collect::<Vec<_>>().join(" ");
        if !self.lost.is_empty() {
            s += &format!(
                "lost (added, no remove could have seen it, gone at the end): {}\n",
                list(&self.lost)
            );
        }
        if !self.resurrected.is_empty() {
            s += &format!(
                "resurrected (every add removed after it, back at the end): {}\n",
                list(&self.resurrected)
            );
        }
        if self.phantom_read_count > 0 {
            s += &format!(
                "{} reads returned an element nobody had added\n",
                self.phantom_read_count
            );
        }
        if let Some(why) = &self.unknown_because {
            s += &format!("unknown: {why}\n");
        }
        s
    }
}
