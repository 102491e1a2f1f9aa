//! The sans-IO protocol core: inputs go in, effects come out. A core reads no
//! clock and draws no randomness of its own; the driver passes the time and a seed.

use crate::config::{ClusterConfig, Mode};
use crate::leaderless::{self, Leaderless};
use crate::msg::{NodeId, Request, Response};
use crate::single_leader::{self, SingleLeader};
use serde::{Deserialize, Serialize};

/// Names one in-flight client request; the driver maps it back to a connection.
pub type ClientId = u64;

#[derive(Clone, Debug)]
pub enum Input {
    Client {
        client: ClientId,
        request: Request,
    },
    Peer {
        from: NodeId,
        msg: PeerMsg,
    },
    Tick,
    /// The end of a batch of inputs: a core may hold sends back until now so
    /// that one message carries the whole batch.
    Flush,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Send {
        to: NodeId,
        msg: PeerMsg,
    },
    /// Must reach the log before any later `Send` or `Reply` of the same step
    /// is performed, when the durability mode requires it.
    Persist(WalRecord),
    Reply {
        client: ClientId,
        response: Response,
    },
    /// Wake the core with a `Tick` at (or after) this time.
    SetTimer {
        at_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMsg {
    SingleLeader(single_leader::Msg),
    Leaderless(leaderless::Msg),
    /// Transport-level reachability probe, answered by the node loop (never a
    /// core) with `ProbeAck`: it travels the same path as protocol messages,
    /// so a harness can see that a partition really cut a link.
    Probe {
        nonce: u64,
    },
    ProbeAck {
        nonce: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WalRecord {
    SingleLeader(single_leader::WalRecord),
    Leaderless(leaderless::WalRecord),
}

/// What a core reports about itself; the driver adds who and where it is
/// (see [`crate::admin::NodeStatus`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStatus {
    pub role: String,
    pub epoch: u64,
    pub leader: Option<NodeId>,
    pub keys: u64,
    pub commit_index: u64,
    pub last_index: u64,
}

pub trait Core: Send {
    fn step(&mut self, now_ms: u64, input: Input) -> Vec<Effect>;
    fn status(&self) -> CoreStatus;
    /// Records that rebuild the current durable state; used to compact the log.
    fn snapshot_records(&self) -> Vec<WalRecord>;
}

/// Builds the core for `node` from the cluster file, replaying `recovered` log records.
pub fn build_core(
    cfg: &ClusterConfig,
    node: NodeId,
    seed: u64,
    recovered: Vec<WalRecord>,
) -> Box<dyn Core> {
    let n = cfg.nodes.len() as u32;
    match cfg.mode {
        Mode::SingleLeader => {
            let recs = recovered
                .into_iter()
                .filter_map(|r| match r {
                    WalRecord::SingleLeader(r) => Some(r),
                    WalRecord::Leaderless(_) => None,
                })
                .collect();
            Box::new(SingleLeader::new(
                node,
                n,
                cfg.single_leader.clone(),
                seed,
                recs,
            ))
        }
        Mode::Leaderless => {
            let recs = recovered
                .into_iter()
                .filter_map(|r| match r {
                    WalRecord::Leaderless(r) => Some(r),
                    WalRecord::SingleLeader(_) => None,
                })
                .collect();
            Box::new(Leaderless::new(node, n, cfg.leaderless.clone(), recs))
        }
    }
}

/// A small deterministic generator (splitmix64) for jitter from a passed-in seed.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform-ish in [0, bound).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}

pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, mixed: a stable hash that does not depend on the process.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}
