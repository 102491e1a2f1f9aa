//! The netns environment: reference store nodes, one per network namespace.

use std::time::Duration;

use splitbrain_store::config::ClusterConfig;
use splitbrain_workloads::WorkloadKind;

use crate::controller::Cluster;

/// The reference store with each node in a network namespace of its own.
pub fn cluster(
    _cfg: ClusterConfig,
    _nodes: usize,
    _workload: WorkloadKind,
    _op_timeout: Duration,
) -> Result<Box<dyn Cluster>, String> {
    Err("--env netns: not wired in yet".into())
}
