//! The reference store (`store/`) as a database: every node runs this very
//! splitbrain binary's `store-node` with a cluster file naming every node's
//! addresses. Its admin port answers a typed status (who leads, the clock
//! offset), and it cuts links and moves its clock itself where the
//! environment cannot: on loopback, links are cut by each node's transport
//! (proven by probes through it) and clocks are offsets inside the node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use splitbrain_nemesis::shape::{Grudge, Node};
use splitbrain_nemesis::Ability;
use splitbrain_nemesis::{Change, Members, PlacedPartition, Placement, Rebalanced};
use splitbrain_store::admin::{admin_call, admin_members, AdminError, MembersView, NodeStatus};
use splitbrain_store::config::{ClusterConfig, NodeAddrs};
use splitbrain_workloads::{WorkloadKind, WorkloadOptions};

use super::{refstore_client, Db, DbOptions};
use crate::env::{Addresses, NodeCommand, NodeImage};
use crate::interpreter::ClientFactory;

/// Client, peer and admin ports, where each node has an address of its own.
const PORTS: [u16; 3] = [7100, 7101, 7102];
const ADMIN: usize = 2;
const CONFIG_FILE: &str = "cluster.toml";

pub struct RefstoreDb {
    base: ClusterConfig,
    /// This run's secret for the nodes' admin and peer ports.
    secret: String,
    nodes: Vec<Node>,
    workload: WorkloadKind,
    env: String,
}

impl RefstoreDb {
    pub fn new(o: &DbOptions) -> Result<RefstoreDb, String> {
        let base = o
            .refstore
            .clone()
            .ok_or("--db refstore needs the store's settings")?;
        if o.nodes == 0 || o.nodes > 250 {
            return Err(format!("--nodes {}: expected 1 to 250", o.nodes));
        }
        Ok(RefstoreDb {
            base,
            secret: fresh_secret()?,
            nodes: (1..=o.nodes).map(|i| format!("n{i}")).collect(),
            workload: o.workload,
            env: o.env.clone(),
        })
    }

    /// The cluster file every node reads; data lives in the node's working directory.
    pub fn config(&self, addrs: &Addresses) -> ClusterConfig {
        let mut cfg = self.base.clone();
        cfg.data_dir = Some(PathBuf::from("data"));
        cfg.secret = self.secret.clone();
        cfg.nodes = self
            .nodes
            .iter()
            .map(|n| NodeAddrs {
                id: n.clone(),
                client: addrs.socket(n, 0),
                peer: addrs.socket(n, 1),
                admin: addrs.socket(n, ADMIN),
            })
            .collect();
        cfg
    }

    async fn status(&self, addrs: &Addresses, node: &str) -> Result<NodeStatus, String> {
        let reply = self.admin(addrs, node, "status").await?;
        NodeStatus::parse_admin_reply(&reply).map_err(|e| e.to_string())
    }

    async fn statuses(&self, addrs: &Addresses) -> Vec<(Node, Option<NodeStatus>)> {
        let asks = self.nodes.iter().map(|n| async move {
            let s = tokio::time::timeout(Duration::from_millis(800), self.status(addrs, n))
                .await
                .ok()
                .and_then(Result::ok);
            (n.clone(), s)
        });
        futures_util::future::join_all(asks).await
    }

    /// Probes every link between `up` nodes through the store's own
    /// transport and checks that exactly the links `cut` names are cut.
    async fn verify_links(
        &self,
        addrs: &Addresses,
        up: &[Node],
        cut: impl Fn(&str, &str) -> bool,
    ) -> Result<(), String> {
        let mut checks = Vec::new();
        for (i, a) in up.iter().enumerate() {
            for b in &up[i + 1..] {
                let should_cut = cut(a, b) || cut(b, a);
                checks.push(async move {
                    // A cut link must stay silent; an open one may need a moment
                    // to reconnect after a restart.
                    let attempts = if should_cut { 1 } else { 10 };
                    let mut reached = false;
                    for _ in 0..attempts {
                        let reply = self.admin(addrs, a, &format!("probe {b} 300")).await?;
                        reached = reply.contains("reached") && !reply.contains("unreachable");
                        if reached {
                            break;
                        }
                    }
                    match (should_cut, reached) {
                        (true, true) => Err(format!("the link {a}-{b} still carries messages")),
                        (false, false) => {
                            Err(format!("the link {a}-{b} carries no messages but should"))
                        }
                        _ => Ok(()),
                    }
                });
            }
        }
        let problems: Vec<String> = futures_util::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the fault did not take effect: {}",
                problems.join("; ")
            ))
        }
    }
}

