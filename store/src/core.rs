//! The mode-agnostic core that the driver ([`crate::node`]) and the simulator
//! ([`crate::sim`]) run: any [`Protocol`] behind an adapter that encodes its
//! messages and log records to bytes, so that neither the transport nor the
//! log tells one mode from another. The modes are listed in [`crate::modes`].

use crate::codec::{decode, encode};
use crate::config::{ClusterConfig, Mode};
use crate::modes::MODES;
use crate::msg::NodeId;
use crate::protocol::{self, Protocol};
pub use crate::protocol::{AdminOp, AdminReply, Membership};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub use crate::protocol::{ClientId, CoreStatus};
pub use crate::seeded::{mix64, stable_hash, SeededRng};

pub type Input = protocol::Input<PeerMsg>;
pub type Effect = protocol::Effect<PeerMsg, WalRecord>;

/// What travels between nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// A message of the cluster's mode, as its protocol encodes it.
    Protocol(Bytes),
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

/// An encoded message inside the envelope. Serialized as one byte string
/// (the same bytes as a `Vec<u8>`), which bincode copies in one piece rather
/// than element by element.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bytes, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// One record of the write-ahead log: the tag of its mode (one byte, see
/// [`crate::modes::MODES`]), then the record as the mode's protocol encodes
/// it. That is byte for byte what builds before the protocol trait wrote (an
/// enum with a variant per mode, whose index bincode writes as one byte), so
/// their logs stay readable.
#[derive(Clone, PartialEq, Eq)]
pub struct WalRecord(Vec<u8>);

impl WalRecord {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        WalRecord(bytes)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WalRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_first() {
            Some((tag, body)) => write!(f, "WalRecord(tag {tag}, {} bytes)", body.len()),
            None => f.write_str("WalRecord(empty)"),
        }
    }
}

/// A protocol as the driver and the simulator see it.
pub trait Core: Send {
    fn step(&mut self, now_ms: u64, input: Input) -> Vec<Effect>;
    fn status(&self) -> CoreStatus;
    /// Records that rebuild the current durable state; used to compact the log.
    fn snapshot_records(&self) -> Vec<WalRecord>;
    /// See [`Protocol::data_digest`].
    fn data_digest(&self) -> Option<u64>;
    /// See [`Protocol::on_admin`].
    fn admin(&mut self, now_ms: u64, admin: ClientId, op: AdminOp) -> Vec<Effect>;
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("this build has no replication mode {0}")]
    UnknownMode(&'static str),
    #[error(
        "log record {index} belongs to mode {found}, but this node runs {mode}: \
         a data directory holds one mode's logs"
    )]
    ForeignRecord {
        index: usize,
        mode: &'static str,
        found: String,
    },
    #[error(
        "log record {index} is not a {mode} record this build can read ({reason}): \
         the log was written by an incompatible build; start from an empty data directory"
    )]
    BadRecord {
        index: usize,
        mode: &'static str,
        reason: String,
    },
}

/// A row of the table of modes: the mode, the tag that marks its log
/// records, and how to build its core.
pub struct ModeEntry {
    pub mode: Mode,
    pub wal_tag: u8,
    build: fn(&ModeEntry, &ClusterConfig, NodeId, u64, Vec<WalRecord>) -> BuildResult,
    pub has_leader: fn(&ClusterConfig) -> bool,
    pub describe: fn(&ClusterConfig) -> String,
    pub read_from: fn(&ClusterConfig) -> Option<crate::msg::ReadFrom>,
    pub refuse_node_count: fn(usize) -> Option<String>,
    pub has_membership: fn(&ClusterConfig) -> bool,
}

type BuildResult = Result<Box<dyn Core>, CoreError>;

impl ModeEntry {
    pub const fn of<P: Protocol>(mode: Mode, wal_tag: u8) -> ModeEntry {
        ModeEntry {
            mode,
            wal_tag,
            build: build_adapter::<P>,
            has_leader: P::has_leader,
            describe: P::describe,
            read_from: P::read_from,
            refuse_node_count: P::refuse_node_count,
            has_membership: P::has_membership,
        }
    }
}

