//! A history's transactions in a compact, dense form: txns and micro-ops are
//! numbered from 0, keys are interned, values stay borrowed from the history.

use splitbrain_history::{CheckError, History, OpType, Process, Value};

use crate::fx::FxMap;

pub(crate) const NONE: u32 = u32::MAX;

pub(crate) static NIL: Value = Value::Nil;

/// Histories at least this long are parsed on two threads.
const PARALLEL_OPS: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MopKind {
    Append,
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    /// Indeterminate: it may have committed.
    Info,
    /// Aborted: it certainly did not commit.
    Fail,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Mop<'h> {
    pub kind: MopKind,
    pub key: u32,
    /// The appended/written value, or what a read returned (nil when unknown).
    pub value: &'h Value,
    /// The first access of the txn to this key is this read (Elle's "external read").
    pub ext_read: bool,
    /// The txn's last write/append to this key (the version others may see).
    pub final_write: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Txn {
    pub invoke: u32,
    /// Completion position, NONE when the op never completed.
    pub complete: u32,
    pub process: u32,
    pub status: Status,
    pub mop_start: u32,
    pub mop_end: u32,
}

/// Which micro-op functions a workload accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    ListAppend,
    RwRegister,
}

pub(crate) struct Txns<'h> {
    pub txns: Vec<Txn>,
    pub mops: Vec<Mop<'h>>,
    /// Txn of each mop.
    pub mop_txn: Vec<u32>,
    pub keys: Vec<&'h Value>,
    pub processes: Vec<&'h Process>,
}

impl<'h> Txns<'h> {
    pub fn mops_of(&self, t: u32) -> std::ops::Range<usize> {
        let t = &self.txns[t as usize];
        t.mop_start as usize..t.mop_end as usize
    }

    /// Parse every txn; big histories are split in two halves parsed on two
    /// threads, then joined (keys and processes renumbered).
    pub fn parse(history: &'h History, workload: Workload) -> Result<Txns<'h>, CheckError> {
        let n = history.ops.len();
        if n < PARALLEL_OPS {
            return Self::parse_range(history, workload, 0..n);
        }
        Self::parse_split(history, workload, n / 2)
    }

    fn parse_split(
        history: &'h History,
        workload: Workload,
        mid: usize,
    ) -> Result<Txns<'h>, CheckError> {
        let n = history.ops.len();
        let (first, second) = std::thread::scope(|s| {
            let later = s.spawn(|| Self::parse_range(history, workload, mid..n));
            let first = Self::parse_range(history, workload, 0..mid);
            (first, later.join())
        });
        let mut first = first?;
        let second = second
            .map_err(|_| CheckError::Unsupported("the txn parser thread panicked".into()))??;
        first.append(second);
        Ok(first)
    }

