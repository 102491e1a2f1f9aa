//! The sequential specifications histories are checked against. Each model
//! turns history ops into compact ops over interned values (`prepare`), says
//! which independent object an op touches (`partition`), and steps a state.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use splitbrain_history::{CheckError, History, Op, Value};

use crate::search::FxBuild;

/// What a history op means for the search.
pub enum Prepared<O> {
    /// It constrains nothing (a failed op, a read whose value is unknown).
    Skip,
    /// It took effect between its invocation and its completion.
    Happened(O),
    /// It may have taken effect at any point after its invocation, or never.
    Maybe(O),
}

pub trait Model: Clone + Send {
    type Op: Clone + Debug + PartialEq + Send + Sync;
    type State: Clone + Eq + Hash + Debug + Send;

    /// The independent object an op touches; ops on different objects are
    /// checked separately (P-compositionality). `None`: one object.
    fn partition(&self, _op: &Op) -> Option<Value> {
        None
    }
    fn prepare(
        &mut self,
        history: &History,
        invoke: usize,
        completion: Option<usize>,
    ) -> Result<Prepared<Self::Op>, CheckError>;
    fn init(&self) -> Self::State;
    /// The state after `op`, or `None` when `op` cannot happen in `state`.
    fn step(&mut self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
    /// Whether `op` leaves every state it can step from unchanged (a read).
    fn read_only(&self, _op: &Self::Op) -> bool {
        false
    }
    fn describe_op(&self, op: &Self::Op) -> String;
    fn describe_state(&self, state: &Self::State) -> String;
    /// Heap bytes a state owns, for the memory budget.
    fn state_heap_bytes(&self, _state: &Self::State) -> usize {
        0
    }
    /// Drop state abstractions that merge equivalent states, so a replayed
    /// prefix shows the real values (for explanations).
    fn exact(&mut self) {}
    /// Bytes the model itself holds (interned values), for the memory budget.
    fn side_bytes(&self) -> usize {
        0
    }
}

/// Values numbered in order of first sight, so states are small integers.
#[derive(Clone, Default)]
pub struct Interner {
    ids: HashMap<Value, u32, FxBuild>,
    values: Vec<Value>,
    bytes: usize,
}

impl Interner {
    pub fn id(&mut self, v: &Value) -> u32 {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = self.values.len() as u32;
        self.bytes += 64 + v.as_str().map_or(0, str::len);
        self.ids.insert(v.clone(), id);
        self.values.push(v.clone());
        id
    }

