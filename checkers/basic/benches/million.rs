//! Each checker on a history of about 1,000,000 ops (target: under 2 s each).
//! Run with `cargo bench -p splitbrain-basic`; prints one line per checker.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use splitbrain_basic::CHECKERS;
use splitbrain_history::{CheckOptions, History, Op, OpType, Process, Value};

const OPS: usize = 1_000_000;
const CLIENTS: u64 = 10;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Generates an op: (f, invocation value, key).
type Gen<'a> = dyn FnMut(&mut Rng) -> (&'static str, Value, Option<Value>) + 'a;
/// Applies an op at its completion: (outcome, completion value).
type Apply<'a> = dyn FnMut(&str, &Value, &Option<Value>) -> (OpType, Value) + 'a;

/// Rounds of CLIENTS overlapping ops: all invoke, then all complete in reverse
/// order, each taking effect at its completion; a fault window every 20,000 ops.
fn build(gen: &mut Gen, apply: &mut Apply, finals: &mut dyn FnMut(&mut Vec<Op>)) -> History {
    let mut rng = Rng(7);
    let mut ops: Vec<Op> = Vec::with_capacity(OPS + 1000);
    let mut time = 0i64;
    let mut round = 0;
    while ops.len() < OPS {
        if round % 1000 == 500 || round % 1000 == 999 {
            let f = if round % 1000 == 500 {
                "start-partition"
            } else {
                "stop-partition"
            };
            for kind in [OpType::Invoke, OpType::Info] {
                let mut op = Op::new(Process::Nemesis, kind, f, Value::Nil);
                op.time = Some(time);
                ops.push(op);
            }
        }
        round += 1;
        let start = ops.len();
        for p in 0..CLIENTS {
            let (f, value, key) = gen(&mut rng);
            let mut op = Op::new(Process::Client(p), OpType::Invoke, f, value);
            op.key = key;
            op.node = Some(format!("n{}", p % 5).into());
            time += 50_000;
            op.time = Some(time);
            ops.push(op);
        }
        for i in (start..start + CLIENTS as usize).rev() {
            let inv = &ops[i];
            let (kind, value) = apply(&inv.f, &inv.value, &inv.key);
            let mut op = Op::new(inv.process.clone(), kind, &inv.f.clone(), value);
            time += 50_000;
            op.time = Some(time);
            ops.push(op);
        }
    }
    let mut heal = Op::new(Process::Nemesis, OpType::Info, "stop-partition", Value::Nil);
    heal.time = Some(time);
    ops.push(heal);
    finals(&mut ops);
    History::from_ops(ops).expect("valid history")
}

fn final_call(ops: &mut Vec<Op>, p: u64, f: &str, key: Option<Value>, node: &str, value: Value) {
    let t = ops.last().and_then(|o| o.time).unwrap_or(0);
    let mut inv = Op::new(Process::Client(p), OpType::Invoke, f, Value::Nil);
    inv.key = key;
    inv.node = Some(node.into());
    inv.time = Some(t + 1000);
    let mut ok = inv.clone();
    ok.kind = OpType::Ok;
    ok.value = value;
    ok.time = Some(t + 2000);
    ops.push(inv);
    ops.push(ok);
}

fn set_history() -> History {
    let elements = std::cell::RefCell::new(Vec::new());
    let mut next = 0;
    build(
        &mut |_| {
            next += 1;
            ("add", Value::Int(next), None)
        },
        &mut |_, v, _| {
            elements.borrow_mut().push(v.clone());
            (OpType::Ok, v.clone())
        },
        &mut |ops| {
            let all = Value::list(elements.borrow().clone());
            final_call(ops, 100, "read", None, "n0", all)
        },
    )
}

fn set_full_history() -> History {
    const KEYS: u64 = 1000;
    let mut sets: Vec<Vec<Value>> = vec![Vec::new(); KEYS as usize];
    let mut next = 0;
    build(
        &mut |rng| {
            let key = Some(Value::Int(rng.below(KEYS) as i64));
            if rng.below(10) == 0 {
                ("read", Value::Nil, key)
            } else {
                next += 1;
                ("add", Value::Int(next), key)
            }
        },
        &mut |f, v, key| {
            let k = key.as_ref().and_then(Value::as_int).unwrap_or(0) as usize;
            if f == "add" {
                sets[k].push(v.clone());
                (OpType::Ok, v.clone())
            } else {
                (OpType::Ok, Value::list(sets[k].clone()))
            }
        },
        &mut |_| {},
    )
}

fn counter_history() -> History {
    let mut total = 0;
    build(
        &mut |rng| {
            if rng.below(2) == 0 {
                ("add", Value::Int(rng.below(5) as i64), None)
            } else {
                ("read", Value::Nil, None)
            }
        },
        &mut |f, v, _| {
            if f == "add" {
                total += v.as_int().unwrap_or(0);
                (OpType::Ok, v.clone())
            } else {
                (OpType::Ok, Value::Int(total))
            }
        },
        &mut |_| {},
    )
}

