//! The reference store's mode and options as flags, shared by `test` and
//! `sim`: one set of flags, one cluster file.

use clap::Args;
use splitbrain_store::config::{
    ClusterConfig, Conflict, CrossShard, Fsync, Handoff, Mode, MultiLeaderConflict, Replication,
    Scheme, ShardingOptions, Topology,
};
use splitbrain_store::crdt::CrdtType;
use splitbrain_store::msg::ReadFrom;

#[derive(Args, Clone)]
pub struct StoreModeArgs {
    /// The reference store's mode: single-leader, leaderless, or any other mode of `store/src/modes.rs`.
    #[arg(long, default_value = "single-leader")]
    pub replication: String,
    /// Set any reference-store option by its key in the cluster file
    /// (`leaderless.read_repair=false`, `tick_ms=5`); repeatable. A flag
    /// below, when given, wins over the same option set here.
    #[arg(long = "store", value_name = "KEY=VALUE")]
    pub store_options: Vec<String>,
    /// Single-leader: sync, semi-sync:K or async [default: sync].
    #[arg(long)]
    pub sync: Option<String>,
    /// Single-leader: fence deposed leaders with epochs [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    pub fencing: Option<bool>,
    /// Single-leader: the leader answers reads alone only under a lease [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    pub leases: Option<bool>,
    /// Single-leader: where reads are served: leader, followers or any [default: leader].
    #[arg(long)]
    pub read_from: Option<String>,
    /// Leaderless: replicas per key, read and write quorums.
    #[arg(long)]
    pub n: Option<u32>,
    #[arg(long)]
    pub r: Option<u32>,
    #[arg(long)]
    pub w: Option<u32>,
    /// Leaderless: sloppy quorum with hinted handoff.
    #[arg(long)]
    pub sloppy_quorum: bool,
    /// Conflict handling: lww or version-vectors (leaderless, multi-leader),
    /// or crdt (multi-leader).
    #[arg(long)]
    pub conflict: Option<String>,
    /// Multi-leader: all-to-all, star or ring [default: all-to-all].
    #[arg(long)]
    pub topology: Option<String>,
    /// Multi-leader with --conflict crdt: the type of every key: g-counter,
    /// pn-counter, g-set, 2p-set, or-set, lww-register, mv-register [default: pn-counter].
    #[arg(long)]
    pub crdt: Option<String>,
    /// always, never or interval:MS [default: always].
    #[arg(long)]
    pub fsync: Option<String>,
    /// Partition the keys over replica groups of the --replication mode:
    /// none, hash, range, consistent-hash, directory or geo.
    #[arg(long, default_value = "none")]
    pub sharding: String,
    /// Sharded: the number of replica groups [default: 2].
    #[arg(long)]
    pub shards: Option<u32>,
    /// Sharded: nodes per group [default: 3, or the node count if fewer].
    #[arg(long)]
    pub replicas_per_shard: Option<u32>,
    /// Sharded: how a transaction over several groups commits: two-phase
    /// or none (each group's part on its own) [default: two-phase].
    #[arg(long)]
    pub cross_shard: Option<String>,
    /// Sharded: how a moved partition changes hands: epoch (the old owner
    /// is fenced first) or none [default: epoch].
    #[arg(long)]
    pub handoff: Option<String>,
}

impl StoreModeArgs {
    /// Whether every flag is at its default (other databases take none).
    pub fn is_default(&self) -> bool {
        self.replication == "single-leader"
            && self.store_options.is_empty()
            && self.sync.is_none()
            && self.fencing.is_none()
            && self.leases.is_none()
            && self.read_from.is_none()
            && self.n.is_none()
            && self.r.is_none()
            && self.w.is_none()
            && !self.sloppy_quorum
            && self.conflict.is_none()
            && self.topology.is_none()
            && self.crdt.is_none()
            && self.fsync.is_none()
            && self.sharding == "none"
            && self.shards.is_none()
            && self.replicas_per_shard.is_none()
            && self.cross_shard.is_none()
            && self.handoff.is_none()
    }

