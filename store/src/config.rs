//! The cluster file (CLUSTER.toml): nodes, mode and options.

use crate::msg::ReadFrom;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid cluster file: {0}")]
    Parse(String),
    #[error("no node with id {0:?} in the cluster file")]
    UnknownNode(String),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeAddrs {
    pub id: String,
    pub client: String,
    pub peer: String,
    pub admin: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    SingleLeader,
    Leaderless,
    MultiLeader,
    Raft,
    Chain,
}

impl Mode {
    /// The mode as the cluster file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::SingleLeader => "single-leader",
            Mode::Leaderless => "leaderless",
            Mode::MultiLeader => "multi-leader",
            Mode::Raft => "raft",
            Mode::Chain => "chain",
        }
    }
}

/// How many followers must acknowledge a write before the leader acks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Replication {
    Sync,
    SemiSync { k: u32 },
    Async,
}

impl TryFrom<String> for Replication {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "sync" => Ok(Replication::Sync),
            "async" => Ok(Replication::Async),
            other => match other.strip_prefix("semi-sync:") {
                Some(k) => k
                    .parse()
                    .map(|k| Replication::SemiSync { k })
                    .map_err(|_| format!("bad semi-sync count in {other:?}")),
                None => Err(format!(
                    "replication must be sync, async or semi-sync:K, not {other:?}"
                )),
            },
        }
    }
}

impl From<Replication> for String {
    fn from(r: Replication) -> String {
        match r {
            Replication::Sync => "sync".into(),
            Replication::Async => "async".into(),
            Replication::SemiSync { k } => format!("semi-sync:{k}"),
        }
    }
}

/// When the write-ahead log is flushed to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "String", into = "String")]
pub enum Fsync {
    #[default]
    Always,
    IntervalMs(u64),
    /// Records stay in the process's buffer until it fills: a SIGKILL loses them.
    Never,
}

impl TryFrom<String> for Fsync {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            other => match other.strip_prefix("interval:") {
                Some(ms) => ms
                    .parse()
                    .map(Fsync::IntervalMs)
                    .map_err(|_| format!("bad fsync interval in {other:?}")),
                None => Err(format!(
                    "fsync must be always, never or interval:MS, not {other:?}"
                )),
            },
        }
    }
}

