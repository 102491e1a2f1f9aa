//! The reference store in Docker: each node a container of an image holding
//! this very `splitbrain` binary (the base image with the binary copied in at
//! `/opt/splitbrain/splitbrain`, remade when the binary changes) running
//! `store-node`, with its cluster file written by the start script from the
//! nodes' fixed addresses.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use splitbrain_nemesis::shape::Node;
use splitbrain_nemesis::Ability;
use splitbrain_store::admin::{admin_call, NodeStatus};
use splitbrain_store::config::{ClusterConfig, Mode, NodeAddrs};
use splitbrain_workloads::WorkloadKind;

use super::{Db, DerivedImage, DockerTest};
use crate::interpreter::ClientFactory;

/// Ports every node listens on in its own container.
const PORTS: [u16; 3] = [7100, 7101, 7102];
const BINARY: &str = "/opt/splitbrain/splitbrain";

pub struct RefstoreDb {
    base: ClusterConfig,
    nodes: Vec<Node>,
    workload: WorkloadKind,
    program: PathBuf,
}

impl RefstoreDb {
    pub fn new(t: &DockerTest) -> Result<RefstoreDb, String> {
        let base = t
            .refstore
            .clone()
            .ok_or("--db refstore needs the store's settings")?;
        if t.nodes == 0 || t.nodes > 250 {
            return Err(format!("--nodes {}: expected 1 to 250", t.nodes));
        }
        Ok(RefstoreDb {
            base,
            nodes: (1..=t.nodes).map(|i| format!("n{i}")).collect(),
            workload: t.workload,
            program: std::env::current_exe()
                .map_err(|e| format!("locating the splitbrain binary: {e}"))?,
        })
    }

    fn config(&self, ips: &BTreeMap<Node, Ipv4Addr>) -> ClusterConfig {
        let mut cfg = self.base.clone();
        cfg.data_dir = Some(PathBuf::from("/var/lib/splitbrain"));
        cfg.nodes = self
            .nodes
            .iter()
            .map(|n| {
                let ip = ips.get(n).copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
                NodeAddrs {
                    id: n.clone(),
                    client: format!("{ip}:{}", PORTS[0]),
                    peer: format!("{ip}:{}", PORTS[1]),
                    admin: format!("{ip}:{}", PORTS[2]),
                }
            })
            .collect();
        cfg
    }

    async fn statuses(&self, ips: &BTreeMap<Node, Ipv4Addr>) -> Vec<(Node, Option<NodeStatus>)> {
        let asks = ips.iter().map(|(n, ip)| async move {
            let reply = tokio::time::timeout(
                Duration::from_millis(800),
                admin_call(&format!("{ip}:{}", PORTS[2]), "status"),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|s| NodeStatus::parse_admin_reply(&s).ok());
            (n.clone(), reply)
        });
        futures_util::future::join_all(asks).await
    }
}

#[async_trait]
impl Db for RefstoreDb {
    fn recipe(&self) -> &'static str {
        "base"
    }

    fn describe(&self) -> String {
        let mode = match self.base.mode {
            Mode::SingleLeader => format!(
                "single-leader {}",
                String::from(self.base.single_leader.replication)
            ),
            Mode::Leaderless => format!(
                "leaderless N={} R={} W={}",
                self.base.leaderless.n, self.base.leaderless.r, self.base.leaderless.w
            ),
        };
        format!(
            "refstore {mode}, {} nodes in Docker (the base image with this splitbrain binary added)",
            self.nodes.len()
        )
    }

    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }

    fn lacks(&self, ability: Ability) -> Option<String> {
        (ability == Ability::Clock).then(|| {
            "clock faults of the reference store go through its admin port; run it with --env local or --env netns for those".to_string()
        })
    }

    fn env(&self) -> Vec<String> {
        Vec::new()
    }

    fn derived_image(&self) -> Option<DerivedImage> {
        Some(DerivedImage {
            name: "refstore",
            files: vec![(self.program.clone(), BINARY.to_string())],
        })
    }

    fn start_script(&self, node: &str, ips: &BTreeMap<Node, Ipv4Addr>) -> String {
        let toml = toml::to_string(&self.config(ips)).unwrap_or_default();
        // The data directory survives a kill and restart of the container.
        format!(
            "set -e\nmkdir -p /etc/splitbrain /var/lib/splitbrain\ncat > /etc/splitbrain/cluster.toml <<'SPLITBRAIN_EOF'\n{toml}SPLITBRAIN_EOF\nexec {BINARY} store-node --config /etc/splitbrain/cluster.toml --id {node}\n"
        )
    }

    async fn ready(&self, ips: &BTreeMap<Node, Ipv4Addr>) -> Result<(), String> {
        let statuses = self.statuses(ips).await;
        if let Some((n, _)) = statuses.iter().find(|(_, s)| s.is_none()) {
            return Err(format!("{n} does not answer on its admin port"));
        }
        let leader = statuses
            .iter()
            .any(|(_, s)| s.as_ref().is_some_and(NodeStatus::is_leader));
        if self.base.mode == Mode::SingleLeader && !leader {
            return Err("no leader yet".into());
        }
        Ok(())
    }

    async fn primaries(&self, ips: &BTreeMap<Node, Ipv4Addr>) -> Vec<Node> {
        self.statuses(ips)
            .await
            .into_iter()
            .filter(|(_, s)| s.as_ref().is_some_and(NodeStatus::is_leader))
            .map(|(n, _)| n)
            .collect()
    }

    fn clients(
        &self,
        ips: &BTreeMap<Node, Ipv4Addr>,
        op_timeout: Duration,
        workload: &splitbrain_workloads::WorkloadOptions,
    ) -> Arc<dyn ClientFactory> {
        crate::refstore::clients(self.config(ips), self.workload, workload, op_timeout)
    }
}
