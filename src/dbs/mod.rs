//! Databases: etcd, Redis with Sentinel, PostgreSQL and the reference
//! store, each one file implementing [`Db`] and one row in the catalog
//! (`catalog.rs`). A database says how a node starts, when the cluster is
//! ready, who leads, its clients, which faults it cannot take and which it
//! carries out itself; it knows nothing of the environment it runs in.

pub mod catalog;
pub mod etcd;
pub mod postgres;
pub mod redis;
pub mod refstore;
pub mod refstore_client;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use splitbrain_history::Value;
use splitbrain_nemesis::shape::{Grudge, Node};
use splitbrain_nemesis::{Ability, Change, Members, Placement, Rebalanced};
use splitbrain_store::config::ClusterConfig;
use splitbrain_workloads::{WorkloadKind, WorkloadOptions};

use crate::env::{Addresses, NodeCommand};
use crate::interpreter::ClientFactory;

/// What `splitbrain test` asks of a database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// refstore, etcd, redis or postgres.
    pub db: String,
    /// The `--env` it runs in.
    pub env: String,
    pub nodes: usize,
    pub workload: WorkloadKind,
    /// postgres: read-committed, repeatable-read or serializable.
    pub isolation: Option<String>,
    pub op_timeout: Duration,
    /// The reference store's settings, when `db` is refstore.
    pub refstore: Option<ClusterConfig>,
}

/// The message for a workload a database does not run.
fn unsupported_workload(db: &str, w: WorkloadKind, supported: &[WorkloadKind]) -> String {
    let names: Vec<&str> = supported.iter().map(|w| w.name()).collect();
    format!(
        "--db {db} runs the {} workloads, not {w}",
        names.join(" and ")
    )
}

