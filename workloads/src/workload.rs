//! The workloads: what clients do, what they do at the end, and which
//! checkers judge the history.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_history::Value;

use splitbrain_generators::{concat, each_thread, from_fn, once, Gen, OpSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Read, write and cas on independent keys; linearizable per key.
    Register,
    /// Transactions of appends and list reads (Elle).
    ListAppend,
    /// Transactions of register writes and reads (Elle).
    RwRegister,
    /// Adds of unique elements, then final reads.
    Set,
    /// Increments and reads of one counter.
    Counter,
    /// Transfers between accounts and reads of all balances.
    Bank,
    /// Reads and unique writes per process, for session guarantees.
    Session,
    /// Increments and decrements from every node, then a read at each:
    /// a CRDT counter's bounds and convergence.
    CrdtCounter,
    /// Adds and removes of a few elements from every node (add-wins).
    OrSet,
    /// Unique writes and reads of a few registers that may return
    /// concurrent versions (siblings): no write lost unless overwritten.
    Siblings,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 10] = [
        WorkloadKind::Register,
        WorkloadKind::ListAppend,
        WorkloadKind::RwRegister,
        WorkloadKind::Set,
        WorkloadKind::Counter,
        WorkloadKind::Bank,
        WorkloadKind::Session,
        WorkloadKind::CrdtCounter,
        WorkloadKind::OrSet,
        WorkloadKind::Siblings,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::ListAppend => "list-append",
            WorkloadKind::RwRegister => "rw-register",
            WorkloadKind::Set => "set",
            WorkloadKind::Counter => "counter",
            WorkloadKind::Bank => "bank",
            WorkloadKind::Session => "session",
            WorkloadKind::CrdtCounter => "crdt-counter",
            WorkloadKind::OrSet => "or-set",
            WorkloadKind::Siblings => "siblings",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        WorkloadKind::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = WorkloadKind::ALL.iter().map(|w| w.name()).collect();
                format!(
                    "unknown workload '{s}' (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Knobs shared by the workloads.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkloadOptions {
    pub seed: u64,
    /// Keys in use at once (register, list-append, rw-register, session).
    pub active_keys: u64,
    /// Ops on one key before it is retired for a fresh one (keeps per-key
    /// linearizability checks small, as Jepsen's independent keys do).
    pub ops_per_key: u64,
    /// Micro-ops per transaction, inclusive.
    pub txn_len_min: usize,
    pub txn_len_max: usize,
    pub accounts: u64,
    pub total_balance: i64,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            seed: 0,
            active_keys: 8,
            ops_per_key: 120,
            txn_len_min: 1,
            txn_len_max: 4,
            accounts: 5,
            total_balance: 100,
        }
    }
}

/// A checker a workload runs, with its settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckerUse {
    pub name: &'static str,
    pub model: Option<&'static str>,
    pub params: Vec<(&'static str, String)>,
}

impl CheckerUse {
    fn plain(name: &'static str) -> Self {
        CheckerUse {
            name,
            model: None,
            params: Vec::new(),
        }
    }
}

/// A workload: a client generator, an optional final generator run after the
/// heal (one op per client thread), and the checkers.
pub struct Workload {
    pub kind: WorkloadKind,
    pub client: Gen,
    pub final_ops: Option<Gen>,
    pub checkers: Vec<CheckerUse>,
}

/// Keys rotate: a pool of `active` keys, each replaced by a fresh key after
/// `ops_per_key` uses.
struct KeyPool {
    active: Vec<(u64, u64)>,
    next_key: u64,
    ops_per_key: u64,
}

impl KeyPool {
    fn new(active: u64, ops_per_key: u64) -> Self {
        let active = active.max(1);
        KeyPool {
            active: (0..active).map(|k| (k, 0)).collect(),
            next_key: active,
            ops_per_key: ops_per_key.max(1),
        }
    }

    fn pick(&mut self, rng: &mut ChaCha8Rng) -> u64 {
        let i = rng.gen_range(0..self.active.len());
        let (key, used) = &mut self.active[i];
        let k = *key;
        *used += 1;
        if *used >= self.ops_per_key {
            *key = self.next_key;
            *used = 0;
            self.next_key += 1;
        }
        k
    }
}

