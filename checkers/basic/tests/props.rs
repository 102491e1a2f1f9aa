//! Property tests: concurrent histories generated from correct sequential
//! models are valid for every checker, and each checker catches a mutation
//! that breaks its property.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use splitbrain_basic::*;
use splitbrain_history::{CheckOptions, History, Op, OpType, Process, Value, Verdict};

/// splitmix64: the simulation draws from it so a proptest seed fixes a history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

trait Model {
    fn gen(&mut self, rng: &mut Rng) -> (&'static str, Value, Option<Value>);
    /// Applies an op atomically; the result is its completion.
    fn apply(&mut self, f: &str, value: &Value, key: &Option<Value>) -> (OpType, Value);
    fn may_crash(&self, _f: &str) -> bool {
        true
    }
}

/// Simulates `concurrency` clients against a model: each op takes effect at
/// its completion, so the history is linearizable. Crashed ops (info) may or
/// may not take effect; a crashed client's slot gets a fresh process.
fn simulate<M: Model>(model: &mut M, seed: u64, n: usize, concurrency: u64) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut ops: Vec<Op> = Vec::new();
    let mut time = 0i64;
    let mut slots: Vec<(u64, Option<usize>)> = (0..concurrency).map(|p| (p, None)).collect();
    let mut next_process = concurrency;
    let mut invoked = 0;
    loop {
        if invoked >= n && slots.iter().all(|s| s.1.is_none()) {
            break;
        }
        let s = rng.below(concurrency) as usize;
        time += 1 + rng.below(3) as i64 * 1_000_000;
        let (p, pending) = slots[s];
        match pending {
            None if invoked < n => {
                let (f, value, key) = model.gen(&mut rng);
                let mut op = Op::new(Process::Client(p), OpType::Invoke, f, value);
                op.key = key;
                op.time = Some(time);
                op.node = Some(format!("n{}", p % 3).into());
                slots[s].1 = Some(ops.len());
                ops.push(op);
                invoked += 1;
            }
            None => {}
            Some(i) => {
                let inv = ops[i].clone();
                let crash = model.may_crash(&inv.f) && rng.chance(5);
                let mut op = inv.clone();
                op.time = Some(time);
                if crash {
                    if rng.chance(50) {
                        model.apply(&inv.f, &inv.value, &inv.key);
                    }
                    op.kind = OpType::Info;
                    slots[s] = (next_process, None);
                    next_process += 1;
                } else {
                    let (kind, value) = model.apply(&inv.f, &inv.value, &inv.key);
                    op.kind = kind;
                    op.value = value;
                    slots[s].1 = None;
                }
                ops.push(op);
            }
        }
    }
    ops
}

/// Appends a call (invoke + completion applied to the model) by a fresh process.
fn call<M: Model>(
    model: &mut M,
    ops: &mut Vec<Op>,
    p: u64,
    f: &str,
    key: Option<Value>,
    node: &str,
) {
    let t = ops.last().and_then(|o| o.time).unwrap_or(0) + 1_000_000;
    let mut inv = Op::new(Process::Client(p), OpType::Invoke, f, Value::Nil);
    inv.key = key.clone();
    inv.time = Some(t);
    inv.node = Some(node.into());
    let (kind, value) = model.apply(f, &Value::Nil, &key);
    let mut comp = inv.clone();
    comp.kind = kind;
    comp.value = value;
    comp.time = Some(t + 1_000_000);
    ops.push(inv);
    ops.push(comp);
}

fn history(ops: Vec<Op>) -> History {
    History::from_ops(ops).expect("the simulation makes valid histories")
}

#[derive(Default)]
struct SetModel {
    next: i64,
    set: BTreeSet<i64>,
}