    fn append(&mut self, other: Txns<'h>) {
        let mut key_ids: FxMap<&'h Value, u32> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        let key_map: Vec<u32> = other
            .keys
            .iter()
            .map(|k| {
                let next = self.keys.len() as u32;
                let id = *key_ids.entry(k).or_insert(next);
                if id == next {
                    self.keys.push(k);
                }
                id
            })
            .collect();
        let mut process_ids: FxMap<&'h Process, u32> = self
            .processes
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as u32))
            .collect();
        let process_map: Vec<u32> = other
            .processes
            .iter()
            .map(|p| {
                let next = self.processes.len() as u32;
                let id = *process_ids.entry(p).or_insert(next);
                if id == next {
                    self.processes.push(p);
                }
                id
            })
            .collect();
        let mop_offset = self.mops.len() as u32;
        let txn_offset = self.txns.len() as u32;
        self.txns.extend(other.txns.into_iter().map(|mut t| {
            t.process = process_map[t.process as usize];
            t.mop_start += mop_offset;
            t.mop_end += mop_offset;
            t
        }));
        self.mops.extend(other.mops.into_iter().map(|mut m| {
            m.key = key_map[m.key as usize];
            m
        }));
        self.mop_txn
            .extend(other.mop_txn.into_iter().map(|t| t + txn_offset));
    }

    fn parse_range(
        history: &'h History,
        workload: Workload,
        range: std::ops::Range<usize>,
    ) -> Result<Txns<'h>, CheckError> {
        let n_ops = range.len();
        let mut out = Txns {
            txns: Vec::with_capacity(n_ops / 2),
            mops: Vec::with_capacity(n_ops * 3 / 2),
            mop_txn: Vec::with_capacity(n_ops * 3 / 2),
            keys: Vec::new(),
            processes: Vec::new(),
        };
        let mut key_ids: FxMap<&'h Value, u32> = FxMap::default();
        let mut process_ids: FxMap<&'h Process, u32> = FxMap::default();
        // Per-txn scratch: the keys touched so far and whether written.
        let mut touched: Vec<(u32, bool)> = Vec::new();
        let start = range.start;
        for (offset, op) in history.ops[range].iter().enumerate() {
            let pos = start + offset;
            if !op.is_invoke() || !op.is_client() {
                continue;
            }
            if op.f.as_str() != "txn" {
                return Err(CheckError::bad_op(
                    pos,
                    format!("expected a txn op, found f = {}", op.f),
                ));
            }
            let complete = history.completion(pos);
            let status = match complete.map(|c| history.ops[c].kind) {
                Some(OpType::Ok) => Status::Ok,
                Some(OpType::Fail) => Status::Fail,
                _ => Status::Info,
            };
            // Only an ok completion tells what the reads returned.
            let (source_pos, value) = match (status, complete) {
                (Status::Ok, Some(c)) => (c, &history.ops[c].value),
                _ => (pos, &op.value),
            };
            let Some(items) = value.as_list() else {
                return Err(CheckError::bad_op(
                    source_pos,
                    format!("txn value must be a list of micro-ops, found {value}"),
                ));
            };
            let next = out.processes.len() as u32;
            let process = *process_ids.entry(&op.process).or_insert(next);
            if process == next {
                out.processes.push(&op.process);
            }
            let t = out.txns.len() as u32;
            let mop_start = out.mops.len() as u32;
            touched.clear();
            for item in items {
                let (kind, key_value, v) = parse_mop(item, workload).map_err(|problem| {
                    CheckError::bad_op(source_pos, format!("micro-op {item}: {problem}"))
                })?;
                let next = out.keys.len() as u32;
                let key = *key_ids.entry(key_value).or_insert(next);
                if key == next {
                    out.keys.push(key_value);
                }
                let seen = touched.iter_mut().find(|(k, _)| *k == key);
                let ext_read = kind == MopKind::Read && seen.is_none();
                match seen {
                    Some(s) => s.1 |= kind != MopKind::Read,
                    None => touched.push((key, kind != MopKind::Read)),
                }
                let value = if kind == MopKind::Read && status != Status::Ok {
                    &NIL
                } else {
                    v
                };
                out.mops.push(Mop {
                    kind,
                    key,
                    value,
                    ext_read,
                    final_write: false,
                });
                out.mop_txn.push(t);
            }
            // Mark each key's last write as the txn's final one.
            let mop_end = out.mops.len() as u32;
            for i in (mop_start..mop_end).rev() {
                let m = out.mops[i as usize];
                if m.kind == MopKind::Read {
                    continue;
                }
                let overwritten_later = (i + 1..mop_end).any(|j| {
                    let o = &out.mops[j as usize];
                    o.key == m.key && o.kind != MopKind::Read
                });
                if !overwritten_later {
                    out.mops[i as usize].final_write = true;
                }
            }
            out.txns.push(Txn {
                invoke: pos as u32,
                complete: complete.map_or(NONE, |c| c as u32),
                process,
                status,
                mop_start,
                mop_end,
            });
        }
        Ok(out)
    }
}

fn parse_mop(item: &Value, workload: Workload) -> Result<(MopKind, &Value, &Value), String> {
    let Some(parts) = item.as_list() else {
        return Err("expected [f key value]".into());
    };
    if parts.len() != 3 {
        return Err(format!(
            "expected [f key value], found {} items",
            parts.len()
        ));
    }
    let kind = match parts[0].as_str() {
        Some("append") => MopKind::Append,
        Some("r" | "read") => MopKind::Read,
        Some("w" | "write") => MopKind::Write,
        _ => return Err(format!("unknown micro-op function {}", parts[0])),
    };
    match (workload, kind) {
        (Workload::ListAppend, MopKind::Write) => {
            return Err("a write in a list-append history (use append)".into())
        }
        (Workload::RwRegister, MopKind::Append) => {
            return Err("an append in an rw-register history (use w)".into())
        }
        _ => {}
    }
    Ok((kind, &parts[1], &parts[2]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{generate, Isolation, SimOptions};

    type Flat<'a> = Vec<(
        u32,
        u32,
        &'a Process,
        Status,
        Vec<(MopKind, &'a Value, &'a Value, bool, bool)>,
    )>;

    fn flatten<'a>(t: &Txns<'a>) -> Flat<'a> {
        (0..t.txns.len() as u32)
            .map(|i| {
                let x = &t.txns[i as usize];
                let mops = t
                    .mops_of(i)
                    .map(|j| {
                        let m = &t.mops[j];
                        assert_eq!(t.mop_txn[j], i);
                        (
                            m.kind,
                            t.keys[m.key as usize],
                            m.value,
                            m.ext_read,
                            m.final_write,
                        )
                    })
                    .collect();
                (
                    x.invoke,
                    x.complete,
                    t.processes[x.process as usize],
                    x.status,
                    mops,
                )
            })
            .collect()
    }

    #[test]
    fn split_parse_equals_sequential_parse() {
        let opts = SimOptions {
            txns: 500,
            seed: 3,
            keys: 7,
            isolation: Isolation::ReadUncommitted,
            ..SimOptions::default()
        };
        let h = History::from_ops(generate(&opts)).unwrap();
        let whole = Txns::parse_range(&h, Workload::ListAppend, 0..h.len()).unwrap();
        for mid in [0, 1, 333, h.len() / 2, h.len() - 1] {
            let split = Txns::parse_split(&h, Workload::ListAppend, mid).unwrap();
            assert_eq!(flatten(&split), flatten(&whole), "split at {mid}");
        }
    }
}
