//! Databases in the Docker environment: etcd, Redis with Sentinel and
//! PostgreSQL, each started in containers of an image built for it, driven
//! by its own client library, and faulted through the Docker API.
//!
//! [`DockerDb`] is the environment's half (image, containers, fixed
//! addresses, teardown, the fault executor); a [`Db`] is the database's half
//! (how a node starts, when the cluster is ready, who leads, clients, and
//! which faults it can take).

pub mod catalog;
pub mod etcd;
pub mod postgres;
pub mod redis;
pub mod refstore;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use splitbrain_history::Value;
use splitbrain_nemesis::shape::{Grudge, Node};
use splitbrain_nemesis::{Ability, Target};
use splitbrain_store::config::ClusterConfig;
use splitbrain_workloads::{WorkloadKind, WorkloadOptions};

use crate::controller::Cluster;
use crate::docker::{self, image, DockerCluster, NodeSpec};
use crate::interpreter::ClientFactory;

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

/// Where `splitbrain image build` and the docker environment keep their work.
pub const IMAGE_WORK_DIR: &str = "/var/tmp/splitbrain-images";

/// The cluster for a docker test, or why the combination cannot run
/// (checked before anything starts).
pub fn docker_cluster(t: &DockerTest) -> Result<Box<dyn Cluster>, String> {
    let db = catalog::find_in(&t.db, "docker")?;
    if let Some(i) = &t.isolation {
        if db.isolation_levels.is_empty() {
            return Err(format!(
                "--isolation {i}: {} has no isolation levels to choose",
                t.db
            ));
        }
    }
    (db.docker)(t)
}

/// The message for a workload a database does not run.
fn unsupported_workload(db: &str, w: WorkloadKind, supported: &[WorkloadKind]) -> String {
    let names: Vec<&str> = supported.iter().map(|w| w.name()).collect();
    format!(
        "--db {db} runs the {} workloads, not {w}",
        names.join(" and ")
    )
}

/// An image made from a recipe's by adding files from this host.
pub struct DerivedImage {
    /// `splitbrain-NAME:HASH`; never a recipe's own name, whose image it would replace.
    pub name: &'static str,
    /// (host path, path in the image).
    pub files: Vec<(PathBuf, String)>,
}

/// A database's half of a docker cluster.
#[async_trait]
pub trait Db: Send + Sync + 'static {
    /// The image recipe ([`image::Recipe::named`]).
    fn recipe(&self) -> &'static str;
    fn describe(&self) -> String;
    fn nodes(&self) -> Vec<Node>;
    /// Why this database cannot give a fault `ability`, if it cannot.
    fn lacks(&self, ability: Ability) -> Option<String>;
    /// Environment for every container (libfaketime, for databases it can fool).
    fn env(&self) -> Vec<String>;
    /// Files from this host the nodes' image must hold, when it is the
    /// recipe's image with them added ([`image::derive`]).
    fn derived_image(&self) -> Option<DerivedImage> {
        None
    }
    /// The shell script a node's container runs at every start, restarts
    /// after a kill included; `ips` are every node's fixed address.
    fn start_script(&self, node: &str, ips: &BTreeMap<Node, Ipv4Addr>) -> String;
    /// One readiness check: `Ok` once the database serves clients.
    async fn ready(&self, ips: &BTreeMap<Node, Ipv4Addr>) -> Result<(), String>;
    /// The nodes that lead now (etcd's leader, Redis's primary).
    async fn primaries(&self, ips: &BTreeMap<Node, Ipv4Addr>) -> Vec<Node>;
    fn clients(
        &self,
        ips: &BTreeMap<Node, Ipv4Addr>,
        op_timeout: Duration,
        workload: &WorkloadOptions,
    ) -> Arc<dyn ClientFactory>;
}

type Shared = Arc<tokio::sync::Mutex<Option<DockerCluster>>>;
type Ips = Arc<std::sync::Mutex<BTreeMap<Node, Ipv4Addr>>>;

/// How long a database may take to come up after its containers start.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// A third-party database in Docker containers.
pub struct DockerDb<D: Db> {
    db: Arc<D>,
    image: Option<String>,
    op_timeout: Duration,
    run: String,
    /// The containers, shared with the fault executor, which is handed out
    /// before they exist.
    cluster: Shared,
    ips: Ips,
    logs: Vec<PathBuf>,
}