/// Builds the core for `node` from the cluster file, replaying `recovered`
/// log records. Refuses records of another mode or ones it cannot decode.
/// The core's seed is `seed` with the node index mixed in, so that the nodes
/// of one cluster draw different jitter from one seed.
pub fn build_core(
    cfg: &ClusterConfig,
    node: NodeId,
    seed: u64,
    recovered: Vec<WalRecord>,
) -> Result<Box<dyn Core>, CoreError> {
    if cfg.sharding.is_some() {
        return crate::shard::build_sharded(cfg, node, seed, recovered);
    }
    let entry = MODES
        .iter()
        .find(|m| m.mode == cfg.mode)
        .ok_or(CoreError::UnknownMode(cfg.mode.name()))?;
    let node_seed = seed ^ (u64::from(node) << 32) ^ 0x5eed;
    (entry.build)(entry, cfg, node, node_seed, recovered)
}

fn build_adapter<P: Protocol>(
    entry: &ModeEntry,
    cfg: &ClusterConfig,
    node: NodeId,
    seed: u64,
    recovered: Vec<WalRecord>,
) -> BuildResult {
    let mode = entry.mode.name();
    let mut records = Vec::with_capacity(recovered.len());
    for (index, rec) in recovered.iter().enumerate() {
        let bad = |reason: String| CoreError::BadRecord {
            index,
            mode,
            reason,
        };
        let (tag, body) = rec
            .0
            .split_first()
            .ok_or_else(|| bad("empty record".into()))?;
        if *tag != entry.wal_tag {
            let found = MODES
                .iter()
                .find(|m| m.wal_tag == *tag)
                .map_or_else(|| format!("with tag {tag}"), |m| m.mode.name().to_string());
            return Err(CoreError::ForeignRecord { index, mode, found });
        }
        records.push(decode::<P::Record>(body).map_err(|e| bad(e.to_string()))?);
    }
    Ok(Box::new(Adapter {
        proto: P::from_config(cfg, node, seed, records),
        wal_tag: entry.wal_tag,
    }))
}

struct Adapter<P> {
    proto: P,
    wal_tag: u8,
}

impl<P: Protocol> Adapter<P> {
    fn record(&self, rec: &P::Record) -> WalRecord {
        let mut bytes = vec![self.wal_tag];
        bytes.extend_from_slice(&encode(rec));
        WalRecord(bytes)
    }

    fn encode(&self, effects: Vec<protocol::Effect<P::Msg, P::Record>>) -> Vec<Effect> {
        effects
            .into_iter()
            .map(|e| match e {
                protocol::Effect::Send { to, msg } => Effect::Send {
                    to,
                    msg: PeerMsg::Protocol(Bytes(encode(&msg))),
                },
                protocol::Effect::Persist(rec) => Effect::Persist(self.record(&rec)),
                protocol::Effect::Reply { client, response } => Effect::Reply { client, response },
                protocol::Effect::AdminReply { admin, reply } => {
                    Effect::AdminReply { admin, reply }
                }
            })
            .collect()
    }
}

impl<P: Protocol> Core for Adapter<P> {
    fn step(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        let input = match input {
            Input::Client { client, request } => protocol::Input::Client { client, request },
            Input::Peer {
                from,
                msg: PeerMsg::Protocol(bytes),
            } => match decode(&bytes.0) {
                Ok(msg) => protocol::Input::Peer { from, msg },
                // Not this mode's message (a peer of another build): lost in transit.
                Err(_) => return Vec::new(),
            },
            // Probes are the driver's business.
            Input::Peer { .. } => return Vec::new(),
            Input::Tick => protocol::Input::Tick,
            Input::Flush => protocol::Input::Flush,
        };
        let effects = self.proto.step(now_ms, input);
        self.encode(effects)
    }

    fn admin(&mut self, now_ms: u64, admin: ClientId, op: AdminOp) -> Vec<Effect> {
        let effects = self.proto.on_admin(now_ms, admin, op);
        self.encode(effects)
    }

    fn status(&self) -> CoreStatus {
        self.proto.status()
    }

    fn data_digest(&self) -> Option<u64> {
        self.proto.data_digest()
    }