    pub fn value(&self, id: u32) -> &Value {
        &self.values[id as usize]
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// How an invocation ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok(usize),
    Fail(usize),
    /// `info`, or never completed.
    Unknown,
}

pub fn outcome(history: &History, completion: Option<usize>) -> Outcome {
    match completion {
        Some(c) if history.ops[c].is_ok() => Outcome::Ok(c),
        Some(c) if history.ops[c].is_fail() => Outcome::Fail(c),
        _ => Outcome::Unknown,
    }
}

fn unknown_f(model: &str, fs: &str, op: &Op, position: usize) -> CheckError {
    CheckError::bad_op(
        position,
        format!(
            "the {model} model has ops {fs}; cannot interpret :f {}",
            op.f
        ),
    )
}

/// The value an op wrote: the invocation's, which an ok completion must not contradict.
fn written(
    history: &History,
    invoke: usize,
    completion: Option<usize>,
) -> Result<&Value, CheckError> {
    let v = &history.ops[invoke].value;
    if let Some(c) = completion {
        let cv = &history.ops[c].value;
        if history.ops[c].is_ok() && !cv.is_nil() && cv != v {
            return Err(CheckError::bad_op(
                c,
                format!(
                    "{} completed with value {cv} but was invoked with {v}",
                    history.ops[c].f
                ),
            ));
        }
    }
    Ok(v)
}

fn pair(v: &Value, position: usize, what: &str) -> Result<(Value, Value), CheckError> {
    match v.as_list() {
        Some([a, b]) => Ok((a.clone(), b.clone())),
        _ => Err(CheckError::bad_op(
            position,
            format!("{what} needs a value [from to], got {v}"),
        )),
    }
}

// ---------------------------------------------------------------- registers

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RegisterFlavor {
    /// read / write; a nil read is an unknown value.
    Register,
    /// read / write / cas; a nil read is an unknown value.
    CasRegister,
    /// etcd as Porcupine models it: nil is a value (empty), and a failed cas
    /// is a definite failure that must be explained.
    Etcd,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RegisterOp {
    Read(u32),
    Write(u32),
    Cas(u32, u32),
    /// A cas that definitely failed: the register did not hold `from`.
    CasFailed(u32),
}

#[derive(Clone)]
pub struct RegisterModel {
    flavor: RegisterFlavor,
    values: Interner,
    nil_read_is_empty: bool,
}

impl RegisterModel {
    pub fn new(flavor: RegisterFlavor, initial: Value) -> Self {
        let mut values = Interner::default();
        values.id(&initial);
        RegisterModel {
            flavor,
            values,
            nil_read_is_empty: flavor == RegisterFlavor::Etcd,
        }
    }

    /// A read of nil is the empty register (a client that reads an absent
    /// key as nil), not an unknown value: a write lost entirely shows.
    pub fn nil_read_is_empty(mut self, empty: bool) -> Self {
        self.nil_read_is_empty = empty || self.flavor == RegisterFlavor::Etcd;
        self
    }

    fn name(&self) -> &'static str {
        match self.flavor {
            RegisterFlavor::Register => "register",
            RegisterFlavor::CasRegister => "cas-register",
            RegisterFlavor::Etcd => "etcd-register",
        }
    }
}

impl Model for RegisterModel {
    type Op = RegisterOp;
    type State = u32;

    fn partition(&self, op: &Op) -> Option<Value> {
        op.key.clone()
    }

    fn prepare(
        &mut self,
        history: &History,
        invoke: usize,
        completion: Option<usize>,
    ) -> Result<Prepared<RegisterOp>, CheckError> {
        let op = &history.ops[invoke];
        let end = outcome(history, completion);
        let wrap = |o| match end {
            Outcome::Ok(_) => Prepared::Happened(o),
            Outcome::Unknown => Prepared::Maybe(o),
            Outcome::Fail(_) => Prepared::Skip,
        };
        match op.f.as_str() {
            "read" => match end {
                Outcome::Ok(c) => {
                    let v = &history.ops[c].value;
                    if v.is_nil() && !self.nil_read_is_empty {
                        return Ok(Prepared::Skip);
                    }
                    Ok(Prepared::Happened(RegisterOp::Read(self.values.id(v))))
                }
                // A read that failed or whose result is unknown constrains nothing.
                _ => Ok(Prepared::Skip),
            },
            "write" => {
                let v = written(history, invoke, completion)?;
                Ok(wrap(RegisterOp::Write(self.values.id(v))))
            }
            "cas" if self.flavor != RegisterFlavor::Register => {
                let (from, to) = pair(&op.value, invoke, "cas")?;
                if let Outcome::Ok(c) = end {
                    written(history, invoke, Some(c))?;
                }
                let (from, to) = (self.values.id(&from), self.values.id(&to));
                match end {
                    Outcome::Fail(_) if self.flavor == RegisterFlavor::Etcd => {
                        Ok(Prepared::Happened(RegisterOp::CasFailed(from)))
                    }
                    _ => Ok(wrap(RegisterOp::Cas(from, to))),
                }
            }
            _ => Err(unknown_f(
                self.name(),
                if self.flavor == RegisterFlavor::Register {
                    "read and write"
                } else {
                    "read, write and cas"
                },
                op,
                invoke,
            )),
        }
    }

    fn init(&self) -> u32 {
        0
    }

