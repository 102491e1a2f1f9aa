//! What a replication mode implements: a sans-IO state machine with message
//! and log-record types of its own. Inputs go in, effects come out; a protocol
//! reads no clock and draws no randomness of its own (the driver passes the
//! time and a seed). [`crate::core`] runs any protocol behind one
//! mode-agnostic interface; [`crate::modes`] lists the modes.

use crate::config::ClusterConfig;
use crate::msg::{NodeId, Request, Response};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;

/// Names one in-flight client request; the driver maps it back to a connection.
pub type ClientId = u64;

/// An input to a core; `M` is the peer message type.
#[derive(Clone, Debug)]
pub enum Input<M> {
    Client {
        client: ClientId,
        request: Request,
    },
    Peer {
        from: NodeId,
        msg: M,
    },
    /// The driver's periodic wake-up (every `tick_ms`), when a core checks
    /// its deadlines: heartbeats, elections, request timeouts.
    Tick,
    /// The end of a batch of inputs: a core may hold sends back until now so
    /// that one message carries the whole batch.
    Flush,
}

/// An effect of a step; `M` is the peer message type, `R` the log record type.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect<M, R> {
    Send {
        to: NodeId,
        msg: M,
    },
    /// Must reach the log before any later `Send` or `Reply` of the same step
    /// is performed, when the durability mode requires it.
    Persist(R),
    Reply {
        client: ClientId,
        response: Response,
    },
    /// The answer to an admin request (see [`Protocol::on_admin`]).
    AdminReply {
        admin: ClientId,
        reply: AdminReply,
    },
}

/// A request to the database's own admin interface: membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// The configuration as this node knows it.
    Members,
    /// Take a node out of the configuration.
    Remove(NodeId),
    /// Bring a node (one of the cluster file's) back in, after it has caught up.
    Add(NodeId),
    /// A sharded store's partition map, as group 0 holds it.
    Partitions,
    /// Move data between a sharded store's groups.
    Rebalance(Rebalance),
    /// Finish the rebalance a node began and did not end (it was killed),
    /// if one holds the lock; the map after.
    Settle,
}

/// A change to a sharded store's partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rebalance {
    /// The partition's data copied to group `to`, which serves it from then on.
    Move { partition: u32, to: u32 },
    /// A range (or ring arc) cut in two at its middle key; the new upper
    /// half (a ring: lower arc) is a new partition on the same group.
    Split { partition: u32 },
    /// The partition folded into its neighbour (on the same group).
    Merge { partition: u32 },
}

/// What a rebalance did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceDone {
    /// In words: "partition 3 moved from group 1 to group 2 at epoch 7".
    pub summary: String,
    /// The partitions it changed (a split's new one included).
    pub partitions: Vec<u32>,
    pub map_epoch: u64,
    pub keys_copied: u64,
    /// How long the partitions were frozen (served by nobody).
    pub frozen_ms: u64,
}

/// A configuration: the nodes that take part (Raft's voters; a chain, head
/// first) and those still catching up before they do (Raft's learners; a
/// chain's joining tail).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub members: Vec<NodeId>,
    pub joining: Vec<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// Done (or nothing to do): the configuration now in force.
    Members(Membership),
    /// Ask the node that decides configurations.
    NotLeader {
        leader: Option<NodeId>,
    },
    /// A sharded store's map.
    Partitions(crate::shard::ShardMap),
    Rebalanced(RebalanceDone),
    /// Not done, and it will not be.
    Refused(String),
    /// It may yet take effect.
    Unknown(String),
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

/// One replication mode. Its messages and records travel and persist as
/// bytes (bincode), so their types are its own business.
pub trait Protocol: Send + Sized + 'static {
    type Msg: Serialize + DeserializeOwned + Clone + Debug + Send;
    type Record: Serialize + DeserializeOwned + Clone + Debug + Send;

    /// Node `node` of the cluster described by `cfg`, rebuilt from the
    /// records its log holds, oldest first. `seed` is this node's own (the
    /// cluster's with the node index mixed in) for whatever it draws.
    fn from_config(
        cfg: &ClusterConfig,
        node: NodeId,
        seed: u64,
        recovered: Vec<Self::Record>,
    ) -> Self;

    fn step(
        &mut self,
        now_ms: u64,
        input: Input<Self::Msg>,
    ) -> Vec<Effect<Self::Msg, Self::Record>>;

    fn status(&self) -> CoreStatus;

    /// Records that rebuild the current durable state; used to compact the log.
    fn snapshot_records(&self) -> Vec<Self::Record>;

    /// A hash of the data this node serves (not its metadata), equal on two
    /// nodes exactly when they hold the same data: how a simulation sees
    /// replicas converge. `None` when the mode does not say.
    fn data_digest(&self) -> Option<u64> {
        None
    }

    /// Whether a cluster of this mode has a leader once it is up (so a
    /// harness waits for one, and aims faults at it).
    fn has_leader(_cfg: &ClusterConfig) -> bool {
        false
    }

    /// Why a cluster of this mode cannot have `nodes` nodes, if it cannot.
    fn refuse_node_count(_nodes: usize) -> Option<String> {
        None
    }

    /// Where this cluster serves reads, for a mode with a leader: a client
    /// sends its reads there (followers, any node) rather than to the leader.
    fn read_from(_cfg: &ClusterConfig) -> Option<crate::msg::ReadFrom> {
        None
    }

    /// Whether this mode changes its membership through [`Protocol::on_admin`].
    fn has_membership(_cfg: &ClusterConfig) -> bool {
        false
    }

    /// An admin request; answered by an [`Effect::AdminReply`] for `admin`,
    /// in this step or a later one.
    fn on_admin(
        &mut self,
        _now_ms: u64,
        admin: ClientId,
        _op: AdminOp,
    ) -> Vec<Effect<Self::Msg, Self::Record>> {
        vec![Effect::AdminReply {
            admin,
            reply: AdminReply::Refused("this replication mode has no membership changes".into()),
        }]
    }

    /// The mode and its options in a few words, for a test's record.
    fn describe(cfg: &ClusterConfig) -> String {
        cfg.mode.name().to_string()
    }
}