pub fn build(kind: WorkloadKind, o: &WorkloadOptions) -> Workload {
    let seed = o.seed;
    match kind {
        WorkloadKind::Register => {
            let mut keys = KeyPool::new(o.active_keys, o.ops_per_key);
            let client = from_fn(seed, move |rng| {
                let key = keys.pick(rng) as i64;
                match rng.gen_range(0..4) {
                    0 | 1 => OpSpec::new("read", Value::Nil),
                    2 => OpSpec::new("write", rng.gen_range(0..5i64)),
                    _ => OpSpec::new("cas", vec![rng.gen_range(0..5i64), rng.gen_range(0..5i64)]),
                }
                .with_key(key)
            });
            Workload {
                kind,
                client,
                final_ops: None,
                checkers: vec![
                    // Every client reads an absent key as nil: a nil read is the empty register.
                    CheckerUse {
                        name: "linearizable",
                        model: Some("cas-register"),
                        params: vec![("nil-read", "empty".to_string())],
                    },
                    CheckerUse {
                        name: "lost-write",
                        model: None,
                        params: vec![("nil-read", "empty".to_string())],
                    },
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
        WorkloadKind::ListAppend | WorkloadKind::RwRegister => {
            let append = kind == WorkloadKind::ListAppend;
            let mut keys = KeyPool::new(o.active_keys, o.ops_per_key);
            let mut next_value: HashMap<u64, i64> = HashMap::new();
            let (lo, hi) = (
                o.txn_len_min.max(1),
                o.txn_len_max.max(o.txn_len_min.max(1)),
            );
            let client = from_fn(seed, move |rng| {
                let n = rng.gen_range(lo..=hi);
                let mops: Vec<Value> = (0..n)
                    .map(|_| {
                        let key = keys.pick(rng);
                        if rng.gen_bool(0.5) {
                            Value::list(vec![
                                Value::Keyword("r".into()),
                                Value::Int(key as i64),
                                Value::Nil,
                            ])
                        } else {
                            // Values are unique per key, so every read names its writer.
                            let v = next_value.entry(key).or_insert(0);
                            *v += 1;
                            let f = if append { "append" } else { "w" };
                            Value::list(vec![
                                Value::Keyword(f.into()),
                                Value::Int(key as i64),
                                Value::Int(*v),
                            ])
                        }
                    })
                    .collect();
                OpSpec::new("txn", Value::list(mops))
            });
            let name = if append { "list-append" } else { "rw-register" };
            Workload {
                kind,
                client,
                final_ops: None,
                checkers: vec![
                    CheckerUse::plain(name),
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
        WorkloadKind::Set => {
            let mut next = 0i64;
            let client = from_fn(seed, move |_| {
                next += 1;
                OpSpec::new("add", next)
            });
            Workload {
                kind,
                client,
                final_ops: Some(each_thread(|_| once(OpSpec::new("read", Value::Nil)))),
                checkers: vec![
                    CheckerUse::plain("set"),
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
        WorkloadKind::Counter => {
            let client = from_fn(seed, |rng| {
                if rng.gen_bool(0.5) {
                    OpSpec::new("add", rng.gen_range(1..=5i64))
                } else {
                    OpSpec::new("read", Value::Nil)
                }
            });
            Workload {
                kind,
                client,
                final_ops: Some(each_thread(|_| once(OpSpec::new("read", Value::Nil)))),
                checkers: vec![
                    CheckerUse::plain("counter"),
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
        WorkloadKind::Bank => {
            let accounts = o.accounts.max(2) as i64;
            let client = from_fn(seed, move |rng| {
                if rng.gen_bool(0.5) {
                    OpSpec::new("read", Value::Nil)
                } else {
                    let from = rng.gen_range(0..accounts);
                    let to = (from + rng.gen_range(1..accounts)) % accounts;
                    OpSpec::new(
                        "transfer",
                        Value::map(vec![
                            (Value::Keyword("from".into()), Value::Int(from)),
                            (Value::Keyword("to".into()), Value::Int(to)),
                            (
                                Value::Keyword("amount".into()),
                                Value::Int(rng.gen_range(1..=5)),
                            ),
                        ]),
                    )
                }
            });
            Workload {
                kind,
                client,
                final_ops: Some(each_thread(|_| once(OpSpec::new("read", Value::Nil)))),
                checkers: vec![
                    CheckerUse {
                        name: "bank",
                        model: None,
                        params: vec![
                            ("total", o.total_balance.to_string()),
                            (
                                "accounts",
                                (0..o.accounts.max(2))
                                    .map(|a| a.to_string())
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ),
                        ],
                    },
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
        WorkloadKind::Session => {
            let client = unique_writes_and_reads(seed, o.active_keys.max(1) as i64);
            Workload {
                kind,
                client,
                final_ops: None,
                checkers: vec![
                    CheckerUse::plain("session"),
                    CheckerUse::plain("staleness"),
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
        WorkloadKind::CrdtCounter => {
            let client = from_fn(seed, |rng| {
                if rng.gen_bool(0.5) {
                    let by = rng.gen_range(1..=5i64);
                    OpSpec::new("add", if rng.gen_bool(0.3) { -by } else { by })
                } else {
                    OpSpec::new("read", Value::Nil)
                }
            });
            Workload {
                kind,
                client,
                final_ops: Some(each_thread(|_| once(OpSpec::new("read", Value::Nil)))),
                checkers: vec![
                    CheckerUse::plain("crdt-counter"),
                    CheckerUse::plain("convergence"),
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
        WorkloadKind::OrSet => {
            // Few elements, so adds and removes of one element meet often.
            let client = from_fn(seed, |rng| {
                let elem = rng.gen_range(0..16i64);
                match rng.gen_range(0..3) {
                    0 => OpSpec::new("add", elem),
                    1 => OpSpec::new("remove", elem),
                    _ => OpSpec::new("read", Value::Nil),
                }
            });
            Workload {
                kind,
                client,
                final_ops: Some(each_thread(|_| once(OpSpec::new("read", Value::Nil)))),
                checkers: vec![
                    CheckerUse::plain("or-set"),
                    CheckerUse {
                        params: vec![("unordered", "true".to_string())],
                        ..CheckerUse::plain("convergence")
                    },
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
        WorkloadKind::Siblings => {
            let keys = o.active_keys.max(1) as i64;
            let client = unique_writes_and_reads(seed, keys);
            Workload {
                kind,
                client,
                final_ops: Some(each_thread(move |_| {
                    concat(
                        (0..keys)
                            .map(|k| once(OpSpec::new("read", Value::Nil).with_key(k)))
                            .collect(),
                    )
                })),
                checkers: vec![
                    CheckerUse::plain("siblings"),
                    CheckerUse::plain("stats"),
                    CheckerUse::plain("perf"),
                ],
            }
        }
    }
}

/// Reads and writes of `keys` keys, half each; every write's value is new.
fn unique_writes_and_reads(seed: u64, keys: i64) -> Gen {
    let mut next = 0i64;
    from_fn(seed, move |rng| {
        let key = rng.gen_range(0..keys);
        if rng.gen_bool(0.5) {
            OpSpec::new("read", Value::Nil).with_key(key)
        } else {
            next += 1;
            OpSpec::new("write", next).with_key(key)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitbrain_generators::{limit, Context, Poll, Thread};

    fn take(mut g: Gen, n: usize) -> Vec<OpSpec> {
        let threads = vec![Thread::Client(0)];
        let mut out = Vec::new();
        g = limit(n as u64, g);
        while let Poll::Op(op) = g.next(&Context::new(0, threads.clone(), threads.clone())) {
            out.push(OpSpec {
                f: op.f,
                value: op.value,
                key: op.key,
            });
        }
        out
    }

    #[test]
    fn names_round_trip() {
        for w in WorkloadKind::ALL {
            assert_eq!(w.name().parse::<WorkloadKind>(), Ok(w));
        }
        assert!("nope"
            .parse::<WorkloadKind>()
            .unwrap_err()
            .contains("list-append"));
    }

    #[test]
    fn register_keys_retire() {
        let o = WorkloadOptions {
            active_keys: 2,
            ops_per_key: 10,
            ..Default::default()
        };
        let ops = take(build(WorkloadKind::Register, &o).client, 200);
        let mut per_key: HashMap<Value, usize> = HashMap::new();
        for op in &ops {
            *per_key.entry(op.key.clone().expect("keyed")).or_default() += 1;
        }
        assert!(per_key.values().all(|&n| n <= 10), "{per_key:?}");
        assert!(per_key.len() >= 20);
    }

    #[test]
    fn append_values_are_unique_per_key() {
        let ops = take(
            build(WorkloadKind::ListAppend, &WorkloadOptions::default()).client,
            500,
        );
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            for m in op.value.as_list().unwrap() {
                let m = m.as_list().unwrap();
                let len = m.len();
                assert_eq!(len, 3);
                if m[0].as_str() == Some("append") {
                    assert!(
                        seen.insert((m[1].clone(), m[2].clone())),
                        "duplicate append {m:?}"
                    );
                }
            }
        }
        assert!(seen.len() > 100);
    }

    #[test]
    fn bank_transfers_between_distinct_accounts() {
        let ops = take(
            build(WorkloadKind::Bank, &WorkloadOptions::default()).client,
            300,
        );
        for op in ops.iter().filter(|o| o.f == "transfer") {
            let from = op.value.map_get(&"from".into()).unwrap();
            let to = op.value.map_get(&"to".into()).unwrap();
            assert_ne!(from, to);
        }
    }
}