impl RefstoreDb {
    /// A membership command, sent to the node that decides configurations
    /// (the leader, or the chain's master), following redirects and trying
    /// again while another change is in progress.
    async fn membership(&self, addrs: &Addresses, command: &str) -> Result<Members, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut ask: Option<Node> = self.primaries(addrs).await.into_iter().next();
        let mut next_guess = 0usize;
        let mut last_problem = String::from("no node answered");
        while tokio::time::Instant::now() < deadline {
            let node = ask.take().unwrap_or_else(|| {
                next_guess += 1;
                self.nodes[(next_guess - 1) % self.nodes.len()].clone()
            });
            let addr = addrs.socket(&node, ADMIN);
            match admin_members(&addr, &self.secret, command).await {
                Ok(view) => return Ok(members_of(view)),
                Err(AdminError::NotLeader(Some(leader))) if self.nodes.contains(&leader) => {
                    ask = Some(leader);
                    continue;
                }
                Err(AdminError::Unknown(why)) => {
                    return Err(format!(
                        "{command} on {node}: the outcome is unknown: {why}"
                    ))
                }
                Err(AdminError::Refused(why)) if !why.contains("try again") => {
                    return Err(format!("{node} refused '{command}': {why}"))
                }
                Err(e) => last_problem = format!("{node}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "{command}: no node carried it out within 30 s ({last_problem})"
        ))
    }

    /// A sharded store's admin command (`partitions`, `rebalance ...`),
    /// sent to the first node that answers: any node carries it out.
    async fn shard_admin(&self, addrs: &Addresses, command: &str) -> Result<String, String> {
        let mut last = String::from("no node answered");
        for node in &self.nodes {
            let addr = addrs.socket(node, ADMIN);
            match admin_call(&addr, &self.secret, command).await {
                Ok(reply) => match reply.strip_prefix("ok ") {
                    Some(json) => return Ok(json.to_string()),
                    None if reply.starts_with("error unknown") => {
                        return Err(format!(
                            "{command} on {node}: the outcome is unknown: {reply}"
                        ))
                    }
                    None if reply.starts_with("error node stopped") => {
                        last = format!("{node}: {reply}")
                    }
                    None => return Err(format!("{node} refused '{command}': {reply}")),
                },
                Err(e) => last = format!("{node}: {e}"),
            }
        }
        Err(format!("{command}: {last}"))
    }

    /// One admin command; an error unless the node answers `ok`.
    async fn admin(&self, addrs: &Addresses, node: &str, command: &str) -> Result<String, String> {
        let addr = addrs.socket(node, ADMIN);
        let reply = admin_call(&addr, &self.secret, command)
            .await
            .map_err(|e| format!("{node} admin {addr}: {e}"))?;
        if reply.starts_with("ok") {
            Ok(reply)
        } else {
            Err(format!("{node} refused '{command}': {reply}"))
        }
    }
}

