//! Session guarantees on a register/kv history (`read`/`write`, optional `key`,
//! every write of a key unique).
//!
//! Without a version order, the checker uses only orders a session guarantee
//! itself fixes, so every violation it reports is certain:
//! - the initial value precedes every write;
//! - writes by one process to a key are ordered as issued (monotonic writes);
//! - a write follows the value its writer last read of that key (writes-follow-reads);
//! - a register's values form one sequence, so a process that reads `a`, then
//!   something else, can never read `a` again (monotonic reads).
//!
//! Each process is then checked in its own order: a read must not go before
//! the process's own last write (read-your-writes) or its last read
//! (monotonic reads, or the guarantee that fixed the order). Consistent prefix:
//! two processes must not see two values change in opposite orders.

use std::collections::BTreeMap;

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::{FxMap, FxSet};
use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum SessionAnomaly {
    ReadYourWrites,
    MonotonicReads,
    MonotonicWrites,
    WritesFollowReads,
    ConsistentPrefix,
    /// A read returned a value never written (or whose write failed).
    UnwrittenValue,
}

impl SessionAnomaly {
    pub fn name(self) -> &'static str {
        match self {
            SessionAnomaly::ReadYourWrites => "read-your-writes",
            SessionAnomaly::MonotonicReads => "monotonic-reads",
            SessionAnomaly::MonotonicWrites => "monotonic-writes",
            SessionAnomaly::WritesFollowReads => "writes-follow-reads",
            SessionAnomaly::ConsistentPrefix => "consistent-prefix",
            SessionAnomaly::UnwrittenValue => "unwritten-value",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionViolation {
    pub kind: SessionAnomaly,
    pub process: u64,
    pub key: Option<Value>,
    /// The earlier op (a write or read) and the read that went back before it,
    /// as positions; consistent-prefix gives both processes' pairs, and
    /// unwritten-value just the read.
    pub ops: Vec<usize>,
    /// The values those ops wrote or read, in the same order.
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionResult {
    pub verdict: Verdict,
    pub read_count: usize,
    pub write_count: usize,
    pub violation_count: usize,
    pub counts: BTreeMap<SessionAnomaly, usize>,
    /// The first violations (the counts are exact).
    pub violations: Vec<SessionViolation>,
}

struct WriteInfo {
    process: u64,
    seq: u32,
    /// What the writer last read of the key before issuing this write.
    pre_read: Option<Value>,
    failed: bool,
}

#[derive(Default)]
struct Session {
    last_read: Option<(Value, usize)>,
    last_write: Option<(Value, usize)>,
    /// Values this process read and then moved past.
    left: FxSet<Value>,
    writes: u32,
}

enum Before {
    Initial,
    SameWriter,
    WriterReadFirst,
}

pub fn check_session(h: &History, opts: &CheckOptions) -> Result<SessionResult, CheckError> {
    let initial = opts.initial.clone().unwrap_or(Value::Nil);
    let mut key_ids: FxMap<Option<Value>, u32> = FxMap::default();
    let mut keys: Vec<Option<Value>> = Vec::new();
    let mut key_id = |k: &Option<Value>| -> u32 {
        if let Some(&id) = key_ids.get(k) {
            return id;
        }
        key_ids.insert(k.clone(), keys.len() as u32);
        keys.push(k.clone());
        keys.len() as u32 - 1
    };
    // Pass 1: every write, with its writer's order and what the writer had read.
    let mut writes: FxMap<(u32, Value), WriteInfo> = FxMap::default();
    let mut sessions: FxMap<(u64, u32), Session> = FxMap::default();
    let mut op_key: Vec<u32> = vec![u32::MAX; h.len()];
    for (i, op) in h.ops.iter().enumerate() {
        let Some(p) = op.process.client_id() else {
            continue;
        };
        if op.f != "read" && op.f != "write" {
            continue;
        }
        let k = if op.is_invoke() {
            key_id(&op.key)
        } else {
            match h.invocation(i) {
                Some(inv) => op_key[inv],
                None => continue,
            }
        };
        op_key[i] = k;
        let s = sessions.entry((p, k)).or_default();
        if op.f == "write" && op.is_invoke() {
            if op.value == initial {
                return Err(CheckError::bad_op(
                    i,
                    format!("write of {} equals the initial value; session checking needs every write unique", op.value),
                ));
            }
            let failed = h.completion(i).is_some_and(|c| h.ops[c].is_fail());
            let info = WriteInfo {
                process: p,
                seq: s.writes,
                pre_read: s.last_read.as_ref().map(|(v, _)| v.clone()),
                failed,
            };
            s.writes += 1;
            if writes.insert((k, op.value.clone()), info).is_some() {
                return Err(CheckError::bad_op(
                    i,
                    format!(
                        "{} is written twice to one key; session checking needs every write unique",
                        op.value
                    ),
                ));
            }
        } else if op.f == "read" && op.is_ok() {
            s.last_read = Some((op.value.clone(), i));
        }
    }
    sessions.clear();

    let before = |k: u32, x: &Value, f: &Value| -> Option<Before> {
        if x == f {
            return None;
        }
        if *x == initial {
            return Some(Before::Initial);
        }
        let wx = writes.get(&(k, x.clone()))?;
        let wf = writes.get(&(k, f.clone()))?;
        if wx.process == wf.process && wx.seq < wf.seq {
            return Some(Before::SameWriter);
        }
        if wf.pre_read.as_ref() == Some(x) {
            return Some(Before::WriterReadFirst);
        }
        None
    };

    let mut r = SessionResult {
        verdict: Verdict::Valid,
        read_count: 0,
        write_count: 0,
        violation_count: 0,
        counts: BTreeMap::new(),
        violations: Vec::new(),
    };
    let report = |r: &mut SessionResult, v: SessionViolation| {
        r.violation_count += 1;
        *r.counts.entry(v.kind).or_insert(0) += 1;
        if r.violations.len() < DETAIL_LIMIT {
            r.violations.push(v);
        }
    };
    // Observed changes of value: (key, from, to) -> (process, from-read, to-read).
    let mut transitions: FxMap<(u32, Value, Value), (u64, usize, usize)> = FxMap::default();
    for (i, op) in h.ops.iter().enumerate() {
        let Some(p) = op.process.client_id() else {
            continue;
        };
        if !op.is_ok() || (op.f != "read" && op.f != "write") {
            continue;
        }
        let k = op_key[i];
        let key = &keys[k as usize];
        let s = sessions.entry((p, k)).or_default();
        if op.f == "write" {
            r.write_count += 1;
            let inv = h.invocation(i).unwrap_or(i);
            s.last_write = Some((h.ops[inv].value.clone(), i));
            continue;
        }
        r.read_count += 1;
        let x = &op.value;
        let violation = |kind, earlier: usize, ev: &Value| SessionViolation {
            kind,
            process: p,
            key: key.clone(),
            ops: vec![earlier, i],
            values: vec![ev.clone(), x.clone()],
        };
        if *x != initial && writes.get(&(k, x.clone())).is_none_or(|w| w.failed) {
            let mut v = violation(SessionAnomaly::UnwrittenValue, i, x);
            v.ops.truncate(1);
            v.values.truncate(1);
            report(&mut r, v);
            continue;
        }
        if let Some((w, wp)) = &s.last_write {
            if before(k, x, w).is_some() {
                report(&mut r, violation(SessionAnomaly::ReadYourWrites, *wp, w));
            }
        }
        if let Some((y, yp)) = s.last_read.take() {
            if y != *x {
                let kind = if s.left.contains(x) {
                    Some(SessionAnomaly::MonotonicReads)
                } else {
                    before(k, x, &y).map(|b| match b {
                        Before::Initial => SessionAnomaly::MonotonicReads,
                        Before::SameWriter => SessionAnomaly::MonotonicWrites,
                        Before::WriterReadFirst => SessionAnomaly::WritesFollowReads,
                    })
                };
                if let Some(kind) = kind {
                    report(&mut r, violation(kind, yp, &y));
                }
                if let Some(&(q, qa, qb)) = transitions.get(&(k, x.clone(), y.clone())) {
                    if q != p {
                        report(
                            &mut r,
                            SessionViolation {
                                kind: SessionAnomaly::ConsistentPrefix,
                                process: p,
                                key: key.clone(),
                                ops: vec![qa, qb, yp, i],
                                values: vec![x.clone(), y.clone(), y.clone(), x.clone()],
                            },
                        );
                    }
                }
                transitions
                    .entry((k, y.clone(), x.clone()))
                    .or_insert((p, yp, i));
                s.left.insert(y);
            }
        }
        s.last_read = Some((x.clone(), i));
    }
    r.verdict = if r.violation_count > 0 {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for SessionResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        self.counts.keys().map(|k| k.name().to_string()).collect()
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} reads, {} writes, {} session violations\n",
            self.read_count, self.write_count, self.violation_count
        );
        for v in &self.violations {
            let key = v
                .key
                .as_ref()
                .map_or(String::new(), |k| format!(" key {k}"));
            let pairs: Vec<String> = v
                .ops
                .iter()
                .zip(&v.values)
                .map(|(o, val)| format!("op {o} ({val})"))
                .collect();
            s += &format!(
                "{}: process {}{}: {}\n",
                v.kind.name(),
                v.process,
                key,
                pairs.join(" then ")
            );
        }
        s
    }
}