impl Model for SetModel {
    fn gen(&mut self, rng: &mut Rng) -> (&'static str, Value, Option<Value>) {
        if rng.chance(70) {
            self.next += 1;
            ("add", Value::Int(self.next), None)
        } else {
            ("read", Value::Nil, None)
        }
    }
    fn apply(&mut self, f: &str, value: &Value, _: &Option<Value>) -> (OpType, Value) {
        if f == "add" {
            self.set.insert(value.as_int().unwrap());
            (OpType::Ok, value.clone())
        } else {
            (
                OpType::Ok,
                Value::set(self.set.iter().map(|&i| Value::Int(i))),
            )
        }
    }
}

fn set_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut m = SetModel::default();
    let mut ops = simulate(&mut m, seed, n, 4);
    call(&mut m, &mut ops, 1000, "read", None, "n0");
    ops
}

#[derive(Default)]
struct CounterModel {
    value: i64,
}

impl Model for CounterModel {
    fn gen(&mut self, rng: &mut Rng) -> (&'static str, Value, Option<Value>) {
        if rng.chance(60) {
            ("add", Value::Int(rng.below(9) as i64 - 3), None)
        } else {
            ("read", Value::Nil, None)
        }
    }
    fn apply(&mut self, f: &str, value: &Value, _: &Option<Value>) -> (OpType, Value) {
        if f == "add" {
            self.value += value.as_int().unwrap();
            (OpType::Ok, value.clone())
        } else {
            (OpType::Ok, Value::Int(self.value))
        }
    }
}

const ACCOUNTS: i64 = 4;

struct BankModel {
    balances: Vec<i64>,
}

fn key_of(v: &Value, field: &str) -> i64 {
    v.map_get(&Value::from(field))
        .and_then(Value::as_int)
        .unwrap()
}

impl Model for BankModel {
    fn gen(&mut self, rng: &mut Rng) -> (&'static str, Value, Option<Value>) {
        if rng.chance(60) {
            let from = rng.below(ACCOUNTS as u64) as i64;
            let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
            let v = Value::map(vec![
                (Value::from("from"), Value::Int(from)),
                (Value::from("to"), Value::Int(to)),
                (Value::from("amount"), Value::Int(1 + rng.below(30) as i64)),
            ]);
            ("transfer", v, None)
        } else {
            ("read", Value::Nil, None)
        }
    }
    fn apply(&mut self, f: &str, value: &Value, _: &Option<Value>) -> (OpType, Value) {
        if f == "transfer" {
            let (from, to, amount) = (
                key_of(value, "from"),
                key_of(value, "to"),
                key_of(value, "amount"),
            );
            if self.balances[from as usize] < amount {
                return (OpType::Fail, value.clone());
            }
            self.balances[from as usize] -= amount;
            self.balances[to as usize] += amount;
            (OpType::Ok, value.clone())
        } else {
            let m = self
                .balances
                .iter()
                .enumerate()
                .map(|(a, &b)| (Value::Int(a as i64), Value::Int(b)));
            (OpType::Ok, Value::Map(m.collect()))
        }
    }
}

fn bank_opts() -> CheckOptions {
    let mut o = CheckOptions::default();
    o.params.insert("total".into(), "100".into());
    o.params.insert("accounts".into(), "0,1,2,3".into());
    o
}

#[derive(Default)]
struct IdModel {
    next: i64,
}

impl Model for IdModel {
    fn gen(&mut self, _: &mut Rng) -> (&'static str, Value, Option<Value>) {
        ("generate", Value::Nil, None)
    }
    fn apply(&mut self, _: &str, _: &Value, _: &Option<Value>) -> (OpType, Value) {
        self.next += 1;
        (OpType::Ok, Value::Int(self.next))
    }
}

#[derive(Default)]
struct QueueModel {
    next: i64,
    queue: VecDeque<i64>,
}