/// The store's map as the nemesis sees it.
pub fn placement_of(map: &splitbrain_store::shard::ShardMap, groups: u32) -> Placement {
    use splitbrain_store::shard::Span;
    let partitions = map
        .partitions
        .iter()
        .map(|p| PlacedPartition {
            id: p.id,
            group: p.group,
            epoch: p.epoch,
            span: match &p.span {
                Span::Hash { index, of } => format!("hash {index} of {of}"),
                Span::Ring { token } => format!("ring token {token:016x}"),
                Span::Range { lo, hi } => match hi {
                    Some(hi) => format!("[{lo:?}, {hi:?})"),
                    None => format!("[{lo:?}, end)"),
                },
                Span::Region { region, index, of } => {
                    format!("region {region}, hash {index} of {of}")
                }
            },
            merges_into: map.merge_partner(p.id).ok(),
        })
        .collect();
    Placement {
        epoch: map.epoch,
        groups,
        partitions,
        splits: !matches!(
            map.scheme,
            splitbrain_store::config::Scheme::Hash | splitbrain_store::config::Scheme::Geo
        ),
    }
}

fn members_of(view: MembersView) -> Members {
    Members {
        members: view.members,
        joining: view.joining,
    }
}

/// 128 bits from the kernel, in hex: never drawn from the run's seed, which is printed.
fn fresh_secret() -> Result<String, String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot draw the nodes' secret from /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The store's mode and options, for the test record.
pub fn describe_mode(cfg: &ClusterConfig) -> String {
    format!(
        "refstore {}, fsync {}",
        splitbrain_store::modes::describe(cfg),
        String::from(cfg.fsync)
    )
}

/// The base image with this splitbrain binary added.
pub const IMAGE: NodeImage = NodeImage {
    recipe: "base",
    packages: &[],
    with_harness: true,
    process_env: &[],
};