    fn step(&mut self, state: &u32, op: &RegisterOp) -> Option<u32> {
        match *op {
            RegisterOp::Read(v) => (*state == v).then_some(*state),
            RegisterOp::Write(v) => Some(v),
            RegisterOp::Cas(from, to) => (*state == from).then_some(to),
            RegisterOp::CasFailed(from) => (*state != from).then_some(*state),
        }
    }

    fn read_only(&self, op: &RegisterOp) -> bool {
        match *op {
            RegisterOp::Read(_) | RegisterOp::CasFailed(_) => true,
            RegisterOp::Cas(a, b) => a == b,
            RegisterOp::Write(_) => false,
        }
    }

    fn describe_op(&self, op: &RegisterOp) -> String {
        let v = |id| self.values.value(id);
        match *op {
            RegisterOp::Read(x) => format!("read {}", v(x)),
            RegisterOp::Write(x) => format!("write {}", v(x)),
            RegisterOp::Cas(a, b) => format!("cas {} -> {}", v(a), v(b)),
            RegisterOp::CasFailed(a) => format!("failed cas from {}", v(a)),
        }
    }

    fn describe_state(&self, state: &u32) -> String {
        self.values.value(*state).to_string()
    }

    fn side_bytes(&self) -> usize {
        self.values.bytes
    }
}

// ---------------------------------------------------------------- key-value

/// One value id per key: inline for a few keys (no allocation per step, the
/// common case once a history is split by key), boxed beyond that.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Slots {
    Inline(u8, [u32; Slots::INLINE]),
    Heap(Box<[u32]>),
}

impl Slots {
    const INLINE: usize = 10;

    fn new(len: usize, fill: u32) -> Slots {
        if len <= Slots::INLINE {
            let mut a = [0; Slots::INLINE];
            a[..len].fill(fill);
            Slots::Inline(len as u8, a)
        } else {
            Slots::Heap(vec![fill; len].into())
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Slots::Inline(n, a) => &a[..*n as usize],
            Slots::Heap(b) => b,
        }
    }

    fn get(&self, k: u32) -> u32 {
        self.as_slice()[k as usize]
    }