fn bank_history() -> History {
    let mut balances = [100i64; 8];
    let field = |v: &Value, f: &str| {
        v.map_get(&Value::from(f))
            .and_then(Value::as_int)
            .unwrap_or(0)
    };
    build(
        &mut |rng| {
            if rng.below(2) == 0 {
                let from = rng.below(8) as i64;
                let v = Value::map(vec![
                    (Value::from("from"), Value::Int(from)),
                    (
                        Value::from("to"),
                        Value::Int((from + 1 + rng.below(7) as i64) % 8),
                    ),
                    (Value::from("amount"), Value::Int(1 + rng.below(20) as i64)),
                ]);
                ("transfer", v, None)
            } else {
                ("read", Value::Nil, None)
            }
        },
        &mut |f, v, _| {
            if f == "transfer" {
                let (from, to, amount) = (
                    field(v, "from") as usize,
                    field(v, "to") as usize,
                    field(v, "amount"),
                );
                if balances[from] < amount {
                    return (OpType::Fail, v.clone());
                }
                balances[from] -= amount;
                balances[to] += amount;
                (OpType::Ok, v.clone())
            } else {
                let m = balances
                    .iter()
                    .enumerate()
                    .map(|(a, &b)| (Value::Int(a as i64), Value::Int(b)));
                (OpType::Ok, Value::Map(m.collect()))
            }
        },
        &mut |_| {},
    )
}

fn ids_history() -> History {
    let mut next = 0;
    build(
        &mut |_| ("generate", Value::Nil, None),
        &mut |_, _, _| {
            next += 1;
            (OpType::Ok, Value::Int(next))
        },
        &mut |_| {},
    )
}

fn queue_history() -> History {
    let queue = std::cell::RefCell::new(VecDeque::new());
    let mut next = 0;
    build(
        &mut |rng| {
            if rng.below(2) == 0 {
                next += 1;
                ("enqueue", Value::Int(next), None)
            } else {
                ("dequeue", Value::Nil, None)
            }
        },
        &mut |f, v, _| {
            if f == "enqueue" {
                queue.borrow_mut().push_back(v.clone());
                (OpType::Ok, v.clone())
            } else {
                match queue.borrow_mut().pop_front() {
                    Some(x) => (OpType::Ok, x),
                    None => (OpType::Fail, Value::Nil),
                }
            }
        },
        &mut |ops| {
            let rest = Value::List(queue.borrow_mut().drain(..).collect());
            final_call(ops, 100, "drain", None, "n0", rest)
        },
    )
}

fn register_history() -> History {
    const KEYS: u64 = 100;
    let values = std::cell::RefCell::new(BTreeMap::new());
    let mut next = 0;
    build(
        &mut |rng| {
            let key = Some(Value::Int(rng.below(KEYS) as i64));
            if rng.below(10) < 3 {
                next += 1;
                ("write", Value::Int(next), key)
            } else {
                ("read", Value::Nil, key)
            }
        },
        &mut |f, v, key| {
            let k = key.as_ref().and_then(Value::as_int).unwrap_or(0);
            if f == "write" {
                values.borrow_mut().insert(k, v.clone());
                (OpType::Ok, v.clone())
            } else {
                (
                    OpType::Ok,
                    values.borrow().get(&k).cloned().unwrap_or(Value::Nil),
                )
            }
        },
        &mut |ops| {
            for (p, node) in ["n0", "n1", "n2", "n3", "n4"].iter().enumerate() {
                for k in 0..KEYS as i64 {
                    let v = values.borrow().get(&k).cloned().unwrap_or(Value::Nil);
                    final_call(
                        ops,
                        100 + p as u64,
                        "final-read",
                        Some(Value::Int(k)),
                        node,
                        v,
                    );
                }
            }
        },
    )
}

fn main() {
    let mut histories: BTreeMap<&str, History> = BTreeMap::new();
    let t = Instant::now();
    histories.insert("set", set_history());
    histories.insert("set-full", set_full_history());
    histories.insert("counter", counter_history());
    histories.insert("bank", bank_history());
    histories.insert("unique-ids", ids_history());
    histories.insert("queue", queue_history());
    histories.insert("register", register_history());
    println!("generated histories in {:.1} s", t.elapsed().as_secs_f64());
    let mut opts = CheckOptions::default();
    opts.params.insert("total".into(), "800".into());
    for def in CHECKERS {
        let h = match def.name {
            "total-queue" => &histories["queue"],
            "session" | "staleness" | "convergence" | "stats" | "perf" => &histories["register"],
            name => &histories[name],
        };
        let t = Instant::now();
        let report = (def.run)(h, &opts).expect("checker runs");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{:<12} {:>9} ops  {:>7.3} s  {:>5.2} M ops/s  verdict {}{}",
            def.name,
            h.len(),
            secs,
            h.len() as f64 / secs / 1e6,
            report.verdict.as_str(),
            if secs < 2.0 { "" } else { "  OVER 2 s" }
        );
    }
}