    /// [`StoreModeArgs::config`], with the CRDT type a multi-leader CRDT
    /// cluster was not told taken from the workload (counters count, sets
    /// are OR-sets, registers are multi-value).
    pub fn config_for(
        &self,
        nodes: usize,
        workload: splitbrain_workloads::WorkloadKind,
    ) -> Result<ClusterConfig, String> {
        use splitbrain_workloads::WorkloadKind as W;
        let mut cfg = self.config(nodes)?;
        let told = self.crdt.is_some()
            || self
                .store_options
                .iter()
                .any(|kv| kv.starts_with("multi_leader.crdt="));
        if let Some(s) = cfg.sharding.as_mut() {
            // The bank's accounts are `account-N`: ranges start at accounts,
            // so that transfers cross groups.
            if workload == W::Bank
                && s.boundaries.is_empty()
                && matches!(s.scheme, Scheme::Range | Scheme::Directory)
            {
                s.boundaries = (1..10).map(|i| format!("account-{i}")).collect();
            }
        }
        if cfg.mode == Mode::MultiLeader
            && cfg.multi_leader.conflict == MultiLeaderConflict::Crdt
            && !told
        {
            cfg.multi_leader.crdt = match workload {
                W::Counter | W::CrdtCounter => CrdtType::PnCounter,
                W::Set | W::OrSet => CrdtType::OrSet,
                _ => CrdtType::MvRegister,
            };
        }
        Ok(cfg)
    }