    fn with(&self, k: u32, v: u32) -> Slots {
        let mut s = self.clone();
        match &mut s {
            Slots::Inline(_, a) => a[k as usize] = v,
            Slots::Heap(b) => b[k as usize] = v,
        }
        s
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Slots::Inline(..) => 0,
            Slots::Heap(b) => 16 + b.len() * 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KvOp {
    Get(u32, u32),
    Put(u32, u32),
    Append(u32, u32),
}

/// A map from keys to strings (get / put / append), one slot per key seen.
#[derive(Clone)]
pub struct KvModel {
    split: bool,
    keys: Interner,
    strings: Interner,
    /// (value, appended) -> result, so each concatenation is built and hashed once.
    appends: HashMap<(u32, u32), u32, FxBuild>,
    /// Every value a get returned, sorted once the search starts.
    reads: Vec<Box<str>>,
    reads_sorted: bool,
    /// For values interned before the search: the value, or UNREAD.
    canon: Vec<u32>,
    /// Keep every value as it is (no UNREAD), to replay a prefix for an explanation.
    exact: bool,
}

/// A value that is no prefix of any value ever read: no get can see it or
/// anything appended to it, so all such values are one state (until a put).
const UNREAD: u32 = u32::MAX;

impl KvModel {
    pub fn new(split: bool, initial: Value) -> Self {
        let mut strings = Interner::default();
        strings.id(&initial);
        KvModel {
            split,
            keys: Interner::default(),
            strings,
            appends: HashMap::default(),
            reads: Vec::new(),
            reads_sorted: false,
            canon: Vec::new(),
            exact: false,
        }
    }

    fn text_of(&self, id: u32) -> &str {
        self.strings.value(id).as_str().unwrap_or("")
    }

    /// Whether some get returned a value starting with `s`.
    fn readable(&self, s: &str) -> bool {
        let at = self.reads.partition_point(|r| &**r < s);
        self.reads.get(at).is_some_and(|r| r.starts_with(s))
    }

    fn sort_reads(&mut self) {
        if self.reads_sorted {
            return;
        }
        self.reads.sort_unstable();
        self.reads.dedup();
        self.canon = (0..self.strings.len() as u32)
            .map(|id| {
                if self.readable(self.text_of(id)) {
                    id
                } else {
                    UNREAD
                }
            })
            .collect();
        self.reads_sorted = true;
    }

    fn text(&mut self, v: &Value, position: usize) -> Result<u32, CheckError> {
        match v {
            Value::Str(_) | Value::Keyword(_) => Ok(self.strings.id(v)),
            Value::Int(i) => Ok(self.strings.id(&Value::Str(i.to_string().into()))),
            _ => Err(CheckError::bad_op(
                position,
                format!("kv values are strings, got {v}"),
            )),
        }
    }
}

impl Model for KvModel {
    type Op = KvOp;
    type State = Slots;

    fn partition(&self, op: &Op) -> Option<Value> {
        if self.split {
            op.key.clone()
        } else {
            None
        }
    }

    fn prepare(
        &mut self,
        history: &History,
        invoke: usize,
        completion: Option<usize>,
    ) -> Result<Prepared<KvOp>, CheckError> {
        let op = &history.ops[invoke];
        let Some(key) = &op.key else {
            return Err(CheckError::bad_op(
                invoke,
                format!("a kv op needs a :key; {} has none", op.f),
            ));
        };
        let k = self.keys.id(key);
        let end = outcome(history, completion);
        let wrap = |o| match end {
            Outcome::Ok(_) => Prepared::Happened(o),
            Outcome::Unknown => Prepared::Maybe(o),
            Outcome::Fail(_) => Prepared::Skip,
        };
        match op.f.as_str() {
            "get" | "read" => match end {
                Outcome::Ok(c) if !history.ops[c].value.is_nil() => {
                    let v = self.text(&history.ops[c].value, c)?;
                    self.reads.push(self.text_of(v).into());
                    self.reads_sorted = false;
                    Ok(Prepared::Happened(KvOp::Get(k, v)))
                }
                _ => Ok(Prepared::Skip),
            },
            "put" | "write" => {
                let v = written(history, invoke, completion)?;
                let v = self.text(v, invoke)?;
                Ok(wrap(KvOp::Put(k, v)))
            }
            "append" => {
                let v = written(history, invoke, completion)?;
                let v = self.text(v, invoke)?;
                Ok(wrap(KvOp::Append(k, v)))
            }
            _ => Err(unknown_f("kv", "get, put and append", op, invoke)),
        }
    }

    fn init(&self) -> Slots {
        let initial = if self.exact {
            0
        } else if self.reads_sorted {
            self.canon[0]
        } else {
            let mut sorted = self.reads.clone();
            sorted.sort_unstable();
            let at = sorted.partition_point(|r| **r < *self.text_of(0));
            if sorted
                .get(at)
                .is_some_and(|r| r.starts_with(self.text_of(0)))
            {
                0
            } else {
                UNREAD
            }
        };
        Slots::new(self.keys.len(), initial)
    }

    fn step(&mut self, state: &Slots, op: &KvOp) -> Option<Slots> {
        self.sort_reads();
        match *op {
            KvOp::Get(k, v) => (state.get(k) == v).then(|| state.clone()),
            KvOp::Put(k, v) if self.exact => Some(state.with(k, v)),
            KvOp::Put(k, v) => Some(state.with(k, self.canon[v as usize])),
            KvOp::Append(k, v) => {
                let old = state.get(k);
                if old == UNREAD {
                    return Some(state.clone());
                }
                let joined = match self.appends.get(&(old, v)) {
                    Some(&j) => j,
                    None => {
                        let t = format!("{}{}", self.text_of(old), self.text_of(v));
                        let j = if self.exact || self.readable(&t) {
                            self.strings.id(&Value::Str(t.into()))
                        } else {
                            UNREAD
                        };
                        self.appends.insert((old, v), j);
                        j
                    }
                };
                Some(state.with(k, joined))
            }
        }
    }

    fn read_only(&self, op: &KvOp) -> bool {
        matches!(op, KvOp::Get(..))
    }

    fn describe_op(&self, op: &KvOp) -> String {
        let key = |k| self.keys.value(k);
        let v = |x| self.strings.value(x);
        match *op {
            KvOp::Get(k, x) => format!("get {} -> {}", key(k), v(x)),
            KvOp::Put(k, x) => format!("put {} {}", key(k), v(x)),
            KvOp::Append(k, x) => format!("append {} {}", key(k), v(x)),
        }
    }

    fn describe_state(&self, state: &Slots) -> String {
        let entries: Vec<String> = state
            .as_slice()
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let key = self.keys.value(k as u32);
                if v == UNREAD {
                    format!("{key} <a value no get returned a prefix of>")
                } else {
                    format!("{key} {}", self.strings.value(v))
                }
            })
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    fn state_heap_bytes(&self, state: &Slots) -> usize {
        state.heap_bytes()
    }

    fn exact(&mut self) {
        self.exact = true;
        self.appends.clear();
    }

    fn side_bytes(&self) -> usize {
        self.strings.bytes + self.keys.bytes + self.appends.len() * 24 + self.canon.len() * 4
    }
}

// ---------------------------------------------------------------- multi-register

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Micro {
    /// `None`: the value read is unknown.
    Read(u32, Option<u32>),
    Write(u32, u32),
}

/// Several registers updated by transactions of read / write micro-ops.
#[derive(Clone)]
pub struct MultiRegisterModel {
    keys: Interner,
    values: Interner,
}

impl MultiRegisterModel {
    pub fn new(initial: Value) -> Self {
        let mut values = Interner::default();
        values.id(&initial);
        MultiRegisterModel {
            keys: Interner::default(),
            values,
        }
    }

