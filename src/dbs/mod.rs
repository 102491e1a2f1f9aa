//! Databases in the Docker environment: the reference store, etcd, Redis
//! with Sentinel and PostgreSQL, each with its own client.

use std::time::Duration;

use splitbrain_store::config::ClusterConfig;
use splitbrain_workloads::WorkloadKind;

use crate::controller::Cluster;

/// What `splitbrain test --env docker` asks for.
#[derive(Debug, Clone)]
pub struct DockerTest {
    /// refstore, etcd, redis or postgres.
    pub db: String,
    pub nodes: usize,
    pub workload: WorkloadKind,
    /// postgres: read-committed, repeatable-read or serializable.
    pub isolation: Option<String>,
    /// Run this image instead of building one.
    pub image: Option<String>,
    pub op_timeout: Duration,
    /// The reference store's settings, when `db` is refstore.
    pub refstore: Option<ClusterConfig>,
}

/// The cluster for a docker test, or why the combination cannot run
/// (checked before anything starts).
pub fn docker_cluster(t: &DockerTest) -> Result<Box<dyn Cluster>, String> {
    Err(format!("--env docker --db {}: not wired in yet", t.db))
}
