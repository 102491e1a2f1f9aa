//! Registers whose reads may return concurrent versions (siblings: version
//! vectors, multi-value registers) or one winner (last write wins): `write`
//! v (every write of a key unique), `read` -> a value, or a set of siblings,
//! optional `key`. No acknowledged write is lost unless a later write
//! causally overwrote it (DDIA ch. 5, "Detecting Concurrent Writes"). Only
//! a write that had not completed when `w` was invoked can have seen `w`;
//! call such a write a possible successor. With certainty then:
//! - a read by `w`'s own process after `w` (its session) returns `w`'s value
//!   among its siblings, unless a possible successor of `w` was invoked
//!   before the read completed;
//! - a write with no possible successor is in every final read (each
//!   process's last read of the key, when invoked after every write
//!   completed), and the final reads of a key agree;
//! - no read returns a value that no write of it had been invoked for.
//!
//! `sibling_reads` counts reads that returned more than one version.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LostWrite {
    pub key: Option<Value>,
    pub value: Value,
    /// The write's invocation position.
    pub write: usize,
    /// The read that should have held it (completion position); `None`: the final state.
    pub read: Option<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SiblingsResult {
    pub verdict: Verdict,
    pub write_count: usize,
    pub read_count: usize,
    pub sibling_reads: usize,
    pub lost_writes: Vec<LostWrite>,
    pub lost_write_count: usize,
    pub unwritten_reads: Vec<usize>,
    pub diverged_keys: Vec<Option<Value>>,
    pub unknown_because: Option<String>,
}

/// The versions a read returned: a set or list of siblings, one value, or none.
fn versions(v: &Value) -> BTreeSet<Value> {
    match v {
        Value::Nil => BTreeSet::new(),
        v => match v.as_list() {
            Some(items) => items.iter().cloned().collect(),
            None => BTreeSet::from([v.clone()]),
        },
    }
}