    fn micro(&mut self, v: &Value, position: usize) -> Result<(bool, u32, Value), CheckError> {
        let bad = || {
            CheckError::bad_op(
                position,
                format!("a micro-op is [:read k v] or [:write k v], got {v}"),
            )
        };
        let [f, k, x] = v.as_list().ok_or_else(bad)? else {
            return Err(bad());
        };
        let write = match f.as_str() {
            Some("read" | "r") => false,
            Some("write" | "w") => true,
            _ => return Err(bad()),
        };
        Ok((write, self.keys.id(k), x.clone()))
    }
}

impl Model for MultiRegisterModel {
    type Op = Box<[Micro]>;
    type State = Box<[u32]>;

    fn prepare(
        &mut self,
        history: &History,
        invoke: usize,
        completion: Option<usize>,
    ) -> Result<Prepared<Box<[Micro]>>, CheckError> {
        let op = &history.ops[invoke];
        if op.f != "txn" {
            return Err(unknown_f("multi-register", "txn", op, invoke));
        }
        let end = outcome(history, completion);
        if let Outcome::Fail(_) = end {
            return Ok(Prepared::Skip);
        }
        let list = |v: &Value, at| {
            v.as_list().map(<[Value]>::to_vec).ok_or_else(|| {
                CheckError::bad_op(at, format!("a txn value is a list of micro-ops, got {v}"))
            })
        };
        let invoked = list(&op.value, invoke)?;
        let done = match end {
            Outcome::Ok(c) => Some((list(&history.ops[c].value, c)?, c)),
            _ => None,
        };
        let mut micros = Vec::with_capacity(invoked.len());
        for (i, m) in invoked.iter().enumerate() {
            let (write, k, x) = self.micro(m, invoke)?;
            let x = match &done {
                Some((d, c)) => {
                    let Some(dm) = d.get(i) else {
                        return Err(CheckError::bad_op(
                            *c,
                            "the completed txn has fewer micro-ops than its invocation",
                        ));
                    };
                    let (w2, k2, x2) = self.micro(dm, *c)?;
                    if w2 != write || k2 != k || (write && x2 != x) {
                        return Err(CheckError::bad_op(
                            *c,
                            format!("micro-op {dm} contradicts the invoked {m}"),
                        ));
                    }
                    x2
                }
                None if write => x,
                None => Value::Nil,
            };
            micros.push(if write {
                Micro::Write(k, self.values.id(&x))
            } else if x.is_nil() {
                Micro::Read(k, None)
            } else {
                Micro::Read(k, Some(self.values.id(&x)))
            });
        }
        if micros.iter().all(|m| matches!(m, Micro::Read(_, None))) {
            return Ok(Prepared::Skip);
        }
        Ok(match end {
            Outcome::Ok(_) => Prepared::Happened(micros.into()),
            _ => Prepared::Maybe(micros.into()),
        })
    }

