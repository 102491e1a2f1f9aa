//! splitbrain's shared history model: operations and their values, the file
//! formats histories are stored in, invocation/completion pairing, and the
//! types every checker returns.

pub mod edn;
pub mod format;
pub mod op;
pub mod result;
pub mod text;
pub mod value;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;
use thiserror::Error;

pub use format::{read_ops, read_ops_from, Format, OpWriter};
pub use op::{Op, OpType, Process};
pub use result::{
    Budget, CheckError, CheckOptions, CheckOutcome, CheckReport, CheckerDef, Verdict,
};
pub use text::Text;
pub use thin_vec::{thin_vec, ThinVec};
pub use value::Value;

/// A problem with a history file, named by file and line.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("{}", self.render())]
pub struct HistoryError {
    pub file: String,
    pub line: Option<u32>,
    pub problem: String,
}

impl HistoryError {
    pub fn new(file: &str, line: Option<u32>, problem: impl Into<String>) -> Self {
        HistoryError {
            file: file.to_string(),
            line,
            problem: problem.into(),
        }
    }

    fn render(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{}: {}", self.file, l, self.problem),
            None => format!("{}: {}", self.file, self.problem),
        }
    }
}

const NONE: u32 = u32::MAX;

/// Per-process slots: a plain vector for small client ids (the common case,
/// and much faster than hashing a million times), a map for the rest.
#[derive(Default)]
struct ProcessTable<'a> {
    dense: Vec<u32>,
    other: HashMap<&'a Process, u32>,
}

impl<'a> ProcessTable<'a> {
    const DENSE_LIMIT: u64 = 1 << 20;

    fn get(&self, p: &Process) -> Option<&u32> {
        match p {
            Process::Client(n) if *n < Self::DENSE_LIMIT => {
                self.dense.get(*n as usize).filter(|&&v| v != NONE)
            }
            _ => self.other.get(p),
        }
    }

    fn insert(&mut self, p: &'a Process, v: u32) {
        match p {
            Process::Client(n) if *n < Self::DENSE_LIMIT => {
                let n = *n as usize;
                if self.dense.len() <= n {
                    self.dense.resize(n + 1, NONE);
                }
                self.dense[n] = v;
            }
            _ => {
                self.other.insert(p, v);
            }
        }
    }

    fn remove(&mut self, p: &Process) -> Option<u32> {
        match p {
            Process::Client(n) if *n < Self::DENSE_LIMIT => {
                let slot = self.dense.get_mut(*n as usize)?;
                let v = std::mem::replace(slot, NONE);
                (v != NONE).then_some(v)
            }
            _ => self.other.remove(p),
        }
    }
}

/// Elle's completion-only histories: ops that name no process each get a
/// client process of their own, and when no client op is an invocation,
/// each completion gets one. An invocation goes right after its process's
/// previous op (at the start for a process's first op), so process order
/// and the real-time order of completions stand and nothing more is claimed.
fn complete_only_to_pairs(mut ops: Vec<Op>, lines: Vec<u32>) -> (Vec<Op>, Vec<u32>) {
    let unspecified = Process::unspecified();
    if ops.iter().any(|o| o.process == unspecified) {
        let first_free = ops
            .iter()
            .filter_map(|o| o.process.client_id())
            .filter(|&p| p != op::UNSPECIFIED_PROCESS)
            .max()
            .map_or(0, |m| m + 1);
        for (o, id) in ops
            .iter_mut()
            .filter(|o| o.process == unspecified)
            .zip(first_free..)
        {
            o.process = Process::Client(id);
        }
    }
    reincarnate_crashed(&mut ops);
    let clients = || ops.iter().filter(|o| o.is_client());
    if clients().next().is_none() || clients().any(|o| o.is_invoke()) {
        return (ops, lines);
    }
    // after[i]: the completions whose invocation follows op i (NONE: the start).
    let mut last: ProcessTable = ProcessTable::default();
    let mut after: Vec<(u32, u32)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        if o.is_client() {
            after.push((last.get(&o.process).copied().unwrap_or(NONE), i as u32));
            last.insert(&o.process, i as u32);
        }
    }
    after.sort_by_key(|&(a, c)| (a.wrapping_add(1), c));
    let invocation = |c: &Op| Op {
        kind: OpType::Invoke,
        ..c.clone()
    };
    let mut out = Vec::with_capacity(ops.len() + after.len());
    let mut out_lines = Vec::with_capacity(ops.len() + after.len());
    let mut k = 0;
    while k < after.len() && after[k].0 == NONE {
        out.push(invocation(&ops[after[k].1 as usize]));
        out_lines.push(lines[after[k].1 as usize]);
        k += 1;
    }
    for (i, o) in ops.iter().enumerate() {
        out.push(o.clone());
        out_lines.push(lines[i]);
        while k < after.len() && after[k].0 == i as u32 {
            out.push(invocation(&ops[after[k].1 as usize]));
            out_lines.push(lines[after[k].1 as usize]);
            k += 1;
        }
    }
    // The file's indices no longer count up: number by position.
    for o in out.iter_mut() {
        o.index = 0;
    }
    (out, out_lines)
}