impl From<Fsync> for String {
    fn from(f: Fsync) -> String {
        match f {
            Fsync::Always => "always".into(),
            Fsync::Never => "never".into(),
            Fsync::IntervalMs(ms) => format!("interval:{ms}"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SingleLeaderOptions {
    pub replication: Replication,
    /// Epochs fence deposed leaders; `false` allows split brain on purpose.
    pub fencing: bool,
    /// The leader answers reads alone only while it holds a lease.
    pub leases: bool,
    pub read_from: ReadFrom,
    pub heartbeat_ms: u64,
    /// Minimum election timeout; the actual one is drawn from [t, 2t).
    pub election_timeout_ms: u64,
    /// Must be below `election_timeout_ms` by more than the clock drift.
    pub lease_ms: u64,
    pub request_timeout_ms: u64,
    /// Log entries kept in memory behind the applied index for lagging followers.
    pub log_keep: u64,
    /// Async only: new entries go to followers in a batch at most this often
    /// (0: at once), so followers lag as a busy async primary's do, and a
    /// failover loses what the leader acknowledged in that window.
    pub async_ship_ms: u64,
}

impl Default for SingleLeaderOptions {
    fn default() -> Self {
        SingleLeaderOptions {
            replication: Replication::Sync,
            fencing: true,
            leases: true,
            read_from: ReadFrom::Leader,
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            lease_ms: 200,
            request_timeout_ms: 2000,
            log_keep: 2000,
            async_ship_ms: 50,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Conflict {
    /// Last write wins on the coordinator's clock (skew loses writes).
    #[default]
    Lww,
    /// Version vectors; concurrent writes are kept as siblings.
    VersionVectors,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LeaderlessOptions {
    pub n: u32,
    pub r: u32,
    pub w: u32,
    pub vnodes: u32,
    pub sloppy_quorum: bool,
    pub hinted_handoff: bool,
    pub read_repair: bool,
    /// 0 turns anti-entropy off.
    pub anti_entropy_ms: u64,
    pub conflict: Conflict,
    pub request_timeout_ms: u64,
    pub ping_ms: u64,
    pub failure_timeout_ms: u64,
}

impl Default for LeaderlessOptions {
    fn default() -> Self {
        LeaderlessOptions {
            n: 3,
            r: 2,
            w: 2,
            vnodes: 64,
            sloppy_quorum: false,
            hinted_handoff: true,
            read_repair: true,
            anti_entropy_ms: 1000,
            conflict: Conflict::Lww,
            request_timeout_ms: 2000,
            ping_ms: 100,
            failure_timeout_ms: 500,
        }
    }
}

/// Which peers a multi-leader node sends its changes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Every node sends its own changes to every other.
    #[default]
    AllToAll,
    /// The first node is the hub: the others send to it, it sends everything to all.
    Star,
    /// Each node sends everything it has to the next.
    Ring,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::AllToAll => "all-to-all",
            Topology::Star => "star",
            Topology::Ring => "ring",
        }
    }
}

/// How a multi-leader cluster resolves concurrent writes to a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MultiLeaderConflict {
    /// Last write wins on the writing node's clock (skew loses writes).
    #[default]
    Lww,
    /// Concurrent writes kept as siblings until a write that saw them all.
    VersionVectors,
    /// Every key is a CRDT of type `crdt`: merges need no resolution.
    Crdt,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MultiLeaderOptions {
    pub topology: Topology,
    pub conflict: MultiLeaderConflict,
    /// The type of every key when `conflict = "crdt"`.
    pub crdt: crate::crdt::CrdtType,
    /// How often a node tells every peer what it holds and sends again
    /// what was not acknowledged.
    pub anti_entropy_ms: u64,
    /// The most changes of one origin a node keeps for peers that have not
    /// acknowledged them; a peer further behind gets the whole state.
    pub max_log_changes: u64,
}

impl Default for MultiLeaderOptions {
    fn default() -> Self {
        MultiLeaderOptions {
            topology: Topology::AllToAll,
            conflict: MultiLeaderConflict::Lww,
            crdt: crate::crdt::CrdtType::PnCounter,
            anti_entropy_ms: 200,
            max_log_changes: 100_000,
        }
    }
}

/// How a Raft leader knows a read is not stale.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RaftRead {
    /// A heartbeat round answered by a majority after the read arrived (§6.4).
    #[default]
    ReadIndex,
    /// Alone, while a majority acknowledged it within `lease_ms` by its own
    /// clock: safe only while clocks drift less than the margin.
    Lease,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftOptions {
    pub heartbeat_ms: u64,
    /// Minimum election timeout; the actual one is drawn from [t, 2t).
    pub election_timeout_ms: u64,
    pub read: RaftRead,
    /// Must be below `election_timeout_ms` by more than the clock drift.
    pub lease_ms: u64,
    /// A candidate first asks whether it would win (§9.6), so a node that
    /// was cut off does not depose a working leader when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority for an election timeout steps down.
    pub check_quorum: bool,
    /// §5.4.2: a leader commits earlier terms' entries only through one of
    /// its own term; `false` reproduces Figure 8's lost committed write.
    pub commit_rule: bool,
    pub request_timeout_ms: u64,
    /// Applied entries kept for lagging followers before a snapshot replaces them.
    pub log_keep: u64,
    /// `leader` (linearizable) or `any` / `followers` (a follower's applied state).
    pub read_from: ReadFrom,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions {
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            read: RaftRead::ReadIndex,
            lease_ms: 200,
            pre_vote: true,
            check_quorum: true,
            commit_rule: true,
            request_timeout_ms: 2000,
            log_keep: 2000,
            read_from: ReadFrom::Leader,
        }
    }
}

/// Where a chain serves reads.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ChainReads {
    /// The tail answers every read: the committed state.
    #[default]
    Tail,
    /// CRAQ: any chain node answers a clean key; a dirty one asks the tail.
    Any,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ChainOptions {
    pub reads: ChainReads,
    /// How often the master pings every node (and members resend what is unacknowledged).
    pub heartbeat_ms: u64,
    /// The master removes a chain node it has not heard from for this long.
    pub failure_timeout_ms: u64,
    /// A node serves clients only this long after the master's last ping;
    /// below `failure_timeout_ms` by more than the clock drift.
    pub lease_ms: u64,
    /// Chain messages of another epoch are refused and nodes serve only
    /// under the master's lease; `false` allows split brain on purpose.
    pub epochs: bool,
    pub request_timeout_ms: u64,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            reads: ChainReads::Tail,
            heartbeat_ms: 50,
            failure_timeout_ms: 300,
            lease_ms: 200,
            epochs: true,
            request_timeout_ms: 2000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Each node keeps its log in `data_dir/<id>`; without it, nothing is persisted.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub fsync: Fsync,
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Bytes of frames a node holds at once while reading them, over all
    /// its client and peer connections; frames past it wait their turn.
    #[serde(default = "default_frame_budget_bytes")]
    pub frame_budget_bytes: usize,
    /// Connections each port (client, peer, admin) serves at once; more are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests one client connection may have unanswered; past it the node
    /// reads no more from that connection until replies go out.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Rewrite the log as a snapshot once it exceeds this size.
    #[serde(default = "default_compact_bytes")]
    pub compact_after_bytes: u64,
    /// Seeds the nodes' election jitter (mixed with the node index). Any
    /// value, 0 included, gives the same jitter on every run.
    #[serde(default, with = "seed_in_toml")]
    pub seed: u64,
    /// When set, admin connections must first send `auth SECRET` and peers
    /// must present it in their hello: a per-run secret, so that other
    /// users of the host can neither drive the nodes nor pose as a peer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    #[serde(default)]
    pub single_leader: SingleLeaderOptions,
    #[serde(default)]
    pub leaderless: LeaderlessOptions,
    #[serde(default)]
    pub multi_leader: MultiLeaderOptions,
    #[serde(default)]
    pub raft: RaftOptions,
    #[serde(default)]
    pub chain: ChainOptions,
    /// Present when the keys are partitioned over replica groups of `mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding: Option<ShardingOptions>,
    /// Which node a client of a leaderless or multi-leader cluster sends
    /// each request to (clients of a leader mode find the leader).
    #[serde(default)]
    pub client_routing: ClientRouting,
    pub nodes: Vec<NodeAddrs>,
}

/// How keys map to partitions.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// A fixed number of hash partitions, each on a group.
    #[default]
    Hash,
    /// Ordered key ranges, split when they grow and merged when small.
    Range,
    /// A ring of virtual nodes; a key belongs to the first one at or after its hash.
    ConsistentHash,
    /// Key ranges assigned to groups one by one by the directory (group 0),
    /// not by their order.
    Directory,
    /// Keys `REGION/...` live on the groups of that region's nodes.
    Geo,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Hash => "hash",
            Scheme::Range => "range",
            Scheme::ConsistentHash => "consistent-hash",
            Scheme::Directory => "directory",
            Scheme::Geo => "geo",
        }
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Scheme::Hash,
            Scheme::Range,
            Scheme::ConsistentHash,
            Scheme::Directory,
            Scheme::Geo,
        ]
        .into_iter()
        .find(|x| x.name() == s)
        .ok_or_else(|| {
            format!("{s}: expected none, hash, range, consistent-hash, directory or geo")
        })
    }
}