    fn init(&self) -> Box<[u32]> {
        vec![0; self.keys.len()].into()
    }

    fn step(&mut self, state: &Box<[u32]>, op: &Box<[Micro]>) -> Option<Box<[u32]>> {
        let mut s = state.clone();
        for m in op.iter() {
            match *m {
                Micro::Read(k, Some(v)) if s[k as usize] != v => return None,
                Micro::Read(..) => {}
                Micro::Write(k, v) => s[k as usize] = v,
            }
        }
        Some(s)
    }

    fn read_only(&self, op: &Box<[Micro]>) -> bool {
        op.iter().all(|m| matches!(m, Micro::Read(..)))
    }

    fn describe_op(&self, op: &Box<[Micro]>) -> String {
        let parts: Vec<String> = op
            .iter()
            .map(|m| match *m {
                Micro::Read(k, v) => format!(
                    "[:read {} {}]",
                    self.keys.value(k),
                    v.map_or(Value::Nil, |v| self.values.value(v).clone())
                ),
                Micro::Write(k, v) => {
                    format!("[:write {} {}]", self.keys.value(k), self.values.value(v))
                }
            })
            .collect();
        format!("txn [{}]", parts.join(" "))
    }

    fn describe_state(&self, state: &Box<[u32]>) -> String {
        let entries: Vec<String> = state
            .iter()
            .enumerate()
            .map(|(k, &v)| format!("{} {}", self.keys.value(k as u32), self.values.value(v)))
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    fn state_heap_bytes(&self, state: &Box<[u32]>) -> usize {
        16 + state.len() * 4
    }

    fn side_bytes(&self) -> usize {
        self.values.bytes
    }
}

// ---------------------------------------------------------------- mutex

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MutexOp {
    Acquire,
    Release,
}

/// A lock: acquire when free, release when held.
#[derive(Clone)]
pub struct MutexModel {
    locked: bool,
}

impl MutexModel {
    pub fn new(locked: bool) -> Self {
        MutexModel { locked }
    }
}

impl Model for MutexModel {
    type Op = MutexOp;
    type State = bool;

    fn prepare(
        &mut self,
        history: &History,
        invoke: usize,
        completion: Option<usize>,
    ) -> Result<Prepared<MutexOp>, CheckError> {
        let op = &history.ops[invoke];
        let m = match op.f.as_str() {
            "acquire" | "lock" => MutexOp::Acquire,
            "release" | "unlock" => MutexOp::Release,
            _ => return Err(unknown_f("mutex", "acquire and release", op, invoke)),
        };
        Ok(match outcome(history, completion) {
            Outcome::Ok(_) => Prepared::Happened(m),
            Outcome::Unknown => Prepared::Maybe(m),
            Outcome::Fail(_) => Prepared::Skip,
        })
    }

    fn init(&self) -> bool {
        self.locked
    }

    fn step(&mut self, state: &bool, op: &MutexOp) -> Option<bool> {
        match op {
            MutexOp::Acquire => (!*state).then_some(true),
            MutexOp::Release => (*state).then_some(false),
        }
    }

    fn describe_op(&self, op: &MutexOp) -> String {
        match op {
            MutexOp::Acquire => "acquire".into(),
            MutexOp::Release => "release".into(),
        }
    }