#[async_trait]
impl Db for RefstoreDb {
    fn describe(&self) -> String {
        format!("{}, {} nodes", describe_mode(&self.base), self.nodes.len())
    }

    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }

    fn ports(&self) -> Vec<u16> {
        PORTS.to_vec()
    }

    fn node_command(&self, node: &str, addrs: &Addresses, harness: &str) -> NodeCommand {
        let toml = toml::to_string(&self.config(addrs)).unwrap_or_default();
        NodeCommand {
            program: harness.to_string(),
            args: vec![
                "store-node".into(),
                "--config".into(),
                CONFIG_FILE.into(),
                "--id".into(),
                node.to_string(),
            ],
            files: vec![(CONFIG_FILE.to_string(), toml.into_bytes())],
        }
    }

    async fn ready(&self, addrs: &Addresses) -> Result<(), String> {
        let statuses = self.statuses(addrs).await;
        if let Some((n, _)) = statuses.iter().find(|(_, s)| s.is_none()) {
            return Err(format!("{n} does not answer on its admin port"));
        }
        let leader = statuses
            .iter()
            .any(|(_, s)| s.as_ref().is_some_and(NodeStatus::is_leader));
        if !splitbrain_store::modes::has_leader(&self.base) {
            return Ok(());
        }
        if let Some(s) = &self.base.sharding {
            let led: std::collections::BTreeSet<u32> = statuses
                .iter()
                .filter_map(|(_, st)| st.as_ref())
                .flat_map(NodeStatus::groups_led)
                .collect();
            if let Some(g) = (0..s.groups).find(|g| !led.contains(g)) {
                return Err(format!("group {g} has no leader yet"));
            }
        } else if !leader {
            return Err("no leader yet".into());
        }
        Ok(())
    }

    fn ready_within(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn node_up(&self, addrs: &Addresses, node: &str) -> bool {
        self.admin(addrs, node, "status").await.is_ok()
    }

    async fn primaries(&self, addrs: &Addresses) -> Vec<Node> {
        self.statuses(addrs)
            .await
            .into_iter()
            .filter(|(_, s)| s.as_ref().is_some_and(NodeStatus::is_leader))
            .map(|(n, _)| n)
            .collect()
    }

    fn clients(
        &self,
        addrs: &Addresses,
        op_timeout: Duration,
        workload: &WorkloadOptions,
    ) -> Arc<dyn ClientFactory> {
        refstore_client::clients(self.config(addrs), self.workload, workload, op_timeout)
    }

    fn lacks(&self, ability: Ability) -> Option<String> {
        if ability == Ability::Membership && !splitbrain_store::modes::has_membership(&self.base) {
            return Some(format!(
                "the {} mode has no membership changes (raft and chain have)",
                self.base.mode.name()
            ));
        }
        // In a container the node's clock is libfaketime's to move, which the store is not run under.
        (ability == Ability::Clock && self.env == "docker").then(|| {
            "clock faults of the reference store go through its admin port; run it with --env local or --env netns for those".to_string()
        })
    }

    fn changes_membership(&self) -> bool {
        splitbrain_store::modes::has_membership(&self.base)
    }

    fn rebalances(&self) -> bool {
        self.base.sharding.is_some()
    }

    async fn placement(&self, addrs: &Addresses) -> Result<Placement, String> {
        // `settle` finishes a change a killed node left half done, then answers the map.
        let json = self.shard_admin(addrs, "settle").await?;
        let map: splitbrain_store::shard::ShardMap = serde_json::from_str(&json)
            .map_err(|e| format!("the partition map does not parse: {e}"))?;
        Ok(placement_of(
            &map,
            self.base.sharding.as_ref().map_or(0, |s| s.groups),
        ))
    }

    async fn rebalance(&self, addrs: &Addresses, change: Change) -> Result<Rebalanced, String> {
        let command = match change {
            Change::Move { partition, to } => format!("rebalance move {partition} {to}"),
            Change::Split { partition } => format!("rebalance split {partition}"),
            Change::Merge { partition } => format!("rebalance merge {partition}"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let json = loop {
            match self.shard_admin(addrs, &command).await {
                Ok(json) => break json,
                Err(e) if e.contains("try again") && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let done: splitbrain_store::protocol::RebalanceDone = serde_json::from_str(&json)
            .map_err(|e| format!("the answer to {command} does not parse: {e}"))?;
        Ok(Rebalanced {
            summary: done.summary,
            partitions: done.partitions,
            map_epoch: done.map_epoch,
            keys_copied: done.keys_copied,
            frozen_ms: done.frozen_ms,
        })
    }

    async fn members(&self, addrs: &Addresses) -> Result<Members, String> {
        self.membership(addrs, "members").await
    }

    async fn remove_member(&self, addrs: &Addresses, node: &Node) -> Result<Members, String> {
        self.membership(addrs, &format!("member-remove {node}"))
            .await
    }

    async fn add_member(&self, addrs: &Addresses, node: &Node) -> Result<Members, String> {
        self.membership(addrs, &format!("member-add {node}")).await
    }

    fn does_itself(&self, ability: Ability) -> bool {
        matches!(ability, Ability::Partition | Ability::Clock)
    }

    async fn partition(
        &self,
        addrs: &Addresses,
        grudge: &Grudge,
        up: &[Node],
    ) -> Result<(), String> {
        self.heal(addrs, up).await?;
        for (node, froms) in grudge {
            if froms.is_empty() || !up.contains(node) {
                continue;
            }
            let names: Vec<&str> = froms.iter().map(String::as_str).collect();
            self.admin(addrs, node, &format!("block {}", names.join(" ")))
                .await?;
        }
        let g = grudge.clone();
        self.verify_links(addrs, up, move |a, b| {
            g.get(a).is_some_and(|f| f.contains(b))
        })
        .await
    }

    async fn heal(&self, addrs: &Addresses, up: &[Node]) -> Result<(), String> {
        // A killed node has nothing blocked; it restarts clean.
        for n in up {
            self.admin(addrs, n, "unblock-all").await?;
        }
        self.verify_links(addrs, up, |_, _| false).await
    }

    async fn set_clock_offset(
        &self,
        addrs: &Addresses,
        node: &Node,
        delta_ms: i64,
    ) -> Result<(), String> {
        self.admin(addrs, node, &format!("clock-offset {delta_ms}"))
            .await?;
        let status = self.status(addrs, node).await?;
        if status.clock_offset_ms != delta_ms {
            return Err(format!(
                "{node} reports a clock offset of {} ms, not {delta_ms} ms",
                status.clock_offset_ms
            ));
        }
        Ok(())
    }
}