pub fn check_siblings(h: &History, _opts: &CheckOptions) -> Result<SiblingsResult, CheckError> {
    let mut r = SiblingsResult {
        verdict: Verdict::Valid,
        write_count: 0,
        read_count: 0,
        sibling_reads: 0,
        lost_writes: Vec::new(),
        lost_write_count: 0,
        unwritten_reads: Vec::new(),
        diverged_keys: Vec::new(),
        unknown_because: None,
    };
    // Per key, writes not known to have failed by invocation: (invocation,
    // completion or MAX while indeterminate), and over each prefix the two
    // latest completions with the write of the latest.
    let mut writes: BTreeMap<Option<Value>, Vec<(usize, usize)>> = BTreeMap::new();
    let mut written: BTreeMap<Option<Value>, BTreeSet<Value>> = BTreeMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        if op.is_client() && op.f == "write" && op.is_invoke() {
            let done = h.completion(i);
            if done.is_some_and(|c| h.ops[c].is_fail()) {
                continue;
            }
            let done = done.filter(|c| h.ops[*c].is_ok()).unwrap_or(usize::MAX);
            writes.entry(op.key.clone()).or_default().push((i, done));
        }
    }
    let latest: BTreeMap<Option<Value>, Vec<(usize, usize, usize)>> = writes
        .iter()
        .map(|(k, ws)| {
            // (latest completion, its write's invocation, second latest); a
            // completion is never at position 0, so 0 stands for none.
            let mut best: Option<(usize, usize)> = None;
            let mut second = 0usize;
            let prefix = ws
                .iter()
                .map(|&(inv, done)| {
                    match best {
                        Some((latest, _)) if done < latest => second = second.max(done),
                        Some((latest, _)) => {
                            second = second.max(latest);
                            best = Some((done, inv));
                        }
                        None => best = Some((done, inv)),
                    }
                    let (latest, by) = best.unwrap_or((0, usize::MAX));
                    (latest, by, second)
                })
                .collect();
            (k.clone(), prefix)
        })
        .collect();
    let last_write = h
        .ops
        .iter()
        .rposition(|o| o.is_client() && o.f == "write")
        .map_or(0, |p| p + 1);
    // Whether a write of `key` other than the one invoked at `w`, invoked
    // before position `before`, had not completed when `w` was invoked.
    let successor_before = |key: &Option<Value>, w: usize, before: usize| {
        let (Some(ws), Some(prefix)) = (writes.get(key), latest.get(key)) else {
            return false;
        };
        let n = ws.partition_point(|&(inv, _)| inv < before);
        if n == 0 {
            return false;
        }
        let (done, by, second) = prefix[n - 1];
        let latest_other = if by == w { second } else { done };
        latest_other > w
    };
    // Per process and key: its last ok write (invocation, completion, value).
    let mut session: BTreeMap<(u64, Option<Value>), (usize, usize, Value)> = BTreeMap::new();
    let mut last_read: BTreeMap<(Option<Value>, u64), BTreeSet<Value>> = BTreeMap::new();
    let lost = |r: &mut SiblingsResult, w: LostWrite| {
        r.lost_write_count += 1;
        if r.lost_writes.len() < DETAIL_LIMIT {
            r.lost_writes.push(w);
        }
    };
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() {
            continue;
        }
        let process = op.process.client_id().unwrap_or(u64::MAX);
        if op.f == "write" {
            if op.is_invoke() && !h.completion(i).is_some_and(|c| h.ops[c].is_fail()) {
                r.write_count += 1;
                written
                    .entry(op.key.clone())
                    .or_default()
                    .insert(op.value.clone());
            } else if op.is_ok() {
                let inv = h.invocation(i).unwrap_or(i);
                session.insert(
                    (process, op.key.clone()),
                    (inv, i, h.ops[inv].value.clone()),
                );
            }
        } else if op.f == "read" && op.is_ok() {
            r.read_count += 1;
            let got = versions(&op.value);
            if got.len() > 1 {
                r.sibling_reads += 1;
            }
            let known = written.get(&op.key);
            if got.iter().any(|v| !known.is_some_and(|k| k.contains(v)))
                && r.unwritten_reads.len() < DETAIL_LIMIT
            {
                r.unwritten_reads.push(i);
            }
            let inv = h.invocation(i).unwrap_or(i);
            if let Some((w_inv, w_done, v)) = session.get(&(process, op.key.clone())) {
                if inv > *w_done && !got.contains(v) && !successor_before(&op.key, *w_inv, i) {
                    lost(
                        &mut r,
                        LostWrite {
                            key: op.key.clone(),
                            value: v.clone(),
                            write: *w_inv,
                            read: Some(i),
                        },
                    );
                }
            }
            if inv >= last_write {
                last_read.insert((op.key.clone(), process), got);
            }
        }
    }
    let mut finals: BTreeMap<Option<Value>, BTreeSet<BTreeSet<Value>>> = BTreeMap::new();
    for ((key, _), got) in last_read {
        finals.entry(key).or_default().insert(got);
    }
    if finals.is_empty() {
        r.unknown_because =
            Some("no reads after the last write: the final state is unknown".into());
    }
    for (key, states) in &finals {
        if states.len() > 1 {
            r.diverged_keys.push(key.clone());
        }
        for &(w, done) in writes.get(key).into_iter().flatten() {
            if done == usize::MAX || successor_before(key, w, usize::MAX) {
                continue;
            }
            let value = &h.ops[w].value;
            if states.iter().any(|s| !s.contains(value)) {
                lost(
                    &mut r,
                    LostWrite {
                        key: key.clone(),
                        value: value.clone(),
                        write: w,
                        read: None,
                    },
                );
            }
        }
    }
    r.verdict =
        if r.lost_write_count > 0 || !r.unwritten_reads.is_empty() || !r.diverged_keys.is_empty() {
            Verdict::Invalid
        } else if r.unknown_because.is_some() {
            Verdict::Unknown
        } else {
            Verdict::Valid
        };
    Ok(r)
}

impl CheckOutcome for SiblingsResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.lost_write_count > 0 {
            a.push("lost-write");
        }
        if !self.unwritten_reads.is_empty() {
            a.push("unwritten-value");
        }
        if !self.diverged_keys.is_empty() {
            a.push("diverged");
        }
        a.into_iter().map(str::to_string).collect()
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} writes, {} reads, {} returned siblings\n",
            self.write_count, self.read_count, self.sibling_reads
        );
        for w in self.lost_writes.iter().take(10) {
            let key = w
                .key
                .as_ref()
                .map_or(String::new(), |k| format!(" of key {k}"));
            match w.read {
                Some(read) => {
                    s += &format!(
                        "the write of {}{key} (op {}) is missing from its own process's read at op {read}, and no other write could have overwritten it\n",
                        w.value, w.write
                    )
                }
                None => {
                    s += &format!(
                        "the last write of {}{key} (op {}) is missing from the final state\n",
                        w.value, w.write
                    )
                }
            }
        }
        if !self.unwritten_reads.is_empty() {
            s += &format!(
                "{} reads returned a value never written\n",
                self.unwritten_reads.len()
            );
        }
        if !self.diverged_keys.is_empty() {
            s += &format!(
                "{} keys ended different on different replicas\n",
                self.diverged_keys.len()
            );
        }
        if let Some(why) = &self.unknown_because {
            s += &format!("unknown: {why}\n");
        }
        s
    }
}
