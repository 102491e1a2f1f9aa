//! A database deployed in an environment: the [`Cluster`] a test runs and
//! the [`Target`] its faults act on. A fault goes to the environment when
//! the environment can carry it out, else to the database when it does it
//! itself; a database's own refusal comes first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use splitbrain_nemesis::shape::{Grudge, Node};
use splitbrain_nemesis::{Ability, Change, Members, Placement, Rebalanced, Target};
use splitbrain_workloads::WorkloadOptions;

use crate::controller::Cluster;
use crate::dbs::{catalog, Db, DbOptions};
use crate::env::{self, Addresses, EnvOptions, Environment, NodeImage};
use crate::interpreter::ClientFactory;

type SharedEnv = Arc<tokio::sync::Mutex<Box<dyn Environment>>>;
type SharedAddrs = Arc<std::sync::Mutex<Addresses>>;

/// The cluster for `db` in its environment, or why that combination cannot
/// run (checked before anything starts).
pub fn cluster(db: &DbOptions, env: &EnvOptions) -> Result<Box<dyn Cluster>, String> {
    let entry = catalog::find_in(&db.db, &db.env)?;
    if let Some(i) = &db.isolation {
        if entry.isolation_levels.is_empty() {
            return Err(format!(
                "--isolation {i}: {} has no isolation levels to choose",
                db.db
            ));
        }
    }
    let database = (entry.make)(db)?;
    let environment = (env::find(&db.env)?.make)(env)?;
    Ok(Box::new(Deployment::new(
        database,
        *entry.image,
        environment,
        db.op_timeout,
    )))
}

pub struct Deployment {
    db: Arc<dyn Db>,
    image: NodeImage,
    env: SharedEnv,
    /// What the environment cannot do, asked before it is shared.
    env_lacks: BTreeMap<Ability, String>,
    env_describe: String,
    addrs: SharedAddrs,
    op_timeout: Duration,
}

impl Deployment {
    pub fn new(
        db: Box<dyn Db>,
        image: NodeImage,
        env: Box<dyn Environment>,
        op_timeout: Duration,
    ) -> Deployment {
        let env_lacks = Ability::ALL
            .iter()
            .filter_map(|a| env.lacks(*a).map(|why| (*a, why)))
            .collect();
        Deployment {
            db: Arc::from(db),
            image,
            env_describe: env.describe(),
            env: Arc::new(tokio::sync::Mutex::new(env)),
            env_lacks,
            addrs: Arc::new(std::sync::Mutex::new(Addresses::default())),
            op_timeout,
        }
    }

    fn addrs(&self) -> Addresses {
        self.addrs.lock().map(|a| a.clone()).unwrap_or_default()
    }