impl Model for QueueModel {
    fn gen(&mut self, rng: &mut Rng) -> (&'static str, Value, Option<Value>) {
        if rng.chance(55) {
            self.next += 1;
            ("enqueue", Value::Int(self.next), None)
        } else {
            ("dequeue", Value::Nil, None)
        }
    }
    fn apply(&mut self, f: &str, value: &Value, _: &Option<Value>) -> (OpType, Value) {
        match f {
            "enqueue" => {
                self.queue.push_back(value.as_int().unwrap());
                (OpType::Ok, value.clone())
            }
            "dequeue" => match self.queue.pop_front() {
                Some(x) => (OpType::Ok, Value::Int(x)),
                None => (OpType::Fail, Value::Nil),
            },
            _ => (
                OpType::Ok,
                Value::List(self.queue.drain(..).map(Value::Int).collect()),
            ),
        }
    }
    // A crashed dequeue that took effect really loses its element.
    fn may_crash(&self, f: &str) -> bool {
        f == "enqueue"
    }
}

fn queue_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut m = QueueModel::default();
    let mut ops = simulate(&mut m, seed, n, 4);
    call(&mut m, &mut ops, 1000, "drain", None, "n0");
    ops
}

#[derive(Default)]
struct RegisterModel {
    next: i64,
    values: BTreeMap<i64, i64>,
}

impl Model for RegisterModel {
    fn gen(&mut self, rng: &mut Rng) -> (&'static str, Value, Option<Value>) {
        let key = Some(Value::Int(rng.below(3) as i64));
        if rng.chance(40) {
            self.next += 1;
            ("write", Value::Int(self.next), key)
        } else {
            ("read", Value::Nil, key)
        }
    }
    fn apply(&mut self, f: &str, value: &Value, key: &Option<Value>) -> (OpType, Value) {
        let k = key.as_ref().and_then(Value::as_int).unwrap();
        if f == "write" {
            self.values.insert(k, value.as_int().unwrap());
            (OpType::Ok, value.clone())
        } else {
            (
                OpType::Ok,
                self.values.get(&k).map_or(Value::Nil, |&v| Value::Int(v)),
            )
        }
    }
}

/// A register history ending, after a partition heals, with one final read per node and key.
fn register_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut m = RegisterModel::default();
    let mut ops = simulate(&mut m, seed, n, 4);
    let split = ops.len() / 3;
    let nemesis = |f: &str, kind| Op::new(Process::Nemesis, kind, f, Value::Nil);
    ops.insert(split, nemesis("start-partition", OpType::Invoke));
    ops.insert(split + 1, nemesis("start-partition", OpType::Info));
    let t = ops.last().and_then(|o| o.time).unwrap_or(0);
    let mut heal = nemesis("stop-partition", OpType::Invoke);
    heal.time = Some(t);
    ops.push(heal.clone());
    heal.kind = OpType::Info;
    ops.push(heal);
    for (p, node) in ["n0", "n1", "n2"].iter().enumerate() {
        for k in 0..3 {
            call(
                &mut m,
                &mut ops,
                1000 + p as u64,
                "final-read",
                Some(Value::Int(k)),
                node,
            );
        }
    }
    for (i, op) in ops.iter_mut().enumerate() {
        op.time = op.time.or(Some(i as i64));
    }
    ops
}

fn linearizable() -> CheckOptions {
    CheckOptions {
        linearizable: true,
        ..CheckOptions::default()
    }
}