/// A client process whose op ended in `info` never invokes again in Jepsen:
/// the harness gives the thread a new process. Histories that reuse the
/// number (some of Elle's) get that renaming here, so the crashed op stays
/// open and later ops keep their order.
fn reincarnate_crashed(ops: &mut [Op]) {
    let mut next = ops
        .iter()
        .filter_map(|o| o.process.client_id())
        .max()
        .map_or(0, |m| m + 1);
    // Keyed by the process as the file names it.
    let mut crashed: HashSet<Process> = HashSet::new();
    let mut renamed: HashMap<Process, Process> = HashMap::new();
    for o in ops.iter_mut() {
        if !o.is_client() {
            continue;
        }
        if o.is_invoke() && !crashed.is_empty() && crashed.remove(&o.process) {
            renamed.insert(o.process.clone(), Process::Client(next));
            next += 1;
        }
        let as_named = (o.is_info() || !renamed.is_empty()).then(|| o.process.clone());
        if let Some(p) = as_named.as_ref().and_then(|p| renamed.get(p)) {
            o.process = p.clone();
        }
        if o.is_info() {
            crashed.extend(as_named);
        }
    }
}

/// A validated history: ops in order, each invocation paired with its completion.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
    /// Where each op came from (file line), for error messages.
    lines: Vec<u32>,
    /// For each op, the position of its partner (invocation <-> completion).
    partner: Vec<u32>,
    source: String,
}

impl History {
    /// Read and validate a history file.
    pub fn read(path: &Path, format: Option<Format>) -> Result<History, HistoryError> {
        // Size the vectors from the file once instead of regrowing them (ops are ~100 bytes a line).
        let guess = std::fs::metadata(path)
            .map_or(0, |m| m.len() as usize / 100)
            .min(50_000_000);
        let mut ops = Vec::with_capacity(guess);
        let mut lines = Vec::with_capacity(guess);
        read_ops(path, format, |op, line| {
            ops.push(op);
            lines.push(line);
            Ok(())
        })?;
        History::build(ops, lines, &path.display().to_string())
    }

    /// Read and validate a history held in memory; `name` names it in errors.
    pub fn parse(
        name: &str,
        bytes: &[u8],
        format: Option<Format>,
    ) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        let mut lines = Vec::new();
        read_ops_from(name, bytes, format, |op, line| {
            ops.push(op);
            lines.push(line);
            Ok(())
        })?;
        History::build(ops, lines, name)
    }

    /// Validate ops already in memory (positions stand in for line numbers).
    pub fn from_ops(ops: Vec<Op>) -> Result<History, HistoryError> {
        let lines = (1..=ops.len() as u32).collect();
        History::build(ops, lines, "history")
    }

    fn build(ops: Vec<Op>, lines: Vec<u32>, source: &str) -> Result<History, HistoryError> {
        if ops.len() >= NONE as usize {
            return Err(HistoryError::new(source, None, "more than 4 billion ops"));
        }
        let (mut ops, lines) = complete_only_to_pairs(ops, lines);
        // Keep the file's own indices when it gave them all; otherwise number by position.
        let given = ops
            .iter()
            .enumerate()
            .all(|(i, op)| i == 0 || op.index > ops[i - 1].index)
            && ops.iter().any(|o| o.index != 0);
        if !given {
            for (i, op) in ops.iter_mut().enumerate() {
                op.index = i as u64;
            }
        }
        let mut partner = vec![NONE; ops.len()];
        let mut open = ProcessTable::default();
        for (i, op) in ops.iter().enumerate() {
            let err = |problem: String| HistoryError::new(source, Some(lines[i]), problem);
            let client = op.process.is_client();
            if op.is_invoke() {
                if let Some(&j) = open.get(&op.process) {
                    if client {
                        return Err(err(format!(
                            "process {} invokes {} while its {} from line {} has not completed",
                            op.process, op.f, ops[j as usize].f, lines[j as usize]
                        )));
                    }
                }
                open.insert(&op.process, i as u32);
            } else {
                match open.remove(&op.process) {
                    Some(j) => {
                        let inv = &ops[j as usize];
                        if inv.f != op.f && client {
                            return Err(err(format!(
                                "process {} completes {} but invoked {} at line {}",
                                op.process, op.f, inv.f, lines[j as usize]
                            )));
                        }
                        partner[i] = j;
                        partner[j as usize] = i as u32;
                    }
                    None if client => {
                        return Err(err(format!(
                            "{} of {} by process {} has no invocation",
                            op.kind.as_str(),
                            op.f,
                            op.process
                        )))
                    }
                    // The nemesis and named actors may log completions alone.
                    None => {}
                }
            }
        }
        Ok(History {
            ops,
            lines,
            partner,
            source: source.to_string(),
        })
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The file line an op came from.
    pub fn line_of(&self, position: usize) -> u32 {
        self.lines.get(position).copied().unwrap_or(0)
    }

    /// The completion of the invocation at `position`, if it completed.
    pub fn completion(&self, position: usize) -> Option<usize> {
        let p = self.partner[position];
        (self.ops[position].is_invoke() && p != NONE).then_some(p as usize)
    }

    /// The invocation of the completion at `position`.
    pub fn invocation(&self, position: usize) -> Option<usize> {
        let p = self.partner[position];
        (!self.ops[position].is_invoke() && p != NONE).then_some(p as usize)
    }

    /// An error about the op at `position`, naming its file and line.
    pub fn error_at(&self, position: usize, problem: impl Into<String>) -> HistoryError {
        HistoryError::new(&self.source, Some(self.line_of(position)), problem)
    }

    /// Client invocations with their completions (`None` when never completed).
    pub fn client_pairs(&self) -> impl Iterator<Item = (usize, Option<usize>)> + '_ {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.is_invoke() && op.is_client())
            .map(|(i, _)| (i, self.completion(i)))
    }

    pub fn stats(&self) -> HistoryStats {
        let mut s = HistoryStats::default();
        let mut processes = std::collections::HashSet::new();
        for (i, op) in self.ops.iter().enumerate() {
            if !op.is_client() {
                s.nemesis_ops += 1;
                continue;
            }
            processes.insert(&op.process);
            match op.kind {
                OpType::Invoke => {
                    s.invocations += 1;
                    if self.completion(i).is_none() {
                        s.open += 1;
                    }
                }
                OpType::Ok => s.ok += 1,
                OpType::Fail => s.fail += 1,
                OpType::Info => s.info += 1,
            }
        }
        s.ops = self.ops.len();
        s.processes = processes.len();
        s
    }
}

