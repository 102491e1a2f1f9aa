//! Client-facing messages: values, operations, requests and replies, and the
//! pure semantics of applying an operation to a key's current value.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Index of a node in the cluster file's node list.
pub type NodeId = u32;

/// A stored value. Lists and sets hold integers, as the harness's workloads do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    Int(i64),
    Str(String),
    List(Vec<i64>),
    Set(#[serde(deserialize_with = "sorted_set")] BTreeSet<i64>),
}

/// A set arrives in order (it was written from a `BTreeSet`): building it
/// in bulk is linear, where inserting element by element is not.
fn sorted_set<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeSet<i64>, D::Error> {
    let items: Vec<i64> = Deserialize::deserialize(d)?;
    Ok(items.into_iter().collect())
}

impl Value {
    /// Approximate encoded size, used to refuse oversized values.
    pub fn size_bytes(&self) -> usize {
        match self {
            Value::Int(_) => 8,
            Value::Str(s) => s.len(),
            Value::List(l) => l.len() * 8,
            Value::Set(s) => s.len() * 8,
        }
    }
}

/// A client operation. `Txn` holds micro-operations over several keys; it may not nest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: Value,
    },
    Cas {
        key: String,
        expected: Option<Value>,
        new: Value,
    },
    Append {
        key: String,
        elem: i64,
    },
    ReadList {
        key: String,
    },
    Incr {
        key: String,
        delta: i64,
    },
    Add {
        key: String,
        elem: i64,
    },
    /// A set's remove (multi-leader CRDT sets; elsewhere a type mismatch).
    Remove {
        key: String,
        elem: i64,
    },
    ReadSet {
        key: String,
    },
    /// Every key starting with `prefix`, in key order, with its value
    /// (a sharded store's copy of a partition). Served where the mode reads
    /// from its whole key-value map; elsewhere a type mismatch.
    Scan {
        prefix: String,
    },
    /// Takes the lock at `key` for `owner`: done when the lock is free
    /// (absent or empty) or already `owner`'s, else refused with the holder
    /// as the current value ([`Refusal::Fenced`]). Two-phase commit's prepare.
    Lock {
        key: String,
        owner: String,
    },
    /// Refused unless the lock at `key` is free (absent or empty); writes nothing.
    Unlocked {
        key: String,
    },
    /// Refused unless `key` holds `expected` (`None`: absent); writes nothing.
    Fence {
        key: String,
        expected: Option<Value>,
    },
    /// Frees the lock at `key` if `owner` holds it; else does nothing.
    Unlock {
        key: String,
        owner: String,
    },
    Txn {
        ops: Vec<Op>,
    },
}

impl Op {
    /// The key of a single-key operation (`None` for a transaction).
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Cas { key, .. }
            | Op::Append { key, .. }
            | Op::ReadList { key }
            | Op::Incr { key, .. }
            | Op::Add { key, .. }
            | Op::Remove { key, .. }
            | Op::ReadSet { key }
            | Op::Lock { key, .. }
            | Op::Unlocked { key }
            | Op::Fence { key, .. }
            | Op::Unlock { key, .. } => Some(key),
            Op::Scan { prefix } => Some(prefix),
            Op::Txn { .. } => None,
        }
    }

    /// The micro-operations this operation consists of (itself unless a transaction).
    pub fn micro_ops(&self) -> &[Op] {
        match self {
            Op::Txn { ops } => ops,
            single => std::slice::from_ref(single),
        }
    }

    /// Keys touched, in first-use order, without duplicates.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for op in self.micro_ops() {
            if let Some(k) = op.key() {
                if !keys.iter().any(|x| x == k) {
                    keys.push(k.to_string());
                }
            }
        }
        keys
    }

    pub fn is_read_only(&self) -> bool {
        self.micro_ops().iter().all(|op| {
            matches!(
                op,
                Op::Get { .. }
                    | Op::ReadList { .. }
                    | Op::ReadSet { .. }
                    | Op::Scan { .. }
                    | Op::Unlocked { .. }
                    | Op::Fence { .. }
            )
        })
    }

    /// Checks shape and sizes; the message names the problem.
    pub fn validate(&self, max_value_bytes: usize) -> Result<(), String> {
        if let Op::Txn { ops } = self {
            if ops.is_empty() {
                return Err("empty transaction".into());
            }
            for op in ops {
                if matches!(op, Op::Txn { .. }) {
                    return Err("nested transaction".into());
                }
                op.validate(max_value_bytes)?;
            }
            return Ok(());
        }
        let size = match self {
            Op::Put { value, .. } => value.size_bytes(),
            Op::Cas { expected, new, .. } => new
                .size_bytes()
                .max(expected.as_ref().map_or(0, Value::size_bytes)),
            _ => 0,
        };
        if size > max_value_bytes {
            return Err(format!(
                "value of {size} bytes exceeds the limit of {max_value_bytes} bytes"
            ));
        }
        if self.key().is_some_and(|k| k.len() > max_value_bytes) {
            return Err("key exceeds the value size limit".into());
        }
        Ok(())
    }
}

