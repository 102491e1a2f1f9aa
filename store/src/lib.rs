//! The reference store: a replicated key-value store with the replication
//! modes the textbooks describe, as sans-IO state machines (each a `protocol`
//! listed in `modes`: `single_leader`, `leaderless`, `multi_leader`, `raft`, `chain`), run through one
//! mode-agnostic `core` by a tokio driver (`node`), with a write-ahead
//! log (`wal`), a client library (`client`) and a deterministic simulator
//! (`sim`); `shard` partitions the keys over replica groups of any of them.
//! It knows nothing of the harness.
//!
//! Run a node with `splitbrain-store-node --config CLUSTER.toml --id n1`
//! (or [`node::run_node`]). The cluster file is described by
//! [`config::ClusterConfig`]; [`config::EXAMPLE_CLUSTER_TOML`] shows every option.
//!
//! Admin port (one text line per command, one reply line):
//! `status` (answers `ok` and the JSON of an [`admin::NodeStatus`]; ask with
//! [`admin::admin_status`]) · `block n2 n3` · `unblock n2` · `unblock-all` ·
//! `clock-offset -500` · `probe n2 [TIMEOUT_MS]` · `members` ·
//! `member-remove n2` · `member-add n2` · and, sharded: `partitions` ·
//! `rebalance move P G` · `rebalance split P` · `rebalance merge P`.

pub mod admin;
pub mod chain;
pub mod claims;
pub mod client;
pub mod codec;
pub mod config;
pub mod core;
pub mod crdt;
pub mod leaderless;
pub mod modes;
pub mod msg;
pub mod multi_leader;
pub mod node;
pub mod protocol;
pub mod quorum;
pub mod raft;
pub mod route;
pub mod seeded;
pub mod shard;
pub mod sim;
pub mod single_leader;
pub mod wal;

pub use admin::NodeStatus;
pub use config::ClusterConfig;
pub use msg::{Op, OpResult, ReadFrom, Refusal, Reply, Request, RequestOptions, Response, Value};
