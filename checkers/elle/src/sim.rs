//! A seeded simulator of a transactional in-memory database: N client
//! processes run list-append or rw-register transactions against it under a
//! chosen isolation level, or a deliberately broken one, and it records the
//! history. The same options and seed always give the same history.
//!
//! Keys rotate as Elle's generator does: `keys` keys are active at a time
//! (by default ten, each half as likely as the one before), and a key that
//! has taken `max_writes_per_key` writes is retired for a fresh one, which
//! keeps reads short in long histories. As in real tests there are no final
//! reads, so the last appends to a key are never read, and some clients
//! crash (`info`) with their txn committed or not. Ops carry their index and
//! a simulated time.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use splitbrain_history::{Op, OpType, Process, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SimWorkload {
    ListAppend,
    RwRegister,
}

/// How the simulated database isolates transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Isolation {
    /// Each txn takes effect atomically when it completes.
    StrictSerializable,
    /// Like strict, but read-only txns may read a stale snapshot: a serial
    /// order exists, but it can invert real time (never a process's own order).
    Serializable,
    /// Reads from a snapshot taken at invocation; first committer wins.
    SnapshotIsolation,
    /// Each read sees the latest committed state; writes lock their key until
    /// commit (a conflict aborts the writer).
    ReadCommitted,
    /// Like read-committed, but reads also see uncommitted writes, which an
    /// abort later removes.
    ReadUncommitted,
    /// Read-committed with read-modify-write txns: updates get lost.
    LostUpdate,
    /// Strict, but some txns report failure after their writes took effect.
    AbortedRead,
    /// Strict, but a txn writing a key twice exposes its first write for a while.
    IntermediateRead,
}

impl Isolation {
    pub const ALL: [Isolation; 8] = [
        Isolation::StrictSerializable,
        Isolation::Serializable,
        Isolation::SnapshotIsolation,
        Isolation::ReadCommitted,
        Isolation::ReadUncommitted,
        Isolation::LostUpdate,
        Isolation::AbortedRead,
        Isolation::IntermediateRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Isolation::StrictSerializable => "strict-serializable",
            Isolation::Serializable => "serializable",
            Isolation::SnapshotIsolation => "si",
            Isolation::ReadCommitted => "read-committed",
            Isolation::ReadUncommitted => "read-uncommitted",
            Isolation::LostUpdate => "lost-update",
            Isolation::AbortedRead => "aborted-read",
            Isolation::IntermediateRead => "intermediate-read",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "snapshot-isolation" {
            return Ok(Isolation::SnapshotIsolation);
        }
        Isolation::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Isolation::ALL.iter().map(|i| i.name()).collect();
                format!("unknown isolation {s:?}; known: {}", names.join(", "))
            })
    }
}

impl FromStr for SimWorkload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "list-append" => Ok(SimWorkload::ListAppend),
            "rw-register" => Ok(SimWorkload::RwRegister),
            _ => Err(format!(
                "unknown workload {s:?}; known: list-append, rw-register"
            )),
        }
    }
}