    fn describe_state(&self, state: &bool) -> String {
        if *state { "held" } else { "free" }.into()
    }
}

// ---------------------------------------------------------------- set

#[derive(Clone, Debug, PartialEq)]
pub enum SetOp {
    Add(u32),
    /// The whole set read, as a bitset over interned elements without trailing zero words.
    Read(Box<[u64]>),
}

/// A grow-only set: add elements, read the whole set.
#[derive(Clone, Default)]
pub struct SetModel {
    elements: Interner,
}

fn trimmed(mut words: Vec<u64>) -> Box<[u64]> {
    while words.last() == Some(&0) {
        words.pop();
    }
    words.into()
}

impl Model for SetModel {
    type Op = SetOp;
    type State = Box<[u64]>;

    fn prepare(
        &mut self,
        history: &History,
        invoke: usize,
        completion: Option<usize>,
    ) -> Result<Prepared<SetOp>, CheckError> {
        let op = &history.ops[invoke];
        let end = outcome(history, completion);
        match op.f.as_str() {
            "add" => {
                let v = written(history, invoke, completion)?;
                let add = SetOp::Add(self.elements.id(v));
                Ok(match end {
                    Outcome::Ok(_) => Prepared::Happened(add),
                    Outcome::Unknown => Prepared::Maybe(add),
                    Outcome::Fail(_) => Prepared::Skip,
                })
            }
            "read" => match end {
                Outcome::Ok(c) if !history.ops[c].value.is_nil() => {
                    let v = &history.ops[c].value;
                    let items = v.as_list().ok_or_else(|| {
                        CheckError::bad_op(c, format!("a set read returns a set, got {v}"))
                    })?;
                    let mut words = Vec::new();
                    for item in items {
                        let id = self.elements.id(item) as usize;
                        if words.len() <= id / 64 {
                            words.resize(id / 64 + 1, 0);
                        }
                        words[id / 64] |= 1 << (id % 64);
                    }
                    Ok(Prepared::Happened(SetOp::Read(trimmed(words))))
                }
                _ => Ok(Prepared::Skip),
            },
            _ => Err(unknown_f("set", "add and read", op, invoke)),
        }
    }

    fn init(&self) -> Box<[u64]> {
        Box::new([])
    }

    fn step(&mut self, state: &Box<[u64]>, op: &SetOp) -> Option<Box<[u64]>> {
        match op {
            SetOp::Read(want) => (state == want).then(|| state.clone()),
            SetOp::Add(id) => {
                let id = *id as usize;
                let mut words = state.to_vec();
                if words.len() <= id / 64 {
                    words.resize(id / 64 + 1, 0);
                }
                words[id / 64] |= 1 << (id % 64);
                Some(words.into())
            }
        }
    }

    fn read_only(&self, op: &SetOp) -> bool {
        matches!(op, SetOp::Read(_))
    }

    fn describe_op(&self, op: &SetOp) -> String {
        match op {
            SetOp::Add(id) => format!("add {}", self.elements.value(*id)),
            SetOp::Read(words) => format!("read {}", self.describe_state(words)),
        }
    }

    fn describe_state(&self, state: &Box<[u64]>) -> String {
        let mut items = Vec::new();
        for (w, &word) in state.iter().enumerate() {
            for b in 0..64 {
                if word & (1 << b) != 0 {
                    items.push(self.elements.value((w * 64 + b) as u32).clone());
                }
            }
        }
        Value::set(items).to_string()
    }

    fn state_heap_bytes(&self, state: &Box<[u64]>) -> usize {
        16 + state.len() * 8
    }
}

// ---------------------------------------------------------------- queues

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QueueOp {
    Enqueue(u32),
    Dequeue(u32),
    /// An ok dequeue that returned nothing: the queue was empty (FIFO only).
    DequeueEmpty,
    /// A dequeue with unknown result: removes the head, if any (FIFO only).
    DequeueUnknown,
}

/// A queue: FIFO (dequeue returns the oldest element) or unordered (any element).
#[derive(Clone)]
pub struct QueueModel {
    fifo: bool,
    values: Interner,
}

impl QueueModel {
    pub fn new(fifo: bool) -> Self {
        QueueModel {
            fifo,
            values: Interner::default(),
        }
    }
}

impl Model for QueueModel {
    type Op = QueueOp;
    /// FIFO: elements oldest first. Unordered: a sorted multiset.
    type State = Box<[u32]>;

