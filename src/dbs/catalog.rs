//! Every database the harness can test, one row each: where it runs, what
//! it runs, and what follows from its shape (which faults to aim at it).

use splitbrain_workloads::WorkloadKind;

use super::{etcd, postgres, redis, refstore, Db, DbOptions};
use crate::env::NodeImage;

/// Whether a database has one node that leads (a leader, a primary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    Always,
    /// The reference store leads in the modes that have a leader.
    WhenItsModeHasOne,
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
    /// Its nodes' image, in environments that run images.
    pub image: &'static NodeImage,
    /// The database, or why these options cannot run.
    pub make: fn(&DbOptions) -> Result<Box<dyn Db>, String>,
}

impl DbEntry {
    /// Whether faults are best aimed at its leader: a leader-based database
    /// loses or keeps acknowledged writes when its leader is cut off,
    /// stopped or killed (as Jepsen's tests of such databases aim them).
    pub fn leader_based(&self, mode_has_leader: bool) -> bool {
        match self.leadership {
            Some(Leadership::Always) => true,
            Some(Leadership::WhenItsModeHasOne) => mode_has_leader,
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
        leadership: Some(Leadership::WhenItsModeHasOne),
        image: &refstore::IMAGE,
        make: |o| Ok(Box::new(refstore::RefstoreDb::new(o)?)),
    },
    DbEntry {
        name: "etcd",
        envs: &["docker"],
        workloads: &etcd::WORKLOADS,
        default_workload: WorkloadKind::Register,
        isolation_levels: &[],
        leadership: Some(Leadership::Always),
        image: &etcd::IMAGE,
        make: |o| Ok(Box::new(etcd::Etcd::new(o)?)),
    },
    DbEntry {
        name: "redis",
        envs: &["docker"],
        workloads: &redis::WORKLOADS,
        default_workload: WorkloadKind::Set,
        isolation_levels: &[],
        leadership: Some(Leadership::Always),
        image: &redis::IMAGE,
        make: |o| Ok(Box::new(redis::Redis::new(o)?)),
    },
    DbEntry {
        name: "postgres",
        envs: &["docker"],
        workloads: &postgres::WORKLOADS,
        default_workload: WorkloadKind::ListAppend,
        isolation_levels: &["read-committed", "repeatable-read", "serializable"],
        leadership: None,
        image: &postgres::IMAGE,
        make: |o| Ok(Box::new(postgres::Postgres::new(o)?)),
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
    crate::env::find(env)?;
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