impl<D: Db> DockerDb<D> {
    pub fn new(db: D, t: &DockerTest) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        DockerDb {
            db: Arc::new(db),
            image: t.image.clone(),
            op_timeout: t.op_timeout,
            // Short and unique: it names the network and the containers.
            run: format!("{}{}x{}", t.db, std::process::id(), nanos % 1_000_000),
            cluster: Arc::new(tokio::sync::Mutex::new(None)),
            ips: Arc::new(std::sync::Mutex::new(BTreeMap::new())),
            logs: Vec::new(),
        }
    }

    fn ips(&self) -> BTreeMap<Node, Ipv4Addr> {
        self.ips.lock().map(|i| i.clone()).unwrap_or_default()
    }

    async fn start(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        let docker = docker::connect().await?;
        let tag = match &self.image {
            Some(tag) => {
                if !image::exists(&docker, tag).await {
                    anyhow::bail!("--image {tag}: the Docker engine has no such image");
                }
                tag.clone()
            }
            None => {
                let recipe = image::Recipe::named(self.db.recipe())
                    .ok_or_else(|| anyhow::anyhow!("no image recipe {}", self.db.recipe()))?;
                if !image::exists(&docker, &recipe.tag()).await {
                    eprintln!(
                        "building image {} (debootstrap; takes minutes the first time)",
                        recipe.tag()
                    );
                }
                image::ensure(&docker, &recipe, Path::new(IMAGE_WORK_DIR), false)
                    .await?
                    .0
            }
        };
        let tag = match self.db.derived_image() {
            None => tag,
            Some(d) => {
                let (derived, made) = image::derive(&docker, &tag, d.name, &d.files).await?;
                if made {
                    eprintln!("made image {derived}: {tag} with this host's files added");
                }
                derived
            }
        };
        let names = self.db.nodes();
        let db = self.db.clone();
        let env = db.env();
        let cluster = DockerCluster::create_with(docker, &self.run, &names, run_dir, |ips| {
            names
                .iter()
                .map(|n| NodeSpec {
                    name: n.clone(),
                    image: tag.clone(),
                    cmd: vec!["sh".into(), "-c".into(), db.start_script(n, ips)],
                    env: env.clone(),
                })
                .collect()
        })
        .await?;
        let ips = cluster.ips().clone();
        self.logs = names
            .iter()
            .map(|n| run_dir.join(format!("{n}.log")))
            .collect();
        if let Ok(mut slot) = self.ips.lock() {
            *slot = ips.clone();
        }
        *self.cluster.lock().await = Some(cluster);

        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.db.ready(&ips).await {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() > deadline => anyhow::bail!(
                    "{} did not come up within {READY_WITHIN:?}: {why} (node logs in {})",
                    self.db.recipe(),
                    run_dir.display()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

#[async_trait]
impl<D: Db> Cluster for DockerDb<D> {
    fn describe(&self) -> String {
        self.db.describe()
    }

    async fn setup(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        // Ctrl-C while containers start still ends in a teardown (the
        // controller tears down after a failed setup), so nothing is left.
        tokio::select! {
            r = self.start(run_dir) => r,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted by Ctrl-C while the cluster started"),
        }
    }

    fn client_factory(&self, workload: &WorkloadOptions) -> Arc<dyn ClientFactory> {
        self.db.clients(&self.ips(), self.op_timeout, workload)
    }

    fn executor(&mut self) -> Option<Box<dyn Target>> {
        Some(Box::new(DbExecutor {
            db: self.db.clone(),
            cluster: self.cluster.clone(),
            ips: self.ips.clone(),
        }))
    }

    async fn teardown(&mut self, leave_running: bool) -> anyhow::Result<Vec<PathBuf>> {
        if leave_running {
            return Ok(self.logs.clone());
        }
        if let Some(mut c) = self.cluster.lock().await.take() {
            c.destroy().await;
        }
        // Whatever carries this run's label, recorded or not.
        let docker = docker::connect().await?;
        docker::remove_run(&docker, &self.run).await?;
        Ok(self.logs.clone())
    }
}

/// Faults for a docker database: the database's refusals first, then the
/// containers (shared with the cluster, which removes them at the end).
struct DbExecutor<D: Db> {
    db: Arc<D>,
    cluster: Shared,
    ips: Ips,
}

/// Run one fault on the containers, holding them for its whole length.
macro_rules! on_cluster {
    ($self:ident, $c:ident => $body:expr) => {{
        let mut guard = $self.cluster.lock().await;
        let $c = guard.as_mut().ok_or("the cluster is not running")?;
        $body
    }};
}

impl<D: Db> DbExecutor<D> {
    fn supports(&self, ability: Ability) -> Result<(), String> {
        match self.lacks(ability) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl<D: Db> Target for DbExecutor<D> {
    fn lacks(&self, ability: Ability) -> Option<String> {
        self.db.lacks(ability)
    }
    fn nodes(&self) -> Vec<Node> {
        self.db.nodes()
    }
    async fn primaries(&mut self) -> Vec<Node> {
        let ips = self.ips.lock().map(|i| i.clone()).unwrap_or_default();
        self.db.primaries(&ips).await
    }
    async fn partition(&mut self, grudge: &Grudge) -> Result<(), String> {
        self.supports(Ability::Partition)?;
        on_cluster!(self, c => c.partition(grudge).await)
    }
    async fn heal(&mut self) -> Result<(), String> {
        on_cluster!(self, c => c.heal().await)
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.supports(Ability::Kill)?;
        on_cluster!(self, c => c.kill(nodes).await)
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        on_cluster!(self, c => c.restart(nodes).await)
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.supports(Ability::Pause)?;
        on_cluster!(self, c => c.pause(nodes).await)
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        on_cluster!(self, c => c.resume(nodes).await)
    }
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String> {
        // A reset (0) is always allowed: it undoes, whatever the database.
        if delta_ms != 0 {
            self.supports(Ability::Clock)?;
        }
        on_cluster!(self, c => c.set_clock_offset(node, delta_ms).await)
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        self.supports(Ability::Loss)?;
        on_cluster!(self, c => c.loss(fraction).await)
    }
    async fn stop_loss(&mut self) -> Result<(), String> {
        on_cluster!(self, c => c.stop_loss().await)
    }
}

/// The value a client op on an independent key works on (`inv.key`).
pub(crate) fn key_name(k: Option<&Value>) -> String {
    match k {
        None => "r".to_string(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Str(s) | Value::Keyword(s)) => s.to_string(),
        Some(other) => other.to_edn(),
    }
}

/// One micro-op of a list-append or rw-register transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mop {
    Read(i64),
    Append(i64, i64),
    Write(i64, i64),
}

impl Mop {
    pub(crate) fn key(&self) -> i64 {
        match self {
            Mop::Read(k) | Mop::Append(k, _) | Mop::Write(k, _) => *k,
        }
    }
}

/// A txn invocation's micro-ops (`[[append k v] [r k nil] [w k v]]`).
pub(crate) fn parse_txn(v: &Value) -> Result<Vec<Mop>, String> {
    let mops = v.as_list().ok_or("txn needs a list of micro-ops")?;
    mops.iter()
        .map(|m| {
            let m = m
                .as_list()
                .filter(|m| m.len() == 3)
                .ok_or("a micro-op is [f k v]")?;
            let k = m[1].as_int().ok_or("micro-op keys are integers")?;
            match m[0].as_str() {
                Some("r") => Ok(Mop::Read(k)),
                Some("append") => Ok(Mop::Append(
                    k,
                    m[2].as_int().ok_or("append needs an integer")?,
                )),
                Some("w") => Ok(Mop::Write(k, m[2].as_int().ok_or("w needs an integer")?)),
                other => Err(format!("unknown micro-op {other:?}")),
            }
        })
        .collect()
}

/// The completed txn's value: the invocation's micro-ops with each read's
/// value filled in, in order (`reads` has one entry per read).
pub(crate) fn txn_value(inv: &Value, reads: Vec<Value>) -> Value {
    let mut reads = reads.into_iter();
    Value::List(
        inv.as_list()
            .unwrap_or_default()
            .iter()
            .map(|m| match m.as_list() {
                Some([f, k, _]) if f.as_str() == Some("r") => Value::list(vec![
                    f.clone(),
                    k.clone(),
                    reads.next().unwrap_or(Value::Nil),
                ]),
                _ => m.clone(),
            })
            .collect(),
    )
}

/// A list as the checkers expect it.
pub(crate) fn list_value(l: &[i64]) -> Value {
    Value::List(l.iter().map(|i| Value::Int(*i)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txns_parse_and_fill_reads_in_order() {
        let inv = Value::list(vec![
            Value::list(vec![
                Value::Keyword("append".into()),
                Value::Int(1),
                Value::Int(7),
            ]),
            Value::list(vec![Value::Keyword("r".into()), Value::Int(1), Value::Nil]),
            Value::list(vec![Value::Keyword("r".into()), Value::Int(2), Value::Nil]),
        ]);
        assert_eq!(
            parse_txn(&inv).unwrap(),
            vec![Mop::Append(1, 7), Mop::Read(1), Mop::Read(2)]
        );
        let done = txn_value(&inv, vec![list_value(&[7]), list_value(&[])]);
        assert_eq!(
            done.as_list().unwrap()[1],
            Value::list(vec![
                Value::Keyword("r".into()),
                Value::Int(1),
                list_value(&[7])
            ])
        );
        assert_eq!(
            done.as_list().unwrap()[2].as_list().unwrap()[2],
            list_value(&[])
        );
        assert!(parse_txn(&Value::list(vec![Value::Int(3)])).is_err());
    }

    #[test]
    fn combinations_are_refused_before_anything_starts() {
        let t = |db: &str, w: WorkloadKind, iso: Option<&str>, nodes: usize| DockerTest {
            db: db.into(),
            nodes,
            workload: w,
            isolation: iso.map(str::to_string),
            image: None,
            op_timeout: Duration::from_secs(1),
            refstore: None,
        };
        let refused = |t: DockerTest| docker_cluster(&t).err().unwrap_or_default();
        assert!(refused(t("etcd", WorkloadKind::Bank, None, 3)).contains("register"));
        assert!(refused(t("redis", WorkloadKind::ListAppend, None, 3)).contains("set"));
        assert!(refused(t("redis", WorkloadKind::Set, None, 2)).contains("3"));
        assert!(refused(t("postgres", WorkloadKind::Register, None, 1)).contains("list-append"));
        assert!(
            refused(t("postgres", WorkloadKind::ListAppend, Some("snapshot"), 1))
                .contains("repeatable-read")
        );
        assert!(
            refused(t("etcd", WorkloadKind::Register, Some("serializable"), 3))
                .contains("isolation")
        );
        assert!(docker_cluster(&t("etcd", WorkloadKind::ListAppend, None, 3)).is_ok());
        assert!(docker_cluster(&t("redis", WorkloadKind::Set, None, 3)).is_ok());
        assert!(docker_cluster(&t(
            "postgres",
            WorkloadKind::RwRegister,
            Some("serializable"),
            1
        ))
        .is_ok());
    }

    #[test]
    fn faults_a_database_cannot_take_are_refused() {
        let etcd = etcd::Etcd::new(&DockerTest {
            db: "etcd".into(),
            nodes: 3,
            workload: WorkloadKind::Register,
            isolation: None,
            image: None,
            op_timeout: Duration::from_secs(1),
            refstore: None,
        })
        .unwrap();
        assert!(etcd.lacks(Ability::Clock).unwrap().contains("Go"));
        assert!(etcd.lacks(Ability::Partition).is_none());
        let pg = postgres::Postgres::new(&DockerTest {
            db: "postgres".into(),
            nodes: 1,
            workload: WorkloadKind::ListAppend,
            isolation: Some("repeatable-read".into()),
            image: None,
            op_timeout: Duration::from_secs(1),
            refstore: None,
        })
        .unwrap();
        assert!(pg.lacks(Ability::Partition).is_some());
        assert!(pg.lacks(Ability::Kill).is_none());
    }
}