    fn prepare(
        &mut self,
        history: &History,
        invoke: usize,
        completion: Option<usize>,
    ) -> Result<Prepared<QueueOp>, CheckError> {
        let op = &history.ops[invoke];
        let end = outcome(history, completion);
        match op.f.as_str() {
            "enqueue" => {
                let v = written(history, invoke, completion)?;
                let e = QueueOp::Enqueue(self.values.id(v));
                Ok(match end {
                    Outcome::Ok(_) => Prepared::Happened(e),
                    Outcome::Unknown => Prepared::Maybe(e),
                    Outcome::Fail(_) => Prepared::Skip,
                })
            }
            "dequeue" => Ok(match end {
                Outcome::Fail(_) => Prepared::Skip,
                Outcome::Ok(c) => match &history.ops[c].value {
                    Value::Nil if self.fifo => Prepared::Happened(QueueOp::DequeueEmpty),
                    // Unordered: an empty dequeue is not checked, so an unknown dequeue
                    // (which can only remove) never helps a later one and is dropped too.
                    Value::Nil => Prepared::Skip,
                    v => Prepared::Happened(QueueOp::Dequeue(self.values.id(v))),
                },
                Outcome::Unknown if self.fifo => Prepared::Maybe(QueueOp::DequeueUnknown),
                Outcome::Unknown => Prepared::Skip,
            }),
            _ => Err(unknown_f(
                if self.fifo {
                    "fifo-queue"
                } else {
                    "unordered-queue"
                },
                "enqueue and dequeue",
                op,
                invoke,
            )),
        }
    }

    fn init(&self) -> Box<[u32]> {
        Box::new([])
    }

    fn step(&mut self, state: &Box<[u32]>, op: &QueueOp) -> Option<Box<[u32]>> {
        match *op {
            QueueOp::Enqueue(v) => {
                let mut s = Vec::with_capacity(state.len() + 1);
                s.extend_from_slice(state);
                if self.fifo {
                    s.push(v);
                } else {
                    let at = s.partition_point(|&x| x <= v);
                    s.insert(at, v);
                }
                Some(s.into())
            }
            QueueOp::Dequeue(v) => {
                let at = if self.fifo {
                    (state.first() == Some(&v)).then_some(0)?
                } else {
                    state.binary_search(&v).ok()?
                };
                let mut s = state.to_vec();
                s.remove(at);
                Some(s.into())
            }
            QueueOp::DequeueEmpty => state.is_empty().then(|| state.clone()),
            QueueOp::DequeueUnknown => Some(state.get(1..).unwrap_or_default().into()),
        }
    }

    fn read_only(&self, op: &QueueOp) -> bool {
        matches!(op, QueueOp::DequeueEmpty)
    }

    fn describe_op(&self, op: &QueueOp) -> String {
        match *op {
            QueueOp::Enqueue(v) => format!("enqueue {}", self.values.value(v)),
            QueueOp::Dequeue(v) => format!("dequeue -> {}", self.values.value(v)),
            QueueOp::DequeueEmpty => "dequeue -> nil (empty)".into(),
            QueueOp::DequeueUnknown => "dequeue -> unknown".into(),
        }
    }

    fn describe_state(&self, state: &Box<[u32]>) -> String {
        let items: Vec<String> = state
            .iter()
            .map(|&v| self.values.value(v).to_string())
            .collect();
        format!("[{}]", items.join(" "))
    }

    fn state_heap_bytes(&self, state: &Box<[u32]>) -> usize {
        16 + state.len() * 4
    }

    fn side_bytes(&self) -> usize {
        self.values.bytes
    }
}
