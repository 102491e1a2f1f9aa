//! A small builder for hand-written histories: each op one millisecond after the last.
#![allow(dead_code)]

use splitbrain_history::{History, Op, OpType, Process, Value};

#[derive(Default)]
pub struct B {
    ops: Vec<Op>,
}

pub fn v(i: i64) -> Value {
    Value::Int(i)
}

pub fn set(items: &[i64]) -> Value {
    Value::set(items.iter().map(|&i| Value::Int(i)))
}

pub fn list(items: &[i64]) -> Value {
    Value::List(items.iter().map(|&i| Value::Int(i)).collect())
}

impl B {
    pub fn new() -> B {
        B::default()
    }

    fn push(&mut self, process: Process, kind: OpType, f: &str, value: Value) -> &mut Self {
        let mut op = Op::new(process, kind, f, value);
        op.time = Some(self.ops.len() as i64 * 1_000_000);
        self.ops.push(op);
        self
    }

    pub fn invoke(&mut self, p: u64, f: &str, value: Value) -> &mut Self {
        self.push(Process::Client(p), OpType::Invoke, f, value)
    }
    pub fn ok(&mut self, p: u64, f: &str, value: Value) -> &mut Self {
        self.push(Process::Client(p), OpType::Ok, f, value)
    }
    pub fn fail(&mut self, p: u64, f: &str, value: Value) -> &mut Self {
        self.push(Process::Client(p), OpType::Fail, f, value)
    }
    pub fn info(&mut self, p: u64, f: &str, value: Value) -> &mut Self {
        self.push(Process::Client(p), OpType::Info, f, value)
    }
    /// An invocation immediately followed by its ok completion.
    pub fn call(&mut self, p: u64, f: &str, invoked: Value, returned: Value) -> &mut Self {
        self.invoke(p, f, invoked).ok(p, f, returned)
    }
    /// A nemesis invocation and its info completion.
    pub fn nemesis(&mut self, f: &str, value: Value) -> &mut Self {
        self.push(Process::Nemesis, OpType::Invoke, f, value.clone());
        self.push(Process::Nemesis, OpType::Info, f, value)
    }
    /// A nemesis invocation and a completion saying what was done (or `Fail`).
    pub fn nemesis_done(&mut self, f: &str, asked: Value, kind: OpType, done: Value) -> &mut Self {
        self.push(Process::Nemesis, OpType::Invoke, f, asked);
        self.push(Process::Nemesis, kind, f, done)
    }
    /// Sets the key of the last op and, for a completion, of its invocation.
    pub fn key(&mut self, k: i64) -> &mut Self {
        let last = self.ops.len() - 1;
        let process = self.ops[last].process.clone();
        let inv = (0..=last)
            .rev()
            .find(|&i| self.ops[i].process == process && self.ops[i].kind == OpType::Invoke)
            .unwrap_or(last);
        for i in [inv, last] {
            self.ops[i].key = Some(Value::Int(k));
        }
        self
    }
    /// Sets the node of the last op.
    pub fn node(&mut self, n: &str) -> &mut Self {
        self.ops.last_mut().expect("an op").node = Some(n.into());
        self
    }
    pub fn history(&self) -> History {
        History::from_ops(self.ops.clone()).expect("a valid history")
    }
}