/// A database (Jepsen's `db`): its core, plus the faults it does itself.
#[async_trait]
pub trait Db: Send + Sync + 'static {
    fn describe(&self) -> String;
    fn nodes(&self) -> Vec<Node>;
    /// The ports a node listens on where it has an address of its own.
    fn ports(&self) -> Vec<u16>;
    /// What a node runs at every start; `harness` is this splitbrain binary
    /// as the node sees it.
    fn node_command(&self, node: &str, addrs: &Addresses, harness: &str) -> NodeCommand;
    /// One readiness check: `Ok` once the database serves clients.
    async fn ready(&self, addrs: &Addresses) -> Result<(), String>;
    /// How long it may take to come up.
    fn ready_within(&self) -> Duration {
        Duration::from_secs(90)
    }
    /// Whether one node answers again after a restart.
    async fn node_up(&self, _addrs: &Addresses, _node: &str) -> bool {
        true
    }
    /// The nodes that lead now (etcd's leader, Redis's primary).
    async fn primaries(&self, addrs: &Addresses) -> Vec<Node>;
    fn clients(
        &self,
        addrs: &Addresses,
        op_timeout: Duration,
        workload: &WorkloadOptions,
    ) -> Arc<dyn ClientFactory>;
    /// Why this database cannot take a fault needing `ability`, whatever the environment.
    fn lacks(&self, ability: Ability) -> Option<String>;
    /// Whether it carries out `ability` itself where the environment cannot
    /// (the reference store cuts links and moves clocks through its admin port).
    fn does_itself(&self, _ability: Ability) -> bool {
        false
    }
    /// Cut the grudge's links itself; `up` are the nodes that can answer.
    async fn partition(
        &self,
        _addrs: &Addresses,
        _grudge: &Grudge,
        _up: &[Node],
    ) -> Result<(), String> {
        Err("this database cannot cut links itself".into())
    }
    async fn heal(&self, _addrs: &Addresses, _up: &[Node]) -> Result<(), String> {
        Err("this database cannot cut links itself".into())
    }
    async fn set_clock_offset(
        &self,
        _addrs: &Addresses,
        _node: &Node,
        _delta_ms: i64,
    ) -> Result<(), String> {
        Err("this database cannot move its clock itself".into())
    }
    /// Whether the harness can change this database's membership (the
    /// methods below); a fault needing it is refused up front otherwise.
    fn changes_membership(&self) -> bool {
        false
    }
    /// The configuration now, through the database's own admin interface.
    async fn members(&self, _addrs: &Addresses) -> Result<Members, String> {
        Err("this database has no membership changes".into())
    }
    /// Takes `node` out of the configuration; the configuration after.
    async fn remove_member(&self, _addrs: &Addresses, _node: &Node) -> Result<Members, String> {
        Err("this database has no membership changes".into())
    }
    /// Puts `node` back into the configuration, perhaps still joining.
    async fn add_member(&self, _addrs: &Addresses, _node: &Node) -> Result<Members, String> {
        Err("this database has no membership changes".into())
    }
    /// Waits until `node`, added back (and started again if it had to be),
    /// is a full member; the configuration then.
    async fn finish_join(&self, addrs: &Addresses, _node: &Node) -> Result<Members, String> {
        self.members(addrs).await
    }
    /// Whether the harness can move this database's partitions (the two
    /// methods below); a fault needing it is refused up front otherwise.
    fn rebalances(&self) -> bool {
        false
    }
    /// The partitions and where they are, through the database's own interface.
    async fn placement(&self, _addrs: &Addresses) -> Result<Placement, String> {
        Err("this database has no partitions the harness can move".into())
    }
    /// Carries out a move, split or merge; what it did.
    async fn rebalance(&self, _addrs: &Addresses, _change: Change) -> Result<Rebalanced, String> {
        Err("this database has no partitions the harness can move".into())
    }
    /// Whether a removed node stops and must start again to rejoin (etcd's
    /// members do); otherwise it runs on through its removal.
    fn restarts_to_rejoin(&self) -> bool {
        false
    }
    /// The files `node` needs to start again as a member of the
    /// configuration `members` (etcd: a marker telling it to start from an
    /// empty data directory, joining the existing cluster).
    fn rejoin_files(
        &self,
        _node: &Node,
        _addrs: &Addresses,
        _members: &Members,
    ) -> Vec<(String, Vec<u8>)> {
        Vec::new()
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
        let t = |db: &str, w: WorkloadKind, iso: Option<&str>, nodes: usize| DbOptions {
            db: db.into(),
            env: "docker".into(),
            nodes,
            workload: w,
            isolation: iso.map(str::to_string),
            op_timeout: Duration::from_secs(1),
            refstore: None,
        };
        let docker_cluster =
            |t: &DbOptions| crate::deploy::cluster(t, &crate::env::EnvOptions::default());
        let refused = |t: DbOptions| docker_cluster(&t).err().unwrap_or_default();
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
        // Membership is the database's: etcd changes it, Redis and Postgres are refused.
        let membership = |t: DbOptions| {
            docker_cluster(&t)
                .unwrap()
                .executor()
                .unwrap()
                .lacks(Ability::Membership)
        };
        assert_eq!(membership(t("etcd", WorkloadKind::Register, None, 3)), None);
        assert!(membership(t("etcd", WorkloadKind::Register, None, 1))
            .unwrap()
            .contains("at least 3"));
        assert!(membership(t("redis", WorkloadKind::Set, None, 3))
            .unwrap()
            .contains("no membership changes"));
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
        let etcd = etcd::Etcd::new(&DbOptions {
            db: "etcd".into(),
            env: "docker".into(),
            nodes: 3,
            workload: WorkloadKind::Register,
            isolation: None,
            op_timeout: Duration::from_secs(1),
            refstore: None,
        })
        .unwrap();
        assert!(etcd.lacks(Ability::Clock).unwrap().contains("Go"));
        assert!(etcd.lacks(Ability::Partition).is_none());
        let pg = postgres::Postgres::new(&DbOptions {
            db: "postgres".into(),
            env: "docker".into(),
            nodes: 1,
            workload: WorkloadKind::ListAppend,
            isolation: Some("repeatable-read".into()),
            op_timeout: Duration::from_secs(1),
            refstore: None,
        })
        .unwrap();
        assert!(pg.lacks(Ability::Partition).is_some());
        assert!(pg.lacks(Ability::Kill).is_none());
    }
}
