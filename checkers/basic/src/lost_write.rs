//! Acknowledged register writes that a later read proves gone (`write` v,
//! `cas` [old new], `read` -> v, optional `key`; values need not be unique).
//!
//! An ok write `w` of `v` is the register's value for every read that begins
//! after `w` completed and ends before any other write that could follow `w`
//! began. A write could follow `w` when it had not completed by the time `w`
//! was invoked (indeterminate writes never complete); failed writes did not
//! happen; a read of nil is an unknown value (Knossos's registers) and is
//! not judged, unless the param `nil-read=empty` says nil is the empty
//! register. Such a read that returns anything but `v` is certain proof that
//! the history is not linearizable, and it names the write it missed:
//! - **lost-write**: the read is by `w`'s own process, and no read that began
//!   after `w` completed ever returns `v`: the store acknowledged the write,
//!   did not show it even to its writer, and nobody saw it after (DDIA ch. 5,
//!   "Last write wins (discarding concurrent writes)"; textbook 003: with
//!   skewed timestamps "you can lose writes silently");
//! - **stale-read**: any other such read: it saw a state older than `w`,
//!   which may have been visible elsewhere.
//!
//! A history with no such read is not shown linearizable: the linearizable
//! checker decides that; this one names the writes a failure lost.

use std::collections::BTreeMap;

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MissedWrite {
    pub key: Option<Value>,
    pub value: Value,
    /// The write's invocation position.
    pub write: usize,
    /// The read's completion position.
    pub read: usize,
    /// What the read returned instead.
    pub read_value: Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LostWriteResult {
    pub verdict: Verdict,
    pub write_count: usize,
    pub read_count: usize,
    /// Reads that fell in some ok write's window (the reads that could prove a loss).
    pub reads_judged: usize,
    /// Each lost write once, with the first read that missed it.
    pub lost_writes: Vec<MissedWrite>,
    pub lost_write_count: usize,
    pub stale_reads: Vec<MissedWrite>,
    pub stale_read_count: usize,
}

/// A write's span: invocation, completion (`usize::MAX` while
/// indeterminate), and whether it is acknowledged.
#[derive(Clone, Copy)]
struct Span {
    inv: usize,
    done: usize,
    ok: bool,
}

/// The value a write or cas puts in the register.
fn written(op_f: &str, value: &Value) -> Option<Value> {
    match op_f {
        "write" => Some(value.clone()),
        "cas" => value.as_list().and_then(|l| l.get(1)).cloned(),
        _ => None,
    }
}

pub fn check_lost_writes(h: &History, opts: &CheckOptions) -> Result<LostWriteResult, CheckError> {
    let nil_read_is_empty = opts.nil_read_is_empty()?;
    let mut r = LostWriteResult {
        verdict: Verdict::Valid,
        write_count: 0,
        read_count: 0,
        reads_judged: 0,
        lost_writes: Vec::new(),
        lost_write_count: 0,
        stale_reads: Vec::new(),
        stale_read_count: 0,
    };
    // Per key: writes that may have happened, and ok reads (invocation, completion).
    let mut writes: BTreeMap<Option<Value>, Vec<Span>> = BTreeMap::new();
    let mut reads: BTreeMap<Option<Value>, Vec<(usize, usize)>> = BTreeMap::new();
    let process = |i: usize| h.ops[i].process.client_id();
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() || !op.is_invoke() {
            continue;
        }
        let done = h.completion(i);
        let fate = done.map(|c| &h.ops[c]);
        if fate.is_some_and(|c| c.is_fail()) {
            continue;
        }
        let ok = fate.is_some_and(|c| c.is_ok());
        match op.f.as_str() {
            "write" | "cas" => {
                r.write_count += 1;
                let done = if ok {
                    done.unwrap_or(usize::MAX)
                } else {
                    usize::MAX
                };
                writes
                    .entry(op.key.clone())
                    .or_default()
                    .push(Span { inv: i, done, ok });
            }
            // A read of nil is an unknown value in Knossos's registers: it proves nothing.
            "read" if ok && (nil_read_is_empty || fate.is_some_and(|c| c.value != Value::Nil)) => {
                r.read_count += 1;
                reads
                    .entry(op.key.clone())
                    .or_default()
                    .push((i, done.unwrap_or(usize::MAX)));
            }
            _ => {}
        }
    }
    // Each lost write with the first read that missed it.
    let mut lost: BTreeMap<usize, MissedWrite> = BTreeMap::new();
    for (key, ws) in &writes {
        let Some(rs) = reads.get(key) else { continue };
        // Each ok write's window end: the first invocation of a write that
        // could follow it. Writes sorted by completion give, for a suffix
        // (those completing after a point), the two earliest invocations.
        let mut by_done: Vec<Span> = ws.clone();
        by_done.sort_by_key(|s| s.done);
        let mut suffix = vec![(usize::MAX, usize::MAX); by_done.len() + 1];
        for j in (0..by_done.len()).rev() {
            let (a, b) = suffix[j + 1];
            let inv = by_done[j].inv;
            suffix[j] = if inv < a { (inv, a) } else { (a, b.min(inv)) };
        }
        let window_end = |w: &Span| {
            let from = by_done.partition_point(|s| s.done <= w.inv);
            let (a, b) = suffix[from];
            if a == w.inv {
                b
            } else {
                a
            }
        };
        // Ok writes by completion, each with its window end.
        let acked: Vec<(usize, usize, usize)> = by_done
            .iter()
            .filter(|s| s.ok)
            .map(|s| (s.done, s.inv, window_end(s)))
            .collect();
        // Per value, the last invocation of a read that returned it.
        let mut last_read_of: BTreeMap<&Value, usize> = BTreeMap::new();
        for &(inv, done) in rs {
            last_read_of.insert(&h.ops[done].value, inv);
        }
        for &(r_inv, r_done) in rs {
            // The ok write completed last before the read began is the only
            // one whose window can hold the read.
            let n = acked.partition_point(|&(done, _, _)| done < r_inv);
            if n == 0 {
                continue;
            }
            let (w_done, w_inv, end) = acked[n - 1];
            if r_done >= end {
                continue;
            }
            r.reads_judged += 1;
            let v = written(&h.ops[w_inv].f, &h.ops[w_inv].value).unwrap_or(Value::Nil);
            let got = &h.ops[r_done].value;
            if *got == v {
                continue;
            }
            let own = process(r_inv).is_some_and(|p| Some(p) == process(w_inv));
            let seen_later = last_read_of.get(&v).is_some_and(|&inv| inv > w_done);
            let missed = MissedWrite {
                key: key.clone(),
                value: v,
                write: w_inv,
                read: r_done,
                read_value: got.clone(),
            };
            if seen_later || !own {
                r.stale_read_count += 1;
                if r.stale_reads.len() < DETAIL_LIMIT {
                    r.stale_reads.push(missed);
                }
            } else {
                lost.entry(w_inv).or_insert(missed);
            }
        }
    }
    r.lost_write_count = lost.len();
    r.lost_writes = lost.into_values().take(DETAIL_LIMIT).collect();
    r.verdict = if r.lost_write_count + r.stale_read_count > 0 {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for LostWriteResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.lost_write_count > 0 {
            a.push("lost-write".to_string());
        }
        if self.stale_read_count > 0 {
            a.push("stale-read".to_string());
        }
        a
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} writes, {} reads, {} reads followed an acknowledged write with no other write possible in between\n",
            self.write_count, self.read_count, self.reads_judged
        );
        let key = |k: &Option<Value>| k.as_ref().map_or(String::new(), |k| format!(" of key {k}"));
        if self.lost_write_count > 0 {
            s += &format!(
                "{} acknowledged writes were missed by their own process's next reads and never read by anyone (lost writes)\n",
                self.lost_write_count
            );
        }
        for m in self.lost_writes.iter().take(10) {
            s += &format!(
                "the write of {}{} (op {}) was acknowledged, then its own process's read at op {} returned {}, and no read after the write returned it\n",
                m.value,
                key(&m.key),
                m.write,
                m.read,
                m.read_value
            );
        }
        if self.stale_read_count > 0 {
            s += &format!(
                "{} reads returned an older value than the acknowledged write before them (stale reads)\n",
                self.stale_read_count
            );
        }
        for m in self.stale_reads.iter().take(5) {
            s += &format!(
                "the read at op {} returned {} after the write of {}{} (op {}) completed\n",
                m.read,
                m.read_value,
                m.value,
                key(&m.key),
                m.write
            );
        }
        s
    }
}