    /// The cluster settings the flags describe for `nodes` nodes (the
    /// nodes themselves are filled in when the cluster starts).
    pub fn config(&self, nodes: usize) -> Result<ClusterConfig, String> {
        // Every setting at its default; the nodes are filled in when the cluster starts.
        let mut cfg: ClusterConfig = toml::from_str("nodes = []")
            .map_err(|e| format!("the default cluster settings: {e}"))?;
        let sharded = self.sharding != "none";
        if sharded {
            let scheme: Scheme = self
                .sharding
                .parse()
                .map_err(|e: String| format!("--sharding {e}"))?;
            cfg.sharding = Some(ShardingOptions {
                scheme,
                replicas: 3.min(nodes as u32),
                ..ShardingOptions::default()
            });
        } else if self.shards.is_some()
            || self.replicas_per_shard.is_some()
            || self.cross_shard.is_some()
            || self.handoff.is_some()
        {
            return Err(
                "--shards, --replicas-per-shard, --cross-shard and --handoff need --sharding"
                    .into(),
            );
        }
        for kv in &self.store_options {
            cfg = set_store_option(&cfg, kv)?;
        }
        if let Some(s) = cfg.sharding.as_mut() {
            s.groups = self.shards.unwrap_or(s.groups);
            s.replicas = self.replicas_per_shard.unwrap_or(s.replicas);
            if let Some(c) = &self.cross_shard {
                s.cross_shard = match c.as_str() {
                    "two-phase" => CrossShard::TwoPhase,
                    "none" => CrossShard::None,
                    other => {
                        return Err(format!("--cross-shard {other}: expected two-phase or none"))
                    }
                };
            }
            if let Some(h) = &self.handoff {
                s.handoff = match h.as_str() {
                    "epoch" => Handoff::Epoch,
                    "none" => Handoff::None,
                    other => return Err(format!("--handoff {other}: expected epoch or none")),
                };
            }
            if let Some(why) = splitbrain_store::shard::map::refuse(s, nodes) {
                return Err(format!("--sharding {}: {why}", s.scheme.name()));
            }
        }
        if let Some(f) = &self.fsync {
            cfg.fsync = Fsync::try_from(f.clone())?;
        }
        let leaderless_flags = self.n.is_some()
            || self.r.is_some()
            || self.w.is_some()
            || self.sloppy_quorum
            || self.conflict.is_some();
        if (self.topology.is_some() || self.crdt.is_some()) && self.replication != "multi-leader" {
            return Err("--topology and --crdt are for --replication multi-leader".into());
        }
        match self.replication.as_str() {
            "multi-leader" => {
                if self.sync.is_some()
                    || self.fencing.is_some()
                    || self.leases.is_some()
                    || self.read_from.is_some()
                    || self.n.is_some()
                    || self.r.is_some()
                    || self.w.is_some()
                    || self.sloppy_quorum
                {
                    return Err("--replication multi-leader takes --topology, --conflict and --crdt, not the single-leader or leaderless flags".into());
                }
                if nodes > 255 {
                    return Err(format!(
                        "multi-leader takes at most 255 nodes; --nodes is {nodes}"
                    ));
                }
                cfg.mode = Mode::MultiLeader;
                let o = &mut cfg.multi_leader;
                if let Some(t) = &self.topology {
                    o.topology = match t.as_str() {
                        "all-to-all" => Topology::AllToAll,
                        "star" => Topology::Star,
                        "ring" => Topology::Ring,
                        other => {
                            return Err(format!(
                                "--topology {other}: expected all-to-all, star or ring"
                            ))
                        }
                    };
                }
                if let Some(c) = &self.conflict {
                    o.conflict = match c.as_str() {
                        "lww" => MultiLeaderConflict::Lww,
                        "version-vectors" => MultiLeaderConflict::VersionVectors,
                        "crdt" => MultiLeaderConflict::Crdt,
                        other => {
                            return Err(format!(
                                "--conflict {other}: expected lww, version-vectors or crdt"
                            ))
                        }
                    };
                }
                if let Some(t) = &self.crdt {
                    if o.conflict != MultiLeaderConflict::Crdt {
                        return Err("--crdt needs --conflict crdt".into());
                    }
                    o.crdt = CrdtType::parse(t).map_err(|e| format!("--crdt: {e}"))?;
                }
            }
            "single-leader" => {
                if leaderless_flags {
                    return Err("--n, --r, --w, --sloppy-quorum and --conflict are for --replication leaderless".into());
                }
                cfg.mode = Mode::SingleLeader;
                let o = &mut cfg.single_leader;
                if let Some(sync) = &self.sync {
                    o.replication = Replication::try_from(sync.clone())?;
                }
                if let Replication::SemiSync { k } = o.replication {
                    if k as usize >= nodes {
                        return Err(format!("--sync semi-sync:{k} needs more than {k} nodes besides the leader; --nodes is {}", nodes));
                    }
                }
                o.fencing = self.fencing.unwrap_or(o.fencing);
                o.leases = self.leases.unwrap_or(o.leases);
                if let Some(read_from) = &self.read_from {
                    o.read_from = match read_from.as_str() {
                        "leader" => ReadFrom::Leader,
                        "followers" => ReadFrom::Followers,
                        "any" => ReadFrom::Any,
                        other => {
                            return Err(format!(
                                "--read-from {other}: expected leader, followers or any"
                            ))
                        }
                    };
                }
            }
            "leaderless" => {
                if self.sync.is_some()
                    || self.fencing.is_some()
                    || self.leases.is_some()
                    || self.read_from.is_some()
                {
                    return Err("--sync, --fencing, --leases and --read-from are for --replication single-leader".into());
                }
                cfg.mode = Mode::Leaderless;
                let o = &mut cfg.leaderless;
                o.n = self.n.unwrap_or(o.n.min(nodes as u32));
                o.r = self.r.unwrap_or(o.r);
                o.w = self.w.unwrap_or(o.w);
                o.sloppy_quorum |= self.sloppy_quorum;
                if let Some(c) = &self.conflict {
                    o.conflict = match c.as_str() {
                        "lww" => Conflict::Lww,
                        "version-vectors" => Conflict::VersionVectors,
                        other => {
                            return Err(format!(
                                "--conflict {other}: expected lww or version-vectors"
                            ))
                        }
                    };
                }
                if o.n as usize > nodes
                    || o.n == 0
                    || o.r == 0
                    || o.w == 0
                    || o.r > o.n
                    || o.w > o.n
                {
                    return Err(format!(
                        "leaderless needs 1 <= R, W <= N <= nodes; got N={} R={} W={} with {} nodes",
                        o.n, o.r, o.w, nodes
                    ));
                }
            }
            other => {
                if leaderless_flags
                    || self.sync.is_some()
                    || self.fencing.is_some()
                    || self.leases.is_some()
                    || self.read_from.is_some()
                {
                    return Err(format!("--replication {other} takes its options as --store SECTION.KEY=VALUE (its section of the cluster file, e.g. --store raft.read=lease), not the single-leader or leaderless flags"));
                }
                let names: Vec<&str> = splitbrain_store::modes::MODES
                    .iter()
                    .map(|m| m.mode.name())
                    .collect();
                cfg.mode = names
                    .iter()
                    .position(|n| *n == other)
                    .map(|i| splitbrain_store::modes::MODES[i].mode)
                    .ok_or_else(|| {
                        format!("--replication {other}: expected {}", names.join(" or "))
                    })?;
            }
        }
        match &cfg.sharding {
            Some(s) => {
                if cfg.mode == Mode::MultiLeader {
                    return Err("--sharding over multi-leader: its replicas cannot fence a partition's old owner (no compare-and-set); shard single-leader, leaderless, raft or chain groups".into());
                }
                if let Some(why) =
                    splitbrain_store::modes::refuse_node_count(cfg.mode, s.replicas as usize)
                {
                    return Err(format!("--replicas-per-shard {}: {why}", s.replicas));
                }
                if cfg.mode == Mode::Leaderless && cfg.leaderless.n > s.replicas {
                    cfg.leaderless.n = s.replicas;
                    cfg.leaderless.r = cfg.leaderless.r.min(s.replicas);
                    cfg.leaderless.w = cfg.leaderless.w.min(s.replicas);
                }
            }
            None => {
                if let Some(why) = splitbrain_store::modes::refuse_node_count(cfg.mode, nodes) {
                    return Err(why);
                }
            }
        }
        Ok(cfg)
    }
}

