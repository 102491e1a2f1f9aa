//! Queues: `enqueue` with the element as value, `dequeue` returning one
//! element (nil for an empty queue), `drain` returning a list of them.
//!
//! `queue` checks safety only: nothing dequeued that was never enqueued (or
//! whose enqueue failed, or began after the dequeue ended), nothing dequeued
//! twice. `total-queue` also needs everything acknowledged to come out (the
//! workload drains at the end): lost and recovered elements.
//! Duplicates are violations unless `duplicates-allowed=true` (at-least-once queues).

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, OpType, Value, Verdict};

use crate::common::{param, Elements, FxMap};
use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DuplicateDequeue {
    pub element: Value,
    /// Completion positions of the dequeues/drains that returned it.
    pub ops: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnexpectedDequeue {
    pub element: Value,
    pub op: usize,
    /// The enqueue's invocation, when there was one (failed, or begun too late).
    pub enqueue: Option<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueResult {
    pub verdict: Verdict,
    /// Whether lost elements count (total-queue).
    pub total: bool,
    pub attempt_count: usize,
    pub acknowledged_count: usize,
    pub dequeued_count: usize,
    pub lost: Elements,
    pub unexpected: Elements,
    pub duplicated: Elements,
    pub recovered: Elements,
    pub unexpected_ops: Vec<UnexpectedDequeue>,
    pub duplicated_ops: Vec<DuplicateDequeue>,
}

struct Enqueue {
    invoke: usize,
    end: OpType,
}

pub fn check_queue(h: &History, opts: &CheckOptions) -> Result<QueueResult, CheckError> {
    run(h, opts, false)
}

pub fn check_total_queue(h: &History, opts: &CheckOptions) -> Result<QueueResult, CheckError> {
    run(h, opts, true)
}

fn run(h: &History, opts: &CheckOptions, total: bool) -> Result<QueueResult, CheckError> {
    let duplicates_allowed = param::<bool>(opts, "duplicates-allowed")?.unwrap_or(false);
    let mut enq: FxMap<&Value, Enqueue> = FxMap::default();
    let mut order: Vec<&Value> = Vec::new();
    // Dequeued element -> completion positions.
    let mut deq: FxMap<&Value, Vec<usize>> = FxMap::default();
    let mut deq_order: Vec<&Value> = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() {
            continue;
        }
        match op.f.as_str() {
            "enqueue" if op.is_invoke() => {
                let end = h.completion(i).map_or(OpType::Info, |c| h.ops[c].kind);
                if enq.insert(&op.value, Enqueue { invoke: i, end }).is_some() {
                    return Err(CheckError::bad_op(
                        i,
                        format!(
                            "element {} is enqueued twice; queue checkers need unique elements",
                            op.value
                        ),
                    ));
                }
                order.push(&op.value);
            }
            "dequeue" | "drain" if op.is_ok() => {
                let items: &[Value] = if op.f == "dequeue" {
                    if op.value.is_nil() {
                        &[]
                    } else {
                        std::slice::from_ref(&op.value)
                    }
                } else {
                    match &op.value {
                        Value::Nil => &[],
                        v => v.as_list().ok_or_else(|| {
                            CheckError::bad_op(i, format!("drain must return a list, not {v}"))
                        })?,
                    }
                };
                for v in items {
                    let ops = deq.entry(v).or_default();
                    if ops.is_empty() {
                        deq_order.push(v);
                    }
                    ops.push(i);
                }
            }
            _ => {}
        }
    }
    let mut r = QueueResult {
        verdict: Verdict::Valid,
        total,
        attempt_count: enq.values().filter(|e| e.end != OpType::Fail).count(),
        acknowledged_count: enq.values().filter(|e| e.end == OpType::Ok).count(),
        dequeued_count: deq.len(),
        lost: Elements::default(),
        unexpected: Elements::default(),
        duplicated: Elements::default(),
        recovered: Elements::default(),
        unexpected_ops: Vec::new(),
        duplicated_ops: Vec::new(),
    };
    let (mut unexpected, mut duplicated, mut recovered) = (Vec::new(), Vec::new(), Vec::new());
    for v in deq_order {
        let ops = &deq[v];
        let e = enq.get(v);
        let first = ops[0];
        match e {
            Some(e) if e.end != OpType::Fail && e.invoke < first => {
                if e.end != OpType::Ok {
                    recovered.push(v);
                }
            }
            _ => {
                unexpected.push(v);
                if r.unexpected_ops.len() < DETAIL_LIMIT {
                    r.unexpected_ops.push(UnexpectedDequeue {
                        element: v.clone(),
                        op: first,
                        enqueue: e.map(|e| e.invoke),
                    });
                }
            }
        }
        if ops.len() > 1 {
            duplicated.push(v);
            if r.duplicated_ops.len() < DETAIL_LIMIT {
                r.duplicated_ops.push(DuplicateDequeue {
                    element: v.clone(),
                    ops: ops.clone(),
                });
            }
        }
    }
    if total {
        let lost: Vec<&Value> = order
            .iter()
            .copied()
            .filter(|v| enq[v].end == OpType::Ok && !deq.contains_key(v))
            .collect();
        r.lost = Elements::from_values(lost);
        r.recovered = Elements::from_values(recovered);
    }
    r.unexpected = Elements::from_values(unexpected);
    r.duplicated = Elements::from_values(duplicated);
    r.verdict = if !r.lost.is_empty()
        || !r.unexpected.is_empty()
        || (!duplicates_allowed && !r.duplicated.is_empty())
    {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for QueueResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (e, name) in [
            (&self.lost, "lost"),
            (&self.unexpected, "unexpected"),
            (&self.duplicated, "duplicated"),
        ] {
            if !e.is_empty() {
                a.push(name.to_string());
            }
        }
        a
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} enqueues attempted, {} acknowledged, {} distinct elements dequeued\n",
            self.attempt_count, self.acknowledged_count, self.dequeued_count
        );
        if self.total {
            s += &format!("lost: {}\nrecovered: {}\n", self.lost, self.recovered);
        }
        s += &format!(
            "unexpected: {}\nduplicated: {}\n",
            self.unexpected, self.duplicated
        );
        for u in &self.unexpected_ops {
            s += &format!(
                "{} dequeued at op {} {}\n",
                u.element,
                u.op,
                u.enqueue
                    .map_or("was never enqueued".to_string(), |e| format!(
                        "but its enqueue at op {e} failed or began later"
                    ))
            );
        }
        for d in &self.duplicated_ops {
            let ops: Vec<String> = d.ops.iter().map(|p| format!("op {p}")).collect();
            s += &format!(
                "{} dequeued {} times: {}\n",
                d.element,
                d.ops.len(),
                ops.join(", ")
            );
        }
        s
    }
}