/// Positions of ok completions with this f.
fn oks(ops: &[Op], f: &str) -> Vec<usize> {
    (0..ops.len())
        .filter(|&i| ops[i].is_ok() && ops[i].f == f && ops[i].is_client())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn correct_histories_are_valid(seed in any::<u64>(), n in 1usize..150) {
        let h = history(set_ops(seed, n));
        prop_assert_eq!(check_set(&h, &CheckOptions::default()).unwrap().verdict, Verdict::Valid);
        let full = check_set_full(&h, &linearizable()).unwrap();
        prop_assert_eq!(full.verdict, Verdict::Valid, "{:?}", full);
        let stats = check_stats(&h, &CheckOptions::default()).unwrap();
        prop_assert_eq!(stats.total.count, h.client_pairs().count());
        prop_assert_eq!(stats.verdict == Verdict::Valid, stats.never_ok.is_empty());
        let perf = check_perf(&h, &CheckOptions::default()).unwrap();
        prop_assert_eq!(perf.verdict, Verdict::Valid);
        prop_assert_eq!(perf.timeline.iter().map(|b| b.counts.count).sum::<usize>() + perf.untimed_count, perf.overall.counts.count);

        let h = history(simulate(&mut CounterModel::default(), seed, n, 4));
        prop_assert_eq!(check_counter(&h, &CheckOptions::default()).unwrap().verdict, Verdict::Valid);

        let h = history(simulate(&mut BankModel { balances: vec![25; 4] }, seed, n, 4));
        let bank = check_bank(&h, &bank_opts()).unwrap();
        prop_assert!(bank.bad_read_count == 0, "{:?}", bank);

        let h = history(simulate(&mut IdModel::default(), seed, n, 4));
        prop_assert_eq!(check_unique_ids(&h, &CheckOptions::default()).unwrap().verdict, Verdict::Valid);

        let h = history(queue_ops(seed, n));
        prop_assert_eq!(check_queue(&h, &CheckOptions::default()).unwrap().verdict, Verdict::Valid);
        let tq = check_total_queue(&h, &CheckOptions::default()).unwrap();
        prop_assert_eq!(tq.verdict, Verdict::Valid, "{:?}", tq);

        let h = history(register_ops(seed, n));
        let s = check_session(&h, &CheckOptions::default()).unwrap();
        prop_assert_eq!(s.verdict, Verdict::Valid, "{:?}", s);
        let st = check_staleness(&h, &linearizable()).unwrap();
        prop_assert_eq!(st.verdict, Verdict::Valid, "{:?}", st);
        let c = check_convergence(&h, &CheckOptions::default()).unwrap();
        prop_assert_eq!(c.verdict, Verdict::Valid, "{:?}", c);
        prop_assert_eq!(compose(&h, &CheckOptions::default(), &["session", "staleness", "convergence", "perf"]).verdict, Verdict::Valid);
    }

    #[test]
    fn set_catches_a_dropped_acknowledged_add(seed in any::<u64>(), n in 1usize..150, pick in any::<prop::sample::Index>()) {
        let mut ops = set_ops(seed, n);
        let adds = oks(&ops, "add");
        prop_assume!(!adds.is_empty());
        let gone = ops[adds[pick.index(adds.len())]].value.clone();
        for op in ops.iter_mut().filter(|o| o.f == "read" && o.is_ok()) {
            let kept: Vec<Value> = op.value.as_list().unwrap().iter().filter(|&x| *x != gone).cloned().collect();
            op.value = Value::set(kept);
        }
        let h = history(ops);
        let set = check_set(&h, &CheckOptions::default()).unwrap();
        prop_assert_eq!(set.verdict, Verdict::Invalid);
        prop_assert_eq!(set.groups[0].lost.count, 1);
        let full = check_set_full(&h, &CheckOptions::default()).unwrap();
        prop_assert_eq!(full.verdict, Verdict::Invalid);
        prop_assert_eq!(&full.lost[0].element, &gone);
    }

    #[test]
    fn set_full_and_queue_catch_a_duplicated_element(seed in any::<u64>(), n in 1usize..150) {
        let mut ops = set_ops(seed, n);
        let last = ops.len() - 1;
        let mut items = ops[last].value.as_list().unwrap().to_vec();
        prop_assume!(!items.is_empty());
        items.push(items[0].clone());
        ops[last].value = Value::list(items);
        let full = check_set_full(&history(ops), &CheckOptions::default()).unwrap();
        prop_assert_eq!(full.verdict, Verdict::Invalid);
        prop_assert_eq!(full.duplicated_count, 1);

        let mut ops = queue_ops(seed, n);
        let deqs = oks(&ops, "dequeue");
        prop_assume!(deqs.len() >= 2);
        let first = ops[deqs[0]].value.clone();
        let last = deqs[deqs.len() - 1];
        ops[last].value = first;
        let h = history(ops);
        prop_assert_eq!(check_queue(&h, &CheckOptions::default()).unwrap().verdict, Verdict::Invalid);
        prop_assert_eq!(check_total_queue(&h, &CheckOptions::default()).unwrap().duplicated.count, 1);
    }

    #[test]
    fn counter_and_ids_catch_mutations(seed in any::<u64>(), n in 1usize..150, pick in any::<prop::sample::Index>()) {
        let mut ops = simulate(&mut CounterModel::default(), seed, n, 4);
        let reads = oks(&ops, "read");
        prop_assume!(!reads.is_empty());
        let r = reads[pick.index(reads.len())];
        ops[r].value = Value::Int(ops[r].value.as_int().unwrap() + 1000);
        let c = check_counter(&history(ops), &CheckOptions::default()).unwrap();
        prop_assert_eq!(c.verdict, Verdict::Invalid);
        prop_assert_eq!(c.violations[0].read, r);

        let mut ops = simulate(&mut IdModel::default(), seed, n, 4);
        let gens = oks(&ops, "generate");
        prop_assume!(gens.len() >= 2);
        ops[gens[1]].value = ops[gens[0]].value.clone();
        let u = check_unique_ids(&history(ops), &CheckOptions::default()).unwrap();
        prop_assert_eq!(u.verdict, Verdict::Invalid);
        prop_assert_eq!(&u.duplicates[0].ops, &vec![gens[0], gens[1]]);
    }

    #[test]
    fn bank_catches_money_moved_out_of_the_total(seed in any::<u64>(), n in 1usize..150, pick in any::<prop::sample::Index>()) {
        let mut ops = simulate(&mut BankModel { balances: vec![25; 4] }, seed, n, 4);
        let reads = oks(&ops, "read");
        prop_assume!(!reads.is_empty());
        let r = reads[pick.index(reads.len())];
        if let Value::Map(entries) = &mut ops[r].value {
            entries[0].1 = Value::Int(entries[0].1.as_int().unwrap() - 7);
        }
        let b = check_bank(&history(ops), &bank_opts()).unwrap();
        prop_assert_eq!(b.verdict, Verdict::Invalid);
        prop_assert_eq!(b.bad_reads[0].read, r);
        prop_assert_eq!(b.wrong_total_count, 1);
    }

    #[test]
    fn session_and_staleness_catch_a_stale_read(seed in any::<u64>(), n in 1usize..150) {
        let mut ops = register_ops(seed, n);
        // A read by a process that already wrote that key now returns the initial value.
        let mut target = None;
        let mut written: BTreeSet<(u64, Option<i64>)> = BTreeSet::new();
        for (i, op) in ops.iter().enumerate() {
            let Some(p) = op.process.client_id() else { continue };
            let k = op.key.as_ref().and_then(Value::as_int);
            if op.is_ok() && op.f == "write" {
                written.insert((p, k));
            } else if op.is_ok() && op.f == "read" && written.contains(&(p, k)) {
                target = Some(i);
                break;
            }
        }
        prop_assume!(target.is_some());
        let t = target.unwrap();
        ops[t].value = Value::Nil;
        let h = history(ops);
        let s = check_session(&h, &CheckOptions::default()).unwrap();
        prop_assert_eq!(s.verdict, Verdict::Invalid);
        prop_assert_eq!(s.violations[0].kind, splitbrain_basic::session::SessionAnomaly::ReadYourWrites);
        prop_assert_eq!(s.violations[0].ops[1], t);
        let st = check_staleness(&h, &linearizable()).unwrap();
        prop_assert_eq!(st.verdict, Verdict::Invalid);
        prop_assert_eq!(st.stale_reads[0].read, t);
    }

    #[test]
    fn convergence_catches_a_diverged_replica(seed in any::<u64>(), n in 1usize..150) {
        let mut ops = register_ops(seed, n);
        let last = ops.len() - 1;
        ops[last].value = Value::Int(-1);
        let c = check_convergence(&history(ops), &CheckOptions::default()).unwrap();
        prop_assert_eq!(c.verdict, Verdict::Invalid);
        prop_assert_eq!(c.diverged.len(), 1);
    }
}