/// How a partition changes hands.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Handoff {
    /// The old owner freezes the partition at a new epoch (in its own log)
    /// before the copy, so it accepts no write once the new owner serves.
    #[default]
    Epoch,
    /// Copy, then repoint the map; the old owner keeps serving whoever
    /// still routes to it, and what it accepts after the copy is lost.
    None,
}

/// How a transaction over several groups commits.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CrossShard {
    /// Two-phase commit: locks at every group, a decision recorded at the
    /// first, then the writes.
    #[default]
    TwoPhase,
    /// Each group's part runs on its own.
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ShardingOptions {
    pub scheme: Scheme,
    /// Replica groups; each is a cluster of the file's `mode`.
    pub groups: u32,
    /// Nodes in each group; group g is nodes g, g+1, ... (mod the node count).
    pub replicas: u32,
    /// Partitions (hash), virtual nodes (consistent-hash) or ranges
    /// (range, directory) each group starts with.
    pub partitions_per_group: u32,
    /// Range and directory: where the initial ranges end (each a range's
    /// first key); empty, spread over the digits.
    pub boundaries: Vec<String>,
    /// Geo: regions; node i is in region i mod `regions`.
    pub regions: u32,
    pub handoff: Handoff,
    pub cross_shard: CrossShard,
    /// Range: a node splits a range once a write finds it holding more keys
    /// than this (0: only when asked).
    pub split_after_keys: u64,
    /// How long a node tries a client's request before answering.
    pub request_timeout_ms: u64,
    /// A lock left by a transaction older than this is resolved by whoever
    /// meets it: committed from the recorded decision, or aborted.
    pub resolve_locks_after_ms: u64,
    /// How often a node rereads the partition map from group 0.
    pub map_refresh_ms: u64,
}

