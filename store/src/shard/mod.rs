//! A sharded store: the keys split into partitions (see [`map`]), each
//! served by one replica group, and every group a cluster of the file's
//! replication mode. A node runs the core of every group it is a member of,
//! unchanged (a group's cores see a cluster of the group's nodes only), and
//! a routing layer in front of them ([`Sharded`]), sans-IO like the cores.
//!
//! Any node takes any request: it finds the key's partition in its copy of
//! the map and sends the request to that partition's group (its own core
//! or a member's), following the group's leader hints.
//!
//! What the routing layer keeps inside each group's key space:
//!
//! | key | what |
//! | --- | --- |
//! | `m/map` | the map (group 0 only: the directory) |
//! | `o/P` | whether this group owns partition P, at which epoch |
//! | `p/P/d/KEY` | the data of KEY in partition P |
//! | `p/P/l/KEY` | KEY's lock (two-phase commit) |
//! | `x/TXN` | a cross-group transaction's decision (at its first group) |
//!
//! Every request carries a fence on `o/P` for the epoch its sender's map
//! gives P, in the same atomic transaction as the data: a group that has
//! handed P over refuses it, and the sender rereads the map and goes to the
//! new owner. A move freezes P at the old owner (through the old owner's own
//! log), copies `p/P/` to the new one, marks it the owner, then writes the
//! new map: no write is accepted by the old owner after the copy. With
//! `handoff = "none"` nothing is fenced, and writes that reach the old
//! owner after the copy are lost, as the textbook warns.
//!
//! A transaction over several groups runs two-phase commit: every group
//! locks its keys and reads them (prepare), the node that took the request
//! computes the result and records its decision at the first group
//! (`x/TXN`, the commit point, replicated as any write), then every group
//! writes and unlocks. A lock met later whose owner has been silent past
//! `resolve_locks_after_ms` is resolved from `x/TXN`: rolled forward if
//! committed, else aborted by writing the decision first. Until then the
//! keys it holds are unavailable, which is two-phase commit's blocking.

pub mod map;
mod router;

pub use map::{GroupId, Partition, PartitionId, ShardMap, Span};
pub use router::{build_sharded, SHARDED_WAL_TAG};

use crate::msg::Value;
use serde::{Deserialize, Serialize};

/// Whether a group owns a partition, as `o/P` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    Owned {
        epoch: u64,
    },
    /// Being moved, split or merged: served by nobody until the change is done.
    Frozen {
        epoch: u64,
    },
    /// Handed over (moved or merged away) at `epoch`.
    Gone {
        epoch: u64,
    },
}

const OWNERSHIP_MARK: &str = "\u{1}own:";

impl Ownership {
    pub fn to_value(&self) -> Value {
        Value::Str(format!(
            "{OWNERSHIP_MARK}{}",
            serde_json::to_string(self).unwrap_or_default()
        ))
    }

    pub fn from_value(v: &Value) -> Option<Ownership> {
        match v {
            Value::Str(s) => serde_json::from_str(s.strip_prefix(OWNERSHIP_MARK)?).ok(),
            _ => None,
        }
    }

    pub fn epoch(&self) -> u64 {
        match self {
            Ownership::Owned { epoch }
            | Ownership::Frozen { epoch }
            | Ownership::Gone { epoch } => *epoch,
        }
    }

    /// What `o/P` holds while a group serves P at `epoch`: nothing at the
    /// first epoch (the initial map's owners), so that a new cluster needs
    /// no setup writes.
    pub fn expected(epoch: u64) -> Option<Value> {
        (epoch > 1).then(|| Ownership::Owned { epoch }.to_value())
    }
}

pub fn own_key(p: PartitionId) -> String {
    format!("o/{p}")
}
pub fn data_key(p: PartitionId, key: &str) -> String {
    format!("p/{p}/d/{key}")
}
pub fn lock_key(p: PartitionId, key: &str) -> String {
    format!("p/{p}/l/{key}")
}
pub fn partition_prefix(p: PartitionId) -> String {
    format!("p/{p}/")
}
pub const MAP_KEY: &str = "m/map";
pub fn decision_key(txn: &str) -> String {
    format!("x/{txn}")
}

/// A transaction's decision as `x/TXN` holds it: committed with its writes
/// (so whoever meets a lock can finish it), or aborted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Commit { writes: Vec<(String, Value)> },
    Abort,
}

impl Decision {
    pub fn to_value(&self) -> Value {
        Value::Str(serde_json::to_string(self).unwrap_or_default())
    }
    pub fn from_value(v: &Value) -> Option<Decision> {
        match v {
            Value::Str(s) => serde_json::from_str(s).ok(),
            _ => None,
        }
    }
}

/// The owner a lock names: `TXN@GROUP`, the transaction and the group
/// holding its decision.
pub fn lock_owner(txn: &str, primary: GroupId) -> String {
    format!("{txn}@{primary}")
}

pub fn parse_lock_owner(owner: &str) -> Option<(&str, GroupId)> {
    let (txn, g) = owner.rsplit_once('@')?;
    Some((txn, g.parse().ok()?))
}

pub fn map_value(map: &ShardMap) -> Value {
    Value::Str(serde_json::to_string(map).unwrap_or_default())
}

pub fn map_from_value(v: &Value) -> Option<ShardMap> {
    match v {
        Value::Str(s) => serde_json::from_str(s).ok(),
        _ => None,
    }
}