    async fn start(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        let nodes = self.db.nodes();
        let addrs = {
            let mut env = self.env.lock().await;
            let addrs = env
                .place(&nodes, &self.db.ports(), &self.image, run_dir)
                .await?;
            let harness = env.harness_program();
            for n in &nodes {
                env.start(n, self.db.node_command(n, &addrs, &harness))
                    .await?;
            }
            addrs
        };
        if let Ok(mut slot) = self.addrs.lock() {
            *slot = addrs.clone();
        }
        let within = self.db.ready_within();
        let deadline = Instant::now() + within;
        loop {
            match self.db.ready(&addrs).await {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() > deadline => anyhow::bail!(
                    "{} did not come up within {within:?}: {why} (node logs in {})",
                    self.db.describe(),
                    run_dir.display()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[async_trait]
impl Cluster for Deployment {
    fn describe(&self) -> String {
        format!("{}, {}", self.db.describe(), self.env_describe)
    }

    async fn setup(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        // SIGINT or SIGTERM while nodes start still ends in a teardown (the
        // controller tears down after a failed setup), so nothing is left.
        tokio::select! {
            r = self.start(run_dir) => r,
            signal = crate::controller::interrupted() => anyhow::bail!("interrupted by {signal} while the cluster started"),
        }
    }

    fn client_factory(&self, workload: &WorkloadOptions) -> Arc<dyn ClientFactory> {
        self.db.clients(&self.addrs(), self.op_timeout, workload)
    }

    fn executor(&mut self) -> Option<Box<dyn Target>> {
        Some(Box::new(DeploymentTarget {
            db: self.db.clone(),
            env: self.env.clone(),
            env_lacks: self.env_lacks.clone(),
            addrs: self.addrs.clone(),
            down: BTreeSet::new(),
            own_links: None,
        }))
    }

    async fn teardown(&mut self, leave_running: bool) -> anyhow::Result<Vec<PathBuf>> {
        Ok(self.env.lock().await.teardown(leave_running).await?)
    }
}

/// Who carries out a fault.
enum Via {
    Environment,
    Database,
}

/// The faults of a deployment (shared with it, which tears it down).
pub struct DeploymentTarget {
    db: Arc<dyn Db>,
    env: SharedEnv,
    env_lacks: BTreeMap<Ability, String>,
    addrs: SharedAddrs,
    /// Killed or paused nodes, which cannot answer a probe.
    down: BTreeSet<Node>,
    /// A database that cuts links itself cannot reach a paused node: the
    /// partition in force (None: healed) is put back when it resumes.
    own_links: Option<Option<Grudge>>,
}

impl DeploymentTarget {
    fn via(&self, ability: Ability) -> Result<Via, String> {
        if let Some(why) = self.db.lacks(ability) {
            return Err(why);
        }
        match self.env_lacks.get(&ability) {
            None => Ok(Via::Environment),
            Some(_) if self.db.does_itself(ability) => Ok(Via::Database),
            Some(why) => Err(why.clone()),
        }
    }

    fn addrs(&self) -> Addresses {
        self.addrs.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn up(&self) -> Vec<Node> {
        self.db
            .nodes()
            .into_iter()
            .filter(|n| !self.down.contains(n))
            .collect()
    }
}

#[async_trait]
impl Target for DeploymentTarget {
    fn nodes(&self) -> Vec<Node> {
        self.db.nodes()
    }
    fn lacks(&self, ability: Ability) -> Option<String> {
        if ability == Ability::Primaries {
            return self.db.lacks(ability);
        }
        if ability == Ability::Rebalance {
            return self.db.lacks(ability).or_else(|| {
                (!self.db.rebalances()).then(|| {
                    format!(
                        "{} has no partitions the harness can move (the reference store with --sharding has)",
                        self.db.describe()
                    )
                })
            });
        }
        if ability == Ability::Membership {
            return self.db.lacks(ability).or_else(|| {
                (!self.db.changes_membership()).then(|| {
                    format!(
                        "{} has no membership changes the harness can drive",
                        self.db.describe()
                    )
                })
            });
        }
        self.via(ability).err()
    }
    async fn primaries(&mut self) -> Vec<Node> {
        self.db.primaries(&self.addrs()).await
    }
    async fn partition(&mut self, grudge: &Grudge) -> Result<(), String> {
        match self.via(Ability::Partition)? {
            Via::Environment => self.env.lock().await.partition(grudge).await,
            Via::Database => {
                self.own_links = Some(Some(grudge.clone()));
                self.db.partition(&self.addrs(), grudge, &self.up()).await
            }
        }
    }
    async fn heal(&mut self) -> Result<(), String> {
        // Where links cannot be cut, none are: nothing to heal.
        match self.via(Ability::Partition) {
            Ok(Via::Environment) => self.env.lock().await.heal().await,
            Ok(Via::Database) => {
                self.own_links = Some(None);
                self.db.heal(&self.addrs(), &self.up()).await
            }
            Err(_) => Ok(()),
        }
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.via(Ability::Kill)?;
        self.env.lock().await.kill(nodes).await?;
        self.down.extend(nodes.iter().cloned());
        Ok(())
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        let mut env = self.env.lock().await;
        env.restart(nodes).await?;
        for n in nodes {
            self.down.remove(n);
        }
        // Back when the database says the node answers.
        let addrs = self.addrs();
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in nodes {
            while !self.db.node_up(&addrs, n).await {
                // A node that died on its way up will not answer: say why now.
                env.check_alive(n)
                    .await
                    .map_err(|e| format!("{n} did not come back after restart: {e}"))?;
                if Instant::now() > deadline {
                    return Err(format!("{n} did not come back after restart"));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.via(Ability::Pause)?;
        self.env.lock().await.pause(nodes).await?;
        self.down.extend(nodes.iter().cloned());
        Ok(())
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.env.lock().await.resume(nodes).await?;
        for n in nodes {
            self.down.remove(n);
        }
        match &self.own_links {
            None => Ok(()),
            Some(None) => self.db.heal(&self.addrs(), &self.up()).await,
            Some(Some(g)) => self.db.partition(&self.addrs(), g, &self.up()).await,
        }
    }
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String> {
        // A reset (0) is always allowed where a clock can be set: it undoes.
        let via = match self.via(Ability::Clock) {
            Ok(v) => v,
            Err(_) if delta_ms == 0 && self.db.does_itself(Ability::Clock) => Via::Database,
            Err(_) if delta_ms == 0 && !self.env_lacks.contains_key(&Ability::Clock) => {
                Via::Environment
            }
            Err(why) => return Err(why),
        };
        match via {
            Via::Environment => self.env.lock().await.set_clock_offset(node, delta_ms).await,
            Via::Database => {
                self.db
                    .set_clock_offset(&self.addrs(), node, delta_ms)
                    .await
            }
        }
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        self.via(Ability::Loss)?;
        self.env.lock().await.loss(fraction).await
    }
    async fn stop_loss(&mut self) -> Result<(), String> {
        match self.via(Ability::Loss) {
            Ok(_) => self.env.lock().await.stop_loss().await,
            Err(_) => Ok(()),
        }
    }
    async fn members(&mut self) -> Result<Members, String> {
        self.db.members(&self.addrs()).await
    }
    async fn placement(&mut self) -> Result<Placement, String> {
        if let Some(why) = self.lacks(Ability::Rebalance) {
            return Err(why);
        }
        self.db.placement(&self.addrs()).await
    }
    async fn rebalance(&mut self, change: Change) -> Result<Rebalanced, String> {
        if let Some(why) = self.lacks(Ability::Rebalance) {
            return Err(why);
        }
        self.db.rebalance(&self.addrs(), change).await
    }
    async fn remove_member(&mut self, node: &Node) -> Result<Members, String> {
        if let Some(why) = self.lacks(Ability::Membership) {
            return Err(why);
        }
        let after = self.db.remove_member(&self.addrs(), node).await?;
        if self.db.restarts_to_rejoin() {
            // It stops by itself once removed (etcd does); make sure.
            let _ = self.env.lock().await.kill(std::slice::from_ref(node)).await;
            self.down.insert(node.clone());
        }
        Ok(after)
    }
    async fn add_member(&mut self, node: &Node) -> Result<Members, String> {
        if let Some(why) = self.lacks(Ability::Membership) {
            return Err(why);
        }
        let addrs = self.addrs();
        let joined = self.db.add_member(&addrs, node).await?;
        if self.db.restarts_to_rejoin() {
            {
                let env = self.env.lock().await;
                for (path, contents) in &self.db.rejoin_files(node, &addrs, &joined) {
                    env.put_file(node, path, contents)
                        .await
                        .map_err(|e| format!("{node}: cannot write {path}: {e}"))?;
                }
            }
            self.restart(std::slice::from_ref(node)).await?;
        }
        self.db.finish_join(&addrs, node).await
    }
}