/// The cluster settings with one `KEY=VALUE` set (a dotted key of the
/// cluster file; the value in TOML, or a bare word as a string).
pub fn set_store_option(
    cfg: &splitbrain_store::config::ClusterConfig,
    kv: &str,
) -> Result<splitbrain_store::config::ClusterConfig, String> {
    let (key, raw) = kv
        .split_once('=')
        .ok_or_else(|| format!("--store {kv}: expected KEY=VALUE"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut doc = toml::Value::try_from(cfg).map_err(|e| format!("--store {kv}: {e}"))?;
    let mut slot = &mut doc;
    for part in key.split('.') {
        slot = slot
            .as_table_mut()
            .and_then(|t| t.get_mut(part))
            .ok_or_else(|| format!("--store {kv}: the cluster file has no option {key}"))?;
    }
    *slot = value;
    doc.try_into()
        .map_err(|e: toml::de::Error| format!("--store {kv}: {}", e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_option_round_trips_into_a_cluster_file() {
        let cfg: splitbrain_store::config::ClusterConfig = toml::from_str("nodes = []").unwrap();
        let set = set_store_option(&cfg, "tick_ms=5").unwrap();
        assert_eq!(set.tick_ms, 5);
        toml::to_string(&set).unwrap();
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        mode: StoreModeArgs,
    }

    fn config(args: &[&str]) -> ClusterConfig {
        use clap::Parser;
        let flags =
            Flags::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        flags.mode.config(3).unwrap()
    }

    #[test]
    fn raft_takes_its_options_from_store_and_refuses_other_modes_flags() {
        use clap::Parser;
        let cfg = config(&["--replication", "raft", "--store", "raft.read=lease"]);
        assert_eq!(cfg.mode, Mode::Raft);
        assert_eq!(cfg.raft.read, splitbrain_store::config::RaftRead::Lease);
        let flags =
            Flags::try_parse_from(["t", "--replication", "raft", "--read-from", "any"]).unwrap();
        let err = flags.mode.config(3).unwrap_err();
        assert!(err.contains("--store SECTION.KEY=VALUE"), "{err}");
        let flags = Flags::try_parse_from(["t", "--replication", "chain"]).unwrap();
        let err = flags.mode.config(1).unwrap_err();
        assert!(err.contains("at least 2 nodes"), "{err}");
        assert!(flags.mode.config(2).is_ok());
    }

    /// Regression: the flags' defaults overwrote what `--store` had set, so
    /// `--store single_leader.replication=async` ran synchronous replication.
    #[test]
    fn store_options_survive_flags_left_at_their_defaults() {
        let cfg = config(&[
            "--store",
            "single_leader.replication=async",
            "--store",
            "single_leader.leases=false",
        ]);
        assert_eq!(cfg.single_leader.replication, Replication::Async);
        assert!(!cfg.single_leader.leases);
        let cfg = config(&[
            "--store",
            "single_leader.replication=async",
            "--sync",
            "semi-sync:1",
        ]);
        assert_eq!(
            cfg.single_leader.replication,
            Replication::SemiSync { k: 1 }
        );
        let cfg = config(&[
            "--replication",
            "leaderless",
            "--store",
            "leaderless.sloppy_quorum=true",
            "--store",
            "fsync=never",
        ]);
        assert!(cfg.leaderless.sloppy_quorum);
        assert_eq!(cfg.fsync, Fsync::Never);
        assert_eq!(
            config(&[]),
            config(&["--sync", "sync", "--fencing", "true"])
        );
    }
}