fn random_value(rng: &mut Rng) -> Value {
    let ints = |rng: &mut Rng| {
        (0..rng.below(4))
            .map(|_| Value::Int(rng.below(6) as i64 - 1))
            .collect::<Vec<_>>()
    };
    match rng.below(7) {
        0 => Value::Nil,
        1 | 2 => Value::Int(rng.below(8) as i64 - 2),
        3 => Value::set(ints(rng)),
        4 => Value::list(ints(rng)),
        5 => Value::Map(
            ints(rng)
                .into_iter()
                .map(|k| (k, Value::Int(rng.below(50) as i64 - 5)))
                .collect(),
        ),
        _ => Value::from("x"),
    }
}

/// Arbitrary well-formed histories of every op shape, most of them nonsense.
fn garbage(seed: u64, n: usize) -> Vec<Op> {
    const FS: &[&str] = &[
        "add",
        "read",
        "write",
        "increment",
        "transfer",
        "generate",
        "enqueue",
        "dequeue",
        "drain",
        "final-read",
    ];
    const NEMESIS: &[&str] = &[
        "start-partition",
        "stop-partition",
        "kill",
        "start",
        "stop",
        "heal",
        "pause",
    ];
    let mut rng = Rng(seed);
    let mut ops = Vec::new();
    let mut process = 0;
    for i in 0..n {
        let mut inv = if rng.chance(10) {
            Op::new(
                Process::Nemesis,
                OpType::Invoke,
                NEMESIS[rng.below(NEMESIS.len() as u64) as usize],
                Value::Nil,
            )
        } else {
            Op::new(
                Process::Client(process),
                OpType::Invoke,
                FS[rng.below(FS.len() as u64) as usize],
                random_value(&mut rng),
            )
        };
        inv.time = rng.chance(90).then_some(i as i64 * 1000);
        inv.key = rng.chance(30).then(|| Value::Int(rng.below(3) as i64));
        inv.node = rng.chance(70).then(|| format!("n{}", rng.below(3)).into());
        let mut comp = inv.clone();
        comp.kind = [OpType::Ok, OpType::Ok, OpType::Fail, OpType::Info][rng.below(4) as usize];
        comp.value = random_value(&mut rng);
        comp.time = inv.time.map(|t| t + 500);
        if comp.kind == OpType::Info && inv.is_client() {
            process += 1;
        }
        ops.push(inv);
        if rng.chance(95) {
            ops.push(comp);
        } else if ops.last().is_some_and(|o| o.is_client()) {
            process += 1;
        }
    }
    ops
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_checker_panics_on_arbitrary_histories(seed in any::<u64>(), n in 0usize..60, linear in any::<bool>()) {
        let h = history(garbage(seed, n));
        let mut opts = CheckOptions { linearizable: linear, ..CheckOptions::default() };
        if seed % 2 == 0 {
            opts.params.insert("total".into(), "10".into());
            opts.params.insert("accounts".into(), "0,1".into());
            opts.params.insert("nodes".into(), "n0,n1".into());
        }
        for def in CHECKERS {
            let outcome = std::panic::catch_unwind(|| (def.run)(&h, &opts));
            prop_assert!(outcome.is_ok(), "{} panicked", def.name);
        }
    }
}