/// Where a read may be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    #[default]
    Leader,
    Followers,
    Any,
}

/// Per-request overrides of the cluster's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOptions {
    /// Leaderless: replicas that must answer a read.
    pub r: Option<u8>,
    /// Leaderless: replicas that must acknowledge a write.
    pub w: Option<u8>,
    /// Single-leader: where a read may be served.
    pub read_from: Option<ReadFrom>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub op: Op,
    pub options: RequestOptions,
}

/// The result of an operation that was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// A write took effect.
    Done,
    /// A read's value (or, for `incr`, the new value); `None` if the key is absent.
    Value(Option<Value>),
    /// Leaderless with version vectors: concurrent versions, all kept.
    Siblings(Vec<Value>),
    /// One result per micro-operation.
    Txn(Vec<OpResult>),
    /// A scan's keys and values, in key order.
    Entries(Vec<(String, Value)>),
}

/// Why an operation was definitely not done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// A sharded store: the key's partition is not served here at this
    /// epoch (it moved, split or merged, or is moving now); `group` is its
    /// owner as far as this node knows.
    WrongShard {
        partition: u32,
        epoch: u64,
        group: Option<u32>,
    },
    /// A lock, a fence or an ownership check failed at `key`, which holds `current`.
    Fenced {
        key: String,
        current: Option<Value>,
    },
    NotLeader {
        leader: Option<NodeId>,
    },
    NoLease,
    CasMismatch {
        current: Option<Value>,
    },
    TypeMismatch {
        key: String,
    },
    NoQuorum {
        needed: u32,
        got: u32,
    },
    /// Client side: the request could not be sent at all.
    Unreachable(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Ok(OpResult),
    /// Definitely not done.
    NotDone(Refusal),
    /// May or may not have been done.
    Unknown(String),
    /// The request was malformed or invalid; it was not done.
    Error(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub reply: Reply,
}

/// Applies a single-key micro-operation to `current`. Returns the new value if
/// the operation writes, and its result; or the refusal.
pub fn apply_micro(current: Option<&Value>, op: &Op) -> Result<(Option<Value>, OpResult), Refusal> {
    let key = op.key().unwrap_or_default();
    let mismatch = || Refusal::TypeMismatch {
        key: key.to_string(),
    };
    let fenced = |current: Option<&Value>| Refusal::Fenced {
        key: key.to_string(),
        current: current.cloned(),
    };
    match op {
        Op::Get { .. } => Ok((None, OpResult::Value(current.cloned()))),
        Op::Put { value, .. } => Ok((Some(value.clone()), OpResult::Done)),
        Op::Cas { expected, new, .. } => {
            if current == expected.as_ref() {
                Ok((Some(new.clone()), OpResult::Done))
            } else {
                Err(Refusal::CasMismatch {
                    current: current.cloned(),
                })
            }
        }
        Op::Append { elem, .. } => match current {
            None => Ok((Some(Value::List(vec![*elem])), OpResult::Done)),
            Some(Value::List(l)) => {
                let mut l = l.clone();
                l.push(*elem);
                Ok((Some(Value::List(l)), OpResult::Done))
            }
            Some(_) => Err(mismatch()),
        },
        Op::ReadList { .. } => match current {
            None => Ok((None, OpResult::Value(Some(Value::List(Vec::new()))))),
            Some(v @ Value::List(_)) => Ok((None, OpResult::Value(Some(v.clone())))),
            Some(_) => Err(mismatch()),
        },
        Op::Incr { delta, .. } => match current {
            None => Ok((
                Some(Value::Int(*delta)),
                OpResult::Value(Some(Value::Int(*delta))),
            )),
            Some(Value::Int(i)) => {
                let v = Value::Int(i.wrapping_add(*delta));
                Ok((Some(v.clone()), OpResult::Value(Some(v))))
            }
            Some(_) => Err(mismatch()),
        },
        Op::Add { elem, .. } => match current {
            None => Ok((Some(Value::Set(BTreeSet::from([*elem]))), OpResult::Done)),
            Some(Value::Set(s)) => {
                let mut s = s.clone();
                s.insert(*elem);
                Ok((Some(Value::Set(s)), OpResult::Done))
            }
            Some(_) => Err(mismatch()),
        },
        Op::ReadSet { .. } => match current {
            None => Ok((None, OpResult::Value(Some(Value::Set(BTreeSet::new()))))),
            Some(v @ Value::Set(_)) => Ok((None, OpResult::Value(Some(v.clone())))),
            Some(_) => Err(mismatch()),
        },
        Op::Remove { elem, .. } => match current {
            None => Ok((None, OpResult::Done)),
            Some(Value::Set(s)) => {
                let mut s = s.clone();
                s.remove(elem);
                Ok((Some(Value::Set(s)), OpResult::Done))
            }
            Some(_) => Err(mismatch()),
        },
        Op::Lock { owner, .. } => match current {
            None => Ok((Some(Value::Str(owner.clone())), OpResult::Done)),
            Some(Value::Str(s)) if s.is_empty() => {
                Ok((Some(Value::Str(owner.clone())), OpResult::Done))
            }
            Some(Value::Str(s)) if s == owner => Ok((None, OpResult::Done)),
            Some(other) => Err(fenced(Some(other))),
        },
        Op::Unlocked { .. } => match current {
            None => Ok((None, OpResult::Done)),
            Some(Value::Str(s)) if s.is_empty() => Ok((None, OpResult::Done)),
            other => Err(fenced(other)),
        },
        Op::Fence { expected, .. } => {
            if current == expected.as_ref() {
                Ok((None, OpResult::Done))
            } else {
                Err(fenced(current))
            }
        }
        Op::Unlock { owner, .. } => match current {
            Some(Value::Str(s)) if s == owner => {
                Ok((Some(Value::Str(String::new())), OpResult::Done))
            }
            _ => Ok((None, OpResult::Done)),
        },
        Op::Scan { .. } | Op::Txn { .. } => Err(mismatch()),
    }
}

/// [`apply_op`] over a whole key-value map, which also serves scans.
pub fn apply_op_kv(
    op: &Op,
    kv: &std::collections::BTreeMap<String, Value>,
) -> Result<(Vec<(String, Value)>, OpResult), Refusal> {
    if !op.micro_ops().iter().any(|m| matches!(m, Op::Scan { .. })) {
        return apply_op(op, |k| kv.get(k).cloned());
    }
    // Scans read; a transaction that scans writes nothing, so it sees no writes of its own.
    if !op.is_read_only() {
        return Err(Refusal::TypeMismatch {
            key: op.keys().first().cloned().unwrap_or_default(),
        });
    }
    let mut results = Vec::new();
    for micro in op.micro_ops() {
        results.push(match micro {
            Op::Scan { prefix } => OpResult::Entries(
                kv.range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => apply_micro(other.key().and_then(|k| kv.get(k)), other)?.1,
        });
    }
    let result = if matches!(op, Op::Txn { .. }) {
        OpResult::Txn(results)
    } else {
        results.pop().unwrap_or(OpResult::Done)
    };
    Ok((Vec::new(), result))
}

/// Applies a whole operation (single or transaction) against `lookup`, which
/// sees the writes made earlier in the same transaction. Returns the writes
/// (last value per key, in first-write order) and the result.
pub fn apply_op(
    op: &Op,
    mut lookup: impl FnMut(&str) -> Option<Value>,
) -> Result<(Vec<(String, Value)>, OpResult), Refusal> {
    let mut writes: Vec<(String, Value)> = Vec::new();
    let mut results = Vec::new();
    for micro in op.micro_ops() {
        let key = micro.key().unwrap_or_default();
        let current = match writes.iter().find(|(k, _)| k == key) {
            Some((_, v)) => Some(v.clone()),
            None => lookup(key),
        };
        let (new, result) = apply_micro(current.as_ref(), micro)?;
        if let Some(v) = new {
            match writes.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = v,
                None => writes.push((key.to_string(), v)),
            }
        }
        results.push(result);
    }
    let result = if matches!(op, Op::Txn { .. }) {
        OpResult::Txn(results)
    } else {
        results.pop().unwrap_or(OpResult::Done)
    };
    Ok((writes, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_sees_its_own_writes_and_refuses_type_mismatch() {
        let op = Op::Txn {
            ops: vec![
                Op::Append {
                    key: "a".into(),
                    elem: 1,
                },
                Op::Append {
                    key: "a".into(),
                    elem: 2,
                },
                Op::ReadList { key: "a".into() },
            ],
        };
        let (writes, result) = apply_op(&op, |_| None).unwrap();
        assert_eq!(writes, vec![("a".to_string(), Value::List(vec![1, 2]))]);
        assert_eq!(
            result,
            OpResult::Txn(vec![
                OpResult::Done,
                OpResult::Done,
                OpResult::Value(Some(Value::List(vec![1, 2])))
            ])
        );
        let bad = Op::Incr {
            key: "a".into(),
            delta: 1,
        };
        assert_eq!(
            apply_op(&bad, |_| Some(Value::List(vec![]))).unwrap_err(),
            Refusal::TypeMismatch { key: "a".into() }
        );
    }

    #[test]
    fn cas_refuses_on_mismatch() {
        let op = Op::Cas {
            key: "k".into(),
            expected: Some(Value::Int(1)),
            new: Value::Int(2),
        };
        assert!(matches!(
            apply_op(&op, |_| Some(Value::Int(3))),
            Err(Refusal::CasMismatch {
                current: Some(Value::Int(3))
            })
        ));
        let (w, _) = apply_op(&op, |_| Some(Value::Int(1))).unwrap();
        assert_eq!(w, vec![("k".to_string(), Value::Int(2))]);
    }

    #[test]
    fn oversized_values_and_nested_txns_are_invalid() {
        let big = Op::Put {
            key: "k".into(),
            value: Value::Str("x".repeat(100)),
        };
        assert!(big.validate(10).is_err());
        let nested = Op::Txn {
            ops: vec![Op::Txn { ops: vec![] }],
        };
        assert!(nested.validate(10).is_err());
        assert!(Op::Get { key: "k".into() }.validate(10).is_ok());
    }
}