/// Counts that every result carries.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HistoryStats {
    pub ops: usize,
    pub invocations: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    /// Invocations that never completed.
    pub open: usize,
    pub nemesis_ops: usize,
    pub processes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(p: u64, kind: OpType, f: &str, v: Value) -> Op {
        Op::new(Process::Client(p), kind, f, v)
    }

    #[test]
    fn pairs_invocations_with_completions() {
        let h = History::from_ops(vec![
            op(0, OpType::Invoke, "write", 1.into()),
            op(1, OpType::Invoke, "read", Value::Nil),
            op(0, OpType::Ok, "write", 1.into()),
            op(1, OpType::Info, "read", Value::Nil),
            op(2, OpType::Invoke, "read", Value::Nil),
        ])
        .unwrap();
        assert_eq!(h.completion(0), Some(2));
        assert_eq!(h.completion(1), Some(3));
        assert_eq!(h.invocation(3), Some(1));
        assert_eq!(h.completion(4), None);
        let s = h.stats();
        assert_eq!(
            (s.invocations, s.ok, s.info, s.open, s.processes),
            (3, 1, 1, 1, 3)
        );
        assert_eq!(h.ops[4].index, 4);
    }

    #[test]
    fn rejects_unpaired_completion() {
        let e = History::from_ops(vec![
            op(0, OpType::Invoke, "read", Value::Nil),
            op(0, OpType::Ok, "read", 1.into()),
            op(1, OpType::Ok, "read", 1.into()),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "history:3: ok of read by process 1 has no invocation"
        );
        // With no invocation at all it is a completion-only history: each gets one.
        let h = History::from_ops(vec![op(0, OpType::Ok, "read", 1.into())]).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.completion(0), Some(1));
    }

    #[test]
    fn rejects_double_invoke() {
        let e = History::from_ops(vec![
            op(0, OpType::Invoke, "read", Value::Nil),
            op(0, OpType::Invoke, "write", 1.into()),
        ])
        .unwrap_err();
        assert!(e.problem.contains("has not completed"), "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn a_process_invoking_after_info_becomes_a_new_process() {
        // As Jepsen's harness would have numbered it (some Elle files reuse it).
        let h = History::from_ops(vec![
            op(0, OpType::Invoke, "read", Value::Nil),
            op(0, OpType::Info, "read", Value::Nil),
            op(0, OpType::Invoke, "read", Value::Nil),
            op(0, OpType::Ok, "read", 1.into()),
            op(0, OpType::Invoke, "read", Value::Nil),
        ])
        .unwrap();
        let procs: Vec<String> = h.ops.iter().map(|o| o.process.to_string()).collect();
        assert_eq!(procs, vec!["0", "0", "1", "1", "1"]);
        assert_eq!(h.completion(0), Some(1));
        assert_eq!(h.completion(2), Some(3));
    }

    #[test]
    fn rejects_mismatched_f() {
        let e = History::from_ops(vec![
            op(0, OpType::Invoke, "read", Value::Nil),
            op(0, OpType::Ok, "write", 1.into()),
        ])
        .unwrap_err();
        assert!(
            e.problem.contains("completes write but invoked read"),
            "{e}"
        );
    }

    #[test]
    fn nemesis_is_lenient() {
        let n = |kind| Op::new(Process::Nemesis, kind, "start", Value::Nil);
        let h = History::from_ops(vec![
            n(OpType::Info),
            n(OpType::Invoke),
            n(OpType::Info),
            n(OpType::Invoke),
            n(OpType::Info),
        ])
        .unwrap();
        assert_eq!(h.completion(1), Some(2));
        assert_eq!(h.stats().nemesis_ops, 5);
    }
}