/// How txns pick among the active keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KeyDistribution {
    Uniform,
    /// Each active key is half as likely as the one before it, as in Elle's
    /// generator: a few hot keys take most txns, so conflicts are common.
    Exponential,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimOptions {
    pub workload: SimWorkload,
    pub isolation: Isolation,
    pub txns: usize,
    pub seed: u64,
    pub processes: usize,
    /// Keys active at once.
    pub keys: usize,
    pub min_ops: usize,
    pub max_ops: usize,
    pub max_writes_per_key: usize,
    pub key_distribution: KeyDistribution,
    /// The share of txns whose client crashes before learning the outcome:
    /// recorded as `info`, half of them committed. The process is then
    /// replaced by a fresh one, as in Jepsen.
    pub info_rate: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            workload: SimWorkload::ListAppend,
            isolation: Isolation::StrictSerializable,
            txns: 1000,
            seed: 0,
            processes: 10,
            keys: 10,
            min_ops: 1,
            max_ops: 4,
            max_writes_per_key: 32,
            key_distribution: KeyDistribution::Exponential,
            info_rate: 0.02,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryState {
    Committed(u64),
    Pending,
    Aborted,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    value: i64,
    txn: u32,
    state: EntryState,
}

#[derive(Debug, Clone, Copy)]
struct GenMop {
    write: bool,
    key: usize,
    value: i64,
}

struct Active {
    id: u32,
    mops: Vec<GenMop>,
    reads: Vec<Option<Vec<i64>>>,
    next: usize,
    snapshot: u64,
    locks: Vec<usize>,
    /// Intermediate-read mode: the held-back final write, applied on the next step.
    held: Option<GenMop>,
}

struct Db {
    opts: SimOptions,
    rng: ChaCha8Rng,
    entries: Vec<Vec<Entry>>,
    lock: Vec<u32>,
    seq: u64,
    pool: Vec<usize>,
    key_writes: Vec<usize>,
    next_value: Vec<i64>,
    /// Per process: the latest commit/snapshot it has seen (session floor).
    floor: Vec<u64>,
    /// Per process slot: the process id it runs as now.
    process_ids: Vec<u64>,
    ops: Vec<Op>,
}

const FREE: u32 = u32::MAX;

impl Db {
    fn new_key(&mut self) -> usize {
        self.entries.push(Vec::new());
        self.lock.push(FREE);
        self.key_writes.push(0);
        self.next_value.push(0);
        self.entries.len() - 1
    }

    fn gen_txn(&mut self) -> Vec<GenMop> {
        let n = self
            .rng
            .gen_range(self.opts.min_ops..=self.opts.max_ops.max(self.opts.min_ops));
        let mut mops: Vec<GenMop> = Vec::with_capacity(n + 1);
        for _ in 0..n {
            let slot = match self.opts.key_distribution {
                KeyDistribution::Uniform => self.rng.gen_range(0..self.pool.len()),
                KeyDistribution::Exponential => {
                    let mut i = 0;
                    while i + 1 < self.pool.len() && self.rng.gen_bool(0.5) {
                        i += 1;
                    }
                    i
                }
            };
            let key = self.pool[slot];
            let mut write = self.rng.gen_bool(0.5);
            if self.opts.isolation == Isolation::LostUpdate
                && !mops.is_empty()
                && self.rng.gen_bool(0.5)
            {
                // Read-modify-write: write a key this txn already read.
                if let Some(r) = mops.iter().find(|m| !m.write).copied() {
                    mops.push(self.write_mop(r.key));
                    continue;
                }
            }
            if self.opts.isolation == Isolation::IntermediateRead && self.rng.gen_bool(0.3) {
                if let Some(w) = mops.iter().find(|m| m.write).copied() {
                    mops.push(self.write_mop(w.key));
                    continue;
                }
                write = true;
            }
            if write {
                mops.push(self.write_mop(key));
                if self.key_writes[key] >= self.opts.max_writes_per_key {
                    let fresh = self.new_key();
                    self.pool[slot] = fresh;
                }
            } else {
                mops.push(GenMop {
                    write: false,
                    key,
                    value: 0,
                });
            }
        }
        mops
    }

    fn write_mop(&mut self, key: usize) -> GenMop {
        self.key_writes[key] += 1;
        self.next_value[key] += 1;
        GenMop {
            write: true,
            key,
            value: self.next_value[key],
        }
    }

    /// What txn `me` sees of `key` at `snapshot`: committed entries up to it,
    /// its own pending ones, and others' pending ones when `dirty`.
    fn view(&self, key: usize, snapshot: u64, me: u32, dirty: bool) -> Vec<i64> {
        self.entries[key]
            .iter()
            .filter(|e| match e.state {
                EntryState::Committed(s) => s <= snapshot,
                EntryState::Pending => e.txn == me || dirty,
                EntryState::Aborted => false,
            })
            .map(|e| e.value)
            .collect()
    }

    fn mop_value(&self, m: &GenMop, read: &Option<Vec<i64>>) -> Value {
        let list = self.opts.workload == SimWorkload::ListAppend;
        let f = match (m.write, list) {
            (true, true) => "append",
            (true, false) => "w",
            (false, _) => "r",
        };
        let v = if m.write {
            Value::Int(m.value)
        } else {
            match read {
                None => Value::Nil,
                Some(vals) if list => Value::List(vals.iter().map(|&v| Value::Int(v)).collect()),
                Some(vals) => vals.last().map_or(Value::Nil, |&v| Value::Int(v)),
            }
        };
        Value::list(vec![Value::Keyword(f.into()), Value::Int(m.key as i64), v])
    }

    fn txn_value(&self, a: &Active, with_reads: bool) -> Value {
        Value::List(
            a.mops
                .iter()
                .zip(&a.reads)
                .map(|(m, r)| self.mop_value(m, if with_reads { r } else { &None }))
                .collect(),
        )
    }

    fn emit(&mut self, p: usize, kind: OpType, value: Value) {
        let mut op = Op::new(Process::Client(self.process_ids[p]), kind, "txn", value);
        op.index = self.ops.len() as u64;
        // A simulated clock: a quarter millisecond between events.
        op.time = Some((self.ops.len() as i64 + 1) * 250_000);
        self.ops.push(op);
        if kind == OpType::Info {
            // A crashed process never invokes again; its slot gets a new one.
            self.process_ids[p] += self.process_ids.len() as u64;
        }
    }

    /// Whether this completion is lost to a client crash, and if so whether
    /// the txn still commits.
    fn crash(&mut self) -> Option<bool> {
        if self.opts.info_rate > 0.0 && self.rng.gen_bool(self.opts.info_rate.min(1.0)) {
            Some(self.rng.gen_bool(0.5))
        } else {
            None
        }
    }

    fn commit_writes(&mut self, a: &Active, seq: u64) {
        for m in &a.mops {
            if m.write {
                self.append_entry(m, a.id, EntryState::Committed(seq));
            }
        }
    }

    fn append_entry(&mut self, m: &GenMop, txn: u32, state: EntryState) {
        self.entries[m.key].push(Entry {
            value: m.value,
            txn,
            state,
        });
    }

    /// Run reads and writes atomically against `snapshot` (own writes visible).
    fn run_atomic(&mut self, a: &mut Active, snapshot: u64) {
        let mut own: Vec<(usize, i64)> = Vec::new();
        for i in 0..a.mops.len() {
            let m = a.mops[i];
            if m.write {
                own.push((m.key, m.value));
            } else {
                let mut v = self.view(m.key, snapshot, a.id, false);
                let mine = own.iter().filter(|(k, _)| *k == m.key).map(|(_, v)| *v);
                v.extend(mine);
                a.reads[i] = Some(v);
            }
        }
    }

    fn release(&mut self, a: &Active) {
        for &k in &a.locks {
            self.lock[k] = FREE;
        }
    }

    /// One scheduling step for process `p`; returns the txn if still running.
    fn step(&mut self, p: usize, mut a: Active) -> Option<Active> {
        use Isolation::*;
        let iso = self.opts.isolation;
        match iso {
            StrictSerializable | Serializable | AbortedRead | IntermediateRead
            | SnapshotIsolation => {
                if let Some(m) = a.held.take() {
                    self.seq += 1;
                    self.append_entry(&m, a.id, EntryState::Committed(self.seq));
                    self.release(&a);
                    self.floor[p] = self.seq;
                    let v = self.txn_value(&a, true);
                    self.emit(p, OpType::Ok, v);
                    return None;
                }
                let writes = a.mops.iter().any(|m| m.write);
                let mut snapshot = self.seq;
                if iso == SnapshotIsolation {
                    snapshot = a.snapshot;
                } else if iso == Serializable && !writes && self.rng.gen_bool(0.5) {
                    let lo = self.floor[p].max(self.seq.saturating_sub(20));
                    snapshot = self.rng.gen_range(lo..=self.seq);
                }
                if iso == IntermediateRead
                    && a.mops.iter().any(|m| m.write && self.lock[m.key] != FREE)
                {
                    // Another txn holds a key we write: try again later.
                    return Some(a);
                }
                self.run_atomic(&mut a, snapshot);
                if iso == SnapshotIsolation {
                    let conflict = a.mops.iter().any(|m| {
                        m.write
                            && self.entries[m.key].iter().any(
                                |e| matches!(e.state, EntryState::Committed(s) if s > a.snapshot),
                            )
                    });
                    if conflict {
                        let v = self.txn_value(&a, false);
                        self.emit(p, OpType::Fail, v);
                        return None;
                    }
                }
                if writes {
                    self.seq += 1;
                }
                let seq = self.seq;
                if iso == IntermediateRead && self.rng.gen_bool(0.5) {
                    let last_dup = (0..a.mops.len()).rev().find(|&i| {
                        a.mops[i].write
                            && a.mops[..i]
                                .iter()
                                .any(|o| o.write && o.key == a.mops[i].key)
                    });
                    if let Some(i) = last_dup {
                        let held = a.mops[i];
                        for (j, m) in a.mops.iter().enumerate() {
                            if m.write && j != i {
                                self.append_entry(m, a.id, EntryState::Committed(seq));
                            }
                        }
                        self.lock[held.key] = a.id;
                        a.locks.push(held.key);
                        a.held = Some(held);
                        return Some(a);
                    }
                }
                if let Some(commits) = self.crash() {
                    if commits {
                        self.commit_writes(&a, seq);
                    }
                    let v = self.txn_value(&a, false);
                    self.emit(p, OpType::Info, v);
                    return None;
                }
                self.commit_writes(&a, seq);
                self.floor[p] = self.floor[p].max(if writes { seq } else { snapshot });
                let failed = iso == AbortedRead && writes && self.rng.gen_bool(0.2);
                let v = self.txn_value(&a, !failed);
                self.emit(p, if failed { OpType::Fail } else { OpType::Ok }, v);
                None
            }
            ReadCommitted | ReadUncommitted | LostUpdate => {
                let dirty = iso == ReadUncommitted;
                if a.next < a.mops.len() {
                    let i = a.next;
                    a.next += 1;
                    let m = a.mops[i];
                    if m.write {
                        let holder = self.lock[m.key];
                        if holder != FREE && holder != a.id {
                            // No-wait locking: abort, undoing our pending writes.
                            for k in a.locks.clone() {
                                for e in self.entries[k].iter_mut() {
                                    if e.txn == a.id && e.state == EntryState::Pending {
                                        e.state = EntryState::Aborted;
                                    }
                                }
                            }
                            self.release(&a);
                            let v = self.txn_value(&a, false);
                            self.emit(p, OpType::Fail, v);
                            return None;
                        }
                        if holder == FREE {
                            self.lock[m.key] = a.id;
                            a.locks.push(m.key);
                        }
                        self.append_entry(&m, a.id, EntryState::Pending);
                    } else {
                        a.reads[i] = Some(self.view(m.key, self.seq, a.id, dirty));
                    }
                    return Some(a);
                }
                self.seq += 1;
                let seq = self.seq;
                let crash = self.crash();
                let outcome = if crash == Some(false) {
                    EntryState::Aborted
                } else {
                    EntryState::Committed(seq)
                };
                for &k in &a.locks {
                    for e in self.entries[k].iter_mut() {
                        if e.txn == a.id && e.state == EntryState::Pending {
                            e.state = outcome;
                        }
                    }
                }
                self.release(&a);
                if crash.is_some() {
                    let v = self.txn_value(&a, false);
                    self.emit(p, OpType::Info, v);
                } else {
                    let v = self.txn_value(&a, true);
                    self.emit(p, OpType::Ok, v);
                }
                None
            }
        }
    }
}

/// Simulate a history: invocations and completions of `opts.txns` txns.
pub fn generate(opts: &SimOptions) -> Vec<Op> {
    let mut db = Db {
        opts: opts.clone(),
        rng: ChaCha8Rng::seed_from_u64(opts.seed),
        entries: Vec::new(),
        lock: Vec::new(),
        seq: 0,
        pool: Vec::new(),
        key_writes: Vec::new(),
        next_value: Vec::new(),
        floor: vec![0; opts.processes.max(1)],
        process_ids: (0..opts.processes.max(1) as u64).collect(),
        ops: Vec::with_capacity(opts.txns * 2),
    };
    for _ in 0..opts.keys.max(1) {
        let k = db.new_key();
        db.pool.push(k);
    }
    let nproc = opts.processes.max(1);
    let mut running: Vec<Option<Active>> = (0..nproc).map(|_| None).collect();
    let mut started = 0usize;
    let mut live = 0usize;
    while started < opts.txns || live > 0 {
        let p = db.rng.gen_range(0..nproc);
        match running[p].take() {
            None if started < opts.txns => {
                let mops = db.gen_txn();
                let a = Active {
                    id: started as u32,
                    reads: vec![None; mops.len()],
                    mops,
                    next: 0,
                    snapshot: db.seq,
                    locks: Vec::new(),
                    held: None,
                };
                let v = db.txn_value(&a, false);
                db.emit(p, OpType::Invoke, v);
                started += 1;
                live += 1;
                running[p] = Some(a);
            }
            None => {}
            Some(a) => {
                running[p] = db.step(p, a);
                if running[p].is_none() {
                    live -= 1;
                }
            }
        }
    }
    db.ops
}

/// `txns` one-append txns on key 1, one after another in real time, and a
/// final read that lists them in reverse: one component of every txn,
/// closed only by real-time edges (a stress case for the cycle search).
pub fn reverse_chain(txns: usize) -> Vec<Op> {
    let kw = |s: &str| Value::Keyword(s.into());
    let mut ops = Vec::with_capacity(txns * 2 + 2);
    for i in 0..txns as i64 {
        let v = Value::list(vec![Value::list(vec![
            kw("append"),
            Value::Int(1),
            Value::Int(i),
        ])]);
        let p = Process::Client((i % 10) as u64);
        ops.push(Op::new(p.clone(), OpType::Invoke, "txn", v.clone()));
        ops.push(Op::new(p, OpType::Ok, "txn", v));
    }
    let read = |l: Value| Value::list(vec![Value::list(vec![kw("r"), Value::Int(1), l])]);
    let all = Value::List((0..txns as i64).rev().map(Value::Int).collect());
    ops.push(Op::new(
        Process::Client(99),
        OpType::Invoke,
        "txn",
        read(Value::Nil),
    ));
    ops.push(Op::new(Process::Client(99), OpType::Ok, "txn", read(all)));
    ops
}
