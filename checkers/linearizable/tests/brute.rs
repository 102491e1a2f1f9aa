//! The search agrees with brute force (every order of every subset) on many
//! small random cas-register histories, linearizable or not.

use splitbrain_history::{CheckOptions, History, Op, OpType, Process, Value, Verdict};
use splitbrain_linearizable::check;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Read(i64),
    Write(i64),
    Cas(i64, i64),
    /// etcd: a cas that failed, so the register did not hold the first value.
    CasFailed(i64),
}

struct Interval {
    call: usize,
    ret: Option<usize>,
    kind: Kind,
}

/// A random history: 3 processes, up to 3 ops each, values 0..3, some ops
/// failing (cas), crashing (info) or never completing.
/// Reads return 0..3, or also nil (the empty register) when `nil_reads`.
fn random_history(rng: &mut Rng, nil_reads: bool) -> History {
    let mut ops = Vec::new();
    let mut left = [1 + rng.below(3), 1 + rng.below(3), 1 + rng.below(3)];
    let mut pending: [Option<(&'static str, Value)>; 3] = [None, None, None];
    let mut crashed = [false; 3];
    loop {
        let live: Vec<usize> = (0..3)
            .filter(|&p| !crashed[p] && (left[p] > 0 || pending[p].is_some()))
            .collect();
        if live.is_empty() {
            break;
        }
        let p = live[rng.below(live.len() as u64) as usize];
        match pending[p].take() {
            None => {
                left[p] -= 1;
                let (f, v) = match rng.below(3) {
                    0 => ("read", Value::Nil),
                    1 => ("write", Value::Int(rng.below(3) as i64)),
                    _ => (
                        "cas",
                        Value::list(vec![
                            Value::Int(rng.below(3) as i64),
                            Value::Int(rng.below(3) as i64),
                        ]),
                    ),
                };
                ops.push(Op::new(
                    Process::Client(p as u64),
                    OpType::Invoke,
                    f,
                    v.clone(),
                ));
                pending[p] = Some((f, v));
            }
            Some((f, v)) => {
                let roll = rng.below(10);
                if roll == 0 && left[p] == 0 {
                    // Never completes: leave it open.
                    crashed[p] = true;
                    continue;
                }
                let kind = match roll {
                    1 => OpType::Info,
                    2 | 3 if f == "cas" => OpType::Fail,
                    _ => OpType::Ok,
                };
                let v = if f == "read" && kind == OpType::Ok {
                    match rng.below(if nil_reads { 4 } else { 3 }) {
                        3 => Value::Nil,
                        n => Value::Int(n as i64),
                    }
                } else {
                    v
                };
                ops.push(Op::new(Process::Client(p as u64), kind, f, v));
                crashed[p] = kind == OpType::Info;
            }
        }
    }
    History::from_ops(ops).expect("pairs")
}

const EMPTY: i64 = -1;

fn intervals(h: &History, etcd: bool) -> Vec<Interval> {
    let mut out = Vec::new();
    for (call, done) in h.client_pairs() {
        let op = &h.ops[call];
        let end = done.map(|d| &h.ops[d]);
        if end.is_some_and(|e| e.is_fail()) {
            if etcd && op.f == "cas" {
                let from = op.value.as_list().unwrap()[0].as_int().unwrap();
                out.push(Interval {
                    call,
                    ret: done,
                    kind: Kind::CasFailed(from),
                });
            }
            continue;
        }
        let ok = end.is_some_and(|e| e.is_ok());
        let kind = match op.f.as_str() {
            // Nil, the empty register, is -1.
            "read" if ok => Kind::Read(end.unwrap().value.as_int().unwrap_or(EMPTY)),
            "read" => continue,
            "write" => Kind::Write(op.value.as_int().unwrap()),
            _ => {
                let l = op.value.as_list().unwrap();
                Kind::Cas(l[0].as_int().unwrap(), l[1].as_int().unwrap())
            }
        };
        out.push(Interval {
            call,
            ret: if ok { done } else { None },
            kind,
        });
    }
    out
}

/// Is there an order of all completed ops and some open ones that respects
/// real time and the register's semantics?
fn brute(ops: &[Interval], placed: &mut Vec<bool>, state: i64) -> bool {
    if ops
        .iter()
        .zip(placed.iter())
        .all(|(o, &p)| p || o.ret.is_none())
    {
        return true;
    }
    for x in 0..ops.len() {
        if placed[x] {
            continue;
        }
        // x may go next only if no unplaced op completed before x was invoked.
        let blocked = (0..ops.len())
            .any(|y| y != x && !placed[y] && ops[y].ret.is_some_and(|r| r < ops[x].call));
        if blocked {
            continue;
        }
        let next = match ops[x].kind {
            Kind::Read(v) if v == state => state,
            Kind::Read(_) => continue,
            Kind::Write(v) => v,
            Kind::Cas(a, b) if a == state => b,
            Kind::Cas(..) => continue,
            Kind::CasFailed(a) if a != state => state,
            Kind::CasFailed(_) => continue,
        };
        placed[x] = true;
        let ok = brute(ops, placed, next);
        placed[x] = false;
        if ok {
            return true;
        }
    }
    false
}

/// `nil_empty`: reads may return nil, the initial empty register, checked
/// with `nil-read=empty`.
fn agree(model: &str, seed: u64, nil_empty: bool) {
    let mut rng = Rng(seed);
    let etcd = model == "etcd";
    let mut opts = CheckOptions {
        model: Some(model.into()),
        initial: (!nil_empty).then_some(Value::Int(0)),
        ..CheckOptions::default()
    };
    if nil_empty {
        opts.params.insert("nil-read".into(), "empty".into());
    }
    let initial = if nil_empty { EMPTY } else { 0 };
    let (mut valid, mut invalid) = (0, 0);
    for i in 0..3000 {
        let h = random_history(&mut rng, nil_empty);
        let ops = intervals(&h, etcd);
        let want = brute(&ops, &mut vec![false; ops.len()], initial);
        let got = check(&h, &opts).expect("checks").verdict;
        let want = if want {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        assert_eq!(got, want, "history {i}:\n{:#?}", h.ops);
        if want == Verdict::Valid {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    // Both kinds were exercised.
    assert!(
        valid > 300 && invalid > 300,
        "{valid} valid, {invalid} invalid"
    );
}

/// Every read the lost-write checker says missed a write is one no order
/// explains: its Invalid is never wrong, and it finds both kinds.
#[test]
fn lost_write_findings_are_never_linearizable() {
    lost_writes_agree(0x51_7cc1_b727_220a, false);
}

/// The same with nil reads of the empty register judged (`nil-read=empty`).
#[test]
fn lost_write_findings_with_nil_reads_are_never_linearizable() {
    lost_writes_agree(0x7f4a_7c15_517c_c1e3, true);
}

fn lost_writes_agree(seed: u64, nil_empty: bool) {
    let mut rng = Rng(seed);
    let mut opts = CheckOptions::default();
    if nil_empty {
        opts.params.insert("nil-read".into(), "empty".into());
    }
    let initial = if nil_empty { EMPTY } else { 0 };
    let (mut lost, mut stale) = (0, 0);
    for i in 0..5000 {
        let h = random_history(&mut rng, nil_empty);
        let r = splitbrain_basic::check_lost_writes(&h, &opts).expect("checks");
        if r.verdict == Verdict::Invalid {
            let ops = intervals(&h, false);
            assert!(
                !brute(&ops, &mut vec![false; ops.len()], initial),
                "history {i} is linearizable but lost-write says {r:?}:\n{:#?}",
                h.ops
            );
            lost += usize::from(r.lost_write_count > 0);
            stale += usize::from(r.stale_read_count > 0);
        }
    }
    assert!(lost > 50 && stale > 50, "{lost} lost, {stale} stale");
}

#[test]
fn cas_register_agrees_with_brute_force_on_random_histories() {
    agree("cas-register", 0x9e37_79b9_7f4a_7c15, false);
}

#[test]
fn cas_register_with_nil_reads_of_the_empty_register_agrees_with_brute_force() {
    agree("cas-register", 0x3c6e_f372_fe94_f82b, true);
}

#[test]
fn etcd_agrees_with_brute_force_on_random_histories() {
    agree("etcd", 0x2545_f491_4f6c_dd1d, false);
}

/// A random key-value history: 3 processes over keys "a" and "b", appends
/// and puts of one letter, gets returning short random strings.
fn random_kv_history(rng: &mut Rng) -> History {
    let letters = ["x", "y"];
    let mut ops = Vec::new();
    let mut left = [1 + rng.below(3), 1 + rng.below(3), 1 + rng.below(3)];
    let mut pending: [Option<Op>; 3] = [None, None, None];
    while let Some(p) = {
        let live: Vec<usize> = (0..3)
            .filter(|&p| left[p] > 0 || pending[p].is_some())
            .collect();
        (!live.is_empty()).then(|| live[rng.below(live.len() as u64) as usize])
    } {
        match pending[p].take() {
            None => {
                left[p] -= 1;
                let key = if rng.below(2) == 0 { "a" } else { "b" };
                let (f, v) = match rng.below(4) {
                    0 | 1 => ("append", Value::from(letters[rng.below(2) as usize])),
                    2 => ("put", Value::from(letters[rng.below(2) as usize])),
                    _ => ("get", Value::Nil),
                };
                let mut op = Op::new(Process::Client(p as u64), OpType::Invoke, f, v);
                op.key = Some(Value::from(key));
                ops.push(op.clone());
                pending[p] = Some(op);
            }
            Some(mut op) => {
                op.kind = OpType::Ok;
                if op.f == "get" {
                    let len = rng.below(3);
                    let s: String = (0..len).map(|_| letters[rng.below(2) as usize]).collect();
                    op.value = Value::from(s.as_str());
                }
                ops.push(op);
            }
        }
    }
    History::from_ops(ops).expect("pairs")
}

struct KvInterval {
    call: usize,
    ret: usize,
    key: usize,
    f: String,
    value: String,
}

fn kv_brute(ops: &[KvInterval], placed: &mut Vec<bool>, state: &[String; 2]) -> bool {
    if placed.iter().all(|&p| p) {
        return true;
    }
    for x in 0..ops.len() {
        if placed[x] || (0..ops.len()).any(|y| !placed[y] && y != x && ops[y].ret < ops[x].call) {
            continue;
        }
        let o = &ops[x];
        let mut next = state.clone();
        match o.f.as_str() {
            "get" if state[o.key] != o.value => continue,
            "get" => {}
            "put" => next[o.key] = o.value.clone(),
            _ => next[o.key].push_str(&o.value),
        }
        placed[x] = true;
        let ok = kv_brute(ops, placed, &next);
        placed[x] = false;
        if ok {
            return true;
        }
    }
    false
}

#[test]
fn kv_agrees_with_brute_force_on_random_histories() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut valid, mut invalid) = (0, 0);
    for i in 0..2000 {
        let h = random_kv_history(&mut rng);
        let ops: Vec<KvInterval> = h
            .client_pairs()
            .map(|(call, done)| {
                let done = done.expect("completed");
                let op = &h.ops[done];
                KvInterval {
                    call,
                    ret: done,
                    key: usize::from(op.key.as_ref().unwrap().as_str() == Some("b")),
                    f: op.f.to_string(),
                    value: op.value.as_str().unwrap_or("").to_string(),
                }
            })
            .collect();
        let want = kv_brute(
            &ops,
            &mut vec![false; ops.len()],
            &[String::new(), String::new()],
        );
        let want = if want {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        for model in ["kv", "kv-nopart"] {
            let opts = CheckOptions {
                model: Some(model.into()),
                ..CheckOptions::default()
            };
            let got = check(&h, &opts).expect("checks").verdict;
            assert_eq!(got, want, "{model}, history {i}:\n{:#?}", h.ops);
        }
        if want == Verdict::Valid {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    assert!(
        valid > 200 && invalid > 200,
        "{valid} valid, {invalid} invalid"
    );
}
