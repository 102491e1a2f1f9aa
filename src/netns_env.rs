//! The netns environment: reference store nodes, each in a network namespace
//! of its own with its own address, joined by a bridge; partitions and packet
//! loss are iptables rules inside the namespaces (see `splitbrain_nemesis::netns`).

use std::time::Duration;

use splitbrain_store::config::ClusterConfig;
use splitbrain_workloads::WorkloadKind;

use crate::controller::Cluster;
use crate::refstore::LocalRefstore;

/// The reference store with each node in a network namespace of its own, or
/// why this machine cannot run it.
pub fn cluster(
    cfg: ClusterConfig,
    nodes: usize,
    workload: WorkloadKind,
    op_timeout: Duration,
) -> Result<Box<dyn Cluster>, String> {
    splitbrain_nemesis::netns::available().map_err(|e| format!("--env netns: {e}"))?;
    // Partitions are proven with pings between the namespaces.
    if std::process::Command::new("ping")
        .arg("-V")
        .output()
        .is_err()
    {
        return Err("--env netns proves partitions with ping, which is not installed (apt-get install iputils-ping)".into());
    }
    if nodes > 250 {
        return Err(format!(
            "--env netns: {nodes} nodes do not fit one /24 (at most 250)"
        ));
    }
    // A short tag of our own: concurrent runs must not share namespaces.
    let tag = format!("r{}", std::process::id() % 100_000);
    let c = LocalRefstore::new(cfg, nodes, workload, op_timeout)
        .map_err(|e| format!("locating the splitbrain binary: {e}"))?
        .in_netns(&tag);
    Ok(Box::new(c))
}