impl Default for ShardingOptions {
    fn default() -> Self {
        ShardingOptions {
            scheme: Scheme::Hash,
            groups: 2,
            replicas: 3,
            partitions_per_group: 4,
            boundaries: Vec::new(),
            regions: 2,
            handoff: Handoff::Epoch,
            cross_shard: CrossShard::TwoPhase,
            split_after_keys: 0,
            request_timeout_ms: 3000,
            resolve_locks_after_ms: 2000,
            map_refresh_ms: 1000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientRouting {
    /// Each client process talks to one node of its own, as Jepsen binds
    /// each client to a node.
    #[default]
    Bound,
    /// Each request goes to a node drawn anew: a user whose requests reach
    /// different datacenters or devices.
    PerRequest,
}

impl std::str::FromStr for ClientRouting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bound" => Ok(ClientRouting::Bound),
            "per-request" => Ok(ClientRouting::PerRequest),
            other => Err(format!("{other}: expected bound or per-request")),
        }
    }
}

fn default_tick_ms() -> u64 {
    10
}
fn default_max_value_bytes() -> usize {
    1024 * 1024
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_max_frame_bytes() -> usize {
    crate::codec::DEFAULT_MAX_FRAME_BYTES
}
fn default_frame_budget_bytes() -> usize {
    crate::codec::DEFAULT_FRAME_BUDGET_BYTES
}
fn default_compact_bytes() -> u64 {
    64 * 1024 * 1024
}

impl ClusterConfig {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: ClusterConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if cfg.nodes.is_empty() {
            return Err(ConfigError::Parse("no nodes".into()));
        }
        Ok(cfg)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn index_of(&self, id: &str) -> Result<u32, ConfigError> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .map(|i| i as u32)
            .ok_or_else(|| ConfigError::UnknownNode(id.to_string()))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// A cluster file with every option at its default, for reference.
pub const EXAMPLE_CLUSTER_TOML: &str = r#"# single-leader | leaderless | multi-leader | raft | chain
mode = "single-leader"
# each node logs to data_dir/<id>; without data_dir nothing is persisted
data_dir = "/tmp/splitbrain-store"
# always | interval:MS | never (never: a SIGKILL loses recent writes)
fsync = "always"
tick_ms = 10
max_value_bytes = 1048576
max_frame_bytes = 16777216
frame_budget_bytes = 67108864
max_connections = 1024
max_in_flight = 1024
compact_after_bytes = 67108864
seed = 0

[single_leader]
# sync | semi-sync:K | async
replication = "sync"
fencing = true
leases = true
# leader | followers | any
read_from = "leader"
heartbeat_ms = 50
election_timeout_ms = 300
lease_ms = 200
request_timeout_ms = 2000
log_keep = 2000
# async: ship new entries in batches at most this often (followers lag)
async_ship_ms = 50

[leaderless]
n = 3
r = 2
w = 2
vnodes = 64
sloppy_quorum = false
hinted_handoff = true
read_repair = true
anti_entropy_ms = 1000
# lww | version-vectors
conflict = "lww"
request_timeout_ms = 2000
ping_ms = 100
failure_timeout_ms = 500

[multi_leader]
# all-to-all | star | ring
topology = "all-to-all"
# lww | version-vectors | crdt
conflict = "lww"
# with conflict = "crdt": g-counter | pn-counter | g-set | 2p-set | or-set | lww-register | mv-register
crdt = "pn-counter"
anti_entropy_ms = 200

[raft]
heartbeat_ms = 50
election_timeout_ms = 300
# read-index | lease
read = "read-index"
lease_ms = 200
pre_vote = true
check_quorum = true
# false: a leader commits earlier terms' entries by counting (Figure 8)
commit_rule = true
request_timeout_ms = 2000
log_keep = 2000
# leader | followers | any
read_from = "leader"

[chain]
# the first node is the configuration master, the others the chain
# tail | any (CRAQ)
reads = "tail"
heartbeat_ms = 50
failure_timeout_ms = 300
lease_ms = 200
epochs = true
request_timeout_ms = 2000

[[nodes]]
id = "n1"
client = "127.0.0.1:7001"
peer = "127.0.0.1:7101"
admin = "127.0.0.1:7201"

[[nodes]]
id = "n2"
client = "127.0.0.1:7002"
peer = "127.0.0.1:7102"
admin = "127.0.0.1:7202"

[[nodes]]
id = "n3"
client = "127.0.0.1:7003"
peer = "127.0.0.1:7103"
admin = "127.0.0.1:7203"
"#;

/// TOML integers are i64: a seed above `i64::MAX` is written as the i64
/// with the same bits, so every u64 seed makes a cluster file.
mod seed_in_toml {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(*seed as i64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(i64::deserialize(d)? as u64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_seed_makes_a_cluster_file() {
        for seed in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            let mut cfg: super::ClusterConfig = toml::from_str("nodes = []").unwrap();
            cfg.seed = seed;
            let text = toml::to_string(&cfg).unwrap();
            let back: super::ClusterConfig = toml::from_str(&text).unwrap();
            assert_eq!(back.seed, seed);
        }
    }

    use super::*;

    #[test]
    fn example_cluster_file_parses_to_the_defaults() {
        let cfg = ClusterConfig::parse(EXAMPLE_CLUSTER_TOML).unwrap();
        assert_eq!(cfg.nodes.len(), 3);
        assert_eq!(cfg.single_leader, SingleLeaderOptions::default());
        assert_eq!(cfg.leaderless, LeaderlessOptions::default());
        assert_eq!(cfg.fsync, Fsync::Always);
    }

    #[test]
    fn parses_modes_and_options() {
        let cfg = ClusterConfig::parse(
            r#"
            mode = "single-leader"
            fsync = "interval:5"
            [single_leader]
            replication = "semi-sync:1"
            fencing = false
            [[nodes]]
            id = "n1"
            client = "127.0.0.1:1"
            peer = "127.0.0.1:2"
            admin = "127.0.0.1:3"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.fsync, Fsync::IntervalMs(5));
        assert_eq!(
            cfg.single_leader.replication,
            Replication::SemiSync { k: 1 }
        );
        assert!(!cfg.single_leader.fencing);
        assert_eq!(cfg.index_of("n1").unwrap(), 0);
        assert!(cfg.index_of("n9").is_err());
        let again = ClusterConfig::parse(&cfg.to_toml()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn mode_names_are_the_cluster_file_spelling() {
        for mode in [Mode::SingleLeader, Mode::Leaderless] {
            let text = format!(
                "mode = \"{}\"\n[[nodes]]\nid=\"a\"\nclient=\"x\"\npeer=\"y\"\nadmin=\"z\"\n",
                mode.name()
            );
            assert_eq!(ClusterConfig::parse(&text).unwrap().mode, mode);
        }
    }

    #[test]
    fn rejects_bad_replication() {
        let err = ClusterConfig::parse(
            "[single_leader]\nreplication = \"sometimes\"\n[[nodes]]\nid=\"a\"\nclient=\"x\"\npeer=\"y\"\nadmin=\"z\"\n",
        );
        assert!(err.is_err());
    }
}