    fn snapshot_records(&self) -> Vec<WalRecord> {
        self.proto
            .snapshot_records()
            .iter()
            .map(|r| self.record(r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Value;
    use crate::sim::Sim;
    use crate::{leaderless, single_leader};

    /// The log record type of builds before the protocol trait.
    #[derive(Serialize)]
    enum OldWalRecord {
        SingleLeader(single_leader::WalRecord),
        Leaderless(leaderless::WalRecord),
    }

    fn cluster(mode: Mode) -> ClusterConfig {
        let mut cfg = Sim::cluster(3);
        cfg.mode = mode;
        cfg
    }

    #[test]
    fn every_mode_has_one_row_and_a_one_byte_tag() {
        for mode in [Mode::SingleLeader, Mode::Leaderless] {
            assert_eq!(MODES.iter().filter(|m| m.mode == mode).count(), 1);
        }
        let mut tags: Vec<u8> = MODES.iter().map(|m| m.wal_tag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), MODES.len(), "tags are unique");
        // bincode writes an enum index below 251 as that one byte.
        assert!(tags.iter().all(|t| *t < 251));
    }

    #[test]
    fn logs_of_older_builds_replay() {
        let kv = vec![("a".to_string(), Value::Int(4))];
        let old = [
            OldWalRecord::SingleLeader(single_leader::WalRecord::Meta {
                epoch: 7,
                voted_for: Some(1),
            }),
            OldWalRecord::SingleLeader(single_leader::WalRecord::Snapshot {
                index: 3,
                epoch: 6,
                kv,
            }),
        ];
        let recs: Vec<WalRecord> = old.iter().map(|r| WalRecord(encode(r))).collect();
        let core = build_core(&cluster(Mode::SingleLeader), 0, 1, recs.clone()).unwrap();
        let s = core.status();
        assert_eq!((s.epoch, s.keys, s.commit_index), (7, 1, 3));
        // And what the new build writes is what the old one did.
        assert_eq!(core.snapshot_records()[..2], recs[..]);

        let old = OldWalRecord::Leaderless(leaderless::WalRecord::HintDone {
            for_node: 2,
            key: "k".into(),
        });
        let core = build_core(
            &cluster(Mode::Leaderless),
            0,
            1,
            vec![WalRecord(encode(&old))],
        );
        assert!(core.is_ok());
    }

    #[test]
    fn a_log_of_another_mode_or_build_is_refused() {
        let sl = build_core(&cluster(Mode::SingleLeader), 0, 1, Vec::new()).unwrap();
        let leaderless_rec = OldWalRecord::Leaderless(leaderless::WalRecord::HintDone {
            for_node: 2,
            key: "k".into(),
        });
        let mut recs = sl.snapshot_records();
        recs.push(WalRecord(encode(&leaderless_rec)));
        let err = build_core(&cluster(Mode::SingleLeader), 0, 1, recs)
            .err()
            .unwrap();
        assert!(
            matches!(&err, CoreError::ForeignRecord { index: 3, found, .. } if found == "leaderless"),
            "{err}"
        );
        let err = build_core(
            &cluster(Mode::SingleLeader),
            0,
            1,
            vec![WalRecord(vec![0, 200, 1, 2])],
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, CoreError::BadRecord { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("incompatible build"));
    }

    /// When each node of a lone single-leader cluster first stands for election.
    fn first_elections(seed: u64) -> Vec<u64> {
        let cfg = cluster(Mode::SingleLeader);
        (0..3)
            .map(|node| {
                let mut core = build_core(&cfg, node, seed, Vec::new()).unwrap();
                (0..10_000u64)
                    .find(|now| {
                        core.step(*now, Input::Tick);
                        core.status().role == "candidate"
                    })
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn seed_zero_is_an_ordinary_seed_and_nodes_draw_their_own_jitter() {
        let zero = first_elections(0);
        assert_eq!(zero, first_elections(0));
        assert!(
            zero[0] != zero[1] && zero[1] != zero[2] && zero[0] != zero[2],
            "{zero:?}"
        );
        assert_ne!(zero, first_elections(1));
    }

    #[test]
    fn envelope_bytes_encode_like_a_byte_vector() {
        let payload = vec![1u8, 2, 250, 0];
        let msg = PeerMsg::Protocol(Bytes(payload.clone()));
        let bytes = encode(&msg);
        #[derive(Serialize)]
        enum Plain {
            Protocol(Vec<u8>),
        }
        assert_eq!(bytes, encode(&Plain::Protocol(payload)));
        assert_eq!(decode::<PeerMsg>(&bytes).unwrap(), msg);
    }
}
