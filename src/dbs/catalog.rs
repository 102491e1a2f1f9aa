//! Every database the harness can test, one row each: where it runs, what
//! it runs, and what follows from its shape (which faults to aim at it).

use splitbrain_workloads::WorkloadKind;

use super::{etcd, postgres, redis, refstore, DockerDb, DockerTest};
use crate::controller::Cluster;

/// Whether a database has one node that leads (a leader, a primary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    Always,
    /// The reference store leads in single-leader mode only.
    InSingleLeaderMode,
}

/// One database of the catalog.
pub struct DbEntry {
    pub name: &'static str,
    /// `--env` values it runs in.
    pub envs: &'static [&'static str],
    pub workloads: &'static [WorkloadKind],
    /// The workload that shows its characteristic failure.
    pub default_workload: WorkloadKind,
    /// `--isolation` values it offers; empty when it has no levels to choose.
    pub isolation_levels: &'static [&'static str],
    pub leadership: Option<Leadership>,
    /// Its cluster in `--env docker`.
    pub docker: fn(&DockerTest) -> Result<Box<dyn Cluster>, String>,
}

impl DbEntry {
    /// Whether faults are best aimed at its leader: a leader-based database
    /// loses or keeps acknowledged writes when its leader is cut off,
    /// stopped or killed (as Jepsen's tests of such databases aim them).
    pub fn leader_based(&self, single_leader_mode: bool) -> bool {
        match self.leadership {
            Some(Leadership::Always) => true,
            Some(Leadership::InSingleLeaderMode) => single_leader_mode,
            None => false,
        }
    }
}

pub static DATABASES: &[DbEntry] = &[
    DbEntry {
        name: "refstore",
        envs: &["local", "netns", "docker"],
        workloads: &WorkloadKind::ALL,
        default_workload: WorkloadKind::Register,
        isolation_levels: &[],
        leadership: Some(Leadership::InSingleLeaderMode),
        docker: |t| Ok(Box::new(DockerDb::new(refstore::RefstoreDb::new(t)?, t))),
    },
    DbEntry {
        name: "etcd",
        envs: &["docker"],
        workloads: &etcd::WORKLOADS,
        default_workload: WorkloadKind::Register,
        isolation_levels: &[],
        leadership: Some(Leadership::Always),
        docker: |t| Ok(Box::new(DockerDb::new(etcd::Etcd::new(t)?, t))),
    },
    DbEntry {
        name: "redis",
        envs: &["docker"],
        workloads: &redis::WORKLOADS,
        default_workload: WorkloadKind::Set,
        isolation_levels: &[],
        leadership: Some(Leadership::Always),
        docker: |t| Ok(Box::new(DockerDb::new(redis::Redis::new(t)?, t))),
    },
    DbEntry {
        name: "postgres",
        envs: &["docker"],
        workloads: &postgres::WORKLOADS,
        default_workload: WorkloadKind::ListAppend,
        isolation_levels: &["read-committed", "repeatable-read", "serializable"],
        leadership: None,
        docker: |t| Ok(Box::new(DockerDb::new(postgres::Postgres::new(t)?, t))),
    },
];

fn names() -> String {
    let names: Vec<&str> = DATABASES.iter().map(|d| d.name).collect();
    names.join(", ")
}

/// The catalog's entry for `--db NAME`, or why there is none.
pub fn find(name: &str) -> Result<&'static DbEntry, String> {
    DATABASES
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| format!("--db {name}: expected one of {}", names()))
}

/// The entry for `--db NAME` in `--env ENV`, or why that cannot run.
pub fn find_in(name: &str, env: &str) -> Result<&'static DbEntry, String> {
    const ENVS: &[&str] = &["local", "netns", "docker"];
    if !ENVS.contains(&env) {
        return Err(format!("--env {env}: expected {}", ENVS.join(", ")));
    }
    let db = find(name)?;
    if !db.envs.contains(&env) {
        return Err(format!(
            "--db {name} runs in --env {}, not {env}",
            db.envs.join(" or ")
        ));
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_consistent() {
        for d in DATABASES {
            assert!(d.workloads.contains(&d.default_workload), "{}", d.name);
            assert!(!d.envs.is_empty(), "{}", d.name);
        }
        assert!(find_in("etcd", "local")
            .err()
            .unwrap()
            .contains("runs in --env docker"));
        assert!(find_in("mongo", "docker")
            .err()
            .unwrap()
            .contains("expected one of"));
        assert!(find_in("refstore", "moon")
            .err()
            .unwrap()
            .contains("--env moon"));
        assert!(find("etcd").unwrap().leader_based(false));
        assert!(!find("postgres").unwrap().leader_based(true));
        assert!(find("refstore").unwrap().leader_based(true));
        assert!(!find("refstore").unwrap().leader_based(false));
    }
}
